//! Placeholder: implemented in its own change.

use super::{RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::PixelConverter;

#[derive(Debug, Default)]
pub struct TightDecoder;

impl RectDecoder for TightDecoder {
    fn measure(
        &self,
        _: Rect,
        _: &PixelConverter,
        _: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        Err(DecodeError::UnsupportedEncoding(7))
    }
    fn decode(
        &mut self,
        _: Rect,
        _: &[u8],
        _: &PixelConverter,
        _: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        Err(DecodeError::UnsupportedEncoding(7))
    }
}

#[derive(Debug, Default)]
pub struct TightPngDecoder;

impl RectDecoder for TightPngDecoder {
    fn measure(
        &self,
        _: Rect,
        _: &PixelConverter,
        _: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        Err(DecodeError::UnsupportedEncoding(-260))
    }
    fn decode(
        &mut self,
        _: Rect,
        _: &[u8],
        _: &PixelConverter,
        _: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        Err(DecodeError::UnsupportedEncoding(-260))
    }
}
