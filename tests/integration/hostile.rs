//! Hostile servers: `kvmux snapshot` against a server that completes the handshake and
//! then sends truncated, oversized, out-of-bounds or garbage data. Each must end in a
//! clear one-line error within a second: no panic, no unbounded allocation. Every byte
//! sent here is written out by hand from the RFB spec.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use kvmux_tests::kvmux_bin;

/// The server's framebuffer: 64x48, 32 bpp little-endian 0x00RRGGBB.
const WIDTH: u16 = 64;
const HEIGHT: u16 = 48;

fn server_init() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&WIDTH.to_be_bytes());
    b.extend_from_slice(&HEIGHT.to_be_bytes());
    // bpp 32, depth 24, little-endian, true colour, maxima 255, shifts 16 8 0, padding.
    b.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    b.extend_from_slice(&4u32.to_be_bytes());
    b.extend_from_slice(b"evil");
    b
}

/// Speaks RFB 3.8 with security None up to ServerInit, then sends `payload` once the
/// client has sent its first FramebufferUpdateRequest, then keeps the socket open.
fn serve(listener: TcpListener, payload: Vec<u8>, handshake: bool) {
    let Ok((mut s, _)) = listener.accept() else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if handshake {
        let mut buf = [0u8; 12];
        if s.write_all(b"RFB 003.008\n").is_err() || s.read_exact(&mut buf).is_err() {
            return;
        }
        // One security type: None; then SecurityResult OK.
        let mut one = [0u8; 1];
        if s.write_all(&[1, 1]).is_err() || s.read_exact(&mut one).is_err() {
            return;
        }
        if s.write_all(&[0, 0, 0, 0]).is_err() || s.read_exact(&mut one).is_err() {
            return;
        }
        if s.write_all(&server_init()).is_err() {
            return;
        }
        wait_for_update_request(&mut s);
    }
    let _ = s.write_all(&payload);
    // Hold the connection open so only the data can end it.
    let mut sink = [0u8; 4096];
    while let Ok(n) = s.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

/// Reads client messages until a FramebufferUpdateRequest (type 3) has arrived.
fn wait_for_update_request(s: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SetPixelFormat (20 bytes), SetEncodings (4 + 4n), then the request (10 bytes).
        let mut i = 0;
        while i < seen.len() {
            match seen[i] {
                0 => i += 20,
                2 if i + 4 <= seen.len() => {
                    i += 4 + 4 * usize::from(u16::from_be_bytes([seen[i + 2], seen[i + 3]]))
                }
                3 if i + 10 <= seen.len() => return,
                _ => break,
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

struct Outcome {
    success: bool,
    stderr: String,
    elapsed: Duration,
}

fn snapshot_against(payload: Vec<u8>, handshake: bool) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || serve(listener, payload, handshake));
    let out = std::env::temp_dir().join(format!("kvmux-hostile-{port}.png"));
    let start = Instant::now();
    let output = Command::new(kvmux_bin())
        .args([
            "snapshot",
            &format!("127.0.0.1::{port}"),
            &out.to_string_lossy(),
            "--timeout",
            "10",
        ])
        .output()
        .expect("run kvmux");
    let elapsed = start.elapsed();
    drop(server);
    let _ = std::fs::remove_file(&out);
    Outcome {
        success: output.status.success(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed,
    }
}

/// Asserts a clean failure: non-zero exit, one line, no panic, within a second,
/// mentioning every one of `words`.
fn assert_clean_failure(o: &Outcome, words: &[&str]) {
    assert!(!o.success, "expected failure, stderr: {}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "panic: {}", o.stderr);
    assert_eq!(
        o.stderr.trim_end().lines().count(),
        1,
        "one line expected: {}",
        o.stderr
    );
    assert!(
        o.elapsed < Duration::from_secs(1),
        "took {:?}: {}",
        o.elapsed,
        o.stderr
    );
    let lower = o.stderr.to_lowercase();
    for w in words {
        assert!(
            lower.contains(&w.to_lowercase()),
            "{w:?} not in: {}",
            o.stderr
        );
    }
}

fn update_header(rects: u16) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&rects.to_be_bytes());
    b
}

fn rect_header(x: u16, y: u16, w: u16, h: u16, encoding: i32) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [x, y, w, h] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(&encoding.to_be_bytes());
    b
}

#[test]
fn rectangle_past_the_framebuffer() {
    let mut p = update_header(1);
    p.extend(rect_header(60, 40, 10, 10, 0)); // Raw, reaches x=70 > 64
    p.extend(vec![0u8; 10 * 10 * 4]);
    assert_clean_failure(&snapshot_against(p, true), &["outside", "64x48", "byte"]);
}

#[test]
fn huge_zrle_length() {
    let mut p = update_header(1);
    p.extend(rect_header(0, 0, 64, 48, 16));
    p.extend(0x8000_0000u32.to_be_bytes());
    assert_clean_failure(&snapshot_against(p, true), &["zrle", "2147483648", "limit"]);
}

#[test]
fn garbage_zlib_data() {
    let mut p = update_header(1);
    p.extend(rect_header(0, 0, 64, 48, 16));
    p.extend(16u32.to_be_bytes());
    p.extend([
        0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ]);
    assert_clean_failure(&snapshot_against(p, true), &["zlib"]);
}

#[test]
fn zlib_bomb() {
    // 64 MiB of zeros deflated (about 64 KiB) for a 64x48 ZRLE rectangle.
    let zeros = vec![0u8; 64 << 20];
    let mut c = flate2::Compress::new(flate2::Compression::best(), true);
    let mut z = Vec::with_capacity(1 << 20);
    c.compress_vec(&zeros, &mut z, flate2::FlushCompress::Sync)
        .expect("deflate");
    let mut p = update_header(1);
    p.extend(rect_header(0, 0, 64, 48, 16));
    p.extend((z.len() as u32).to_be_bytes());
    p.extend(z);
    assert_clean_failure(&snapshot_against(p, true), &["zrle", "exceeds"]);
}

#[test]
fn truncated_update() {
    let mut p = update_header(2);
    p.extend(rect_header(0, 0, 8, 8, 0));
    p.extend(vec![0u8; 100]); // 256 needed
                              // The server then closes: the thread ends after the client hangs up, so close here
                              // by sending a short payload and relying on the client's own EOF handling.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 12];
        let _ = s.write_all(b"RFB 003.008\n");
        let _ = s.read_exact(&mut buf);
        let mut one = [0u8; 1];
        let _ = s.write_all(&[1, 1]);
        let _ = s.read_exact(&mut one);
        let _ = s.write_all(&[0, 0, 0, 0]);
        let _ = s.read_exact(&mut one);
        let _ = s.write_all(&server_init());
        wait_for_update_request(&mut s);
        let _ = s.write_all(&p);
        // Dropping the socket closes it mid-rectangle.
    });
    let out = std::env::temp_dir().join(format!("kvmux-hostile-{port}.png"));
    let start = Instant::now();
    let output = Command::new(kvmux_bin())
        .args([
            "snapshot",
            &format!("127.0.0.1::{port}"),
            &out.to_string_lossy(),
            "--timeout",
            "10",
        ])
        .output()
        .expect("run kvmux");
    let o = Outcome {
        success: output.status.success(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: start.elapsed(),
    };
    let _ = server.join();
    assert_clean_failure(&o, &["closed"]);
}

#[test]
fn unknown_message_type() {
    assert_clean_failure(
        &snapshot_against(vec![0x77, 1, 2, 3], true),
        &["unknown server message type 119"],
    );
}

#[test]
fn oversized_cut_text() {
    // ServerCutText: type 3, 3 padding, length 2^31 - 1.
    let p = vec![3, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff];
    assert_clean_failure(
        &snapshot_against(p, true),
        &["ServerCutText", "2147483647", "exceeds"],
    );
}

#[test]
fn not_an_rfb_server() {
    let p = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
    assert_clean_failure(&snapshot_against(p, false), &["rfb"]);
}

#[test]
fn tight_palette_of_256_entries_decodes() {
    // Not hostile but the classic overflow: a 256-entry palette arrives as count-1 = 255.
    // A 16x16 Tight rectangle, basic compression on stream 0 with the palette filter:
    // control 0x40 (filter follows, stream 0), filter 1, count-1 255, 256 RGB TPIXELs
    // (colour i = (i, 255 - i, i / 2)), then 256 one-byte indices (pixel k has index k),
    // zlib-compressed as they are ≥ 12 bytes: compact length, zlib data.
    let mut indices = Vec::new();
    for k in 0..=255u8 {
        indices.push(k);
    }
    let mut c = flate2::Compress::new(flate2::Compression::default(), true);
    let mut z = Vec::with_capacity(1024);
    c.compress_vec(&indices, &mut z, flate2::FlushCompress::Sync)
        .expect("deflate");
    // First the whole screen black (RRE: no subrectangles, background 0), so the
    // update covers the framebuffer, then the Tight rectangle.
    let mut p = update_header(2);
    p.extend(rect_header(0, 0, WIDTH, HEIGHT, 2));
    p.extend([0, 0, 0, 0, 0, 0, 0, 0]);
    p.extend(rect_header(0, 0, 16, 16, 7));
    p.extend([0x40, 1, 255]);
    for i in 0..=255u8 {
        p.extend([i, 255 - i, i / 2]);
    }
    // Compact length: 7 bits per byte, low bits first, top bit = another byte follows.
    assert!((128..16384).contains(&z.len()));
    p.extend([0x80 | (z.len() & 0x7f) as u8, (z.len() >> 7) as u8]);
    p.extend(z);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || serve(listener, p, true));
    let out = std::env::temp_dir().join(format!("kvmux-palette-{port}.png"));
    let status = Command::new(kvmux_bin())
        .args([
            "snapshot",
            &format!("127.0.0.1::{port}"),
            &out.to_string_lossy(),
            "--timeout",
            "5",
        ])
        .status()
        .expect("run kvmux");
    drop(server);
    assert!(status.success());
    let img = kvmux_tests::Image::load_png(&out).expect("png");
    let _ = std::fs::remove_file(&out);
    for k in 0..256u32 {
        let (x, y) = (k % 16, k / 16);
        let expect = (k << 16) | ((255 - k) << 8) | (k / 2);
        assert_eq!(img.pixels[(y * 64 + x) as usize], expect, "pixel {k}");
    }
}
