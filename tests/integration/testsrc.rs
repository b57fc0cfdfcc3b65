//! `kvmux testsrc` against real clients: what they show must be the image it was given,
//! the input they send must reach the input log exactly, and hostile clients must lose
//! only their own connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kvmux_tests::{free_port, kvmux_bin, run, Image, PeerProcess, TempDir};

use crate::{assert_snapshot_equals, picture};

/// A running `kvmux testsrc`, stopped when dropped.
pub struct Testsrc {
    pub process: PeerProcess,
    pub port: u16,
    input_log: PathBuf,
    _dir: TempDir,
}

impl Testsrc {
    pub fn start(args: &[&str]) -> Testsrc {
        Testsrc::start_on(free_port().unwrap(), args)
    }

    /// Starts on `port` (for a restart on the port of one that was stopped).
    pub fn start_on(port: u16, args: &[&str]) -> Testsrc {
        let dir = TempDir::new("testsrc").unwrap();
        let input_log = dir.join("input.jsonl");
        let mut command = Command::new(kvmux_bin());
        command
            .args([
                "testsrc",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--input-log",
            ])
            .arg(&input_log)
            .args(args)
            .env("KVMUX_LOG", "info");
        let process = PeerProcess::spawn(&command, &dir.join("testsrc.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "testsrc did not listen: {}",
                process.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Testsrc {
            process,
            port,
            input_log,
            _dir: dir,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1::{}", self.port)
    }

    /// The input log's events without their timestamps, one JSON object a line.
    pub fn events(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.input_log).unwrap_or_default();
        text.lines()
            .map(|l| match l.find(r#","time":"#) {
                Some(i) => format!("{}}}", &l[..i]),
                None => l.to_owned(),
            })
            .collect()
    }
}

pub fn vncdo() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/vncdo");
    assert!(path.exists(), "{path:?} is missing: run scripts/setup.sh");
    path
}

fn image_source() -> Testsrc {
    let image = format!("image:{}", picture().display());
    Testsrc::start(&["--pattern", &image, "--name", "image"])
}

#[test]
fn vncdotool_captures_the_image() {
    let src = image_source();
    let dir = TempDir::new("vncdo").unwrap();
    let out = dir.join("capture.png");
    // vncdotool takes its first rectangle for the whole screen: the second capture of
    // the session is the one to compare.
    run(
        Command::new(vncdo())
            .args(["-s", &src.address(), "capture"])
            .arg(dir.join("first.png"))
            .arg("capture")
            .arg(&out),
        Duration::from_secs(60),
    )
    .unwrap()
    .check("vncdo capture")
    .unwrap();
    let truth = Image::load_png(picture()).unwrap();
    if let Some(d) = Image::load_png(&out).unwrap().diff(&truth) {
        panic!("vncdotool's capture of testsrc: {d}");
    }
}

#[test]
fn snapshot_equals_the_image_in_every_encoding() {
    let src = image_source();
    let truth = Image::load_png(picture()).unwrap();
    for encoding in ["raw", "rre", "hextile", "zlib", "tight", "zrle"] {
        assert_snapshot_equals(
            &src.address(),
            &["--encoding", encoding, "--timeout", "30"],
            &truth,
        );
    }
}

#[test]
fn vncdotool_input_reaches_the_log_in_order() {
    let src = Testsrc::start(&["--pattern", "bars"]);
    run(
        Command::new(vncdo()).args([
            "-s",
            &src.address(),
            "type",
            "aZ1",
            "key",
            "shift-a",
            "key",
            "ctrl-alt-del",
            "key",
            "ctrl",
            "key",
            "ctrl",
            "key",
            "2",
            "move",
            "100",
            "200",
            "click",
            "1",
        ]),
        Duration::from_secs(60),
    )
    .unwrap()
    .check("vncdo input")
    .unwrap();
    // X11 keysyms: a 97, Z 90, 1 49, Shift_L 65505, Control_L 65507, Alt_L 65513,
    // Delete 65535, 2 50. vncdotool types each character as a press and a release and
    // presses a chord's keys in order, releasing them in reverse.
    let key =
        |down: bool, keysym: u32| format!(r#"{{"type":"key","down":{down},"keysym":{keysym}}}"#);
    let tap = |keysym| [key(true, keysym), key(false, keysym)];
    let pointer = |x: u16, y: u16, buttons: u8| {
        format!(r#"{{"type":"pointer","x":{x},"y":{y},"buttons":{buttons}}}"#)
    };
    let mut expected = Vec::new();
    expected.extend(tap(97));
    expected.extend(tap(90));
    expected.extend(tap(49));
    expected.extend([
        key(true, 65505),
        key(true, 97),
        key(false, 97),
        key(false, 65505),
    ]);
    expected.extend([
        key(true, 65507),
        key(true, 65513),
        key(true, 65535),
        key(false, 65535),
        key(false, 65513),
        key(false, 65507),
    ]);
    expected.extend(tap(65507));
    expected.extend(tap(65507));
    expected.extend(tap(50));
    expected.extend([
        pointer(100, 200, 0),
        pointer(100, 200, 1),
        pointer(100, 200, 0),
    ]);
    // The log is flushed per line, but the last lines may trail the client's exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while src.events().len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(src.events(), expected);
}

/// Completes an RFB 3.8 handshake with security None as a client would, by hand.
fn handshake(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut version = [0u8; 12];
    s.read_exact(&mut version).unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").unwrap();
    let mut types = [0u8; 2];
    s.read_exact(&mut types).unwrap();
    assert_eq!(types, [1, 1], "one security type, None");
    s.write_all(&[1]).unwrap();
    let mut result = [0u8; 4];
    s.read_exact(&mut result).unwrap();
    assert_eq!(result, [0; 4]);
    s.write_all(&[1]).unwrap(); // shared
    let mut init = [0u8; 24];
    s.read_exact(&mut init).unwrap();
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    let mut name = vec![0u8; name_len];
    s.read_exact(&mut name).unwrap();
    s
}

/// Whether the server closes `s` within a few seconds (reads until EOF or reset).
fn closed_by_server(mut s: TcpStream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn hostile_clients_lose_only_their_own_connection() {
    let src = Testsrc::start(&["--pattern", "clock", "--write-timeout", "2"]);
    // A well-behaved client stays connected through all of it.
    let mut good = handshake(src.port);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "garbage",
            vec![0x99, 1, 2, 3, 4, 5, 6, 7],
            "unknown client message type 153",
        ),
        ("huge SetEncodings", vec![2, 0, 0xff, 0xff], "SetEncodings"),
        (
            "cut text of 2^31-1 bytes",
            vec![6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff],
            "ClientCutText",
        ),
        // Length -1: an ExtendedClipboard payload too short to hold its flags.
        (
            "cut text of 2^32-1 bytes",
            vec![6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0],
            "ClientCutText",
        ),
    ];
    for (what, bytes, reason) in cases {
        let mut s = handshake(src.port);
        s.write_all(&bytes).unwrap();
        assert!(closed_by_server(s), "{what}: connection not closed");
        // The reason is logged as the connection ends, maybe just after the close.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !src.process.log_text().contains(reason) {
            assert!(
                Instant::now() < deadline,
                "{what}: no reason {reason:?} logged:\n{}",
                src.process.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Out-of-range pointer positions are clamped to the screen, not refused.
    let mut s = handshake(src.port);
    s.write_all(&[5, 0, 0xff, 0xff, 0xff, 0xff]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let clamped = r#"{"type":"pointer","x":1279,"y":799,"buttons":0}"#.to_owned();
    while !src.events().contains(&clamped) {
        assert!(
            Instant::now() < deadline,
            "clamped pointer not logged: {:?}",
            src.events()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    // A client that asks for full frames and never reads is dropped after the write
    // timeout; the server's memory stays bounded meanwhile.
    let mut slow = handshake(src.port);
    for _ in 0..500 {
        slow.write_all(&[3, 0, 0, 0, 0, 0, 0x05, 0x00, 0x03, 0x20])
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !src.process.log_text().contains("stopped reading") {
        assert!(
            Instant::now() < deadline,
            "slow reader not dropped:\n{}",
            src.process.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss = resident_kib(src.process.pid());
    assert!(rss < 200 * 1024, "testsrc holds {rss} KiB");
    // The good client is still served: a full update arrives for its request.
    good.write_all(&[3, 0, 0, 0, 0, 0, 0x05, 0x00, 0x03, 0x20])
        .unwrap();
    let mut header = [0u8; 4];
    good.read_exact(&mut header).unwrap();
    assert_eq!(header[0], 0, "a FramebufferUpdate");
    assert!(src.process.log_text().contains("Client connected"));
}

/// Resident memory of `pid` and its children (the test harness runs peers under a
/// guardian shell), in KiB.
fn resident_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut pids = vec![pid];
    while let Some(p) = pids.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            if let Some(line) = status.lines().find(|l| l.starts_with("VmRSS:")) {
                total += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}
