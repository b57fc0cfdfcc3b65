//! Real VNC viewers showing `kvmux testsrc`: TigerVNC's `vncviewer` (full screen, one
//! encoding and pixel format at a time) and gtk-vnc's `gvncviewer` (a window), each on
//! its own Xvfb. What the X server shows must be the test picture: exactly for lossless
//! encodings, close for JPEG, and reduced as the requested pixel format implies for low
//! colour.
//!
//! Between viewer and server sits a relay that records the client's SetPixelFormat and
//! SetEncodings messages (RFB spec §7.5.1, §7.5.2), so that expectations follow from what
//! the viewer really asked for, and a failure says it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kvmux_tests::{
    capture_root, free_display, free_port, imagemagick, kvmux_bin, run, Image, PeerProcess, TempDir,
};

use crate::{picture, reduced, HEIGHT, WIDTH};

/// How long a viewer may take to show the picture on a busy machine.
const SHOW_TIMEOUT: Duration = Duration::from_secs(30);

/// What a viewer asked the server for, as the relay saw it.
#[derive(Debug, Default, Clone)]
struct Requests {
    /// The last SetPixelFormat's 16 bytes of pixel format, if any.
    pixel_format: Option<[u8; 16]>,
    /// The last SetEncodings' list, in the client's order of preference.
    encodings: Vec<i32>,
}

impl Requests {
    /// Red, green and blue maxima of the requested format, if one was requested.
    fn maxima(&self) -> Option<(u32, u32, u32)> {
        let f = self.pixel_format?;
        let max = |i: usize| u32::from(u16::from_be_bytes([f[i], f[i + 1]]));
        Some((max(4), max(6), max(8)))
    }

    /// The encoding the viewer prefers: the first real one (0..=255), pseudo-encodings
    /// (negative, or large private numbers) aside.
    fn preferred(&self) -> Option<i32> {
        self.encodings
            .iter()
            .copied()
            .find(|e| (0..=255).contains(e))
    }

    /// Human-readable: bits per pixel, depth, maxima and shifts; the encodings.
    fn describe(&self) -> String {
        let format = match self.pixel_format {
            Some(f) => format!(
                "bpp {} depth {} true-colour {} max {}/{}/{} shift {}/{}/{}",
                f[0],
                f[1],
                f[3],
                u16::from_be_bytes([f[4], f[5]]),
                u16::from_be_bytes([f[6], f[7]]),
                u16::from_be_bytes([f[8], f[9]]),
                f[10],
                f[11],
                f[12]
            ),
            None => "the server's".to_owned(),
        };
        format!("pixel format {format}; encodings {:?}", self.encodings)
    }
}

/// `kvmux testsrc` showing the test picture, behind a recording relay.
struct Source {
    process: PeerProcess,
    relay_port: u16,
    requests: Arc<Mutex<Requests>>,
    _dir: TempDir,
}

impl Source {
    fn start() -> Source {
        let dir = TempDir::new("viewersrc").unwrap();
        let port = free_port().unwrap();
        let mut command = Command::new(kvmux_bin());
        command
            .args(["testsrc", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--pattern")
            .arg(format!("image:{}", picture().display()))
            .env("KVMUX_LOG", "debug");
        let process = PeerProcess::spawn(&command, &dir.join("testsrc.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "testsrc did not listen: {}",
                process.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay_port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Requests::default()));
        let recorded = Arc::clone(&requests);
        // Lives until the test process ends; each connection ends with either side.
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                relay(client, server, Arc::clone(&recorded));
            }
        });
        Source {
            process,
            relay_port,
            requests,
            _dir: dir,
        }
    }

    fn requests(&self) -> Requests {
        self.requests.lock().unwrap().clone()
    }

    fn log(&self) -> String {
        self.process.log_text()
    }
}

/// Copies bytes both ways between `client` and `server`, recording the client's requests.
fn relay(client: TcpStream, server: TcpStream, requests: Arc<Mutex<Requests>>) {
    let (Ok(mut client_rx), Ok(mut server_tx)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut server_rx, mut client_tx) = (server, client);
    thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = server_rx.read(&mut buf) {
            if client_tx.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = client_tx.shutdown(Shutdown::Both);
    });
    thread::spawn(move || {
        let mut seen = Vec::new();
        let mut parsed = 0;
        let mut parsing = true;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = client_rx.read(&mut buf) {
            if parsing {
                seen.extend_from_slice(&buf[..n]);
                parsing = parse_client(&seen, &mut parsed, &requests);
                if !parsing {
                    seen = Vec::new();
                }
            }
            if server_tx.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown(Shutdown::Both);
    });
}

/// Parses complete client messages in `seen` from `*parsed` on, recording pixel formats
/// and encodings. The first 14 bytes are the handshake with security None: protocol
/// version (12), security type (1), ClientInit (1). Returns false at a message it does not
/// know (the rest is then only relayed).
fn parse_client(seen: &[u8], parsed: &mut usize, requests: &Mutex<Requests>) -> bool {
    const HANDSHAKE: usize = 12 /* version */ + 1 /* security type */ + 1 /* shared flag */;
    if *parsed < HANDSHAKE {
        if seen.len() < HANDSHAKE {
            return true;
        }
        *parsed = HANDSHAKE;
    }
    loop {
        let rest = &seen[*parsed..];
        let Some(&kind) = rest.first() else {
            return true;
        };
        let length = match kind {
            0 => 4 + 16, // SetPixelFormat
            2 => match rest.get(2..4) {
                Some(n) => 4 + 4 * usize::from(u16::from_be_bytes([n[0], n[1]])),
                None => return true,
            },
            3 => 10,   // FramebufferUpdateRequest
            4 => 8,    // KeyEvent
            5 => 6,    // PointerEvent
            150 => 10, // EnableContinuousUpdates
            248 => match rest.get(8) {
                Some(&n) => 9 + usize::from(n), // ClientFence
                None => return true,
            },
            _ => return false,
        };
        let Some(message) = rest.get(..length) else {
            return true;
        };
        let mut requests = requests.lock().unwrap();
        match kind {
            0 => requests.pixel_format = message[4..20].try_into().ok(),
            2 => {
                requests.encodings = message[4..]
                    .chunks_exact(4)
                    .map(|e| i32::from_be_bytes([e[0], e[1], e[2], e[3]]))
                    .collect();
            }
            _ => {}
        }
        *parsed += length;
    }
}

/// An Xvfb display, stopped when dropped.
pub(crate) struct Xvfb {
    pub process: PeerProcess,
    pub display: u32,
    _dir: TempDir,
}

impl Xvfb {
    pub fn start(width: u32, height: u32) -> Xvfb {
        let dir = TempDir::new("viewerx").unwrap();
        // Another process may take the same display number at the same moment: its lock
        // file decides, and the loser tries another number.
        for _ in 0..8 {
            let display = free_display();
            let mut command = Command::new("Xvfb");
            command
                .arg(format!(":{display}"))
                .args(["-screen", "0", &format!("{width}x{height}x24")])
                .args(["-nolisten", "tcp"])
                // Without it the server resets whenever its last client leaves, and a
                // client connecting at that moment (a window manager starting while
                // xprop looks for it) loses its connection.
                .arg("-noreset");
            let mut process = PeerProcess::spawn(&command, &dir.join("xvfb.log")).unwrap();
            let lock = format!("/tmp/.X{display}-lock");
            let socket = format!("/tmp/.X11-unix/X{display}");
            let deadline = Instant::now() + Duration::from_secs(20);
            while process.is_running() && Instant::now() < deadline {
                let owner = std::fs::read_to_string(&lock).unwrap_or_default();
                if owner.trim() == process.pid().to_string() && Path::new(&socket).exists() {
                    return Xvfb {
                        process,
                        display,
                        _dir: dir,
                    };
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("Xvfb did not start");
    }

    /// Starts `program ARGS…` on this display, its stderr into this display's directory.
    pub fn spawn(&self, program: &str, args: &[&str]) -> PeerProcess {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("DISPLAY", format!(":{}", self.display));
        let log = self._dir.join(format!("{program}.log"));
        PeerProcess::spawn(&command, &log).unwrap()
    }
}

/// The screen of `display` as ImageMagick's `import` reads it. While gvncviewer runs,
/// `xwd -root` labels the dump DirectColor, which [`capture_root`] refuses.
pub(crate) fn import_root(display: u32) -> anyhow::Result<Image> {
    let dir = TempDir::new("import")?;
    let out = dir.join("root.png");
    run(
        Command::new(imagemagick("import")?)
            .args(["-window", "root"])
            .arg(&out)
            .env("DISPLAY", format!(":{display}")),
        Duration::from_secs(20),
    )?
    .check("import")?;
    Image::load_png(&out)
}

/// Captures the screen with `capture` until `judge` accepts it (returns `None`) or [`SHOW_TIMEOUT`]
/// passes; then panics with the last verdict and everybody's logs.
fn wait_until_shown(
    what: &str,
    xvfb: &Xvfb,
    viewer: &PeerProcess,
    source: &Source,
    capture: fn(u32) -> anyhow::Result<Image>,
    mut judge: impl FnMut(&Image) -> Option<String>,
) -> Duration {
    let start = Instant::now();
    loop {
        let verdict = match capture(xvfb.display) {
            Ok(screen) => judge(&screen),
            Err(e) => Some(format!("{e:#}")),
        };
        let Some(verdict) = verdict else {
            return start.elapsed();
        };
        if start.elapsed() > SHOW_TIMEOUT {
            panic!(
                "{what}: {verdict}\nrequests: {}\nviewer log:\n{}\ntestsrc log:\n{}\nXvfb log:\n{}",
                source.requests().describe(),
                viewer.log_text(),
                source.log(),
                xvfb.process.log_text()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Runs TigerVNC's vncviewer full screen with `options` against a fresh source, waits
/// until its screen passes `judge` (given what the viewer requested), and returns what it
/// requested.
fn vncviewer_shows(
    what: &str,
    options: &[&str],
    judge: impl Fn(&Image, &Requests) -> Option<String>,
) -> Requests {
    let source = Source::start();
    let xvfb = Xvfb::start(WIDTH, HEIGHT);
    let address = format!("127.0.0.1::{}", source.relay_port);
    let mut args = vec![
        "-SecurityTypes=None",
        "-FullScreen",
        "-RemoteResize=0",
        "-DotWhenNoCursor=0",
        "-AutoSelect=0",
        "-Log=*:stderr:30",
    ];
    args.extend_from_slice(options);
    args.push(&address);
    let viewer = xvfb.spawn("vncviewer", &args);
    let elapsed = wait_until_shown(what, &xvfb, &viewer, &source, capture_root, |screen| {
        judge(screen, &source.requests())
    });
    let requests = source.requests();
    eprintln!(
        "vncviewer {what}: shown after {elapsed:.1?}; {}",
        requests.describe()
    );
    requests
}

fn exactly(truth: &Image) -> impl Fn(&Image, &Requests) -> Option<String> + '_ {
    |screen, _| screen.diff(truth).map(|d| d.to_string())
}

fn truth() -> Image {
    Image::load_png(picture()).unwrap()
}

/// RFB encoding numbers.
const RAW: i32 = 0;
const HEXTILE: i32 = 5;
const TIGHT: i32 = 7;
const ZRLE: i32 = 16;

fn lossless(encoding: &str, number: i32, extra: &[&str]) {
    let truth = truth();
    let preferred = format!("-PreferredEncoding={encoding}");
    let mut options = vec![preferred.as_str(), "-FullColor=1"];
    options.extend_from_slice(extra);
    let requests = vncviewer_shows(encoding, &options, exactly(&truth));
    assert_eq!(
        requests.preferred(),
        Some(number),
        "{}",
        requests.describe()
    );
}

#[test]
fn vncviewer_raw() {
    lossless("Raw", RAW, &[]);
}

#[test]
fn vncviewer_hextile() {
    lossless("Hextile", HEXTILE, &[]);
}

#[test]
fn vncviewer_zrle() {
    lossless("ZRLE", ZRLE, &[]);
}

#[test]
fn vncviewer_tight_lossless() {
    lossless("Tight", TIGHT, &["-NoJPEG"]);
}

#[test]
fn vncviewer_tight_jpeg() {
    let truth = truth();
    let requests = vncviewer_shows(
        "Tight JPEG",
        &[
            "-PreferredEncoding=Tight",
            "-FullColor=1",
            "-QualityLevel=8",
        ],
        |screen, _| {
            if (screen.width, screen.height) != (truth.width, truth.height) {
                return Some("wrong size".to_owned());
            }
            let psnr = screen.psnr(&truth);
            (psnr < 30.0).then(|| format!("PSNR {psnr:.2} dB < 30 dB"))
        },
    );
    assert_eq!(requests.preferred(), Some(TIGHT), "{}", requests.describe());
    assert!(
        requests.encodings.contains(&(-32 + 8)),
        "no JPEG quality level 8: {}",
        requests.describe()
    );
}

/// `-LowColorLevel=1` asks for 8-bit rgb222 (maxima 3); the server rounds each channel to
/// `(v * 3 + 127) / 255` and the viewer widens level `l` to `l * 85`.
#[test]
fn vncviewer_low_colour() {
    let truth = truth();
    let requests = vncviewer_shows(
        "low colour",
        &[
            "-PreferredEncoding=Tight",
            "-FullColor=0",
            "-LowColorLevel=1",
        ],
        |screen, requests| {
            let Some(maxima) = requests.maxima() else {
                return Some("no pixel format requested yet".to_owned());
            };
            let expected = truth.map(|p| reduced(p, maxima, 127));
            screen.diff(&expected).map(|d| d.to_string())
        },
    );
    let format = requests.pixel_format.unwrap();
    assert_eq!(
        (format[0], requests.maxima()),
        (8, Some((3, 3, 3))),
        "{}",
        requests.describe()
    );
}

/// The part of `screen` at `x, y` the size of `size`.
fn crop(screen: &Image, x: u32, y: u32, size: (u32, u32)) -> Image {
    let mut pixels = Vec::with_capacity(size.0 as usize * size.1 as usize);
    for row in y..y + size.1 {
        let start = (row * screen.width + x) as usize;
        pixels.extend_from_slice(&screen.pixels[start..start + size.0 as usize]);
    }
    Image {
        width: size.0,
        height: size.1,
        pixels,
    }
}

/// Of the places inside `area` (x, y, width, height) where `picture` fits whole, the one
/// where `screen` is closest to it, with the PSNR there.
fn best_match(
    screen: &Image,
    picture: &Image,
    area: (u32, u32, u32, u32),
) -> Option<(u32, u32, f64)> {
    let (ax, ay, aw, ah) = area;
    let right = (ax + aw).min(screen.width).checked_sub(picture.width)?;
    let bottom = (ay + ah).min(screen.height).checked_sub(picture.height)?;
    let mut best: Option<(u32, u32, f64)> = None;
    for y in ay..=bottom {
        for x in ax..=right {
            let psnr = crop(screen, x, y, (picture.width, picture.height)).psnr(picture);
            if best.is_none_or(|(_, _, b)| psnr > b) {
                best = Some((x, y, psnr));
            }
        }
    }
    best
}

/// gtk-vnc's gvncviewer shows the picture, unscaled, inside its window (below its menu
/// bar: the screen is larger than the picture so that the window fits). gvncviewer offers
/// Tight with JPEG quality level 5 (pseudo-encoding -27), so the server may send JPEG and
/// the picture is compared by PSNR (at least 30 dB), not exactly.
#[test]
fn gvncviewer_shows_the_picture() {
    let truth = truth();
    let source = Source::start();
    let xvfb = Xvfb::start(1600, 1000);
    // gvncviewer takes `host:display` (port 5900 + display) only.
    let display = source
        .relay_port
        .checked_sub(5900)
        .expect("port above 5900");
    let viewer = xvfb.spawn("gvncviewer", &[&format!("127.0.0.1:{display}")]);
    let mut found = None;
    let elapsed = wait_until_shown(
        "gvncviewer",
        &xvfb,
        &viewer,
        &source,
        import_root,
        |screen| {
            let geometry = run(
                Command::new("xdotool")
                    .args(["search", "--name", " - GVncViewer$"])
                    .args(["getwindowgeometry", "--shell"])
                    .env("DISPLAY", format!(":{}", xvfb.display)),
                Duration::from_secs(10),
            )
            .ok()?
            .stdout_text();
            let value = |key: &str| -> Option<u32> {
                geometry
                    .lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            let window = (|| Some((value("X")?, value("Y")?, value("WIDTH")?, value("HEIGHT")?)))();
            let Some((x, y, w, h)) = window else {
                return Some(format!("no gvncviewer window yet: {geometry:?}"));
            };
            found = best_match(screen, &truth, (x, y, w, h));
            match found {
                Some((_, _, psnr)) if psnr >= 30.0 => None,
                Some((px, py, psnr)) => Some(format!(
                    "inside the window at {x},{y} {w}x{h}, the best place {px},{py} has \
                     PSNR {psnr:.2} dB < 30 dB"
                )),
                None => Some(format!("the window at {x},{y} {w}x{h} is too small")),
            }
        },
    );
    eprintln!(
        "gvncviewer: shown at {found:?} after {elapsed:.1?}; {}",
        source.requests().describe()
    );
}
