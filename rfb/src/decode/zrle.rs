//! Placeholder: implemented in its own change.

use super::{RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::PixelConverter;

#[derive(Debug, Default)]
pub struct ZrleDecoder;

impl RectDecoder for ZrleDecoder {
    fn measure(
        &self,
        _: Rect,
        _: &PixelConverter,
        _: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        Err(DecodeError::UnsupportedEncoding(16))
    }
    fn decode(
        &mut self,
        _: Rect,
        _: &[u8],
        _: &PixelConverter,
        _: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        Err(DecodeError::UnsupportedEncoding(16))
    }
}
