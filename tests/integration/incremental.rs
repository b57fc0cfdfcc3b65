//! The `rfb` client through incremental updates from real servers: after every change on
//! the X screen its framebuffer must come to equal the screen again, pixel for pixel.
//!
//! One TigerVNC Xvnc per encoding (and one x11vnc); CopyRect is offered first, then the
//! encoding under test, then the pseudo-encodings (the cursor among them, so the pointer
//! stays out of the picture). The script: a full frame of the test picture; part of the
//! screen redrawn; the whole screen redrawn twice; a window (`xwud` showing a known
//! picture, no window manager) opened, moved far, moved by a few pixels in every
//! direction (source and destination overlap), moved partly off the screen and back,
//! then unmapped. Xvnc sends the moves as CopyRect (it hooks the X server's CopyWindow);
//! each move must bring at least one.
//!
//! The expected screen after each step is computed here (the background picture with
//! the window's pixels laid where the window went); the X server must show exactly it
//! before the client is asked to catch up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use kvmux_tests::{
    capture_root, imagemagick, paint, run, Image, PeerProcess, VncServer, X11vnc, Xvnc, XvncOptions,
};
use rfb::client::{ClientEvent, ClientSession};
use rfb::net::{BoxStream, ConnectOptions};
use rfb::Encoding;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{flat_picture, picture, shared_dir, HEIGHT, WIDTH};

/// How long the X server may take to show a change, and the client to catch up with it,
/// on a busy machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for an answer to an update request before looking again.
const POLL: Duration = Duration::from_millis(100);
/// How long an update request may stay unanswered, while the screen differs, before it
/// is sent again.
const REQUEST_AGAIN: Duration = Duration::from_secs(2);
/// How `xwud` titles its window, to find it by.
const WINDOW_TITLE: &str = "^xwud: ";
/// The picture the window shows.
const WINDOW_SIZE: (u32, u32) = (320, 240);

/// A rectangle of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Area {
    x: i64,
    y: i64,
    width: i64,
    height: i64,
}

/// `picture` with the pixels inside `area` inverted: a change to part of the screen.
fn partly_inverted(picture: &Image, area: Area) -> Image {
    let mut changed = picture.clone();
    for y in area.y..area.y + area.height {
        for x in area.x..area.x + area.width {
            let i = y as usize * picture.width as usize + x as usize;
            changed.pixels[i] ^= 0x00ff_ffff;
        }
    }
    changed
}

/// The test picture with a block in its middle inverted.
fn partly_changed_picture() -> &'static Path {
    static PICTURE: OnceLock<PathBuf> = OnceLock::new();
    PICTURE.get_or_init(|| {
        let original = Image::load_png(picture()).unwrap();
        let area = Area {
            x: 200,
            y: 150,
            width: 700,
            height: 330,
        };
        let path = shared_dir().join("partly-inverted.png");
        partly_inverted(&original, area).save_png(&path).unwrap();
        path
    })
}

/// What the window shows: a piece of the test picture (text, plasma, flat areas) with its
/// channels rotated, so that it differs from everything around it. A PNG, and the same as
/// an `xwd` dump for `xwud` to show.
fn window_picture() -> &'static (PathBuf, PathBuf) {
    static PICTURE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PICTURE.get_or_init(|| {
        let original = Image::load_png(picture()).unwrap();
        let (width, height) = WINDOW_SIZE;
        let mut pixels = Vec::with_capacity((width * height) as usize);
        for y in 0..height {
            for x in 0..width {
                let p = original.pixel(x + 500, y + 300);
                pixels.push((p << 8 | p >> 16) & 0x00ff_ffff);
            }
        }
        let png = shared_dir().join("window.png");
        Image {
            width,
            height,
            pixels,
        }
        .save_png(&png)
        .unwrap();
        let xwd = shared_dir().join("window.xwd");
        run(
            Command::new(imagemagick("convert").unwrap())
                .arg(&png)
                .args(["-type", "TrueColor", "-depth", "8"])
                .arg(format!("xwd:{}", xwd.display())),
            STEP_TIMEOUT,
        )
        .unwrap()
        .check("convert to xwd")
        .unwrap();
        (png, xwd)
    })
}

/// `background` with `window` laid with its top left corner at `x, y`, clipped to the
/// screen.
fn composed(background: &Image, window: &Image, x: i64, y: i64) -> Image {
    let mut screen = background.clone();
    for wy in 0..i64::from(window.height) {
        for wx in 0..i64::from(window.width) {
            let (sx, sy) = (x + wx, y + wy);
            if (0..i64::from(screen.width)).contains(&sx)
                && (0..i64::from(screen.height)).contains(&sy)
            {
                let i = sy as usize * screen.width as usize + sx as usize;
                screen.pixels[i] = window.pixel(wx as u32, wy as u32);
            }
        }
    }
    screen
}

/// Where two same-sized pictures differ: the smallest rectangle holding every differing
/// pixel, for failure reports.
fn differing_area(a: &Image, b: &Image) -> Option<Area> {
    let mut bounds: Option<(u32, u32, u32, u32)> = None;
    for y in 0..a.height.min(b.height) {
        for x in 0..a.width.min(b.width) {
            if (a.pixel(x, y) ^ b.pixel(x, y)) & 0x00ff_ffff != 0 {
                let (x0, y0, x1, y1) = bounds.get_or_insert((x, y, x, y));
                *x0 = (*x0).min(x);
                *y0 = (*y0).min(y);
                *x1 = (*x1).max(x);
                *y1 = (*y1).max(y);
            }
        }
    }
    bounds.map(|(x0, y0, x1, y1)| Area {
        x: x0.into(),
        y: y0.into(),
        width: i64::from(x1 - x0) + 1,
        height: i64::from(y1 - y0) + 1,
    })
}

/// Waits until the X server of `display` shows exactly `expected`.
fn wait_for_screen(display: u32, expected: &Image, what: &str) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let shown = capture_root(display).unwrap();
        let Some(difference) = shown.diff(expected) else {
            return;
        };
        if Instant::now() > deadline {
            panic!(
                "{what}: the X screen is not as expected after {STEP_TIMEOUT:?}: {difference} \
                 (within {:?})",
                differing_area(&shown, expected)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// An `rfb` client connected to a server, driven one step at a time.
struct Viewer {
    runtime: tokio::runtime::Runtime,
    stream: BoxStream,
    session: ClientSession,
    /// When the update request not yet answered was sent.
    requested: Option<Instant>,
    buf: Vec<u8>,
}

impl Viewer {
    /// Connects, asks for `encodings` and for a whole frame.
    fn connect(port: u16, encodings: &[Encoding]) -> Viewer {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let address = format!("127.0.0.1::{port}");
        let conn = runtime
            .block_on(rfb::net::connect(&address, &ConnectOptions::default()))
            .unwrap();
        let mut session = ClientSession::new(&conn.init);
        session.feed(&conn.leftover).unwrap();
        let mut viewer = Viewer {
            runtime,
            stream: conn.stream,
            session,
            requested: Some(Instant::now()),
            buf: vec![0; 256 * 1024],
        };
        let mut out = Vec::new();
        viewer.session.set_encodings(encodings, &mut out);
        viewer.session.request_update(false, None, &mut out);
        viewer.send(&out);
        viewer
    }

    fn send(&mut self, bytes: &[u8]) {
        self.runtime.block_on(self.stream.write_all(bytes)).unwrap();
    }

    /// Applies what the server sends until an update completes or `wait` has passed.
    fn pump(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            while let Some(event) = self.session.poll_event() {
                if event == ClientEvent::UpdateComplete {
                    self.requested = None;
                }
            }
            if self.requested.is_none() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let (stream, buf) = (&mut self.stream, &mut self.buf);
            let read = self
                .runtime
                .block_on(async { tokio::time::timeout(left, stream.read(buf)).await });
            match read {
                Err(_elapsed) => return,
                Ok(Ok(0)) => panic!("the server closed the connection"),
                Ok(Ok(n)) => self.session.feed(&self.buf[..n]).unwrap(),
                Ok(Err(e)) => panic!("cannot read from the server: {e}"),
            }
        }
    }

    fn image(&self) -> Image {
        let fb = self.session.framebuffer();
        Image {
            width: fb.width().into(),
            height: fb.height().into(),
            pixels: fb.pixels().to_vec(),
        }
    }

    fn rect_counts(&self) -> BTreeMap<Encoding, u64> {
        self.session.rect_counts().clone()
    }

    /// Asks for incremental updates until the framebuffer equals `expected`; panics with
    /// where they still differ after [`STEP_TIMEOUT`]. Returns how long it took.
    fn catch_up(&mut self, expected: &Image, what: &str) -> Duration {
        let start = Instant::now();
        loop {
            let image = self.image();
            let Some(difference) = image.diff(expected) else {
                return start.elapsed();
            };
            if start.elapsed() > STEP_TIMEOUT {
                panic!(
                    "{what}: the client's framebuffer still differs from the X screen after \
                     {STEP_TIMEOUT:?}: {difference} (within {:?}); rectangles so far: {}",
                    differing_area(&image, expected),
                    describe(&self.rect_counts())
                );
            }
            // One request at a time; asked again only if the server seems to have lost it.
            if self
                .requested
                .is_none_or(|sent| sent.elapsed() > REQUEST_AGAIN)
            {
                let mut out = Vec::new();
                self.session.request_update(true, None, &mut out);
                self.send(&out);
                self.requested = Some(Instant::now());
            }
            self.pump(POLL);
        }
    }
}

fn describe(counts: &BTreeMap<Encoding, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(e, n)| format!("{e} {n}")).collect();
    parts.join(", ")
}

/// Rectangles counted in `after` but not in `before`, per encoding.
fn counted_since(
    before: &BTreeMap<Encoding, u64>,
    after: &BTreeMap<Encoding, u64>,
) -> BTreeMap<Encoding, u64> {
    after
        .iter()
        .map(|(e, n)| (*e, n - before.get(e).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A window of `xwud` showing [`window_picture`]. (Not ImageMagick's `display`: it asks
/// for backing store, which the X server provides by redirecting the window (Composite),
/// and moves of a redirected window reach Xvnc as drawing, not as copies.)
struct Window {
    _process: PeerProcess,
    display: u32,
    id: String,
    /// Where the window is, as the X server reports it.
    area: Area,
}

/// Runs `xdotool ARGS…` on `display` and returns its output.
fn xdotool(display: u32, args: &[&str]) -> String {
    let out = run(
        Command::new("xdotool")
            .args(args)
            .env("DISPLAY", format!(":{display}")),
        STEP_TIMEOUT,
    )
    .unwrap();
    out.check(&format!("xdotool {args:?}"))
        .unwrap()
        .stdout_text()
}

impl Window {
    /// Opens the window with its outside corner at `x, y`; waits until it shows.
    fn open(display: u32, dir: &Path, x: i64, y: i64) -> Window {
        let mut command = Command::new("xwud");
        command
            .args(["-noclick", "-geometry", &format!("+{x}+{y}"), "-in"])
            .arg(&window_picture().1)
            .env("DISPLAY", format!(":{display}"));
        let process = PeerProcess::spawn(&command, &dir.join("xwud.log")).unwrap();
        let deadline = Instant::now() + STEP_TIMEOUT;
        let id = loop {
            let found = run(
                Command::new("xdotool")
                    .args(["search", "--onlyvisible", "--name", WINDOW_TITLE])
                    .env("DISPLAY", format!(":{display}")),
                STEP_TIMEOUT,
            )
            .unwrap()
            .stdout_text();
            if let Some(id) = found.split_whitespace().next() {
                break id.to_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "the xwud window did not show; its log:\n{}",
                    process.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut window = Window {
            _process: process,
            display,
            id,
            area: Area {
                x: 0,
                y: 0,
                width: 0,
                height: 0,
            },
        };
        window.read_geometry();
        let (width, height) = WINDOW_SIZE;
        assert_eq!(
            window.area,
            Area {
                x,
                y,
                width: width.into(),
                height: height.into()
            },
            "the window opened elsewhere, or not the size of its picture"
        );
        window
    }

    /// Asks the X server where the window is (`xwininfo`). `xwud` draws no border.
    fn read_geometry(&mut self) {
        let out = run(
            Command::new("xwininfo")
                .args(["-id", &self.id])
                .args(["-display", &format!(":{}", self.display)]),
            STEP_TIMEOUT,
        )
        .unwrap()
        .check("xwininfo")
        .unwrap()
        .stdout_text();
        let field = |name: &str| -> i64 {
            out.lines()
                .find_map(|line| line.trim().strip_prefix(name))
                .and_then(|rest| rest.trim().parse().ok())
                .unwrap_or_else(|| panic!("xwininfo says no {name:?}:\n{out}"))
        };
        assert_eq!(field("Border width:"), 0, "the window has a border");
        self.area = Area {
            x: field("Absolute upper-left X:"),
            y: field("Absolute upper-left Y:"),
            width: field("Width:"),
            height: field("Height:"),
        };
    }

    /// Moves the window's outside corner to `x, y` and waits until the X server has.
    fn move_to(&mut self, x: i64, y: i64) {
        xdotool(
            self.display,
            &[
                "windowmove",
                "--sync",
                &self.id,
                &x.to_string(),
                &y.to_string(),
            ],
        );
        self.read_geometry();
        assert_eq!(
            (self.area.x, self.area.y),
            (x, y),
            "the window did not move"
        );
    }

    fn unmap(&self) {
        xdotool(self.display, &["windowunmap", "--sync", &self.id]);
    }
}

/// What a run of the script saw.
struct Report {
    /// Rectangles per encoding, over the whole run.
    counts: BTreeMap<Encoding, u64>,
    /// CopyRect rectangles per window move.
    copies_per_move: Vec<(String, u64)>,
}

/// Runs the whole script against `server` (files go to `dir`) with `encoding` preferred.
fn run_script(server: &impl VncServer, dir: &Path, encoding: Encoding) -> Report {
    let started = Instant::now();
    let display = server.display();
    let mut background = server.paint(picture()).unwrap();
    let mut viewer = Viewer::connect(
        server.port(),
        &[
            Encoding::COPY_RECT,
            encoding,
            Encoding::DESKTOP_SIZE,
            Encoding::EXTENDED_DESKTOP_SIZE,
            Encoding::LAST_RECT,
            Encoding::CURSOR,
            Encoding::CURSOR_WITH_ALPHA,
        ],
    );
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut step = |viewer: &mut Viewer, what: &str, expected: &Image| {
        wait_for_screen(display, expected, what);
        let took = viewer.catch_up(expected, what);
        timings.push((what.to_owned(), took));
    };

    step(&mut viewer, "first frame", &background);

    // Drawing: part of the screen, then all of it, twice.
    for (what, png) in [
        ("part of the screen redrawn", partly_changed_picture()),
        ("the whole screen redrawn", flat_picture()),
        ("the whole screen redrawn again", picture()),
    ] {
        background = paint(display, png).unwrap();
        step(&mut viewer, what, &background);
    }

    // A window: opened, moved about, closed.
    let mut window = Window::open(display, dir, 100, 100);
    let contents = Image::load_png(&window_picture().0).unwrap();
    let at = |x: i64, y: i64| composed(&background, &contents, x, y);
    step(&mut viewer, "window opened", &at(100, 100));

    let (max_x, max_y) = (
        i64::from(WIDTH) - window.area.width,
        i64::from(HEIGHT) - window.area.height,
    );
    let (mid_x, mid_y) = (max_x - 300, max_y - 200);
    let moves: [(&str, i64, i64); 14] = [
        ("far right", 700, 120),
        ("far down left", 400, 450),
        ("far left", 90, 500),
        ("to the bottom right corner", max_x, max_y),
        ("to the middle", mid_x, mid_y),
        // Source and destination overlap.
        ("6 right", mid_x + 6, mid_y),
        ("9 left", mid_x - 3, mid_y),
        ("5 down", mid_x - 3, mid_y + 5),
        ("7 up", mid_x - 3, mid_y - 2),
        ("4 right 3 down", mid_x + 1, mid_y + 1),
        ("3 left 4 up", mid_x - 2, mid_y - 3),
        ("40 right 30 down", mid_x + 38, mid_y + 27),
        ("partly off the screen", max_x + 150, max_y + 100),
        ("back on the screen", 300, 200),
    ];
    let mut copies_per_move = Vec::new();
    for (what, x, y) in moves {
        let what = format!("window moved {what} to {x},{y}");
        let before = viewer.rect_counts();
        window.move_to(x, y);
        step(&mut viewer, &what, &at(x, y));
        let during = counted_since(&before, &viewer.rect_counts());
        copies_per_move.push((what, during.get(&Encoding::COPY_RECT).copied().unwrap_or(0)));
    }
    window.unmap();
    step(&mut viewer, "window unmapped", &background);
    drop(window);

    // Nothing changed on the screen behind the script's back.
    wait_for_screen(display, &background, "at the end");

    let counts = viewer.rect_counts();
    let copies: Vec<u64> = copies_per_move.iter().map(|(_, n)| *n).collect();
    let took: Vec<u128> = timings.iter().map(|(_, t)| t.as_millis()).collect();
    eprintln!(
        "incremental {encoding} on :{display}: {:.1?} in all; rectangles: {}; \
         CopyRects per move: {copies:?}; caught up in (ms): {took:?}",
        started.elapsed(),
        describe(&counts)
    );
    Report {
        counts,
        copies_per_move,
    }
}

/// Runs the script against a new Xvnc with `encoding` preferred: the encoding must have
/// been used, and every window move must have come (at least partly) as CopyRect.
fn incremental_updates(encoding: Encoding) {
    let server = Xvnc::start(XvncOptions::default()).unwrap();
    let report = run_script(&server, server.dir(), encoding);
    let counts = describe(&report.counts);
    assert!(
        report.counts.get(&encoding).copied().unwrap_or(0) > 0,
        "no {encoding} rectangle arrived: {counts}"
    );
    for (what, copies) in &report.copies_per_move {
        assert!(
            *copies > 0,
            "{what}: no CopyRect arrived; rectangles in all: {counts}"
        );
    }
}

/// x11vnc polls the X screen and sends what changed; it makes CopyRects only of moves it
/// sees made with the pointer (`-wireframe`, `-scrollcopyrect`), so none come here. The
/// same script still checks incremental updates from another server's encoders.
#[test]
fn x11vnc_zrle() {
    let server = X11vnc::start(WIDTH, HEIGHT).unwrap();
    let report = run_script(&server, server.dir(), Encoding::ZRLE);
    assert!(
        report.counts.get(&Encoding::ZRLE).copied().unwrap_or(0) > 0,
        "no ZRLE rectangle arrived: {}",
        describe(&report.counts)
    );
}

#[test]
fn zrle() {
    incremental_updates(Encoding::ZRLE);
}

#[test]
fn hextile() {
    incremental_updates(Encoding::HEXTILE);
}

#[test]
fn tight_lossless() {
    incremental_updates(Encoding::TIGHT);
}

#[test]
fn raw() {
    incremental_updates(Encoding::RAW);
}

#[test]
fn rre() {
    incremental_updates(Encoding::RRE);
}
