//! CopyRect encoding (1): `src-x-position`, `src-y-position`.

use super::{Reader, RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::PixelConverter;

#[derive(Debug, Default)]
pub struct CopyRectDecoder;

const PAYLOAD: usize = 2 /* src-x-position */ + 2 /* src-y-position */;

impl RectDecoder for CopyRectDecoder {
    fn measure(
        &self,
        _: Rect,
        _: &PixelConverter,
        buf: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        Ok(if buf.len() >= PAYLOAD {
            Measure::Complete(PAYLOAD)
        } else {
            Measure::Need(PAYLOAD)
        })
    }

    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        _: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        let mut r = Reader::new(payload, "copyrect rectangle");
        let (sx, sy) = (r.u16()?, r.u16()?);
        fb.copy_rect(rect, sx, sy)
    }
}
