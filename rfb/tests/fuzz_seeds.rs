//! Hand-built valid inputs for the fuzz targets, so a fuzzer starts deep inside each
//! parser instead of guessing its way past the first length field. Each follows the
//! input layout its oracle in `rfb::fuzzing` documents, with payloads laid out by hand
//! from the RFB community specification.
//!
//! `seeds_are_valid` checks on every test run that each seed is accepted in full;
//! `cargo test -p rfb --test fuzz_seeds -- --ignored` rewrites the kept copies,
//! `tests/data/fuzz_regression/<target>/seed-*`, which the fuzzers take as a corpus
//! and the regression test replays.

use std::io::Write;
use std::path::Path;

use flate2::write::ZlibEncoder;
use flate2::Compression;
use rfb::client::{ClientEvent, ClientSession};
use rfb::decode::{cursor, Decoders, ScanState};
use rfb::handshake::{ClientConfig, ClientHandshake, ServerInit, Step};
use rfb::messages::{parse_screens, ClipboardMessage, Limits, RectHeader, ServerMessage};
use rfb::{Encoding, Framebuffer, Measure, PixelConverter, PixelFormat, Rect};

struct Seed {
    target: &'static str,
    name: &'static str,
    data: Vec<u8>,
}

fn seed(target: &'static str, name: &'static str, data: Vec<u8>) -> Seed {
    Seed { target, name, data }
}

// ---- pixels in the formats the oracles pick (index 0: RGB888, 1: RGB565, 2: BGR233) ----

/// An RGB888 (little-endian 0x00RRGGBB) PIXEL.
fn px(c: u32) -> [u8; 4] {
    c.to_le_bytes()
}

/// An RGB888 ZRLE/TRLE CPIXEL: the three low bytes, least significant first.
fn cpx(c: u32) -> [u8; 3] {
    [c as u8, (c >> 8) as u8, (c >> 16) as u8]
}

/// An RGB888 Tight TPIXEL: R, G, B.
fn tpx(c: u32) -> [u8; 3] {
    [(c >> 16) as u8, (c >> 8) as u8, c as u8]
}

const RED: u32 = 0xff0000;
const GREEN: u32 = 0x00ff00;
const BLUE: u32 = 0x0000ff;
const GREY: u32 = 0x808080;
const WHITE: u32 = 0xffffff;

/// One zlib stream, sync-flushed after each rectangle as VNC servers do.
struct Zlib(ZlibEncoder<Vec<u8>>);

impl Zlib {
    fn new() -> Zlib {
        Zlib(ZlibEncoder::new(Vec::new(), Compression::default()))
    }

    fn sync(&mut self, data: &[u8]) -> Vec<u8> {
        self.0.write_all(data).expect("compress");
        self.0.flush().expect("sync flush");
        std::mem::take(self.0.get_mut())
    }
}

/// A finished zlib stream of its own (ExtendedClipboard provide).
fn zlib_once(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("compress");
    e.finish().expect("finish")
}

fn be32(n: usize) -> [u8; 4] {
    u32::try_from(n).expect("small").to_be_bytes()
}

/// Tight's compact length: 7, 7 and 8 bits, least significant first.
fn compact(n: usize) -> Vec<u8> {
    assert!(n < 1 << 22);
    if n < 0x80 {
        vec![n as u8]
    } else if n < 0x4000 {
        vec![n as u8 | 0x80, (n >> 7) as u8]
    } else {
        vec![n as u8 | 0x80, (n >> 7) as u8 | 0x80, (n >> 14) as u8]
    }
}

fn rgb_samples(colours: &[u32]) -> Vec<u8> {
    colours.iter().flat_map(|&c| tpx(c)).collect()
}

fn jpeg(colours: &[u32], w: u16, h: u16) -> Vec<u8> {
    let samples = rgb_samples(colours);
    let image = turbojpeg::Image {
        pixels: &samples[..],
        width: usize::from(w),
        pitch: usize::from(w) * 3,
        height: usize::from(h),
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 90, turbojpeg::Subsamp::None)
        .expect("jpeg")
        .to_vec()
}

fn png_rgb(colours: &[u32], w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().expect("png header");
    writer
        .write_image_data(&rgb_samples(colours))
        .expect("png data");
    writer.finish().expect("png end");
    out
}

/// `n` pixels cycling through a few colours.
fn stripes(n: usize) -> Vec<u32> {
    (0..n).map(|i| [RED, GREEN, BLUE, WHITE][i % 4]).collect()
}

fn raw_px(colours: &[u32]) -> Vec<u8> {
    colours.iter().flat_map(|&c| px(c)).collect()
}

/// A decode target's input: format index, rectangle, then both payloads.
fn rect_input(format: u8, rect: [u8; 4], payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![format];
    out.extend_from_slice(&rect);
    for p in payloads {
        out.extend_from_slice(p);
    }
    out
}

// ---- encodings ----

fn rre_payload(bg: u32, subrects: &[(u32, [u16; 4])], compact_coords: bool) -> Vec<u8> {
    let mut out = be32(subrects.len()).to_vec();
    out.extend_from_slice(&px(bg));
    for &(c, [x, y, w, h]) in subrects {
        out.extend_from_slice(&px(c));
        for v in [x, y, w, h] {
            if compact_coords {
                out.push(v as u8);
            } else {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    out
}

/// Hextile 20x18: tiles 16x16, 4x16, 16x2, 4x2.
fn hextile_20x18() -> Vec<u8> {
    let mut out = Vec::new();
    // Background, foreground and two subrectangles in the foreground colour.
    out.push(2 | 4 | 8);
    out.extend_from_slice(&px(GREY));
    out.extend_from_slice(&px(RED));
    out.push(2);
    out.extend_from_slice(&[0x11, 0x33]); // at 1,1, 4x4
    out.extend_from_slice(&[0x88, 0x71]); // at 8,8, 8x2

    // New background, one coloured subrectangle: the tile's left column.
    out.push(2 | 8 | 16);
    out.extend_from_slice(&px(BLUE));
    out.push(1);
    out.extend_from_slice(&px(GREEN));
    out.extend_from_slice(&[0x00, 0x0f]); // at 0,0, 1x16

    // Nothing: the background carries over.
    out.push(0);

    // Raw 4x2.
    out.push(1);
    out.extend_from_slice(&raw_px(&stripes(8)));
    out
}

fn hextile_plain_20x18() -> Vec<u8> {
    let mut out = Vec::new();
    for c in [RED, GREEN, BLUE, WHITE] {
        out.push(2);
        out.extend_from_slice(&px(c));
    }
    out
}

/// ZRLE and TRLE tiles for `w x h` pixels in RGB888.
mod tiles {
    use super::*;

    pub fn raw(colours: &[u32]) -> Vec<u8> {
        let mut out = vec![0];
        for &c in colours {
            out.extend_from_slice(&cpx(c));
        }
        out
    }

    pub fn solid(c: u32) -> Vec<u8> {
        let mut out = vec![1];
        out.extend_from_slice(&cpx(c));
        out
    }

    /// Packed palette, 1 bit per index (2 colours), rows padded to bytes.
    pub fn packed2(
        palette: [u32; 2],
        w: usize,
        h: usize,
        index: impl Fn(usize, usize) -> u8,
    ) -> Vec<u8> {
        let mut out = vec![2];
        out.extend_from_slice(&cpx(palette[0]));
        out.extend_from_slice(&cpx(palette[1]));
        out.extend_from_slice(&packed_bits(w, h, &index));
        out
    }

    pub fn packed_bits(w: usize, h: usize, index: &impl Fn(usize, usize) -> u8) -> Vec<u8> {
        let mut out = Vec::new();
        for y in 0..h {
            for byte in 0..w.div_ceil(8) {
                let mut b = 0u8;
                for bit in 0..8 {
                    let x = byte * 8 + bit;
                    if x < w && index(x, y) != 0 {
                        b |= 0x80 >> bit;
                    }
                }
                out.push(b);
            }
        }
        out
    }

    /// A run length: one more than the sum of its bytes, which go on while 255.
    pub fn run(mut n: usize) -> Vec<u8> {
        assert!(n > 0);
        n -= 1;
        let mut out = vec![255; n / 255];
        out.push((n % 255) as u8);
        out
    }

    /// Plain RLE: (colour, length) runs.
    pub fn plain_rle(runs: &[(u32, usize)]) -> Vec<u8> {
        let mut out = vec![128];
        for &(c, n) in runs {
            out.extend_from_slice(&cpx(c));
            out.extend_from_slice(&run(n));
        }
        out
    }

    /// Palette RLE: palette, then (index, length) runs (single pixels without a length).
    pub fn palette_rle(palette: &[u32], runs: &[(u8, usize)]) -> Vec<u8> {
        let mut out = vec![128 + palette.len() as u8];
        for &c in palette {
            out.extend_from_slice(&cpx(c));
        }
        for &(i, n) in runs {
            if n == 1 {
                out.push(i);
            } else {
                out.push(0x80 | i);
                out.extend_from_slice(&run(n));
            }
        }
        out
    }
}

fn zrle_rect(z: &mut Zlib, tiles: &[Vec<u8>]) -> Vec<u8> {
    let data = z.sync(&tiles.concat());
    let mut out = be32(data.len()).to_vec();
    out.extend_from_slice(&data);
    out
}

/// Tight BasicCompression data: sent as is under 12 bytes, else compact length + zlib.
fn tight_data(z: &mut Zlib, filtered: &[u8]) -> Vec<u8> {
    if filtered.len() < 12 {
        return filtered.to_vec();
    }
    let data = z.sync(filtered);
    let mut out = compact(data.len());
    out.extend_from_slice(&data);
    out
}

fn tight_image(control: u8, image: &[u8]) -> Vec<u8> {
    let mut out = vec![control];
    out.extend_from_slice(&compact(image.len()));
    out.extend_from_slice(image);
    out
}

fn decode_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();

    // Raw: 4x2 RGB888 twice; 3x3 RGB565; 5x1 BGR233.
    seeds.push(seed(
        "decode_raw",
        "seed-rgb888-4x2",
        rect_input(0, [3, 5, 4, 2], &[raw_px(&stripes(8)), raw_px(&[GREY; 8])]),
    ));
    let rgb565: Vec<u8> = (0..18u8).map(|i| i.wrapping_mul(37)).collect();
    seeds.push(seed(
        "decode_raw",
        "seed-rgb565-3x3",
        rect_input(1, [0, 0, 3, 3], &[rgb565]),
    ));
    seeds.push(seed(
        "decode_raw",
        "seed-bgr233-5x1",
        rect_input(2, [59, 63, 5, 1], &[vec![0x07, 0x38, 0xc0, 0xff, 0x00]]),
    ));

    // CopyRect: apart, then overlapping.
    seeds.push(seed(
        "decode_copyrect",
        "seed-apart",
        rect_input(0, [10, 10, 8, 8], &[vec![0, 0, 0, 4], vec![0, 40, 0, 50]]),
    ));
    seeds.push(seed(
        "decode_copyrect",
        "seed-overlapping",
        rect_input(0, [1, 1, 20, 20], &[vec![0, 0, 0, 0], vec![0, 2, 0, 1]]),
    ));

    // RRE and CoRRE: two subrectangles, then a background alone.
    let subrects = [(RED, [1, 1, 4, 3]), (GREEN, [8, 2, 8, 10])];
    seeds.push(seed(
        "decode_rre",
        "seed-two-subrects",
        rect_input(
            0,
            [4, 4, 16, 12],
            &[
                rre_payload(GREY, &subrects, false),
                rre_payload(BLUE, &[], false),
            ],
        ),
    ));
    seeds.push(seed(
        "decode_corre",
        "seed-two-subrects",
        rect_input(
            0,
            [4, 4, 16, 12],
            &[
                rre_payload(GREY, &subrects, true),
                rre_payload(BLUE, &[], true),
            ],
        ),
    ));

    // Hextile: every subencoding over four tiles, then backgrounds only.
    seeds.push(seed(
        "decode_hextile",
        "seed-20x18-all-subencodings",
        rect_input(0, [2, 3, 20, 18], &[hextile_20x18(), hextile_plain_20x18()]),
    ));
    // 8 bpp BGR233, one 5x4 tile: coloured subrectangles.
    seeds.push(seed(
        "decode_hextile",
        "seed-bgr233-coloured-subrects",
        rect_input(
            2,
            [0, 0, 5, 4],
            &[vec![
                2 | 8 | 16,
                0x00,
                3,
                0x07,
                0x00,
                0x10,
                0x38,
                0x22,
                0x11,
                0xc0,
                0x40,
                0x03,
            ]],
        ),
    ));

    // Zlib: two rectangles through one stream.
    let mut z = Zlib::new();
    let zlib = |z: &mut Zlib, pixels: &[u32]| {
        let data = z.sync(&raw_px(pixels));
        let mut out = be32(data.len()).to_vec();
        out.extend_from_slice(&data);
        out
    };
    let first = zlib(&mut z, &stripes(32));
    let second = zlib(&mut z, &[GREY; 32]);
    seeds.push(seed(
        "decode_zlib",
        "seed-8x4-twice",
        rect_input(0, [0, 0, 8, 4], &[first, second]),
    ));

    // Tight: fill, then copy filter through stream 0 (compressed, 8x8).
    let mut z0 = Zlib::new();
    let mut copy = vec![0x40, 0x00]; // stream 0, filter-id follows: copy
    copy.extend(tight_data(&mut z0, &rgb_samples(&stripes(64))));
    let mut fill = vec![0x80];
    fill.extend_from_slice(&tpx(GREY));
    seeds.push(seed(
        "decode_tight",
        "seed-fill-then-copy",
        rect_input(0, [1, 1, 8, 8], &[fill, copy]),
    ));
    // Palette of 2 (1 bit per pixel, under 12 bytes: not compressed), then a palette of
    // 3 (a byte per pixel, compressed) through stream 1.
    let mut z1 = Zlib::new();
    let mut pal2 = vec![0x50, 0x01, 1];
    pal2.extend_from_slice(&tpx(RED));
    pal2.extend_from_slice(&tpx(BLUE));
    pal2.extend_from_slice(&[0b1010_0101, 0b0101_1010]);
    let mut pal3 = vec![0x50, 0x01, 2];
    for c in [RED, GREEN, BLUE] {
        pal3.extend_from_slice(&tpx(c));
    }
    pal3.extend(tight_data(
        &mut z1,
        &[0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 0, 2, 1, 0, 2, 1],
    ));
    seeds.push(seed(
        "decode_tight",
        "seed-palettes",
        rect_input(0, [0, 0, 8, 2], &[pal2, pal3]),
    ));
    // Gradient filter through stream 2 (after resetting it), then JPEG.
    let mut z2 = Zlib::new();
    let mut gradient = vec![0x64, 0x02];
    let residuals: Vec<u8> = (0..48u8).map(|i| i % 5).collect();
    gradient.extend(tight_data(&mut z2, &residuals));
    let image: Vec<u32> = (0..16).map(|i| 0x101010 * i).collect();
    seeds.push(seed(
        "decode_tight",
        "seed-gradient-then-jpeg",
        rect_input(
            0,
            [20, 30, 4, 4],
            &[gradient, tight_image(0x90, &jpeg(&image, 4, 4))],
        ),
    ));
    // The same rectangles in RGB565: TPIXELs are then 2-byte PIXELs.
    let mut fill565 = vec![0x80];
    fill565.extend_from_slice(&0xf800u16.to_le_bytes());
    let mut raw565 = vec![0x00];
    raw565.extend_from_slice(&[0x1f, 0x00, 0xe0, 0x07]);
    seeds.push(seed(
        "decode_tight",
        "seed-rgb565-fill-then-small-copy",
        rect_input(1, [0, 0, 2, 1], &[fill565, raw565]),
    ));

    // TightPNG: PNG, then fill.
    let mut fill = vec![0x80];
    fill.extend_from_slice(&tpx(GREEN));
    seeds.push(seed(
        "decode_tightpng",
        "seed-png-then-fill",
        rect_input(
            0,
            [5, 5, 4, 4],
            &[tight_image(0xa0, &png_rgb(&stripes(16), 4, 4)), fill],
        ),
    ));
    seeds.push(seed(
        "decode_tightpng",
        "seed-jpeg",
        rect_input(
            0,
            [0, 0, 8, 2],
            &[tight_image(0x90, &jpeg(&stripes(16), 8, 2))],
        ),
    ));

    // ZRLE 70x10: tiles 64x10 and 6x10 through one stream.
    let mut z = Zlib::new();
    let first = zrle_rect(
        &mut z,
        &[
            tiles::palette_rle(&[RED, BLUE], &[(0, 300), (1, 1), (0, 1), (1, 338)]),
            tiles::packed2([GREEN, WHITE], 6, 10, |x, y| ((x + y) % 2) as u8),
        ],
    );
    let second = zrle_rect(
        &mut z,
        &[
            tiles::solid(GREY),
            tiles::plain_rle(&[(RED, 20), (GREEN, 40)]),
        ],
    );
    seeds.push(seed(
        "decode_zrle",
        "seed-70x10-palette-rle-packed-solid-plain-rle",
        rect_input(0, [0, 0, 70, 10], &[first, second]),
    ));
    let mut z = Zlib::new();
    let raw = zrle_rect(&mut z, &[tiles::raw(&stripes(15))]);
    seeds.push(seed(
        "decode_zrle",
        "seed-5x3-raw",
        rect_input(0, [50, 50, 5, 3], &[raw]),
    ));

    // TRLE 20x4: tiles 16x4 and 4x4.
    let first = [
        tiles::packed2([RED, GREEN], 16, 4, |x, _| (x / 3 % 2) as u8),
        // 127: packed with the previous palette.
        [
            vec![127],
            tiles::packed_bits(4, 4, &|x, y| ((x ^ y) & 1) as u8),
        ]
        .concat(),
    ]
    .concat();
    let second = [
        tiles::solid(BLUE),
        // 129: palette RLE with the solid tile's palette of one.
        vec![129, 0x80, 15],
    ]
    .concat();
    seeds.push(seed(
        "decode_trle",
        "seed-20x4-packed-reuse-solid-rle-reuse",
        rect_input(0, [3, 3, 20, 4], &[first, second]),
    ));
    let third = [
        tiles::plain_rle(&[(WHITE, 7), (RED, 9)]),
        tiles::palette_rle(&[GREEN, BLUE, RED], &[(2, 1), (0, 5), (1, 10)]),
        tiles::raw(&stripes(4)),
    ]
    .concat();
    seeds.push(seed(
        "decode_trle",
        "seed-36x1-plain-rle-palette-rle-raw",
        rect_input(0, [0, 60, 36, 1], &[third]),
    ));

    seeds
}

fn cursor_seeds() -> Vec<Seed> {
    // Bitmask cursor 4x3 at hotspot (2, 1): pixels, then a byte of mask per row.
    let mut bitmask = vec![0, 2, 1, 4, 3, 0];
    bitmask.extend(raw_px(&stripes(12)));
    bitmask.extend_from_slice(&[0b1001_0000, 0b0110_0000, 0b1111_0000]);
    // Alpha cursor 2x2: encoding Raw, then premultiplied R, G, B, A.
    let mut alpha = vec![0, 1, 1, 2, 2, 1];
    alpha.extend_from_slice(&[0, 0, 0, 0]);
    alpha.extend_from_slice(&[255, 0, 0, 255, 64, 0, 0, 128, 0, 0, 0, 0, 10, 20, 30, 40]);
    // 9 bits wide in RGB565: two mask bytes per row.
    let mut wide = vec![1, 0, 0, 9, 1, 0];
    for i in 0..9u16 {
        wide.extend_from_slice(&(i * 0x1111).to_le_bytes());
    }
    wide.extend_from_slice(&[0xff, 0x80]);
    vec![
        seed("cursor", "seed-bitmask-4x3", bitmask),
        seed("cursor", "seed-alpha-2x2", alpha),
        seed("cursor", "seed-rgb565-9x1", wide),
    ]
}

fn provide_text(text: &[u8]) -> Vec<u8> {
    let mut data = be32(text.len()).to_vec();
    data.extend_from_slice(text);
    let mut payload = (ClipboardMessage::PROVIDE | ClipboardMessage::TEXT)
        .to_be_bytes()
        .to_vec();
    payload.extend(zlib_once(&data));
    payload
}

fn cut_text(length: i32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![3, 0, 0, 0];
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn server_message_seeds() -> Vec<Seed> {
    let provide = provide_text(b"copy\npaste\0");
    let caps = [0x1f, 0, 0, 0x03, 0, 0x10, 0, 0, 0, 0, 0x10, 0].to_vec();
    let screens = [
        [2, 0, 0, 0].as_slice(),
        &[0, 0, 0, 1, 0, 0, 0, 0, 0x07, 0x80, 0x04, 0x38, 0, 0, 0, 0],
        &[0, 0, 0, 2, 0x07, 0x80, 0, 0, 0x05, 0, 0x04, 0, 0, 0, 0, 0],
    ]
    .concat();
    vec![
        seed(
            "server_message",
            "seed-framebuffer-update",
            vec![0, 0, 0, 3],
        ),
        seed(
            "server_message",
            "seed-set-colour-map-entries",
            vec![
                1, 0, 0, 16, 0, 2, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x80, 0, 0xff, 0xff,
            ],
        ),
        seed("server_message", "seed-bell", vec![2]),
        seed(
            "server_message",
            "seed-cut-text-latin1",
            cut_text(5, b"hello"),
        ),
        seed(
            "server_message",
            "seed-cut-text-provide",
            cut_text(-(provide.len() as i32), &provide),
        ),
        seed(
            "server_message",
            "seed-cut-text-caps",
            cut_text(-(caps.len() as i32), &caps),
        ),
        seed(
            "server_message",
            "seed-end-of-continuous-updates",
            vec![150],
        ),
        seed(
            "server_message",
            "seed-server-fence",
            vec![248, 0, 0, 0, 0x80, 0, 0, 0x07, 2, 0xca, 0xfe],
        ),
        seed("server_message", "seed-xvp", vec![250, 0, 1, 1]),
        seed(
            "server_message",
            "seed-rect-header",
            vec![0, 10, 0, 20, 0x02, 0x80, 0x01, 0xe0, 0, 0, 0, 16],
        ),
        seed("server_message", "seed-screens", screens),
        seed("server_message", "seed-clipboard-provide", provide),
        seed(
            "server_message",
            "seed-clipboard-request",
            vec![0x02, 0, 0, 0x01],
        ),
    ]
}

/// A FramebufferUpdate header and its rectangles (header, payload).
fn update(count: u16, rects: &[(Rect, Encoding, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0, 0];
    out.extend_from_slice(&count.to_be_bytes());
    for (rect, encoding, payload) in rects {
        RectHeader {
            rect: *rect,
            encoding: *encoding,
        }
        .write(&mut out);
        out.extend_from_slice(payload);
    }
    out
}

fn server_stream_seeds() -> Vec<Seed> {
    // Format 0 (RGB888) in the high nibble, chunk index in the low one.
    let mut pixels = vec![0x02];
    let mut hextile = vec![2 | 8 | 16];
    hextile.extend_from_slice(&px(GREY));
    hextile.push(1);
    hextile.extend_from_slice(&px(GREEN));
    hextile.extend_from_slice(&[0x22, 0x44]);
    let mut cursor = raw_px(&stripes(4));
    cursor.extend_from_slice(&[0b1000_0000, 0b0100_0000]);
    let mut name = be32(4).to_vec();
    name.extend_from_slice(b"desk");
    pixels.extend(update(
        6,
        &[
            (Rect::new(0, 0, 4, 4), Encoding::RAW, raw_px(&stripes(16))),
            (
                Rect::new(10, 10, 4, 4),
                Encoding::COPY_RECT,
                vec![0, 0, 0, 0],
            ),
            (Rect::new(16, 16, 16, 16), Encoding::HEXTILE, hextile),
            (
                Rect::new(40, 0, 8, 8),
                Encoding::RRE,
                rre_payload(RED, &[(BLUE, [1, 1, 2, 2])], false),
            ),
            (Rect::new(1, 1, 2, 2), Encoding::CURSOR, cursor),
            (Rect::new(0, 0, 0, 0), Encoding::DESKTOP_NAME, name),
        ],
    ));
    pixels.push(2); // Bell

    let mut compressed = vec![0x05];
    let mut z = Zlib::new();
    let zrle = zrle_rect(
        &mut z,
        &[tiles::palette_rle(&[RED, GREEN], &[(0, 100), (1, 100)])],
    );
    let mut z0 = Zlib::new();
    let mut tight = vec![0x40, 0x00];
    tight.extend(tight_data(&mut z0, &rgb_samples(&stripes(16))));
    let trle = [tiles::solid(BLUE), vec![127], tiles::raw(&stripes(2))].concat();
    compressed.extend(update(
        0xffff,
        &[
            (Rect::new(0, 0, 20, 10), Encoding::ZRLE, zrle),
            (Rect::new(30, 30, 4, 4), Encoding::TIGHT, tight),
            (Rect::new(0, 40, 34, 1), Encoding::TRLE, trle),
            (Rect::new(0, 0, 0, 0), Encoding::LAST_RECT, vec![]),
        ],
    ));
    compressed.extend(update(0, &[]));

    let mut messages = vec![0x31];
    messages.extend_from_slice(&[
        1, 0, 0, 0, 0, 2, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0,
    ]);
    messages.extend(cut_text(2, b"hi"));
    messages.extend_from_slice(&[248, 0, 0, 0, 0x80, 0, 0, 0x03, 0]);
    messages.extend_from_slice(&[250, 0, 1, 1]);
    messages.extend_from_slice(&[150]);
    let screens = [
        [1, 0, 0, 0].as_slice(),
        &[0, 0, 0, 1, 0, 0, 0, 0, 0, 32, 0, 24, 0, 0, 0, 0],
    ]
    .concat();
    let mut alpha = vec![0, 0, 0, 0];
    alpha.extend_from_slice(&[255, 255, 255, 255]);
    messages.extend(update(
        6,
        &[
            (
                Rect::new(0, 0, 32, 24),
                Encoding::EXTENDED_DESKTOP_SIZE,
                screens,
            ),
            (Rect::new(0, 0, 2, 2), Encoding::RAW, vec![0, 1, 1, 0]),
            (Rect::new(0, 0, 1, 1), Encoding::CURSOR_WITH_ALPHA, alpha),
            (Rect::new(0, 0, 0, 0), Encoding::QEMU_LED_STATE, vec![5]),
            (Rect::new(0, 0, 40, 30), Encoding::DESKTOP_SIZE, vec![]),
            (Rect::new(0, 0, 0, 0), Encoding::KVMUX_ZLIB_RESET, vec![]),
        ],
    ));

    vec![
        seed(
            "server_stream",
            "seed-update-raw-copyrect-hextile-rre-cursor-name",
            pixels,
        ),
        seed(
            "server_stream",
            "seed-update-zrle-tight-trle-lastrect",
            compressed,
        ),
        seed(
            "server_stream",
            "seed-colour-map-messages-and-resizes",
            messages,
        ),
    ]
}

const SERVER_INIT: [u8; 28] = [
    0, 64, 0, 48, // 64 x 48
    32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0, // RGB888
    0, 0, 0, 4, b'f', b'u', b'z', b'z',
];

fn client_handshake_seeds() -> Vec<Seed> {
    // Byte 0: 0x80 shared, 0x40 plain without TLS allowed, low bits the chunk size - 1.
    let hs = |first: u8, parts: &[&[u8]]| {
        let mut out = vec![first];
        out.extend(parts.concat());
        out
    };
    let challenge: Vec<u8> = (0..16).collect();
    let x509_plain = 262u32.to_be_bytes();
    let plain = 256u32.to_be_bytes();
    vec![
        seed(
            "client_handshake",
            "seed-3.8-none",
            hs(
                0x80,
                &[b"RFB 003.008\n", &[1, 1], &[0, 0, 0, 0], &SERVER_INIT],
            ),
        ),
        seed(
            "client_handshake",
            "seed-3.3-none",
            hs(0x05, &[b"RFB 003.003\n", &[0, 0, 0, 1], &SERVER_INIT]),
        ),
        seed(
            "client_handshake",
            "seed-3.8-vnc-auth",
            hs(
                0x82,
                &[
                    b"RFB 003.008\n",
                    &[2, 1, 2],
                    &challenge,
                    &[0, 0, 0, 0],
                    &SERVER_INIT,
                ],
            ),
        ),
        seed(
            "client_handshake",
            "seed-3.7-vnc-auth",
            hs(
                0x8b,
                &[
                    b"RFB 003.007\n",
                    &[1, 2],
                    &challenge,
                    &[0, 0, 0, 0],
                    &SERVER_INIT,
                ],
            ),
        ),
        seed(
            "client_handshake",
            "seed-3.8-vencrypt-x509plain",
            hs(
                0x83,
                &[
                    b"RFB 003.008\n",
                    &[2, 2, 19],
                    &[0, 2],
                    &[0],
                    &[2],
                    &plain,
                    &x509_plain,
                    &[1],
                    &[0, 0, 0, 0],
                    &SERVER_INIT,
                ],
            ),
        ),
        seed(
            "client_handshake",
            "seed-3.8-vencrypt-plain-without-tls",
            hs(
                0xc1,
                &[
                    b"RFB 003.008\n",
                    &[1, 19],
                    &[0, 2],
                    &[0],
                    &[1],
                    &plain,
                    &[0, 0, 0, 0],
                    &SERVER_INIT,
                ],
            ),
        ),
        seed(
            "client_handshake",
            "seed-3.8-auth-failed-with-reason",
            hs(
                0x84,
                &[
                    b"RFB 003.008\n",
                    &[1, 2],
                    &challenge,
                    &[0, 0, 0, 1],
                    &[0, 0, 0, 3],
                    b"no!",
                ],
            ),
        ),
    ]
}

fn all_seeds() -> Vec<Seed> {
    let mut seeds = decode_seeds();
    seeds.extend(cursor_seeds());
    seeds.extend(server_message_seeds());
    seeds.extend(server_stream_seeds());
    seeds.extend(client_handshake_seeds());
    seeds.extend(client_side_seeds());
    seeds.extend(round_trip_seeds());
    seeds
}

/// The image part of a round-trip input (see `rfb::fuzzing`'s `draw`): four palette
/// colours, then runs, palette pixels, new colours and photo-like steps.
fn round_trip_image() -> Vec<u8> {
    let mut b = vec![4];
    for c in [0x1d3557u32, 0xf8f9fa, 0x111111, 0x33ff66] {
        b.extend_from_slice(&c.to_be_bytes()[1..]);
    }
    b.extend_from_slice(&[
        0x3f, 0x3f, 0x41, 0x42, 0x02, 0x43, 0x40, 0x3f, 0x80, 0x12, 0x34, 0x56,
    ]);
    b.extend(std::iter::repeat_n(0xc0 | 0x1b, 40));
    b.extend_from_slice(&[0x41, 0x07, 0x42, 0x03, 0x43, 0x3f, 0x3f]);
    b
}

/// Round-trip inputs: pixel format bytes (RGB888 = 2, 191, 7; RGB565 = 1, 172, 4;
/// the 8-bit colour map = 7, 0, 0), width and height less one, compression and
/// quality levels, the second rectangle, then the image.
fn round_trip_seeds() -> Vec<Seed> {
    let input = |format: [u8; 3], size: [u8; 2], levels: [u8; 2], second: [u8; 4]| {
        let mut b = format.to_vec();
        b.extend_from_slice(&size);
        b.extend_from_slice(&levels);
        b.extend_from_slice(&second);
        b.extend(round_trip_image());
        b
    };
    let mut seeds = Vec::new();
    for target in [
        "roundtrip_raw",
        "roundtrip_copyrect",
        "roundtrip_rre",
        "roundtrip_hextile",
        "roundtrip_zlib",
        "roundtrip_zrle",
        "roundtrip_tight",
        "roundtrip_tight_jpeg",
        "roundtrip_cursor",
    ] {
        seeds.push(seed(
            target,
            "seed-rgb888-80x60",
            input([2, 191, 7], [79, 59], [2, 8], [5, 7, 30, 20]),
        ));
        seeds.push(seed(
            target,
            "seed-rgb565-33x17",
            input([1, 172, 4], [32, 16], [6, 3], [1, 2, 9, 4]),
        ));
        seeds.push(seed(
            target,
            "seed-colourmap-20x9",
            input([7, 0, 0], [19, 8], [15, 15], [0, 0, 3, 3]),
        ));
    }
    seeds
}

fn check_round_trip(data: &[u8]) -> Result<(), String> {
    let format = rfb::fuzzing::derived_format(data[0], data[1], data[2]);
    let expected = match data[..3] {
        [2, 191, 7] => PixelFormat::RGB888,
        [1, 172, 4] => PixelFormat::RGB565,
        [7, 0, 0] => PixelFormat::COLOURMAP8,
        _ => return Err("not a seed's format".into()),
    };
    if format != Some(expected) {
        return Err(format!("format {format:?}, not {expected:?}"));
    }
    if data.len() <= 11 {
        return Err("no image".into());
    }
    Ok(())
}

/// Client messages, alone and as a session a server sees.
fn client_side_seeds() -> Vec<Seed> {
    let key = vec![4, 1, 0, 0, 0, 0, 0, 0x61];
    let encodings = vec![
        2, 0, 0, 3, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0x21, 0, 0, 0, 0x10,
    ];
    // Chunks of 76 bytes, xvp on: SetEncodings [ZRLE, Tight, DesktopSize], a full
    // request, a key, a pointer, an incremental request.
    let mut session = vec![
        0x1f, 2, 0, 0, 3, 0, 0, 0, 0x10, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0x21,
    ];
    session.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0x40, 0, 0x30]);
    session.extend_from_slice(&key);
    session.extend_from_slice(&[5, 1, 0, 0x10, 0, 0x10]);
    session.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0x40, 0, 0x30]);
    vec![
        seed("client_message", "seed-key-event", key),
        seed("client_message", "seed-set-encodings", encodings),
        seed("client_stream", "seed-session", session),
    ]
}

fn check_client_message(data: &[u8]) -> Result<(), String> {
    match rfb::messages::ClientMessage::parse(data, &rfb::messages::Limits::default()) {
        Ok((_, used)) if used == data.len() => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

fn check_client_stream(data: &[u8]) -> Result<(), String> {
    let mut session = rfb::server::ServerSession::new(64, 48, PixelFormat::RGB888, "seed");
    session
        .feed(data.get(1..).unwrap_or_default(), &mut Vec::new())
        .map_err(|e| e.to_string())
}

// ---- validity: each seed is accepted in full ----

const FORMATS: [PixelFormat; 3] = [
    PixelFormat::RGB888,
    PixelFormat::RGB565,
    PixelFormat::BGR233,
];

fn check_decode(encoding: Encoding, data: &[u8]) -> Result<(), String> {
    let conv = PixelConverter::new(FORMATS[usize::from(data[0])]);
    let rect = Rect::new(
        data[1].into(),
        data[2].into(),
        data[3].into(),
        data[4].into(),
    );
    let mut fb = Framebuffer::new(72, 72);
    let mut decoders = Decoders::default();
    let decoder = decoders.get_mut(encoding).ok_or("no decoder")?;
    let mut payload = &data[5..];
    while !payload.is_empty() {
        let len = match decoder.measure(rect, &conv, payload, &mut ScanState::default()) {
            Ok(Measure::Complete(len)) => len,
            other => return Err(format!("measure: {other:?}")),
        };
        decoder
            .decode(rect, &payload[..len], &conv, &mut fb)
            .map_err(|e| e.to_string())?;
        payload = &payload[len..];
    }
    Ok(())
}

fn check_cursor(data: &[u8]) -> Result<(), String> {
    let conv = PixelConverter::new(FORMATS[usize::from(data[0])]);
    let rect = Rect::new(
        data[1].into(),
        data[2].into(),
        data[3].into(),
        data[4].into(),
    );
    let payload = &data[6..];
    let (measured, decoded) = if data[5] & 1 != 0 {
        (
            cursor::measure_alpha_cursor(rect, payload),
            cursor::decode_alpha_cursor(rect, payload),
        )
    } else {
        (
            cursor::measure_cursor(rect, &conv, payload),
            cursor::decode_cursor(rect, payload, &conv),
        )
    };
    if measured != Ok(Measure::Complete(payload.len())) {
        return Err(format!("measure: {measured:?}"));
    }
    decoded.map(|_| ()).map_err(|e| e.to_string())
}

fn check_server_message(data: &[u8]) -> Result<(), String> {
    let limits = Limits::default();
    let whole = |r: Option<usize>| r == Some(data.len());
    if whole(ServerMessage::parse(data, &limits).ok().map(|(_, n)| n))
        || whole(RectHeader::parse(data).ok().map(|(_, n)| n))
        || whole(parse_screens(data).ok().map(|(_, n)| n))
        || ClipboardMessage::parse(data, &limits).is_ok()
    {
        Ok(())
    } else {
        Err("no parser takes it whole".into())
    }
}

fn check_server_stream(data: &[u8]) -> Result<(), String> {
    let formats = [
        PixelFormat::RGB888,
        PixelFormat::RGB565,
        PixelFormat::BGR233,
        PixelFormat::COLOURMAP8,
    ];
    let init = ServerInit {
        width: 64,
        height: 48,
        pixel_format: formats[usize::from(data[0] >> 4)],
        name: String::new(),
    };
    let mut session = ClientSession::new(&init);
    session.feed(&data[1..]).map_err(|e| e.to_string())?;
    let mut updates = 0;
    while let Some(event) = session.poll_event() {
        updates += usize::from(event == ClientEvent::UpdateComplete);
    }
    if updates == 0 {
        return Err("no update completed".into());
    }
    Ok(())
}

fn check_client_handshake(data: &[u8]) -> Result<(), String> {
    let config = ClientConfig {
        shared: data[0] & 0x80 != 0,
        username: Some("user".into()),
        password: Some("secret".into()),
        allow_tls: true,
        allow_plain_without_tls: data[0] & 0x40 != 0,
    };
    let mut hs = ClientHandshake::new(config);
    let mut buf = &data[1..];
    loop {
        match hs.step(buf, &mut Vec::new()) {
            Ok(Step::Done { .. }) => return Ok(()),
            Ok(Step::StartTls { consumed }) => buf = &buf[consumed..],
            Ok(Step::Continue { .. }) => return Err("waits for more".into()),
            // A refusal the seed was built to reach.
            Err(e) if e.to_string().contains("authentication failed: no!") => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn check(seed: &Seed) -> Result<(), String> {
    if let Some(name) = seed.target.strip_prefix("decode_") {
        let encoding = Encoding::from_name(name).ok_or("unknown encoding")?;
        return check_decode(encoding, &seed.data);
    }
    match seed.target {
        "cursor" => check_cursor(&seed.data),
        "server_message" => check_server_message(&seed.data),
        "server_stream" => check_server_stream(&seed.data),
        "client_handshake" => check_client_handshake(&seed.data),
        "client_message" => check_client_message(&seed.data),
        "client_stream" => check_client_stream(&seed.data),
        t if t.starts_with("roundtrip_") => check_round_trip(&seed.data),
        other => Err(format!("no check for {other}")),
    }
}

#[test]
fn seeds_are_valid() {
    let seeds = all_seeds();
    for s in &seeds {
        if let Err(e) = check(s) {
            panic!("{}/{}: {e}", s.target, s.name);
        }
        // Each is also an input its oracle accepts quietly.
        rfb::fuzzing::run(s.target, &s.data);
    }
    for (target, _) in rfb::fuzzing::TARGETS {
        assert!(
            seeds.iter().any(|s| s.target == *target),
            "no seed for {target}"
        );
    }
}

#[test]
#[ignore = "rewrites the kept seeds"]
fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz_regression");
    for s in all_seeds() {
        let dir = root.join(s.target);
        std::fs::create_dir_all(&dir).expect("create seed directory");
        std::fs::write(dir.join(s.name), &s.data).expect("write seed");
    }
}
