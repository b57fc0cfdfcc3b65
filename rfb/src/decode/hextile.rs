//! Hextile encoding (5): 16x16 tiles, each Raw or a background with subrectangles.
//!
//! Layout ([rfbproto, Hextile Encoding]): tiles left to right, top to bottom, the last
//! column and row smaller when the rectangle is not a multiple of 16. Each tile is
//! `1 /* subencoding-mask */`, then either `width * height * bpp` Raw pixels, or in order
//! `bpp /* background */` if BackgroundSpecified, `bpp /* foreground */` if
//! ForegroundSpecified, `1 /* number-of-subrectangles */` if AnySubrects, and per
//! subrectangle `bpp /* colour */` if SubrectsColoured then
//! `1 /* x << 4 | y */ + 1 /* (width - 1) << 4 | (height - 1) */`.
//!
//! The background and foreground carry over from tile to tile within a rectangle (a Raw
//! tile leaves them as they were). They do not carry over between rectangles: the spec
//! requires the first non-Raw tile of every rectangle to specify its background, and a
//! tile that relies on a colour never given in its rectangle is refused. A tile with
//! both ForegroundSpecified and SubrectsColoured (which the spec forbids) is read as its
//! bytes lay it out: the foreground is taken and the subrectangles use their own colours.
//!
//! [rfbproto, Hextile Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#hextile-encoding

use super::{Reader, RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::PixelConverter;

const RAW: u8 = 1;
const BACKGROUND_SPECIFIED: u8 = 2;
const FOREGROUND_SPECIFIED: u8 = 4;
const ANY_SUBRECTS: u8 = 8;
const SUBRECTS_COLOURED: u8 = 16;
const KNOWN_BITS: u8 =
    RAW | BACKGROUND_SPECIFIED | FOREGROUND_SPECIFIED | ANY_SUBRECTS | SUBRECTS_COLOURED;

const TILE_SIZE: u16 = 16;
const CONTEXT: &str = "hextile rectangle";

/// A rectangle cut into square tiles (Hextile, TRLE, ZRLE), numbered left to right,
/// top to bottom.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TileGrid {
    width: u32,
    height: u32,
    size: u32,
    across: u32,
    count: u32,
}

impl TileGrid {
    pub(crate) fn new(rect: Rect, size: u16) -> TileGrid {
        let (width, height, size) = (
            u32::from(rect.width),
            u32::from(rect.height),
            u32::from(size),
        );
        let across = width.div_ceil(size);
        // At most 65535 tiles each way for size 1: the product fits in u32.
        TileGrid {
            width,
            height,
            size,
            across,
            count: across * height.div_ceil(size),
        }
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Tile `index` (< [`TileGrid::count`]) relative to the rectangle's corner.
    pub(crate) fn tile(&self, index: u32) -> Rect {
        let x = index % self.across * self.size;
        let y = index / self.across * self.size;
        // INVARIANT: x < width and y < height for an index below count, and all of
        // width, height and size fit in u16.
        Rect::new(
            x as u16,
            y as u16,
            self.size.min(self.width - x) as u16,
            self.size.min(self.height - y) as u16,
        )
    }
}

/// How far a resumable scan of one tile got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileScan {
    /// The tile is complete and occupies this many bytes.
    Complete(usize),
    /// At least this many bytes from the tile's start are needed.
    Need(usize),
}

/// Measures tiles from where `scan` left off, never rescanning a whole tile.
/// `tile_len` looks at the bytes from a tile's start and may update `scan.extra` only
/// when it reports the tile complete.
pub(crate) fn measure_tiles(
    grid: TileGrid,
    buf: &[u8],
    scan: &mut ScanState,
    mut tile_len: impl FnMut(Rect, &[u8], &mut u32) -> Result<TileScan, DecodeError>,
) -> Result<Measure, DecodeError> {
    while scan.tile < grid.count() {
        let Some(rest) = buf.get(scan.offset..) else {
            return Ok(Measure::Need(scan.offset.saturating_add(1)));
        };
        let mut extra = scan.extra;
        match tile_len(grid.tile(scan.tile), rest, &mut extra)? {
            TileScan::Complete(n) => {
                scan.offset += n;
                scan.tile += 1;
                scan.extra = extra;
            }
            TileScan::Need(n) => return Ok(Measure::Need(scan.offset.saturating_add(n))),
        }
    }
    Ok(Measure::Complete(scan.offset))
}

fn invalid_mask(mask: u8) -> DecodeError {
    DecodeError::invalid(CONTEXT, format!("subencoding mask 0x{mask:02x}"))
}

/// The length of one tile at the front of `buf`.
fn tile_len(tile: Rect, buf: &[u8], bpp: usize) -> Result<TileScan, DecodeError> {
    let Some(&mask) = buf.first() else {
        return Ok(TileScan::Need(1));
    };
    let len = if mask & RAW != 0 {
        1 /* subencoding-mask */ + tile.area() * bpp
    } else {
        if mask & !KNOWN_BITS != 0 {
            return Err(invalid_mask(mask));
        }
        let mut fixed = 1 /* subencoding-mask */;
        if mask & BACKGROUND_SPECIFIED != 0 {
            fixed += bpp;
        }
        if mask & FOREGROUND_SPECIFIED != 0 {
            fixed += bpp;
        }
        if mask & ANY_SUBRECTS == 0 {
            fixed
        } else {
            fixed += 1 /* number-of-subrectangles */;
            let Some(&count) = buf.get(fixed - 1) else {
                return Ok(TileScan::Need(fixed));
            };
            let subrect = 2 /* x-and-y, width-and-height */
                + if mask & SUBRECTS_COLOURED != 0 { bpp } else { 0 };
            fixed + usize::from(count) * subrect
        }
    };
    Ok(if buf.len() >= len {
        TileScan::Complete(len)
    } else {
        TileScan::Need(len)
    })
}

/// Fills `rect` (checked to lie inside the framebuffer) without adding damage.
fn fill(fb: &mut Framebuffer, rect: Rect, colour: u32) {
    for y in rect.y..rect.y + rect.height {
        fb.row_mut(rect.x, y, rect.width).fill(colour);
    }
}

#[derive(Debug, Default)]
pub struct HextileDecoder;

impl HextileDecoder {
    fn decode_tiles(
        rect: Rect,
        r: &mut Reader<'_>,
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        let bpp = conv.bytes_per_pixel();
        let grid = TileGrid::new(rect, TILE_SIZE);
        let mut background: Option<u32> = None;
        let mut foreground: Option<u32> = None;
        for index in 0..grid.count() {
            let t = grid.tile(index);
            // INVARIANT: the tile lies inside `rect`, which lies inside the framebuffer.
            let tile = Rect::new(rect.x + t.x, rect.y + t.y, t.width, t.height);
            let mask = r.u8()?;
            if mask & RAW != 0 {
                let row_bytes = usize::from(tile.width) * bpp;
                let pixels = r.take(row_bytes * usize::from(tile.height))?;
                for (i, src) in pixels.chunks_exact(row_bytes).enumerate() {
                    // INVARIANT: i < tile.height ≤ 16.
                    conv.convert_row(src, fb.row_mut(tile.x, tile.y + i as u16, tile.width));
                }
                continue;
            }
            if mask & !KNOWN_BITS != 0 {
                return Err(invalid_mask(mask));
            }
            if mask & BACKGROUND_SPECIFIED != 0 {
                background = Some(conv.pixel(r.take(bpp)?));
            }
            if mask & FOREGROUND_SPECIFIED != 0 {
                foreground = Some(conv.pixel(r.take(bpp)?));
            }
            let Some(bg) = background else {
                return Err(DecodeError::invalid(
                    CONTEXT,
                    format!("tile {index} has no background colour (none specified yet in this rectangle)"),
                ));
            };
            fill(fb, tile, bg);
            if mask & ANY_SUBRECTS == 0 {
                continue;
            }
            let count = usize::from(r.u8()?);
            let coloured = mask & SUBRECTS_COLOURED != 0;
            let subrect_size = 2 + if coloured { bpp } else { 0 };
            let subrects = r.take(count * subrect_size)?;
            let fg = match (coloured, foreground) {
                (true, _) => 0,
                (false, Some(fg)) => fg,
                (false, None) if count == 0 => 0,
                (false, None) => {
                    return Err(DecodeError::invalid(
                        CONTEXT,
                        format!("tile {index} has subrectangles but no foreground colour (none specified yet in this rectangle)"),
                    ))
                }
            };
            for s in subrects.chunks_exact(subrect_size) {
                let (colour, at) = if coloured {
                    (conv.pixel(s), &s[bpp..])
                } else {
                    (fg, s)
                };
                let (x, y) = (u16::from(at[0] >> 4), u16::from(at[0] & 0x0f));
                let (w, h) = (u16::from(at[1] >> 4) + 1, u16::from(at[1] & 0x0f) + 1);
                if x + w > tile.width || y + h > tile.height {
                    return Err(DecodeError::invalid(
                        CONTEXT,
                        format!(
                            "subrectangle {} lies outside the {}x{} tile {index}",
                            Rect::new(x, y, w, h),
                            tile.width,
                            tile.height
                        ),
                    ));
                }
                fill(fb, Rect::new(tile.x + x, tile.y + y, w, h), colour);
            }
        }
        Ok(())
    }
}

impl RectDecoder for HextileDecoder {
    fn measure(
        &self,
        rect: Rect,
        conv: &PixelConverter,
        buf: &[u8],
        scan: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        let bpp = conv.bytes_per_pixel();
        measure_tiles(
            TileGrid::new(rect, TILE_SIZE),
            buf,
            scan,
            |tile, rest, _| tile_len(tile, rest, bpp),
        )
    }

    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        fb.check(&rect)?;
        let mut r = Reader::new(payload, CONTEXT);
        let result = Self::decode_tiles(rect, &mut r, conv, fb);
        // Tiles decoded before an error have been drawn.
        fb.add_damage(rect);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;

    fn rgb565(v: u16) -> [u8; 2] {
        v.to_le_bytes()
    }

    fn measure_all(conv: &PixelConverter, rect: Rect, payload: &[u8]) -> Measure {
        HextileDecoder
            .measure(rect, conv, payload, &mut ScanState::default())
            .expect("measure")
    }

    const RED: u16 = 0xf800;
    const GREEN: u16 = 0x07e0;
    const BLUE: u16 = 0x001f;
    const WHITE: u16 = 0xffff;
    const R: u32 = 0xff0000;
    const G: u32 = 0x00ff00;
    const B: u32 = 0x0000ff;
    const W: u32 = 0xffffff;

    /// An 18x17 rectangle: tiles 16x16, 2x16, 16x1 and 2x1, exercising every
    /// subencoding bit and the carry-over of both colours across tiles.
    fn four_tiles() -> Vec<u8> {
        let mut p = Vec::new();
        // Tile 0 (16x16): background red, foreground green, two subrects:
        // (0, 0) 1x1 and (14, 15) 2x1.
        p.push(BACKGROUND_SPECIFIED | FOREGROUND_SPECIFIED | ANY_SUBRECTS);
        p.extend(rgb565(RED));
        p.extend(rgb565(GREEN));
        p.extend([2, 0x00, 0x00, 0xef, 0x10]);
        // Tile 1 (2x16): background and foreground carried over; one subrect at
        // (1, 2) 1x3.
        p.push(ANY_SUBRECTS);
        p.extend([1, 0x12, 0x02]);
        // Tile 2 (16x1): Raw, 16 pixels alternating blue and white.
        p.push(RAW | BACKGROUND_SPECIFIED);
        for i in 0..16 {
            p.extend(rgb565(if i % 2 == 0 { BLUE } else { WHITE }));
        }
        // Tile 3 (2x1): background still red (the Raw tile did not change it),
        // a coloured subrect: white at (1, 0) 1x1.
        p.push(ANY_SUBRECTS | SUBRECTS_COLOURED);
        p.push(1);
        p.extend(rgb565(WHITE));
        p.extend([0x10, 0x00]);
        p
    }

    #[test]
    fn tiles_subrects_and_carried_colours() {
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let rect = Rect::new(1, 1, 18, 17);
        let p = four_tiles();
        assert_eq!(measure_all(&conv, rect, &p), Measure::Complete(p.len()));
        let mut fb = Framebuffer::new(20, 20);
        HextileDecoder
            .decode(rect, &p, &conv, &mut fb)
            .expect("decode");
        let mut expected = vec![R; 18 * 17];
        let mut set = |x: usize, y: usize, c: u32| expected[y * 18 + x] = c;
        set(0, 0, G);
        set(14, 15, G);
        set(15, 15, G);
        for y in 2..5 {
            set(16 + 1, y, G);
        }
        for x in 0..16 {
            set(x, 16, if x % 2 == 0 { B } else { W });
        }
        set(17, 16, W);
        assert_eq!(fb.read_rect(rect).expect("in bounds"), expected);
        assert_eq!(fb.pixel(0, 0), Some(0));
        assert_eq!(fb.pixel(19, 19), Some(0));
        assert_eq!(fb.damage().bounds(), rect);
    }

    #[test]
    fn subrect_covering_a_whole_tile_in_big_endian_32_bit() {
        let conv = PixelConverter::new(PixelFormat {
            big_endian: true,
            ..PixelFormat::RGB888
        });
        // A 16x16 tile, background 0x010203, one coloured subrect 0x0a0b0c at (0, 0)
        // 16x16 covering all of it.
        let p = [
            BACKGROUND_SPECIFIED | ANY_SUBRECTS | SUBRECTS_COLOURED,
            0,
            1,
            2,
            3,
            1,
            0,
            0x0a,
            0x0b,
            0x0c,
            0x00,
            0xff,
        ];
        let rect = Rect::new(0, 0, 16, 16);
        let mut fb = Framebuffer::new(16, 16);
        HextileDecoder
            .decode(rect, &p, &conv, &mut fb)
            .expect("decode");
        assert!(fb.pixels().iter().all(|&c| c == 0x0a0b0c));
    }

    #[test]
    fn background_does_not_carry_across_rectangles() {
        let conv = PixelConverter::new(PixelFormat::BGR233);
        let mut fb = Framebuffer::new(32, 16);
        let mut d = HextileDecoder;
        d.decode(
            Rect::new(0, 0, 4, 4),
            &[BACKGROUND_SPECIFIED, 0xff],
            &conv,
            &mut fb,
        )
        .expect("first");
        assert_eq!(fb.pixel(3, 3), Some(0xffffff));
        // The next rectangle's first non-Raw tile leaves the background out.
        let err = d
            .decode(Rect::new(4, 4, 4, 4), &[0], &conv, &mut fb)
            .expect_err("no background");
        assert_eq!(
            err.to_string(),
            "invalid hextile rectangle: tile 0 has no background colour (none specified yet in this rectangle)"
        );
        // Nor the foreground.
        let err = d
            .decode(
                Rect::new(4, 4, 4, 4),
                &[BACKGROUND_SPECIFIED | ANY_SUBRECTS, 0, 1, 0x00, 0x00],
                &conv,
                &mut fb,
            )
            .expect_err("no foreground");
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
        // A Raw first tile then a tile without background is refused as well.
        let mut p = vec![RAW];
        p.extend([7; 16 * 4]);
        p.push(0);
        let err = d
            .decode(Rect::new(0, 0, 20, 4), &p, &conv, &mut fb)
            .expect_err("no background after raw");
        assert!(err.to_string().contains("tile 1"), "{err}");
    }

    #[test]
    fn subrects_outside_the_tile_are_refused() {
        let conv = PixelConverter::new(PixelFormat::BGR233);
        let mut fb = Framebuffer::new(32, 32);
        // Edge tile 2 wide: subrect at x 1 width 2 reaches 3.
        let mut p = vec![BACKGROUND_SPECIFIED, 0];
        p.extend([
            BACKGROUND_SPECIFIED | FOREGROUND_SPECIFIED | ANY_SUBRECTS,
            0,
            7,
            1,
            0x10,
            0x10,
        ]);
        let err = HextileDecoder
            .decode(Rect::new(0, 0, 18, 16), &p, &conv, &mut fb)
            .expect_err("outside");
        assert_eq!(
            err.to_string(),
            "invalid hextile rectangle: subrectangle 2x1+1+0 lies outside the 2x16 tile 1"
        );
        // Full tile: (15, 15) 2x2.
        let p = [
            BACKGROUND_SPECIFIED | FOREGROUND_SPECIFIED | ANY_SUBRECTS,
            0,
            7,
            1,
            0xff,
            0x11,
        ];
        assert!(HextileDecoder
            .decode(Rect::new(0, 0, 16, 16), &p, &conv, &mut fb)
            .is_err());
    }

    #[test]
    fn invalid_masks_and_truncation() {
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let rect = Rect::new(0, 0, 16, 16);
        let mut fb = Framebuffer::new(16, 16);
        for mask in [0x20, 0x40, 0x80, 0x22] {
            let err = HextileDecoder
                .decode(rect, &[mask, 0, 0], &conv, &mut fb)
                .expect_err("zlibhex bits");
            assert_eq!(
                err.to_string(),
                format!("invalid hextile rectangle: subencoding mask 0x{mask:02x}")
            );
            assert!(HextileDecoder
                .measure(rect, &conv, &[mask, 0, 0], &mut ScanState::default())
                .is_err());
        }
        // Raw ignores the other bits, even unknown ones.
        let mut p = vec![RAW | 0xe0];
        p.extend([0xff; 16 * 16 * 2]);
        assert_eq!(measure_all(&conv, rect, &p), Measure::Complete(p.len()));
        HextileDecoder
            .decode(rect, &p, &conv, &mut fb)
            .expect("raw");
        assert!(fb.pixels().iter().all(|&c| c == W));
        for n in 0..p.len() {
            assert!(matches!(
                HextileDecoder.decode(rect, &p[..n], &conv, &mut fb),
                Err(DecodeError::Truncated { .. })
            ));
        }
        let p = four_tiles();
        for n in 0..p.len() {
            assert!(matches!(
                HextileDecoder.decode(
                    Rect::new(0, 0, 18, 17),
                    &p[..n],
                    &conv,
                    &mut Framebuffer::new(18, 17)
                ),
                Err(DecodeError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn measure_reports_exact_needs() {
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let rect = Rect::new(0, 0, 18, 17);
        let p = four_tiles();
        let mut scan = ScanState::default();
        let d = HextileDecoder;
        assert_eq!(d.measure(rect, &conv, &[], &mut scan), Ok(Measure::Need(1)));
        // Tile 0: mask, bg, fg, count: 6 bytes before the count is known.
        assert_eq!(
            d.measure(rect, &conv, &p[..1], &mut scan),
            Ok(Measure::Need(6))
        );
        assert_eq!(
            d.measure(rect, &conv, &p[..6], &mut scan),
            Ok(Measure::Need(6 + 2 * 2))
        );
        assert_eq!(scan.tile, 0);
        assert_eq!(
            d.measure(rect, &conv, &p[..10], &mut scan),
            Ok(Measure::Need(11))
        );
        assert_eq!((scan.tile, scan.offset), (1, 10));
        // Tile 2 is Raw 16x1: 1 + 32 bytes after tile 1's 4.
        assert_eq!(
            d.measure(rect, &conv, &p[..15], &mut scan),
            Ok(Measure::Need(14 + 33))
        );
        assert_eq!((scan.tile, scan.offset), (2, 14));
        let mut longer = p.clone();
        longer.extend([9; 10]);
        assert_eq!(
            d.measure(rect, &conv, &longer, &mut scan),
            Ok(Measure::Complete(p.len()))
        );
        assert_eq!(scan.tile, 4);
        // An empty rectangle has no tiles.
        assert_eq!(
            d.measure(Rect::new(3, 3, 0, 5), &conv, &[], &mut ScanState::default()),
            Ok(Measure::Complete(0))
        );
    }

    /// A large rectangle with every kind of tile, built from a seed.
    fn big_payload(rect: Rect, bpp: usize) -> Vec<u8> {
        let grid = TileGrid::new(rect, TILE_SIZE);
        let mut p = Vec::new();
        let mut seed = 12345u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) as u8
        };
        for i in 0..grid.count() {
            let t = grid.tile(i);
            match i % 4 {
                0 => {
                    p.push(RAW);
                    p.extend((0..t.area() * bpp).map(|_| next()));
                }
                1 => {
                    p.push(BACKGROUND_SPECIFIED | ANY_SUBRECTS | SUBRECTS_COLOURED);
                    p.extend((0..bpp).map(|_| next()));
                    p.push(255);
                    for _ in 0..255 {
                        p.extend((0..bpp).map(|_| next()));
                        p.extend([0x00, 0x00]);
                    }
                }
                2 => {
                    p.push(FOREGROUND_SPECIFIED | ANY_SUBRECTS | BACKGROUND_SPECIFIED);
                    p.extend((0..2 * bpp).map(|_| next()));
                    p.extend([3, 0, 0, 0, 0, 0, 0]);
                }
                _ => p.push(0),
            }
        }
        p
    }

    #[test]
    fn measure_resumes_byte_by_byte_without_rescanning() {
        let conv = PixelConverter::new(PixelFormat::RGB888);
        let rect = Rect::new(0, 0, 250, 130);
        let p = big_payload(rect, 4);
        let d = HextileDecoder;
        let mut scan = ScanState::default();
        let (mut last_tile, mut last_offset) = (0, 0);
        let mut calls = 0;
        let mut end = 0;
        let result = loop {
            end = (end + 1).min(p.len());
            calls += 1;
            match d
                .measure(rect, &conv, &p[..end], &mut scan)
                .expect("measure")
            {
                Measure::Complete(n) => break n,
                Measure::Need(n) => {
                    assert!(n > end, "needs more than it has");
                    assert!(n <= p.len(), "never asks past the end");
                    assert!(scan.tile >= last_tile && scan.offset >= last_offset);
                    // The scan never goes back: what it knows is a prefix of whole tiles.
                    assert!(scan.offset <= end);
                    (last_tile, last_offset) = (scan.tile, scan.offset);
                }
            }
        };
        assert_eq!(result, p.len());
        assert_eq!(scan.tile, TileGrid::new(rect, 16).count());
        assert_eq!(calls, p.len());
        // A fresh scan of the whole buffer agrees.
        assert_eq!(measure_all(&conv, rect, &p), Measure::Complete(p.len()));
        let mut fb = Framebuffer::new(250, 130);
        HextileDecoder
            .decode(rect, &p, &conv, &mut fb)
            .expect("decode");
    }

    #[test]
    fn measure_never_rereads_tiles_it_has_passed() {
        // Feed exactly what measure asks for, and after each call overwrite every byte
        // the scan has already passed with an invalid subencoding mask: a scan that
        // started again from the beginning would fail on it.
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let rect = Rect::new(0, 0, 300, 200);
        let p = big_payload(rect, 2);
        let mut poisoned = p.clone();
        let mut scan = ScanState::default();
        let mut have = 0;
        let mut calls = 0;
        loop {
            calls += 1;
            match HextileDecoder
                .measure(rect, &conv, &poisoned[..have], &mut scan)
                .expect("measure")
            {
                Measure::Complete(n) => {
                    assert_eq!(n, p.len());
                    break;
                }
                Measure::Need(n) => {
                    assert!(n > have);
                    have = n;
                }
            }
            poisoned[..scan.offset].fill(0x20);
        }
        let tiles = TileGrid::new(rect, 16).count() as usize;
        assert_eq!(scan.tile as usize, tiles);
        assert!(calls <= 3 * tiles + 1, "{calls} calls for {tiles} tiles");
        assert!(HextileDecoder
            .measure(rect, &conv, &poisoned, &mut ScanState::default())
            .is_err());
    }

    #[test]
    fn tile_grid_edges() {
        let grid = TileGrid::new(Rect::new(5, 5, 33, 17), 16);
        assert_eq!(grid.count(), 6);
        assert_eq!(grid.tile(0), Rect::new(0, 0, 16, 16));
        assert_eq!(grid.tile(2), Rect::new(32, 0, 1, 16));
        assert_eq!(grid.tile(3), Rect::new(0, 16, 16, 1));
        assert_eq!(grid.tile(5), Rect::new(32, 16, 1, 1));
        assert_eq!(TileGrid::new(Rect::new(0, 0, 0, 100), 16).count(), 0);
        let big = TileGrid::new(Rect::new(0, 0, u16::MAX, u16::MAX), 16);
        assert_eq!(big.count(), 4096 * 4096);
        assert_eq!(big.tile(big.count() - 1), Rect::new(65520, 65520, 15, 15));
    }
}
