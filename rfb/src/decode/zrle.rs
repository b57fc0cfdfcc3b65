//! ZRLE encoding (16): zlib-compressed 64x64 tiles of raw, solid, packed-palette and
//! run-length data. The tile format is shared with TRLE ([`super::trle`]).
//!
//! Layout ([rfbproto, ZRLE Encoding]): `4 /* length */ + length /* zlibData */`, the
//! data inflated through the connection's one zlib stream. Inflated, it holds the tiles
//! left to right, top to bottom (the last column and row smaller), each
//! `1 /* subencoding */` and then:
//!
//! - 0, raw: `width * height * cpixel` CPIXELs;
//! - 1, solid: `cpixel`;
//! - 2 to 16, packed palette: `n * cpixel` palette, then rows of 1-, 2- or 4-bit indices
//!   (palettes of 2, 3-4 and 5-16 colours), most significant bits first, each row
//!   padded to a whole byte;
//! - 128, plain RLE: runs of `cpixel` + run length;
//! - 130 to 255, palette RLE: `(n - 128) * cpixel` palette, then runs of one index byte,
//!   followed by a run length when its top bit is set;
//! - 17 to 127 and 129 are unused and refused (TRLE gives 127 and 129 a meaning).
//!
//! A run length is one more than the sum of its bytes, which continue while they are
//! 255. Runs carry on from one row of a tile to the next but never past the tile.
//!
//! [rfbproto, ZRLE Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#zrle-encoding

use super::hextile::TileGrid;
use super::zlib::{inflate_bounded, measure_length_prefixed};
use super::zstream::ZStream;
use super::{Reader, RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::{CPixel, PixelConverter};

/// ZRLE's tile size.
const TILE_SIZE: u16 = 64;

/// The largest palette a tile may carry (palette RLE with subencoding 255).
const MAX_PALETTE: usize = 127;

/// The two users of the tile format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileFormat {
    /// ZRLE: 127 and 129 are invalid.
    Zrle,
    /// TRLE: 127 and 129 reuse the previous tile's palette.
    Trle,
}

impl TileFormat {
    pub(crate) fn context(self) -> &'static str {
        match self {
            TileFormat::Zrle => "zrle tile",
            TileFormat::Trle => "trle tile",
        }
    }

    pub(crate) fn tile_size(self) -> u16 {
        match self {
            TileFormat::Zrle => TILE_SIZE,
            TileFormat::Trle => 16,
        }
    }
}

/// Subencodings with a meaning of their own.
pub(crate) mod subencoding {
    pub const RAW: u8 = 0;
    pub const SOLID: u8 = 1;
    /// TRLE only: packed palette with the previous tile's palette.
    pub const PACKED_REUSE: u8 = 127;
    pub const PLAIN_RLE: u8 = 128;
    /// TRLE only: palette RLE with the previous tile's palette.
    pub const PALETTE_RLE_REUSE: u8 = 129;
}

pub(crate) fn invalid_subencoding(format: TileFormat, value: u8) -> DecodeError {
    DecodeError::invalid(format.context(), format!("subencoding {value}"))
}

/// Bits per packed index for a palette of `colours` entries; a one-colour palette
/// (TRLE's reuse of a solid tile's colour) needs none.
pub(crate) fn index_bits(colours: usize) -> Option<usize> {
    match colours {
        1 => Some(0),
        2 => Some(1),
        3 | 4 => Some(2),
        5..=16 => Some(4),
        _ => None,
    }
}

/// Bytes of packed indices for a `width` by `height` tile.
pub(crate) fn packed_len(bits: usize, width: usize, height: usize) -> usize {
    (width * bits).div_ceil(8) * height
}

/// Reads a run length at `data[*pos..]`: one plus the sum of its bytes, up to and
/// including the first that is not 255. `None` if the data ends first; an error if the
/// run would cover more than the `left` pixels remaining in the tile.
#[inline]
pub(crate) fn run_length(
    data: &[u8],
    pos: &mut usize,
    left: usize,
    format: TileFormat,
) -> Result<Option<usize>, DecodeError> {
    let mut len = 1usize;
    loop {
        let Some(&b) = data.get(*pos) else {
            return Ok(None);
        };
        *pos += 1;
        len += usize::from(b);
        if len > left {
            return Err(DecodeError::invalid(
                format.context(),
                format!("run of {len} pixels passes the end of the tile ({left} pixels left)"),
            ));
        }
        if b != 255 {
            return Ok(Some(len));
        }
    }
}

/// How a rectangle's CPIXELs turn into canonical colours, decided once per rectangle.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// 3 bytes blue, green, red: the value is the colour.
    Rgb24Le,
    /// 3 bytes red, green, blue.
    Rgb24Be,
    /// Any other 3-byte CPIXEL: assemble, shift into place in the 32-bit pixel, map.
    Three { big_endian: bool, shift: u32 },
    /// A full PIXEL.
    Full,
}

/// Reads CPIXELs (ZRLE and TRLE) with the layout chosen once per rectangle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CPixelReader<'a> {
    conv: &'a PixelConverter,
    size: usize,
    layout: Layout,
}

impl<'a> CPixelReader<'a> {
    pub(crate) fn new(conv: &'a PixelConverter) -> CPixelReader<'a> {
        let f = conv.format();
        let layout = match f.cpixel() {
            CPixel::Full => Layout::Full,
            three => {
                let shift = if three == CPixel::High3 { 8 } else { 0 };
                let direct = (f.red_max, f.green_max, f.blue_max) == (255, 255, 255)
                    && (
                        u32::from(f.red_shift),
                        u32::from(f.green_shift),
                        u32::from(f.blue_shift),
                    ) == (16 + shift, 8 + shift, shift);
                match (direct, f.big_endian) {
                    (true, false) => Layout::Rgb24Le,
                    (true, true) => Layout::Rgb24Be,
                    (false, big_endian) => Layout::Three { big_endian, shift },
                }
            }
        };
        CPixelReader {
            conv,
            size: conv.cpixel_size(),
            layout,
        }
    }

    /// Bytes per CPIXEL.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The colour of the CPIXEL at the front of `b` (at least [`Self::size`] bytes).
    #[inline(always)]
    pub(crate) fn read(&self, b: &[u8]) -> u32 {
        match self.layout {
            Layout::Rgb24Le => u32::from(b[0]) | (u32::from(b[1]) << 8) | (u32::from(b[2]) << 16),
            Layout::Rgb24Be => (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]),
            Layout::Three { big_endian, shift } => {
                let v = if big_endian {
                    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
                } else {
                    u32::from(b[0]) | (u32::from(b[1]) << 8) | (u32::from(b[2]) << 16)
                };
                self.conv.map(v << shift)
            }
            Layout::Full => self.conv.pixel(b),
        }
    }

    /// Converts `dst.len()` CPIXELs from `src`.
    pub(crate) fn read_row(&self, src: &[u8], dst: &mut [u32]) {
        match self.layout {
            Layout::Rgb24Le => {
                for (d, s) in dst.iter_mut().zip(src.chunks_exact(3)) {
                    *d = u32::from(s[0]) | (u32::from(s[1]) << 8) | (u32::from(s[2]) << 16);
                }
            }
            Layout::Rgb24Be => {
                for (d, s) in dst.iter_mut().zip(src.chunks_exact(3)) {
                    *d = (u32::from(s[0]) << 16) | (u32::from(s[1]) << 8) | u32::from(s[2]);
                }
            }
            Layout::Three { .. } => {
                for (d, s) in dst.iter_mut().zip(src.chunks_exact(3)) {
                    *d = self.read(s);
                }
            }
            Layout::Full => self.conv.convert_row(src, dst),
        }
    }
}

/// A tile's palette; TRLE keeps the last one for the next tiles of the rectangle.
#[derive(Debug, Clone)]
pub(crate) struct Palette {
    colours: [u32; MAX_PALETTE],
    /// Entries in use; 0 before any tile has set one.
    len: usize,
}

impl Default for Palette {
    fn default() -> Palette {
        Palette {
            colours: [0; MAX_PALETTE],
            len: 0,
        }
    }
}

impl Palette {
    /// Reads `n` (≤ 127) CPIXELs into the palette.
    fn read(
        &mut self,
        r: &mut Reader<'_>,
        px: &CPixelReader<'_>,
        n: usize,
    ) -> Result<(), DecodeError> {
        let bytes = r.take(n * px.size())?;
        for (c, b) in self.colours[..n]
            .iter_mut()
            .zip(bytes.chunks_exact(px.size()))
        {
            *c = px.read(b);
        }
        self.len = n;
        Ok(())
    }

    /// The previous tile's palette, for TRLE's 127 and 129.
    fn reused(&self, format: TileFormat, value: u8) -> Result<&[u32], DecodeError> {
        if self.len == 0 {
            return Err(DecodeError::invalid(
                format.context(),
                format!("subencoding {value} reuses a palette but no tile has sent one"),
            ));
        }
        Ok(&self.colours[..self.len])
    }
}

fn palette_index_error(format: TileFormat, index: usize, colours: usize) -> DecodeError {
    DecodeError::invalid(
        format.context(),
        format!("palette index {index} with a palette of {colours} colours"),
    )
}

fn truncated(format: TileFormat) -> DecodeError {
    DecodeError::Truncated {
        context: format.context(),
        needed: 1,
    }
}

/// The framebuffer pixels a tile covers: `area[row * stride + x]` for the tile's
/// `x < width`, `row < height`.
struct TileArea<'a> {
    area: &'a mut [u32],
    stride: usize,
    width: usize,
    height: usize,
}

impl TileArea<'_> {
    #[inline]
    fn row(&mut self, y: usize) -> &mut [u32] {
        let start = y * self.stride;
        &mut self.area[start..start + self.width]
    }

    fn fill(&mut self, colour: u32) {
        for y in 0..self.height {
            self.row(y).fill(colour);
        }
    }
}

/// Unpacks one row of `BITS`-bit indices; returns a mask of the indices seen.
#[inline(always)]
fn unpack_row<const BITS: usize>(src: &[u8], dst: &mut [u32], lut: &[u32; 16]) -> u32 {
    let per_byte = 8 / BITS;
    let mask = (1u8 << BITS) - 1;
    let mut seen = 0u32;
    let mut chunks = dst.chunks_exact_mut(per_byte);
    let mut bytes = src.iter();
    for (chunk, &byte) in (&mut chunks).zip(&mut bytes) {
        for (i, d) in chunk.iter_mut().enumerate() {
            let index = (byte >> (8 - BITS * (i + 1))) & mask;
            seen |= 1 << index;
            *d = lut[usize::from(index & 15)];
        }
    }
    let tail = chunks.into_remainder();
    if let Some(&byte) = bytes.next() {
        for (i, d) in tail.iter_mut().enumerate() {
            let index = (byte >> (8 - BITS * (i + 1))) & mask;
            seen |= 1 << index;
            *d = lut[usize::from(index & 15)];
        }
    }
    seen
}

fn decode_packed(
    format: TileFormat,
    r: &mut Reader<'_>,
    palette: &[u32],
    t: &mut TileArea<'_>,
) -> Result<(), DecodeError> {
    let Some(bits) = index_bits(palette.len()) else {
        return Err(DecodeError::invalid(
            format.context(),
            format!(
                "packed palette with {} colours (reused from a palette RLE tile)",
                palette.len()
            ),
        ));
    };
    if bits == 0 {
        t.fill(palette[0]);
        return Ok(());
    }
    let row_bytes = (t.width * bits).div_ceil(8);
    let data = r.take(packed_len(bits, t.width, t.height))?;
    let mut lut = [0u32; 16];
    lut[..palette.len()].copy_from_slice(palette);
    let mut seen = 0u32;
    for (y, src) in data.chunks_exact(row_bytes).enumerate() {
        let dst = t.row(y);
        seen |= match bits {
            1 => unpack_row::<1>(src, dst, &lut),
            2 => unpack_row::<2>(src, dst, &lut),
            _ => unpack_row::<4>(src, dst, &lut),
        };
    }
    let out_of_range = seen >> palette.len();
    if out_of_range != 0 {
        let index = palette.len() + out_of_range.trailing_zeros() as usize;
        return Err(palette_index_error(format, index, palette.len()));
    }
    Ok(())
}

fn decode_plain_rle(
    format: TileFormat,
    r: &mut Reader<'_>,
    px: &CPixelReader<'_>,
    t: &mut TileArea<'_>,
) -> Result<(), DecodeError> {
    let data = r.rest();
    let size = px.size();
    let (width, height) = (t.width, t.height);
    let mut pos = 0;
    // The run being drawn: its colour and the pixels it still covers.
    let (mut colour, mut run_left) = (0u32, 0usize);
    for y in 0..height {
        let row = t.row(y);
        let mut x = 0;
        while x < width {
            if run_left == 0 {
                let Some(b) = data.get(pos..pos + size) else {
                    return Err(truncated(format));
                };
                colour = px.read(b);
                pos += size;
                let left = (height - y) * width - x;
                run_left = run_length(data, &mut pos, left, format)?.ok_or(truncated(format))?;
            }
            let n = run_left.min(width - x);
            row[x..x + n].fill(colour);
            x += n;
            run_left -= n;
        }
    }
    r.take(pos)?;
    Ok(())
}

fn decode_palette_rle(
    format: TileFormat,
    r: &mut Reader<'_>,
    palette: &[u32],
    t: &mut TileArea<'_>,
) -> Result<(), DecodeError> {
    let data = r.rest();
    let (width, height) = (t.width, t.height);
    let mut pos = 0;
    // A run carried over from the previous row: its colour and the pixels it still covers.
    let (mut colour, mut run_left) = (0u32, 0usize);
    for y in 0..height {
        let row = t.row(y);
        let mut x = run_left.min(width);
        row[..x].fill(colour);
        run_left -= x;
        while x < width {
            let Some(&b) = data.get(pos) else {
                return Err(truncated(format));
            };
            pos += 1;
            let index = usize::from(b & 0x7f);
            let Some(&c) = palette.get(index) else {
                return Err(palette_index_error(format, index, palette.len()));
            };
            if b & 0x80 == 0 {
                row[x] = c;
                x += 1;
                continue;
            }
            let left = (height - y) * width - x;
            let len = run_length(data, &mut pos, left, format)?.ok_or(truncated(format))?;
            let n = len.min(width - x);
            row[x..x + n].fill(c);
            x += n;
            (colour, run_left) = (c, len - n);
        }
    }
    r.take(pos)?;
    Ok(())
}

/// Decodes one tile from `r` into `pixels` (a framebuffer `stride` pixels wide).
/// `tile` is in framebuffer coordinates and the caller has checked that it lies inside.
pub(crate) fn decode_tile(
    format: TileFormat,
    r: &mut Reader<'_>,
    px: &CPixelReader<'_>,
    palette: &mut Palette,
    pixels: &mut [u32],
    stride: usize,
    tile: Rect,
) -> Result<(), DecodeError> {
    let (width, height) = (usize::from(tile.width), usize::from(tile.height));
    if width == 0 || height == 0 {
        return Ok(());
    }
    let start = usize::from(tile.y) * stride + usize::from(tile.x);
    let mut t = TileArea {
        area: &mut pixels[start..start + (height - 1) * stride + width],
        stride,
        width,
        height,
    };
    let value = r.u8()?;
    match value {
        subencoding::RAW => {
            let row_bytes = width * px.size();
            let data = r.take(row_bytes * height)?;
            for (y, src) in data.chunks_exact(row_bytes).enumerate() {
                px.read_row(src, t.row(y));
            }
        }
        subencoding::SOLID => {
            let colour = px.read(r.take(px.size())?);
            t.fill(colour);
            if format == TileFormat::Trle {
                palette.colours[0] = colour;
                palette.len = 1;
            }
        }
        2..=16 => {
            palette.read(r, px, usize::from(value))?;
            decode_packed(format, r, &palette.colours[..palette.len], &mut t)?;
        }
        subencoding::PACKED_REUSE if format == TileFormat::Trle => {
            decode_packed(format, r, palette.reused(format, value)?, &mut t)?;
        }
        subencoding::PLAIN_RLE => decode_plain_rle(format, r, px, &mut t)?,
        subencoding::PALETTE_RLE_REUSE if format == TileFormat::Trle => {
            decode_palette_rle(format, r, palette.reused(format, value)?, &mut t)?;
        }
        130..=255 => {
            palette.read(r, px, usize::from(value - 128))?;
            decode_palette_rle(format, r, &palette.colours[..palette.len], &mut t)?;
        }
        _ => return Err(invalid_subencoding(format, value)),
    }
    Ok(())
}

/// Decodes all tiles of `rect` (checked to lie inside `fb`) from the front of `data`;
/// returns how many bytes they took. Adds no damage.
pub(crate) fn decode_tiles(
    format: TileFormat,
    rect: Rect,
    data: &[u8],
    px: &CPixelReader<'_>,
    fb: &mut Framebuffer,
) -> Result<usize, DecodeError> {
    let grid = TileGrid::new(rect, format.tile_size());
    let stride = usize::from(fb.width());
    let pixels = fb.pixels_mut();
    let mut r = Reader::new(data, format.context());
    let mut palette = Palette::default();
    for index in 0..grid.count() {
        let t = grid.tile(index);
        // INVARIANT: the tile lies inside `rect`, which lies inside the framebuffer.
        let tile = Rect::new(rect.x + t.x, rect.y + t.y, t.width, t.height);
        decode_tile(format, &mut r, px, &mut palette, pixels, stride, tile)?;
    }
    Ok(r.position())
}

/// The most bytes `rect`'s tiles may inflate to: per tile a subencoding byte and a
/// palette of 127 CPIXELs, and per pixel a CPIXEL and a run-length byte (plain RLE with
/// runs of one), which also covers two bytes per pixel (palette RLE with runs of one
/// written with a length byte).
fn inflate_limit(rect: Rect, cpixel_size: usize) -> usize {
    let tiles = u64::from(TileGrid::new(rect, TILE_SIZE).count());
    let per_tile = 1 /* subencoding */ + (MAX_PALETTE * cpixel_size) as u64 /* palette */;
    let per_pixel = (cpixel_size as u64 + 1).max(2);
    let limit = tiles * per_tile + rect.area() as u64 * per_pixel;
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// Decoder for ZRLE; holds the connection's zlib stream.
#[derive(Debug, Default)]
pub struct ZrleDecoder {
    stream: ZStream,
    /// Inflated tiles, kept between rectangles to reuse the allocation.
    inflated: Vec<u8>,
}

impl RectDecoder for ZrleDecoder {
    fn measure(
        &self,
        rect: Rect,
        _: &PixelConverter,
        buf: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        measure_length_prefixed(rect, buf, "zrle rectangle")
    }

    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        fb.check(&rect)?;
        let mut r = Reader::new(payload, "zrle rectangle");
        let length = r.u32()?;
        let data = r.take(usize::try_from(length).unwrap_or(usize::MAX))?;
        let px = CPixelReader::new(conv);
        let n = inflate_bounded(
            &mut self.stream,
            data,
            &mut self.inflated,
            inflate_limit(rect, px.size()),
            "zrle data",
        )?;
        let inflated = &self.inflated[..n];
        let result = decode_tiles(TileFormat::Zrle, rect, inflated, &px, fb);
        // Tiles decoded before an error have been drawn.
        fb.add_damage(rect);
        let used = result?;
        if used < n {
            return Err(DecodeError::invalid(
                "zrle data",
                format!("{} bytes after the last tile", n - used),
            ));
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.stream.reset();
    }
}

/// A tile encoder and synthetic screen content for tests of ZRLE and TRLE: an
/// independent writer of the format, so decoded pixels can be compared with the image
/// that was encoded.
#[cfg(test)]
pub(crate) mod test_support {
    /// Writes a CPIXEL for a canonical colour.
    pub(crate) type PutPixel = fn(u32, &mut Vec<u8>);

    /// RGB888 little-endian as 3-byte CPIXELs: blue, green, red.
    pub(crate) fn put_rgb24(c: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&c.to_le_bytes()[..3]);
    }

    /// How the encoder picks among the subencodings that can represent a tile.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Choice {
        /// The shortest, as a server would.
        Shortest,
        /// Cycle through all candidates by tile number, to exercise every one.
        Cycle,
    }

    pub(crate) struct TileEncoder {
        pub put: PutPixel,
        /// Allow TRLE's palette reuse (127, 129).
        pub trle: bool,
        pub choice: Choice,
        previous: Vec<u32>,
        tiles: usize,
        /// How many tiles used each subencoding.
        pub used: [usize; 256],
    }

    fn push_run_length(len: usize, out: &mut Vec<u8>) {
        let mut rest = len - 1;
        while rest >= 255 {
            out.push(255);
            rest -= 255;
        }
        out.push(rest as u8);
    }

    fn runs(pixels: &[u32]) -> Vec<(u32, usize)> {
        let mut runs: Vec<(u32, usize)> = Vec::new();
        for &p in pixels {
            match runs.last_mut() {
                Some((c, n)) if *c == p => *n += 1,
                _ => runs.push((p, 1)),
            }
        }
        runs
    }

    fn packed(pixels: &[u32], w: usize, palette: &[u32]) -> Vec<u8> {
        let bits = match palette.len() {
            1 => return Vec::new(),
            2 => 1,
            3 | 4 => 2,
            _ => 4,
        };
        let mut out = Vec::new();
        for row in pixels.chunks(w) {
            let mut byte = 0u8;
            let mut used = 0;
            for p in row {
                let index = palette.iter().position(|c| c == p).expect("in palette") as u8;
                byte |= index << (8 - bits - used);
                used += bits;
                if used == 8 {
                    out.push(byte);
                    byte = 0;
                    used = 0;
                }
            }
            if used > 0 {
                // Padding bits set, which a decoder must ignore.
                out.push(byte | (0xff >> used));
            }
        }
        out
    }

    impl TileEncoder {
        pub(crate) fn new(put: PutPixel, trle: bool, choice: Choice) -> TileEncoder {
            TileEncoder {
                put,
                trle,
                choice,
                previous: Vec::new(),
                tiles: 0,
                used: [0; 256],
            }
        }

        /// Appends one tile of `pixels` (`w` wide, row-major).
        pub(crate) fn tile(&mut self, pixels: &[u32], w: usize, out: &mut Vec<u8>) {
            let put = self.put;
            let mut palette: Vec<u32> = Vec::new();
            for &p in pixels {
                if !palette.contains(&p) {
                    palette.push(p);
                    if palette.len() > 127 {
                        break;
                    }
                }
            }
            let n = palette.len();
            let reuse = self.trle && palette == self.previous;
            // (bytes, palette the decoder keeps afterwards)
            let mut candidates: Vec<(Vec<u8>, Option<Vec<u32>>)> = Vec::new();
            let mut raw = vec![0u8];
            pixels.iter().for_each(|&p| put(p, &mut raw));
            candidates.push((raw, None));
            if n == 1 {
                let mut solid = vec![1u8];
                put(palette[0], &mut solid);
                candidates.push((solid, self.trle.then(|| palette.clone())));
            }
            if (2..=16).contains(&n) {
                let mut t = vec![n as u8];
                palette.iter().for_each(|&c| put(c, &mut t));
                t.extend(packed(pixels, w, &palette));
                candidates.push((t, Some(palette.clone())));
            }
            if reuse && n <= 16 {
                let mut t = vec![127u8];
                t.extend(packed(pixels, w, &palette));
                candidates.push((t, None));
            }
            let runs = runs(pixels);
            let mut plain = vec![128u8];
            for &(c, len) in &runs {
                put(c, &mut plain);
                push_run_length(len, &mut plain);
            }
            candidates.push((plain, None));
            if (2..=127).contains(&n) || reuse && n <= 127 {
                let mut body = Vec::new();
                for &(c, len) in &runs {
                    let index = palette.iter().position(|&p| p == c).expect("in palette") as u8;
                    if len == 1 {
                        body.push(index);
                    } else {
                        body.push(index | 0x80);
                        push_run_length(len, &mut body);
                    }
                }
                if (2..=127).contains(&n) {
                    let mut t = vec![128 + n as u8];
                    palette.iter().for_each(|&c| put(c, &mut t));
                    t.extend_from_slice(&body);
                    candidates.push((t, Some(palette.clone())));
                }
                if reuse {
                    let mut t = vec![129u8];
                    t.extend_from_slice(&body);
                    candidates.push((t, None));
                }
            }
            let pick = match self.choice {
                Choice::Shortest => candidates
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (bytes, _))| bytes.len())
                    .map(|(i, _)| i)
                    .unwrap_or(0),
                Choice::Cycle => self.tiles % candidates.len(),
            };
            self.tiles += 1;
            let (bytes, keeps) = candidates.swap_remove(pick);
            self.used[usize::from(bytes[0])] += 1;
            if let Some(p) = keeps {
                self.previous = p;
            }
            out.extend_from_slice(&bytes);
        }

        /// Appends every tile of the `w` by `h` image at `pixels`.
        pub(crate) fn rect(&mut self, pixels: &[u32], w: usize, h: usize, size: usize) -> Vec<u8> {
            self.previous.clear();
            let mut out = Vec::new();
            for ty in (0..h).step_by(size) {
                for tx in (0..w).step_by(size) {
                    let (tw, th) = (size.min(w - tx), size.min(h - ty));
                    let tile: Vec<u32> = (ty..ty + th)
                        .flat_map(|y| pixels[y * w + tx..y * w + tx + tw].iter().copied())
                        .collect();
                    self.tile(&tile, tw, &mut out);
                }
            }
            out
        }
    }

    /// Something like a desktop: a flat background, a gradient panel, windows with
    /// title bars and anti-aliased text, and a photo-like area with many colours.
    pub(crate) fn desktop(w: usize, h: usize) -> Vec<u32> {
        let mut seed = 0x1234_5678u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut img = vec![0x2e3440u32; w * h];
        for y in 0..h / 12 {
            let c = 0x203040 + (y as u32 % 64) * 0x010101;
            img[y * w..(y + 1) * w].fill(c);
        }
        let windows = [
            (w / 20, h / 8, w / 2, h / 2),
            (w / 3, h / 3, w / 2, h / 2),
            (w / 10, h * 2 / 3, w / 3, h / 4),
        ];
        let ink = [0x000000, 0x404040, 0x909090, 0xd0d0d0];
        // 64 glyphs: vertical and horizontal strokes with grey edges, like hinted text.
        let glyphs: Vec<Vec<Option<u32>>> = (0..64)
            .map(|_| {
                let mut g = vec![None; 7 * 14];
                let strokes = 2 + next() % 3;
                for _ in 0..strokes {
                    let (x0, y0) = (next() as usize % 6, 2 + next() as usize % 10);
                    if next() % 2 == 0 {
                        for y in y0..(y0 + 2 + next() as usize % 8).min(14) {
                            g[y * 7 + x0] = Some(ink[0]);
                            g[y * 7 + x0 + 1] = Some(ink[1 + next() as usize % 3]);
                        }
                    } else {
                        for x in x0..(x0 + 2 + next() as usize % 4).min(7) {
                            g[y0 * 7 + x] = Some(ink[next() as usize % 2]);
                        }
                    }
                }
                g
            })
            .collect();
        for &(wx, wy, ww, wh) in &windows {
            for y in wy..(wy + wh).min(h) {
                let row = &mut img[y * w..(y + 1) * w];
                let right = (wx + ww).min(w);
                if y < wy + 24 {
                    row[wx..right].fill(0x3b4252);
                } else {
                    row[wx..right].fill(0xffffff);
                }
            }
            // Text: lines of glyphs from a fixed set of 8x14 anti-aliased shapes.
            let mut y = wy + 30;
            while y + 14 < (wy + wh).min(h) {
                let mut x = wx + 8;
                let line_end = (wx + ww).min(w).saturating_sub(8 + (next() as usize % 200));
                while x + 8 < line_end {
                    let glyph = &glyphs[next() as usize % glyphs.len()];
                    if next() % 6 != 0 {
                        for gy in 0..14 {
                            for gx in 0..7 {
                                if let Some(c) = glyph[gy * 7 + gx] {
                                    img[(y + gy) * w + x + gx] = c;
                                }
                            }
                        }
                    }
                    x += 8;
                }
                y += 18;
            }
        }
        // A photo: smooth colours plus noise, 1/6 of the width and height.
        let (px, py, pw, ph) = (w * 2 / 3, h / 10, w / 6, h / 6);
        for y in py..(py + ph).min(h) {
            for x in px..(px + pw).min(w) {
                let n = next() % 16;
                let r = ((x * 255 / w) as u32 + n) & 0xff;
                let g = ((y * 255 / h) as u32 + n) & 0xff;
                let b = ((x + y) as u32 / 3 + n) & 0xff;
                img[y * w + x] = (r << 16) | (g << 8) | b;
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{desktop, put_rgb24, Choice, TileEncoder};
    use super::*;
    use crate::decode::payload_limit;
    use crate::decode::zlib::deflate_sync;
    use crate::pixel::PixelFormat;
    use flate2::{Compress, Compression};

    const A: u32 = 0x112233;
    const B: u32 = 0xaabbcc;
    const C: u32 = 0x010203;
    const D: u32 = 0xffffff;
    const E: u32 = 0x000000;

    /// An RGB888 CPIXEL: blue, green, red.
    fn cp(c: u32) -> [u8; 3] {
        [c as u8, (c >> 8) as u8, (c >> 16) as u8]
    }

    fn tiles(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn payload(c: &mut Compress, inflated: &[u8]) -> Vec<u8> {
        let z = deflate_sync(c, inflated);
        let mut p = (z.len() as u32).to_be_bytes().to_vec();
        p.extend(z);
        p
    }

    /// Compresses `inflated` as the first rectangle of a stream and decodes it.
    fn decode_with(
        conv: &PixelConverter,
        fb: &mut Framebuffer,
        rect: Rect,
        inflated: &[u8],
    ) -> Result<(), DecodeError> {
        let mut c = Compress::new(Compression::default(), true);
        let p = payload(&mut c, inflated);
        let d = &mut ZrleDecoder::default();
        assert_eq!(
            d.measure(rect, conv, &p, &mut ScanState::default()),
            Ok(Measure::Complete(p.len()))
        );
        d.decode(rect, &p, conv, fb)
    }

    fn rgb888() -> PixelConverter {
        PixelConverter::new(PixelFormat::RGB888)
    }

    fn decode_rgb888(w: u16, h: u16, inflated: &[u8]) -> Result<Vec<u32>, DecodeError> {
        let mut fb = Framebuffer::new(w, h);
        decode_with(&rgb888(), &mut fb, Rect::new(0, 0, w, h), inflated)?;
        Ok(fb.pixels().to_vec())
    }

    #[test]
    fn raw_tile() {
        let t = tiles(&[&[0], &cp(A), &cp(B), &cp(C), &cp(D), &cp(E), &cp(A)]);
        assert_eq!(decode_rgb888(3, 2, &t), Ok(vec![A, B, C, D, E, A]));
    }

    #[test]
    fn solid_tile_inside_a_larger_framebuffer() {
        let mut fb = Framebuffer::new(5, 5);
        let rect = Rect::new(1, 2, 3, 2);
        decode_with(&rgb888(), &mut fb, rect, &tiles(&[&[1], &cp(B)])).expect("decode");
        assert_eq!(fb.read_rect(rect).expect("in bounds"), [B; 6]);
        assert_eq!(fb.pixels().iter().filter(|&&p| p == B).count(), 6);
        assert_eq!(fb.damage().bounds(), rect);
    }

    #[test]
    fn packed_palette_of_two_with_row_padding() {
        // Width 3: row 0 indices 1 0 1 → 101 + padding 11111; row 1 0 1 1 → 011 + 00000.
        let t = tiles(&[&[2], &cp(A), &cp(B), &[0b1011_1111, 0b0110_0000]]);
        assert_eq!(decode_rgb888(3, 2, &t), Ok(vec![B, A, B, A, B, B]));
    }

    #[test]
    fn packed_palette_of_three_uses_two_bits() {
        // Width 5: indices 2 1 0 2 1 → 10 01 00 10 | 01 + padding 111111.
        let t = tiles(&[&[3], &cp(A), &cp(B), &cp(C), &[0b1001_0010, 0b0111_1111]]);
        assert_eq!(decode_rgb888(5, 1, &t), Ok(vec![C, B, A, C, B]));
    }

    #[test]
    fn packed_palette_of_five_uses_four_bits() {
        let p = [A, B, C, D, E];
        // Width 3: row 0 indices 4 0 3 → 0x40 0x3f (padding f); row 1 1 2 4 → 0x12 0x4a.
        let t = tiles(&[
            &[5],
            &cp(A),
            &cp(B),
            &cp(C),
            &cp(D),
            &cp(E),
            &[0x40, 0x3f, 0x12, 0x4a],
        ]);
        assert_eq!(
            decode_rgb888(3, 2, &t),
            Ok(vec![p[4], p[0], p[3], p[1], p[2], p[4]])
        );
    }

    #[test]
    fn packed_palette_of_sixteen_on_an_odd_width() {
        let palette: Vec<u32> = (0..16).map(|i| i * 0x111111).collect();
        let mut t = vec![16u8];
        palette.iter().for_each(|&c| t.extend(cp(c)));
        // Width 3, height 1: indices 15 7 9 → 0xf7 0x9_ with padding 0x5.
        t.extend([0xf7, 0x95]);
        assert_eq!(
            decode_rgb888(3, 1, &t),
            Ok(vec![0xffffff, 0x777777, 0x999999])
        );
    }

    #[test]
    fn packed_index_outside_the_palette_is_refused() {
        // Palette of 3, two bits per index: index 3 has no colour.
        let t = tiles(&[&[3], &cp(A), &cp(B), &cp(C), &[0b0001_1011]]);
        let err = decode_rgb888(4, 1, &t).expect_err("index 3");
        assert_eq!(
            err.to_string(),
            "invalid zrle tile: palette index 3 with a palette of 3 colours"
        );
        // Index 5 of a palette of 5 (four bits).
        let t = tiles(&[&[5], &cp(A), &cp(B), &cp(C), &cp(D), &cp(E), &[0x05]]);
        assert!(decode_rgb888(2, 1, &t).is_err());
    }

    #[test]
    fn plain_rle_runs_across_rows() {
        // 3x2: a run of 4 A then 2 B.
        let t = tiles(&[&[128], &cp(A), &[3], &cp(B), &[1]]);
        assert_eq!(decode_rgb888(3, 2, &t), Ok(vec![A, A, A, A, B, B]));
    }

    #[test]
    fn palette_rle_single_pixels_and_runs() {
        // B, A×3, B, B: index 1; index 0 + 128 with length 3 (byte 2); 1; 1.
        let t = tiles(&[&[130], &cp(A), &cp(B), &[0x01, 0x80, 2, 0x01, 0x01]]);
        assert_eq!(decode_rgb888(3, 2, &t), Ok(vec![B, A, A, A, B, B]));
        // A run of two written with a length byte, then a run of one written with one.
        let t = tiles(&[&[130], &cp(A), &cp(B), &[0x81, 1, 0x80, 0]]);
        assert_eq!(decode_rgb888(3, 1, &t), Ok(vec![B, B, A]));
    }

    #[test]
    fn long_runs_use_255_bytes() {
        // 64x64 = 4096 pixels: 4095 = 16 * 255 + 15.
        let mut t = vec![128];
        t.extend(cp(C));
        t.extend([255; 16]);
        t.push(15);
        assert_eq!(decode_rgb888(64, 64, &t), Ok(vec![C; 4096]));
        // Palette RLE: 1 pixel of A then a run of 4095 B: 4094 = 16 * 255 + 14.
        let mut t = vec![130];
        t.extend(cp(A));
        t.extend(cp(B));
        t.extend([0x00, 0x81]);
        t.extend([255; 16]);
        t.push(14);
        let mut expected = vec![B; 4096];
        expected[0] = A;
        assert_eq!(decode_rgb888(64, 64, &t), Ok(expected));
    }

    #[test]
    fn runs_past_the_tile_are_refused() {
        // One more than the 4096 pixels of the tile.
        let mut t = vec![128];
        t.extend(cp(C));
        t.extend([255; 16]);
        t.push(16);
        let err = decode_rgb888(64, 64, &t).expect_err("4097");
        assert_eq!(
            err.to_string(),
            "invalid zrle tile: run of 4097 pixels passes the end of the tile (4096 pixels left)"
        );
        // A long chain of 255 bytes stops as soon as it passes the tile.
        let mut t = vec![128];
        t.extend(cp(C));
        t.extend([255; 1000]);
        assert!(matches!(
            decode_rgb888(64, 64, &t),
            Err(DecodeError::Invalid { .. })
        ));
        // After part of the tile is covered: 3x2, 4 pixels, then a run of 3.
        let t = tiles(&[&[130], &cp(A), &cp(B), &[0x80, 3, 0x81, 2]]);
        let err = decode_rgb888(3, 2, &t).expect_err("past the end");
        assert_eq!(
            err.to_string(),
            "invalid zrle tile: run of 3 pixels passes the end of the tile (2 pixels left)"
        );
        // A run into the next tile is still past this tile: 65x1, tile 0 is 64 wide.
        let t = tiles(&[&[128], &cp(A), &[64], &[1], &cp(B)]);
        assert!(decode_rgb888(65, 1, &t).is_err());
    }

    #[test]
    fn palette_rle_index_outside_the_palette_is_refused() {
        let t = tiles(&[&[131], &cp(A), &cp(B), &cp(C), &[0x02, 0x83, 0]]);
        let err = decode_rgb888(2, 1, &t).expect_err("index 3");
        assert_eq!(
            err.to_string(),
            "invalid zrle tile: palette index 3 with a palette of 3 colours"
        );
    }

    #[test]
    fn unused_subencodings_are_refused() {
        for value in [17u8, 64, 126, 127, 129] {
            let mut t = vec![value];
            t.extend([0; 64]);
            let err = decode_rgb888(2, 2, &t).expect_err("unused");
            assert_eq!(
                err.to_string(),
                format!("invalid zrle tile: subencoding {value}")
            );
        }
    }

    #[test]
    fn edge_tiles_are_smaller() {
        // 65x66: tiles 64x64, 1x64, 64x2 and 1x2.
        let mut t = vec![1];
        t.extend(cp(A));
        // 1x64 packed, 1 bit: each row one byte, the index in the top bit.
        t.extend([2]);
        t.extend(cp(B));
        t.extend(cp(C));
        t.extend((0..64).map(|y| if y % 2 == 1 { 0xff } else { 0x7f }));
        // 64x2 palette RLE: 100 D then 28 E.
        t.extend([130]);
        t.extend(cp(D));
        t.extend(cp(E));
        t.extend([0x80, 99, 0x81, 27]);
        // 1x2 raw.
        t.push(0);
        t.extend(cp(B));
        t.extend(cp(C));
        let pixels = decode_rgb888(65, 66, &t).expect("decode");
        let at = |x: usize, y: usize| pixels[y * 65 + x];
        assert_eq!(at(0, 0), A);
        assert_eq!(at(63, 63), A);
        for y in 0..64 {
            assert_eq!(at(64, y), if y % 2 == 1 { C } else { B }, "row {y}");
        }
        for i in 0..128 {
            assert_eq!(at(i % 64, 64 + i / 64), if i < 100 { D } else { E }, "{i}");
        }
        assert_eq!((at(64, 64), at(64, 65)), (B, C));
    }

    #[test]
    fn rgb565_cpixels_are_full_pixels() {
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let px = |v: u16| v.to_le_bytes();
        // 66x1: a 64x1 plain RLE tile (red ×63, 16/31 red ×1) and a 2x1 raw tile.
        let t = tiles(&[
            &[128],
            &px(0xf800),
            &[62],
            &px(16 << 11),
            &[0],
            &[0],
            &px(0x07e0),
            &px(0x001f),
        ]);
        let mut fb = Framebuffer::new(66, 1);
        decode_with(&conv, &mut fb, Rect::new(0, 0, 66, 1), &t).expect("decode");
        let mut expected = vec![0xff0000; 63];
        expected.extend([0x840000, 0x00ff00, 0x0000ff]);
        assert_eq!(fb.pixels(), &expected[..]);
    }

    #[test]
    fn three_byte_cpixel_layouts() {
        // Big-endian RGB888: CPIXEL bytes red, green, blue.
        let be = PixelConverter::new(PixelFormat {
            big_endian: true,
            ..PixelFormat::RGB888
        });
        let mut fb = Framebuffer::new(2, 1);
        decode_with(
            &be,
            &mut fb,
            Rect::new(0, 0, 2, 1),
            &[0, 0x11, 0x22, 0x33, 0xaa, 0xbb, 0xcc],
        )
        .expect("decode");
        assert_eq!(fb.pixels(), &[0x112233, 0xaabbcc]);
        // Colours in the top three bytes (shifts 24, 16, 8), little-endian: the CPIXEL
        // is bytes 1..4 of the pixel, blue, green, red.
        let high = PixelConverter::new(PixelFormat {
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            ..PixelFormat::RGB888
        });
        decode_with(
            &high,
            &mut fb,
            Rect::new(0, 0, 2, 1),
            &[130, 0x33, 0x22, 0x11, 0xcc, 0xbb, 0xaa, 0x01, 0x00],
        )
        .expect("decode");
        assert_eq!(fb.pixels(), &[0xaabbcc, 0x112233]);
        // Blue-green-red order (red in the low byte): bytes red, green, blue.
        let bgr = PixelConverter::new(PixelFormat {
            red_shift: 0,
            blue_shift: 16,
            ..PixelFormat::RGB888
        });
        decode_with(&bgr, &mut fb, Rect::new(0, 0, 2, 1), &[1, 0x11, 0x22, 0x33]).expect("decode");
        assert_eq!(fb.pixels(), &[0x112233, 0x112233]);
        // Depth 16 in 32 bits (5-6-5 in the low bytes): still 3-byte CPIXELs.
        let deep = PixelConverter::new(PixelFormat {
            bits_per_pixel: 32,
            ..PixelFormat::RGB565
        });
        assert_eq!(deep.cpixel_size(), 3);
        decode_with(
            &deep,
            &mut fb,
            Rect::new(0, 0, 2, 1),
            &[0, 0x00, 0xf8, 0, 0x1f, 0x00, 0],
        )
        .expect("decode");
        assert_eq!(fb.pixels(), &[0xff0000, 0x0000ff]);
    }

    #[test]
    fn two_rectangles_share_the_stream() {
        let conv = rgb888();
        let mut c = Compress::new(Compression::best(), true);
        let first = tiles(&[&[130], &cp(A), &cp(B), &[0x01, 0x80, 2, 0x01, 0x01]]);
        // The same bytes again: the second rectangle's deflate data refers back.
        let p1 = payload(&mut c, &first);
        let p2 = payload(&mut c, &first);
        let mut d = ZrleDecoder::default();
        let mut fb = Framebuffer::new(6, 2);
        d.decode(Rect::new(0, 0, 3, 2), &p1, &conv, &mut fb)
            .expect("first");
        d.decode(Rect::new(3, 0, 3, 2), &p2, &conv, &mut fb)
            .expect("second");
        assert_eq!(fb.pixels(), &[B, A, A, B, A, A, A, B, B, A, B, B]);
        assert!(ZrleDecoder::default()
            .decode(Rect::new(3, 0, 3, 2), &p2, &conv, &mut fb)
            .is_err());
        // An empty rectangle's data still goes through the stream.
        let mut c = Compress::new(Compression::best(), true);
        let empty = payload(&mut c, &[]);
        let p3 = payload(&mut c, &first);
        let mut d = ZrleDecoder::default();
        d.decode(Rect::new(0, 0, 0, 0), &empty, &conv, &mut fb)
            .expect("empty");
        d.decode(Rect::new(0, 0, 3, 2), &p3, &conv, &mut fb)
            .expect("after empty");
    }

    #[test]
    fn round_trip_every_subencoding() {
        // Tiles cycle through every subencoding that can carry them; the decoded
        // framebuffer must equal the image.
        let (w, h) = (301usize, 203usize);
        let img = desktop(w, h);
        let mut enc = TileEncoder::new(put_rgb24, false, Choice::Cycle);
        let t = enc.rect(&img, w, h, 64);
        let pixels = decode_rgb888(w as u16, h as u16, &t).expect("decode");
        assert!(pixels == img, "decoded pixels differ from the image");
        let mut enc = TileEncoder::new(put_rgb24, false, Choice::Shortest);
        let t = enc.rect(&img, w, h, 64);
        let pixels = decode_rgb888(w as u16, h as u16, &t).expect("decode");
        assert!(pixels == img, "decoded pixels differ from the image");
    }

    #[test]
    fn truncated_tiles_and_trailing_data() {
        let t = tiles(&[&[130], &cp(A), &cp(B), &[0x01, 0x80, 2, 0x01, 0x01]]);
        for n in 0..t.len() {
            let err = decode_rgb888(3, 2, &t[..n]).expect_err("truncated");
            assert!(matches!(err, DecodeError::Truncated { .. }), "{n}: {err}");
        }
        let mut long = t.clone();
        long.push(0);
        let err = decode_rgb888(3, 2, &long).expect_err("trailing");
        assert_eq!(
            err.to_string(),
            "invalid zrle data: 1 bytes after the last tile"
        );
        // The payload shorter than its length field.
        let mut c = Compress::new(Compression::default(), true);
        let p = payload(&mut c, &t);
        let mut fb = Framebuffer::new(3, 2);
        let err = ZrleDecoder::default()
            .decode(Rect::new(0, 0, 3, 2), &p[..p.len() - 1], &rgb888(), &mut fb)
            .expect_err("short");
        assert!(
            matches!(err, DecodeError::Truncated { needed: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn zlib_garbage_bombs_and_huge_lengths() {
        let conv = rgb888();
        let rect = Rect::new(0, 0, 64, 64);
        let mut fb = Framebuffer::new(64, 64);
        let mut garbage = vec![0, 0, 0, 32];
        garbage.extend([0xa5; 32]);
        let err = ZrleDecoder::default()
            .decode(rect, &garbage, &conv, &mut fb)
            .expect_err("garbage");
        assert!(matches!(err, DecodeError::Zlib { .. }), "{err}");
        // 8 MiB of raw-tile zeros for a 64x64 rectangle: the worst legal tile is
        // 1 + 127 * 3 + 4096 * 4 bytes.
        let mut c = Compress::new(Compression::best(), true);
        let bomb = payload(&mut c, &vec![0u8; 8 << 20]);
        let mut d = ZrleDecoder::default();
        let err = d.decode(rect, &bomb, &conv, &mut fb).expect_err("bomb");
        assert!(
            matches!(err, DecodeError::TooLong { limit: 16766, .. }),
            "{err}"
        );
        assert!(d.inflated.capacity() < 1 << 20);
        let mut scan = ScanState::default();
        let err = d
            .measure(rect, &conv, &[0xff, 0xff, 0xff, 0xff], &mut scan)
            .expect_err("2^32-1");
        assert_eq!(
            err,
            DecodeError::TooLong {
                context: "zrle rectangle",
                length: u64::from(u32::MAX),
                limit: payload_limit(rect)
            }
        );
        assert_eq!(
            d.measure(rect, &conv, &[0, 0, 1], &mut scan),
            Ok(Measure::Need(4))
        );
        assert_eq!(
            d.measure(rect, &conv, &[0, 0, 1, 0, 9], &mut scan),
            Ok(Measure::Need(4 + 256))
        );
        let err = d
            .decode(Rect::new(1, 0, 64, 64), &garbage, &conv, &mut fb)
            .expect_err("outside");
        assert!(matches!(err, DecodeError::OutOfBounds { .. }), "{err}");
    }

    #[test]
    fn inflate_limit_covers_the_worst_legal_tiles() {
        // Every pixel its own plain RLE run, in a 64x64 and a 1x1 tile with RGB888.
        let rect = Rect::new(0, 0, 65, 64);
        let mut t = Vec::new();
        for i in 0..(64 * 64 + 64) {
            // Tile 0 has 4096 pixels, tile 1 (1x64) the last 64.
            if i == 0 || i == 4096 {
                t.push(128);
            }
            t.extend(cp(i as u32 & 1));
            t.push(0);
        }
        assert!(t.len() <= inflate_limit(rect, 3));
        assert_eq!(inflate_limit(rect, 3), 2 * (1 + 127 * 3) + 65 * 64 * 4);
        assert!(decode_rgb888(65, 64, &t).is_ok());
        assert_eq!(inflate_limit(Rect::new(0, 0, 0, 7), 4), 0);
    }

    /// Decoding speed on desktop-like content; run with
    /// `cargo test --release -p rfb --lib zrle::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let (w, h) = (1920usize, 1080usize);
        let img = desktop(w, h);
        let mut enc = TileEncoder::new(put_rgb24, false, Choice::Shortest);
        let inflated = enc.rect(&img, w, h, 64);
        let mut c = Compress::new(Compression::new(6), true);
        let p = payload(&mut c, &inflated);
        let conv = rgb888();
        let rect = Rect::new(0, 0, w as u16, h as u16);
        let mut fb = Framebuffer::new(w as u16, h as u16);
        let mut d = ZrleDecoder::default();
        // The best of several batches: the machine may be busy with other work.
        let rounds = 10;
        let mut best = f64::MAX;
        for _ in 0..10 {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                d.reset();
                d.decode(rect, &p, &conv, &mut fb).expect("decode");
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        let secs = best;
        assert!(fb.pixels() == &img[..]);
        println!(
            "zrle: {} bytes compressed, {} inflated; {:.0} MPixel/s",
            p.len(),
            inflated.len(),
            (w * h * rounds) as f64 / secs / 1e6
        );
    }
}
