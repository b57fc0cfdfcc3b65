//! zlib encoding (6): a Raw rectangle compressed with the connection's one zlib stream.
//!
//! Layout ([rfbproto, zlib Encoding]): `4 /* length */ + length /* zlibData */`; the
//! inflated data is exactly the rectangle's Raw encoding, `width * height` PIXELs.
//!
//! [rfbproto, zlib Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#zlib-encoding

use super::zstream::ZStream;
use super::{payload_limit, Reader, RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::PixelConverter;

/// Bytes before the compressed data: `4 /* length */`.
pub(crate) const LENGTH_SIZE: usize = 4;

/// Measures a `length`-prefixed payload (Zlib, ZRLE): the declared length must not
/// exceed [`payload_limit`] for the rectangle.
pub(crate) fn measure_length_prefixed(
    rect: Rect,
    buf: &[u8],
    context: &'static str,
) -> Result<Measure, DecodeError> {
    let Some(header) = buf.get(..LENGTH_SIZE) else {
        return Ok(Measure::Need(LENGTH_SIZE));
    };
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let limit = payload_limit(rect);
    if u64::from(length) > limit {
        return Err(DecodeError::TooLong {
            context,
            length: u64::from(length),
            limit,
        });
    }
    // INVARIANT: length ≤ payload_limit, which fits in memory that holds the rectangle.
    let total = LENGTH_SIZE.saturating_add(length as usize);
    Ok(if buf.len() >= total {
        Measure::Complete(total)
    } else {
        Measure::Need(total)
    })
}

/// Inflates `input` through `stream` into the front of `out` (scratch space, see
/// [`ZStream::inflate`]), refusing more than `limit` bytes; returns the length.
pub(crate) fn inflate_bounded(
    stream: &mut ZStream,
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
    context: &'static str,
) -> Result<usize, DecodeError> {
    if input.is_empty() {
        return Ok(0);
    }
    stream.inflate(input, out, limit, context)
}

/// Decoder for the zlib encoding; holds the connection's zlib stream.
#[derive(Debug, Default)]
pub struct ZlibDecoder {
    stream: ZStream,
    /// Inflated Raw pixels, kept between rectangles to reuse the allocation.
    inflated: Vec<u8>,
}

impl RectDecoder for ZlibDecoder {
    fn measure(
        &self,
        rect: Rect,
        _: &PixelConverter,
        buf: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        measure_length_prefixed(rect, buf, "zlib rectangle")
    }

    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        fb.check(&rect)?;
        let mut r = Reader::new(payload, "zlib rectangle");
        let length = r.u32()?;
        let data = r.take(usize::try_from(length).unwrap_or(usize::MAX))?;
        let bpp = conv.bytes_per_pixel();
        let row_bytes = usize::from(rect.width) * bpp;
        // INVARIANT: width and height are u16 and bpp ≤ 4, so this fits in 36 bits.
        let raw_size = row_bytes * usize::from(rect.height);
        let n = inflate_bounded(
            &mut self.stream,
            data,
            &mut self.inflated,
            raw_size,
            "zlib data",
        )?;
        if n < raw_size {
            return Err(DecodeError::Truncated {
                context: "zlib data",
                needed: raw_size - n,
            });
        }
        if row_bytes == 0 {
            return Ok(());
        }
        for (i, src) in self.inflated[..n].chunks_exact(row_bytes).enumerate() {
            // INVARIANT: exactly `height` rows were inflated, so i < height.
            conv.convert_row(src, fb.row_mut(rect.x, rect.y + i as u16, rect.width));
        }
        fb.add_damage(rect);
        Ok(())
    }

    fn reset(&mut self) {
        self.stream.reset();
    }
}

/// What a server does with a rectangle's bytes: deflate them into the connection's
/// stream and end with a sync flush.
#[cfg(test)]
pub(crate) fn deflate_sync(c: &mut flate2::Compress, data: &[u8]) -> Vec<u8> {
    let start = c.total_in();
    let mut out = Vec::new();
    loop {
        out.reserve(data.len() / 2 + 4096);
        let consumed = (c.total_in() - start) as usize;
        c.compress_vec(&data[consumed..], &mut out, flate2::FlushCompress::Sync)
            .expect("compress");
        if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;
    use flate2::{Compress, Compression};

    fn payload(z: &[u8]) -> Vec<u8> {
        let mut p = (z.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(z);
        p
    }

    fn decode(
        d: &mut ZlibDecoder,
        fb: &mut Framebuffer,
        conv: &PixelConverter,
        rect: Rect,
        p: &[u8],
    ) -> Result<(), DecodeError> {
        let m = d.measure(rect, conv, p, &mut ScanState::default())?;
        assert_eq!(m, Measure::Complete(p.len()));
        d.decode(rect, p, conv, fb)
    }

    #[test]
    fn two_rectangles_share_the_stream() {
        // RGB565 little-endian: 0xf800 red, 0x07e0 green, 0x001f blue, 0xffff white.
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let first: Vec<u8> = [0xf800u16, 0x07e0, 0x001f, 0xffff, 0xf800, 0x07e0]
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect();
        // The second rectangle repeats the first's bytes, so its deflate data refers
        // back into the shared window.
        let second = first.clone();
        let mut c = Compress::new(Compression::best(), true);
        let z1 = deflate_sync(&mut c, &first);
        let z2 = deflate_sync(&mut c, &second);

        let mut fb = Framebuffer::new(4, 4);
        let mut d = ZlibDecoder::default();
        decode(&mut d, &mut fb, &conv, Rect::new(1, 1, 3, 2), &payload(&z1)).expect("first");
        assert_eq!(
            fb.read_rect(Rect::new(1, 1, 3, 2)).expect("in bounds"),
            [0xff0000, 0x00ff00, 0x0000ff, 0xffffff, 0xff0000, 0x00ff00]
        );
        decode(&mut d, &mut fb, &conv, Rect::new(0, 0, 2, 3), &payload(&z2)).expect("second");
        assert_eq!(
            fb.read_rect(Rect::new(0, 0, 2, 3)).expect("in bounds"),
            [0xff0000, 0x00ff00, 0x0000ff, 0xffffff, 0xff0000, 0x00ff00]
        );
        assert_eq!(fb.pixel(3, 2), Some(0x00ff00));

        // A fresh stream cannot inflate the second rectangle on its own.
        let mut fresh = ZlibDecoder::default();
        assert!(fresh
            .decode(Rect::new(0, 0, 2, 3), &payload(&z2), &conv, &mut fb)
            .is_err());

        // After reset the decoder takes a new stream from its start.
        d.reset();
        let mut c = Compress::new(Compression::fast(), true);
        let z3 = deflate_sync(&mut c, &first);
        decode(&mut d, &mut fb, &conv, Rect::new(0, 0, 3, 2), &payload(&z3)).expect("after reset");
    }

    #[test]
    fn big_endian_32_bit_and_exact_sizes() {
        let format = PixelFormat {
            big_endian: true,
            ..PixelFormat::RGB888
        };
        let conv = PixelConverter::new(format);
        // 64x64 pixels (16384 bytes, a power of two) so the inflated size equals the
        // limit exactly; pixel i is 0x00_ii_(i>>8)_5a.
        let rect = Rect::new(0, 0, 64, 64);
        let raw: Vec<u8> = (0..4096u32)
            .flat_map(|i| [0, (i & 0xff) as u8, (i >> 8) as u8, 0x5a])
            .collect();
        let mut c = Compress::new(Compression::default(), true);
        let z = deflate_sync(&mut c, &raw);
        let mut fb = Framebuffer::new(64, 64);
        decode(
            &mut ZlibDecoder::default(),
            &mut fb,
            &conv,
            rect,
            &payload(&z),
        )
        .expect("decode");
        assert_eq!(fb.pixel(0, 0), Some(0x00_00_00_5a));
        assert_eq!(fb.pixel(5, 4), Some(0x00_05_01_5a));
        assert_eq!(fb.pixel(63, 63), Some(0x00_ff_0f_5a));
        assert_eq!(fb.damage().bounds(), rect);
    }

    #[test]
    fn small_rectangle_with_8_bit_pixels() {
        // BGR233: 0b11_000_111 = blue 3, red 7 → magenta.
        let conv = PixelConverter::new(PixelFormat::BGR233);
        let mut c = Compress::new(Compression::default(), true);
        let z = deflate_sync(&mut c, &[0b1100_0111, 0b0011_1000]);
        let mut fb = Framebuffer::new(2, 1);
        decode(
            &mut ZlibDecoder::default(),
            &mut fb,
            &conv,
            Rect::new(0, 0, 2, 1),
            &payload(&z),
        )
        .expect("decode");
        assert_eq!(fb.pixels(), &[0xff00ff, 0x00ff00]);
    }

    #[test]
    fn inflating_short_is_truncated() {
        let conv = PixelConverter::new(PixelFormat::RGB888);
        let mut c = Compress::new(Compression::default(), true);
        let z = deflate_sync(&mut c, &[1, 2, 3, 0, 4, 5, 6]);
        let mut fb = Framebuffer::new(2, 1);
        let err = ZlibDecoder::default()
            .decode(Rect::new(0, 0, 2, 1), &payload(&z), &conv, &mut fb)
            .expect_err("7 of 8 bytes");
        assert_eq!(
            err,
            DecodeError::Truncated {
                context: "zlib data",
                needed: 1
            }
        );
    }

    #[test]
    fn bomb_stops_at_the_rectangle_size() {
        let conv = PixelConverter::new(PixelFormat::RGB888);
        let mut c = Compress::new(Compression::best(), true);
        let z = deflate_sync(&mut c, &vec![0u8; 8 << 20]);
        assert!(z.len() < 20_000);
        let mut d = ZlibDecoder::default();
        let mut fb = Framebuffer::new(16, 16);
        let err = d
            .decode(Rect::new(0, 0, 16, 16), &payload(&z), &conv, &mut fb)
            .expect_err("bomb");
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
        assert!(d.inflated.capacity() < 64 << 10);
        // One byte too many is refused as well.
        let mut c = Compress::new(Compression::best(), true);
        let z = deflate_sync(&mut c, &[0u8; 16 * 16 * 4 + 1]);
        let err = ZlibDecoder::default()
            .decode(Rect::new(0, 0, 16, 16), &payload(&z), &conv, &mut fb)
            .expect_err("one byte over");
        assert!(
            matches!(err, DecodeError::TooLong { limit: 1024, .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let conv = PixelConverter::new(PixelFormat::RGB888);
        let mut fb = Framebuffer::new(4, 4);
        let rect = Rect::new(0, 0, 4, 4);
        let err = ZlibDecoder::default()
            .decode(rect, &payload(&[0xff; 40]), &conv, &mut fb)
            .expect_err("garbage");
        assert!(matches!(err, DecodeError::Zlib { .. }), "{err}");
        // The length says 10 bytes but 3 follow.
        let err = ZlibDecoder::default()
            .decode(rect, &[0, 0, 0, 10, 0x78, 0x9c, 0], &conv, &mut fb)
            .expect_err("short payload");
        assert!(
            matches!(err, DecodeError::Truncated { needed: 7, .. }),
            "{err}"
        );
        // Empty data for a non-empty rectangle.
        let err = ZlibDecoder::default()
            .decode(rect, &[0, 0, 0, 0], &conv, &mut fb)
            .expect_err("no data");
        assert!(
            matches!(err, DecodeError::Truncated { needed: 64, .. }),
            "{err}"
        );
        // A rectangle outside the framebuffer.
        let err = ZlibDecoder::default()
            .decode(Rect::new(2, 2, 4, 4), &[0, 0, 0, 0], &conv, &mut fb)
            .expect_err("out of bounds");
        assert!(matches!(err, DecodeError::OutOfBounds { .. }), "{err}");
    }

    #[test]
    fn measure_checks_the_declared_length() {
        let conv = PixelConverter::new(PixelFormat::RGB888);
        let d = ZlibDecoder::default();
        let rect = Rect::new(0, 0, 10, 10);
        let mut scan = ScanState::default();
        assert_eq!(
            d.measure(rect, &conv, &[0, 0], &mut scan),
            Ok(Measure::Need(4))
        );
        assert_eq!(
            d.measure(rect, &conv, &[0, 0, 0, 3, 1], &mut scan),
            Ok(Measure::Need(7))
        );
        assert_eq!(
            d.measure(rect, &conv, &[0, 0, 0, 3, 1, 2, 3, 9, 9], &mut scan),
            Ok(Measure::Complete(7))
        );
        let err = d
            .measure(rect, &conv, &[0xff, 0xff, 0xff, 0xff], &mut scan)
            .expect_err("huge");
        assert_eq!(
            err,
            DecodeError::TooLong {
                context: "zlib rectangle",
                length: u64::from(u32::MAX),
                limit: payload_limit(rect)
            }
        );
    }
}
