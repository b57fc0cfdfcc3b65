//! Pixels on the wire, in bulk: the fast paths the encoders share.
//!
//! [`PixelWriter`] converts one canonical colour at a time. Encoders that look at many
//! pixels first convert a row into *pixel values* (the `u32` a client's format gives a
//! colour, before byte order), compare and count those, and write the values they
//! choose with a [`Wire`] layout: a pixel's bytes are always a contiguous slice of the
//! value's four bytes in the format's byte order.

use super::PixelWriter;
use crate::pixel::CPixel;

/// Where a pixel's bytes lie in its 32-bit value: `(if big_endian { v.to_be_bytes() }
/// else { v.to_le_bytes() })[offset..offset + size]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wire {
    big_endian: bool,
    offset: usize,
    size: usize,
    /// The value is the canonical colour itself (little-endian `0x00RRGGBB`).
    identity: bool,
}

impl Wire {
    /// The layout of a PIXEL in `pw`'s format.
    pub(crate) fn pixel(pw: &PixelWriter) -> Wire {
        let f = pw.format();
        let size = f.bytes_per_pixel();
        let big_endian = f.big_endian;
        Wire {
            big_endian,
            offset: if big_endian { 4 - size } else { 0 },
            size,
            identity: Self::is_identity(pw),
        }
    }

    /// The layout of a ZRLE/TRLE CPIXEL in `pw`'s format.
    pub(crate) fn cpixel(pw: &PixelWriter) -> Wire {
        let f = pw.format();
        let big_endian = f.big_endian;
        let identity = Self::is_identity(pw);
        match f.cpixel() {
            CPixel::Full => Wire::pixel(pw),
            // The least significant three bytes: first in little-endian order.
            CPixel::Low3 => Wire {
                big_endian,
                offset: usize::from(big_endian),
                size: 3,
                identity,
            },
            // The most significant three bytes.
            CPixel::High3 => Wire {
                big_endian,
                offset: usize::from(!big_endian),
                size: 3,
                identity,
            },
        }
    }

    fn is_identity(pw: &PixelWriter) -> bool {
        let f = pw.format();
        f.true_colour
            && f.bits_per_pixel == 32
            && !f.big_endian
            && (f.red_max, f.green_max, f.blue_max) == (255, 255, 255)
            && (f.red_shift, f.green_shift, f.blue_shift) == (16, 8, 0)
    }

    /// Bytes per pixel in this layout.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Converts canonical colours to pixel values: `dst[i] = pw.value(src[i])`.
    #[inline]
    pub(crate) fn values(&self, pw: &PixelWriter, src: &[u32], dst: &mut [u32]) {
        if self.identity {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s & 0x00ff_ffff;
            }
        } else {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = pw.value(s);
            }
        }
    }

    /// Appends one pixel value.
    #[inline]
    pub(crate) fn put(&self, v: u32, out: &mut Vec<u8>) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        out.extend_from_slice(&b[self.offset..self.offset + self.size]);
    }

    /// Appends pixel values.
    pub(crate) fn put_all(&self, values: &[u32], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + values.len() * self.size, 0);
        self.store(values, &mut out[start..]);
    }

    /// Converts canonical colours and appends them as pixels.
    pub(crate) fn put_colours(&self, pw: &PixelWriter, colours: &[u32], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + colours.len() * self.size, 0);
        let dst = &mut out[start..];
        if self.identity {
            // 4-byte pixels or 3-byte CPIXELs straight from the colour.
            store_as::<false>(colours, dst, self.offset, self.size, 0x00ff_ffff);
        } else {
            for (d, &c) in dst.chunks_exact_mut(self.size).zip(colours) {
                let v = pw.value(c);
                let b = if self.big_endian {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                d.copy_from_slice(&b[self.offset..self.offset + self.size]);
            }
        }
    }

    /// Writes `values` into `dst`, which holds exactly `values.len() * size` bytes.
    fn store(&self, values: &[u32], dst: &mut [u8]) {
        if self.big_endian {
            store_as::<true>(values, dst, self.offset, self.size, u32::MAX);
        } else {
            store_as::<false>(values, dst, self.offset, self.size, u32::MAX);
        }
    }
}

/// The loops behind [`Wire::store`], one per common size so each is a fixed-size copy.
#[inline(always)]
fn store_as<const BE: bool>(values: &[u32], dst: &mut [u8], offset: usize, size: usize, mask: u32) {
    let bytes = |v: u32| {
        if BE {
            (v & mask).to_be_bytes()
        } else {
            (v & mask).to_le_bytes()
        }
    };
    match (size, offset) {
        (4, _) => {
            for (d, &v) in dst.chunks_exact_mut(4).zip(values) {
                d.copy_from_slice(&bytes(v));
            }
        }
        (3, 0) => {
            for (d, &v) in dst.chunks_exact_mut(3).zip(values) {
                d.copy_from_slice(&bytes(v)[..3]);
            }
        }
        (3, _) => {
            for (d, &v) in dst.chunks_exact_mut(3).zip(values) {
                d.copy_from_slice(&bytes(v)[1..]);
            }
        }
        (2, _) => {
            for (d, &v) in dst.chunks_exact_mut(2).zip(values) {
                d.copy_from_slice(&bytes(v)[offset..offset + 2]);
            }
        }
        _ => {
            for (d, &v) in dst.iter_mut().zip(values) {
                *d = bytes(v)[offset];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;

    fn formats() -> Vec<PixelFormat> {
        let bgr_be = PixelFormat {
            big_endian: true,
            red_shift: 0,
            blue_shift: 16,
            ..PixelFormat::RGB888
        };
        let high = PixelFormat {
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            ..PixelFormat::RGB888
        };
        let high_be = PixelFormat {
            big_endian: true,
            ..high
        };
        let rgb24 = PixelFormat {
            bits_per_pixel: 24,
            ..PixelFormat::RGB888
        };
        let rgb24_be = PixelFormat {
            big_endian: true,
            ..rgb24
        };
        let rgb565_be = PixelFormat {
            big_endian: true,
            ..PixelFormat::RGB565
        };
        vec![
            PixelFormat::RGB888,
            bgr_be,
            high,
            high_be,
            rgb24,
            rgb24_be,
            PixelFormat::RGB565,
            rgb565_be,
            PixelFormat::RGB555,
            PixelFormat::BGR233,
            PixelFormat::COLOURMAP8,
        ]
    }

    /// Every layout writes what `PixelWriter` writes one pixel at a time.
    #[test]
    fn agrees_with_the_pixel_writer() {
        let colours = [0u32, 0x00ff_ffff, 0x0012_3456, 0x00fe_dcba, 0x0080_0001];
        for f in formats() {
            let pw = PixelWriter::new(f);
            let mut values = [0u32; 5];
            let (pixel, cpixel) = (Wire::pixel(&pw), Wire::cpixel(&pw));
            pixel.values(&pw, &colours, &mut values);
            let (mut expected, mut expected_c) = (Vec::new(), Vec::new());
            for &c in &colours {
                pw.write(c, &mut expected);
                pw.write_cpixel(c, &mut expected_c);
            }
            let (mut one, mut all, mut direct) = (Vec::new(), Vec::new(), Vec::new());
            for &v in &values {
                pixel.put(v, &mut one);
            }
            pixel.put_all(&values, &mut all);
            pixel.put_colours(&pw, &colours, &mut direct);
            assert_eq!(one, expected, "{f:?}");
            assert_eq!(all, expected, "{f:?}");
            assert_eq!(direct, expected, "{f:?}");
            let (mut one, mut all, mut direct) = (Vec::new(), Vec::new(), Vec::new());
            for &v in &values {
                cpixel.put(v, &mut one);
            }
            cpixel.put_all(&values, &mut all);
            cpixel.put_colours(&pw, &colours, &mut direct);
            assert_eq!(one, expected_c, "cpixel {f:?}");
            assert_eq!(all, expected_c, "cpixel {f:?}");
            assert_eq!(direct, expected_c, "cpixel {f:?}");
            assert_eq!(cpixel.size(), pw.cpixel_size());
        }
    }

    #[test]
    fn identity_masks_the_unused_byte() {
        let pw = PixelWriter::new(PixelFormat::RGB888);
        let w = Wire::cpixel(&pw);
        let mut v = [0u32; 1];
        w.values(&pw, &[0xab11_2233], &mut v);
        assert_eq!(v, [0x0011_2233]);
        let mut out = Vec::new();
        Wire::pixel(&pw).put_colours(&pw, &[0xab11_2233], &mut out);
        assert_eq!(out, [0x33, 0x22, 0x11, 0]);
    }
}
