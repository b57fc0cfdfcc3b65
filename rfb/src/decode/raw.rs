//! Raw encoding (0): `width * height` pixels in the wire format.

use super::{RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::PixelConverter;

#[derive(Debug, Default)]
pub struct RawDecoder;

impl RectDecoder for RawDecoder {
    fn measure(
        &self,
        rect: Rect,
        conv: &PixelConverter,
        buf: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        let len = rect.area() * conv.bytes_per_pixel();
        Ok(if buf.len() >= len {
            Measure::Complete(len)
        } else {
            Measure::Need(len)
        })
    }

    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        fb.check(&rect)?;
        let bpp = conv.bytes_per_pixel();
        let row_bytes = usize::from(rect.width) * bpp;
        if payload.len() < row_bytes * usize::from(rect.height) {
            return Err(DecodeError::Truncated {
                context: "raw rectangle",
                needed: row_bytes * usize::from(rect.height) - payload.len(),
            });
        }
        if row_bytes == 0 {
            return Ok(());
        }
        for (i, src) in payload
            .chunks_exact(row_bytes)
            .take(usize::from(rect.height))
            .enumerate()
        {
            conv.convert_row(src, fb.row_mut(rect.x, rect.y + i as u16, rect.width));
        }
        fb.add_damage(rect);
        Ok(())
    }
}
