//! JPEG for Tight: libjpeg-turbo (the TurboJPEG 3 API, built from source and linked
//! statically by `turbojpeg-sys`), the codec TigerVNC uses on both sides.
//!
//! Pictures go straight between the framebuffer and the codec: its canonical
//! `0x00RRGGBB` pixels are B, G, R, X bytes in little-endian memory (X, R, G, B in
//! big-endian), which libjpeg-turbo reads and writes as is, with the framebuffer's
//! stride as the pitch; no intermediate samples.
//!
//! Untrusted streams: the image size is read from the frame header and checked
//! against the rectangle before anything is decoded, and every libjpeg-turbo error or
//! warning (corrupt or truncated data) fails the rectangle.

use std::fmt;

use turbojpeg::{Compressor, Decompressor, Image, PixelFormat, Subsamp};

use crate::{Framebuffer, Rect};

/// The byte order of a canonical pixel in memory.
const FORMAT: PixelFormat = if cfg!(target_endian = "little") {
    PixelFormat::BGRX
} else {
    PixelFormat::XRGB
};

/// Chroma subsampling of an encoded picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsampling {
    /// 4:4:4.
    None,
    /// 4:2:2: half the chroma columns.
    Horizontal,
    /// 4:2:0: half the chroma columns and rows.
    Half,
}

impl Subsampling {
    fn turbojpeg(self) -> Subsamp {
        match self {
            Subsampling::None => Subsamp::None,
            Subsampling::Horizontal => Subsamp::Sub2x1,
            Subsampling::Half => Subsamp::Sub2x2,
        }
    }
}

/// Why a JPEG stream was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JpegError {
    /// The stream's image is not the rectangle's size.
    WrongSize {
        width: usize,
        height: usize,
        rect: Rect,
    },
    /// libjpeg-turbo refused the stream (or could not start).
    Codec(String),
}

impl fmt::Display for JpegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JpegError::WrongSize {
                width,
                height,
                rect,
            } => write!(
                f,
                "image is {width}x{height} but the rectangle is {}x{}",
                rect.width, rect.height
            ),
            JpegError::Codec(detail) => f.write_str(detail),
        }
    }
}

/// The framebuffer words of `rect`, from its first pixel to its last (rows between
/// included), as bytes; `None` if `rect` is empty or outside the framebuffer.
fn span(fb_width: usize, len: usize, rect: Rect) -> Option<std::ops::Range<usize>> {
    let (w, h) = (usize::from(rect.width), usize::from(rect.height));
    if w == 0 || h == 0 || usize::from(rect.x) + w > fb_width {
        return None;
    }
    let start = usize::from(rect.y) * fb_width + usize::from(rect.x);
    let end = start + (h - 1) * fb_width + w;
    (end <= len).then_some(start..end)
}

/// A JPEG decoder that writes into a framebuffer; the libjpeg-turbo instance is made
/// on first use and kept.
#[derive(Default)]
pub struct JpegDecoder {
    codec: Option<Decompressor>,
}

impl fmt::Debug for JpegDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JpegDecoder").finish_non_exhaustive()
    }
}

impl JpegDecoder {
    /// Decodes a JFIF stream exactly the size of `rect` into `rect` of `fb`, which the
    /// caller has checked lies inside it. Adds no damage.
    pub fn decode(
        &mut self,
        data: &[u8],
        rect: Rect,
        fb: &mut Framebuffer,
    ) -> Result<(), JpegError> {
        let codec = match &mut self.codec {
            Some(codec) => codec,
            empty => empty.insert(Decompressor::new().map_err(codec_error)?),
        };
        let header = codec.read_header(data).map_err(codec_error)?;
        let (w, h) = (usize::from(rect.width), usize::from(rect.height));
        if (header.width, header.height) != (w, h) {
            return Err(JpegError::WrongSize {
                width: header.width,
                height: header.height,
                rect,
            });
        }
        let stride = usize::from(fb.width());
        let pixels = fb.pixels_mut();
        let Some(range) = span(stride, pixels.len(), rect) else {
            return Err(JpegError::Codec(format!(
                "{rect:?} is outside the framebuffer"
            )));
        };
        let words = &mut pixels[range];
        let image = Image {
            pixels: bytemuck::cast_slice_mut::<u32, u8>(words),
            width: w,
            pitch: stride * 4,
            height: h,
            format: FORMAT,
        };
        let result = codec.decompress(data, image).map_err(codec_error);
        // libjpeg-turbo sets X to 0xff, also in the rows it wrote before failing;
        // canonical pixels have 0 there.
        for row in words.chunks_mut(stride) {
            for p in &mut row[..w] {
                *p &= 0x00ff_ffff;
            }
        }
        result
    }
}

/// A JPEG encoder that reads from a framebuffer; the libjpeg-turbo instance is made on
/// first use and kept, with its output buffer.
#[derive(Default)]
pub struct JpegEncoder {
    codec: Option<Compressor>,
    out: Vec<u8>,
}

impl fmt::Debug for JpegEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JpegEncoder").finish_non_exhaustive()
    }
}

impl JpegEncoder {
    /// Encodes `rect` of `fb` at `quality` (1-100) with `subsampling`; `None` if `rect`
    /// is empty or outside `fb`, or libjpeg-turbo fails.
    pub fn encode(
        &mut self,
        fb: &Framebuffer,
        rect: Rect,
        quality: u8,
        subsampling: Subsampling,
    ) -> Option<&[u8]> {
        let stride = usize::from(fb.width());
        let range = span(stride, fb.pixels().len(), rect)?;
        let codec = match &mut self.codec {
            Some(codec) => codec,
            empty => empty.insert(Compressor::new().ok()?),
        };
        codec.set_quality(i32::from(quality.clamp(1, 100))).ok()?;
        codec.set_subsamp(subsampling.turbojpeg()).ok()?;
        let (w, h) = (usize::from(rect.width), usize::from(rect.height));
        let needed = codec.buf_len(w, h).ok()?;
        if self.out.len() < needed {
            self.out.resize(needed, 0);
        }
        let image = Image {
            pixels: bytemuck::cast_slice::<u32, u8>(&fb.pixels()[range]),
            width: w,
            pitch: stride * 4,
            height: h,
            format: FORMAT,
        };
        let len = codec.compress_to_slice(image, &mut self.out).ok()?;
        self.out.get(..len)
    }
}

fn codec_error(e: turbojpeg::Error) -> JpegError {
    JpegError::Codec(e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A smooth picture: JPEG keeps it well.
    fn smooth(w: u16, h: u16) -> Framebuffer {
        let mut fb = Framebuffer::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = (x as u32 * 3 % 256, y as u32 * 5 % 256, (x + y) as u32 % 256);
                fb.pixels_mut()[usize::from(y) * usize::from(w) + usize::from(x)] =
                    (r << 16) | (g << 8) | b;
            }
        }
        fb
    }

    #[test]
    fn a_rectangle_goes_through_at_its_place_and_leaves_the_rest_alone() {
        let source = smooth(64, 48);
        let rect = Rect::new(5, 7, 33, 21);
        let mut enc = JpegEncoder::default();
        let jpeg = enc
            .encode(&source, rect, 95, Subsampling::None)
            .unwrap()
            .to_vec();
        assert_eq!(jpeg[..2], [0xff, 0xd8]);

        let mut fb = Framebuffer::new(64, 48);
        fb.pixels_mut().fill(0x0012_3456);
        JpegDecoder::default().decode(&jpeg, rect, &mut fb).unwrap();
        for y in 0..48u16 {
            for x in 0..64u16 {
                let got = fb.pixel(x, y).unwrap();
                let inside = (rect.x..rect.x + rect.width).contains(&x)
                    && (rect.y..rect.y + rect.height).contains(&y);
                if !inside {
                    assert_eq!(got, 0x0012_3456, "({x}, {y}) outside was touched");
                    continue;
                }
                assert_eq!(got >> 24, 0, "({x}, {y}) has bits above blue-green-red");
                let want = source.pixel(x, y).unwrap();
                for shift in [0, 8, 16] {
                    let (a, b) = ((got >> shift) & 0xff, (want >> shift) & 0xff);
                    assert!(a.abs_diff(b) <= 12, "({x}, {y}): {got:06x} for {want:06x}");
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_and_junk_are_refused() {
        let source = smooth(16, 8);
        let jpeg = JpegEncoder::default()
            .encode(&source, source.bounds(), 80, Subsampling::Half)
            .unwrap()
            .to_vec();
        let mut fb = Framebuffer::new(32, 32);
        let mut dec = JpegDecoder::default();
        let err = dec
            .decode(&jpeg, Rect::new(0, 0, 16, 9), &mut fb)
            .unwrap_err();
        assert_eq!(err.to_string(), "image is 16x8 but the rectangle is 16x9");
        for junk in [
            &jpeg[..jpeg.len() / 2],
            &jpeg[..2],
            &b"\x89PNG...."[..],
            &[],
        ] {
            let err = dec
                .decode(junk, Rect::new(0, 0, 16, 8), &mut fb)
                .unwrap_err();
            assert!(matches!(err, JpegError::Codec(_)), "{err:?}");
        }
        // The decoder is still good after errors.
        dec.decode(&jpeg, Rect::new(16, 24, 16, 8), &mut fb)
            .unwrap();
    }

    #[test]
    fn empty_or_outside_rectangles_encode_nothing() {
        let fb = smooth(16, 16);
        let mut enc = JpegEncoder::default();
        assert!(enc
            .encode(&fb, Rect::new(0, 0, 0, 4), 80, Subsampling::None)
            .is_none());
        assert!(enc
            .encode(&fb, Rect::new(10, 0, 8, 4), 80, Subsampling::None)
            .is_none());
        assert!(enc
            .encode(&fb, Rect::new(0, 14, 8, 4), 80, Subsampling::None)
            .is_none());
    }
}
