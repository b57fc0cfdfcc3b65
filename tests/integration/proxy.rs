//! `kvmux serve` against real peers: Xvnc upstreams and `kvmux testsrc` behind the
//! proxy, vncdotool and the harness's own watcher in front of it. What a client sees
//! is compared with the X servers' own screens and the test pictures; where input
//! lands is read from testsrc's input log and from the X server (`xinput`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kvmux_tests::watcher::Watcher;
use kvmux_tests::{
    free_port, kvmux_bin, run, Image, PeerProcess, TempDir, VncServer, Xvnc, XvncOptions,
};

use crate::testsrc::{vncdo, Testsrc};
use crate::{flat_picture, picture, HEIGHT, WIDTH};

/// A running `kvmux serve`, stopped when dropped.
pub struct Proxy {
    pub process: PeerProcess,
    pub port: u16,
    /// The WebSocket listener's port, if it has one.
    pub websocket: Option<u16>,
    _dir: TempDir,
}

impl Proxy {
    /// Starts the proxy with `body` as its config, after a `[listen]` table for a free
    /// loopback port.
    pub fn start(body: &str) -> Proxy {
        Proxy::launch(body, false)
    }

    /// Like [`Proxy::start`], with a WebSocket listener (`listen.websocket`) on a second
    /// free loopback port too.
    pub fn start_with_websocket(body: &str) -> Proxy {
        Proxy::launch(body, true)
    }

    fn launch(body: &str, websocket: bool) -> Proxy {
        let dir = TempDir::new("proxy").unwrap();
        let port = free_port().unwrap();
        let websocket = websocket.then(|| free_port().unwrap());
        let websocket_line = websocket
            .map(|ws| format!("websocket = \"127.0.0.1:{ws}\"\n"))
            .unwrap_or_default();
        let config = dir.join("kvmux.toml");
        std::fs::write(
            &config,
            format!("[listen]\nrfb = \"127.0.0.1:{port}\"\n{websocket_line}\n{body}"),
        )
        .unwrap();
        let mut command = Command::new(kvmux_bin());
        command
            .args(["serve", "--config"])
            .arg(&config)
            // KVMUX_TEST_LOG: more detail from the proxy when debugging a test.
            .env(
                "KVMUX_LOG",
                std::env::var("KVMUX_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let process = PeerProcess::spawn(&command, &dir.join("proxy.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for listening in std::iter::once(port).chain(websocket) {
            while TcpStream::connect(("127.0.0.1", listening)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the proxy did not listen on {listening}: {}",
                    process.log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Proxy {
            process,
            port,
            websocket,
            _dir: dir,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1::{}", self.port)
    }
}

pub fn source(name: &str, address: &str) -> String {
    format!("[[source]]\nname = \"{name}\"\naddress = \"{address}\"\n\n")
}

fn xvnc_showing(png: &Path) -> (Xvnc, Image) {
    let xvnc = Xvnc::start(XvncOptions::default()).unwrap();
    let truth = xvnc.paint(png).unwrap();
    (xvnc, truth)
}

/// A third picture, distinct from the other two: the test picture's colours inverted.
pub fn inverted_picture(dir: &TempDir) -> (PathBuf, Image) {
    let image = Image::load_png(picture())
        .unwrap()
        .map(|p| !p & 0x00ff_ffff);
    let path = dir.join("inverted.png");
    image.save_png(&path).unwrap();
    (path, image)
}

/// The keys the X server's VNC keyboard holds down now (X keycodes).
fn keys_down(display: u32) -> Vec<String> {
    let out = run(
        Command::new("xinput")
            .args(["query-state", "TigerVNC keyboard"])
            .env("DISPLAY", format!(":{display}")),
        Duration::from_secs(10),
    )
    .unwrap()
    .check("xinput query-state")
    .unwrap();
    out.stdout_text()
        .lines()
        .filter(|l| l.contains("=down"))
        .map(|l| l.trim().to_owned())
        .collect()
}

fn assert_same(what: &str, got: &Path, truth: &Image) {
    let image = Image::load_png(got).unwrap();
    if let Some(d) = image.diff(truth) {
        panic!("{what}: {d}");
    }
}

#[test]
fn vncdotool_switches_sources_with_hotkeys_and_input_follows() {
    let dir = TempDir::new("switch").unwrap();
    let (alpha, alpha_truth) = xvnc_showing(picture());
    let (beta, beta_truth) = xvnc_showing(flat_picture());
    let (inverted, gamma_truth) = inverted_picture(&dir);
    let gamma = Testsrc::start(&["--pattern", &format!("image:{}", inverted.display())]);
    let proxy = Proxy::start(&format!(
        "{}{}{}[hotkeys]\ndefaults = true\n[[hotkeys.bind]]\nkeys = \"ctrl+alt+right\"\naction = \"next\"\n",
        source("alpha", &alpha.address()),
        source("beta", &beta.address()),
        source("gamma", &gamma.address()),
    ));
    // Wait until the proxy shows alpha's picture (its upstreams are connected).
    let watcher = Watcher::connect(proxy.port).unwrap();
    watcher
        .wait_for("alpha's picture", Duration::from_secs(20), |s| {
            s.diff(&alpha_truth).is_none()
        })
        .unwrap();
    drop(watcher);

    // One vncdotool session: vncdotool takes its first rectangle for the whole
    // screen, so each capture is taken twice and the second is compared.
    let shot = |n: u32| dir.join(format!("shot{n}.png"));
    let mut args: Vec<String> = vec!["-s".into(), proxy.address()];
    let mut push = |words: &[&str]| args.extend(words.iter().map(|w| w.to_string()));
    push(&["capture", &shot(0).display().to_string()]);
    push(&["capture", &shot(1).display().to_string()]);
    push(&["key", "ctrl", "key", "ctrl", "key", "2", "pause", "1"]);
    push(&["capture", &shot(2).display().to_string()]);
    push(&["capture", &shot(3).display().to_string()]);
    push(&["key", "ctrl-alt-right", "pause", "1"]);
    push(&["capture", &shot(4).display().to_string()]);
    push(&["capture", &shot(5).display().to_string()]);
    push(&["type", "hi"]);
    run(Command::new(vncdo()).args(&args), Duration::from_secs(90))
        .unwrap()
        .check("vncdo through the proxy")
        .unwrap();
    assert_same("source 1 (alpha) through the proxy", &shot(1), &alpha_truth);
    assert_same("after ctrl ctrl 2 (beta)", &shot(3), &beta_truth);
    assert_same("after ctrl+alt+right (gamma)", &shot(5), &gamma_truth);

    // "hi" reached gamma, and nothing else did: the chord's ctrl and alt went to beta
    // and were released there on the switch, their late releases dropped.
    let key =
        |down: bool, keysym: u32| format!(r#"{{"type":"key","down":{down},"keysym":{keysym}}}"#);
    let expected = vec![
        key(true, 104),
        key(false, 104),
        key(true, 105),
        key(false, 105),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    while gamma.events().len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(gamma.events(), expected, "gamma's input log");
    // No key is left down on either X server (the proxy is still connected to both,
    // so a key it left pressed would still be down).
    assert_eq!(keys_down(alpha.display()), Vec::<String>::new(), "alpha");
    assert_eq!(keys_down(beta.display()), Vec::<String>::new(), "beta");
    assert!(
        proxy.process.log_text().contains("Switched"),
        "{}",
        proxy.process.log_text()
    );
}

#[test]
fn a_source_that_goes_down_shows_no_signal_and_comes_back() {
    let dir = TempDir::new("nosignal").unwrap();
    let (inverted, truth) = inverted_picture(&dir);
    let pattern = format!("image:{}", inverted.display());
    let mut src = Testsrc::start(&["--pattern", &pattern]);
    let port = src.port;
    let proxy = Proxy::start(&source("flaky", &src.address()));
    let watcher = Watcher::connect(proxy.port).unwrap();
    watcher
        .wait_for("the source's picture", Duration::from_secs(20), |s| {
            s.diff(&truth).is_none()
        })
        .unwrap();
    // Kill the source: the no-signal frame (not the picture, dark corners) within a
    // second.
    src.process.stop();
    let no_signal = |s: &Image| {
        s.width == WIDTH && s.height == HEIGHT && s.pixel(0, 0) != truth.pixel(0, 0) && {
            let dark = s.pixels.iter().filter(|&&p| p == 0x0010_1820).count();
            dark > s.pixels.len() / 2
        }
    };
    let took = watcher
        .wait_for("the no-signal frame", Duration::from_secs(1), no_signal)
        .unwrap();
    eprintln!("no-signal frame after {took:?}");
    // The same client gets the picture back when the source returns.
    let _src = Testsrc::start_on(port, &["--pattern", &pattern]);
    watcher
        .wait_for(
            "the picture after the source's return",
            Duration::from_secs(20),
            |s| s.diff(&truth).is_none(),
        )
        .unwrap();
    assert!(watcher.error().is_none());
}

#[test]
fn check_accepts_the_example_and_refuses_an_open_listener() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kvmux.toml");
    let out = run(
        Command::new(kvmux_bin())
            .args(["serve", "--check", "--config"])
            .arg(&example),
        Duration::from_secs(20),
    )
    .unwrap();
    // The example names files that exist only on a real installation; --check must
    // at least get past parsing and say which file is missing, or succeed.
    let text = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(
        out.status.success() || text.contains("cannot read") || text.contains("cannot use"),
        "kvmux serve --check examples/kvmux.toml: {text}"
    );

    let dir = TempDir::new("open").unwrap();
    let config = dir.join("open.toml");
    std::fs::write(
        &config,
        "[listen]\nrfb = \"0.0.0.0:5999\"\n\n[[source]]\nname = \"t\"\ntestsrc = {}\n",
    )
    .unwrap();
    let out = run(
        Command::new(kvmux_bin())
            .args(["serve", "--config"])
            .arg(&config),
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(
        !out.status.success(),
        "an open listener without auth started"
    );
    let err = out.stderr_text();
    assert!(
        err.contains("allow_unauthenticated_remote") && err.contains("0.0.0.0"),
        "the refusal does not say why or how to allow it: {err}"
    );
}

#[test]
fn a_wrong_password_is_refused_with_a_reason() {
    let dir = TempDir::new("proxyauth").unwrap();
    let good = dir.join("good");
    let bad = dir.join("bad");
    std::fs::write(&good, "sesame\n").unwrap();
    std::fs::write(&bad, "wrong\n").unwrap();
    let src = Testsrc::start(&["--pattern", "bars"]);
    let proxy = Proxy::start(&format!(
        "[auth]\npassword_file = \"{}\"\n\n{}",
        good.display(),
        source("one", &src.address())
    ));
    let snap = crate::snapshot(
        &proxy.address(),
        &["--password-file", bad.to_str().unwrap()],
    );
    crate::assert_failed_saying(&snap, &["authentication failed"]);
    let ok = crate::snapshot(
        &proxy.address(),
        &["--password-file", good.to_str().unwrap()],
    );
    assert!(
        ok.image.is_some(),
        "the right password was refused: {}",
        ok.output.stderr_text()
    );
}

/// The title of the X window whose name contains `part`, if one exists.
fn window_named(display: u32, part: &str) -> Option<(String, String)> {
    let out = run(
        Command::new("xdotool")
            .args(["search", "--name", part])
            .env("DISPLAY", format!(":{display}")),
        Duration::from_secs(10),
    )
    .ok()?;
    let id = out.stdout_text().lines().next()?.trim().to_owned();
    let name = run(
        Command::new("xdotool")
            .args(["getwindowname", &id])
            .env("DISPLAY", format!(":{display}")),
        Duration::from_secs(10),
    )
    .ok()?
    .stdout_text()
    .trim()
    .to_owned();
    Some((id, name))
}

fn window_size(display: u32, id: &str) -> Option<(u32, u32)> {
    let out = run(
        Command::new("xdotool")
            .args(["getwindowgeometry", id])
            .env("DISPLAY", format!(":{display}")),
        Duration::from_secs(10),
    )
    .ok()?;
    let text = out.stdout_text();
    let geometry = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Geometry: "))?;
    let (w, h) = geometry.split_once('x')?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

fn xdotool(display: u32, args: &[&str]) {
    run(
        Command::new("xdotool")
            .args(args)
            .env("DISPLAY", format!(":{display}")),
        Duration::from_secs(10),
    )
    .unwrap()
    .check("xdotool")
    .unwrap();
}

/// Waits until `check` passes on the screen of `display`, or panics with `what`.
fn wait_screen(display: u32, what: &str, mut check: impl FnMut(&Image) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(screen) = crate::viewers::import_root(display) {
            if check(&screen) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not on the screen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn tigervnc_viewer_follows_switches_titles_and_sizes() {
    let dir = TempDir::new("viewerswitch").unwrap();
    let (inverted, inverted_truth) = inverted_picture(&dir);
    let small = dir.join("small.png");
    kvmux_tests::test_picture(1024, 768, &small).unwrap();
    let small_truth = Image::load_png(&small).unwrap();
    let truth = Image::load_png(picture()).unwrap();
    let a = Testsrc::start(&["--pattern", &format!("image:{}", picture().display())]);
    let b = Testsrc::start(&["--pattern", &format!("image:{}", inverted.display())]);
    let c = Testsrc::start(&["--pattern", &format!("image:{}", small.display())]);
    let proxy = Proxy::start(&format!(
        "{}{}{}",
        source("alpha", &a.address()),
        source("beta", &b.address()),
        source("gamma", &c.address()),
    ));
    let xvfb = crate::viewers::Xvfb::start(1600, 1000);
    let viewer = xvfb.spawn(
        "vncviewer",
        &[
            "-SecurityTypes=None",
            "-AutoSelect=0",
            "-PreferredEncoding=ZRLE",
            "-FullColor",
            &proxy.address(),
        ],
    );
    let d = xvfb.display;
    wait_screen(d, "alpha's picture in vncviewer", |s| {
        s.find(&truth).is_some()
    });
    let (id, title) = window_named(d, "alpha").unwrap_or_else(|| {
        panic!(
            "no window titled after alpha; viewer log:\n{}",
            viewer.log_text()
        )
    });
    assert!(title.contains("alpha"), "{title}");
    assert_eq!(window_size(d, &id), Some((WIDTH, HEIGHT)));
    // No window manager gives the viewer the focus: give it by hand.
    xdotool(d, &["windowfocus", "--sync", &id]);
    xdotool(d, &["key", "--delay", "80", "Control_L", "Control_L", "2"]);
    wait_screen(d, "beta's picture after ctrl ctrl 2", |s| {
        s.find(&inverted_truth).is_some()
    });
    let (_, title) = window_named(d, "beta").expect("the title follows to beta");
    assert!(title.contains("beta"), "{title}");
    xdotool(d, &["key", "--delay", "80", "Control_L", "Control_L", "3"]);
    wait_screen(d, "gamma's 1024x768 picture after ctrl ctrl 3", |s| {
        s.find(&small_truth).is_some()
    });
    let (id, _) = window_named(d, "gamma").expect("the title follows to gamma");
    assert_eq!(
        window_size(d, &id),
        Some((1024, 768)),
        "the window follows the source's size"
    );
    xdotool(
        d,
        &["key", "--delay", "80", "Control_L", "Control_L", "Left"],
    );
    wait_screen(d, "beta again after ctrl ctrl left", |s| {
        s.find(&inverted_truth).is_some()
    });
}

/// A client on `rfb`'s own session (decoding every encoding), announcing kvmux's
/// zlib-stream-reset, that follows the screen until `done` accepts it.
fn follow_until(
    port: u16,
    encodings: &[rfb::Encoding],
    timeout: Duration,
    mut done: impl FnMut(&Image) -> bool,
) -> Result<Image, String> {
    use rfb::client::{ClientEvent, ClientSession};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let work = async {
            let conn = rfb::net::connect(&format!("127.0.0.1::{port}"), &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = conn.stream;
            let mut session = ClientSession::new(&conn.init);
            let mut out = Vec::new();
            session
                .set_pixel_format(rfb::PixelFormat::RGB888, &mut out)
                .map_err(|e| e.to_string())?;
            session.set_encodings(encodings, &mut out);
            session.request_update(false, None, &mut out);
            session.feed(&conn.leftover).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                while let Some(event) = session.poll_event() {
                    if event == ClientEvent::UpdateComplete {
                        let fb = session.framebuffer();
                        let image = Image {
                            width: u32::from(fb.width()),
                            height: u32::from(fb.height()),
                            pixels: fb.pixels().iter().map(|p| p & 0x00ff_ffff).collect(),
                        };
                        if done(&image) {
                            return Ok(image);
                        }
                        session.request_update(true, None, &mut out);
                    }
                }
                stream.write_all(&out).await.map_err(|e| e.to_string())?;
                out.clear();
                let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("the proxy closed the connection".to_owned());
                }
                session.feed(&buf[..n]).map_err(|e| e.to_string())?;
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
    })
}

#[test]
fn pass_through_forwards_the_sources_updates_and_hands_back() {
    use rfb::Encoding;
    let (xvnc, truth) = xvnc_showing(picture());
    let proxy = Proxy::start(&source("xvnc", &xvnc.address()));
    let first = Watcher::connect(proxy.port).unwrap();
    first
        .wait_for("the picture", Duration::from_secs(20), |s| {
            s.diff(&truth).is_none()
        })
        .unwrap();
    drop(first);
    // Wait for the proxy to see that the watcher left.
    std::thread::sleep(Duration::from_millis(300));
    for encoding in [Encoding::ZRLE, Encoding::TIGHT, Encoding::HEXTILE] {
        let encodings = [encoding, Encoding::KVMUX_ZLIB_RESET, Encoding::DESKTOP_SIZE];
        let log_before = proxy.process.log_text().matches("Pass-through on").count();
        // The client alone on the source: after its first (transcoded) frame the
        // proxy forwards Xvnc's own updates. Repainting the X screen must reach the
        // client exactly through them.
        let mut painted = false;
        let flat = Image::load_png(flat_picture()).unwrap();
        let result = follow_until(proxy.port, &encodings, Duration::from_secs(40), |screen| {
            let on = proxy.process.log_text().matches("Pass-through on").count() > log_before;
            if !painted && on && screen.diff(&truth).is_none() {
                painted = true;
                xvnc.paint(flat_picture()).unwrap();
            }
            painted && screen.diff(&flat).is_none()
        });
        if let Err(e) = result {
            panic!(
                "{encoding:?} through pass-through: {e}\nproxy log:\n{}",
                proxy.process.log_text()
            );
        }
        xvnc.paint(picture()).unwrap();
    }
    // A second watcher ends pass-through: the first client goes back to transcoded
    // updates (after a zlib-stream-reset) and both follow the screen.
    let port = proxy.port;
    let flat = Image::load_png(flat_picture()).unwrap();
    let flat_for_a = flat.clone();
    let ons = proxy.process.log_text().matches("Pass-through on").count();
    let a = std::thread::spawn(move || {
        follow_until(
            port,
            &[Encoding::ZRLE, Encoding::KVMUX_ZLIB_RESET],
            Duration::from_secs(60),
            |s| s.diff(&flat_for_a).is_none(),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.process.log_text().matches("Pass-through on").count() == ons {
        assert!(Instant::now() < deadline, "{}", proxy.process.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let offs = proxy.process.log_text().matches("Pass-through off").count();
    let b = Watcher::connect(proxy.port).unwrap();
    while proxy.process.log_text().matches("Pass-through off").count() == offs {
        assert!(Instant::now() < deadline, "{}", proxy.process.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    xvnc.paint(flat_picture()).unwrap();
    b.wait_for(
        "the new picture, second client",
        Duration::from_secs(20),
        |s| s.diff(&flat).is_none(),
    )
    .unwrap();
    if let Err(e) = a.join().unwrap() {
        panic!(
            "the first client after pass-through ended: {e}\n{}",
            proxy.process.log_text()
        );
    }
}

#[test]
fn command_sources_are_started_and_restarted_with_growing_delays() {
    let dir = TempDir::new("commands").unwrap();
    let (inverted, truth) = inverted_picture(&dir);
    let port = free_port().unwrap();
    let kvmux = kvmux_bin();
    let crashing = dir.join("crash.sh");
    std::fs::write(
        &crashing,
        "#!/bin/sh\necho 'crashing on purpose' >&2\nexit 3\n",
    )
    .unwrap();
    let proxy = Proxy::start(&format!(
        "[[source]]\nname = \"started\"\ncommand = [\"{}\", \"testsrc\", \"--listen\", \"127.0.0.1:{port}\", \"--pattern\", \"image:{}\"]\naddress = \"127.0.0.1::{port}\"\n\n\
         [[source]]\nname = \"crashy\"\ncommand = [\"/bin/sh\", \"{}\"]\naddress = \"127.0.0.1::1\"\n",
        kvmux.display(),
        inverted.display(),
        crashing.display(),
    ));
    // The started machine's picture arrives through the proxy.
    let watcher = Watcher::connect(proxy.port).unwrap();
    watcher
        .wait_for(
            "the command source's picture",
            Duration::from_secs(20),
            |s| s.diff(&truth).is_none(),
        )
        .unwrap();
    // The crashing one is restarted after 0.5 s, 1 s, 2 s...: at least three restarts
    // logged in 4 s, each delay longer than the one before, its stderr under its name.
    std::thread::sleep(Duration::from_secs(4));
    let log = proxy.process.log_text();
    let delays: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("restarting") && l.contains("crashy"))
        .filter_map(|l| l.split("restart_in=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(delays.len() >= 3, "restarts: {delays:?}\n{log}");
    assert_eq!(&delays[..3], ["500ms", "1s", "2s"], "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("crashy") && l.contains("crashing on purpose")),
        "the command's stderr is not logged under its name:\n{log}"
    );
}

#[test]
fn a_hostile_client_loses_only_its_own_connection() {
    use std::io::Write;
    let proxy = Proxy::start(
        "[[source]]\nname = \"clock\"\ntestsrc = { pattern = \"clock\", size = \"320x240\" }\n",
    );
    let watcher = Watcher::connect(proxy.port).unwrap();
    watcher
        .wait_for("a first frame", Duration::from_secs(20), |s| s.width == 320)
        .unwrap();
    let hostile: [&[u8]; 5] = [
        // An unknown message type.
        &[99, 1, 2, 3],
        // SetEncodings with 65535 entries.
        &[2, 0, 0xff, 0xff],
        // ClientCutText of 2^31-1 bytes, and a length of 2^32-1, which reads as an
        // ExtendedClipboard message of one byte (too short for its flags).
        &[6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff],
        &[6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
        // kvmux select with an unknown action.
        &[75, 9, 0, 0],
    ];
    for bytes in hostile {
        let mut s = crate::testsrc::handshake(proxy.port);
        s.write_all(bytes).unwrap();
        assert!(
            crate::testsrc::closed_by_server(s),
            "the proxy kept a connection that sent {bytes:?}"
        );
    }
    // The watcher is still served: the clock keeps changing its screen.
    let before = watcher.screen().unwrap();
    watcher
        .wait_for("a later frame", Duration::from_secs(5), |s| s != &before)
        .unwrap();
    assert!(watcher.error().is_none());
    let log = proxy.process.log_text();
    // Each hostile client was dropped with a reason (the harness's own port probes,
    // which close before the handshake, aside).
    let dropped = log
        .lines()
        .filter(|l| l.contains("Client dropped") && !l.contains("during ProtocolVersion"))
        .count();
    assert_eq!(dropped, 5, "{log}");
}

#[test]
fn a_reverse_source_dials_in_and_is_shown() {
    let port = free_port().unwrap();
    let proxy = Proxy::start(&format!(
        "[[source]]\nname = \"dialler\"\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let xvfb = crate::viewers::Xvfb::start(WIDTH, HEIGHT);
    // x11vnc dials the proxy (a reverse connection) instead of listening itself.
    let _x11vnc = xvfb.spawn(
        "x11vnc",
        &[
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-nopw",
            "-rfbport",
            "0",
            "-forever",
            "-shared",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.process.log_text().contains("Source dialled in") {
        assert!(Instant::now() < deadline, "{}", proxy.process.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Painted once x11vnc watches the screen: it sends what X reports as damaged.
    let truth = kvmux_tests::paint(xvfb.display, picture()).unwrap();
    let watcher = Watcher::connect(proxy.port).unwrap();
    watcher
        .wait_for(
            "the dialling machine's screen",
            Duration::from_secs(30),
            |s| s.diff(&truth).is_none(),
        )
        .unwrap_or_else(|e| {
            let last = watcher.screen().map(|s| format!("{:?}", s.diff(&truth)));
            panic!("{e}; last screen: {last:?}\n{}", proxy.process.log_text())
        });
}

#[test]
fn x509plain_users_are_checked_over_tls() {
    let dir = TempDir::new("proxyplain").unwrap();
    let cert = kvmux_tests::self_signed_certificate(dir.path(), "proxy").unwrap();
    let users = dir.join("users");
    std::fs::write(&users, "# user:password\nada:lovelace\n").unwrap();
    let right = dir.join("right");
    let wrong = dir.join("wrong");
    std::fs::write(&right, "lovelace\n").unwrap();
    std::fs::write(&wrong, "babbage\n").unwrap();
    let src = Testsrc::start(&["--pattern", "bars"]);
    let body = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n\n[auth]\nusers_file = \"{}\"\n\n{}",
        cert.cert.display(),
        cert.key.display(),
        users.display(),
        source("one", &src.address())
    );
    let proxy = Proxy::start(&body);
    let ca = cert.cert.to_str().unwrap();
    let ok = crate::snapshot(
        &proxy.address(),
        &[
            "--username",
            "ada",
            "--password-file",
            right.to_str().unwrap(),
            "--tls-ca",
            ca,
        ],
    );
    assert!(
        ok.image.is_some(),
        "the right user was refused: {}\n{}",
        ok.output.stderr_text(),
        proxy.process.log_text()
    );
    let bad = crate::snapshot(
        &proxy.address(),
        &[
            "--username",
            "ada",
            "--password-file",
            wrong.to_str().unwrap(),
            "--tls-ca",
            ca,
        ],
    );
    crate::assert_failed_saying(&bad, &["authentication failed"]);
    let stranger = crate::snapshot(
        &proxy.address(),
        &[
            "--username",
            "eve",
            "--password-file",
            right.to_str().unwrap(),
            "--tls-ca",
            ca,
        ],
    );
    crate::assert_failed_saying(&stranger, &["authentication failed"]);
}

#[test]
fn many_decoding_clients_share_updates_without_corruption() {
    use rfb::Encoding;
    // A changing source; clients of each encoding decode every update through rfb's
    // client (which fails on any stream corruption) while sharing encodings.
    let proxy = Proxy::start(
        "[[source]]\nname = \"clock\"\ntestsrc = { pattern = \"clock\", size = \"800x600\" }\n",
    );
    let port = proxy.port;
    let mut threads = Vec::new();
    for encoding in [Encoding::TIGHT, Encoding::ZRLE, Encoding::HEXTILE] {
        for with_reset in [false, true] {
            for _ in 0..2 {
                threads.push(std::thread::spawn(move || {
                    let mut encodings = vec![encoding];
                    if with_reset {
                        encodings.push(Encoding::KVMUX_ZLIB_RESET);
                    }
                    let mut updates = 0;
                    follow_until(port, &encodings, Duration::from_secs(60), |_| {
                        updates += 1;
                        updates >= 60
                    })
                    .map_err(|e| format!("{encoding:?} (reset {with_reset}): {e}"))
                }));
            }
        }
    }
    for t in threads {
        if let Err(e) = t.join().unwrap() {
            panic!("{e}\n{}", proxy.process.log_text());
        }
    }
}
