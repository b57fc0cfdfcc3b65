//! CopyRect encoding (1): the rectangle is a copy of the one at `(src_x, src_y)` in the
//! client's framebuffer ([rfbproto, CopyRect Encoding]). The counterpart of
//! [`decode::copyrect`](crate::decode::copyrect); whoever tracks what the client shows
//! decides when a copy is right.
//!
//! [rfbproto, CopyRect Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#copyrect-encoding

/// Appends a CopyRect payload: `2 /* src-x-position */ + 2 /* src-y-position */`.
pub fn write_copyrect(src_x: u16, src_y: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&src_x.to_be_bytes());
    out.extend_from_slice(&src_y.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::copyrect::CopyRectDecoder;
    use crate::decode::RectDecoder;
    use crate::framebuffer::{Framebuffer, Rect};
    use crate::pixel::{PixelConverter, PixelFormat};

    #[test]
    fn bytes_and_round_trip() {
        let mut out = vec![0xaa];
        write_copyrect(0x0102, 0x0304, &mut out);
        assert_eq!(out, [0xaa, 0x01, 0x02, 0x03, 0x04]);

        let mut fb = Framebuffer::new(4, 2);
        fb.pixels_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut payload = Vec::new();
        write_copyrect(0, 0, &mut payload);
        CopyRectDecoder
            .decode(
                Rect::new(2, 0, 2, 2),
                &payload,
                &PixelConverter::new(PixelFormat::RGB888),
                &mut fb,
            )
            .expect("decode");
        assert_eq!(fb.pixels(), &[1, 2, 1, 2, 5, 6, 5, 6]);
    }
}
