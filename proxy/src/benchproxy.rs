//! `kvmux bench-proxy` (hidden): what the proxy (`kvmux serve`) costs, measured side
//! by side with the same sources and clients in one run.
//!
//! The bench runs its own RFB sources (a [`ServerSession`] per connection over
//! [`rfb::net::accept`] on loopback ports) and its own viewers (a [`ClientSession`]
//! each), and starts `kvmux serve` as a child with a config pointing at its sources,
//! so that send and receive times come from one clock. Modes:
//! - `latency`: added key latency (viewer → source, directly and through the proxy),
//!   frame latency (a region of the source flips colour → the viewer has an update
//!   showing it, directly and through the proxy) and switch time (hotkey taps → the
//!   first complete frame of the other source);
//! - `cpu`: the proxy's CPU time per transcoded 1920x1080 frame (the whole screen
//!   changes every frame) for a ZRLE viewer, a Tight viewer and a viewer that could
//!   take the upstream's rectangles as they are (Raw, kvmux's zlib-stream-reset);
//! - `load`: 50 viewers across 3 sources for a minute (errors, the proxy's RSS every
//!   second), 50 viewers of one whole-screen-changing source against 1 (proxy CPU),
//!   and the memory of idle viewers against a bound.
//!
//! Driven by `scripts/bench-proxy.sh` and `scripts/load-proxy.sh`; prints tables.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rfb::client::{ClientEvent, ClientSession};
use rfb::handshake::server::{ServerConfig, ServerSecurity};
use rfb::handshake::{ClientConfig, ProtocolVersion, ServerInit};
use rfb::messages::ClientMessage;
use rfb::net::{AcceptOptions, BoxStream, ConnectOptions};
use rfb::server::{ServerEvent, ServerSession};
use rfb::{Encoding, Framebuffer, PixelFormat, Rect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

use crate::bench::cpu_seconds;

#[derive(Args, Debug)]
pub struct BenchProxyArgs {
    #[arg(long, value_enum, default_value_t = Mode::Latency)]
    pub mode: Mode,
    /// Key events to time, each way (latency mode).
    #[arg(long, default_value_t = 2000)]
    pub keys: u32,
    /// Region flips to time, each way (latency mode).
    #[arg(long, default_value_t = 300)]
    pub flips: u32,
    /// Source switches to time (latency mode).
    #[arg(long, default_value_t = 200)]
    pub switches: u32,
    /// The viewers' encoding for frame latency (latency mode).
    #[arg(long, value_name = "NAME", default_value = "zrle", value_parser = parse_encoding)]
    pub encoding: Encoding,
    /// 1920x1080 frames per viewer kind and round (cpu mode).
    #[arg(long, default_value_t = 20)]
    pub frames: u32,
    /// Rounds over the viewer kinds, interleaved (cpu mode).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// A PNG to show (and shift) on whole-screen-changing sources; without it, a
    /// generated picture.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Viewers at once (load mode).
    #[arg(long, default_value_t = 50)]
    pub clients: u32,
    /// The viewers' encoding in the 3-source load and the idle-memory check: all
    /// one, or Tight, ZRLE and Hextile in turn (load mode).
    #[arg(long, value_enum, default_value_t = LoadEncoding::Mixed)]
    pub load_encoding: LoadEncoding,
    /// How long the 3-source load runs (load mode).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// How long each side of the 1-vs-many CPU comparison runs (load mode).
    #[arg(long, default_value_t = 20.0)]
    pub cpu_seconds: f64,
    /// Whole-screen changes per second in the 1-vs-many CPU comparison (load mode).
    #[arg(long, default_value_t = 4.0)]
    pub fps: f64,
    /// The kvmux binary to run as the proxy (default: this one).
    #[arg(long, value_name = "FILE")]
    pub kvmux: Option<PathBuf>,
    /// Where the proxy's log goes (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Latency,
    Cpu,
    Load,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadEncoding {
    Mixed,
    Tight,
    Zrle,
    Hextile,
}

fn parse_encoding(name: &str) -> Result<Encoding, String> {
    Encoding::from_name(name).ok_or_else(|| format!("unknown encoding '{name}'"))
}

const CONTROL_L: u32 = 0xffe3;
const WIDTH: u16 = 1920;
const HEIGHT: u16 = 1080;
/// The region the latency test flips.
const FLIP: Rect = Rect::new(200, 200, 64, 64);
/// The block whose colour numbers a shifted frame.
const MARKER: Rect = Rect::new(0, 0, 16, 16);

// ---------------------------------------------------------------------------------
// The bench's own sources.

/// A key event as a source received it.
#[derive(Debug, Clone, Copy)]
struct KeySeen {
    down: bool,
    keysym: u32,
    at: Instant,
}

/// One in-process RFB source: a framebuffer every connection shows, damage broadcast
/// to them, and the keys they send.
struct BenchSource {
    fb: RwLock<Framebuffer>,
    changes: broadcast::Sender<Vec<Rect>>,
    keys: Mutex<Option<mpsc::UnboundedSender<KeySeen>>>,
    sessions: AtomicUsize,
    port: u16,
}

impl BenchSource {
    /// Listens on a loopback port and serves `fb` there.
    async fn start(fb: Framebuffer) -> Result<Arc<BenchSource>> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen for the bench source")?;
        let port = listener.local_addr()?.port();
        let (changes, _) = broadcast::channel(1024);
        let source = Arc::new(BenchSource {
            fb: RwLock::new(fb),
            changes,
            keys: Mutex::new(None),
            sessions: AtomicUsize::new(0),
            port,
        });
        let s = source.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let s = s.clone();
                tokio::spawn(async move {
                    s.sessions.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = s.serve(Box::new(tcp)).await {
                        tracing::debug!(reason = %format!("{e:#}"), "Bench source connection ended");
                    }
                    s.sessions.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Ok(source)
    }

    fn address(&self) -> String {
        format!("127.0.0.1::{}", self.port)
    }

    /// Keys received from now on go to the returned receiver.
    fn watch_keys(&self) -> mpsc::UnboundedReceiver<KeySeen> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Changes the picture and tells every connection what changed.
    fn change(&self, draw: impl FnOnce(&mut Framebuffer) -> Vec<Rect>) {
        let rects = {
            let mut fb = self.fb.write().unwrap_or_else(|e| e.into_inner());
            let rects = draw(&mut fb);
            fb.take_damage();
            rects
        };
        let _ = self.changes.send(rects);
    }

    async fn serve(&self, stream: BoxStream) -> Result<()> {
        let (w, h) = {
            let fb = self.fb.read().unwrap_or_else(|e| e.into_inner());
            (fb.width(), fb.height())
        };
        let accept = AcceptOptions {
            config: ServerConfig {
                security: vec![ServerSecurity::None],
                server_init: ServerInit {
                    width: w,
                    height: h,
                    pixel_format: PixelFormat::RGB888,
                    name: "bench source".to_owned(),
                },
                version: ProtocolVersion::V3_8,
            },
            tls: None,
            timeout: Duration::from_secs(10),
        };
        let conn = rfb::net::accept(stream, &accept).await?;
        let mut session = ServerSession::new(w, h, PixelFormat::RGB888, "bench source");
        let mut changes = self.changes.subscribe();
        let (mut reader, mut writer) = tokio::io::split(conn.stream);
        let mut out = Vec::new();
        session.feed(&conn.leftover, &mut out)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Some(event) = session.poll_event() {
                if let ServerEvent::Key { down, keysym }
                | ServerEvent::QemuKey { down, keysym, .. } = event
                {
                    let at = Instant::now();
                    if let Some(tx) = &*self.keys.lock().unwrap_or_else(|e| e.into_inner()) {
                        let _ = tx.send(KeySeen { down, keysym, at });
                    }
                }
            }
            if session.update_due() {
                let fb = self.fb.read().unwrap_or_else(|e| e.into_inner());
                session.write_update(&fb, &mut out);
            }
            if !out.is_empty() {
                writer.write_all(&out).await.context("write failed")?;
                out.clear();
            }
            tokio::select! {
                read = reader.read(&mut buf) => {
                    let n = read.context("read failed")?;
                    if n == 0 {
                        return Ok(());
                    }
                    session.feed(&buf[..n], &mut out)?;
                }
                change = changes.recv() => match change {
                    Ok(rects) => rects.into_iter().for_each(|r| session.add_damage(r)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        session.add_damage(Rect::new(0, 0, u16::MAX, u16::MAX));
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }
}

fn solid(colour: u32) -> Framebuffer {
    let mut fb = Framebuffer::new(WIDTH, HEIGHT);
    fb.pixels_mut().fill(colour);
    fb
}

/// The picture whole-screen sources shift: the PNG given, or a generated one with
/// desktop-like areas (flat colour, gradients, fine detail).
fn picture(image: Option<&PathBuf>) -> Result<Vec<u32>> {
    if let Some(path) = image {
        let (w, h, pixels) = crate::testsrc::pattern::load_png(path)?;
        if (w, h) != (WIDTH, HEIGHT) {
            bail!(
                "{} is {w}x{h}; the bench needs {WIDTH}x{HEIGHT}",
                path.display()
            );
        }
        return Ok(pixels);
    }
    let (w, h) = (usize::from(WIDTH), usize::from(HEIGHT));
    let mut p = vec![0u32; w * h];
    for y in 0..h {
        for x in 0..w {
            p[y * w + x] = if (60..700).contains(&y) && (60..900).contains(&x) {
                // A document: text-like dots on white.
                if y % 20 < 12 && (x * 7 + y * 3) % 11 < 4 {
                    0x202020
                } else {
                    0xf8f9fa
                }
            } else if (120..640).contains(&y) && (960..1860).contains(&x) {
                if y % 20 < 12 && (x * 5 + y) % 9 < 3 {
                    0x33ff66
                } else {
                    0x111111
                }
            } else {
                // Wallpaper: a vertical gradient.
                let t = (y * 255 / h) as u32;
                (0x1d + t / 4) << 16 | (0x35 + t / 3) << 8 | (0x57 + t / 3)
            };
        }
    }
    Ok(p)
}

/// Draws `picture` shifted left by `offset` columns, with frame number `n` in the
/// marker block; the whole screen changed.
fn draw_shifted(fb: &mut Framebuffer, picture: &[u32], offset: usize, n: u32) -> Rect {
    let w = usize::from(fb.width());
    let offset = offset % w.max(1);
    for (row, src) in fb
        .pixels_mut()
        .chunks_exact_mut(w)
        .zip(picture.chunks_exact(w))
    {
        row[..w - offset].copy_from_slice(&src[offset..]);
        row[w - offset..].copy_from_slice(&src[..offset]);
    }
    let _ = fb.fill(MARKER, marker_colour(n));
    fb.bounds()
}

fn marker_colour(n: u32) -> u32 {
    n & 0x00ff_ffff
}

// ---------------------------------------------------------------------------------
// Viewers.

struct Viewer {
    stream: BoxStream,
    session: ClientSession,
    buf: Vec<u8>,
    out: Vec<u8>,
    updates: u64,
}

/// The encodings a viewer asks for.
fn viewer_encodings(pixel: &[Encoding], extra: &[Encoding]) -> Vec<Encoding> {
    let mut list = pixel.to_vec();
    list.extend_from_slice(extra);
    list.extend([Encoding::LAST_RECT, Encoding::DESKTOP_SIZE]);
    list
}

impl Viewer {
    async fn connect(address: &str, encodings: &[Encoding]) -> Result<Viewer> {
        let options = ConnectOptions {
            config: ClientConfig {
                shared: true,
                ..ClientConfig::default()
            },
            ..ConnectOptions::default()
        };
        let conn = rfb::net::connect(address, &options).await?;
        let mut v = Viewer {
            stream: conn.stream,
            session: ClientSession::new(&conn.init),
            buf: vec![0u8; 256 * 1024],
            out: Vec::new(),
            updates: 0,
        };
        v.session
            .set_pixel_format(PixelFormat::RGB888, &mut v.out)
            .context("the pixel format is not usable")?;
        v.session.set_encodings(encodings, &mut v.out);
        v.session.feed(&conn.leftover)?;
        v.send().await?;
        Ok(v)
    }

    async fn send(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream
                .write_all(&self.out)
                .await
                .context("cannot send")?;
            self.out.clear();
        }
        Ok(())
    }

    async fn key(&mut self, down: bool, keysym: u32) -> Result<()> {
        ClientMessage::KeyEvent { down, keysym }.write(&mut self.out);
        self.send().await
    }

    /// Ctrl, Ctrl, then the digit of source `n` (1-based): the default hotkey.
    /// Returns when the digit's press has been sent.
    async fn hotkey(&mut self, n: u32) -> Result<Instant> {
        for _ in 0..2 {
            ClientMessage::KeyEvent {
                down: true,
                keysym: CONTROL_L,
            }
            .write(&mut self.out);
            ClientMessage::KeyEvent {
                down: false,
                keysym: CONTROL_L,
            }
            .write(&mut self.out);
        }
        self.send().await?;
        self.key(true, 0x30 + n).await?;
        let sent = Instant::now();
        self.key(false, 0x30 + n).await?;
        Ok(sent)
    }

    async fn request(&mut self, incremental: bool) -> Result<()> {
        self.session
            .request_update(incremental, None, &mut self.out);
        self.send().await
    }

    /// Reads until an update has been applied.
    async fn next_update(&mut self) -> Result<()> {
        loop {
            while let Some(event) = self.session.poll_event() {
                if let ClientEvent::UpdateComplete = event {
                    self.session.framebuffer_mut().take_damage();
                    self.updates += 1;
                    return Ok(());
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
            self.session.feed(&self.buf[..n])?;
        }
    }

    /// Reads updates, asking for the next incremental one after each, until `done`
    /// holds for the framebuffer; gives up after `limit`.
    async fn until(&mut self, limit: Duration, done: impl Fn(&Framebuffer) -> bool) -> Result<()> {
        let work = async {
            loop {
                self.next_update().await?;
                self.request(true).await?;
                if done(self.session.framebuffer()) {
                    return Ok(());
                }
            }
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => bail!("the expected picture did not arrive within {limit:?}"),
        }
    }
}

fn centre(r: Rect) -> (u16, u16) {
    (r.x + r.width / 2, r.y + r.height / 2)
}

/// Whether the whole screen shows `colour` (the corners, the centre, and away from
/// the flip region).
fn shows(fb: &Framebuffer, colour: u32) -> bool {
    let (w, h) = (fb.width(), fb.height());
    if (w, h) != (WIDTH, HEIGHT) {
        return false;
    }
    [
        (0, 0),
        (w - 1, 0),
        (0, h - 1),
        (w - 1, h - 1),
        (w / 2, h / 2),
    ]
    .iter()
    .all(|&(x, y)| fb.pixel(x, y) == Some(colour))
}

// ---------------------------------------------------------------------------------
// The proxy.

struct Proxy {
    child: tokio::process::Child,
    pid: u32,
    port: u16,
    log: PathBuf,
}

impl Proxy {
    /// Starts `kvmux serve` with one address source per bench source, and waits
    /// until it listens and its sources are connected.
    async fn start(args: &BenchProxyArgs, sources: &[&Arc<BenchSource>]) -> Result<Proxy> {
        let work = match &args.work {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir().join(format!("kvmux-bench-proxy-{}", std::process::id())),
        };
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut config = format!("[listen]\nrfb = \"127.0.0.1:{port}\"\n");
        for (i, s) in sources.iter().enumerate() {
            config.push_str(&format!(
                "\n[[source]]\nname = \"s{}\"\naddress = \"{}\"\n",
                i + 1,
                s.address()
            ));
        }
        let config_path = work.join(format!("kvmux-{port}.toml"));
        std::fs::write(&config_path, config)?;
        let log = work.join(format!("proxy-{port}.log"));
        let kvmux = match &args.kvmux {
            Some(p) => p.clone(),
            None => std::env::current_exe().context("cannot find this program")?,
        };
        let before: Vec<usize> = sources
            .iter()
            .map(|s| s.sessions.load(Ordering::Relaxed))
            .collect();
        let child = tokio::process::Command::new(&kvmux)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("KVMUX_LOG", "warn,kvmux::serve::client=info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", kvmux.display()))?;
        let pid = child.id().context("the proxy exited at once")?;
        let proxy = Proxy {
            child,
            pid,
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // The proxy binds its listener before it starts its sources: once they are
        // connected, it listens (a probe connection would only log a warning).
        loop {
            let connected = sources
                .iter()
                .zip(&before)
                .all(|(s, &b)| s.sessions.load(Ordering::Relaxed) > b);
            if connected {
                break;
            }
            if Instant::now() > deadline {
                bail!("the proxy did not start (see {})", proxy.log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Its upstreams have had their first frames once a viewer sees them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(proxy)
    }

    fn address(&self) -> String {
        format!("127.0.0.1::{}", self.port)
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(self.pid).unwrap_or(f64::NAN)
    }

    /// Resident memory, bytes.
    fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Lines of the proxy's log at WARN or ERROR, but for viewers the bench closed
    /// with an update on its way (at the end of a timed run), counted apart.
    fn warnings(&self) -> (Vec<String>, usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut closed = 0;
        let mut lines = Vec::new();
        for l in text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            if l.contains("Broken pipe") || l.contains("Connection reset by peer") {
                closed += 1;
            } else {
                lines.push(l.to_owned());
            }
        }
        (lines, closed)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

// ---------------------------------------------------------------------------------
// Statistics.

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Slope of the least-squares line through (x, y).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

pub async fn run(args: BenchProxyArgs) -> Result<()> {
    match args.mode {
        Mode::Latency => latency(&args).await,
        Mode::Cpu => cpu(&args).await,
        Mode::Load => load(&args).await,
    }
}

// ---------------------------------------------------------------------------------
// Latency: keys, frames, switches.

const RED: u32 = 0x00c0_3030;
const BLUE: u32 = 0x0030_30c0;

async fn latency(args: &BenchProxyArgs) -> Result<()> {
    let s1 = BenchSource::start(solid(RED)).await?;
    let s2 = BenchSource::start(solid(BLUE)).await?;
    let proxy = Proxy::start(args, &[&s1, &s2]).await?;
    let encodings = viewer_encodings(&[args.encoding], &[]);
    let mut direct = Viewer::connect(&s1.address(), &encodings).await?;
    let mut proxied = Viewer::connect(&proxy.address(), &encodings).await?;
    for v in [&mut direct, &mut proxied] {
        v.request(false).await?;
        v.until(Duration::from_secs(10), |fb| shows(fb, RED))
            .await
            .context("the first frame")?;
    }

    // Keys: blocks of 100 each way, alternating, one key in flight at a time.
    let mut keys = s1.watch_keys();
    let mut key_times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let block = 100;
    let mut i: u32 = 0;
    while key_times[1].len() < args.keys as usize {
        for (side, v) in [&mut direct, &mut proxied].into_iter().enumerate() {
            for _ in 0..block {
                let down = i % 2 == 0;
                let keysym = 0x61 + (i / 2) % 26;
                i += 1;
                ClientMessage::KeyEvent { down, keysym }.write(&mut v.out);
                let sent = Instant::now();
                v.send().await?;
                let seen = tokio::time::timeout(Duration::from_secs(2), keys.recv())
                    .await
                    .context("a key never reached the source")?
                    .context("the source stopped")?;
                if (seen.down, seen.keysym) != (down, keysym) {
                    bail!(
                        "the source received key {:#x} down={} instead of {keysym:#x} down={down}",
                        seen.keysym,
                        seen.down
                    );
                }
                key_times[side].push(us(seen.at.saturating_duration_since(sent)));
            }
        }
    }

    // Frames: the flip region changes colour; time until the viewer shows it.
    let mut frame_times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut n: u32 = 0;
    let (fx, fy) = centre(FLIP);
    let block = 25;
    while frame_times[1].len() < args.flips as usize {
        for (side, v) in [&mut direct, &mut proxied].into_iter().enumerate() {
            // The first flip of a block is not timed: it brings the viewer up to date
            // and leaves a request outstanding.
            for k in 0..=block {
                n += 1;
                let colour = 0x0040_0000 | (n.wrapping_mul(2_654_435_761) & 0x00_ffff);
                tokio::time::sleep(Duration::from_millis(2)).await;
                let changed = Instant::now();
                s1.change(|fb| {
                    let _ = fb.fill(FLIP, colour);
                    vec![FLIP]
                });
                v.until(Duration::from_secs(5), |fb| {
                    fb.pixel(fx, fy) == Some(colour)
                })
                .await
                .context("a flip never arrived")?;
                if k > 0 {
                    frame_times[side].push(us(changed.elapsed()));
                }
            }
        }
    }

    // Switches: Ctrl Ctrl 2, Ctrl Ctrl 1, ... through the proxy.
    drop(keys);
    let mut switch_times = Vec::new();
    for k in 0..args.switches {
        let (to, colour) = if k % 2 == 0 { (2, BLUE) } else { (1, RED) };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = proxied.hotkey(to).await?;
        proxied
            .until(Duration::from_secs(5), |fb| shows(fb, colour))
            .await
            .with_context(|| format!("switch {} to source {to}", k + 1))?;
        switch_times.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    let warnings = proxy.warnings();
    proxy.stop().await;

    let [kd, kp] = key_times.map(sorted);
    let [fd, fp] = frame_times.map(sorted);
    let sw = sorted(switch_times);
    let row = |name: &str, unit: &str, d: &[f64], p: &[f64]| {
        let (d50, d99, p50, p99) = (
            percentile(d, 50.0),
            percentile(d, 99.0),
            percentile(p, 50.0),
            percentile(p, 99.0),
        );
        println!(
            "{name:<34} {:>6} | {d50:>9.1} {d99:>9.1} | {p50:>9.1} {p99:>9.1} | {:>9.1} {:>9.1} {unit}",
            p.len(),
            p50 - d50,
            p99 - d99
        );
    };
    println!();
    println!(
        "{:<34} {:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9}",
        "latency (direct vs through kvmux)",
        "n",
        "direct50",
        "direct99",
        "proxy50",
        "proxy99",
        "added50",
        "added99"
    );
    println!("{}", "-".repeat(110));
    row("key event -> source (us)", "us", &kd, &kp);
    row(
        &format!(
            "region flip -> viewer, {} (us)",
            args.encoding.name().unwrap_or("?")
        ),
        "us",
        &fd,
        &fp,
    );
    println!(
        "{:<34} {:>6} | {:>19} | {:>9.2} {:>9.2} | ms (p50 p99 through kvmux)",
        "switch: last hotkey -> new frame",
        sw.len(),
        "",
        percentile(&sw, 50.0),
        percentile(&sw, 99.0),
    );
    println!();
    let added_key = percentile(&kp, 50.0) - percentile(&kd, 50.0);
    println!(
        "target added key p50 < 100 us: {} ({added_key:.1} us); target switch p99 < 50 ms: {} ({:.2} ms)",
        verdict(added_key < 100.0),
        verdict(percentile(&sw, 99.0) < 50.0),
        percentile(&sw, 99.0)
    );
    print_warnings(&warnings);
    Ok(())
}

fn print_warnings((warnings, closed): &(Vec<String>, usize)) {
    if *closed > 0 {
        println!("proxy log: {closed} viewer(s) dropped on a broken pipe or reset (the bench closing viewers mid-update)");
    }
    if warnings.is_empty() {
        println!("proxy log: no warnings or errors");
    } else {
        println!("proxy log: {} warning/error line(s), e.g.:", warnings.len());
        for w in warnings.iter().take(5) {
            println!("  {w}");
        }
    }
}

// ---------------------------------------------------------------------------------
// CPU per transcoded 1080p frame.

#[derive(Debug, Clone, Copy)]
enum Kind {
    Zrle,
    Tight,
    PassThrough,
    PassThroughZrle,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Zrle => "ZRLE viewer (transcoded)",
            Kind::Tight => "Tight viewer (transcoded)",
            Kind::PassThrough => "Raw+zlib-reset viewer (passed through, Raw)",
            Kind::PassThroughZrle => "ZRLE+zlib-reset viewer (passed through, ZRLE)",
        }
    }

    fn encodings(self) -> Vec<Encoding> {
        match self {
            Kind::Zrle => viewer_encodings(&[Encoding::ZRLE], &[]),
            Kind::Tight => viewer_encodings(&[Encoding::TIGHT], &[]),
            // What the proxy asks of a loopback upstream (source.rs,
            // `upstream_encodings`), in the same pixel format, plus kvmux's
            // zlib-stream-reset: a viewer the upstream's rectangles suit as they are.
            Kind::PassThrough => viewer_encodings(
                &[
                    Encoding::COPY_RECT,
                    Encoding::RAW,
                    Encoding::ZRLE,
                    Encoding::HEXTILE,
                ],
                &[Encoding::compress_level(1), Encoding::KVMUX_ZLIB_RESET],
            ),
            // A ZRLE viewer that lists kvmux's zlib-stream-reset: alone on the source,
            // it gets the upstream's own ZRLE rectangles, forwarded unchanged.
            Kind::PassThroughZrle => {
                viewer_encodings(&[Encoding::ZRLE], &[Encoding::KVMUX_ZLIB_RESET])
            }
        }
    }
}

/// A whole-screen-changing 1080p source: each `advance` shifts the picture.
struct Shifter {
    source: Arc<BenchSource>,
    picture: Vec<u32>,
    n: u32,
}

impl Shifter {
    async fn start(image: Option<&PathBuf>) -> Result<Shifter> {
        let picture = picture(image)?;
        let mut fb = Framebuffer::new(WIDTH, HEIGHT);
        draw_shifted(&mut fb, &picture, 0, 0);
        Ok(Shifter {
            source: BenchSource::start(fb).await?,
            picture,
            n: 0,
        })
    }

    /// The next frame; returns its marker colour.
    fn advance(&mut self) -> u32 {
        self.n += 1;
        let (n, picture) = (self.n, &self.picture);
        // 8 columns a frame: every pixel row changes.
        self.source
            .change(|fb| vec![draw_shifted(fb, picture, n as usize * 8, n)]);
        marker_colour(n)
    }
}

async fn cpu(args: &BenchProxyArgs) -> Result<()> {
    let mut shifter = Shifter::start(args.image.as_ref()).await?;
    let proxy = Proxy::start(args, &[&shifter.source]).await?;
    let kinds = [
        Kind::Zrle,
        Kind::Tight,
        Kind::PassThrough,
        Kind::PassThroughZrle,
    ];
    // Per kind, then without a viewer: frames, proxy CPU seconds, wall seconds.
    let mut totals = [(0u32, 0.0f64, 0.0f64); 5];
    let (mx, my) = centre(MARKER);
    for _ in 0..args.rounds {
        // No viewer: what taking the upstream's frames costs by itself, at 10 fps
        // (the proxy takes every frame at that rate).
        {
            let cpu_before = proxy.cpu();
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for _ in 0..args.frames {
                tick.tick().await;
                shifter.advance();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let t = &mut totals[4];
            t.0 += args.frames;
            t.1 += proxy.cpu() - cpu_before;
            t.2 += started.elapsed().as_secs_f64();
        }
        for (i, kind) in kinds.iter().enumerate() {
            let mut v = Viewer::connect(&proxy.address(), &kind.encodings()).await?;
            v.request(false).await?;
            // Warm-up: three frames, not timed.
            for _ in 0..3 {
                let c = shifter.advance();
                v.until(Duration::from_secs(10), |fb| fb.pixel(mx, my) == Some(c))
                    .await?;
            }
            let cpu_before = proxy.cpu();
            let started = Instant::now();
            for _ in 0..args.frames {
                let c = shifter.advance();
                v.until(Duration::from_secs(10), |fb| fb.pixel(mx, my) == Some(c))
                    .await
                    .with_context(|| format!("{}: a frame never arrived", kind.label()))?;
            }
            let t = &mut totals[i];
            t.0 += args.frames;
            t.1 += proxy.cpu() - cpu_before;
            t.2 += started.elapsed().as_secs_f64();
        }
    }
    let warnings = proxy.warnings();
    let passthroughs = std::fs::read_to_string(&proxy.log)
        .unwrap_or_default()
        .matches("Pass-through on")
        .count();
    proxy.stop().await;

    println!();
    println!(
        "Proxy CPU per 1920x1080 frame, whole screen changing; upstream: the bench's source (Raw on loopback); {} rounds interleaved",
        args.rounds
    );
    println!(
        "{:<48} {:>7} {:>10} {:>12} {:>9}",
        "viewer", "frames", "CPU ms/fr", "over none ms", "frames/s"
    );
    println!("{}", "-".repeat(91));
    let upstream_only = totals[4].1 * 1e3 / f64::from(totals[4].0.max(1));
    let labels = kinds
        .iter()
        .map(|k| k.label())
        .chain(["no viewer (upstream side only, 10 fps)"]);
    for (label, (frames, cpu, wall)) in labels.zip(totals) {
        let ms = cpu * 1e3 / f64::from(frames.max(1));
        println!(
            "{:<48} {:>7} {:>10.2} {:>12.2} {:>9.1}",
            label,
            frames,
            ms,
            ms - upstream_only,
            f64::from(frames) / wall
        );
    }
    let per = |i: usize| totals[i].1 * 1e3 / f64::from(totals[i].0.max(1));
    // Transcoding pays for taking the upstream's frames (the last row) on top of the
    // encode; pass-through pays neither, the main connection being paused.
    let ratio = per(0).min(per(1)) / per(3);
    let ratio_raw = per(0).min(per(1)) / per(2);
    println!();
    println!(
        "cheapest transcode / ZRLE pass-through: {ratio:.1}x (target >= 10x: {}); / Raw pass-through: {ratio_raw:.1}x.",
        verdict(ratio >= 10.0)
    );
    println!(
        "Pass-through engaged {passthroughs} time(s) (one per pass-through viewer per round expected: {}).",
        2 * args.rounds
    );
    print_warnings(&warnings);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Load.

/// Samples the proxy's RSS once a second until stopped; returns (seconds, bytes).
fn sample_rss(
    proxy: &Proxy,
    stop: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<Vec<(f64, f64)>> {
    let pid = proxy.pid;
    tokio::spawn(async move {
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                        .ok()
                        .and_then(|s| {
                            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
                            line.split_whitespace().nth(1)?.parse::<f64>().ok()
                        });
                    if let Some(kb) = rss {
                        samples.push((started.elapsed().as_secs_f64(), kb * 1024.0));
                    }
                }
                _ = stop.notified() => return samples,
            }
        }
    })
}

/// A viewer of source `source` (1-based) through the proxy that asks for
/// incremental updates until `until`; returns how many it applied.
async fn active_viewer(
    address: String,
    encodings: Vec<Encoding>,
    source: u32,
    until: Instant,
) -> Result<u64> {
    let mut v = Viewer::connect(&address, &encodings).await?;
    if source != 1 {
        v.hotkey(source).await?;
    }
    v.request(false).await?;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(v.updates);
        }
        match tokio::time::timeout(left, v.next_update()).await {
            Ok(r) => r?,
            Err(_) => return Ok(v.updates),
        }
        v.request(true).await?;
    }
}

async fn load(args: &BenchProxyArgs) -> Result<()> {
    let clients = args.clients.max(1);
    let picture = Arc::new(picture(args.image.as_ref())?);
    let mut sources = Vec::new();
    for _ in 0..3 {
        let mut fb = Framebuffer::new(WIDTH, HEIGHT);
        draw_shifted(&mut fb, &picture, 0, 0);
        sources.push(BenchSource::start(fb).await?);
    }
    let refs: Vec<&Arc<BenchSource>> = sources.iter().collect();
    let proxy = Proxy::start(args, &refs).await?;
    let fb_bytes = 3.0 * f64::from(WIDTH) * f64::from(HEIGHT) * 4.0;
    let encodings_for = |i: u32| match (args.load_encoding, i % 3) {
        (LoadEncoding::Tight, _) | (LoadEncoding::Mixed, 0) => {
            viewer_encodings(&[Encoding::TIGHT], &[])
        }
        (LoadEncoding::Zrle, _) | (LoadEncoding::Mixed, 1) => {
            viewer_encodings(&[Encoding::ZRLE], &[])
        }
        _ => viewer_encodings(&[Encoding::HEXTILE], &[]),
    };

    // 1. Idle viewers: each takes one full frame, then asks for nothing.
    let rss_empty = proxy.rss().unwrap_or(0) as f64;
    let mut idle = Vec::new();
    let (mx, my) = centre(MARKER);
    for i in 0..clients {
        let mut v = Viewer::connect(&proxy.address(), &encodings_for(i)).await?;
        let to = i % 3 + 1;
        if to != 1 {
            v.hotkey(to).await?;
        }
        v.request(false).await?;
        v.until(Duration::from_secs(20), |fb| {
            fb.width() == WIDTH && fb.pixel(mx, my) == Some(marker_colour(0))
        })
        .await
        .context("an idle viewer's first frame")?;
        idle.push(v);
    }
    // Idle: past the proxy's idle trim (2 s after a client's last update).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = proxy.rss().unwrap_or(0) as f64;
    drop(idle);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. The load: every source animates (a moving box), all viewers pull.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut animators = Vec::new();
    for (k, s) in sources.iter().enumerate() {
        let (s, stop, picture) = (s.clone(), stop.clone(), picture.clone());
        animators.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            let mut n = 0u32;
            let mut last = Rect::new(0, 0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let x = ((n as usize * 13 + k * 400) % (usize::from(WIDTH) - 256)) as u16;
                let y = ((n as usize * 7 + k * 200) % (usize::from(HEIGHT) - 256)) as u16;
                let boxed = Rect::new(x, y, 256, 256);
                let old = last;
                let picture = &picture;
                s.change(|fb| {
                    // The old box back to the picture, the new one drawn.
                    let w = usize::from(WIDTH);
                    for row in old.y..old.y + old.height {
                        let at = usize::from(row) * w + usize::from(old.x);
                        let n = usize::from(old.width);
                        fb.pixels_mut()[at..at + n].copy_from_slice(&picture[at..at + n]);
                    }
                    let _ = fb.fill(boxed, 0x00ff_8000 ^ (n & 0xff));
                    let _ = fb.fill(MARKER, marker_colour(n));
                    vec![old, boxed, MARKER]
                });
                last = boxed;
            }
        }));
    }
    let stop_rss = Arc::new(tokio::sync::Notify::new());
    let rss_task = sample_rss(&proxy, stop_rss.clone());
    let cpu_before = proxy.cpu();
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut viewers = tokio::task::JoinSet::new();
    for i in 0..clients {
        viewers.spawn(active_viewer(
            proxy.address(),
            encodings_for(i),
            i % 3 + 1,
            until,
        ));
    }
    let mut errors = Vec::new();
    let mut updates = Vec::new();
    while let Some(r) = viewers.join_next().await {
        match r {
            Ok(Ok(n)) => updates.push(n),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("viewer task: {e}")),
        }
    }
    let load_cpu = proxy.cpu() - cpu_before;
    stop_rss.notify_one();
    let rss = rss_task.await.unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    for a in animators {
        let _ = a.await;
    }

    // 3. One whole-screen-changing source: 1 viewer against many, same format and
    // encoding (Tight: shared encodings apply).
    let mut cpu_ratio = Vec::new();
    let period = Duration::from_secs_f64(1.0 / args.fps.clamp(0.1, 100.0));
    for n in [1, clients] {
        let until = Instant::now() + Duration::from_secs_f64(args.cpu_seconds + 1.0);
        let mut viewers = tokio::task::JoinSet::new();
        for _ in 0..n {
            viewers.spawn(active_viewer(
                proxy.address(),
                viewer_encodings(&[Encoding::TIGHT], &[]),
                1,
                until,
            ));
        }
        // A second to connect, then the timed changes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu_before = proxy.cpu();
        let started = Instant::now();
        let mut tick = tokio::time::interval(period);
        let mut frames = 0u32;
        while started.elapsed().as_secs_f64() < args.cpu_seconds {
            tick.tick().await;
            frames += 1;
            let picture = &picture;
            sources[0].change(|fb| vec![draw_shifted(fb, picture, frames as usize * 8, frames)]);
        }
        let cpu = proxy.cpu() - cpu_before;
        let mut got = Vec::new();
        while let Some(r) = viewers.join_next().await {
            match r {
                Ok(Ok(u)) => got.push(u),
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("viewer task: {e}")),
            }
        }
        cpu_ratio.push((n, frames, cpu, got));
    }
    let warnings = proxy.warnings();
    proxy.stop().await;

    // Report.
    println!();
    println!(
        "Load: {clients} viewers ({}) across 3 sources of {WIDTH}x{HEIGHT}, each with a 256x256 box moving at 30 fps, for {:.0} s",
        match args.load_encoding {
            LoadEncoding::Mixed => "Tight, ZRLE, Hextile in turn",
            LoadEncoding::Tight => "Tight",
            LoadEncoding::Zrle => "ZRLE",
            LoadEncoding::Hextile => "Hextile",
        },
        args.seconds
    );
    let total: u64 = updates.iter().sum();
    let min = updates.iter().min().copied().unwrap_or(0);
    println!(
        "  viewers finished: {} of {clients}; errors: {}; updates applied: {total} ({:.1}/s per viewer, fewest {min})",
        updates.len(),
        errors.len(),
        total as f64 / args.seconds / f64::from(clients),
    );
    for e in errors.iter().take(5) {
        println!("    error: {e}");
    }
    println!(
        "  proxy CPU: {:.1}% of one core",
        load_cpu / args.seconds * 100.0
    );
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        let max = rss.iter().map(|s| s.1).fold(0.0, f64::max);
        // The first seconds are the viewers connecting: the slope is over the rest.
        let steady: Vec<(f64, f64)> = rss.iter().copied().filter(|s| s.0 >= 5.0).collect();
        println!(
            "  proxy RSS: start {:.1} MiB, end {:.1} MiB, max {:.1} MiB, slope after 5 s {:+.3} MiB/min ({} samples)",
            mib(first.1),
            mib(last.1),
            mib(max),
            mib(slope(&steady)) * 60.0,
            rss.len()
        );
    }
    println!();
    println!(
        "Memory: 3 sources of {WIDTH}x{HEIGHT} ({:.1} MiB of framebuffers), {clients} idle viewers",
        mib(fb_bytes)
    );
    let bound = 1.2 * fb_bytes + f64::from(clients) * 1024.0 * 1024.0;
    println!(
        "  proxy RSS without viewers {:.1} MiB; with {clients} idle viewers {:.1} MiB ({:.2} MiB per viewer)",
        mib(rss_empty),
        mib(rss_idle),
        mib((rss_idle - rss_empty) / f64::from(clients))
    );
    println!(
        "  bound 1.2 x framebuffers + 1 MiB per idle viewer = {:.1} MiB: {}",
        mib(bound),
        verdict(rss_idle <= bound)
    );
    println!();
    println!(
        "CPU, one whole-screen-changing source at {:.0} fps, Tight viewers in one format, {:.0} s each",
        args.fps, args.cpu_seconds
    );
    for (n, frames, cpu, got) in &cpu_ratio {
        let min = got.iter().min().copied().unwrap_or(0);
        let mean = got.iter().sum::<u64>() as f64 / got.len().max(1) as f64;
        println!(
            "  {n:>3} viewer(s): proxy CPU {:.1} ms per source frame ({frames} frames); updates per viewer mean {mean:.1}, fewest {min}",
            cpu * 1e3 / f64::from((*frames).max(1))
        );
    }
    if let [(_, f1, c1, _), (_, fn_, cn, _)] = cpu_ratio.as_slice() {
        let ratio = (cn / f64::from((*fn_).max(1))) / (c1 / f64::from((*f1).max(1)));
        println!(
            "  ratio {clients} : 1 = {ratio:.2}x (target <= 2x: {})",
            verdict(ratio <= 2.0)
        );
    }
    print_warnings(&warnings);
    if !errors.is_empty() {
        bail!("{} viewer(s) failed", errors.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn slope_of_a_line() {
        let points = [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0)];
        assert!((slope(&points) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn shifted_picture_wraps_around_and_carries_the_marker() {
        let mut fb = Framebuffer::new(WIDTH, HEIGHT);
        let picture: Vec<u32> = (0..u32::from(WIDTH) * u32::from(HEIGHT))
            .map(|i| i % u32::from(WIDTH))
            .collect();
        draw_shifted(&mut fb, &picture, 8, 5);
        // Column x shows the picture's column x + 8, wrapping at the right edge.
        assert_eq!(fb.pixel(100, 500), Some(108));
        assert_eq!(fb.pixel(WIDTH - 1, 500), Some(7));
        assert_eq!(fb.pixel(8, 8), Some(5));
    }
}
