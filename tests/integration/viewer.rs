//! kvmux's own viewer (`kvmux-viewer`) on Xvfb against `kvmux testsrc`.
//!
//! The truth is independent of the viewer: the PNG testsrc serves must appear pixel for
//! pixel in the X server's screen (`import -window root`), and what the viewer sends must
//! appear in testsrc's input log with the keysyms, XT scancodes (QEMU extended key
//! events, rfbproto §7.5.9.1) and coordinates that the xdotool actions imply. The
//! clipboard is tested against TigerVNC's Xvnc, each X display's CLIPBOARD set and read
//! with xclip.
//!
//! Tests here run one at a time (each starts an X server, a viewer and sources on a
//! machine that may have two cores).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use kvmux_tests::{free_port, kvmux_bin, run, viewer_bin, Image, PeerProcess, TempDir};

use crate::viewers::{import_root, Xvfb};
use crate::{flat_picture, picture};

/// How long the viewer may take to show something on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(60);

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `kvmux testsrc` showing a PNG, logging input.
struct Source {
    process: PeerProcess,
    port: u16,
    input_log: PathBuf,
    dir: TempDir,
}

impl Source {
    fn start(image: &Path, name: &str, password: Option<&str>) -> Source {
        let dir = TempDir::new("viewersrc").unwrap();
        let port = free_port().unwrap();
        let mut source = Source {
            process: Source::spawn(&dir, port, image, name, password),
            port,
            input_log: dir.join("input.jsonl"),
            dir,
        };
        source.wait_listening();
        source
    }

    fn spawn(
        dir: &TempDir,
        port: u16,
        image: &Path,
        name: &str,
        password: Option<&str>,
    ) -> PeerProcess {
        let mut command = Command::new(kvmux_bin());
        command
            .args(["testsrc", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--pattern")
            .arg(format!("image:{}", image.display()))
            .args(["--name", name])
            .arg("--input-log")
            .arg(dir.join("input.jsonl"));
        if let Some(password) = password {
            let file = dir.join("password");
            std::fs::write(&file, format!("{password}\n")).unwrap();
            command.arg("--password-file").arg(file);
        }
        // A restarted source logs into a new file.
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        PeerProcess::spawn(&command, &dir.join(format!("testsrc-{n}.log"))).unwrap()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline && self.process.is_running(),
                "testsrc did not listen: {}",
                self.process.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1::{}", self.port)
    }

    fn input(&self) -> String {
        std::fs::read_to_string(&self.input_log).unwrap_or_default()
    }
}

/// A running viewer on its own X server.
struct Viewer {
    xvfb: Xvfb,
    process: PeerProcess,
    /// The window manager, for the viewers that have one.
    _wm: Option<PeerProcess>,
    _dir: TempDir,
}

impl Viewer {
    fn start(args: &[&str]) -> Viewer {
        let dir = TempDir::new("viewer").unwrap();
        let home = dir.path().to_owned();
        Viewer::start_in(args, dir, &home)
    }

    /// A viewer under a window manager (openbox, with its default key bindings: Alt+Tab
    /// switches windows), which Xvfb alone does not have: fullscreen needs one.
    fn start_managed(args: &[&str]) -> Viewer {
        let dir = TempDir::new("viewer").unwrap();
        let home = dir.path().to_owned();
        let xvfb = Xvfb::start(1600, 1000);
        let mut wm = xvfb.spawn("openbox", &[]);
        // Ready once it names its check window on the root (EWMH).
        let start = Instant::now();
        loop {
            let output = run(
                Command::new("xprop")
                    .args(["-root", "_NET_SUPPORTING_WM_CHECK"])
                    .env("DISPLAY", format!(":{}", xvfb.display)),
                Duration::from_secs(20),
            )
            .unwrap();
            if output.stdout_text().contains("window id") {
                break;
            }
            let running = wm.is_running();
            assert!(
                running && start.elapsed() < TIMEOUT,
                "openbox did not start ({} after {:?}); xprop: {} {}\nopenbox log:\n{}",
                if running { "running" } else { "exited" },
                start.elapsed(),
                output.stdout_text(),
                output.stderr_text(),
                wm.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
        let mut viewer = Viewer::start_on(xvfb, args, dir, &home);
        viewer._wm = Some(wm);
        viewer
    }

    /// A viewer whose home (and so its saved machines) is `home`.
    fn start_in(args: &[&str], dir: TempDir, home: &Path) -> Viewer {
        Viewer::start_on(Xvfb::start(1600, 1000), args, dir, home)
    }

    fn start_on(xvfb: Xvfb, args: &[&str], dir: TempDir, home: &Path) -> Viewer {
        let mut command = Command::new(viewer_bin());
        command
            .args(args)
            .env("DISPLAY", format!(":{}", xvfb.display))
            .env("GDK_BACKEND", "x11")
            .env("GSK_RENDERER", "cairo")
            .env("NO_AT_BRIDGE", "1")
            .env("GTK_A11Y", "none")
            // Saved machines and settings stay inside the test.
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("HOME", home)
            .env("KVMUX_LOG", "info,kvmux_viewer::display=debug");
        let process = PeerProcess::spawn(&command, &dir.join("viewer.log")).unwrap();
        Viewer {
            xvfb,
            process,
            _wm: None,
            _dir: dir,
        }
    }

    fn xdotool(&self, args: &[&str]) -> String {
        let output = run(
            Command::new("xdotool")
                .args(args)
                .env("DISPLAY", format!(":{}", self.xvfb.display)),
            Duration::from_secs(20),
        )
        .unwrap();
        output.stdout_text()
    }

    /// Names of the viewer's top-level windows.
    fn window_names(&self) -> Vec<String> {
        let ids = self.xdotool(&["search", "--onlyvisible", "--class", "kvmux"]);
        let mut names = Vec::new();
        for id in ids.split_whitespace() {
            let name = self.xdotool(&["getwindowname", id]);
            names.push(name.trim().to_owned());
        }
        names
    }

    /// Waits until `judge` accepts the screen (returns `Some`), giving up after [`TIMEOUT`]
    /// with the last verdict and the logs.
    fn wait_for<T>(
        &mut self,
        what: &str,
        mut judge: impl FnMut(&Viewer, &Image) -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            let verdict = match import_root(self.xvfb.display) {
                Ok(screen) => judge(self, &screen),
                Err(e) => Err(format!("{e:#}")),
            };
            match verdict {
                Ok(value) => return value,
                Err(why) => {
                    if start.elapsed() > TIMEOUT || !self.process.is_running() {
                        let shot = self._dir.join("last-screen.png");
                        let _ = import_root(self.xvfb.display).and_then(|s| s.save_png(&shot));
                        let active = self.xdotool(&["getactivewindow"]);
                        let wm = match self._wm.as_mut() {
                            Some(wm) => format!(
                                "\nwindow manager {}, active window {}, log:\n{}",
                                if wm.is_running() { "running" } else { "gone" },
                                active.trim(),
                                wm.log_text()
                            ),
                            None => String::new(),
                        };
                        panic!(
                            "{what}: {why}\nwindows: {:?}\nscreen: {}{wm}\nviewer log:\n{}",
                            self.window_names(),
                            shot.display(),
                            self.process.log_text()
                        );
                    }
                }
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `picture` is on the screen pixel for pixel; returns where.
    fn wait_shown(&mut self, what: &str, picture: &Image) -> (u32, u32) {
        self.wait_for(what, |_, screen| {
            find_exact(screen, picture).ok_or_else(|| "the picture is not on the screen".to_owned())
        })
    }

    /// Clicks the first button at screen position (`x`, `y`).
    fn click(&self, x: i32, y: i32) {
        self.xdotool(&["mousemove", &x.to_string(), &y.to_string(), "click", "1"]);
    }

    /// The viewer's visible top-level windows.
    fn toplevels(&self) -> Vec<Toplevel> {
        let ids = self.xdotool(&["search", "--onlyvisible", "--class", "kvmux"]);
        let mut out = Vec::new();
        for id in ids.split_whitespace() {
            let shell = self.xdotool(&["getwindowgeometry", "--shell", id]);
            let field = |name: &str| -> Option<i32> {
                shell
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}=")))
                    .and_then(|v| v.trim().parse().ok())
            };
            if let (Some(x), Some(y), Some(width), Some(height)) =
                (field("X"), field("Y"), field("WIDTH"), field("HEIGHT"))
            {
                out.push(Toplevel {
                    x,
                    y,
                    width,
                    height,
                });
            }
        }
        out
    }

    /// Waits for a top-level window that `pick` accepts.
    fn wait_toplevel(&mut self, what: &str, pick: impl Fn(&Toplevel) -> bool) -> Toplevel {
        self.wait_for(what, |viewer, _| {
            let windows = viewer.toplevels();
            windows
                .iter()
                .find(|w| pick(w))
                .copied()
                .ok_or_else(|| format!("windows {windows:?}"))
        })
    }

    /// Waits until the viewer has `count` top-level windows (menus and dialogs are
    /// windows of their own).
    fn wait_toplevel_count(&mut self, what: &str, count: impl Fn(usize) -> bool) {
        self.wait_for(what, |viewer, _| {
            let windows = viewer.toplevels();
            count(windows.len())
                .then_some(())
                .ok_or_else(|| format!("windows {windows:?}"))
        })
    }

    /// Waits until a window title contains `part` (titles follow DesktopName).
    fn wait_title(&mut self, what: &str, part: &str) {
        self.wait_for(what, |viewer, _| {
            let names = viewer.window_names();
            names
                .iter()
                .any(|n| n.contains(part))
                .then_some(())
                .ok_or_else(|| format!("window names {names:?}"))
        })
    }
}

/// A top-level window's place and size on the screen.
#[derive(Debug, Clone, Copy)]
struct Toplevel {
    x: i32,
    y: i32,
    width: i32,
    height: i32,
}

/// Where `picture` appears in `screen` exactly, if it does.
fn find_exact(screen: &Image, picture: &Image) -> Option<(u32, u32)> {
    let right = screen.width.checked_sub(picture.width)?;
    let bottom = screen.height.checked_sub(picture.height)?;
    let first_row = &picture.pixels[..picture.width as usize];
    for y in 0..=bottom {
        for x in 0..=right {
            let start = (y * screen.width + x) as usize;
            if screen.pixels[start..start + first_row.len()] != *first_row {
                continue;
            }
            let all_rows = (1..picture.height).all(|row| {
                let s = ((y + row) * screen.width + x) as usize;
                let p = (row * picture.width) as usize;
                screen.pixels[s..s + picture.width as usize]
                    == picture.pixels[p..p + picture.width as usize]
            });
            if all_rows {
                return Some((x, y));
            }
        }
    }
    None
}

fn load(path: &Path) -> Image {
    Image::load_png(path).unwrap()
}

#[test]
fn viewer_shows_the_picture_pixel_for_pixel() {
    let _serial = one_at_a_time();
    let source = Source::start(picture(), "viewer-one", None);
    let mut viewer = Viewer::start(&["--scaling", "none", &source.address()]);
    let at = viewer.wait_shown("1:1 picture", &load(picture()));
    let names = viewer.window_names();
    assert!(
        names.iter().any(|n| n.contains("viewer-one")),
        "the window title does not follow DesktopName: {names:?}"
    );
    eprintln!("picture shown at {at:?}");
}

#[test]
fn viewer_two_tabs_show_their_own_sources() {
    let _serial = one_at_a_time();
    let a = Source::start(picture(), "viewer-a", None);
    let b = Source::start(flat_picture(), "viewer-b", None);
    let mut viewer = Viewer::start(&["--scaling", "none", &a.address(), &b.address()]);
    // The last tab opened is selected.
    let (x, y) = viewer.wait_shown("second tab", &load(flat_picture()));
    // The tab bar is right above the display: click the first (left) tab.
    let tab_y = (y - 12).to_string();
    let tab_x = (x + 60).to_string();
    viewer.xdotool(&["mousemove", &tab_x, &tab_y, "click", "1"]);
    viewer.wait_shown("first tab", &load(picture()));
}

/// The whole-number field `key` of an input-log line.
fn field(line: &str, key: &str) -> Option<u32> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Key events in the input log: (down, keysym, keycode).
fn keys(log: &str) -> Vec<(bool, u32, Option<u32>)> {
    log.lines()
        .filter(|l| l.contains(r#""type":"key""#))
        .map(|l| {
            (
                l.contains(r#""down":true"#),
                field(l, "keysym").unwrap(),
                field(l, "keycode"),
            )
        })
        .collect()
}

/// Pointer events in the input log: (x, y, buttons).
fn pointer_events(log: &str) -> Vec<(u32, u32, u32)> {
    log.lines()
        .filter(|l| l.contains(r#""type":"pointer""#))
        .filter_map(|l| Some((field(l, "x")?, field(l, "y")?, field(l, "buttons")?)))
        .collect()
}

#[test]
fn viewer_sends_typing_and_clicks_to_the_source() {
    let _serial = one_at_a_time();
    let source = Source::start(picture(), "viewer-input", None);
    let mut viewer = Viewer::start(&["--scaling", "none", &source.address()]);
    let (x, y) = viewer.wait_shown("picture", &load(picture()));
    // A click 100 right and 50 down of the desktop's corner is desktop pixel (100, 50).
    let (cx, cy) = ((x + 100).to_string(), (y + 50).to_string());
    viewer.xdotool(&["mousemove", &cx, &cy, "click", "1"]);
    viewer.xdotool(&["type", "--delay", "50", "Hi"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = source.input();
        let downs: Vec<u32> = keys(&log).iter().filter(|k| k.0).map(|k| k.1).collect();
        let clicked = pointer_events(&log)
            .iter()
            .any(|&(px, py, b)| (px, py, b) == (100, 50, 1));
        if clicked && downs.contains(&0x69) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "input did not arrive: pointer {:?}, keys {:?}\nviewer log:\n{}",
            pointer_events(&log),
            keys(&log),
            viewer.process.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let log = source.input();
    let pointer = pointer_events(&log);
    let press = pointer.iter().position(|&p| p == (100, 50, 1)).unwrap();
    assert!(
        pointer[press..].contains(&(100, 50, 0)),
        "no button release at (100, 50): {pointer:?}"
    );
    // Shift + h, then i: the keysyms of what was typed, and, as testsrc announces QEMU
    // extended key events, the keys' XT scancodes (Shift_L 0x2A, H 0x23, I 0x17).
    let keys = keys(&log);
    let downs: Vec<(u32, Option<u32>)> = keys.iter().filter(|k| k.0).map(|k| (k.1, k.2)).collect();
    let keysyms: Vec<u32> = downs.iter().map(|d| d.0).collect();
    assert_eq!(
        keysyms,
        vec![0xffe1, 0x48, 0x69],
        "key presses; all events {keys:?}"
    );
    let scancodes: Vec<Option<u32>> = downs.iter().map(|d| d.1).collect();
    assert_eq!(
        scancodes,
        vec![Some(0x2a), Some(0x23), Some(0x17)],
        "scancodes; all events {keys:?}"
    );
    for (keysym, _) in &downs {
        assert!(
            keys.iter().any(|k| !k.0 && k.1 == *keysym),
            "keysym {keysym:#x} was not released: {keys:?}"
        );
    }
}

/// Waits until the source's input log satisfies `done`.
fn wait_input(source: &Source, viewer: &Viewer, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(&source.input()) {
        assert!(
            Instant::now() < deadline,
            "{what}: keys {:?}\nviewer log:\n{}",
            keys(&source.input()),
            viewer.process.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Presses of `keysym` in the input log.
fn presses(log: &str, keysym: u32) -> usize {
    keys(log).iter().filter(|k| k.0 && k.1 == keysym).count()
}

#[test]
fn viewer_grabs_the_keyboard_in_fullscreen() {
    const TAB: u32 = 0xff09;
    let _serial = one_at_a_time();
    let source = Source::start(picture(), "viewer-grab", None);
    let mut viewer =
        Viewer::start_managed(&["--fullscreen", "--scaling", "none", &source.address()]);
    // Fullscreen, without header bar or tabs: the 1280x800 desktop sits in the middle
    // of the 1600x1000 screen.
    let at = viewer.wait_shown("picture in fullscreen", &load(picture()));
    assert_eq!(at, (160, 100), "where the desktop is shown");
    // The title names the release keys once the viewer holds the keyboard, which needs
    // the focus. Openbox gives a new window the focus, but if that happens while it
    // holds the keyboard itself, X says so (NotifyWhileGrabbed) and GTK does not count
    // it; on a busy machine it does now and then. The focus goes to the root window and
    // back with a click, as a person would click elsewhere and back.
    let root = viewer.xdotool(&["search", "--maxdepth", "0", "--name", ""]);
    viewer.xdotool(&["windowfocus", "--sync", root.trim()]);
    viewer.click(160 + 10, 100 + 10);
    viewer.wait_title("the grab in the title", "(Ctrl+Alt releases the keyboard)");
    // Alt+Tab is the window manager's (a passive grab on the root window), but the
    // viewer holds the keyboard: it goes to the source.
    viewer.xdotool(&["key", "alt+Tab"]);
    wait_input(&source, &viewer, "Alt+Tab while grabbed", |log| {
        presses(log, TAB) == 1 && presses(log, 0xffe9) == 1
    });
    // Ctrl+Alt lets go of the keyboard.
    viewer.xdotool(&["key", "ctrl+alt"]);
    viewer.wait_for("the grab released", |viewer, _| {
        let names = viewer.window_names();
        (!names.iter().any(|n| n.contains("releases the keyboard")) && !names.is_empty())
            .then_some(())
            .ok_or_else(|| format!("window names {names:?}"))
    });
    // Now the window manager takes Alt+Tab; the x typed after it arrives alone.
    viewer.xdotool(&["key", "alt+Tab"]);
    viewer.xdotool(&["type", "x"]);
    wait_input(&source, &viewer, "x after Alt+Tab", |log| {
        presses(log, 0x78) == 1
    });
    assert_eq!(
        presses(&source.input(), TAB),
        1,
        "Tab reached the source without the grab: {:?}",
        keys(&source.input())
    );
    // F11 leaves fullscreen: the header bar comes back above the desktop.
    viewer.xdotool(&["key", "F11"]);
    let picture = load(picture());
    viewer.wait_for("out of fullscreen", |_, screen| {
        match find_exact(screen, &picture) {
            Some(at) if at != (160, 100) => Ok(()),
            other => Err(format!("the desktop is at {other:?}")),
        }
    });
}

#[test]
fn viewer_reports_a_wrong_password() {
    let _serial = one_at_a_time();
    let source = Source::start(picture(), "viewer-locked", Some("right-one"));
    let dir = TempDir::new("viewerpw").unwrap();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "wrong-one\n").unwrap();
    let wrong = wrong.display().to_string();
    let mut viewer = Viewer::start(&[
        "--scaling",
        "none",
        "--password-file",
        &wrong,
        &source.address(),
    ]);
    let truth = load(picture());
    let shot = viewer.wait_for("authentication error", |viewer, screen| {
        let names = viewer.window_names();
        if !names
            .iter()
            .any(|n| n.to_lowercase().contains("authentication failed"))
        {
            return Err(format!("no window says so: {names:?}"));
        }
        // The error is drawn: the window is painted, not blank.
        if screen.colour_count() <= 2 {
            return Err("the screen is blank".to_owned());
        }
        Ok(screen.clone())
    });
    let path = dir.join("wrong-password.png");
    shot.save_png(&path).unwrap();
    assert!(
        find_exact(&shot, &truth).is_none(),
        "the picture is shown despite the wrong password"
    );
    eprintln!("wrong password screenshot: {}", path.display());
    drop(source);
}

#[test]
fn viewer_reconnects_when_the_source_returns() {
    let _serial = one_at_a_time();
    let mut source = Source::start(picture(), "viewer-back", None);
    let mut viewer = Viewer::start(&["--scaling", "none", &source.address()]);
    let truth = load(picture());
    viewer.wait_shown("picture", &truth);
    source.process.stop();
    viewer.wait_for("reconnect overlay", |viewer, screen| {
        let names = viewer.window_names();
        if !names.iter().any(|n| n.contains("reconnecting")) {
            return Err(format!("no window says it is reconnecting: {names:?}"));
        }
        // The overlay covers part of the last picture.
        match find_exact(screen, &truth) {
            Some(at) => Err(format!("the picture is still shown whole at {at:?}")),
            None => Ok(()),
        }
    });
    source.process = Source::spawn(&source.dir, source.port, picture(), "viewer-back", None);
    source.wait_listening();
    viewer.wait_shown("picture after the source returned", &truth);
    viewer.wait_for("title back", |viewer, _| {
        let names = viewer.window_names();
        if names.iter().any(|n| n == "viewer-back") {
            Ok(())
        } else {
            Err(format!("titles: {names:?}"))
        }
    });
}

/// A `kvmux serve` proxy in front of `sources` (name, address).
fn start_proxy(dir: &TempDir, sources: &[(&str, String)]) -> (PeerProcess, u16) {
    let port = free_port().unwrap();
    let mut config = format!("[listen]\nrfb = \"127.0.0.1:{port}\"\n\n");
    for (name, address) in sources {
        config.push_str(&format!(
            "[[source]]\nname = \"{name}\"\naddress = \"{address}\"\n\n"
        ));
    }
    let path = dir.join("kvmux.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(kvmux_bin());
    command
        .args(["serve", "--config"])
        .arg(&path)
        .env("KVMUX_LOG", "info");
    let process = PeerProcess::spawn(&command, &dir.join("proxy.log")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the proxy did not listen: {}",
            process.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    (process, port)
}

/// Against a kvmux proxy the viewer learns the sources (kvmux-sources, docs/PROTOCOL.md)
/// and its switcher asks the proxy for the next and previous one (Ctrl+Alt+Page Down and
/// Page Up): the other source's picture appears, pixel for pixel.
#[test]
fn viewer_switches_the_sources_of_a_kvmux_proxy() {
    let _serial = one_at_a_time();
    let a = Source::start(picture(), "viewer-pa", None);
    let b = Source::start(flat_picture(), "viewer-pb", None);
    let dir = TempDir::new("viewerproxy").unwrap();
    let (proxy, port) = start_proxy(&dir, &[("alpha", a.address()), ("beta", b.address())]);
    let mut viewer = Viewer::start(&["--scaling", "none", &format!("127.0.0.1::{port}")]);
    let first = load(picture());
    let (x, y) = viewer.wait_shown("the first source", &first);
    viewer.wait_for("the source list", |viewer, _| {
        let log = viewer.process.log_text();
        let listed = log
            .lines()
            .rev()
            .find(|l| l.contains("Sources"))
            .unwrap_or_default()
            .to_owned();
        if listed.contains("alpha (connected)") && listed.contains("beta (connected)") {
            Ok(())
        } else {
            Err(format!("last source list: {listed:?}"))
        }
    });
    // Focus the display, then switch with the viewer's shortcut.
    let (cx, cy) = ((x + 10).to_string(), (y + 10).to_string());
    viewer.xdotool(&["mousemove", &cx, &cy, "click", "1"]);
    viewer.xdotool(&["key", "ctrl+alt+Next"]);
    viewer.wait_shown("the second source after switching", &load(flat_picture()));
    viewer.xdotool(&["key", "ctrl+alt+Prior"]);
    viewer.wait_shown("the first source after switching back", &first);
    // Page Down and Page Up (keysyms 0xff56, 0xff55) stayed with the viewer; the
    // modifiers pressed before them reached the source shown then, and were released.
    for (name, source) in [("alpha", &a), ("beta", &b)] {
        let keys = keys(&source.input());
        assert!(
            !keys.iter().any(|k| k.1 == 0xff56 || k.1 == 0xff55),
            "the shortcut's key reached {name}: {keys:?}\nproxy log:\n{}",
            proxy.log_text()
        );
        for down in keys.iter().filter(|k| k.0) {
            assert!(
                keys.iter().any(|k| !k.0 && k.1 == down.1),
                "{name}: keysym {:#x} pressed and never released: {keys:?}",
                down.1
            );
        }
    }
}

/// Puts `text` on X display `display`'s CLIPBOARD with xclip, which stays behind (in the
/// background) to serve it until something else takes the selection or the X server
/// ends.
fn set_clipboard(display: u32, dir: &TempDir, text: &str) {
    let file = dir.join(format!("clip-{display}.txt"));
    std::fs::write(&file, text).unwrap();
    let status = Command::new("xclip")
        .args(["-selection", "clipboard", "-i"])
        .arg(&file)
        .env("DISPLAY", format!(":{display}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "xclip -i on :{display}: {status}");
}

/// Waits until X display `display`'s CLIPBOARD holds `text` (as UTF-8).
fn wait_clipboard(display: u32, text: &str, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = run(
            Command::new("xclip")
                .args(["-selection", "clipboard", "-o", "-target", "UTF8_STRING"])
                .env("DISPLAY", format!(":{display}")),
            Duration::from_secs(10),
        );
        if let Ok(out) = out {
            last = out.stdout_text();
            if last == text {
                return;
            }
        }
        thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{what}: the clipboard holds {last:?}, not {text:?}\n{}",
        log()
    );
}

#[test]
fn viewer_clipboard_goes_both_ways_with_xvnc() {
    use kvmux_tests::servers::{VncServer, Xvnc, XvncOptions};
    let _serial = one_at_a_time();
    let dir = TempDir::new("clipboard").unwrap();
    let xvnc = Xvnc::start(XvncOptions {
        width: 640,
        height: 480,
        ..XvncOptions::default()
    })
    .unwrap();
    let mut viewer = Viewer::start(&["--scaling", "none", &xvnc.address()]);
    // Connected once the title follows Xvnc's desktop name.
    viewer.wait_title("connected to Xvnc", "kvmux-tests");
    let logs = || {
        format!(
            "viewer log:\n{}\nXvnc log:\n{}",
            viewer.process.log_text(),
            xvnc.log()
        )
    };
    // Xvnc's clipboard to the viewer's X display (ExtendedClipboard, UTF-8).
    let from_server = "from the server: grüße, ⌘ and 猫";
    set_clipboard(xvnc.display(), &dir, from_server);
    wait_clipboard(viewer.xvfb.display, from_server, "server to viewer", logs);
    // The viewer's X display's clipboard to Xvnc's.
    let from_viewer = "from the viewer: ñandú\nsecond line";
    set_clipboard(viewer.xvfb.display, &dir, from_viewer);
    wait_clipboard(xvnc.display(), from_viewer, "viewer to server", logs);
}

#[test]
fn viewer_connect_dialog_opens_and_saves_a_machine() {
    let _serial = one_at_a_time();
    let source = Source::start(picture(), "viewer-dialog", None);
    let home = TempDir::new("viewerhome").unwrap();
    let truth = load(picture());
    {
        let mut viewer = Viewer::start_in(
            &["--scaling", "none"],
            TempDir::new("viewer").unwrap(),
            home.path(),
        );
        // The main window, then its + button (the first in the header bar).
        let main = viewer.wait_toplevel("the main window", |w| w.width >= 1000);
        viewer.click(main.x + 23, main.y + 23);
        let dialog = viewer.wait_toplevel("the connect dialog", |w| w.width < 600);
        // The address field has the focus; "Save as" is the last field.
        viewer.xdotool(&["type", "--delay", "20", &source.address()]);
        viewer.click(dialog.x + 225, dialog.y + 279);
        viewer.xdotool(&["type", "--delay", "20", "lab pc"]);
        // Connect (the default response).
        viewer.xdotool(&["key", "Return"]);
        viewer.wait_shown(
            "the picture of the machine connected from the dialog",
            &truth,
        );
    }
    let saved =
        std::fs::read_to_string(home.join("config/kvmux/machines.toml")).unwrap_or_default();
    assert!(
        saved.contains("lab pc") && saved.contains(&source.address()),
        "saved machines: {saved}"
    );
    // A new viewer lists it under the saved-machines button (second in the header bar).
    let mut viewer = Viewer::start_in(
        &["--scaling", "none"],
        TempDir::new("viewer").unwrap(),
        home.path(),
    );
    let main = viewer.wait_toplevel("the main window", |w| w.width >= 1000);
    viewer.click(main.x + 60, main.y + 23);
    viewer.wait_toplevel_count("the saved machines' menu", |n| n >= 2);
    // Its menu's one item, right below the button.
    viewer.click(main.x + 95, main.y + 78);
    viewer.wait_shown("the picture of the saved machine", &truth);
}

/// The bounding box (x, y, width, height) of the pixels exactly `colour` in `screen`.
fn bounding_box(screen: &Image, colour: u32) -> Option<(u32, u32, u32, u32)> {
    let (mut left, mut top, mut right, mut bottom) = (u32::MAX, u32::MAX, 0, 0);
    for (i, &p) in screen.pixels.iter().enumerate() {
        if p & 0x00ff_ffff == colour {
            let (x, y) = (i as u32 % screen.width, i as u32 / screen.width);
            left = left.min(x);
            top = top.min(y);
            right = right.max(x);
            bottom = bottom.max(y);
        }
    }
    (left <= right).then(|| (left, top, right - left + 1, bottom - top + 1))
}

#[test]
fn viewer_scales_to_fit() {
    let _serial = one_at_a_time();
    // A 1280x720 desktop of one colour, in a 1024x700 window: scaled to the window's
    // width, 16:9 kept.
    let dir = TempDir::new("viewerscale").unwrap();
    let colour = 0x0030_80c0;
    let png = dir.join("flat.png");
    Image {
        width: 1280,
        height: 720,
        pixels: vec![colour; 1280 * 720],
    }
    .save_png(&png)
    .unwrap();
    let source = Source::start(&png, "viewer-scale", None);
    let mut viewer = Viewer::start(&[&source.address()]);
    let check = |screen: &Image, window: Toplevel| -> Result<(), String> {
        let (x, y, w, h) = bounding_box(screen, colour).ok_or("the colour is not shown")?;
        let (x, w, h) = (i64::from(x), i64::from(w), i64::from(h));
        let (wx, ww) = (i64::from(window.x), i64::from(window.width));
        // As wide as the window's content (a window without a window manager keeps a
        // few pixels of frame), with as much on either side, and 16:9 kept (edges may
        // blend with the letterbox: a pixel or two of slack).
        let (left, right) = (x - wx, wx + ww - (x + w));
        if w < ww - 12 || (left - right).abs() > 1 {
            return Err(format!(
                "{w}x{h} at ({x}, {y}) does not fill the window's {ww} at {wx}"
            ));
        }
        if (h - w * 720 / 1280).abs() > 2 {
            return Err(format!("{w}x{h} is not 16:9"));
        }
        Ok(())
    };
    let window = viewer.wait_for("the scaled desktop", |viewer, screen| {
        let window = *viewer.toplevels().first().ok_or("no window")?;
        check(screen, window).map(|()| window)
    });
    assert!(
        window.width < 1280,
        "the window {window:?} is not smaller than the desktop"
    );
    // (Full screen needs a window manager to grant it; Xvfb has none.)
}

/// A cursor: width, height, hotspot and premultiplied ARGB pixels.
type Cursor = (u16, u16, (u16, u16), Vec<u32>);

/// The cursor X display `display` shows now (XFixes).
fn x_cursor(display: u32) -> Result<Cursor, String> {
    use x11rb::protocol::xfixes::ConnectionExt as _;
    let (conn, _) = x11rb::connect(Some(&format!(":{display}"))).map_err(|e| e.to_string())?;
    conn.xfixes_query_version(5, 0)
        .map_err(|e| e.to_string())?
        .reply()
        .map_err(|e| e.to_string())?;
    let image = conn
        .xfixes_get_cursor_image()
        .map_err(|e| e.to_string())?
        .reply()
        .map_err(|e| e.to_string())?;
    Ok((
        image.width,
        image.height,
        (image.xhot, image.yhot),
        image.cursor_image,
    ))
}

/// The cursor a VNC server at `port` sends (Cursor with alpha), premultiplied as X
/// servers keep cursors.
fn server_cursor(port: u16) -> Cursor {
    use rfb::client::{ClientEvent, ClientSession};
    use rfb::encoding::Encoding;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let address = format!("127.0.0.1::{port}");
        let mut conn = rfb::net::connect(&address, &rfb::net::ConnectOptions::default())
            .await
            .unwrap();
        let mut session = ClientSession::new(&conn.init);
        session.feed(&conn.leftover).unwrap();
        let mut out = Vec::new();
        session.set_encodings(&[Encoding::RAW, Encoding::CURSOR_WITH_ALPHA], &mut out);
        session.request_update(false, None, &mut out);
        // Xvnc shows (and sends) a cursor once the pointer is on its screen.
        rfb::messages::ClientMessage::PointerEvent {
            buttons: 0,
            x: 100,
            y: 100,
        }
        .write(&mut out);
        conn.stream.write_all(&out).await.unwrap();
        let mut buf = vec![0; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            while let Some(event) = session.poll_event() {
                if event == ClientEvent::UpdateComplete {
                    let mut out = Vec::new();
                    session.request_update(true, None, &mut out);
                    conn.stream.write_all(&out).await.unwrap();
                }
                // (An empty cursor may come first.)
                if let ClientEvent::Cursor(c) = event.clone() {
                    if c.width == 0 || c.height == 0 {
                        continue;
                    }
                    let argb = c
                        .rgba
                        .chunks_exact(4)
                        .map(|p| {
                            let a = u32::from(p[3]);
                            let pre = |v: u8| (u32::from(v) * a + 127) / 255;
                            (a << 24) | (pre(p[0]) << 16) | (pre(p[1]) << 8) | pre(p[2])
                        })
                        .collect();
                    return (c.width, c.height, (c.hotspot_x, c.hotspot_y), argb);
                }
            }
            assert!(Instant::now() < deadline, "the server sent no cursor");
            let n = tokio::time::timeout(Duration::from_secs(20), conn.stream.read(&mut buf))
                .await
                .expect("the server is silent")
                .unwrap();
            assert!(n > 0, "the server closed the connection");
            session.feed(&buf[..n]).unwrap();
        }
    })
}

#[test]
fn viewer_shows_the_remote_cursor() {
    use kvmux_tests::servers::{VncServer, Xvnc, XvncOptions};
    let _serial = one_at_a_time();
    let xvnc = Xvnc::start(XvncOptions {
        width: 640,
        height: 480,
        ..XvncOptions::default()
    })
    .unwrap();
    // A cursor on Xvnc's root (a still one: "watch" is animated): Xvnc sends it to its
    // clients.
    run(
        Command::new("xsetroot")
            .args(["-cursor_name", "crosshair"])
            .env("DISPLAY", format!(":{}", xvnc.display())),
        Duration::from_secs(10),
    )
    .unwrap()
    .check("xsetroot")
    .unwrap();
    let truth = server_cursor(xvnc.port());
    assert!(
        truth.0 > 1 && truth.1 > 1,
        "Xvnc sends no visible cursor: {truth:?}"
    );
    let mut viewer = Viewer::start(&["--scaling", "none", &xvnc.address()]);
    viewer.wait_title("connected to Xvnc", "kvmux-tests");
    // The pointer over the remote desktop shows the cursor Xvnc sends, the viewer's X
    // server says.
    viewer.xdotool(&["mousemove", "320", "300"]);
    viewer.wait_for("the remote cursor", |viewer, _| {
        let shown = x_cursor(viewer.xvfb.display)?;
        if shown == truth {
            Ok(())
        } else {
            Err(format!(
                "the cursor is {}x{} with its hotspot at {:?}; Xvnc sends {}x{} at {:?}{}",
                shown.0,
                shown.1,
                shown.2,
                truth.0,
                truth.1,
                truth.2,
                if (shown.0, shown.1, shown.2) == (truth.0, truth.1, truth.2) {
                    ", with other pixels"
                } else {
                    ""
                }
            ))
        }
    });
}

#[test]
fn viewer_power_menu_asks_before_it_sends() {
    let _serial = one_at_a_time();
    let source = Source::start(picture(), "viewer-power", None);
    let mut viewer = Viewer::start(&["--scaling", "none", &source.address()]);
    viewer.wait_shown("picture", &load(picture()));
    let main = viewer.wait_toplevel("the main window", |w| w.width >= 1000);
    // Header-bar buttons at the end are placed from the window's right edge.
    let right = main.x + main.width;
    let xvp = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(r#""type":"xvp""#))
            .map(str::to_owned)
            .collect()
    };
    // The power button (testsrc offers xvp), left of the send-keys and main menus, then
    // Reset, the third item of its menu; then the answer to the confirmation.
    for answer in ["cancel", "confirm"] {
        viewer.click(right - 223, main.y + 27);
        viewer.wait_toplevel_count("the power menu", |n| n >= 2);
        viewer.click(right - 239, main.y + 143);
        let dialog = viewer.wait_toplevel("the confirmation", |w| w.width < 600 && w.height < 300);
        assert!(
            xvp(&source.input()).is_empty(),
            "sent before it was confirmed"
        );
        let button = if answer == "cancel" { 97 } else { 286 };
        viewer.click(dialog.x + button, dialog.y + 142);
        viewer.wait_toplevel_count("the confirmation closed", |n| n == 1);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while xvp(&source.input()).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let sent = xvp(&source.input());
    assert_eq!(sent.len(), 1, "xvp requests: {sent:?}");
    assert!(sent[0].contains(r#""action":"reset""#), "{sent:?}");
}
