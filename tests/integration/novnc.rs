//! noVNC 1.7 (npm `@novnc/novnc`) in headless Chromium on the proxy's WebSocket
//! listener: its canvas shows the active source exactly, and it switches on the hotkeys.
//!
//! `tests/novnc/drive.mjs` (playwright-core) loads `tests/novnc/index.html`, which runs
//! noVNC's own `core/rfb.js` asking for lossless encodings only, and saves the canvas's
//! pixels (`toDataURL`, not a screenshot) before and after typing Ctrl Ctrl 2 through noVNC.
//! The PNGs are compared here with the pictures the sources were given.
//! `scripts/setup.sh` installs Chromium and the pinned npm packages.
//!
//! noVNC asks for continuous updates, so it gets a second full update right after the
//! first; that is where an inflater that loses its window on a Tight stream reset (as
//! noVNC's does) failed when the proxy sent noVNC the updates it shares between clients.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kvmux_tests::{run, Image, TempDir};

use crate::picture;
use crate::proxy::{inverted_picture, source, Proxy};
use crate::testsrc::Testsrc;

/// How long the driver may take in all (Chromium's start, two waits for a picture).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long each of the driver's waits for a picture may take, in milliseconds.
const WAIT_MS: &str = "30000";

fn novnc_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("novnc");
    for needed in [
        dir.join("node_modules/@novnc/novnc/core/rfb.js"),
        dir.join("node_modules/playwright-core/package.json"),
        PathBuf::from("/usr/bin/chromium"),
    ] {
        assert!(
            needed.exists(),
            "{needed:?} is missing: run scripts/setup.sh"
        );
    }
    dir
}

fn assert_same(what: &str, got: &Path, truth: &Image, log: &str) {
    let image = Image::load_png(got).unwrap_or_else(|e| panic!("{what}: {e:#}\n{log}"));
    if let Some(d) = image.diff(truth) {
        panic!("{what}: {d}\n{log}");
    }
}

#[test]
fn novnc_shows_the_source_and_switches_on_hotkeys() {
    let novnc = novnc_dir();
    let dir = TempDir::new("novnc").unwrap();
    let alpha_truth = Image::load_png(picture()).unwrap();
    let (inverted, beta_truth) = inverted_picture(&dir);
    let alpha = Testsrc::start(&["--pattern", &format!("image:{}", picture().display())]);
    let beta = Testsrc::start(&["--pattern", &format!("image:{}", inverted.display())]);
    let proxy = Proxy::start_with_websocket(&format!(
        "{}{}",
        source("alpha", &alpha.address()),
        source("beta", &beta.address()),
    ));
    let ws = proxy.websocket.unwrap();

    let start = Instant::now();
    let out = run(
        Command::new("node")
            .arg(novnc.join("drive.mjs"))
            .args(["--ws", &format!("ws://127.0.0.1:{ws}/")])
            .arg("--out")
            .arg(dir.path())
            .arg("--first")
            .arg(picture())
            .arg("--second")
            .arg(&inverted)
            .args(["--timeout-ms", WAIT_MS]),
        DRIVER_TIMEOUT,
    )
    .unwrap();
    let log = format!(
        "driver ({}, {:?}):\nstdout: {}\nstderr:\n{}\nproxy log:\n{}",
        out.status,
        start.elapsed(),
        out.stdout_text().trim(),
        out.stderr_text().trim(),
        proxy.process.log_text()
    );
    assert!(out.status.success(), "{log}");
    eprintln!("{}", out.stdout_text().trim());

    assert_same(
        "noVNC's canvas showing source 1 (alpha)",
        &dir.join("first.png"),
        &alpha_truth,
        &log,
    );
    assert_same(
        "noVNC's canvas after ctrl ctrl 2 (beta)",
        &dir.join("second.png"),
        &beta_truth,
        &log,
    );
    // The hotkey's last key selects and reaches neither source (its Ctrl taps went to
    // alpha, as taps); the 'h' typed afterwards reaches beta alone. The proxy announces
    // QEMU extended key events, so noVNC sends them: with H's XT scancode, 0x23.
    let key = |down: bool, keysym: u32, keycode: u32| {
        format!(r#"{{"type":"key","down":{down},"keysym":{keysym},"keycode":{keycode}}}"#)
    };
    let expected = vec![key(true, 0x68, 0x23), key(false, 0x68, 0x23)];
    let deadline = Instant::now() + Duration::from_secs(5);
    while beta.events().len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(beta.events(), expected, "beta's input log\n{log}");
    let alpha_events = alpha.events();
    assert!(
        alpha_events.iter().all(|e| [50, 104]
            .iter()
            .all(|k| !e.contains(&format!(r#""keysym":{k},"#))
                && !e.contains(&format!(r#""keysym":{k}}}"#)))),
        "alpha's input log has the 2 or the h: {alpha_events:?}"
    );
}
