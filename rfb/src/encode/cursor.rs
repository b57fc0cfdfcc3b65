//! Cursor (-239) and Cursor with alpha (-314) pseudo-rectangles, the counterparts of
//! [`decode::cursor`](crate::decode::cursor). The rectangle's position is the
//! hotspot and its size the cursor's.

use super::PixelWriter;
use crate::decode::cursor::CursorImage;
use crate::framebuffer::Rect;
use crate::messages::RectHeader;
use crate::Encoding;

fn header(cursor: &CursorImage, encoding: Encoding, out: &mut Vec<u8>) {
    let rect = Rect::new(
        cursor.hotspot_x,
        cursor.hotspot_y,
        cursor.width,
        cursor.height,
    );
    RectHeader { rect, encoding }.write(out);
}

fn pixels(cursor: &CursorImage) -> impl Iterator<Item = &[u8]> {
    // INVARIANT: a CursorImage holds width * height RGBA pixels; a short one is cut.
    cursor
        .rgba
        .chunks_exact(4)
        .take(usize::from(cursor.width) * usize::from(cursor.height))
}

/// Writes a Cursor pseudo-rectangle: the pixels in the client's format, then a
/// bitmask (1 where alpha is at least half), rows padded to whole bytes.
pub fn write_cursor(cursor: &CursorImage, pw: &PixelWriter, out: &mut Vec<u8>) {
    header(cursor, Encoding::CURSOR, out);
    for px in pixels(cursor) {
        pw.write(
            (u32::from(px[0]) << 16) | (u32::from(px[1]) << 8) | u32::from(px[2]),
            out,
        );
    }
    let w = usize::from(cursor.width);
    let row_bytes = w.div_ceil(8);
    let mut mask = vec![0u8; row_bytes * usize::from(cursor.height)];
    for (i, px) in pixels(cursor).enumerate() {
        if px[3] >= 128 {
            let (y, x) = (i / w, i % w);
            mask[y * row_bytes + x / 8] |= 0x80 >> (x % 8);
        }
    }
    out.extend_from_slice(&mask);
}

/// Writes a Cursor with alpha pseudo-rectangle: encoding Raw, then premultiplied RGBA.
pub fn write_alpha_cursor(cursor: &CursorImage, out: &mut Vec<u8>) {
    header(cursor, Encoding::CURSOR_WITH_ALPHA, out);
    out.extend_from_slice(&Encoding::RAW.0.to_be_bytes());
    for px in pixels(cursor) {
        let a = u16::from(px[3]);
        let pre = |c: u8| ((u16::from(c) * a + 127) / 255) as u8;
        out.extend_from_slice(&[pre(px[0]), pre(px[1]), pre(px[2]), px[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::cursor::{decode_alpha_cursor, decode_cursor};
    use crate::pixel::{PixelConverter, PixelFormat};

    fn sample() -> CursorImage {
        // 3x2: opaque red, transparent, half-transparent white; opaque green, blue, black.
        CursorImage {
            hotspot_x: 1,
            hotspot_y: 0,
            width: 3,
            height: 2,
            rgba: vec![
                255, 0, 0, 255, 9, 9, 9, 0, 255, 255, 255, 128, 0, 255, 0, 255, 0, 0, 255, 255, 0,
                0, 0, 255,
            ],
        }
    }

    #[test]
    fn cursor_bytes_and_round_trip() {
        let mut out = Vec::new();
        write_cursor(&sample(), &PixelWriter::new(PixelFormat::RGB888), &mut out);
        // Header: x 1, y 0, 3x2, encoding -239; 6 pixels; mask rows 0b101 and 0b111.
        assert_eq!(
            &out[..12],
            &[0, 1, 0, 0, 0, 3, 0, 2, 0xff, 0xff, 0xff, 0x11]
        );
        assert_eq!(&out[12..16], &[0, 0, 0xff, 0]);
        assert_eq!(&out[36..], &[0b1010_0000, 0b1110_0000]);
        let image = decode_cursor(
            Rect::new(1, 0, 3, 2),
            &out[12..],
            &PixelConverter::new(PixelFormat::RGB888),
        )
        .expect("decodes");
        assert_eq!(&image.rgba[..4], &[255, 0, 0, 255]);
        assert_eq!(image.rgba[7], 0, "transparent where the mask is 0");
    }

    #[test]
    fn alpha_cursor_round_trip() {
        let mut out = Vec::new();
        write_alpha_cursor(&sample(), &mut out);
        assert_eq!(&out[12..16], &[0, 0, 0, 0]);
        // Half-transparent white premultiplies to (128, 128, 128, 128).
        assert_eq!(&out[16 + 8..16 + 12], &[128, 128, 128, 128]);
        let image = decode_alpha_cursor(Rect::new(1, 0, 3, 2), &out[12..]).expect("decodes");
        assert_eq!(&image.rgba[8..12], &[255, 255, 255, 128]);
        assert_eq!(&image.rgba[..4], &[255, 0, 0, 255]);
    }
}
