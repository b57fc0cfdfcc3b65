//! TRLE encoding (15): ZRLE's tiles without zlib, 16x16, with palette reuse.
//!
//! Layout ([RFC 6143 §7.7.5]): the tiles follow one another left to right, top to
//! bottom, in the format described in [`super::zrle`] (decoded by the same code), with
//! two more subencodings:
//!
//! - 127: packed palette using the previous tile's palette (no palette bytes follow);
//! - 129: palette RLE using the previous tile's palette.
//!
//! The palette a tile leaves behind is the last one sent in the rectangle: by a packed
//! palette or palette RLE tile, or the colour of a solid tile (a palette of one, whose
//! packed indices take no bytes). Raw and plain RLE tiles leave it as it was. It does
//! not carry over between rectangles, so a reuse before any palette in the rectangle is
//! refused; so is a packed reuse of a palette of more than 16 colours.
//!
//! [RFC 6143 §7.7.5]: https://www.rfc-editor.org/rfc/rfc6143#section-7.7.5

use super::hextile::{measure_tiles, TileGrid, TileScan};
use super::zrle::{
    decode_tiles, index_bits, invalid_subencoding, packed_len, run_length, subencoding,
    CPixelReader, TileFormat,
};
use super::{RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::PixelConverter;

const FORMAT: TileFormat = TileFormat::Trle;

fn complete_if_present(buf: &[u8], len: usize) -> TileScan {
    if buf.len() >= len {
        TileScan::Complete(len)
    } else {
        TileScan::Need(len)
    }
}

/// Scans plain RLE runs (CPIXEL + run length) from `pos` until they cover `pixels`.
fn scan_plain_runs(
    buf: &[u8],
    mut pos: usize,
    pixels: usize,
    cpixel_size: usize,
) -> Result<TileScan, DecodeError> {
    let mut left = pixels;
    while left > 0 {
        pos += cpixel_size;
        if buf.len() <= pos {
            return Ok(TileScan::Need(pos + 1));
        }
        match run_length(buf, &mut pos, left, FORMAT)? {
            Some(n) => left -= n,
            None => return Ok(TileScan::Need(pos + 1)),
        }
    }
    Ok(TileScan::Complete(pos))
}

/// Scans palette RLE runs (index, and a run length after an index with the top bit
/// set) from `pos` until they cover `pixels`.
fn scan_palette_runs(buf: &[u8], mut pos: usize, pixels: usize) -> Result<TileScan, DecodeError> {
    let mut left = pixels;
    while left > 0 {
        let Some(&b) = buf.get(pos) else {
            return Ok(TileScan::Need(pos + 1));
        };
        pos += 1;
        if b & 0x80 == 0 {
            left -= 1;
            continue;
        }
        match run_length(buf, &mut pos, left, FORMAT)? {
            Some(n) => left -= n,
            None => return Ok(TileScan::Need(pos + 1)),
        }
    }
    Ok(TileScan::Complete(pos))
}

fn no_palette(value: u8) -> DecodeError {
    DecodeError::invalid(
        FORMAT.context(),
        format!("subencoding {value} reuses a palette but no tile has sent one"),
    )
}

/// The length of one tile at the front of `buf`. `palette` is the size of the palette
/// the previous tiles left (0 for none), updated to what this tile leaves.
fn tile_len(
    tile: Rect,
    buf: &[u8],
    cpixel_size: usize,
    palette: &mut u32,
) -> Result<TileScan, DecodeError> {
    let Some(&value) = buf.first() else {
        return Ok(TileScan::Need(1));
    };
    let (width, height) = (usize::from(tile.width), usize::from(tile.height));
    let pixels = width * height;
    let packed = |colours: usize| -> Result<usize, DecodeError> {
        let bits = index_bits(colours).ok_or_else(|| {
            DecodeError::invalid(
                FORMAT.context(),
                format!("packed palette with {colours} colours (reused from a palette RLE tile)"),
            )
        })?;
        Ok(packed_len(bits, width, height))
    };
    let (scan, leaves) = match value {
        subencoding::RAW => (
            complete_if_present(buf, 1 /* subencoding */ + pixels * cpixel_size),
            *palette,
        ),
        subencoding::SOLID => (
            complete_if_present(buf, 1 /* subencoding */ + cpixel_size),
            1,
        ),
        2..=16 => {
            let colours = usize::from(value);
            let len = 1 /* subencoding */ + colours * cpixel_size /* palette */
                + packed(colours)? /* indices */;
            (complete_if_present(buf, len), u32::from(value))
        }
        subencoding::PACKED_REUSE => {
            if *palette == 0 {
                return Err(no_palette(value));
            }
            let len = 1 /* subencoding */ + packed(*palette as usize)?;
            (complete_if_present(buf, len), *palette)
        }
        subencoding::PLAIN_RLE => (scan_plain_runs(buf, 1, pixels, cpixel_size)?, *palette),
        subencoding::PALETTE_RLE_REUSE => {
            if *palette == 0 {
                return Err(no_palette(value));
            }
            (scan_palette_runs(buf, 1, pixels)?, *palette)
        }
        130..=255 => {
            let colours = usize::from(value - 128);
            let start = 1 /* subencoding */ + colours * cpixel_size /* palette */;
            (
                scan_palette_runs(buf, start, pixels)?,
                u32::from(value - 128),
            )
        }
        _ => return Err(invalid_subencoding(FORMAT, value)),
    };
    *palette = leaves;
    Ok(scan)
}

/// Decoder for TRLE. The palette carried from tile to tile lives only as long as one
/// rectangle, so the decoder itself holds nothing.
#[derive(Debug, Default)]
pub struct TrleDecoder;

impl RectDecoder for TrleDecoder {
    fn measure(
        &self,
        rect: Rect,
        conv: &PixelConverter,
        buf: &[u8],
        scan: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        let cpixel_size = conv.cpixel_size();
        measure_tiles(
            TileGrid::new(rect, FORMAT.tile_size()),
            buf,
            scan,
            |tile, rest, palette| tile_len(tile, rest, cpixel_size, palette),
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
        let px = CPixelReader::new(conv);
        let result = decode_tiles(FORMAT, rect, payload, &px, fb);
        // Tiles decoded before an error have been drawn.
        fb.add_damage(rect);
        let used = result?;
        if used < payload.len() {
            return Err(DecodeError::invalid(
                "trle rectangle",
                format!("{} bytes after the last tile", payload.len() - used),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::zrle::test_support::{desktop, put_rgb24, Choice, TileEncoder};
    use super::*;
    use crate::pixel::PixelFormat;

    const A: u32 = 0x112233;
    const B: u32 = 0xaabbcc;
    const C: u32 = 0x010203;
    const D: u32 = 0xffffff;

    /// An RGB888 CPIXEL: blue, green, red.
    fn cp(c: u32) -> [u8; 3] {
        [c as u8, (c >> 8) as u8, (c >> 16) as u8]
    }

    fn rgb888() -> PixelConverter {
        PixelConverter::new(PixelFormat::RGB888)
    }

    /// Measures `payload` in one go (it must be exactly one rectangle) and decodes it.
    fn decode_with(
        conv: &PixelConverter,
        fb: &mut Framebuffer,
        rect: Rect,
        payload: &[u8],
    ) -> Result<(), DecodeError> {
        let mut scan = ScanState::default();
        let mut longer = payload.to_vec();
        longer.extend([0xee; 8]);
        assert_eq!(
            TrleDecoder.measure(rect, conv, &longer, &mut scan)?,
            Measure::Complete(payload.len())
        );
        TrleDecoder.decode(rect, payload, conv, fb)
    }

    fn decode_rgb888(w: u16, h: u16, payload: &[u8]) -> Result<Vec<u32>, DecodeError> {
        let mut fb = Framebuffer::new(w, h);
        decode_with(&rgb888(), &mut fb, Rect::new(0, 0, w, h), payload)?;
        Ok(fb.pixels().to_vec())
    }

    #[test]
    fn tiles_are_16_pixels_with_smaller_edges() {
        // 17x17: tiles 16x16 (solid A), 1x16 (packed 2: B on even rows, C on odd),
        // 16x1 (plain RLE: 10 C then 6 D), 1x1 (raw B).
        let mut p = vec![1];
        p.extend(cp(A));
        p.push(2);
        p.extend(cp(B));
        p.extend(cp(C));
        p.extend((0..16).map(|y| if y % 2 == 0 { 0x00 } else { 0xff }));
        p.push(128);
        p.extend(cp(C));
        p.push(9);
        p.extend(cp(D));
        p.push(5);
        p.push(0);
        p.extend(cp(B));
        let pixels = decode_rgb888(17, 17, &p).expect("decode");
        let at = |x: usize, y: usize| pixels[y * 17 + x];
        assert_eq!((at(0, 0), at(15, 15)), (A, A));
        for y in 0..16 {
            assert_eq!(at(16, y), if y % 2 == 0 { B } else { C });
        }
        for x in 0..16 {
            assert_eq!(at(x, 16), if x < 10 { C } else { D });
        }
        assert_eq!(at(16, 16), B);
    }

    #[test]
    fn palette_reuse_across_tiles() {
        // 64x2: four 16x2 tiles.
        let mut p = Vec::new();
        // Tile 0: packed, palette A B, 1 bit: row 0 A×8 B×8, row 1 B×16.
        p.push(2);
        p.extend(cp(A));
        p.extend(cp(B));
        p.extend([0x00, 0xff, 0xff, 0xff]);
        // Tile 1: 127 reuses A B: row 0 alternating from B, row 1 A×16.
        p.extend([127, 0xaa, 0xaa, 0x00, 0x00]);
        // Tile 2: 129 reuses A B as palette RLE: B, then A×31.
        p.extend([129, 0x01, 0x80, 30]);
        // Tile 3: plain RLE (leaves the palette), then... the rectangle ends.
        p.push(128);
        p.extend(cp(C));
        p.push(31);
        let pixels = decode_rgb888(64, 2, &p).expect("decode");
        let row = |y: usize| &pixels[y * 64..(y + 1) * 64];
        let mut expected0 = vec![A; 8];
        expected0.extend([B; 8]);
        expected0.extend((0..16).map(|i| if i % 2 == 0 { B } else { A }));
        expected0.push(B);
        expected0.extend([A; 15]);
        expected0.extend([C; 16]);
        assert_eq!(row(0), &expected0[..]);
        let mut expected1 = vec![B; 16];
        expected1.extend([A; 32]);
        expected1.extend([C; 16]);
        assert_eq!(row(1), &expected1[..]);
    }

    #[test]
    fn reuse_after_solid_raw_and_palette_rle() {
        // 48x1: solid D; 127 with D's one-colour palette (no index bytes); 129 with it.
        let mut p = vec![1];
        p.extend(cp(D));
        p.push(127);
        p.extend([129, 0x80, 15]);
        assert_eq!(decode_rgb888(48, 1, &p), Ok(vec![D; 48]));
        // Palette RLE of three, a raw tile (keeps it), then 127 packs with 2 bits.
        let mut p = vec![131];
        p.extend(cp(A));
        p.extend(cp(B));
        p.extend(cp(C));
        p.extend([0x82, 15]);
        p.push(0);
        for _ in 0..16 {
            p.extend(cp(D));
        }
        // Indices 0 1 2 0 | 1 2 0 1 | 2 0 1 2 | 0 1 2 0 → 0x18 0x61 0x86 0x18.
        p.extend([127, 0x18, 0x61, 0x86, 0x18]);
        let pixels = decode_rgb888(48, 1, &p).expect("decode");
        assert_eq!(&pixels[..16], &[C; 16]);
        assert_eq!(&pixels[16..32], &[D; 16]);
        let abc = [A, B, C];
        let expected: Vec<u32> = (0..16).map(|i| abc[i % 3]).collect();
        assert_eq!(&pixels[32..], &expected[..]);
    }

    #[test]
    fn reuse_without_a_palette_is_refused() {
        let conv = rgb888();
        let rect = Rect::new(0, 0, 16, 16);
        let mut fb = Framebuffer::new(32, 16);
        for value in [127u8, 129] {
            let p = [value, 0, 0, 0, 0];
            let err = TrleDecoder
                .decode(rect, &p, &conv, &mut fb)
                .expect_err("no palette");
            assert_eq!(
                err.to_string(),
                format!("invalid trle tile: subencoding {value} reuses a palette but no tile has sent one")
            );
            assert_eq!(
                TrleDecoder.measure(rect, &conv, &p, &mut ScanState::default()),
                Err(err)
            );
        }
        // Raw and plain RLE tiles do not make a palette.
        let mut p = vec![128];
        p.extend(cp(A));
        p.push(255);
        p.push(0);
        p.push(127);
        assert!(TrleDecoder
            .measure(
                Rect::new(0, 0, 32, 16),
                &conv,
                &p,
                &mut ScanState::default()
            )
            .is_err());
        // Nor does the previous rectangle's palette carry over.
        let mut first = vec![2];
        first.extend(cp(A));
        first.extend(cp(B));
        first.extend([0; 32]);
        TrleDecoder
            .decode(rect, &first, &conv, &mut fb)
            .expect("first");
        let second = [127u8; 33];
        assert!(TrleDecoder.decode(rect, &second, &conv, &mut fb).is_err());
    }

    #[test]
    fn packed_reuse_of_a_large_palette_is_refused() {
        let mut p = vec![128 + 17];
        for i in 0..17 {
            p.extend(cp(i));
        }
        p.extend([0x80, 255, 0]); // 256 pixels of colour 0
        p.extend([127, 0]);
        let err = decode_rgb888(32, 16, &p).expect_err("17 colours");
        assert_eq!(
            err.to_string(),
            "invalid trle tile: packed palette with 17 colours (reused from a palette RLE tile)"
        );
        // Palette RLE reuse of the same palette is fine.
        p.truncate(p.len() - 2);
        p.extend([129, 0x80, 255, 0]);
        assert_eq!(decode_rgb888(32, 16, &p), Ok(vec![0; 512]));
    }

    #[test]
    fn rgb565_and_big_endian() {
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let mut p = vec![130];
        p.extend(0xf800u16.to_le_bytes());
        p.extend(0x001fu16.to_le_bytes());
        p.extend([0x00, 0x81, 1, 0x00]);
        let mut fb = Framebuffer::new(4, 1);
        decode_with(&conv, &mut fb, Rect::new(0, 0, 4, 1), &p).expect("decode");
        assert_eq!(fb.pixels(), &[0xff0000, 0x0000ff, 0x0000ff, 0xff0000]);
        let be = PixelConverter::new(PixelFormat {
            big_endian: true,
            ..PixelFormat::RGB888
        });
        decode_with(&be, &mut fb, Rect::new(0, 0, 4, 1), &[1, 0x11, 0x22, 0x33]).expect("decode");
        assert_eq!(fb.pixels(), &[0x112233; 4]);
    }

    #[test]
    fn adversarial_tiles() {
        // Invalid subencodings.
        for value in [17u8, 100, 126] {
            let err = decode_rgb888(4, 4, &[value, 0, 0, 0]).expect_err("unused");
            assert_eq!(
                err.to_string(),
                format!("invalid trle tile: subencoding {value}")
            );
        }
        // A run past the 16x16 tile: 256 = 255 + 1, one more is too many.
        let mut p = vec![128];
        p.extend(cp(A));
        p.extend([255, 1]);
        let err = decode_rgb888(16, 16, &p).expect_err("257");
        assert_eq!(
            err.to_string(),
            "invalid trle tile: run of 257 pixels passes the end of the tile (256 pixels left)"
        );
        let mut scan = ScanState::default();
        assert!(TrleDecoder
            .measure(Rect::new(0, 0, 16, 16), &rgb888(), &p, &mut scan)
            .is_err());
        // A palette RLE run past a 3x1 edge tile.
        let mut p = vec![1];
        p.extend(cp(A));
        p.extend([130]);
        p.extend(cp(A));
        p.extend(cp(B));
        p.extend([0x81, 3]);
        assert!(decode_rgb888(19, 1, &p).is_err());
        // An index outside the palette (measure does not look at indices).
        let mut p = vec![130];
        p.extend(cp(A));
        p.extend(cp(B));
        p.extend([0x02, 0x00]);
        let err = decode_rgb888(2, 1, &p).expect_err("index 2");
        assert_eq!(
            err.to_string(),
            "invalid trle tile: palette index 2 with a palette of 2 colours"
        );
    }

    #[test]
    fn truncation_in_every_tile_kind() {
        let (w, h) = (53usize, 37usize);
        let img = desktop(w, h);
        let mut enc = TileEncoder::new(put_rgb24, true, Choice::Cycle);
        let p = enc.rect(&img, w, h, 16);
        let conv = rgb888();
        let rect = Rect::new(0, 0, w as u16, h as u16);
        let mut fb = Framebuffer::new(w as u16, h as u16);
        for n in 0..p.len() {
            match TrleDecoder.measure(rect, &conv, &p[..n], &mut ScanState::default()) {
                Ok(Measure::Need(need)) => assert!(need > n && need <= p.len(), "{n}: {need}"),
                other => panic!("{n}: {other:?}"),
            }
            let err = TrleDecoder
                .decode(rect, &p[..n], &conv, &mut fb)
                .expect_err("truncated");
            assert!(matches!(err, DecodeError::Truncated { .. }), "{n}: {err}");
        }
        let mut long = p.clone();
        long.push(0);
        let err = TrleDecoder
            .decode(rect, &long, &conv, &mut fb)
            .expect_err("trailing");
        assert_eq!(
            err.to_string(),
            "invalid trle rectangle: 1 bytes after the last tile"
        );
    }

    #[test]
    fn round_trip_with_every_subencoding() {
        let (w, h) = (301usize, 203usize);
        let img = desktop(w, h);
        for choice in [Choice::Cycle, Choice::Shortest] {
            let mut enc = TileEncoder::new(put_rgb24, true, choice);
            let p = enc.rect(&img, w, h, 16);
            if choice == Choice::Cycle {
                let used = |values: std::ops::RangeInclusive<usize>| {
                    values.clone().map(|v| enc.used[v]).sum::<usize>() > 0
                };
                for values in [0..=0, 1..=1, 2..=2, 3..=4, 5..=16, 127..=127, 128..=128] {
                    assert!(
                        used(values.clone()),
                        "subencodings {values:?} not exercised"
                    );
                }
                assert!(used(129..=129) && used(130..=255));
            }
            let pixels = decode_rgb888(w as u16, h as u16, &p).expect("decode");
            assert!(pixels == img, "decoded pixels differ from the image");
        }
    }

    #[test]
    fn measure_resumes_tile_by_tile() {
        // Feed the rectangle a byte at a time; after each call overwrite every byte the
        // scan has passed with an invalid subencoding. A scan that started over would
        // fail on it, and one that lost the palette carried in `extra` would refuse
        // the reuse tiles.
        let (w, h) = (200usize, 120usize);
        let img = desktop(w, h);
        let mut enc = TileEncoder::new(put_rgb24, true, Choice::Cycle);
        let p = enc.rect(&img, w, h, 16);
        assert!(enc.used[127] > 0 && enc.used[129] > 0);
        let conv = rgb888();
        let rect = Rect::new(0, 0, w as u16, h as u16);
        let mut poisoned = p.clone();
        let mut scan = ScanState::default();
        let mut last = scan;
        let mut end = 0;
        let total = loop {
            end += 1;
            match TrleDecoder
                .measure(rect, &conv, &poisoned[..end], &mut scan)
                .expect("measure")
            {
                Measure::Complete(n) => break n,
                Measure::Need(n) => assert!(n > end && n <= p.len(), "{end}: {n}"),
            }
            assert!(scan.tile >= last.tile && scan.offset >= last.offset);
            assert!(scan.offset <= end);
            last = scan;
            poisoned[..scan.offset].fill(17);
        };
        assert_eq!(total, p.len());
        assert_eq!(end, p.len());
        assert_eq!(scan.tile, TileGrid::new(rect, 16).count());
        let mut fb = Framebuffer::new(w as u16, h as u16);
        TrleDecoder
            .decode(rect, &p, &conv, &mut fb)
            .expect("decode");
        assert!(fb.pixels() == &img[..]);
    }

    #[test]
    fn measure_needs() {
        let conv = rgb888();
        let rect = Rect::new(0, 0, 16, 16);
        let mut scan = ScanState::default();
        let d = TrleDecoder;
        assert_eq!(d.measure(rect, &conv, &[], &mut scan), Ok(Measure::Need(1)));
        // Raw: 1 + 256 * 3.
        assert_eq!(
            d.measure(rect, &conv, &[0], &mut scan),
            Ok(Measure::Need(769))
        );
        // Packed with 5 colours: 1 + 15 + 8 * 16.
        assert_eq!(
            d.measure(rect, &conv, &[5], &mut ScanState::default()),
            Ok(Measure::Need(144))
        );
        // Plain RLE: pixel and at least one length byte, then more as runs continue.
        let mut p = vec![128];
        p.extend(cp(A));
        let mut scan = ScanState::default();
        assert_eq!(
            d.measure(rect, &conv, &p[..2], &mut scan),
            Ok(Measure::Need(5))
        );
        p.push(254);
        assert_eq!(d.measure(rect, &conv, &p, &mut scan), Ok(Measure::Need(9)));
        p.extend(cp(B));
        assert_eq!(d.measure(rect, &conv, &p, &mut scan), Ok(Measure::Need(9)));
        p.push(255);
        assert_eq!(
            d.measure(rect, &conv, &p, &mut scan),
            Err(DecodeError::invalid(
                "trle tile",
                "run of 256 pixels passes the end of the tile (1 pixels left)"
            ))
        );
        // A length byte of 255 asks for the next one.
        let mut p = vec![128];
        p.extend(cp(A));
        p.push(255);
        assert_eq!(
            d.measure(rect, &conv, &p, &mut ScanState::default()),
            Ok(Measure::Need(6))
        );
        assert_eq!(
            d.measure(Rect::new(0, 0, 0, 9), &conv, &[], &mut ScanState::default()),
            Ok(Measure::Complete(0))
        );
    }
}
