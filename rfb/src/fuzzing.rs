//! Fuzz oracles: one function per target, shared by the cargo-fuzz targets in `fuzz/`
//! and by the regression test that replays `rfb/tests/data/fuzz_regression/` on every
//! test run. Each takes arbitrary bytes and must neither panic nor allocate more than
//! the framebuffer it works on allows.

use crate::client::ClientSession;
use crate::decode::{Decoders, ScanState};
use crate::error::Measure;
use crate::framebuffer::{Framebuffer, Rect};
use crate::handshake::ServerInit;
use crate::pixel::{PixelConverter, PixelFormat};
use crate::Encoding;

/// A fuzz oracle: arbitrary bytes in, no panic out.
pub type Oracle = fn(&[u8]);

/// Every target name with its oracle.
pub const TARGETS: &[(&str, Oracle)] = &[
    ("server_stream", server_stream),
    ("decode_raw", |d| decode(Encoding::RAW, d)),
    ("decode_copyrect", |d| decode(Encoding::COPY_RECT, d)),
    ("decode_rre", |d| decode(Encoding::RRE, d)),
    ("decode_corre", |d| decode(Encoding::CORRE, d)),
    ("decode_hextile", |d| decode(Encoding::HEXTILE, d)),
    ("decode_zlib", |d| decode(Encoding::ZLIB, d)),
    ("decode_tight", |d| decode(Encoding::TIGHT, d)),
    ("decode_tightpng", |d| decode(Encoding::TIGHT_PNG, d)),
    ("decode_zrle", |d| decode(Encoding::ZRLE, d)),
    ("decode_trle", |d| decode(Encoding::TRLE, d)),
];

const FORMATS: [PixelFormat; 6] = [
    PixelFormat::RGB888,
    PixelFormat::RGB565,
    PixelFormat::BGR233,
    PixelFormat::COLOURMAP8,
    PixelFormat {
        big_endian: true,
        ..PixelFormat::RGB888
    },
    PixelFormat {
        red_shift: 24,
        green_shift: 16,
        blue_shift: 8,
        ..PixelFormat::RGB888
    },
];

/// The server side of a connection after ServerInit: arbitrary bytes, fed in chunks
/// whose sizes the first byte chooses, into a 64x48 session.
pub fn server_stream(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(first >> 4) % FORMATS.len()];
    let chunk = usize::from(first & 0x0f) * 7 + 1;
    let init = ServerInit {
        width: 64,
        height: 48,
        pixel_format: format,
        name: String::new(),
    };
    let mut session = ClientSession::new(&init);
    for piece in rest.chunks(chunk) {
        if session.feed(piece).is_err() {
            return;
        }
        while session.poll_event().is_some() {}
    }
}

/// One rectangle of `encoding`: byte 0 picks the pixel format, bytes 1-4 the
/// rectangle inside a 64x64 framebuffer, the rest is the payload, decoded twice
/// (stateful decoders keep their streams in between).
pub fn decode(encoding: Encoding, data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let format = FORMATS[usize::from(data[0]) % FORMATS.len()];
    let rect = Rect::new(
        u16::from(data[1] % 64),
        u16::from(data[2] % 64),
        u16::from(data[3] % 65),
        u16::from(data[4] % 65),
    );
    let conv = PixelConverter::new(format);
    let mut fb = Framebuffer::new(64, 64);
    let mut decoders = Decoders::default();
    let mut payload = &data[5..];
    for _ in 0..2 {
        if fb.check(&rect).is_err() {
            return;
        }
        let Some(decoder) = decoders.get_mut(encoding) else {
            return;
        };
        let mut scan = ScanState::default();
        // Measure as a session would: growing prefixes, then the whole.
        for cut in [payload.len() / 3, payload.len() / 2] {
            let _ = decoder.measure(rect, &conv, &payload[..cut], &mut scan);
        }
        let len = match decoder.measure(rect, &conv, payload, &mut scan) {
            Ok(Measure::Complete(len)) => len,
            _ => return,
        };
        if decoder
            .decode(rect, &payload[..len], &conv, &mut fb)
            .is_err()
        {
            return;
        }
        payload = &payload[len..];
    }
}

/// Runs the oracle of the target called `name`.
pub fn run(name: &str, data: &[u8]) {
    if let Some((_, oracle)) = TARGETS.iter().find(|(n, _)| *n == name) {
        oracle(data);
    }
}
