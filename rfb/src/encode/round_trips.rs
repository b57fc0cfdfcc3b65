//! Round trips through the decoders for every encoder, and encoding speed on a real
//! desktop frame.
//!
//! The expectation for a pixel is independent of the encoders: the colour written with
//! [`PixelWriter::write`] and read back with [`PixelConverter`] (the identity for
//! formats with 8-bit channels, a reduction for RGB565 and 8-bit ones).

use super::hextile::HextileEncoder;
use super::raw::RawEncoder;
use super::rre::RreEncoder;
use super::zlib::ZlibEncoder;
use super::zrle::ZrleEncoder;
use super::*;
use crate::decode::hextile::HextileDecoder;
use crate::decode::raw::RawDecoder;
use crate::decode::rre::RreDecoder;
use crate::decode::zlib::ZlibDecoder;
use crate::decode::zrle::test_support::desktop;
use crate::decode::zrle::ZrleDecoder;
use crate::decode::{RectDecoder, ScanState};
use crate::pixel::PixelConverter;
use crate::recording::Recording;
use crate::Measure;
use flate2::{Decompress, FlushDecompress};

/// The pixel formats round trips run in.
fn formats() -> Vec<(&'static str, PixelFormat)> {
    vec![
        ("rgb888", PixelFormat::RGB888),
        (
            "bgr888 big-endian",
            PixelFormat {
                big_endian: true,
                red_shift: 0,
                blue_shift: 16,
                ..PixelFormat::RGB888
            },
        ),
        ("rgb565", PixelFormat::RGB565),
        (
            "rgb888 in the high bytes",
            PixelFormat {
                red_shift: 24,
                green_shift: 16,
                blue_shift: 8,
                ..PixelFormat::RGB888
            },
        ),
        ("bgr233", PixelFormat::BGR233),
        ("colour map", PixelFormat::COLOURMAP8),
    ]
}

fn converter(format: PixelFormat) -> PixelConverter {
    let mut conv = PixelConverter::new(format);
    if !format.true_colour {
        conv.set_colour_map_entries(0, &PixelWriter::colour_map());
    }
    conv
}

/// A small xorshift generator, so images are the same on every run.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// Synthetic content in vertical strips, each a kind of tile: solid, two colours
/// (text-like strokes), 12 colours, about 100 colours in short runs, photo-like noise,
/// and long runs of two colours (runs past 255 and 510 pixels). Across the bottom, a
/// band of many colours in runs of two.
fn synthetic(width: u16, height: u16) -> Framebuffer {
    let mut fb = Framebuffer::new(width, height);
    let (w, h) = (usize::from(width), usize::from(height));
    let mut rng = Rng(0x1234_5678);
    let palette12: Vec<u32> = (0..12)
        .map(|i| (0x0010_2030 * (i + 1)) ^ 0x0080_4000)
        .collect();
    let strip = w.div_ceil(6).max(1);
    let pixels = fb.pixels_mut();
    for y in 0..h {
        for x in 0..w {
            let p = match x / strip {
                0 => 0x00ab_cdef,
                1 => {
                    if (x % 7 == 2 && y % 13 > 2) || (y % 13 == 6 && x % 7 < 5) {
                        0x0000_0000
                    } else {
                        0x00ff_ffff
                    }
                }
                2 => palette12[(x / 3 + y / 5) % 12],
                3 => {
                    let level = ((x / 2) * 7 + y * 3) % 100;
                    0x0001_0203 * level as u32
                }
                4 => rng.next() & 0x00ff_ffff,
                _ => {
                    // Long runs: the colour changes every 300 pixels of the strip.
                    let i = y * strip + x % strip;
                    if (i / 300) % 2 == 0 {
                        0x0012_3456
                    } else {
                        0x0065_4321
                    }
                }
            };
            pixels[y * w + x] = p;
        }
    }
    for y in h.saturating_sub(h / 8)..h {
        for x in 0..w {
            pixels[y * w + x] = (x as u32 / 2 * 0x0003_0507) & 0x00ff_ffff;
        }
    }
    fb
}

/// Rectangles to try inside a `width` by `height` framebuffer: all of it, a single
/// pixel, odd sizes at odd places, the right and bottom edges, and an empty one.
fn rects(width: u16, height: u16) -> Vec<Rect> {
    let mut v = vec![
        Rect::new(0, 0, width, height),
        Rect::new(3, 5, 1, 1),
        Rect::new(0, 0, 0, 0),
    ];
    for (w, h) in [(65, 63), (17, 33), (129, 2), (1, 70)] {
        if w <= width && h <= height {
            v.push(Rect::new((width - w) / 3, (height - h) / 2, w, h));
            v.push(Rect::new(width - w, height - h, w, h));
        }
    }
    v
}

/// The client side of one connection for an encoding.
struct Client {
    decoder: Box<dyn RectDecoder>,
    fb: Framebuffer,
}

/// Encodes each of `rects` of `fb` with `encoder` and decodes it with `client`,
/// checking every pixel of the rectangle against what the client should see and that
/// nothing outside it changed. Returns the payloads.
fn round_trip(
    name: &str,
    encoder: &mut dyn RectEncoder,
    client: &mut Client,
    fb: &Framebuffer,
    format: PixelFormat,
    rects: &[Rect],
    params: &EncodeParams,
) -> Vec<Vec<u8>> {
    let pw = PixelWriter::new(format);
    let conv = converter(format);
    let mut buf = Vec::with_capacity(4);
    let expected: Vec<u32> = fb
        .pixels()
        .iter()
        .map(|&p| {
            buf.clear();
            pw.write(p, &mut buf);
            conv.pixel(&buf)
        })
        .collect();
    let mut payloads = Vec::new();
    for &rect in rects {
        let mut payload = vec![0xee]; // encoders append
        encoder.encode(fb, rect, &pw, params, &mut payload);
        let payload = payload.split_off(1);
        let before = client.fb.pixels().to_vec();
        let m = client
            .decoder
            .measure(rect, &conv, &payload, &mut ScanState::default())
            .unwrap_or_else(|e| panic!("{name} {rect}: measure: {e}"));
        assert_eq!(m, Measure::Complete(payload.len()), "{name} {rect}: length");
        client
            .decoder
            .decode(rect, &payload, &conv, &mut client.fb)
            .unwrap_or_else(|e| panic!("{name} {rect}: decode: {e}"));
        let stride = usize::from(fb.width());
        for (i, (&got, (&old, (&src, &seen)))) in client
            .fb
            .pixels()
            .iter()
            .zip(before.iter().zip(fb.pixels().iter().zip(&expected)))
            .enumerate()
        {
            let (x, y) = ((i % stride) as u16, (i / stride) as u16);
            let inside = x >= rect.x
                && u32::from(x) < rect.right()
                && y >= rect.y
                && u32::from(y) < rect.bottom();
            let want = if inside { seen } else { old };
            assert_eq!(
                got, want,
                "{name} {rect}: pixel ({x}, {y}) of 0x{src:06x}, inside: {inside}"
            );
        }
        payloads.push(payload);
    }
    payloads
}

fn client(decoder: Box<dyn RectDecoder>, fb: &Framebuffer) -> Client {
    let mut client_fb = Framebuffer::new(fb.width(), fb.height());
    client_fb.pixels_mut().fill(0x0042_4242);
    Client {
        decoder,
        fb: client_fb,
    }
}

type Pair = (
    &'static str,
    fn() -> Box<dyn RectEncoder>,
    fn() -> Box<dyn RectDecoder>,
);

fn pairs() -> Vec<Pair> {
    vec![
        ("raw", || Box::new(RawEncoder), || Box::new(RawDecoder)),
        (
            "rre",
            || Box::new(RreEncoder::default()),
            || Box::new(RreDecoder),
        ),
        (
            "hextile",
            || Box::new(HextileEncoder::default()),
            || Box::new(HextileDecoder),
        ),
        (
            "zlib",
            || Box::new(ZlibEncoder::default()),
            || Box::new(ZlibDecoder::default()),
        ),
        (
            "zlib 2 threads",
            || Box::new(ZlibEncoder::with_threads(2)),
            || Box::new(ZlibDecoder::default()),
        ),
        (
            "zrle",
            || Box::new(ZrleEncoder::default()),
            || Box::new(ZrleDecoder::default()),
        ),
        (
            "zrle 2 threads",
            || Box::new(ZrleEncoder::with_threads(2)),
            || Box::new(ZrleDecoder::default()),
        ),
    ]
}

#[test]
fn every_encoder_in_every_format() {
    // Large enough (over 65536 pixels) for the threaded encoders to use their threads.
    let fb = synthetic(331, 210);
    let rects = rects(fb.width(), fb.height());
    for (enc_name, encoder, decoder) in pairs() {
        for (format_name, format) in formats() {
            let name = format!("{enc_name} in {format_name}");
            // One connection: the rectangles share the encoder's and decoder's state.
            let mut enc = encoder();
            let mut c = client(decoder(), &fb);
            let params = EncodeParams::default();
            round_trip(&name, &mut *enc, &mut c, &fb, format, &rects, &params);
        }
    }
}

#[test]
fn desktop_content_and_compression_levels() {
    let (w, h) = (300u16, 200u16);
    let mut fb = Framebuffer::new(w, h);
    fb.pixels_mut()
        .copy_from_slice(&desktop(usize::from(w), usize::from(h)));
    let rects = [fb.bounds(), Rect::new(10, 20, 150, 100), fb.bounds()];
    for (enc_name, encoder, decoder) in pairs() {
        for compress in [None, Some(0), Some(1), Some(6), Some(9)] {
            let name = format!("{enc_name} at level {compress:?}");
            let params = EncodeParams {
                quality: None,
                compress,
            };
            let mut enc = encoder();
            let mut c = client(decoder(), &fb);
            round_trip(
                &name,
                &mut *enc,
                &mut c,
                &fb,
                PixelFormat::RGB888,
                &rects,
                &params,
            );
        }
    }
}

#[test]
fn compression_level_changes_within_a_stream() {
    let (w, h) = (300u16, 300u16);
    let mut fb = Framebuffer::new(w, h);
    fb.pixels_mut()
        .copy_from_slice(&desktop(usize::from(w), usize::from(h)));
    for (name, encoder, decoder) in pairs() {
        let mut enc = encoder();
        let mut c = client(decoder(), &fb);
        let mut sizes = Vec::new();
        for (i, compress) in [Some(2), Some(6), None, Some(0), Some(9), Some(1)]
            .into_iter()
            .enumerate()
        {
            let params = EncodeParams {
                quality: None,
                compress,
            };
            // The whole framebuffer (on several threads where the encoder has them),
            // then a part of it.
            let rects = [fb.bounds(), Rect::new(i as u16 * 10, 7, 120, 90)];
            let name = format!("{name} at level {compress:?}");
            let payloads = round_trip(
                &name,
                &mut *enc,
                &mut c,
                &fb,
                PixelFormat::RGB888,
                &rects,
                &params,
            );
            sizes.push(payloads[0].len());
        }
        // The level took effect: stored blocks (level 0) are larger than level 9.
        if name.starts_with("zlib") || name.starts_with("zrle") {
            assert!(sizes[3] > sizes[4] * 3 / 2, "{name}: {sizes:?}");
        }
    }
}

#[test]
fn reset_encoder_and_decoder_agree() {
    let fb = synthetic(130, 70);
    let rects = [fb.bounds(), Rect::new(1, 2, 64, 64)];
    for (name, encoder, decoder) in pairs() {
        let mut enc = encoder();
        let mut c = client(decoder(), &fb);
        let f = PixelFormat::RGB888;
        let params = EncodeParams::default();
        round_trip(name, &mut *enc, &mut c, &fb, f, &rects, &params);
        enc.reset();
        c.decoder.reset();
        round_trip(name, &mut *enc, &mut c, &fb, f, &rects, &params);
        // After a reset the stream starts anew: a fresh decoder takes it as well.
        enc.reset();
        let mut fresh = client(decoder(), &fb);
        round_trip(name, &mut *enc, &mut fresh, &fb, f, &rects, &params);
        // Without the reset on the client side, a stream that started anew is refused
        // (its zlib header is not valid in the middle of a stream).
        if name.starts_with("zlib") || name.starts_with("zrle") {
            enc.reset();
            let pw = PixelWriter::new(f);
            let mut payload = Vec::new();
            enc.encode(&fb, fb.bounds(), &pw, &params, &mut payload);
            let result = c
                .decoder
                .decode(fb.bounds(), &payload, &converter(f), &mut c.fb);
            assert!(result.is_err(), "{name}: a new stream without a reset");
        }
    }
}

/// Inflates each payload's zlib data (after the 4-byte length) through one
/// independent inflater, as one continuous stream.
fn inflate_stream(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut d = Decompress::new(true);
    let mut out = Vec::new();
    for p in payloads {
        let length = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        let data = &p[4..];
        assert_eq!(data.len(), length);
        let mut consumed = 0;
        while consumed < data.len() {
            out.reserve(64 * 1024);
            let before = d.total_in();
            d.decompress_vec(&data[consumed..], &mut out, FlushDecompress::Sync)
                .expect("inflate");
            consumed += (d.total_in() - before) as usize;
        }
    }
    out
}

#[test]
fn bands_on_threads_make_one_stream() {
    // Large enough for several bands of tile rows (and of rows for zlib).
    let (w, h) = (700u16, 400u16);
    let mut fb = synthetic(w, h);
    // Desktop content over the left half, so bands differ and refer back.
    let d = desktop(350, 400);
    for y in 0..400 {
        fb.pixels_mut()[y * 700..y * 700 + 350].copy_from_slice(&d[y * 350..(y + 1) * 350]);
    }
    let rects = [
        fb.bounds(),
        Rect::new(0, 0, 300, 300),
        fb.bounds(),
        Rect::new(5, 7, 690, 380),
    ];
    let f = PixelFormat::RGB888;
    let params = EncodeParams::default();
    let mut c = client(Box::new(ZrleDecoder::default()), &fb);
    let one = round_trip(
        "zrle 1 thread",
        &mut ZrleEncoder::with_threads(1),
        &mut c,
        &fb,
        f,
        &rects,
        &params,
    );
    let one = inflate_stream(&one);
    for threads in [1, 2, 3] {
        // ZRLE: the same tiles whatever the threads; only the deflate blocks differ.
        let mut c = client(Box::new(ZrleDecoder::default()), &fb);
        let name = format!("zrle {threads} threads");
        let zrle = round_trip(
            &name,
            &mut ZrleEncoder::with_threads(threads),
            &mut c,
            &fb,
            f,
            &rects,
            &params,
        );
        assert!(inflate_stream(&zrle) == one, "{name}");
        // Zlib: the inflated stream is the rectangles' Raw encoding.
        let mut c = client(Box::new(ZlibDecoder::default()), &fb);
        let name = format!("zlib {threads} threads");
        let zlib = round_trip(
            &name,
            &mut ZlibEncoder::with_threads(threads),
            &mut c,
            &fb,
            f,
            &rects,
            &params,
        );
        let pw = PixelWriter::new(f);
        let mut raw = Vec::new();
        for &r in &rects {
            RawEncoder.encode(&fb, r, &pw, &params, &mut raw);
        }
        assert!(inflate_stream(&zlib) == raw, "{name}");
    }
}

/// The subencodings of the tiles in inflated ZRLE data for a `width` by `height`
/// rectangle with 3-byte CPIXELs, by subencoding value.
fn zrle_subencodings(data: &[u8], width: usize, height: usize) -> [usize; 256] {
    let mut used = [0usize; 256];
    let mut p = 0;
    let run = |p: &mut usize| {
        let mut len = 1;
        loop {
            let b = data[*p];
            *p += 1;
            len += usize::from(b);
            if b != 255 {
                return len;
            }
        }
    };
    for ty in (0..height).step_by(64) {
        for tx in (0..width).step_by(64) {
            let (tw, th) = (64.min(width - tx), 64.min(height - ty));
            let s = data[p];
            p += 1;
            used[usize::from(s)] += 1;
            match s {
                0 => p += tw * th * 3,
                1 => p += 3,
                2..=16 => {
                    let bits = match s {
                        2 => 1,
                        3 | 4 => 2,
                        _ => 4,
                    };
                    p += usize::from(s) * 3 + (tw * bits).div_ceil(8) * th;
                }
                128 => {
                    let mut left = tw * th;
                    while left > 0 {
                        p += 3;
                        left -= run(&mut p);
                    }
                }
                _ => {
                    p += usize::from(s - 128) * 3;
                    let mut left = tw * th;
                    while left > 0 {
                        let b = data[p];
                        p += 1;
                        left -= if b & 0x80 == 0 { 1 } else { run(&mut p) };
                    }
                }
            }
        }
    }
    assert_eq!(p, data.len());
    used
}

#[test]
fn zrle_uses_every_subencoding() {
    // Tiles of one kind each: the synthetic strips are 64 pixels wide.
    let fb = synthetic(384, 192);
    let pw = PixelWriter::new(PixelFormat::RGB888);
    let mut payload = Vec::new();
    ZrleEncoder::default().encode(
        &fb,
        fb.bounds(),
        &pw,
        &EncodeParams::default(),
        &mut payload,
    );
    let inflated = inflate_stream(&[payload]);
    let used = zrle_subencodings(&inflated, 384, 192);
    let count = |r: std::ops::RangeInclusive<usize>| used[r].iter().sum::<usize>();
    assert!(used[0] > 0, "raw: {used:?}");
    assert!(used[1] > 0, "solid");
    assert!(used[2] > 0, "packed, 1 bit");
    assert!(count(5..=16) > 0, "packed, 4 bits");
    assert!(used[128] > 0, "plain rle");
    assert!(count(130..=255) > 0, "palette rle");
    // Every tile of the long-run strip is plain RLE or packed; runs past 255 and 510
    // pixels round-trip in every_encoder_in_every_format.
}

#[test]
fn zrle_solid_tile_bytes() {
    // A 5x3 rectangle of 0x112233 in RGB888: one solid tile, CPIXEL blue, green, red.
    let mut fb = Framebuffer::new(5, 3);
    fb.pixels_mut().fill(0x0011_2233);
    let pw = PixelWriter::new(PixelFormat::RGB888);
    let mut payload = Vec::new();
    let mut enc = ZrleEncoder::default();
    enc.encode(
        &fb,
        fb.bounds(),
        &pw,
        &EncodeParams::default(),
        &mut payload,
    );
    let length = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    assert_eq!(length as usize, payload.len() - 4);
    // A zlib header for level 2 (FLEVEL 1): 0x78 0x5e, 0x785e a multiple of 31.
    assert_eq!(&payload[4..6], &[0x78, 0x5e]);
    // A sync flush ends the data: an empty stored block, 00 00 ff ff.
    assert_eq!(&payload[payload.len() - 4..], &[0, 0, 0xff, 0xff]);
    assert_eq!(inflate_stream(&[payload.clone()]), [1, 0x33, 0x22, 0x11]);
    // The next rectangle continues the stream: no header.
    let mut second = Vec::new();
    enc.encode(
        &fb,
        Rect::new(1, 1, 2, 2),
        &pw,
        &EncodeParams::default(),
        &mut second,
    );
    assert_ne!(&second[4..6], &[0x78, 0x5e]);
    assert_eq!(
        inflate_stream(&[payload, second]),
        [1, 0x33, 0x22, 0x11, 1, 0x33, 0x22, 0x11]
    );
    // An empty rectangle has no data at all.
    let mut empty = Vec::new();
    enc.encode(
        &fb,
        Rect::new(2, 2, 0, 1),
        &pw,
        &EncodeParams::default(),
        &mut empty,
    );
    assert_eq!(empty, [0, 0, 0, 0]);
}

#[test]
fn zrle_palette_and_run_bytes() {
    const A: u32 = 0x0000_00aa;
    const B: u32 = 0x00bb_0000;
    let encode = |fb: &Framebuffer, format: PixelFormat| {
        let mut payload = Vec::new();
        let pw = PixelWriter::new(format);
        ZrleEncoder::default().encode(fb, fb.bounds(), &pw, &EncodeParams::default(), &mut payload);
        inflate_stream(&[payload])
    };
    // 8x2 in RGB888, a checkerboard of two colours: 16 runs of one pixel. Raw is
    // 1 + 48 bytes, plain RLE 1 + 64, palette RLE 1 + 6 + 16; the packed palette is
    // 1 + 2 * 3 + 2 rows of one byte (A index 0, B index 1).
    let mut fb = Framebuffer::new(8, 2);
    for (i, p) in fb.pixels_mut().iter_mut().enumerate() {
        *p = if (i + i / 8) % 2 == 0 { A } else { B };
    }
    assert_eq!(
        encode(&fb, PixelFormat::RGB888),
        [2, 0xaa, 0, 0, 0, 0, 0xbb, 0b0101_0101, 0b1010_1010]
    );
    // 4x2: A A B A / A A A A, three runs (runs go on from one row to the next): plain
    // RLE is 1 + 3 * 4 bytes, with lengths 2, 1 and 5 written as 1, 0 and 4. The
    // packed palette (9 bytes) is estimated larger: its palette weighs four times.
    let mut fb = Framebuffer::new(4, 2);
    fb.pixels_mut().copy_from_slice(&[A, A, B, A, A, A, A, A]);
    assert_eq!(
        encode(&fb, PixelFormat::RGB888),
        [128, 0xaa, 0, 0, 1, 0, 0, 0xbb, 0, 0xaa, 0, 0, 4]
    );
    // 64x1 of red but the last pixel, blue, in RGB565 (2-byte CPIXELs): plain RLE,
    // 1 + (2 + 1) + (2 + 1) bytes, red 0xf800 and blue 0x001f little-endian.
    let mut fb = Framebuffer::new(64, 1);
    fb.pixels_mut().fill(0x00ff_0000);
    fb.pixels_mut()[63] = 0x0000_00ff;
    assert_eq!(
        encode(&fb, PixelFormat::RGB565),
        [128, 0x00, 0xf8, 62, 0x1f, 0x00, 0]
    );
    // A run of 300 pixels: 299 = 255 + 44.
    let mut fb = Framebuffer::new(64, 5);
    fb.pixels_mut().fill(A);
    fb.pixels_mut()[300..].fill(B);
    assert_eq!(
        encode(&fb, PixelFormat::RGB888),
        [128, 0xaa, 0, 0, 255, 44, 0, 0, 0xbb, 19]
    );
}

#[test]
fn hextile_tile_bytes() {
    // 18x16 in RGB565: tile 0 is 16x16, tile 1 is 2x16.
    const W: u32 = 0x00ff_ffff; // 0xffff
    const K: u32 = 0x0000_0000; // 0x0000
    const R: u32 = 0x00ff_0000; // 0xf800
    let mut fb = Framebuffer::new(18, 16);
    fb.pixels_mut().fill(W);
    let set = |fb: &mut Framebuffer, x: usize, y: usize, c: u32| fb.pixels_mut()[y * 18 + x] = c;
    // Tile 0: white with black at (3, 4) and a black 2x1 at (10, 15).
    set(&mut fb, 3, 4, K);
    set(&mut fb, 10, 15, K);
    set(&mut fb, 11, 15, K);
    // Tile 1: white with black at (1, 0): background and foreground carry over.
    set(&mut fb, 17, 0, K);
    let pw = PixelWriter::new(PixelFormat::RGB565);
    let mut out = Vec::new();
    HextileEncoder::default().encode(&fb, fb.bounds(), &pw, &EncodeParams::default(), &mut out);
    #[rustfmt::skip]
    let expected = [
        // BackgroundSpecified | ForegroundSpecified | AnySubrects.
        2 | 4 | 8, 0xff, 0xff, 0x00, 0x00,
        2, 0x34, 0x00, 0xaf, 0x10,
        // AnySubrects only: x 1, y 0, 1x1.
        8, 1, 0x10, 0x00,
    ];
    assert_eq!(out, expected);

    // A solid tile, then a three-colour tile (coloured subrectangles, same background),
    // then a solid tile of the same background: 1 byte.
    let mut fb = Framebuffer::new(48, 1);
    fb.pixels_mut().fill(W);
    fb.pixels_mut()[16 + 2] = K;
    fb.pixels_mut()[16 + 5] = R;
    let mut out = Vec::new();
    HextileEncoder::default().encode(&fb, fb.bounds(), &pw, &EncodeParams::default(), &mut out);
    #[rustfmt::skip]
    let expected = [
        2, 0xff, 0xff,
        8 | 16, 2, 0x00, 0x00, 0x20, 0x00, 0x00, 0xf8, 0x50, 0x00,
        0,
    ];
    assert_eq!(out, expected);

    // Four colours in single pixels: coloured subrectangles in a wide tile, raw in a
    // narrow one.
    let mut fb = Framebuffer::new(20, 1);
    fb.pixels_mut().fill(W);
    fb.pixels_mut()[..4].copy_from_slice(&[K, R, W, 0x0000_00ff]);
    fb.pixels_mut()[16..20].copy_from_slice(&[K, R, W, 0x0000_00ff]);
    let mut out = Vec::new();
    HextileEncoder::default().encode(&fb, fb.bounds(), &pw, &EncodeParams::default(), &mut out);
    #[rustfmt::skip]
    let expected = [
        // Tile 0 (16x1): background white (13 pixels), coloured subrectangles for
        // black at 0, red at 1 and blue at 3: 1 + 2 + 1 + 3 * 4 = 16 bytes < 33 raw.
        2 | 8 | 16, 0xff, 0xff, 3,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0xf8, 0x10, 0x00,
        0x1f, 0x00, 0x30, 0x00,
        // Tile 1 (4x1), one pixel of each colour: the background would be black (the
        // first of equals), so subrectangles take 1 + 2 + 1 + 3 * 4 bytes; raw takes
        // 1 + 4 * 2.
        1, 0x00, 0x00, 0x00, 0xf8, 0xff, 0xff, 0x1f, 0x00,
    ];
    assert_eq!(out, expected);

    // After a raw tile the background is given again, even if it is the same.
    let mut fb = Framebuffer::new(20, 1);
    fb.pixels_mut().fill(W);
    for (i, p) in fb.pixels_mut()[..16].iter_mut().enumerate() {
        // 16 reds distinct in RGB565: 16 subrectangles would take more than raw.
        *p = (i as u32 * 16) << 16;
    }
    let mut out = Vec::new();
    HextileEncoder::default().encode(&fb, fb.bounds(), &pw, &EncodeParams::default(), &mut out);
    let mut expected = vec![1];
    for &p in &fb.pixels()[..16] {
        pw.write(p, &mut expected);
    }
    expected.extend_from_slice(&[2, 0xff, 0xff]);
    assert_eq!(out, expected);
}

/// The 1920x1080 desktop Xvnc sent in `benches/data/zrle.rfbrec`, and the size of
/// Xvnc's stream for it (ZRLE rectangles, plus a cursor and the update headers).
fn recorded_desktop() -> (Framebuffer, usize) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/data/zrle.rfbrec");
    let bytes = std::fs::read(path).expect("recording present");
    let rec = Recording::parse(&bytes).expect("valid recording");
    (rec.replay().expect("recording decodes"), rec.stream.len())
}

/// CPU time of the whole process so far (all threads), from `/proc/self/stat`, in
/// seconds; 0 where there is no such file.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th fields, in clock ticks of 1/100 s.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Encoding speed and size on the recorded desktop; run with
/// `cargo test --release -p rfb --lib encode::round_trips::throughput -- --ignored --nocapture`.
/// `ENC_LEVELS=2,6` picks zlib levels, `ENC_THREADS=1,2` thread counts.
#[test]
#[ignore]
fn throughput() {
    let (fb, xvnc_bytes) = recorded_desktop();
    let rect = fb.bounds();
    let format = PixelFormat::RGB888;
    let pw = PixelWriter::new(format);
    println!("Xvnc: {xvnc_bytes} bytes/frame (ZRLE)");
    let list = |var: &str, default: &str| -> Vec<String> {
        std::env::var(var)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(str::to_string)
            .collect()
    };
    let levels: Vec<Option<u8>> = list("ENC_LEVELS", "default")
        .iter()
        .map(|l| l.parse().ok())
        .collect();
    let thread_counts: Vec<usize> = list("ENC_THREADS", "1,2")
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect();
    type Make = fn(usize) -> (Box<dyn RectEncoder>, Box<dyn RectDecoder>);
    let encoders: [(&str, Make); 5] = [
        ("zrle", |t| {
            (
                Box::new(ZrleEncoder::with_threads(t)),
                Box::new(ZrleDecoder::default()),
            )
        }),
        ("zlib", |t| {
            (
                Box::new(ZlibEncoder::with_threads(t)),
                Box::new(ZlibDecoder::default()),
            )
        }),
        ("hextile", |_| {
            (
                Box::new(HextileEncoder::default()),
                Box::new(HextileDecoder),
            )
        }),
        ("rre", |_| {
            (Box::new(RreEncoder::default()), Box::new(RreDecoder))
        }),
        ("raw", |_| (Box::new(RawEncoder), Box::new(RawDecoder))),
    ];
    for (name, make) in encoders {
        let threaded = matches!(name, "zrle" | "zlib");
        for &threads in &thread_counts {
            if !threaded && threads > 1 {
                continue;
            }
            for &compress in &levels {
                if !threaded && compress.is_some() {
                    continue;
                }
                let params = EncodeParams {
                    quality: None,
                    compress,
                };
                let (mut enc, mut dec) = make(threads);
                let mut out = Vec::new();
                let rounds = 10;
                let mut best = f64::MAX;
                let cpu_start = process_cpu_seconds();
                for _ in 0..5 {
                    let start = std::time::Instant::now();
                    for _ in 0..rounds {
                        enc.reset();
                        out.clear();
                        enc.encode(&fb, rect, &pw, &params, &mut out);
                    }
                    best = best.min(start.elapsed().as_secs_f64() / f64::from(rounds));
                }
                let cpu = (process_cpu_seconds() - cpu_start) / f64::from(rounds * 5);
                let mut check = Framebuffer::new(fb.width(), fb.height());
                dec.decode(rect, &out, &converter(format), &mut check)
                    .expect("decodes");
                assert!(check.pixels() == fb.pixels(), "{name}");
                println!(
                    "{name:8} level {:>7} threads {threads}: {:6.2} ms/frame (best wall), \
                     {:6.2} ms CPU/frame, {:8} bytes/frame",
                    compress.map_or("default".to_string(), |c| c.to_string()),
                    best * 1e3,
                    cpu * 1e3,
                    out.len()
                );
            }
        }
    }
}
