//! A long-lived RFB client of the harness's own, sharing no code with kvmux: security
//! None, Raw rectangles, DesktopSize and DesktopName. It keeps asking for incremental
//! updates on a thread of its own, so a test can watch what a server shows over time
//! (a source going down and coming back, a switch) and send keys and pointer events
//! through the same connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::image::Image;

#[derive(Debug, Default)]
struct State {
    screen: Option<Image>,
    name: String,
    /// Updates received so far.
    updates: u64,
    error: Option<String>,
}

/// A connected client; the connection closes when it is dropped.
pub struct Watcher {
    writer: TcpStream,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

fn read_exact<const N: usize>(s: &mut TcpStream) -> Result<[u8; N]> {
    let mut b = [0; N];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn u16_of(s: &mut TcpStream) -> Result<u16> {
    Ok(u16::from_be_bytes(read_exact(s)?))
}

fn u32_of(s: &mut TcpStream) -> Result<u32> {
    Ok(u32::from_be_bytes(read_exact(s)?))
}

fn string_of(s: &mut TcpStream, limit: u32) -> Result<String> {
    let len = u32_of(s)?;
    ensure!(len <= limit, "string of {len} bytes");
    let mut b = vec![0; len as usize];
    s.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn request(s: &mut TcpStream, incremental: bool, w: u16, h: u16) -> Result<()> {
    let [w0, w1] = w.to_be_bytes();
    let [h0, h1] = h.to_be_bytes();
    s.write_all(&[3, u8::from(incremental), 0, 0, 0, 0, w0, w1, h0, h1])?;
    Ok(())
}

impl Watcher {
    /// Connects to 127.0.0.1:`port` with security None, asks for 32-bit little-endian
    /// true colour and Raw, DesktopSize (-223) and DesktopName (-307).
    pub fn connect(port: u16) -> Result<Watcher> {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_nodelay(true)?;
        let version: [u8; 12] = read_exact(&mut s)?;
        ensure!(version.starts_with(b"RFB 003."), "not RFB: {version:?}");
        s.write_all(b"RFB 003.008\n")?;
        let [count] = read_exact::<1>(&mut s)?;
        ensure!(count > 0, "refused: {}", string_of(&mut s, 4096)?);
        let mut types = vec![0; usize::from(count)];
        s.read_exact(&mut types)?;
        ensure!(types.contains(&1), "no security None in {types:?}");
        s.write_all(&[1])?;
        ensure!(u32_of(&mut s)? == 0, "security failed");
        s.write_all(&[1])?;
        let w = u16_of(&mut s)?;
        let h = u16_of(&mut s)?;
        let _format: [u8; 16] = read_exact(&mut s)?;
        let name = string_of(&mut s, 4096)?;
        // 32 bpp, depth 24, little-endian, true colour, 255 maxima, shifts 16/8/0.
        s.write_all(&[
            0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
        ])?;
        let mut enc = vec![2, 0, 0, 3];
        for e in [0i32, -223, -307] {
            enc.extend_from_slice(&e.to_be_bytes());
        }
        s.write_all(&enc)?;
        request(&mut s, false, w, h)?;
        let state = Arc::new(Mutex::new(State {
            screen: None,
            name,
            ..State::default()
        }));
        let reader = s.try_clone()?;
        let thread_state = state.clone();
        let thread = std::thread::spawn(move || {
            let result = read_loop(reader, w, h, &thread_state);
            if let Err(e) = result {
                if let Ok(mut st) = thread_state.lock() {
                    st.error = Some(format!("{e:#}"));
                }
            }
        });
        Ok(Watcher {
            writer: s,
            state,
            thread: Some(thread),
        })
    }

    /// The screen as of the last complete update.
    pub fn screen(&self) -> Option<Image> {
        self.state.lock().ok()?.screen.clone()
    }

    pub fn name(&self) -> String {
        self.state
            .lock()
            .map(|s| s.name.clone())
            .unwrap_or_default()
    }

    /// The error that ended the connection, if it has ended.
    pub fn error(&self) -> Option<String> {
        self.state.lock().ok()?.error.clone()
    }

    /// Waits until `check` accepts the screen; returns how long that took.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Image) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(screen) = self.screen() {
                if check(&screen) {
                    return Ok(start.elapsed());
                }
            }
            if let Some(e) = self.error() {
                bail!("connection ended while waiting for {what}: {e}");
            }
            if start.elapsed() > timeout {
                bail!("no {what} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a key press or release (X keysym).
    pub fn key(&mut self, down: bool, keysym: u32) -> Result<()> {
        let mut m = vec![4, u8::from(down), 0, 0];
        m.extend_from_slice(&keysym.to_be_bytes());
        self.writer.write_all(&m)?;
        Ok(())
    }

    /// Presses and releases a key.
    pub fn tap(&mut self, keysym: u32) -> Result<()> {
        self.key(true, keysym)?;
        self.key(false, keysym)
    }

    pub fn pointer(&mut self, buttons: u8, x: u16, y: u16) -> Result<()> {
        let mut m = vec![5, buttons];
        m.extend_from_slice(&x.to_be_bytes());
        m.extend_from_slice(&y.to_be_bytes());
        self.writer.write_all(&m)?;
        Ok(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(mut s: TcpStream, mut w: u16, mut h: u16, state: &Mutex<State>) -> Result<()> {
    let mut fb = Image::filled(u32::from(w), u32::from(h), 0);
    let mut row = Vec::new();
    loop {
        let [kind] = read_exact::<1>(&mut s)?;
        match kind {
            0 => {
                let _pad: [u8; 1] = read_exact(&mut s)?;
                let count = u16_of(&mut s)?;
                for _ in 0..count {
                    let (x, y, rw, rh) = (
                        u16_of(&mut s)?,
                        u16_of(&mut s)?,
                        u16_of(&mut s)?,
                        u16_of(&mut s)?,
                    );
                    let encoding = i32::from_be_bytes(read_exact(&mut s)?);
                    match encoding {
                        0 => {
                            ensure!(
                                u32::from(x) + u32::from(rw) <= u32::from(w)
                                    && u32::from(y) + u32::from(rh) <= u32::from(h),
                                "rectangle {rw}x{rh}+{x}+{y} outside {w}x{h}"
                            );
                            row.resize(usize::from(rw) * 4, 0);
                            for yy in y..y + rh {
                                s.read_exact(&mut row)?;
                                for (i, p) in row.chunks_exact(4).enumerate() {
                                    let at = usize::from(yy) * usize::from(w) + usize::from(x) + i;
                                    fb.pixels[at] = u32::from_le_bytes([p[0], p[1], p[2], 0]);
                                }
                            }
                        }
                        -223 => {
                            w = rw;
                            h = rh;
                            fb = Image::filled(u32::from(w), u32::from(h), 0);
                        }
                        -307 => {
                            let name = string_of(&mut s, 1 << 16)?;
                            if let Ok(mut st) = state.lock() {
                                st.name = name;
                            }
                        }
                        other => bail!("unexpected encoding {other}"),
                    }
                }
                if let Ok(mut st) = state.lock() {
                    st.screen = Some(fb.clone());
                    st.updates += 1;
                }
                request(&mut s, true, w, h)?;
            }
            1 => {
                let _pad: [u8; 1] = read_exact(&mut s)?;
                let _first = u16_of(&mut s)?;
                let n = u16_of(&mut s)?;
                let mut skip = vec![0; usize::from(n) * 6];
                s.read_exact(&mut skip)?;
            }
            2 => {}
            3 => {
                let _pad: [u8; 3] = read_exact(&mut s)?;
                let _text = string_of(&mut s, 1 << 24)?;
            }
            other => bail!("unexpected server message type {other}"),
        }
    }
}
