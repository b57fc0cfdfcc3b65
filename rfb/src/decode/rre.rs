//! RRE (2) and CoRRE (4) encodings: a background colour and a list of solid subrectangles.
//!
//! Layout ([rfbproto, RRE Encoding], [rfbproto, CoRRE Encoding]):
//! `4 /* number-of-subrectangles */ + bpp /* background-pixel-value */`, then per
//! subrectangle `bpp /* subrect-pixel-value */` and its x, y, width and height relative to
//! the rectangle: `U16` each for RRE, `U8` each for CoRRE.
//!
//! [rfbproto, RRE Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#rre-encoding
//! [rfbproto, CoRRE Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#corre-encoding

use super::{payload_limit, Reader, RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::PixelConverter;

/// What differs between RRE and CoRRE: the size of a subrectangle coordinate.
#[derive(Debug, Clone, Copy)]
struct Variant {
    /// Bytes per x, y, width or height field.
    coordinate_size: usize,
    context: &'static str,
}

const RRE: Variant = Variant {
    coordinate_size: 2,
    context: "rre rectangle",
};

const CORRE: Variant = Variant {
    coordinate_size: 1,
    context: "corre rectangle",
};

impl Variant {
    fn header_size(self, bpp: usize) -> usize {
        4 /* number-of-subrectangles */ + bpp /* background-pixel-value */
    }

    fn subrect_size(self, bpp: usize) -> usize {
        bpp /* subrect-pixel-value */ + 4 * self.coordinate_size /* x, y, width, height */
    }

    fn measure(
        self,
        rect: Rect,
        conv: &PixelConverter,
        buf: &[u8],
    ) -> Result<Measure, DecodeError> {
        let bpp = conv.bytes_per_pixel();
        let header = self.header_size(bpp);
        let Some(count) = buf.get(..4) else {
            return Ok(Measure::Need(header));
        };
        let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]);
        // At most 2^32 * 12 + 8: no overflow in u64.
        let total = header as u64 + u64::from(count) * self.subrect_size(bpp) as u64;
        let limit = payload_limit(rect);
        if total > limit {
            return Err(DecodeError::TooLong {
                context: self.context,
                length: total,
                limit,
            });
        }
        // INVARIANT: total ≤ payload_limit, a size of memory that holds the rectangle.
        let total = total as usize;
        Ok(if buf.len() >= total {
            Measure::Complete(total)
        } else {
            Measure::Need(total)
        })
    }

    fn decode(
        self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        fb.check(&rect)?;
        let bpp = conv.bytes_per_pixel();
        let mut r = Reader::new(payload, self.context);
        let count = r.u32()?;
        let background = conv.pixel(r.take(bpp)?);
        let subrect_size = self.subrect_size(bpp);
        let subrects_len =
            usize::try_from(u64::from(count) * subrect_size as u64).map_err(|_| {
                DecodeError::TooLong {
                    context: self.context,
                    length: u64::from(count) * subrect_size as u64,
                    limit: payload_limit(rect),
                }
            })?;
        let subrects = r.take(subrects_len)?;
        fill(fb, rect, background);
        fb.add_damage(rect);
        let c = self.coordinate_size;
        let coordinate = |field: &[u8]| -> u16 {
            if c == 2 {
                u16::from_be_bytes([field[0], field[1]])
            } else {
                u16::from(field[0])
            }
        };
        for s in subrects.chunks_exact(subrect_size) {
            let colour = conv.pixel(s);
            let at = &s[bpp..];
            let (x, y) = (coordinate(at), coordinate(&at[c..]));
            let (w, h) = (coordinate(&at[2 * c..]), coordinate(&at[3 * c..]));
            if u32::from(x) + u32::from(w) > u32::from(rect.width)
                || u32::from(y) + u32::from(h) > u32::from(rect.height)
            {
                return Err(DecodeError::invalid(
                    self.context,
                    format!(
                        "subrectangle {} lies outside the {}x{} rectangle",
                        Rect::new(x, y, w, h),
                        rect.width,
                        rect.height
                    ),
                ));
            }
            // INVARIANT: the subrectangle lies inside `rect`, which lies inside the
            // framebuffer, so the sums fit in u16.
            fill(fb, Rect::new(rect.x + x, rect.y + y, w, h), colour);
        }
        Ok(())
    }
}

/// Fills a rectangle already checked to lie inside the framebuffer, row by row,
/// without adding damage.
fn fill(fb: &mut Framebuffer, rect: Rect, colour: u32) {
    for y in rect.y..rect.y + rect.height {
        fb.row_mut(rect.x, y, rect.width).fill(colour);
    }
}

#[derive(Debug, Default)]
pub struct RreDecoder;

impl RectDecoder for RreDecoder {
    fn measure(
        &self,
        rect: Rect,
        conv: &PixelConverter,
        buf: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        RRE.measure(rect, conv, buf)
    }

    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        RRE.decode(rect, payload, conv, fb)
    }
}

#[derive(Debug, Default)]
pub struct CoRreDecoder;

impl RectDecoder for CoRreDecoder {
    fn measure(
        &self,
        rect: Rect,
        conv: &PixelConverter,
        buf: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        CORRE.measure(rect, conv, buf)
    }

    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        CORRE.decode(rect, payload, conv, fb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;

    fn rgb565(v: u16) -> [u8; 2] {
        v.to_le_bytes()
    }

    /// Measures `payload` (which must be complete) and decodes it.
    fn run(
        d: &mut dyn RectDecoder,
        conv: &PixelConverter,
        fb: &mut Framebuffer,
        rect: Rect,
        payload: &[u8],
    ) -> Result<(), DecodeError> {
        let m = d.measure(rect, conv, payload, &mut ScanState::default())?;
        assert_eq!(m, Measure::Complete(payload.len()));
        d.decode(rect, payload, conv, fb)
    }

    #[test]
    fn rre_draws_background_then_subrects_in_rgb565() {
        let conv = PixelConverter::new(PixelFormat::RGB565);
        // 5x4 rectangle at (1, 2); blue background; a red 2x2 at (1, 1), then a green
        // 3x1 at (2, 2) drawn over it.
        let mut p = vec![0, 0, 0, 2];
        p.extend(rgb565(0x001f));
        p.extend(rgb565(0xf800));
        p.extend([0, 1, 0, 1, 0, 2, 0, 2]);
        p.extend(rgb565(0x07e0));
        p.extend([0, 2, 0, 2, 0, 3, 0, 1]);
        let mut fb = Framebuffer::new(8, 8);
        let rect = Rect::new(1, 2, 5, 4);
        run(&mut RreDecoder, &conv, &mut fb, rect, &p).expect("decode");
        let (b, r, g) = (0x0000ff, 0xff0000, 0x00ff00);
        assert_eq!(
            fb.read_rect(rect).expect("in bounds"),
            [
                b, b, b, b, b, //
                b, r, r, b, b, //
                b, r, g, g, g, //
                b, b, b, b, b,
            ]
        );
        // Nothing outside the rectangle changed.
        assert_eq!(fb.pixel(0, 2), Some(0));
        assert_eq!(fb.pixel(6, 2), Some(0));
        assert_eq!(fb.pixel(1, 6), Some(0));
        assert_eq!(fb.damage().bounds(), rect);
    }

    #[test]
    fn corre_uses_byte_coordinates_in_big_endian_32_bit() {
        let conv = PixelConverter::new(PixelFormat {
            big_endian: true,
            ..PixelFormat::RGB888
        });
        let mut p = vec![0, 0, 0, 1];
        p.extend([0x00, 0x11, 0x22, 0x33]);
        p.extend([0x00, 0xaa, 0xbb, 0xcc, 2, 0, 1, 3]);
        let mut fb = Framebuffer::new(3, 3);
        run(&mut CoRreDecoder, &conv, &mut fb, Rect::new(0, 0, 3, 3), &p).expect("decode");
        let (bg, fg) = (0x112233, 0xaabbcc);
        assert_eq!(fb.pixels(), &[bg, bg, fg, bg, bg, fg, bg, bg, fg]);
    }

    #[test]
    fn no_subrectangles_and_empty_subrectangles() {
        let conv = PixelConverter::new(PixelFormat::BGR233);
        let mut fb = Framebuffer::new(2, 2);
        run(
            &mut CoRreDecoder,
            &conv,
            &mut fb,
            Rect::new(0, 0, 2, 2),
            &[0, 0, 0, 0, 0xff],
        )
        .expect("background only");
        assert_eq!(fb.pixels(), &[0xffffff; 4]);
        // A zero-sized subrectangle at the far corner draws nothing.
        run(
            &mut RreDecoder,
            &conv,
            &mut fb,
            Rect::new(0, 0, 2, 2),
            &[0, 0, 0, 1, 0, 0x07, 0, 2, 0, 2, 0, 0, 0, 0],
        )
        .expect("empty subrect");
        assert_eq!(fb.pixels(), &[0; 4]);
    }

    #[test]
    fn subrectangle_outside_the_rectangle_is_refused() {
        let conv = PixelConverter::new(PixelFormat::BGR233);
        let mut fb = Framebuffer::new(20, 20);
        // 4x4 rectangle at (8, 8); subrect (3, 0) 2x1 reaches x = 5 > 4, although it
        // would still be inside the framebuffer.
        let p = [0, 0, 0, 1, 0, 7, 0, 3, 0, 0, 0, 2, 0, 1];
        let err =
            run(&mut RreDecoder, &conv, &mut fb, Rect::new(8, 8, 4, 4), &p).expect_err("outside");
        assert_eq!(
            err.to_string(),
            "invalid rre rectangle: subrectangle 2x1+3+0 lies outside the 4x4 rectangle"
        );
        // CoRRE: y 255 + height 255 must not wrap.
        let p = [0, 0, 0, 1, 0, 7, 0, 255, 0, 255];
        let err =
            run(&mut CoRreDecoder, &conv, &mut fb, Rect::new(0, 0, 4, 4), &p).expect_err("outside");
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
        // RRE with u16 fields near the top.
        let p = [0, 0, 0, 1, 0, 7, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 1];
        let err =
            run(&mut RreDecoder, &conv, &mut fb, Rect::new(0, 0, 4, 4), &p).expect_err("outside");
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
    }

    #[test]
    fn huge_counts_are_refused_before_buffering() {
        let conv = PixelConverter::new(PixelFormat::RGB888);
        let rect = Rect::new(0, 0, 16, 16);
        let mut scan = ScanState::default();
        let err = RreDecoder
            .measure(rect, &conv, &[0xff, 0xff, 0xff, 0xff], &mut scan)
            .expect_err("2^32-1 subrects");
        assert_eq!(
            err,
            DecodeError::TooLong {
                context: "rre rectangle",
                length: 8 + u64::from(u32::MAX) * 12,
                limit: payload_limit(rect),
            }
        );
        let err = CoRreDecoder
            .measure(rect, &conv, &[0xff, 0xff, 0xff, 0xff], &mut scan)
            .expect_err("2^32-1 subrects");
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
        // The same count given straight to decode is a truncation, not an allocation.
        let mut fb = Framebuffer::new(16, 16);
        let err = RreDecoder
            .decode(rect, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 0], &conv, &mut fb)
            .expect_err("truncated");
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
    }

    #[test]
    fn measure_is_constant_time_from_the_count() {
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let rect = Rect::new(0, 0, 100, 100);
        let mut scan = ScanState::default();
        // Header 4 + 2; the header alone tells the total: 6 + 3 * (2 + 8) = 36.
        assert_eq!(
            RreDecoder.measure(rect, &conv, &[], &mut scan),
            Ok(Measure::Need(6))
        );
        assert_eq!(
            RreDecoder.measure(rect, &conv, &[0, 0, 0, 3], &mut scan),
            Ok(Measure::Need(36))
        );
        assert_eq!(
            CoRreDecoder.measure(rect, &conv, &[0, 0, 0, 3], &mut scan),
            Ok(Measure::Need(6 + 3 * 6))
        );
        assert_eq!(
            CoRreDecoder.measure(rect, &conv, &[0; 30], &mut scan),
            Ok(Measure::Complete(6))
        );
    }

    #[test]
    fn truncated_payloads_are_errors() {
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let mut fb = Framebuffer::new(4, 4);
        let rect = Rect::new(0, 0, 4, 4);
        let full = [0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        assert!(RreDecoder.decode(rect, &full, &conv, &mut fb).is_ok());
        for n in 0..full.len() {
            let err = RreDecoder
                .decode(rect, &full[..n], &conv, &mut fb)
                .expect_err("truncated");
            assert!(matches!(err, DecodeError::Truncated { .. }), "{n}: {err}");
        }
        let err = RreDecoder
            .decode(Rect::new(1, 1, 4, 4), &full, &conv, &mut fb)
            .expect_err("outside the framebuffer");
        assert!(matches!(err, DecodeError::OutOfBounds { .. }), "{err}");
    }
}
