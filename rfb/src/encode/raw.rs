//! Raw encoding (0): `width * height` pixels in the client's format, row by row
//! ([rfbproto, Raw Encoding]). The counterpart of [`decode::raw`](crate::decode::raw).
//!
//! [rfbproto, Raw Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#raw-encoding

use super::wire::Wire;
use super::{rows, EncodeParams, PixelWriter, RectEncoder};
use crate::framebuffer::{Framebuffer, Rect};

#[derive(Debug, Default)]
pub struct RawEncoder;

impl RectEncoder for RawEncoder {
    fn encode(
        &mut self,
        fb: &Framebuffer,
        rect: Rect,
        pw: &PixelWriter,
        _: &EncodeParams,
        out: &mut Vec<u8>,
    ) {
        let wire = Wire::pixel(pw);
        out.reserve(rect.area() * wire.size());
        for row in rows(fb, rect) {
            wire.put_colours(pw, row, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;

    #[test]
    fn hand_computed_bytes() {
        // A 2x2 rectangle at (1, 1) of a 3x3 framebuffer.
        let mut fb = Framebuffer::new(3, 3);
        fb.pixels_mut().copy_from_slice(&[
            9,
            9,
            9,
            9,
            0x00ff_0000,
            0x0000_ff00,
            9,
            0x0000_00ff,
            0x00ff_ffff,
        ]);
        let rect = Rect::new(1, 1, 2, 2);
        let mut out = Vec::new();
        let pw = PixelWriter::new(PixelFormat::RGB565);
        RawEncoder.encode(&fb, rect, &pw, &EncodeParams::default(), &mut out);
        // RGB565 little-endian: red 0xf800, green 0x07e0, blue 0x001f, white 0xffff.
        assert_eq!(out, [0x00, 0xf8, 0xe0, 0x07, 0x1f, 0x00, 0xff, 0xff]);
        out.clear();
        let pw = PixelWriter::new(PixelFormat::RGB888);
        RawEncoder.encode(
            &fb,
            Rect::new(0, 2, 2, 1),
            &pw,
            &EncodeParams::default(),
            &mut out,
        );
        // 9 = 0x000009, then blue: B, G, R, X.
        assert_eq!(out, [9, 0, 0, 0, 0xff, 0, 0, 0]);
    }
}
