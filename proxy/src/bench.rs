//! `kvmux bench-pull` (hidden): measures how fast a VNC server delivers updates.
//!
//! Mode `full` sends a non-incremental FramebufferUpdateRequest for the whole screen,
//! waits for the update that carries pixels (updates of pseudo-rectangles only, as
//! TigerVNC sends first, are answered with another request and not counted), and
//! repeats; mode `incremental` asks for incremental updates and takes whatever the
//! server sends. Prints one line of `key=value` pairs for `scripts/bench-server.sh`.
//!
//! With `--no-decode` the client only frames what it receives: each rectangle's length
//! is found by its decoder's stateless `measure` (ZRLE and Zlib carry lengths, Tight
//! compact lengths, Hextile and RRE are walked subrectangle by subrectangle) and its
//! pixels are skipped. The server's rate is then not limited by a client decoding on
//! the same cores; the client's own CPU time per update is printed either way.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rfb::client::{ClientEvent, ClientSession};
use rfb::handshake::ClientConfig;
use rfb::net::{BoxStream, ConnectOptions};
use rfb::{Encoding, PixelFormat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args, Debug)]
pub struct BenchPullArgs {
    /// The server: HOST::PORT, or HOST:N for display N.
    pub address: String,
    /// The encoding to ask for (raw, hextile, zrle, tight, ...).
    #[arg(long, value_name = "NAME", value_parser = parse_encoding)]
    pub encoding: Encoding,
    /// JPEG quality 0-9 (lets Tight send JPEG).
    #[arg(long, value_name = "0-9", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub quality: Option<u8>,
    /// Compression level 0-9.
    #[arg(long, value_name = "0-9", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub compress: Option<u8>,
    /// Updates to time (after one untimed warm-up frame).
    #[arg(long, default_value_t = 30)]
    pub frames: u32,
    /// Stop after this many seconds instead of after --frames.
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<f64>,
    #[arg(long, value_enum, default_value_t = Mode::Full)]
    pub mode: Mode,
    /// The server's process id: its CPU time per update is read from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Frame rectangles without decoding their pixels.
    #[arg(long)]
    pub no_decode: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Non-incremental requests for the whole screen, one after another.
    Full,
    /// Incremental requests: only what changed.
    Incremental,
}

fn parse_encoding(name: &str) -> Result<Encoding, String> {
    Encoding::from_name(name).ok_or_else(|| format!("unknown encoding '{name}'"))
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture this runs on.
    Some((utime + stime) / 100.0)
}

struct Puller {
    stream: BoxStream,
    session: ClientSession,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Socket bytes read so far.
    bytes: u64,
}

impl Puller {
    async fn send(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream
                .write_all(&self.out)
                .await
                .context("cannot send to the server")?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads until an update has been applied; returns whether it carried pixels.
    async fn next_update(&mut self) -> Result<bool> {
        loop {
            while let Some(event) = self.session.poll_event() {
                match event {
                    ClientEvent::UpdateComplete => {
                        let damage = self.session.framebuffer_mut().take_damage();
                        return Ok(!damage.is_empty());
                    }
                    ClientEvent::Resized { .. } => {
                        self.session.framebuffer_mut().take_damage();
                    }
                    _ => {}
                }
            }
            let n = self
                .stream
                .read(&mut self.buf)
                .await
                .context("connection lost")?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.bytes += n as u64;
            self.session.feed(&self.buf[..n])?;
        }
    }

    /// Asks for the whole screen and waits for the update with its pixels.
    async fn full_frame(&mut self) -> Result<()> {
        self.session.request_update(false, None, &mut self.out);
        loop {
            self.send().await?;
            if self.next_update().await? {
                return Ok(());
            }
            // A pseudo-only update (TigerVNC answers every non-incremental request
            // with the screen layout first): the pixels are still owed, and asking
            // non-incrementally again would only bring the layout again.
            self.session.request_update(true, None, &mut self.out);
        }
    }
}

pub async fn run(args: BenchPullArgs) -> Result<()> {
    let options = ConnectOptions {
        config: ClientConfig {
            shared: true,
            ..ClientConfig::default()
        },
        ..ConnectOptions::default()
    };
    let conn = rfb::net::connect(&args.address, &options).await?;
    let mut p = Puller {
        stream: conn.stream,
        session: {
            let mut session = ClientSession::new(&conn.init);
            session.set_skip_pixels(args.no_decode);
            session
        },
        buf: vec![0u8; 1 << 20],
        out: Vec::new(),
        bytes: 0,
    };
    p.session
        .set_pixel_format(PixelFormat::RGB888, &mut p.out)
        .context("the pixel format is not usable")?;
    let mut encodings = vec![args.encoding];
    if let Some(q) = args.quality {
        encodings.push(Encoding::jpeg_quality(q));
    }
    if let Some(c) = args.compress {
        encodings.push(Encoding::compress_level(c));
    }
    // No DesktopSize or ExtendedDesktopSize: the size is fixed, and TigerVNC would
    // send the layout in an update of its own before every full frame.
    encodings.push(Encoding::LAST_RECT);
    p.session.set_encodings(&encodings, &mut p.out);
    p.session.feed(&conn.leftover)?;
    // Warm-up: the first full frame (and any pseudo-only update) is not timed.
    p.full_frame().await?;

    let limit = args.seconds.map(Duration::from_secs_f64);
    let cpu_before = args.server_pid.and_then(cpu_seconds);
    let client_before = cpu_seconds(std::process::id());
    let bytes_before = p.bytes;
    let started = Instant::now();
    let mut updates: u64 = 0;
    if args.mode == Mode::Incremental {
        p.session.request_update(true, None, &mut p.out);
        p.send().await?;
    }
    loop {
        match limit {
            Some(limit) if started.elapsed() >= limit => break,
            None if updates >= u64::from(args.frames) => break,
            _ => {}
        }
        match args.mode {
            Mode::Full => p.full_frame().await?,
            Mode::Incremental => {
                // Bounded by the time limit even when the server sends nothing.
                let left = limit
                    .map(|l| l.saturating_sub(started.elapsed()))
                    .unwrap_or(Duration::from_secs(3600));
                match tokio::time::timeout(left, p.next_update()).await {
                    Ok(r) => {
                        r?;
                    }
                    Err(_) => break,
                }
                p.session.request_update(true, None, &mut p.out);
                p.send().await?;
            }
        }
        updates += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = p.bytes - bytes_before;
    let cpu = match (cpu_before, args.server_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) if updates > 0 => format!("{:.1}", (b - a) * 1000.0 / updates as f64),
        _ => "-".to_owned(),
    };
    let client_cpu = match (client_before, cpu_seconds(std::process::id())) {
        (Some(a), Some(b)) if updates > 0 => format!("{:.1}", (b - a) * 1000.0 / updates as f64),
        _ => "-".to_owned(),
    };
    let per_update = bytes.checked_div(updates).unwrap_or(0);
    println!(
        "updates={updates} seconds={elapsed:.3} updates_per_s={:.1} bytes_per_update={per_update} bytes_per_s={:.0} cpu_ms_per_update={cpu} client_cpu_ms_per_update={client_cpu}",
        updates as f64 / elapsed,
        bytes as f64 / elapsed,
    );
    Ok(())
}
