//! Tight (7) encoder: the server side of [`decode::tight`](crate::decode::tight).
//!
//! Spec: [Tight Encoding] in the RFB community specification.
//!
//! Each rectangle is classified by counting its colours (stopping as soon as there
//! are too many for a palette) and sent much as TigerVNC's `EncodeManager` and
//! `TightEncoder` send it:
//!
//! - one colour: **FillCompression**, `0x80` and one `TPIXEL`;
//! - two colours: the palette filter with a 1-bit bitmap, on zlib stream 1;
//! - up to a palette limit (TigerVNC's: 256 colours, fewer for small areas): the
//!   palette filter with 8-bit indices, on zlib stream 2;
//! - more: **JpegCompression** when the client asked for a quality level and the
//!   pixel format has 16 or 32 bits per pixel, else the gradient filter (true colour
//!   at 16 or 32 bits per pixel) or the copy filter, on zlib stream 0. TigerVNC sends
//!   the copy filter here; on desktop pictures the gradient filter halves the bytes
//!   and deflates faster. Where it does not pay (noise: see [`gradient_pays`]), the
//!   copy filter.
//!
//! With JPEG allowed, TigerVNC keeps palettes to 96 colours (24 at compression levels
//! 0-1) so that photos go to JPEG. Here that limit applies only to photo-like pixels
//! (runs averaging under two pixels): text and drawings keep palettes of up to 256
//! colours, which are smaller than their JPEG, faster to make, and exact.
//!
//! Filtered data shorter than 12 bytes is sent as is; longer data goes through that
//! stream's persistent deflater and ends with a sync flush, so each rectangle inflates
//! on its own. Zlib levels per compression level 0-9 and JPEG quality and chroma
//! subsampling per quality level 0-9 follow TigerVNC's tables.
//!
//! [`RectEncoder::encode`] takes one **legal Tight piece**: at most [`MAX_WIDTH`]
//! pixels wide (the spec's limit) and at most [`MAX_AREA`] pixels (TigerVNC's limit,
//! which keeps every compact length in range); [`split`] cuts any rectangle into such
//! pieces. [`TightEncoder::encode_many`] takes rectangles of any size and cuts them
//! itself, first taking out large solid areas as fills, as TigerVNC's `EncodeManager`
//! does. Fill and JPEG rectangles share no state and the four zlib streams are
//! independent of each other, so it classifies, filters and JPEG-encodes pieces on
//! several threads, then deflates each stream's pieces in order on one thread.
//!
//! [Tight Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#tight-encoding

use super::{rows, EncodeParams, PixelWriter, RectEncoder};
use crate::framebuffer::{Framebuffer, Rect};
use crate::jpeg::{JpegEncoder, Subsampling};
use flate2::{Compress, Compression, FlushCompress};
use std::sync::Mutex;

/// Widest rectangle the spec allows in Tight.
pub const MAX_WIDTH: u16 = 2048;

/// Most pixels in one rectangle (TigerVNC's `SubRectMaxArea`).
pub const MAX_AREA: usize = 65536;

/// Filtered data shorter than this is sent uncompressed (spec; fixed for all clients).
const MIN_TO_COMPRESS: usize = 12;

/// Largest value a compact length can carry (22 bits).
const MAX_COMPACT_LENGTH: usize = (1 << 22) - 1;

/// Zlib streams a Tight connection keeps.
const STREAM_COUNT: usize = 4;
const STREAM_FULL_COLOUR: usize = 0;
const STREAM_MONO: usize = 1;
const STREAM_INDEXED: usize = 2;
/// A spare stream, which [`TightEncoder::encode_many`] uses to share the deflate
/// work of the busiest stream between threads.
const STREAM_SPARE: usize = 3;

/// Compression-control high nibbles.
const CONTROL_FILL: u8 = 0x80;
const CONTROL_JPEG: u8 = 0x90;
/// Bit 6: a filter-id byte follows.
const CONTROL_EXPLICIT_FILTER: u8 = 0x40;
const FILTER_PALETTE: u8 = 1;
const FILTER_GRADIENT: u8 = 2;

/// Largest palette the palette filter carries.
const MAX_PALETTE: usize = 256;

/// Compression level used when the client names none (TigerVNC's default).
const DEFAULT_COMPRESS: u8 = 2;

/// Zlib levels per compression level 0-9: (indexed, mono, full colour), TigerVNC's
/// `tightConf` table, except that TigerVNC's (3, 3, 2) for level 2 becomes (2, 2, 2):
/// classic zlib's levels 1-3 are all its fast algorithm, zlib-rs's level 3 is its
/// medium one (slower, and no smaller on screen contents).
const ZLIB_LEVELS: [(u8, u8, u8); 10] = [
    (0, 0, 0),
    (1, 1, 1),
    (2, 2, 2),
    (5, 5, 2),
    (6, 7, 3),
    (7, 8, 4),
    (7, 8, 5),
    (8, 9, 6),
    (9, 9, 7),
    (9, 9, 9),
];

/// JPEG quality and subsampling per quality level 0-9 (TigerVNC's
/// `TightJPEGEncoder` table, from VirtualGL's measurements).
const JPEG_LEVELS: [(u8, Subsampling); 10] = [
    (15, Subsampling::Half),
    (29, Subsampling::Half),
    (41, Subsampling::Half),
    (42, Subsampling::Horizontal),
    (62, Subsampling::Horizontal),
    (77, Subsampling::Horizontal),
    (79, Subsampling::None),
    (86, Subsampling::None),
    (92, Subsampling::None),
    (100, Subsampling::None),
];

/// Cuts `rect` into legal Tight pieces, row by row, left to right: at most
/// [`MAX_WIDTH`] wide and [`MAX_AREA`] pixels each, as TigerVNC cuts them. A rectangle
/// that already fits comes back whole; an empty one gives no pieces.
pub fn split(rect: Rect) -> impl Iterator<Item = Rect> {
    let piece_width = rect.width.clamp(1, MAX_WIDTH);
    let piece_height = if rect.area() <= MAX_AREA {
        rect.height.max(1)
    } else {
        // At least 32 rows (MAX_AREA / MAX_WIDTH); clamped to u16 for a width of 1.
        (MAX_AREA / usize::from(piece_width)).min(usize::from(u16::MAX)) as u16
    };
    let (columns, bands) = if rect.is_empty() {
        (0, 0)
    } else {
        (
            rect.width.div_ceil(piece_width),
            rect.height.div_ceil(piece_height),
        )
    };
    (0..bands).flat_map(move |band| {
        let dy = u32::from(band) * u32::from(piece_height);
        // INVARIANT: dy < rect.height, so the remainder fits in u16.
        let height = (u32::from(rect.height) - dy).min(u32::from(piece_height)) as u16;
        (0..columns).map(move |column| {
            let dx = u32::from(column) * u32::from(piece_width);
            let width = (u32::from(rect.width) - dx).min(u32::from(piece_width)) as u16;
            Rect::new(
                rect.x.saturating_add(dx as u16),
                rect.y.saturating_add(dy as u16),
                width,
                height,
            )
        })
    })
}

/// Appends a compact length: 7 bits, 7 bits, then 8 bits, least significant first.
fn write_compact(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len <= MAX_COMPACT_LENGTH);
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x4000 {
        out.extend_from_slice(&[0x80 | (len & 0x7f) as u8, (len >> 7) as u8]);
    } else {
        out.extend_from_slice(&[
            0x80 | (len & 0x7f) as u8,
            0x80 | ((len >> 7) & 0x7f) as u8,
            (len >> 14) as u8,
        ]);
    }
}

/// What the encoder does with one rectangle, fixed for a batch by the client's
/// parameters and pixel format.
#[derive(Debug, Clone, Copy)]
struct Config {
    /// JPEG quality and subsampling, when JPEG may be used.
    jpeg: Option<(u8, Subsampling)>,
    /// Compression level 0-9.
    compress: u8,
    /// `TPIXEL`s are 3-byte `R, G, B`.
    rgb24: bool,
    /// 8-bit pixels: indices save nothing over the copy filter.
    eight_bit: bool,
    /// Full-colour data goes through the gradient filter (allowed for true colour at
    /// 16 or 32 bits per pixel; used when each channel maximum is `2^n - 1`, so
    /// differences wrap within the channel).
    gradient: bool,
    /// The client named a compression level.
    explicit_compress: bool,
}

/// What every rectangle of a batch is encoded from and with.
struct Context<'a> {
    fb: &'a Framebuffer,
    pw: &'a PixelWriter,
    config: Config,
}

/// Whether the channels of a true-colour format occupy separate bits. The gradient
/// filter predicts each channel on its own, which only inverts when they do: a format
/// with overlapping channels (valid, if odd) takes the copy filter.
fn channels_apart(format: &crate::pixel::PixelFormat) -> bool {
    let bits = |max: u16, shift: u8| u64::from(max) << shift;
    let (r, g, b) = (
        bits(format.red_max, format.red_shift),
        bits(format.green_max, format.green_shift),
        bits(format.blue_max, format.blue_shift),
    );
    r & g == 0 && r & b == 0 && g & b == 0
}

impl Config {
    fn new(pw: &PixelWriter, params: &EncodeParams) -> Config {
        let format = pw.format();
        let jpeg_allowed = matches!(format.bits_per_pixel, 16 | 32);
        Config {
            jpeg: params
                .quality
                .filter(|_| jpeg_allowed)
                .map(|q| JPEG_LEVELS[usize::from(q.min(9))]),
            compress: params.compress.unwrap_or(DEFAULT_COMPRESS).min(9),
            rgb24: format.tight_uses_rgb24(),
            eight_bit: format.bits_per_pixel == 8,
            gradient: format.true_colour
                && matches!(format.bits_per_pixel, 16 | 32)
                && [format.red_max, format.green_max, format.blue_max]
                    .iter()
                    .all(|&max| max & max.wrapping_add(1) == 0)
                && channels_apart(format),
            explicit_compress: params.compress.is_some(),
        }
    }

    /// The largest palette worth sending for `area` pixels (TigerVNC's rule: fewer
    /// colours for small areas), and the largest for photo-like pixels when JPEG can
    /// take them (TigerVNC's 24 or 96 colours).
    fn max_colours(&self, area: usize) -> (usize, usize) {
        let max = (area / (usize::from(self.compress) * 8).max(4)).clamp(2, MAX_PALETTE);
        match self.jpeg {
            Some(_) if self.explicit_compress && self.compress < 2 => (MAX_PALETTE, 24),
            Some(_) => (MAX_PALETTE, 96),
            None => (max, max),
        }
    }
}

/// Colours seen in a rectangle, with a small open-addressing table from colour to
/// palette index.
struct Palette {
    /// Colours in order of first appearance.
    colours: [u32; MAX_PALETTE],
    len: usize,
    keys: [u32; Palette::SLOTS],
    indices: [u8; Palette::SLOTS],
    /// Slots in use, to clear only those.
    used: [u16; MAX_PALETTE],
}

impl Palette {
    const BITS: u32 = 10;
    const SLOTS: usize = 1 << Palette::BITS;
    /// No masked colour has its top byte set.
    const EMPTY: u32 = u32::MAX;

    fn new() -> Box<Palette> {
        Box::new(Palette {
            colours: [0; MAX_PALETTE],
            len: 0,
            keys: [Palette::EMPTY; Palette::SLOTS],
            indices: [0; Palette::SLOTS],
            used: [0; MAX_PALETTE],
        })
    }

    fn clear(&mut self) {
        for &slot in &self.used[..self.len] {
            self.keys[usize::from(slot)] = Palette::EMPTY;
        }
        self.len = 0;
    }

    /// The index of `colour` (a masked `0x00RRGGBB`), adding it if there is room for
    /// `max` colours; `None` when there is not.
    #[inline]
    fn index(&mut self, colour: u32, max: usize) -> Option<u8> {
        let mut slot = (colour.wrapping_mul(0x9e37_79b1) >> (32 - Palette::BITS)) as usize;
        loop {
            let key = self.keys[slot];
            if key == colour {
                return Some(self.indices[slot]);
            }
            if key == Palette::EMPTY {
                if self.len >= max {
                    return None;
                }
                // INVARIANT: max <= MAX_PALETTE, so len < 256 fits the arrays and a u8.
                let index = self.len;
                self.keys[slot] = colour;
                self.indices[slot] = index as u8;
                self.used[index] = slot as u16;
                self.colours[index] = colour;
                self.len += 1;
                return Some(index as u8);
            }
            slot = (slot + 1) & (Palette::SLOTS - 1);
        }
    }
}

/// What a rectangle's colours allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Solid(u32),
    /// Two colours: `Palette::colours[..2]`, indices in the scratch buffer.
    Mono,
    /// Up to the palette limit: `Palette::colours[..n]`, indices in the scratch buffer.
    Indexed,
    FullColour,
}

/// A buffer that only grows, so rewriting it costs no zeroing: its first `len`
/// bytes are the current contents.
#[derive(Debug, Default)]
struct Filtered {
    bytes: Vec<u8>,
    len: usize,
}

impl Filtered {
    /// The first `n` bytes, to be overwritten, as the new contents.
    fn take(&mut self, n: usize) -> &mut [u8] {
        if self.bytes.len() < n {
            self.bytes.resize(n, 0);
        }
        self.len = n;
        &mut self.bytes[..n]
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Buffers one thread reuses from one rectangle to the next.
struct Scratch {
    palette: Box<Palette>,
    /// One palette index per pixel.
    indices: Filtered,
    jpeg: JpegEncoder,
    /// Gradient filter: channel values of the row above.
    above: Vec<[i32; 3]>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            palette: Palette::new(),
            indices: Filtered::default(),
            jpeg: JpegEncoder::default(),
            above: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").finish_non_exhaustive()
    }
}

/// Counts the colours of `rect`, giving up past `max`; for two or more colours the
/// palette index of every pixel is left in `indices` (one per pixel of `rect`).
/// More than `photo_max` colours in runs averaging under two pixels count as
/// full colour too: that is a photo, which JPEG (when allowed) takes better than a
/// palette; text and drawings have longer runs.
fn classify(
    fb: &Framebuffer,
    rect: Rect,
    (max, photo_max): (usize, usize),
    palette: &mut Palette,
    indices: &mut [u8],
) -> Class {
    palette.clear();
    let Some(first) = fb
        .pixels()
        .get(usize::from(rect.y) * usize::from(fb.width()) + usize::from(rect.x))
    else {
        return Class::FullColour;
    };
    // Runs are found on raw values (two pixels differing only in the unused top byte
    // start a new run of the same palette entry).
    let mut last = *first;
    let mut last_index = 0u8;
    // INVARIANT: an empty palette has room for one colour.
    let _ = palette.index(last & 0x00ff_ffff, max);
    let width = usize::from(rect.width);
    let mut runs = 0usize;
    for (row, dst) in rows(fb, rect).zip(indices.chunks_exact_mut(width)) {
        let mut x = 0;
        while x < width {
            // Eight pixels continuing the run at once: no early exit, so this compiles
            // to a few vector operations.
            if let (Some(run), Some(out)) = (row.get(x..x + 8), dst.get_mut(x..x + 8)) {
                if run.iter().fold(0, |acc, &p| acc | (p ^ last)) == 0 {
                    out.fill(last_index);
                    x += 8;
                    continue;
                }
            }
            let end = (x + 8).min(width);
            for (&pixel, d) in row[x..end].iter().zip(&mut dst[x..end]) {
                if pixel != last {
                    match palette.index(pixel & 0x00ff_ffff, max) {
                        Some(index) => last_index = index,
                        None => return Class::FullColour,
                    }
                    last = pixel;
                    runs += 1;
                }
                *d = last_index;
            }
            x = end;
        }
    }
    if palette.len > photo_max && runs * 2 > rect.area() {
        return Class::FullColour;
    }
    match palette.len {
        1 => Class::Solid(last & 0x00ff_ffff),
        2 => Class::Mono,
        _ => Class::Indexed,
    }
}

/// Appends the palette filter's header: filter id, colour count - 1 and the colours.
fn write_palette(head: &mut Vec<u8>, colours: &[u32], pw: &PixelWriter) {
    head.push(FILTER_PALETTE);
    // INVARIANT: palettes hold 2..=256 colours.
    head.push((colours.len() - 1) as u8);
    for &colour in colours {
        pw.write_tpixel(colour, head);
    }
}

/// Packs two-colour indices into rows of bits, most significant bit leftmost, each row
/// padded to a byte.
fn pack_bitmap(indices: &[u8], width: usize, out: &mut [u8]) {
    let row_bytes = width.div_ceil(8);
    for (src, dst) in indices
        .chunks_exact(width)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        for (bits, byte) in src.chunks(8).zip(dst.iter_mut()) {
            let mut value = 0u8;
            for (j, &index) in bits.iter().enumerate() {
                value |= index << (7 - j);
            }
            *byte = value;
        }
    }
}

/// Stores a pixel value in `out.len()` bytes of the given byte order.
#[inline]
fn put_pixel(value: u32, big_endian: bool, out: &mut [u8]) {
    let bytes = if big_endian {
        value.to_be_bytes()
    } else {
        value.to_le_bytes()
    };
    match (out.len(), big_endian) {
        (1, _) => out[0] = value as u8,
        (2, true) => out.copy_from_slice(&bytes[2..]),
        (3, true) => out.copy_from_slice(&bytes[1..]),
        (n, true) => out.copy_from_slice(&bytes[4 - n.min(4)..]),
        (n, false) => out.copy_from_slice(&bytes[..n.min(4)]),
    }
}

/// Copy filter: `rect`'s pixels as `TPIXEL`s.
fn copy_filter(fb: &Framebuffer, rect: Rect, config: &Config, pw: &PixelWriter, out: &mut [u8]) {
    let tpixel = if config.rgb24 {
        3
    } else {
        pw.bytes_per_pixel()
    };
    let row_bytes = usize::from(rect.width) * tpixel;
    let big_endian = pw.format().big_endian;
    for (row, dst) in rows(fb, rect).zip(out.chunks_exact_mut(row_bytes)) {
        if config.rgb24 {
            for (&pixel, d) in row.iter().zip(dst.chunks_exact_mut(3)) {
                d[0] = (pixel >> 16) as u8;
                d[1] = (pixel >> 8) as u8;
                d[2] = pixel as u8;
            }
        } else {
            for (&pixel, d) in row.iter().zip(dst.chunks_exact_mut(tpixel)) {
                put_pixel(pw.value(pixel), big_endian, d);
            }
        }
    }
}

/// Gradient filter for 3-byte `TPIXEL`s: each channel minus its prediction
/// `left + above - above_left` clamped to `0..=255`, modulo 256; pixels outside the
/// rectangle count as 0 (spec).
fn gradient_rgb24(fb: &Framebuffer, rect: Rect, out: &mut [u8]) {
    let stride = usize::from(fb.width());
    let (x, width) = (usize::from(rect.x), usize::from(rect.width));
    let pixels = fb.pixels();
    for (i, dst) in out.chunks_exact_mut(width * 3).enumerate() {
        let y = usize::from(rect.y) + i;
        // INVARIANT: `rect` lies inside `fb`.
        let row = &pixels[y * stride + x..y * stride + x + width];
        let mut left = 0u32;
        if i == 0 {
            // Nothing above: the prediction is the left neighbour.
            for (&p, d) in row.iter().zip(dst.chunks_exact_mut(3)) {
                d[0] = ((p >> 16) as u8).wrapping_sub((left >> 16) as u8);
                d[1] = ((p >> 8) as u8).wrapping_sub((left >> 8) as u8);
                d[2] = (p as u8).wrapping_sub(left as u8);
                left = p;
            }
            continue;
        }
        let above = &pixels[(y - 1) * stride + x..(y - 1) * stride + x + width];
        let mut above_left = 0u32;
        for ((&p, &up), d) in row.iter().zip(above).zip(dst.chunks_exact_mut(3)) {
            for (c, shift) in [16u32, 8, 0].into_iter().enumerate() {
                let channel = |v: u32| ((v >> shift) & 0xff) as i32;
                let predicted = (channel(left) + channel(up) - channel(above_left)).clamp(0, 255);
                d[c] = (channel(p) - predicted) as u8;
            }
            left = p;
            above_left = up;
        }
    }
}

/// Bytes of a piece's data [`gradient_pays`] looks at, about.
const GRADIENT_SAMPLE: usize = 16 * 1024;

/// Whether the gradient filter's output `filtered` (3-byte `TPIXEL`s of `rect`) is
/// enough easier to compress than the pixels as they are to be worth the client's
/// time to undo it. It is on pictures (it halves a desktop photo's bytes), not on
/// noise: there every prediction is as random as the pixel it predicts, and undoing
/// the filter takes a client as long as inflating the data. Judged on the byte
/// entropy of rows spread over the piece, before and after: the filter must save 3%.
/// Pieces under [`GRADIENT_SAMPLE`] bytes always keep it.
fn gradient_pays(fb: &Framebuffer, rect: Rect, filtered: &[u8]) -> bool {
    let (width, height) = (usize::from(rect.width), usize::from(rect.height));
    let row_bytes = width * 3;
    if row_bytes * height < GRADIENT_SAMPLE || row_bytes == 0 {
        return true;
    }
    let step = (row_bytes * height / GRADIENT_SAMPLE).max(1);
    let stride = usize::from(fb.width());
    let pixels = fb.pixels();
    let (mut raw, mut diff) = ([0u32; 256], [0u32; 256]);
    for i in (0..height).step_by(step) {
        let start = (usize::from(rect.y) + i) * stride + usize::from(rect.x);
        for &p in &pixels[start..start + width] {
            raw[(p >> 16) as usize & 0xff] += 1;
            raw[(p >> 8) as usize & 0xff] += 1;
            raw[p as usize & 0xff] += 1;
        }
        for &b in &filtered[i * row_bytes..(i + 1) * row_bytes] {
            diff[usize::from(b)] += 1;
        }
    }
    entropy_bits(&diff) < 0.97 * entropy_bits(&raw)
}

/// Order-0 entropy in bits of data with these byte counts: `n log2 n - Σ c log2 c`.
fn entropy_bits(counts: &[u32; 256]) -> f64 {
    let xlog2x = |x: f64| if x > 0.0 { x * x.log2() } else { 0.0 };
    let n: f64 = counts.iter().map(|&c| f64::from(c)).sum();
    xlog2x(n) - counts.iter().map(|&c| xlog2x(f64::from(c))).sum::<f64>()
}

/// Gradient filter for any true-colour format whose channel maxima are all one less
/// than a power of two: differences modulo `max + 1`, packed as a `PIXEL`.
fn gradient_levels(
    fb: &Framebuffer,
    rect: Rect,
    pw: &PixelWriter,
    above: &mut Vec<[i32; 3]>,
    out: &mut [u8],
) {
    let f = pw.format();
    let shifts = [f.red_shift, f.green_shift, f.blue_shift].map(u32::from);
    let max = [f.red_max, f.green_max, f.blue_max].map(i32::from);
    let size = pw.bytes_per_pixel();
    let width = usize::from(rect.width);
    above.clear();
    above.resize(width, [0; 3]);
    for (row, dst) in rows(fb, rect).zip(out.chunks_exact_mut(width * size)) {
        let mut left = [0i32; 3];
        let mut above_left = [0i32; 3];
        for ((&p, up), d) in row
            .iter()
            .zip(above.iter_mut())
            .zip(dst.chunks_exact_mut(size))
        {
            let v = pw.value(p);
            let mut value = 0u32;
            let mut current = [0i32; 3];
            for c in 0..3 {
                current[c] = (v >> shifts[c]) as i32 & max[c];
                let predicted = (left[c] + up[c] - above_left[c]).clamp(0, max[c]);
                value |= (((current[c] - predicted) & max[c]) as u32) << shifts[c];
            }
            above_left = *up;
            *up = current;
            left = current;
            put_pixel(value, f.big_endian, d);
        }
    }
}

/// Writes everything of the piece's payload that needs no zlib stream into `head`.
/// When the filtered data is to be deflated, it is left in `data` and the stream is
/// returned; `head` then lacks the compact length and the zlib data.
fn prepare(
    ctx: &Context,
    piece: Piece,
    scratch: &mut Scratch,
    head: &mut Vec<u8>,
    data: &mut Filtered,
) -> Option<usize> {
    let rect = piece.rect;
    debug_assert!(rect.width <= MAX_WIDTH, "tight rectangle wider than 2048");
    let (fb, pw, config) = (ctx.fb, ctx.pw, &ctx.config);
    data.len = 0;
    if rect.is_empty() {
        // The copy filter with no data at all.
        head.push(0x00);
        return None;
    }
    let area = rect.area();
    let width = usize::from(rect.width);
    let class = match piece.fill {
        Some(colour) => Class::Solid(colour),
        None => {
            let max = config.max_colours(area);
            let indices = scratch.indices.take(area);
            classify(fb, rect, max, &mut scratch.palette, indices)
        }
    };
    let stream = match class {
        Class::Solid(colour) => {
            head.push(CONTROL_FILL);
            pw.write_tpixel(colour, head);
            return None;
        }
        Class::Mono => {
            head.push(((STREAM_MONO as u8) << 4) | CONTROL_EXPLICIT_FILTER);
            write_palette(head, &scratch.palette.colours[..2], pw);
            let out = data.take(width.div_ceil(8) * usize::from(rect.height));
            pack_bitmap(scratch.indices.as_slice(), width, out);
            STREAM_MONO
        }
        Class::Indexed if !config.eight_bit => {
            head.push(((STREAM_INDEXED as u8) << 4) | CONTROL_EXPLICIT_FILTER);
            let len = scratch.palette.len;
            write_palette(head, &scratch.palette.colours[..len], pw);
            data.take(area).copy_from_slice(scratch.indices.as_slice());
            STREAM_INDEXED
        }
        Class::Indexed | Class::FullColour => {
            if let Some(jpeg) = config.jpeg.filter(|_| class == Class::FullColour) {
                let (quality, subsampling) = jpeg;
                if let Some(jfif) = scratch
                    .jpeg
                    .encode(fb, rect, quality, subsampling)
                    .filter(|jfif| jfif.len() <= MAX_COMPACT_LENGTH)
                {
                    head.push(CONTROL_JPEG);
                    write_compact(jfif.len(), head);
                    head.extend_from_slice(jfif);
                    return None;
                }
            }
            let tpixel = pw.tpixel_size();
            let gradient = config.gradient && {
                let out = data.take(area * tpixel);
                if config.rgb24 {
                    gradient_rgb24(fb, rect, out);
                    gradient_pays(fb, rect, out)
                } else {
                    gradient_levels(fb, rect, pw, &mut scratch.above, out);
                    true
                }
            };
            if gradient {
                head.push(((STREAM_FULL_COLOUR as u8) << 4) | CONTROL_EXPLICIT_FILTER);
                head.push(FILTER_GRADIENT);
            } else {
                head.push((STREAM_FULL_COLOUR as u8) << 4);
                copy_filter(fb, rect, config, pw, data.take(area * tpixel));
            }
            STREAM_FULL_COLOUR
        }
    };
    if data.len < MIN_TO_COMPRESS {
        head.extend_from_slice(data.as_slice());
        return None;
    }
    Some(stream)
}

/// Deflates `input` as one rectangle's share of a stream, ending with a sync flush,
/// into `out` (whose buffer is zeroed only when it grows: flate2's `compress_vec`
/// zeroes all spare capacity on every call with the zlib-rs backend).
fn deflate(compress: &mut Compress, input: &[u8], out: &mut Filtered) {
    out.len = 0;
    let room = input.len() + input.len() / 8 + 64;
    if out.bytes.len() < room {
        out.bytes.resize(room, 0);
    }
    let mut consumed = 0usize;
    loop {
        let (before_in, before_out) = (compress.total_in(), compress.total_out());
        // Deflating into memory fails only on a corrupt stream state.
        let result = compress.compress(
            &input[consumed..],
            &mut out.bytes[out.len..],
            FlushCompress::Sync,
        );
        debug_assert!(result.is_ok(), "deflate failed: {result:?}");
        consumed += (compress.total_in() - before_in) as usize;
        out.len += (compress.total_out() - before_out) as usize;
        // The flush is complete once input is used up and output space is left over.
        if result.is_err() || (consumed >= input.len() && out.len < out.bytes.len()) {
            return;
        }
        let grown = out.bytes.len() + out.bytes.len().max(4096);
        out.bytes.resize(grown, 0);
    }
}

/// One of the four persistent deflaters: raw deflate, with the zlib header written
/// by hand, so that blocks of literals ([`super::huffman`]) can go out between
/// stretches of the compressor's output.
struct ZlibStream {
    compress: Compress,
    level: u8,
    /// Whether anything went through it since it was (re)created.
    used: bool,
    /// Whether the zlib header went out since it was (re)created or reset.
    header_sent: bool,
}

impl ZlibStream {
    fn new(level: u8) -> ZlibStream {
        ZlibStream {
            compress: Compress::new(Compression::new(u32::from(level)), false),
            level,
            used: false,
            header_sent: false,
        }
    }

    /// Compresses one rectangle's filtered data into `out`, ending byte-aligned as
    /// after a sync flush: as blocks of literals if `literal`, else through the
    /// compressor.
    fn write(&mut self, input: &[u8], literal: bool, out: &mut Filtered) {
        out.len = 0;
        let mut header = [0u8; 2];
        let header_len = if self.header_sent {
            0
        } else {
            self.header_sent = true;
            header = super::deflate::zlib_header(u32::from(self.level));
            2
        };
        if literal {
            out.bytes.truncate(0);
            out.bytes.extend_from_slice(&header[..header_len]);
            super::huffman::write_literal_blocks(input, &mut out.bytes);
            out.len = out.bytes.len();
            // The compressor's window must hold what the client's does.
            let history = &input[input.len().saturating_sub(32 * 1024)..];
            if self.compress.set_dictionary(history).is_err() {
                // Not expected after a flush; compressing the bytes (and dropping the
                // output) puts them into the history, only slower.
                debug_assert!(false, "set_dictionary after a flush failed");
                let mut discard = Filtered::default();
                deflate(&mut self.compress, history, &mut discard);
            }
        } else {
            deflate(&mut self.compress, input, out);
            if header_len > 0 {
                out.bytes.splice(0..0, header);
                out.len += 2;
            }
        }
        self.used = true;
    }
}

/// Whether the full-colour data of a piece may go out as blocks of literals: not at
/// zlib level 0 (stored blocks, the client wants no compression work).
fn literal_allowed(ctx: &Context, stream: usize) -> bool {
    stream == STREAM_FULL_COLOUR
        && ctx.config.gradient
        && ZLIB_LEVELS[usize::from(ctx.config.compress)].2 > 0
}

/// Whether gradient-filtered data looks like a photo's: fewer than one in 16 of its
/// aligned 8-byte words is all zeros (runs of exact predictions). There deflate's
/// match search finds little, and blocks of literals come out smaller (on the desktop
/// picture's photo, 177 KB against 225 KB at zlib level 2) in a fraction of the time;
/// runs of zeros (flat areas, smooth gradients, repeated text) are what matches pay
/// for.
fn photo_like(filtered: &[u8]) -> bool {
    let words = filtered.chunks_exact(8);
    let count = words.len();
    let zero_words: usize = words
        .map(|w| usize::from(w.iter().fold(0, |acc, &b| acc | b) == 0))
        .sum();
    count > 0 && zero_words * 16 < count
}

impl std::fmt::Debug for ZlibStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZlibStream")
            .field("level", &self.level)
            .field("total_in", &self.compress.total_in())
            .finish()
    }
}

/// Side of the blocks the solid-area search looks at (TigerVNC's `SolidSearchBlock`).
const BLOCK: usize = 16;

/// Solid areas smaller than this stay inside their neighbours' rectangles (TigerVNC's
/// `SolidBlockMinArea`): a fill rectangle costs 16 bytes with its header.
const MIN_SOLID_AREA: usize = 2048;

/// Pixels to classify below which [`TightEncoder::encode_many`] stays on the
/// calling thread.
const PARALLEL_MIN_AREA: usize = 2 * MAX_AREA;

/// A block that is not of one colour.
const NOT_SOLID: u32 = u32::MAX;

/// A rectangle to send, and its colour if it is known to be solid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    rect: Rect,
    fill: Option<u32>,
}

/// Cuts `rect` into pieces no wider than [`MAX_WIDTH`] (for fills, which have no
/// other limit).
fn split_width(rect: Rect) -> impl Iterator<Item = Rect> {
    let columns = if rect.is_empty() {
        0
    } else {
        rect.width.div_ceil(MAX_WIDTH)
    };
    (0..columns).map(move |column| {
        let dx = u32::from(column) * u32::from(MAX_WIDTH);
        let width = (u32::from(rect.width) - dx).min(u32::from(MAX_WIDTH)) as u16;
        Rect::new(rect.x.saturating_add(dx as u16), rect.y, width, rect.height)
    })
}

/// Marks each block of the block rows in `cells` (`columns` per row, the first being
/// block row `first`) with its colour, or [`NOT_SOLID`]; and in `busy` whether most
/// of its pixels differ from their left neighbour (photo-like).
fn survey_blocks(
    fb: &Framebuffer,
    rect: Rect,
    columns: usize,
    first: usize,
    cells: &mut [u32],
    busy: &mut [bool],
) {
    let stride = usize::from(fb.width());
    let (x, width) = (usize::from(rect.x), usize::from(rect.width));
    let pixels = fb.pixels();
    let mut changes = vec![0u32; columns];
    for (i, (row_cells, row_busy)) in cells
        .chunks_exact_mut(columns)
        .zip(busy.chunks_exact_mut(columns))
        .enumerate()
    {
        let top = (first + i) * BLOCK;
        let height = (usize::from(rect.height) - top).min(BLOCK);
        let y = usize::from(rect.y) + top;
        // INVARIANT: `rect` lies inside `fb` (clipped by `encode_many`).
        let first_row = &pixels[y * stride + x..y * stride + x + width];
        for (cell, segment) in row_cells.iter_mut().zip(first_row.chunks(BLOCK)) {
            *cell = segment[0];
        }
        changes.fill(0);
        for row_y in y..y + height {
            let row = &pixels[row_y * stride + x..row_y * stride + x + width];
            // Whole blocks as fixed-size arrays: unrolled into vector operations.
            let whole = row.chunks_exact(BLOCK);
            let rest = whole.remainder();
            let full = width / BLOCK;
            for ((cell, count), segment) in row_cells.iter_mut().zip(changes.iter_mut()).zip(whole)
            {
                let Ok(segment) = <&[u32; BLOCK]>::try_from(segment) else {
                    continue;
                };
                let colour = *cell;
                if segment.iter().fold(0, |acc, &p| acc | (p ^ colour)) != 0 {
                    *cell = NOT_SOLID;
                }
                let mut n = 0u32;
                for i in 0..BLOCK - 1 {
                    n += u32::from(segment[i] != segment[i + 1]);
                }
                *count += n;
            }
            for ((cell, count), segment) in row_cells[full..]
                .iter_mut()
                .zip(changes[full..].iter_mut())
                .zip(std::iter::once(rest).filter(|r| !r.is_empty()))
            {
                // No early exits: these forms compile to a few vector operations.
                let colour = *cell;
                if colour != NOT_SOLID && segment.iter().fold(0, |acc, &p| acc | (p ^ colour)) != 0
                {
                    *cell = NOT_SOLID;
                }
                *count += segment
                    .iter()
                    .zip(&segment[1..])
                    .map(|(a, b)| u32::from(a != b))
                    .sum::<u32>();
            }
        }
        for ((flag, &count), segment) in row_busy
            .iter_mut()
            .zip(&changes)
            .zip(first_row.chunks(BLOCK))
        {
            let pairs = (segment.len() - 1) * height;
            *flag = count as usize * 2 > pairs;
        }
    }
}

/// Finds large solid areas of the rectangles of a batch, as TigerVNC's
/// `EncodeManager` does before encoding the rest.
#[derive(Debug, Default)]
struct Planner {
    /// Per block: its colour or [`NOT_SOLID`].
    grid: Vec<u32>,
    /// Per block: photo-like.
    busy: Vec<bool>,
    taken: Vec<bool>,
    /// Runs of blocks left over in the previous and current block row:
    /// (first column, end column, photo-like, index in `rest`).
    above: Vec<(usize, usize, bool, usize)>,
    current: Vec<(usize, usize, bool, usize)>,
    /// What is left once solid areas are taken out, before cutting into legal pieces.
    rest: Vec<Rect>,
}

impl Planner {
    /// Appends pieces covering `rect` exactly: fills for solid areas of at least
    /// [`MIN_SOLID_AREA`] pixels on the block grid, legal pieces for the rest.
    fn plan(&mut self, fb: &Framebuffer, rect: Rect, threads: usize, pieces: &mut Vec<Piece>) {
        if rect.is_empty() {
            return;
        }
        let columns = usize::from(rect.width).div_ceil(BLOCK);
        let rows = usize::from(rect.height).div_ceil(BLOCK);
        self.grid.clear();
        self.grid.resize(columns * rows, NOT_SOLID);
        self.busy.clear();
        self.busy.resize(columns * rows, false);
        // Worth threads only for large areas.
        let bands = if rect.area() >= 4 * MAX_AREA {
            threads.min(rows)
        } else {
            1
        };
        let rows_per_band = rows.div_ceil(bands.max(1));
        if bands <= 1 {
            survey_blocks(fb, rect, columns, 0, &mut self.grid, &mut self.busy);
        } else {
            std::thread::scope(|s| {
                let band = columns * rows_per_band;
                let mut chunks = self
                    .grid
                    .chunks_mut(band)
                    .zip(self.busy.chunks_mut(band))
                    .enumerate();
                let mine = chunks.next();
                for (i, (cells, busy)) in chunks {
                    s.spawn(move || {
                        survey_blocks(fb, rect, columns, i * rows_per_band, cells, busy)
                    });
                }
                if let Some((_, (cells, busy))) = mine {
                    survey_blocks(fb, rect, columns, 0, cells, busy);
                }
            });
        }
        self.taken.clear();
        self.taken.resize(columns * rows, false);
        // Pixel size of a run of blocks, the last ones clipped to `rect`.
        let size = |bx: usize, by: usize, w: usize, h: usize| {
            let width = ((bx + w) * BLOCK).min(usize::from(rect.width)) - bx * BLOCK;
            let height = ((by + h) * BLOCK).min(usize::from(rect.height)) - by * BLOCK;
            (width, height)
        };
        for by in 0..rows {
            for bx in 0..columns {
                let colour = self.grid[by * columns + bx];
                if colour == NOT_SOLID || self.taken[by * columns + bx] {
                    continue;
                }
                // Blocks of this colour from (bx, row) rightwards, at most `limit`.
                let run = |row: usize, limit: usize| {
                    let cells = &self.grid[row * columns + bx..row * columns + bx + limit];
                    let taken = &self.taken[row * columns + bx..row * columns + bx + limit];
                    cells
                        .iter()
                        .zip(taken)
                        .take_while(|&(&c, &t)| c == colour && !t)
                        .count()
                };
                // The largest area of this colour with its top-left corner here.
                let mut w = run(by, columns - bx);
                let (mut best, mut best_area) = ((w, 1), 0);
                let mut h = 1;
                loop {
                    let (pw, ph) = size(bx, by, w, h);
                    if pw * ph > best_area {
                        best = (w, h);
                        best_area = pw * ph;
                    }
                    if by + h >= rows {
                        break;
                    }
                    w = run(by + h, w);
                    if w == 0 {
                        break;
                    }
                    h += 1;
                }
                if best_area < MIN_SOLID_AREA {
                    continue;
                }
                let (w, h) = best;
                for row in by..by + h {
                    self.taken[row * columns + bx..row * columns + bx + w].fill(true);
                }
                let (pw, ph) = size(bx, by, w, h);
                // INVARIANT: the area lies inside `rect`, so offsets and sizes fit u16.
                let area = Rect::new(
                    rect.x + (bx * BLOCK) as u16,
                    rect.y + (by * BLOCK) as u16,
                    pw as u16,
                    ph as u16,
                );
                pieces.extend(split_width(area).map(|r| Piece {
                    rect: r,
                    fill: Some(colour & 0x00ff_ffff),
                }));
            }
        }
        // The rest: runs of blocks per block row, photo-like blocks apart from the
        // others (so that JPEG gets only what needs it), a run joining the one above
        // it when both span the same columns and are of the same kind.
        self.rest.clear();
        self.above.clear();
        for by in 0..rows {
            self.current.clear();
            let row = by * columns..(by + 1) * columns;
            let taken = &self.taken[row.clone()];
            let busy = &mut self.busy[row];
            // A lone block of one kind between blocks of the other takes their kind:
            // tiny pieces cost more in headers than they save.
            for i in 1..columns.saturating_sub(1) {
                if !taken[i - 1] && !taken[i + 1] && busy[i - 1] == busy[i + 1] {
                    busy[i] = busy[i - 1];
                }
            }
            let mut bx = 0;
            let mut above = self.above.iter().peekable();
            while bx < columns {
                if taken[bx] {
                    bx += 1;
                    continue;
                }
                let kind = busy[bx];
                let end = bx
                    + taken[bx..]
                        .iter()
                        .zip(&busy[bx..])
                        .take_while(|&(&t, &b)| !t && b == kind)
                        .count();
                while above.next_if(|run| run.0 < bx).is_some() {}
                let joined = above
                    .peek()
                    .filter(|run| (run.0, run.1, run.2) == (bx, end, kind))
                    .map(|run| run.3);
                let (width, height) = size(bx, by, end - bx, 1);
                let index = match joined {
                    Some(index) => {
                        // INVARIANT: the joined run stays inside `rect`.
                        self.rest[index].height += height as u16;
                        index
                    }
                    None => {
                        self.rest.push(Rect::new(
                            rect.x + (bx * BLOCK) as u16,
                            rect.y + (by * BLOCK) as u16,
                            width as u16,
                            height as u16,
                        ));
                        self.rest.len() - 1
                    }
                };
                self.current.push((bx, end, kind, index));
                bx = end;
            }
            std::mem::swap(&mut self.above, &mut self.current);
        }
        for &r in &self.rest {
            pieces.extend(split(r).map(|rect| Piece { rect, fill: None }));
        }
    }
}

/// One rectangle of a batch on its way through [`TightEncoder::encode_many`].
#[derive(Debug, Default)]
struct Job {
    piece: Option<Piece>,
    head: Vec<u8>,
    /// Filtered data waiting for `stream`.
    data: Filtered,
    stream: Option<usize>,
    /// The data goes out as blocks of literals (see [`photo_like`]).
    literal: bool,
    /// Estimated deflate work, in units of indexed bytes.
    cost: usize,
    zlib: Filtered,
}

/// Tight (7) encoder: four persistent deflate streams and per-thread scratch buffers.
///
/// Encode one rectangle with [`RectEncoder::encode`] (a legal piece, see [`split`]),
/// or a whole update's rectangles, cut up by the encoder and possibly on several
/// threads (see [`TightEncoder::with_threads`]), with [`TightEncoder::encode_many`].
#[derive(Debug)]
pub struct TightEncoder {
    streams: [ZlibStream; STREAM_COUNT],
    /// Reset bits the next rectangle's control byte carries.
    pending_resets: u8,
    /// One per thread; the first also serves [`RectEncoder::encode`].
    scratch: Vec<Scratch>,
    /// Filtered and deflated data of a single rectangle.
    data: Filtered,
    zlib: Filtered,
    planner: Planner,
    pieces: Vec<Piece>,
    jobs: Vec<Job>,
}

impl Default for TightEncoder {
    fn default() -> Self {
        TightEncoder::with_threads(1)
    }
}

impl TightEncoder {
    /// An encoder that runs on the calling thread only.
    pub fn new() -> TightEncoder {
        TightEncoder::default()
    }

    /// An encoder whose [`encode_many`](TightEncoder::encode_many) uses up to
    /// `threads` threads (the calling one included; 0 counts as 1).
    pub fn with_threads(threads: usize) -> TightEncoder {
        let (indexed, mono, full) = ZLIB_LEVELS[usize::from(DEFAULT_COMPRESS)];
        TightEncoder {
            streams: [
                ZlibStream::new(full),
                ZlibStream::new(mono),
                ZlibStream::new(indexed),
                ZlibStream::new(indexed),
            ],
            pending_resets: 0,
            scratch: (0..threads.max(1)).map(|_| Scratch::default()).collect(),
            data: Filtered::default(),
            zlib: Filtered::default(),
            planner: Planner::default(),
            pieces: Vec::new(),
            jobs: Vec::new(),
        }
    }

    /// Threads [`encode_many`](TightEncoder::encode_many) may use.
    pub fn threads(&self) -> usize {
        self.scratch.len()
    }

    /// Sets each stream's zlib level for `compress`. A stream whose level changes
    /// starts anew, and if it was used the next rectangle tells the client to reset it.
    fn configure(&mut self, config: &Config) {
        let (indexed, mono, full) = ZLIB_LEVELS[usize::from(config.compress)];
        for (i, level) in [full, mono, indexed, indexed].into_iter().enumerate() {
            let stream = &mut self.streams[i];
            if stream.level != level {
                if stream.used {
                    self.pending_resets |= 1 << i;
                }
                *stream = ZlibStream::new(level);
            }
        }
    }

    /// Encodes one piece on the calling thread, appending its payload to `out`.
    fn encode_piece(&mut self, ctx: &Context, piece: Piece, out: &mut Vec<u8>) {
        let start = out.len();
        let Some(scratch) = self.scratch.first_mut() else {
            return;
        };
        if let Some(stream) = prepare(ctx, piece, scratch, out, &mut self.data) {
            let literal = literal_allowed(ctx, stream) && photo_like(self.data.as_slice());
            let zlib = &mut self.streams[stream];
            zlib.write(self.data.as_slice(), literal, &mut self.zlib);
            write_compact(self.zlib.len, out);
            out.extend_from_slice(self.zlib.as_slice());
        }
        if let Some(control) = out.get_mut(start) {
            *control |= std::mem::take(&mut self.pending_resets);
        }
    }

    /// Encodes the pixels of `rects` (non-overlapping, of any size; parts outside `fb`
    /// are dropped) and appends the rectangles to send, each with its payload, in the
    /// order they must be sent, to `out`. Those cover the same pixels but are cut
    /// differently: solid areas of at least 2048 pixels on a 16-pixel block grid
    /// become fills (as in TigerVNC), and the rest is cut into legal pieces (see
    /// [`split`]).
    ///
    /// With more than one thread, pieces are classified, filtered and JPEG-encoded in
    /// parallel, largest first, then each zlib stream deflates its pieces in order, the
    /// streams in parallel; the busiest stream may share its pieces with stream 3.
    pub fn encode_many(
        &mut self,
        fb: &Framebuffer,
        rects: &[Rect],
        pw: &PixelWriter,
        params: &EncodeParams,
        out: &mut Vec<(Rect, Vec<u8>)>,
    ) {
        let ctx = Context {
            fb,
            pw,
            config: Config::new(pw, params),
        };
        self.configure(&ctx.config);
        let threads = self.threads();
        let mut pieces = std::mem::take(&mut self.pieces);
        pieces.clear();
        for rect in rects {
            self.planner
                .plan(fb, clip(*rect, fb.bounds()), threads, &mut pieces);
        }
        // Threads pay off only for a few pieces' worth of pixels to classify.
        let work: usize = pieces
            .iter()
            .filter(|p| p.fill.is_none())
            .map(|p| p.rect.area())
            .sum();
        if threads == 1 || pieces.len() <= 1 || work < PARALLEL_MIN_AREA {
            out.reserve(pieces.len());
            for &piece in &pieces {
                let mut payload = Vec::new();
                self.encode_piece(&ctx, piece, &mut payload);
                out.push((piece.rect, payload));
            }
        } else {
            self.encode_parallel(&ctx, &pieces, out);
        }
        self.pieces = pieces;
    }

    fn encode_parallel(&mut self, ctx: &Context, pieces: &[Piece], out: &mut Vec<(Rect, Vec<u8>)>) {
        if self.jobs.len() < pieces.len() {
            self.jobs.resize_with(pieces.len(), Job::default);
        }
        let jobs = &mut self.jobs[..pieces.len()];
        for (job, &piece) in jobs.iter_mut().zip(pieces) {
            job.piece = Some(piece);
            job.head.clear();
            job.stream = None;
        }
        // Largest first, fills (which cost nothing) last, so that threads finish
        // together. Pieces do not overlap, so any order draws the same picture.
        jobs.sort_by_key(|job| {
            std::cmp::Reverse(
                job.piece
                    .filter(|p| p.fill.is_none())
                    .map_or(0, |p| p.rect.area()),
            )
        });

        // Classify, filter, JPEG: any piece on any thread.
        let queue = Mutex::new(jobs.iter_mut());
        let workers = self.scratch.len().min(pieces.len());
        let (first, others) = self.scratch[..workers].split_at_mut(1);
        let work = |scratch: &mut Scratch| loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some(job) = next else { break };
            if let Some(piece) = job.piece {
                job.stream = prepare(ctx, piece, scratch, &mut job.head, &mut job.data);
                job.literal = job.stream.is_some_and(|s| literal_allowed(ctx, s))
                    && photo_like(job.data.as_slice());
                // Full-colour data deflates about three times slower per byte than
                // palette indices; blocks of literals take a fraction of that.
                job.cost = match job.stream {
                    _ if job.literal => job.data.len / 2,
                    Some(STREAM_FULL_COLOUR) => 3 * job.data.len,
                    Some(_) => job.data.len,
                    None => 0,
                };
            }
        };
        let work = &work;
        std::thread::scope(|s| {
            for scratch in others.iter_mut() {
                s.spawn(move || work(scratch));
            }
            work(&mut first[0]);
        });

        // Deflate: each stream's pieces in order on one thread.
        let mut groups: [Vec<&mut Job>; STREAM_COUNT] = Default::default();
        for job in jobs.iter_mut() {
            if let Some(stream) = job.stream {
                groups[stream].push(job);
            }
        }
        share_load(&mut groups, workers);
        let mut bins: Vec<(usize, Bin)> = (0..workers).map(|_| (0, Vec::new())).collect();
        let mut pairs: Vec<_> = self
            .streams
            .iter_mut()
            .zip(groups)
            .filter(|(_, group)| !group.is_empty())
            .map(|(stream, group)| (load(&group), stream, group))
            .collect();
        // Largest first, each to the least loaded thread.
        pairs.sort_by_key(|&(load, _, _)| std::cmp::Reverse(load));
        for (load, stream, group) in pairs {
            if let Some(bin) = bins.iter_mut().min_by_key(|(total, _)| *total) {
                bin.0 += load;
                bin.1.push((stream, group));
            }
        }
        let deflate_bin = |bin: Bin| {
            for (stream, group) in bin {
                for job in group {
                    stream.write(job.data.as_slice(), job.literal, &mut job.zlib);
                }
            }
        };
        let deflate_bin = &deflate_bin;
        let mut bins = bins
            .into_iter()
            .map(|(_, bin)| bin)
            .filter(|b| !b.is_empty());
        if let Some(mine) = bins.next() {
            std::thread::scope(|s| {
                for bin in bins {
                    s.spawn(move || deflate_bin(bin));
                }
                deflate_bin(mine);
            });
        }

        // Assemble in stream order; the first piece carries pending resets.
        out.reserve(pieces.len());
        for job in jobs.iter() {
            let Some(piece) = job.piece else { continue };
            let mut payload = Vec::with_capacity(job.head.len() + 3 + job.zlib.len);
            payload.extend_from_slice(&job.head);
            if job.stream.is_some() {
                write_compact(job.zlib.len, &mut payload);
                payload.extend_from_slice(job.zlib.as_slice());
            }
            if let Some(control) = payload.first_mut() {
                *control |= std::mem::take(&mut self.pending_resets);
            }
            out.push((piece.rect, payload));
        }
    }
}

/// The part of `rect` inside `bounds` (which starts at the origin).
fn clip(rect: Rect, bounds: Rect) -> Rect {
    let right = rect.right().min(bounds.right());
    let bottom = rect.bottom().min(bounds.bottom());
    // INVARIANT: the clipped edges lie within `bounds`, whose sizes are u16.
    Rect::new(
        rect.x,
        rect.y,
        right.saturating_sub(u32::from(rect.x)) as u16,
        bottom.saturating_sub(u32::from(rect.y)) as u16,
    )
}

/// Streams, each with its pieces in order, for one thread to deflate.
type Bin<'a> = Vec<(&'a mut ZlibStream, Vec<&'a mut Job>)>;

/// The deflate work waiting in `group`, in units of indexed bytes.
fn load(group: &[&mut Job]) -> usize {
    group.iter().map(|job| job.cost).sum()
}

/// With several threads, moves the last pieces of the stream with the most work to
/// the spare stream 3, as much as a thread's fair share, when that stream holds more
/// than a fair share: one thread can then deflate the moved pieces while others
/// deflate the rest. Stream 3 keeps the indexed stream's zlib level (the same as the
/// full-colour one at the default compression level).
fn share_load(groups: &mut [Vec<&mut Job>; STREAM_COUNT], threads: usize) {
    if threads < 2 || !groups[STREAM_SPARE].is_empty() {
        return;
    }
    let total: usize = groups.iter().map(|g| load(g)).sum();
    let Some((busiest, most)) = [STREAM_FULL_COLOUR, STREAM_MONO, STREAM_INDEXED]
        .into_iter()
        .map(|s| (s, load(&groups[s])))
        .max_by_key(|&(_, load)| load)
    else {
        return;
    };
    if groups[busiest].len() < 2 || most * threads <= total {
        return;
    }
    let share = total / threads;
    let mut moved_load = 0;
    let kept = groups[busiest]
        .iter()
        .rposition(|job| {
            moved_load += job.cost;
            moved_load >= share
        })
        .unwrap_or(0)
        .max(1);
    let moved = groups[busiest].split_off(kept);
    for job in moved {
        // The stream number lives in bits 4-5 of the control byte.
        if let Some(control) = job.head.first_mut() {
            *control = (*control & !0x30) | ((STREAM_SPARE as u8) << 4);
        }
        job.stream = Some(STREAM_SPARE);
        groups[STREAM_SPARE].push(job);
    }
}

impl RectEncoder for TightEncoder {
    /// Appends `rect`'s payload; `rect` must be a legal piece (see [`split`]).
    fn encode(
        &mut self,
        fb: &Framebuffer,
        rect: Rect,
        pw: &PixelWriter,
        params: &EncodeParams,
        out: &mut Vec<u8>,
    ) {
        let ctx = Context {
            fb,
            pw,
            config: Config::new(pw, params),
        };
        self.configure(&ctx.config);
        self.encode_piece(&ctx, Piece { rect, fill: None }, out);
    }

    fn trim(&mut self) {
        let threads = self.scratch.len();
        self.scratch = (0..threads).map(|_| Scratch::default()).collect();
        self.data = Filtered::default();
        self.zlib = Filtered::default();
        self.planner = Planner::default();
        self.pieces = Vec::new();
        self.jobs = Vec::new();
    }

    /// Starts all four deflate streams anew; the next rectangle tells the client to
    /// reset its inflaters.
    fn reset(&mut self) {
        for stream in &mut self.streams {
            stream.compress.reset();
            stream.used = false;
            stream.header_sent = false;
        }
        self.pending_resets = 0x0f;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tight::TightDecoder;
    use crate::decode::{RectDecoder, ScanState};
    use crate::error::Measure;
    use crate::pixel::{PixelConverter, PixelFormat};

    const LOSSLESS: EncodeParams = EncodeParams {
        quality: None,
        compress: None,
    };

    fn quality(q: u8) -> EncodeParams {
        EncodeParams {
            quality: Some(q),
            compress: None,
        }
    }

    /// Big-endian 32-bit with blue in the high byte.
    const BGR888_BE: PixelFormat = PixelFormat {
        big_endian: true,
        red_shift: 0,
        blue_shift: 16,
        ..PixelFormat::RGB888
    };

    /// Deterministic noise: a 32-bit LCG.
    struct Lcg(u32);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            self.0 >> 8
        }
    }

    fn image(width: u16, height: u16, mut pixel: impl FnMut(usize, usize) -> u32) -> Framebuffer {
        let mut fb = Framebuffer::new(width, height);
        let w = usize::from(width);
        for (i, p) in fb.pixels_mut().iter_mut().enumerate() {
            *p = pixel(i % w, i / w);
        }
        fb
    }

    /// Dark "glyphs" on a light background: two colours in short runs.
    fn text_like(width: u16, height: u16, seed: u32) -> Framebuffer {
        let mut lcg = Lcg(seed);
        let bits: Vec<bool> = (0..usize::from(width) * usize::from(height))
            .map(|_| lcg.next() % 5 == 0)
            .collect();
        image(width, height, |x, y| {
            if bits[y * usize::from(width) + x] {
                0x0010_2030
            } else {
                0x00f8_f9fa
            }
        })
    }

    /// `colours` random colours in horizontal runs of a few pixels.
    fn few_colours(width: u16, height: u16, colours: usize, seed: u32) -> Framebuffer {
        let mut lcg = Lcg(seed);
        let palette: Vec<u32> = (0..colours).map(|_| lcg.next() & 0x00ff_ffff).collect();
        let mut fb = Framebuffer::new(width, height);
        let mut current = palette[0];
        for (i, p) in fb.pixels_mut().iter_mut().enumerate() {
            if i % 3 == 0 {
                current = palette[lcg.next() as usize % colours];
            }
            *p = current;
        }
        fb
    }

    /// A smooth picture with a little noise: a different colour at almost every pixel.
    fn photo_like(width: u16, height: u16, seed: u32) -> Framebuffer {
        let mut lcg = Lcg(seed);
        image(width, height, |x, y| {
            let (fx, fy) = (x as f64, y as f64);
            let noise = (lcg.next() % 7) as f64;
            let channel = |v: f64| (v.clamp(0.0, 255.0)) as u32;
            let r = channel(128.0 + 100.0 * (fx / 13.0).sin() + noise);
            let g = channel(128.0 + 100.0 * (fy / 11.0).cos() + noise);
            let b = channel(128.0 + 90.0 * ((fx + fy) / 17.0).sin() - noise);
            (r << 16) | (g << 8) | b
        })
    }

    fn converter(format: PixelFormat) -> PixelConverter {
        let mut conv = PixelConverter::new(format);
        if !format.true_colour {
            conv.set_colour_map_entries(0, &PixelWriter::colour_map());
        }
        conv
    }

    /// What a client sees of `rgb`: written by the writer, read back by the
    /// decoder's converter.
    fn reduced(pw: &PixelWriter, conv: &PixelConverter, rgb: u32) -> u32 {
        let mut bytes = Vec::new();
        pw.write(rgb, &mut bytes);
        conv.pixel(&bytes)
    }

    /// Decodes `payloads` in order into a black framebuffer the size of `like`,
    /// checking that each payload measures to exactly its length.
    fn decode_into(
        dec: &mut TightDecoder,
        format: PixelFormat,
        payloads: &[(Rect, Vec<u8>)],
        fb: &mut Framebuffer,
    ) {
        let conv = converter(format);
        for (rect, payload) in payloads {
            let mut longer = payload.clone();
            longer.extend_from_slice(&[0xee; 5]);
            assert_eq!(
                dec.measure(*rect, &conv, &longer, &mut ScanState::default()),
                Ok(Measure::Complete(payload.len())),
                "{rect}"
            );
            dec.decode(*rect, payload, &conv, fb)
                .unwrap_or_else(|e| panic!("{rect}: {e}"));
        }
    }

    fn decode_fresh(
        format: PixelFormat,
        payloads: &[(Rect, Vec<u8>)],
        like: &Framebuffer,
    ) -> Framebuffer {
        let mut fb = Framebuffer::new(like.width(), like.height());
        decode_into(&mut TightDecoder::default(), format, payloads, &mut fb);
        fb
    }

    /// Encodes `rects` one by one through [`RectEncoder::encode`].
    fn encode_each(
        enc: &mut TightEncoder,
        fb: &Framebuffer,
        rects: &[Rect],
        format: PixelFormat,
        params: &EncodeParams,
    ) -> Vec<(Rect, Vec<u8>)> {
        let pw = PixelWriter::new(format);
        rects
            .iter()
            .map(|&rect| {
                let mut out = Vec::new();
                enc.encode(fb, rect, &pw, params, &mut out);
                (rect, out)
            })
            .collect()
    }

    fn encode_batch(
        enc: &mut TightEncoder,
        fb: &Framebuffer,
        rects: &[Rect],
        format: PixelFormat,
        params: &EncodeParams,
    ) -> Vec<(Rect, Vec<u8>)> {
        let mut out = Vec::new();
        enc.encode_many(fb, rects, &PixelWriter::new(format), params, &mut out);
        out
    }

    /// Every pixel of `rect` as the client should see it.
    fn expected(fb: &Framebuffer, rect: Rect, format: PixelFormat) -> Vec<u32> {
        let (pw, conv) = (PixelWriter::new(format), converter(format));
        let pixels = fb.read_rect(rect).expect("inside");
        pixels.into_iter().map(|p| reduced(&pw, &conv, p)).collect()
    }

    fn assert_same(decoded: &Framebuffer, source: &Framebuffer, rect: Rect, format: PixelFormat) {
        let got = decoded.read_rect(rect).expect("inside");
        let want = expected(source, rect, format);
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            let w = usize::from(rect.width);
            panic!(
                "{rect} in {format:?}: pixel ({}, {}) is {:06x}, expected {:06x}",
                i % w,
                i / w,
                got[i],
                want[i]
            );
        }
    }

    fn psnr(a: &[u32], b: &[u32]) -> f64 {
        let mut sum = 0.0;
        for (&p, &q) in a.iter().zip(b) {
            for shift in [16, 8, 0] {
                let d = f64::from((p >> shift) & 0xff) - f64::from((q >> shift) & 0xff);
                sum += d * d;
            }
        }
        let mse = sum / (a.len() * 3) as f64;
        10.0 * (255.0 * 255.0 / mse.max(1e-9)).log10()
    }

    fn control_methods(payloads: &[(Rect, Vec<u8>)]) -> Vec<u8> {
        payloads.iter().map(|(_, p)| p[0] & 0xf0).collect()
    }

    #[test]
    fn photo_like_and_channels_apart() {
        // One all-zero word in 16 is too many; one in 17 is few enough.
        let mut data = vec![1u8; 16 * 8];
        data[..8].fill(0);
        assert!(!super::photo_like(&data));
        data.extend_from_slice(&[1; 8]);
        assert!(super::photo_like(&data));
        assert!(!super::photo_like(&[]));
        assert!(channels_apart(&PixelFormat::RGB888));
        assert!(channels_apart(&PixelFormat::RGB565));
        let overlapping = PixelFormat {
            red_shift: 4,
            ..PixelFormat::RGB888
        };
        assert!(!channels_apart(&overlapping));
    }

    #[test]
    fn fill_rect_hand_computed_bytes() {
        let fb = image(5, 4, |_, _| 0x0012_3456);
        let rect = Rect::new(1, 1, 3, 2);
        let mut enc = TightEncoder::new();
        let out = encode_each(&mut enc, &fb, &[rect], PixelFormat::RGB888, &LOSSLESS);
        // FillCompression, then the TPIXEL as R, G, B.
        assert_eq!(out[0].1, [0x80, 0x12, 0x34, 0x56]);
        // RGB565: r (0x12 * 31 + 127) / 255 = 2, g (0x34 * 63 + 127) / 255 = 13,
        // b (0x56 * 31 + 127) / 255 = 10: 00010 001101 01010 = 0x11aa, little-endian.
        let out = encode_each(&mut enc, &fb, &[rect], PixelFormat::RGB565, &LOSSLESS);
        assert_eq!(out[0].1, [0x80, 0xaa, 0x11]);
        // JPEG allowed changes nothing for one colour.
        let out = encode_each(&mut enc, &fb, &[rect], PixelFormat::RGB888, &quality(5));
        assert_eq!(out[0].1, [0x80, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn gradient_filter_only_where_it_pays() {
        let rect = Rect::new(0, 0, 128, 64);
        let mut lcg = Lcg(7);
        let noise = image(128, 64, |_, _| lcg.next() & 0x00ff_ffff);
        let photo = photo_like(128, 64, 7);
        for (fb, control) in [
            // Noise: copy filter (stream 0, no filter byte).
            (&noise, vec![0x00]),
            // A photo: gradient filter (stream 0, explicit filter, filter 2).
            (&photo, vec![0x40, 0x02]),
        ] {
            let mut enc = TightEncoder::new();
            let out = encode_each(&mut enc, fb, &[rect], PixelFormat::RGB888, &LOSSLESS);
            assert_eq!(out[0].1[..control.len()], control[..]);
            let decoded = decode_fresh(PixelFormat::RGB888, &out, fb);
            assert_same(&decoded, fb, rect, PixelFormat::RGB888);
        }
    }

    #[test]
    fn tiny_rects_are_sent_raw() {
        let colours = [0x00ff_0000, 0x0000_ff00, 0x0000_00ff];
        let fb = image(3, 1, |x, _| colours[x]);
        let rect = Rect::new(0, 0, 3, 1);
        let mut enc = TightEncoder::new();
        // 8-bit true colour (BGR233, red in the low bits): copy filter, no filter id,
        // stream 0, three 1-byte pixels (9 bytes of data would still be raw).
        let out = encode_each(&mut enc, &fb, &[rect], PixelFormat::BGR233, &LOSSLESS);
        assert_eq!(out[0].1, [0x00, 0x07, 0x38, 0xc0]);
        // RGB888: the gradient filter; in the first row the prediction is the left
        // neighbour: (ff,00,00) - 0, (00,ff,00) - (ff,00,00), (00,00,ff) - (00,ff,00).
        let out = encode_each(&mut enc, &fb, &[rect], PixelFormat::RGB888, &LOSSLESS);
        assert_eq!(
            out[0].1,
            [0x40, 0x02, 0xff, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0x01, 0xff]
        );
        // Two colours in 4x2: palette filter on stream 1, one bitmap byte per row.
        let fb = image(4, 2, |x, y| if (x + y) % 3 == 0 { 0x0001_0203 } else { 0 });
        let out = encode_each(
            &mut enc,
            &fb,
            &[Rect::new(0, 0, 4, 2)],
            PixelFormat::RGB888,
            &LOSSLESS,
        );
        // Row 0: x = 0, 3 are the first colour (index 0): 0111 padded = 0x60.
        // Row 1: x = 2 is the first colour: 1101 padded = 0xd0.
        assert_eq!(
            out[0].1,
            [0x50, 0x01, 0x01, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x60, 0xd0]
        );
    }

    #[test]
    fn compact_lengths() {
        let mut out = Vec::new();
        for len in [0, 127, 128, 10000, 16383, 16384, MAX_COMPACT_LENGTH] {
            write_compact(len, &mut out);
        }
        assert_eq!(
            out,
            [0x00, 0x7f, 0x80, 0x01, 0x90, 0x4e, 0xff, 0x7f, 0x80, 0x80, 0x01, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn split_makes_legal_pieces_covering_the_rect() {
        for rect in [
            Rect::new(0, 0, 1920, 1080),
            Rect::new(7, 9, 4097, 3),
            Rect::new(3, 5, 2048, 40),
            Rect::new(0, 0, 1, 65535),
            Rect::new(10, 20, 100, 100),
            Rect::new(65535 - 3000, 0, 3000, 30),
        ] {
            let pieces: Vec<Rect> = split(rect).collect();
            let mut covered = 0;
            for piece in &pieces {
                assert!(
                    piece.width <= MAX_WIDTH && piece.area() <= MAX_AREA,
                    "{piece}"
                );
                assert!(!piece.is_empty());
                assert!(
                    piece.x >= rect.x && piece.right() <= rect.right(),
                    "{piece}"
                );
                assert!(
                    piece.y >= rect.y && piece.bottom() <= rect.bottom(),
                    "{piece}"
                );
                covered += piece.area();
            }
            for (i, a) in pieces.iter().enumerate() {
                for b in &pieces[i + 1..] {
                    assert!(!a.intersects(b), "{a} and {b}");
                }
            }
            assert_eq!(covered, rect.area(), "{rect}");
        }
        assert_eq!(
            split(Rect::new(1, 2, 30, 40)).collect::<Vec<_>>(),
            [Rect::new(1, 2, 30, 40)]
        );
        assert_eq!(split(Rect::new(1, 2, 0, 40)).count(), 0);
        assert_eq!(split(Rect::new(1, 2, 30, 0)).count(), 0);
    }

    #[test]
    fn lossless_round_trips_in_several_formats() {
        let pictures = [
            ("solid", image(37, 23, |_, _| 0x0045_7b9d)),
            ("text", text_like(61, 29, 1)),
            ("few colours", few_colours(53, 31, 40, 2)),
            ("256 colours", few_colours(97, 67, 256, 3)),
            ("photo", photo_like(83, 41, 4)),
            ("thin", photo_like(1, 57, 5)),
            ("flat", few_colours(203, 1, 7, 6)),
        ];
        for format in [
            PixelFormat::RGB888,
            BGR888_BE,
            PixelFormat::RGB565,
            PixelFormat::RGB555,
            PixelFormat::BGR233,
            PixelFormat::COLOURMAP8,
        ] {
            for (name, fb) in &pictures {
                let whole = fb.bounds();
                let mut enc = TightEncoder::new();
                let mut dec = TightDecoder::default();
                let mut decoded = Framebuffer::new(fb.width(), fb.height());
                let out = encode_each(&mut enc, fb, &[whole], format, &LOSSLESS);
                decode_into(&mut dec, format, &out, &mut decoded);
                assert_same(&decoded, fb, whole, format);
                // An inner rectangle too, at an odd offset, on the same streams.
                decoded.pixels_mut().fill(0);
                if fb.width() < 3 {
                    continue;
                }
                let inner = Rect::new(1, 1, fb.width() - 2, fb.height() - 1);
                let out = encode_each(&mut enc, fb, &[inner], format, &LOSSLESS);
                decode_into(&mut dec, format, &out, &mut decoded);
                assert_same(&decoded, fb, inner, format);
                assert!(!out[0].1.is_empty(), "{name}");
            }
        }
    }

    #[test]
    fn classification_picks_the_method() {
        let mut enc = TightEncoder::new();
        let cases = [
            (image(40, 40, |_, _| 7), 0x80),
            (text_like(40, 40, 9), 0x50),
            (few_colours(40, 40, 30, 9), 0x60),
            // 1600 pixels allow 1600 / 16 = 100 colours: 150 is full colour.
            (few_colours(40, 40, 150, 9), 0x40),
            (photo_like(40, 40, 9), 0x40),
        ];
        for (fb, method) in &cases {
            let out = encode_each(&mut enc, fb, &[fb.bounds()], PixelFormat::RGB888, &LOSSLESS);
            assert_eq!(out[0].1[0] & 0xf0, *method);
        }
        // With JPEG: photos go to JPEG; palettes of text-like runs stay lossless even
        // past 96 colours; 8-bit formats never get JPEG.
        let photo = photo_like(40, 40, 9);
        let out = encode_each(
            &mut enc,
            &photo,
            &[photo.bounds()],
            PixelFormat::RGB888,
            &quality(6),
        );
        assert_eq!(out[0].1[0], 0x90);
        let out = encode_each(
            &mut enc,
            &photo,
            &[photo.bounds()],
            PixelFormat::BGR233,
            &quality(6),
        );
        assert_eq!(out[0].1[0] & 0xf0, 0x00);
        // 256 colours in runs of four.
        let runs = image(64, 64, |x, y| ((x / 4) + (y / 4) * 16) as u32 * 0x0000_0103);
        let out = encode_each(
            &mut enc,
            &runs,
            &[runs.bounds()],
            PixelFormat::RGB888,
            &quality(6),
        );
        assert_eq!(out[0].1[0] & 0xf0, 0x60);
    }

    #[test]
    fn jpeg_quality_levels() {
        let fb = photo_like(131, 67, 11);
        let rect = fb.bounds();
        let source = fb.read_rect(rect).expect("inside");
        let mut enc = TightEncoder::new();
        let mut sizes = Vec::new();
        for (level, min_db) in [(9, 45.0), (8, 35.0), (5, 32.0), (0, 27.0)] {
            for format in [PixelFormat::RGB888, BGR888_BE] {
                let out = encode_each(&mut enc, &fb, &[rect], format, &quality(level));
                assert_eq!(out[0].1[0], 0x90, "level {level}");
                let decoded = decode_fresh(format, &out, &fb);
                let db = psnr(&source, &decoded.read_rect(rect).expect("inside"));
                assert!(db >= min_db, "level {level}: {db:.1} dB");
                if format == PixelFormat::RGB888 {
                    sizes.push(out[0].1.len());
                }
            }
        }
        // Lower levels are smaller.
        assert!(sizes.windows(2).all(|w| w[0] > w[1]), "{sizes:?}");
        // 16 bits per pixel: compared with the picture as the client can show it.
        let out = encode_each(&mut enc, &fb, &[rect], PixelFormat::RGB565, &quality(8));
        assert_eq!(out[0].1[0], 0x90);
        let decoded = decode_fresh(PixelFormat::RGB565, &out, &fb);
        let want = expected(&fb, rect, PixelFormat::RGB565);
        let db = psnr(&want, &decoded.read_rect(rect).expect("inside"));
        assert!(db >= 30.0, "{db:.1} dB");
    }

    /// The first luminance quantiser and the luminance sampling factors of a JFIF
    /// stream, from its DQT and SOF0 segments.
    fn jpeg_dc_quantiser_and_sampling(jpeg: &[u8]) -> (u8, u8) {
        let (mut pos, mut dc, mut sampling) = (2, None, None);
        while let [0xff, marker, high, low, ..] = jpeg[pos..] {
            let len = usize::from(high) << 8 | usize::from(low);
            let segment = &jpeg[pos + 4..pos + 2 + len];
            match marker {
                0xdb if segment[0] == 0 => dc = Some(segment[1]),
                0xc0 => sampling = Some(segment[7]),
                0xda => break,
                _ => {}
            }
            pos += 2 + len;
        }
        (dc.expect("DQT"), sampling.expect("SOF0"))
    }

    #[test]
    fn jpeg_follows_the_quality_table() {
        let fb = photo_like(48, 32, 13);
        let mut enc = TightEncoder::new();
        // TigerVNC: qualities 15, 29, 41, 42, 62, 77, 79, 86, 92, 100; 4:2:0 for
        // levels 0-2, 4:2:2 for 3-5, 4:4:4 above. The libjpeg scaling of the Annex K
        // luminance DC entry 16: 5000 / q (q < 50) or 200 - 2q percent, rounded.
        let dc = [53, 28, 19, 19, 12, 7, 7, 4, 3, 1];
        let sampling = [0x22, 0x22, 0x22, 0x21, 0x21, 0x21, 0x11, 0x11, 0x11, 0x11];
        for level in 0..10u8 {
            let out = encode_each(
                &mut enc,
                &fb,
                &[fb.bounds()],
                PixelFormat::RGB888,
                &quality(level),
            );
            let payload = &out[0].1;
            assert_eq!(payload[0], 0x90);
            let (len, start) = if payload[1] & 0x80 == 0 {
                (usize::from(payload[1]), 2)
            } else if payload[2] & 0x80 == 0 {
                (
                    usize::from(payload[1] & 0x7f) | usize::from(payload[2]) << 7,
                    3,
                )
            } else {
                (
                    usize::from(payload[1] & 0x7f)
                        | usize::from(payload[2] & 0x7f) << 7
                        | usize::from(payload[3]) << 14,
                    4,
                )
            };
            assert_eq!(payload.len(), start + len);
            let jpeg = &payload[start..];
            assert_eq!(&jpeg[..2], [0xff, 0xd8]);
            assert_eq!(
                jpeg_dc_quantiser_and_sampling(jpeg),
                (dc[usize::from(level)], sampling[usize::from(level)]),
                "level {level}"
            );
        }
        // Past 9 counts as 9.
        let nine = encode_each(
            &mut enc,
            &fb,
            &[fb.bounds()],
            PixelFormat::RGB888,
            &quality(9),
        );
        let high = encode_each(
            &mut enc,
            &fb,
            &[fb.bounds()],
            PixelFormat::RGB888,
            &quality(200),
        );
        assert_eq!(nine, high);
    }

    #[test]
    fn rects_share_streams() {
        // Several rectangles of each kind through one encoder and one decoder.
        let fb = {
            let text = text_like(64, 64, 21);
            let few = few_colours(64, 64, 20, 22);
            let photo = photo_like(64, 64, 23);
            image(192, 64, |x, y| {
                let src = match x / 64 {
                    0 => &text,
                    1 => &few,
                    _ => &photo,
                };
                src.pixel((x % 64) as u16, y as u16).unwrap_or(0)
            })
        };
        let mut rects = Vec::new();
        for y in (0..64).step_by(16) {
            for x in (0..192).step_by(32) {
                rects.push(Rect::new(x, y, 32, 16));
            }
        }
        for format in [PixelFormat::RGB888, PixelFormat::RGB565] {
            let mut enc = TightEncoder::new();
            let mut dec = TightDecoder::default();
            let mut decoded = Framebuffer::new(192, 64);
            for round in 0..3 {
                let out = encode_each(&mut enc, &fb, &rects, format, &LOSSLESS);
                let methods = control_methods(&out);
                for method in [0x40, 0x50, 0x60] {
                    assert!(methods.contains(&method), "{methods:02x?}");
                }
                // No resets in a running stream.
                assert!(out.iter().all(|(_, p)| p[0] & 0x0f == 0), "round {round}");
                decode_into(&mut dec, format, &out, &mut decoded);
                assert_same(&decoded, &fb, fb.bounds(), format);
                decoded.pixels_mut().fill(0);
            }
        }
    }

    #[test]
    fn reset_sets_the_reset_bits_once() {
        let fb = few_colours(64, 48, 60, 31);
        let rects: Vec<Rect> = (0..3).map(|i| Rect::new(0, i * 16, 64, 16)).collect();
        let format = PixelFormat::RGB888;
        let mut enc = TightEncoder::new();
        let mut dec = TightDecoder::default();
        let mut decoded = Framebuffer::new(64, 48);
        let before = encode_each(&mut enc, &fb, &rects, format, &LOSSLESS);
        decode_into(&mut dec, format, &before, &mut decoded);
        enc.reset();
        let after = encode_each(&mut enc, &fb, &rects, format, &LOSSLESS);
        assert_eq!(after[0].1[0] & 0x0f, 0x0f);
        assert!(after[1..].iter().all(|(_, p)| p[0] & 0x0f == 0));
        // The continuing decoder resets as told...
        decode_into(&mut dec, format, &after, &mut decoded);
        assert_same(&decoded, &fb, fb.bounds(), format);
        // ...and so does one that was reset (or is new) on its own.
        let mut reset_dec = TightDecoder::default();
        let mut fresh = Framebuffer::new(64, 48);
        decode_into(&mut reset_dec, format, &before, &mut fresh);
        RectDecoder::reset(&mut reset_dec);
        decode_into(&mut reset_dec, format, &after, &mut fresh);
        assert_same(&fresh, &fb, fb.bounds(), format);
        // Without the reset, the second batch needs the first one's history.
        let mut enc = TightEncoder::new();
        let _ = encode_each(&mut enc, &fb, &rects, format, &LOSSLESS);
        let continued = encode_each(&mut enc, &fb, &rects, format, &LOSSLESS);
        let conv = converter(format);
        let mut new_dec = TightDecoder::default();
        let mut scratch_fb = Framebuffer::new(64, 48);
        assert!(continued
            .iter()
            .any(|(rect, p)| new_dec.decode(*rect, p, &conv, &mut scratch_fb).is_err()));
        // A reset also carries over to a fill or JPEG rectangle.
        enc.reset();
        let solid = image(8, 8, |_, _| 5);
        let out = encode_each(&mut enc, &solid, &[solid.bounds()], format, &LOSSLESS);
        assert_eq!(out[0].1, [0x8f, 0, 0, 5]);
    }

    #[test]
    fn compression_level_changes_restart_streams() {
        let fb = few_colours(64, 32, 80, 41);
        let rects = [Rect::new(0, 0, 64, 16), Rect::new(0, 16, 64, 16)];
        let format = PixelFormat::RGB888;
        let mut enc = TightEncoder::new();
        let mut dec = TightDecoder::default();
        let mut decoded = Framebuffer::new(64, 32);
        for compress in [Some(2), Some(9), Some(9), None, Some(0), Some(1)] {
            let params = EncodeParams {
                quality: None,
                compress,
            };
            let out = encode_each(&mut enc, &fb, &rects, format, &params);
            decode_into(&mut dec, format, &out, &mut decoded);
            assert_same(&decoded, &fb, fb.bounds(), format);
        }
    }

    /// A desktop: gradient background, a window with text, a photo.
    fn desktop(width: u16, height: u16) -> Framebuffer {
        let text = text_like(width, height, 51);
        let photo = photo_like(width, height, 52);
        image(width, height, |x, y| {
            let (w, h) = (usize::from(width), usize::from(height));
            if x > w / 10 && x < w / 2 && y > h / 10 && y < h * 8 / 10 {
                if y % 20 < 12 && x > w / 8 {
                    text.pixel(x as u16, y as u16).unwrap_or(0)
                } else {
                    0x00f8_f9fa
                }
            } else if x > w * 6 / 10 && y > h / 2 {
                photo.pixel(x as u16, y as u16).unwrap_or(0)
            } else {
                0x001d_3557 + (y * 40 / h) as u32 * 0x0001_0202
            }
        })
    }

    #[test]
    fn encode_many_covers_the_rects_exactly() {
        let fb = desktop(1000, 563);
        for threads in [1, 2, 3] {
            for params in [LOSSLESS, quality(8)] {
                for format in [PixelFormat::RGB888, PixelFormat::RGB565] {
                    let rects = [Rect::new(0, 0, 1000, 200), Rect::new(0, 200, 1000, 363)];
                    let mut enc = TightEncoder::with_threads(threads);
                    let out = encode_batch(&mut enc, &fb, &rects, format, &params);
                    let mut coverage = vec![0u8; fb.pixels().len()];
                    for (rect, payload) in &out {
                        // Fills are only limited in width.
                        assert!(rect.width <= MAX_WIDTH, "{rect}");
                        assert!(
                            rect.area() <= MAX_AREA || payload[0] & 0xf0 == 0x80,
                            "{rect}"
                        );
                        for y in rect.y..rect.y + rect.height {
                            for x in rect.x..rect.x + rect.width {
                                coverage[usize::from(y) * 1000 + usize::from(x)] += 1;
                            }
                        }
                    }
                    assert!(coverage.iter().all(|&c| c == 1), "threads {threads}");
                    let methods = control_methods(&out);
                    assert!(methods.contains(&0x80), "large solid areas become fills");
                    let decoded = decode_fresh(format, &out, &fb);
                    if params.quality.is_none() {
                        assert_same(&decoded, &fb, fb.bounds(), format);
                    } else {
                        assert!(methods.contains(&0x90));
                        let want = expected(&fb, fb.bounds(), format);
                        let db = psnr(&want, decoded.pixels());
                        assert!(db >= 30.0, "{db:.1} dB");
                    }
                }
            }
        }
    }

    #[test]
    fn encode_many_cuts_fills_and_photos_apart() {
        // Wider than a Tight rectangle may be: the fill is cut to 2048 pixels.
        let fb = image(4100, 20, |_, _| 0x0033_6699);
        let mut enc = TightEncoder::new();
        let out = encode_batch(
            &mut enc,
            &fb,
            &[fb.bounds()],
            PixelFormat::RGB888,
            &LOSSLESS,
        );
        let expected = [
            Rect::new(0, 0, 2048, 20),
            Rect::new(2048, 0, 2048, 20),
            Rect::new(4096, 0, 4, 20),
        ];
        assert_eq!(out.iter().map(|(r, _)| *r).collect::<Vec<_>>(), expected);
        assert!(out.iter().all(|(_, p)| p == &[0x80, 0x33, 0x66, 0x99]));
        // Left half: stripes five rows high (never a solid block, few colours); right
        // half: a photo. JPEG gets the photo and at most one block column more.
        let photo = photo_like(256, 128, 3);
        let fb = image(512, 128, |x, y| {
            if x < 256 {
                (y / 5) as u32 * 0x0000_0101
            } else {
                photo.pixel((x - 256) as u16, y as u16).unwrap_or(0)
            }
        });
        let out = encode_batch(
            &mut enc,
            &fb,
            &[fb.bounds()],
            PixelFormat::RGB888,
            &quality(7),
        );
        let jpeg_area: usize = out
            .iter()
            .filter(|(_, p)| p[0] == 0x90)
            .map(|(r, _)| r.area())
            .sum();
        assert!(
            (256 * 128..=(256 + 16) * 128).contains(&jpeg_area),
            "{jpeg_area}"
        );
    }

    #[test]
    fn encode_many_keeps_streams_across_batches_and_threads() {
        // Mostly indexed data, so that two threads share it out over streams 2 and 3.
        let fb = few_colours(600, 300, 200, 61);
        let format = PixelFormat::RGB888;
        let mut enc = TightEncoder::with_threads(2);
        let mut dec = TightDecoder::default();
        let mut decoded = Framebuffer::new(600, 300);
        let mut streams = Vec::new();
        for round in 0..3 {
            let out = encode_batch(&mut enc, &fb, &[fb.bounds()], format, &LOSSLESS);
            streams.extend(out.iter().map(|(_, p)| (p[0] >> 4) & 3));
            if round == 1 {
                enc.reset();
            }
            decode_into(&mut dec, format, &out, &mut decoded);
            assert_same(&decoded, &fb, fb.bounds(), format);
            decoded.pixels_mut().fill(0);
        }
        assert!(streams.contains(&2) && streams.contains(&3), "{streams:?}");
    }

    #[test]
    fn encode_many_clips_and_skips_empty_rects() {
        let fb = text_like(50, 40, 71);
        let mut enc = TightEncoder::with_threads(2);
        let rects = [
            Rect::new(40, 30, 100, 100),
            Rect::new(0, 0, 0, 10),
            Rect::new(5, 5, 3, 0),
        ];
        let out = encode_batch(&mut enc, &fb, &rects, PixelFormat::RGB888, &LOSSLESS);
        assert_eq!(out.iter().map(|(r, _)| r.area()).sum::<usize>(), 10 * 10);
        let decoded = decode_fresh(PixelFormat::RGB888, &out, &fb);
        assert_same(
            &decoded,
            &fb,
            Rect::new(40, 30, 10, 10),
            PixelFormat::RGB888,
        );
    }

    #[test]
    fn empty_rect_through_encode() {
        let fb = text_like(10, 10, 81);
        let mut enc = TightEncoder::new();
        let out = encode_each(
            &mut enc,
            &fb,
            &[Rect::new(3, 3, 0, 4)],
            PixelFormat::RGB888,
            &LOSSLESS,
        );
        assert_eq!(out[0].1, [0x00]);
        let _ = decode_fresh(PixelFormat::RGB888, &out, &fb);
    }

    #[test]
    fn wide_and_large_pieces() {
        // A full-width 2048 piece of 32 rows of noise-like pixels, and a narrow tall one.
        let fb = photo_like(2048, 40, 91);
        let mut enc = TightEncoder::new();
        let rects = [Rect::new(0, 0, 2048, 32), Rect::new(0, 32, 2048, 8)];
        for params in [LOSSLESS, quality(9)] {
            let out = encode_each(&mut enc, &fb, &rects, PixelFormat::RGB888, &params);
            let decoded = decode_fresh(PixelFormat::RGB888, &out, &fb);
            if params.quality.is_none() {
                assert_same(&decoded, &fb, fb.bounds(), PixelFormat::RGB888);
            }
        }
    }
}
