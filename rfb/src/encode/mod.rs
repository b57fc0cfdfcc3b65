//! Rectangle encoders, one module per encoding: the server side's counterpart of
//! [`decode`](crate::decode).
//!
//! An encoder reads canonical pixels (`0x00RRGGBB`) from a [`Framebuffer`] and writes
//! a rectangle's payload (not its 12-byte header) in the client's pixel format,
//! through a [`PixelWriter`]. Stateful encoders (Zlib, ZRLE, Tight) keep their deflate
//! streams per connection; [`RectEncoder::reset`] starts them anew (kvmux's
//! zlib-stream-reset, `docs/PROTOCOL.md`).

use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::{CPixel, PixelFormat};

pub mod copyrect;
pub mod cursor;
mod deflate;
pub mod hextile;
mod huffman;
pub mod raw;
pub mod rre;
pub mod tight;
mod wire;
pub mod zlib;
pub mod zrle;

#[cfg(test)]
mod round_trips;

/// What the client asked for that changes how rectangles are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EncodeParams {
    /// JPEG quality level 0-9 (pseudo-encodings -32..-23); `None`: lossless only.
    pub quality: Option<u8>,
    /// Compression level 0-9 (pseudo-encodings -256..-247); `None`: the encoder's default.
    pub compress: Option<u8>,
}

/// A server-side encoder for one encoding.
pub trait RectEncoder: Send {
    /// Appends the payload of `rect` (inside `fb`, checked by the caller) to `out`.
    fn encode(
        &mut self,
        fb: &Framebuffer,
        rect: Rect,
        pw: &PixelWriter,
        params: &EncodeParams,
        out: &mut Vec<u8>,
    );

    /// Forgets stream state, so the next rectangle starts new zlib streams.
    fn reset(&mut self) {}

    /// Gives back working memory kept between rectangles (scratch buffers sized by
    /// the largest rectangle so far); stream state is kept. For idle connections.
    fn trim(&mut self) {}
}

/// Writes canonical pixels in a client's pixel format.
///
/// For colour-mapped formats the server sends a fixed map (see
/// [`PixelWriter::colour_map`]): 8-bit pixels index a 3-3-2 (BGR233-like) cube.
#[derive(Debug, Clone)]
pub struct PixelWriter {
    format: PixelFormat,
    fast: WriteFast,
    /// For non-255 maxima: 8-bit channel → level, per channel.
    red: [u16; 256],
    green: [u16; 256],
    blue: [u16; 256],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFast {
    /// Little-endian `0x00RRGGBB` 32-bit: the canonical value itself.
    Identity,
    Levels,
    ColourMap,
}

/// Channel level for an 8-bit value: `(v * max + 127) / 255`, rounding to nearest.
fn level_table(max: u16) -> [u16; 256] {
    let mut t = [0u16; 256];
    for (v, slot) in t.iter_mut().enumerate() {
        *slot = ((v as u32 * u32::from(max) + 127) / 255) as u16;
    }
    t
}

impl PixelWriter {
    /// A writer for `format`, which must have passed [`PixelFormat::validate`].
    pub fn new(format: PixelFormat) -> PixelWriter {
        let fast = if !format.true_colour {
            WriteFast::ColourMap
        } else if format.bits_per_pixel == 32
            && !format.big_endian
            && (format.red_max, format.green_max, format.blue_max) == (255, 255, 255)
            && (format.red_shift, format.green_shift, format.blue_shift) == (16, 8, 0)
        {
            WriteFast::Identity
        } else {
            WriteFast::Levels
        };
        let (red, green, blue) = if format.true_colour {
            (
                level_table(format.red_max),
                level_table(format.green_max),
                level_table(format.blue_max),
            )
        } else {
            (level_table(7), level_table(7), level_table(3))
        };
        PixelWriter {
            format,
            fast,
            red,
            green,
            blue,
        }
    }

    pub fn format(&self) -> &PixelFormat {
        &self.format
    }

    pub fn bytes_per_pixel(&self) -> usize {
        self.format.bytes_per_pixel()
    }

    /// The colour map a server sends (SetColourMapEntries from entry 0) to a client
    /// with a colour-mapped format: index `b << 6 | g << 3 | r` (3 bits red, 3 green,
    /// 2 blue) is that colour, as 16-bit channels.
    pub fn colour_map() -> Vec<(u16, u16, u16)> {
        (0..256u32)
            .map(|i| {
                let scale = |level: u32, max: u32| ((level * 65535 + max / 2) / max) as u16;
                (scale(i & 7, 7), scale((i >> 3) & 7, 7), scale(i >> 6, 3))
            })
            .collect()
    }

    /// The pixel value (before byte order) for a canonical colour.
    #[inline]
    pub fn value(&self, rgb: u32) -> u32 {
        if self.fast == WriteFast::Identity {
            return rgb & 0x00ff_ffff;
        }
        let r = u32::from(self.red[((rgb >> 16) & 0xff) as usize]);
        let g = u32::from(self.green[((rgb >> 8) & 0xff) as usize]);
        let b = u32::from(self.blue[(rgb & 0xff) as usize]);
        if self.fast == WriteFast::ColourMap {
            return (b << 6) | (g << 3) | r;
        }
        (r << self.format.red_shift)
            | (g << self.format.green_shift)
            | (b << self.format.blue_shift)
    }

    /// Appends one pixel in the wire format.
    #[inline]
    pub fn write(&self, rgb: u32, out: &mut Vec<u8>) {
        let v = self.value(rgb);
        let be = self.format.big_endian;
        match self.format.bits_per_pixel {
            8 => out.push(v as u8),
            16 => out.extend_from_slice(&if be {
                (v as u16).to_be_bytes()
            } else {
                (v as u16).to_le_bytes()
            }),
            24 => {
                let b = if be { v.to_be_bytes() } else { v.to_le_bytes() };
                out.extend_from_slice(if be { &b[1..] } else { &b[..3] });
            }
            _ => out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() }),
        }
    }

    /// Appends a run of pixels in the wire format.
    pub fn write_row(&self, src: &[u32], out: &mut Vec<u8>) {
        if self.fast == WriteFast::Identity {
            out.reserve(src.len() * 4);
            for &p in src {
                out.extend_from_slice(&(p & 0x00ff_ffff).to_le_bytes());
            }
            return;
        }
        for &p in src {
            self.write(p, out);
        }
    }

    /// Bytes per ZRLE/TRLE CPIXEL.
    pub fn cpixel_size(&self) -> usize {
        match self.format.cpixel() {
            CPixel::Full => self.bytes_per_pixel(),
            CPixel::Low3 | CPixel::High3 => 3,
        }
    }

    /// Appends one ZRLE/TRLE CPIXEL.
    #[inline]
    pub fn write_cpixel(&self, rgb: u32, out: &mut Vec<u8>) {
        let be = self.format.big_endian;
        match self.format.cpixel() {
            CPixel::Full => self.write(rgb, out),
            CPixel::Low3 => {
                let b = self.value(rgb).to_le_bytes();
                out.extend_from_slice(&if be {
                    [b[2], b[1], b[0]]
                } else {
                    [b[0], b[1], b[2]]
                });
            }
            CPixel::High3 => {
                let b = self.value(rgb).to_le_bytes();
                out.extend_from_slice(&if be {
                    [b[3], b[2], b[1]]
                } else {
                    [b[1], b[2], b[3]]
                });
            }
        }
    }

    /// Bytes per Tight TPIXEL.
    pub fn tpixel_size(&self) -> usize {
        if self.format.tight_uses_rgb24() {
            3
        } else {
            self.bytes_per_pixel()
        }
    }

    /// Appends one Tight TPIXEL.
    #[inline]
    pub fn write_tpixel(&self, rgb: u32, out: &mut Vec<u8>) {
        if self.format.tight_uses_rgb24() {
            let v = self.value(rgb);
            let (r, g, b) = (
                (v >> self.format.red_shift) as u8,
                (v >> self.format.green_shift) as u8,
                (v >> self.format.blue_shift) as u8,
            );
            out.extend_from_slice(&[r, g, b]);
        } else {
            self.write(rgb, out);
        }
    }
}

/// Reads the pixels of `rect` row by row.
pub fn rows<'a>(fb: &'a Framebuffer, rect: Rect) -> impl Iterator<Item = &'a [u32]> + 'a {
    let stride = usize::from(fb.width());
    let (x, w) = (usize::from(rect.x), usize::from(rect.width));
    (rect.y..rect.y + rect.height).map(move |y| {
        let s = usize::from(y) * stride + x;
        &fb.pixels()[s..s + w]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelConverter;

    /// Writing with a format and reading back with the decoder's converter.
    fn round(format: PixelFormat, rgb: u32) -> u32 {
        let w = PixelWriter::new(format);
        let mut out = Vec::new();
        w.write(rgb, &mut out);
        assert_eq!(out.len(), w.bytes_per_pixel());
        PixelConverter::new(format).pixel(&out)
    }

    #[test]
    fn writes_hand_computed_bytes() {
        let mut out = Vec::new();
        PixelWriter::new(PixelFormat::RGB888).write(0x0011_2233, &mut out);
        assert_eq!(out, [0x33, 0x22, 0x11, 0]);
        out.clear();
        // 565: r 0xff→31, g 0x80→(128*63+127)/255=32, b 0→0: 11111 100000 00000 = 0xfc00.
        PixelWriter::new(PixelFormat::RGB565).write(0x00ff_8000, &mut out);
        assert_eq!(out, [0x00, 0xfc]);
        out.clear();
        let be = PixelFormat {
            big_endian: true,
            ..PixelFormat::RGB888
        };
        PixelWriter::new(be).write(0x0011_2233, &mut out);
        assert_eq!(out, [0, 0x11, 0x22, 0x33]);
    }

    #[test]
    fn lossless_formats_round_trip() {
        for rgb in [0, 0x00ff_ffff, 0x0012_3456, 0x00fe_dcba] {
            assert_eq!(round(PixelFormat::RGB888, rgb), rgb);
            let bgr = PixelFormat {
                red_shift: 0,
                blue_shift: 16,
                big_endian: true,
                ..PixelFormat::RGB888
            };
            assert_eq!(round(bgr, rgb), rgb);
        }
        // Levels survive a reduced format exactly.
        assert_eq!(round(PixelFormat::RGB565, 0x00ff_0000), 0x00ff_0000);
    }

    #[test]
    fn colour_map_matches_the_written_index() {
        let map = PixelWriter::colour_map();
        let w = PixelWriter::new(PixelFormat::COLOURMAP8);
        let mut out = Vec::new();
        w.write(0x00ff_0000, &mut out); // red level 7, others 0
        assert_eq!(out, [7]);
        assert_eq!(map[7], (65535, 0, 0));
        let mut conv = PixelConverter::new(PixelFormat::COLOURMAP8);
        conv.set_colour_map_entries(0, &map);
        assert_eq!(conv.pixel(&[0xff]), 0x00ff_ffff);
    }

    #[test]
    fn cpixel_and_tpixel() {
        let w = PixelWriter::new(PixelFormat::RGB888);
        let mut out = Vec::new();
        w.write_cpixel(0x0011_2233, &mut out);
        w.write_tpixel(0x0011_2233, &mut out);
        assert_eq!(out, [0x33, 0x22, 0x11, 0x11, 0x22, 0x33]);
        let conv = PixelConverter::new(PixelFormat::RGB888);
        assert_eq!(conv.cpixel(&out[..3]), 0x0011_2233);
        assert_eq!(conv.tpixel(&out[3..]), 0x0011_2233);
    }
}
