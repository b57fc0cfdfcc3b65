//! Cursor shape pseudo-encodings: [Cursor] (-239) and [Cursor With Alpha] (-314).
//!
//! Both arrive as pseudo-rectangles whose `x`/`y` are the hotspot and whose
//! `width`/`height` are the cursor's size. Neither draws into the framebuffer: they
//! decode into a [`CursorImage`] in straight (non-premultiplied) RGBA.
//!
//! - Cursor: `width * height` PIXELs in the connection's pixel format, then a bitmask
//!   of `ceil(width / 8) * height` bytes (rows padded to a byte, most significant bit
//!   leftmost, 1 = the pixel belongs to the cursor).
//! - Cursor With Alpha: an `S32` encoding, then `width * height` pixels in that
//!   encoding, always 32-bit `R, G, B, A` bytes with premultiplied alpha. Only Raw (0)
//!   is accepted: it is what servers send (TigerVNC, for one), and decoding other
//!   encodings here would need decoders that keep the alpha byte, which the
//!   framebuffer-bound decoders drop.
//!
//! Cursors larger than [`MAX_CURSOR_SIZE`] on either side are refused before any
//! payload is buffered.
//!
//! [Cursor]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#cursor-pseudo-encoding
//! [Cursor With Alpha]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#cursor-with-alpha-pseudo-encoding

use crate::error::{DecodeError, Measure};
use crate::framebuffer::Rect;
use crate::pixel::PixelConverter;

/// The largest cursor width and height accepted. Real cursors are far smaller: the
/// largest themed X cursors are 256 pixels, and a 2x HiDPI scale makes 512; Windows
/// and macOS stay at or below that. At this size an RGBA image is 1 MiB, so a hostile
/// server cannot make a cursor cost more than that.
pub const MAX_CURSOR_SIZE: u16 = 512;

/// Encoding number of Raw, the one inner encoding accepted for alpha cursors.
const RAW_ENCODING: i32 = 0;

/// A decoded cursor shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CursorImage {
    /// Hotspot, from the pseudo-rectangle's `x`/`y`, as sent: it may lie outside the
    /// image (servers send an empty cursor to hide it).
    pub hotspot_x: u16,
    pub hotspot_y: u16,
    pub width: u16,
    pub height: u16,
    /// straight (non-premultiplied) RGBA, row-major
    pub rgba: Vec<u8>,
}

fn check_size(rect: Rect, context: &'static str) -> Result<(), DecodeError> {
    if rect.width > MAX_CURSOR_SIZE || rect.height > MAX_CURSOR_SIZE {
        return Err(DecodeError::invalid(
            context,
            format!(
                "size {}x{} exceeds the {MAX_CURSOR_SIZE}x{MAX_CURSOR_SIZE} limit",
                rect.width, rect.height
            ),
        ));
    }
    Ok(())
}

/// Bytes of one bitmask row.
fn mask_stride(rect: Rect) -> usize {
    usize::from(rect.width).div_ceil(8)
}

/// Payload length of a Cursor pseudo-rectangle: pixels, then the bitmask.
fn cursor_len(rect: Rect, conv: &PixelConverter) -> usize {
    rect.area() * conv.bytes_per_pixel() /* cursor-pixels */
        + mask_stride(rect) * usize::from(rect.height) /* bitmask */
}

fn complete_or_need(len: usize, available: usize) -> Measure {
    if available >= len {
        Measure::Complete(len)
    } else {
        Measure::Need(len)
    }
}

fn check_exact(context: &'static str, len: usize, payload: &[u8]) -> Result<(), DecodeError> {
    if payload.len() < len {
        return Err(DecodeError::Truncated {
            context,
            needed: len - payload.len(),
        });
    }
    if payload.len() > len {
        return Err(DecodeError::invalid(
            context,
            format!("{} bytes after the end of the cursor", payload.len() - len),
        ));
    }
    Ok(())
}

/// How long a Cursor (-239) payload is.
pub fn measure_cursor(
    rect: Rect,
    conv: &PixelConverter,
    buf: &[u8],
) -> Result<Measure, DecodeError> {
    check_size(rect, "cursor")?;
    Ok(complete_or_need(cursor_len(rect, conv), buf.len()))
}

/// Decodes a complete Cursor (-239) payload. Pixels whose mask bit is 0 become fully
/// transparent (all four bytes 0).
pub fn decode_cursor(
    rect: Rect,
    payload: &[u8],
    conv: &PixelConverter,
) -> Result<CursorImage, DecodeError> {
    check_size(rect, "cursor")?;
    check_exact("cursor", cursor_len(rect, conv), payload)?;
    let width = usize::from(rect.width);
    let mut rgba = vec![0u8; rect.area() * 4];
    if width > 0 {
        let (pixels, mask) = payload.split_at(rect.area() * conv.bytes_per_pixel());
        let mut row = vec![0u32; width];
        for ((src, bits), out) in pixels
            .chunks_exact(width * conv.bytes_per_pixel())
            .zip(mask.chunks_exact(mask_stride(rect)))
            .zip(rgba.chunks_exact_mut(width * 4))
        {
            conv.convert_row(src, &mut row);
            for (x, (&colour, px)) in row.iter().zip(out.chunks_exact_mut(4)).enumerate() {
                if bits[x / 8] & (0x80 >> (x % 8)) != 0 {
                    let [_, r, g, b] = colour.to_be_bytes();
                    px.copy_from_slice(&[r, g, b, 0xff]);
                }
            }
        }
    }
    Ok(CursorImage {
        hotspot_x: rect.x,
        hotspot_y: rect.y,
        width: rect.width,
        height: rect.height,
        rgba,
    })
}

/// Reads the inner encoding of a Cursor With Alpha payload, if present, and refuses
/// any but Raw.
fn alpha_encoding(buf: &[u8]) -> Result<Option<i32>, DecodeError> {
    let Some(bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let encoding = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if encoding != RAW_ENCODING {
        return Err(DecodeError::invalid(
            "cursor with alpha",
            format!("inner encoding {encoding} is not supported (only raw)"),
        ));
    }
    Ok(Some(encoding))
}

fn alpha_cursor_len(rect: Rect) -> usize {
    4 /* encoding */ + rect.area() * 4 /* R, G, B, A */
}

/// How long a Cursor With Alpha (-314) payload is.
pub fn measure_alpha_cursor(rect: Rect, buf: &[u8]) -> Result<Measure, DecodeError> {
    check_size(rect, "cursor with alpha")?;
    if alpha_encoding(buf)?.is_none() {
        return Ok(Measure::Need(4));
    }
    Ok(complete_or_need(alpha_cursor_len(rect), buf.len()))
}

/// Decodes a complete Cursor With Alpha (-314) payload, undoing the premultiplication.
pub fn decode_alpha_cursor(rect: Rect, payload: &[u8]) -> Result<CursorImage, DecodeError> {
    check_size(rect, "cursor with alpha")?;
    if alpha_encoding(payload)?.is_none() {
        return Err(DecodeError::Truncated {
            context: "cursor with alpha",
            needed: 4 - payload.len(),
        });
    }
    check_exact("cursor with alpha", alpha_cursor_len(rect), payload)?;
    let mut rgba = payload[4..].to_vec();
    for px in rgba.chunks_exact_mut(4) {
        let alpha = u16::from(px[3]);
        match alpha {
            255 => {}
            0 => px.fill(0),
            _ => {
                for c in &mut px[..3] {
                    // Premultiplied data has c <= alpha; clamp what does not.
                    *c = ((u16::from(*c) * 255 + alpha / 2) / alpha).min(255) as u8;
                }
            }
        }
    }
    Ok(CursorImage {
        hotspot_x: rect.x,
        hotspot_y: rect.y,
        width: rect.width,
        height: rect.height,
        rgba,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;

    fn rgb888() -> PixelConverter {
        PixelConverter::new(PixelFormat::RGB888)
    }

    #[test]
    fn cursor_with_mask() {
        // 3x2 at hotspot (1, 0), 32 bpp little-endian 0x00RRGGBB pixels.
        let rect = Rect::new(1, 0, 3, 2);
        let mut payload = Vec::new();
        for colour in [
            0x00ff_0000u32,
            0x0000_ff00,
            0x0000_00ff,
            0x0012_3456,
            0x00ff_ffff,
            0,
        ] {
            payload.extend_from_slice(&colour.to_le_bytes());
        }
        // Row 0: pixels 0 and 2; row 1: pixel 1. Padding bits set and ignored.
        payload.extend_from_slice(&[0b1010_0000 | 0x1f, 0b0100_0000 | 0x0f]);
        let conv = rgb888();
        assert_eq!(
            measure_cursor(rect, &conv, &payload),
            Ok(Measure::Complete(26))
        );
        assert_eq!(
            measure_cursor(rect, &conv, &payload[..25]),
            Ok(Measure::Need(26))
        );
        let image = decode_cursor(rect, &payload, &conv).expect("cursor");
        assert_eq!((image.hotspot_x, image.hotspot_y), (1, 0));
        assert_eq!((image.width, image.height), (3, 2));
        assert_eq!(
            image.rgba,
            [
                255, 0, 0, 255, /**/ 0, 0, 0, 0, /**/ 0, 0, 255, 255, //
                0, 0, 0, 0, /**/ 255, 255, 255, 255, /**/ 0, 0, 0, 0,
            ]
        );
    }

    #[test]
    fn cursor_wider_than_a_mask_byte_in_16_bpp() {
        // 10x1: two mask bytes per row. RGB565 0xf800 is red.
        let rect = Rect::new(4, 4, 10, 1);
        let mut payload = Vec::new();
        for _ in 0..10 {
            payload.extend_from_slice(&[0x00, 0xf8]);
        }
        payload.extend_from_slice(&[0x00, 0b0100_0000]);
        let conv = PixelConverter::new(PixelFormat::RGB565);
        assert_eq!(
            measure_cursor(rect, &conv, &payload),
            Ok(Measure::Complete(22))
        );
        let image = decode_cursor(rect, &payload, &conv).expect("cursor");
        let alpha: Vec<u8> = image.rgba.chunks(4).map(|p| p[3]).collect();
        assert_eq!(alpha, [0, 0, 0, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(&image.rgba[36..], &[255, 0, 0, 255]);
    }

    #[test]
    fn cursor_limits_and_truncation() {
        let conv = rgb888();
        let big = Rect::new(0, 0, MAX_CURSOR_SIZE + 1, 1);
        assert!(measure_cursor(big, &conv, &[]).is_err());
        assert!(decode_cursor(big, &[], &conv).is_err());
        assert!(measure_alpha_cursor(Rect::new(0, 0, 1, 600), &[0; 4]).is_err());
        let max = Rect::new(0, 0, MAX_CURSOR_SIZE, MAX_CURSOR_SIZE);
        assert_eq!(
            measure_cursor(max, &conv, &[]),
            Ok(Measure::Need(512 * 512 * 4 + 64 * 512))
        );
        let rect = Rect::new(0, 0, 2, 2);
        let err = decode_cursor(rect, &[0; 17], &conv).expect_err("needs 18");
        assert!(
            matches!(err, DecodeError::Truncated { needed: 1, .. }),
            "{err}"
        );
        assert!(decode_cursor(rect, &[0; 19], &conv).is_err());
        // An empty cursor carries no data.
        let empty = Rect::new(3, 3, 0, 0);
        assert_eq!(measure_cursor(empty, &conv, &[]), Ok(Measure::Complete(0)));
        let image = decode_cursor(empty, &[], &conv).expect("empty cursor");
        assert!(image.rgba.is_empty());
    }

    #[test]
    fn alpha_cursor_raw() {
        // 3x1 premultiplied RGBA: half-transparent red, transparent, opaque colour.
        let rect = Rect::new(2, 5, 3, 1);
        let payload = [
            0, 0, 0, 0, /* raw */
            128, 0, 0, 128, /**/ 0, 0, 0, 0, /**/ 50, 100, 25, 255,
        ];
        assert_eq!(
            measure_alpha_cursor(rect, &payload),
            Ok(Measure::Complete(16))
        );
        assert_eq!(
            measure_alpha_cursor(rect, &payload[..3]),
            Ok(Measure::Need(4))
        );
        assert_eq!(
            measure_alpha_cursor(rect, &payload[..4]),
            Ok(Measure::Need(16))
        );
        let image = decode_alpha_cursor(rect, &payload).expect("alpha cursor");
        assert_eq!(
            (image.hotspot_x, image.hotspot_y, image.width, image.height),
            (2, 5, 3, 1)
        );
        assert_eq!(
            image.rgba,
            [255, 0, 0, 128, /**/ 0, 0, 0, 0, /**/ 50, 100, 25, 255]
        );
        // 64 * 255 / 192 = 85; a colour above its alpha (not premultiplied) clamps.
        let payload = [0, 0, 0, 0, 64, 192, 0, 192, 200, 0, 0, 100];
        let image = decode_alpha_cursor(Rect::new(0, 0, 2, 1), &payload).expect("alpha cursor");
        assert_eq!(image.rgba, [85, 255, 0, 192, 255, 0, 0, 100]);
    }

    #[test]
    fn alpha_cursor_errors() {
        let rect = Rect::new(0, 0, 1, 1);
        // Inner encoding 16 (ZRLE) is not supported.
        let err = measure_alpha_cursor(rect, &[0, 0, 0, 16]).expect_err("zrle");
        assert!(err.to_string().contains("inner encoding 16"), "{err}");
        assert!(decode_alpha_cursor(rect, &[0, 0, 0, 16, 1, 2, 3, 4]).is_err());
        assert!(matches!(
            decode_alpha_cursor(rect, &[0, 0]),
            Err(DecodeError::Truncated { needed: 2, .. })
        ));
        assert!(matches!(
            decode_alpha_cursor(rect, &[0, 0, 0, 0, 1, 2]),
            Err(DecodeError::Truncated { needed: 2, .. })
        ));
        assert!(decode_alpha_cursor(rect, &[0, 0, 0, 0, 1, 2, 3, 4, 5]).is_err());
        // An empty alpha cursor still carries its encoding.
        let empty = Rect::new(0, 0, 0, 0);
        assert_eq!(measure_alpha_cursor(empty, &[]), Ok(Measure::Need(4)));
        assert_eq!(
            measure_alpha_cursor(empty, &[0; 4]),
            Ok(Measure::Complete(4))
        );
    }
}
