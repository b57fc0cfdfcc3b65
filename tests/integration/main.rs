//! kvmux against real VNC peers. One test binary; each module one kind of test.
//!
//! The truth a snapshot is compared with is what the X server itself reports
//! (`xwd -root`), after the harness has checked that the VNC server serves exactly that
//! (see the harness's own tests in `tests/src/lib.rs`). Servers are shared between the
//! tests of a module and stop when the test process exits, however it exits.
//!
//! `cargo test` does not build the `kvmux` binary: run `scripts/test.sh`, or
//! `cargo build -p kvmux` first.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod auth;
mod errors;
mod hostile;
mod incremental;
mod novnc;
mod proxy;
mod testsrc;
mod viewer;
mod viewers;
mod x11vnc;
mod xvnc;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use kvmux_tests::{
    flat_test_picture, kvmux, run, test_picture, CommandOutput, Image, TempDir, VncServer,
};

/// The size of every screen here.
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 800;

/// How long one kvmux run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A server showing a known picture.
pub struct Shown<S> {
    pub server: S,
    /// The X server's screen after painting: what a lossless snapshot must equal.
    pub truth: Image,
}

/// Starts a server with `start` and shows `picture` on it, once; later calls get the
/// same server, or the same failure.
pub fn shared<S: VncServer + Send + Sync>(
    cell: &'static OnceLock<Result<Shown<S>, String>>,
    picture: &Path,
    start: impl FnOnce() -> anyhow::Result<S>,
) -> &'static Shown<S> {
    let shown = cell.get_or_init(|| {
        let server = start().map_err(|e| format!("{e:#}"))?;
        let truth = server
            .paint(picture)
            .map_err(|e| format!("{e:#}\nserver log:\n{}", server.log()))?;
        Ok(Shown { server, truth })
    });
    match shown {
        Ok(shown) => shown,
        Err(e) => panic!("starting the shared server failed: {e}"),
    }
}

/// Files shared by all tests, removed on the next run.
fn shared_dir() -> &'static TempDir {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| TempDir::new("integration").unwrap())
}

/// The test picture, 1280x800, drawn once per run.
pub fn picture() -> &'static Path {
    static PICTURE: OnceLock<PathBuf> = OnceLock::new();
    PICTURE.get_or_init(|| {
        let path = shared_dir().join("picture.png");
        test_picture(WIDTH, HEIGHT, &path).unwrap();
        path
    })
}

/// The test picture without photo-like areas, for encodings servers give up on otherwise.
pub fn flat_picture() -> &'static Path {
    static PICTURE: OnceLock<PathBuf> = OnceLock::new();
    PICTURE.get_or_init(|| {
        let path = shared_dir().join("flat.png");
        flat_test_picture(WIDTH, HEIGHT, &path).unwrap();
        path
    })
}

/// What one `kvmux snapshot` run did.
pub struct Snapshot {
    pub output: CommandOutput,
    /// The PNG it wrote, if it exited successfully.
    pub image: Option<Image>,
    /// Why that PNG could not be read, if it exited successfully.
    pub unreadable: Option<String>,
    _dir: TempDir,
}

/// Runs `kvmux snapshot ADDRESS OUT.png ARGS…`.
pub fn snapshot(address: &str, args: &[&str]) -> Snapshot {
    let dir = TempDir::new("snapshot").unwrap();
    let out = dir.join("out.png");
    let output = run(
        kvmux()
            .arg("snapshot")
            .arg(address)
            .arg(&out)
            .args(args)
            // Failures must be one line on stderr: no logging on top.
            .env_remove("RUST_LOG"),
        RUN_TIMEOUT,
    )
    .unwrap();
    let (image, unreadable) = if output.status.success() {
        match Image::load_png(&out) {
            Ok(image) => (Some(image), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        }
    } else {
        (None, None)
    };
    Snapshot {
        output,
        image,
        unreadable,
        _dir: dir,
    }
}

/// Runs a snapshot that must succeed, and returns its picture.
pub fn snapshot_ok(address: &str, args: &[&str]) -> Image {
    let snap = snapshot(address, args);
    if let Some(e) = snap.unreadable {
        panic!("kvmux snapshot {address} {args:?} exited 0 but wrote no picture: {e}");
    }
    match snap.image {
        Some(image) => image,
        None => panic!(
            "kvmux snapshot {address} {args:?} failed ({}): {}",
            snap.output.status,
            snap.output.stderr_text().trim()
        ),
    }
}

/// A snapshot with `args` equals `truth` pixel for pixel.
pub fn assert_snapshot_equals(address: &str, args: &[&str], truth: &Image) {
    let image = snapshot_ok(address, args);
    if let Some(difference) = image.diff(truth) {
        panic!("kvmux snapshot {address} {args:?}: {difference}");
    }
}

/// The run failed with a non-zero status and exactly one line on stderr, which contains
/// each of `words` (ignoring case).
pub fn assert_failed_saying(snap: &Snapshot, words: &[&str]) {
    let stderr = snap.output.stderr_text();
    assert!(
        !snap.output.status.success(),
        "kvmux succeeded where it should fail; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr is not one line: {stderr:?}");
    let line = lines[0].to_lowercase();
    for word in words {
        assert!(
            line.contains(&word.to_lowercase()),
            "stderr {stderr:?} does not say {word:?}"
        );
    }
}

/// Defines one test per `name: [args…]` that compares a snapshot of `$fixture()` with
/// its truth, pixel for pixel.
#[macro_export]
macro_rules! lossless_tests {
    ($fixture:ident; $($name:ident: [$($arg:expr),*];)*) => {$(
        #[test]
        fn $name() {
            let shown = $fixture();
            $crate::assert_snapshot_equals(
                &shown.server.address(),
                &[$($arg,)* "--timeout", "30"],
                &shown.truth,
            );
        }
    )*};
}

/// What a server that reduces each 8-bit channel `v` to a level in `0..=max` by
/// `(v * max + bias) / 255` sends, widened back to 8 bits the way RFB clients do
/// (`(level * 255 + max / 2) / max`). TigerVNC rounds with bias 128, libvncserver
/// with 127 (the harness's `*_reduces_colours_by_rounding` tests pin both).
pub fn reduced(p: u32, maxima: (u32, u32, u32), bias: u32) -> u32 {
    let chan = |v: u32, max: u32| {
        let level = (v * max + bias) / 255;
        (level * 255 + max / 2) / max
    };
    (chan((p >> 16) & 0xff, maxima.0) << 16)
        | (chan((p >> 8) & 0xff, maxima.1) << 8)
        | chan(p & 0xff, maxima.2)
}

/// Defines one test per `name: pixel format, encoding` comparing a snapshot taken in a
/// reduced pixel format with the truth reduced as the server reduces it ([`reduced`]).
#[macro_export]
macro_rules! reduced_tests {
    ($fixture:ident, bias $bias:literal; $($name:ident: $format:literal, $encoding:literal;)*) => {$(
        #[test]
        fn $name() {
            let shown = $fixture();
            let maxima = match $format {
                "rgb565" => (31, 63, 31),
                "rgb555" => (31, 31, 31),
                "bgr233" => (7, 7, 3),
                other => unreachable!("no format {other}"),
            };
            let expected = shown.truth.map(|p| $crate::reduced(p, maxima, $bias));
            $crate::assert_snapshot_equals(
                &shown.server.address(),
                &["--pixel-format", $format, "--encoding", $encoding, "--timeout", "30"],
                &expected,
            );
        }
    )*};
}

/// A Tight snapshot with JPEG quality 8 stays close to the truth.
pub fn assert_tight_jpeg_close<S: VncServer>(shown: &Shown<S>) {
    let args = ["--encoding", "tight", "--quality", "8", "--timeout", "30"];
    let image = snapshot_ok(&shown.server.address(), &args);
    assert_eq!((image.width, image.height), (WIDTH, HEIGHT));
    let psnr = image.psnr(&shown.truth);
    assert!(
        psnr >= 30.0,
        "Tight JPEG quality 8: PSNR {psnr:.2} dB < 30 dB"
    );
}
