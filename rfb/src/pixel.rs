//! Pixel formats ([RFC 6143 §7.4]) and conversion into the canonical framebuffer format.
//!
//! Every framebuffer in kvmux holds pixels as `u32` values `0x00RRGGBB` (8 bits per
//! channel, the top byte unused): the layout of cairo's `RGB24`, GDK's `B8G8R8X8` on
//! little-endian machines and of a depth-24 X server. Decoders read pixels in whatever
//! format the server sends and convert them with a [`PixelConverter`].
//!
//! [RFC 6143 §7.4]: https://www.rfc-editor.org/rfc/rfc6143#section-7.4

use crate::error::DecodeError;

/// A pixel format as carried in ServerInit and SetPixelFormat (16 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// Size of a pixel format on the wire.
    pub const SIZE: usize = 1 /* bits-per-pixel */ + 1 /* depth */ + 1 /* big-endian-flag */
        + 1 /* true-colour-flag */ + 2 /* red-max */ + 2 /* green-max */ + 2 /* blue-max */
        + 1 /* red-shift */ + 1 /* green-shift */ + 1 /* blue-shift */ + 3 /* padding */;

    /// 32 bits per pixel, depth 24, little-endian `0x00RRGGBB`: the canonical format.
    pub const RGB888: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// 16 bits per pixel, 5-6-5.
    pub const RGB565: PixelFormat = PixelFormat {
        bits_per_pixel: 16,
        depth: 16,
        big_endian: false,
        true_colour: true,
        red_max: 31,
        green_max: 63,
        blue_max: 31,
        red_shift: 11,
        green_shift: 5,
        blue_shift: 0,
    };

    /// 16 bits per pixel, 5-5-5.
    pub const RGB555: PixelFormat = PixelFormat {
        bits_per_pixel: 16,
        depth: 15,
        big_endian: false,
        true_colour: true,
        red_max: 31,
        green_max: 31,
        blue_max: 31,
        red_shift: 10,
        green_shift: 5,
        blue_shift: 0,
    };

    /// 8 bits per pixel, blue in the top two bits, green in the middle three, red in the low three.
    pub const BGR233: PixelFormat = PixelFormat {
        bits_per_pixel: 8,
        depth: 8,
        big_endian: false,
        true_colour: true,
        red_max: 7,
        green_max: 7,
        blue_max: 3,
        red_shift: 0,
        green_shift: 3,
        blue_shift: 6,
    };

    /// 8 bits per pixel through a colour map the server sets with SetColourMapEntries.
    pub const COLOURMAP8: PixelFormat = PixelFormat {
        bits_per_pixel: 8,
        depth: 8,
        big_endian: false,
        true_colour: false,
        red_max: 0,
        green_max: 0,
        blue_max: 0,
        red_shift: 0,
        green_shift: 0,
        blue_shift: 0,
    };

    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// Checks what the rest of the crate relies on: a supported size, and true-colour
    /// channels that fit in the pixel.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if !matches!(self.bits_per_pixel, 8 | 16 | 24 | 32) {
            return Err(DecodeError::invalid(
                "pixel format",
                format!("unsupported bits-per-pixel {}", self.bits_per_pixel),
            ));
        }
        if self.true_colour {
            for (name, max, shift) in [
                ("red", self.red_max, self.red_shift),
                ("green", self.green_max, self.green_shift),
                ("blue", self.blue_max, self.blue_shift),
            ] {
                if max == 0 {
                    return Err(DecodeError::invalid(
                        "pixel format",
                        format!("{name}-max is 0"),
                    ));
                }
                let bits = 16 - max.leading_zeros();
                if u32::from(shift) + bits > u32::from(self.bits_per_pixel) {
                    return Err(DecodeError::invalid(
                        "pixel format",
                        format!(
                            "{name} channel (max {max}, shift {shift}) does not fit in {} bits",
                            self.bits_per_pixel
                        ),
                    ));
                }
            }
        } else if self.bits_per_pixel > 16 {
            return Err(DecodeError::invalid(
                "pixel format",
                format!(
                    "colour-mapped format with {} bits per pixel",
                    self.bits_per_pixel
                ),
            ));
        }
        Ok(())
    }

    /// Parses the 16 wire bytes; `bytes` must hold at least [`PixelFormat::SIZE`].
    pub fn from_bytes(bytes: &[u8; 16]) -> PixelFormat {
        PixelFormat {
            bits_per_pixel: bytes[0],
            depth: bytes[1],
            big_endian: bytes[2] != 0,
            true_colour: bytes[3] != 0,
            red_max: u16::from_be_bytes([bytes[4], bytes[5]]),
            green_max: u16::from_be_bytes([bytes[6], bytes[7]]),
            blue_max: u16::from_be_bytes([bytes[8], bytes[9]]),
            red_shift: bytes[10],
            green_shift: bytes[11],
            blue_shift: bytes[12],
        }
    }

    pub fn to_bytes(&self) -> [u8; 16] {
        let r = self.red_max.to_be_bytes();
        let g = self.green_max.to_be_bytes();
        let b = self.blue_max.to_be_bytes();
        [
            self.bits_per_pixel,
            self.depth,
            u8::from(self.big_endian),
            u8::from(self.true_colour),
            r[0],
            r[1],
            g[0],
            g[1],
            b[0],
            b[1],
            self.red_shift,
            self.green_shift,
            self.blue_shift,
            0,
            0,
            0,
        ]
    }

    /// Whether Tight sends this format's pixels as 3-byte `R, G, B` TPIXELs.
    pub fn tight_uses_rgb24(&self) -> bool {
        self.true_colour
            && self.bits_per_pixel == 32
            && self.depth == 24
            && self.red_max == 255
            && self.green_max == 255
            && self.blue_max == 255
    }

    /// How ZRLE and TRLE send a pixel (CPIXEL, RFC 6143 §7.7.5).
    pub fn cpixel(&self) -> CPixel {
        if !(self.true_colour && self.bits_per_pixel == 32 && self.depth <= 24) {
            return CPixel::Full;
        }
        let mask = |max: u16, shift: u8| u32::from(max).checked_shl(u32::from(shift)).unwrap_or(0);
        let used = mask(self.red_max, self.red_shift)
            | mask(self.green_max, self.green_shift)
            | mask(self.blue_max, self.blue_shift);
        if used & 0xff00_0000 == 0 {
            CPixel::Low3
        } else if used & 0x0000_00ff == 0 {
            CPixel::High3
        } else {
            CPixel::Full
        }
    }
}

/// The compressed-pixel layout of ZRLE and TRLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CPixel {
    /// As a normal pixel.
    Full,
    /// 3 bytes: the least significant three of a 32-bit pixel.
    Low3,
    /// 3 bytes: the most significant three of a 32-bit pixel.
    High3,
}

/// Converts pixels from a wire format into canonical `0x00RRGGBB` values.
#[derive(Debug, Clone)]
pub struct PixelConverter {
    format: PixelFormat,
    fast: Fast,
    red: Vec<u8>,
    green: Vec<u8>,
    blue: Vec<u8>,
    /// Canonical colours for colour-mapped formats, indexed by pixel value.
    colour_map: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    /// `0x00RRGGBB` little-endian 32-bit: a mask.
    Identity,
    /// Any true-colour format with 8-bit channels: shifts only.
    Shifts,
    /// Lookup tables per channel.
    Tables,
    ColourMap,
}

fn scale_table(max: u16) -> Vec<u8> {
    let max = u32::from(max.max(1));
    (0..=max)
        .map(|v| ((v * 255 + max / 2) / max) as u8)
        .collect()
}

impl PixelConverter {
    /// A converter for `format`, which must have passed [`PixelFormat::validate`].
    pub fn new(format: PixelFormat) -> PixelConverter {
        let (fast, red, green, blue) = if !format.true_colour {
            (Fast::ColourMap, Vec::new(), Vec::new(), Vec::new())
        } else if format.bits_per_pixel == 32
            && !format.big_endian
            && (format.red_max, format.green_max, format.blue_max) == (255, 255, 255)
            && (format.red_shift, format.green_shift, format.blue_shift) == (16, 8, 0)
        {
            (Fast::Identity, Vec::new(), Vec::new(), Vec::new())
        } else if (format.red_max, format.green_max, format.blue_max) == (255, 255, 255) {
            (Fast::Shifts, Vec::new(), Vec::new(), Vec::new())
        } else {
            (
                Fast::Tables,
                scale_table(format.red_max),
                scale_table(format.green_max),
                scale_table(format.blue_max),
            )
        };
        let colour_map = if format.true_colour {
            Vec::new()
        } else {
            vec![0; 1 << format.bits_per_pixel.min(16)]
        };
        PixelConverter {
            format,
            fast,
            red,
            green,
            blue,
            colour_map,
        }
    }

    pub fn format(&self) -> &PixelFormat {
        &self.format
    }

    pub fn bytes_per_pixel(&self) -> usize {
        self.format.bytes_per_pixel()
    }

    /// Applies SetColourMapEntries: `colours` are 16-bit `(r, g, b)` triples from `first`.
    /// Entries past the map's size are ignored.
    pub fn set_colour_map_entries(&mut self, first: u16, colours: &[(u16, u16, u16)]) {
        for (i, &(r, g, b)) in colours.iter().enumerate() {
            let index = usize::from(first) + i;
            if let Some(slot) = self.colour_map.get_mut(index) {
                *slot = (u32::from(r >> 8) << 16) | (u32::from(g >> 8) << 8) | u32::from(b >> 8);
            }
        }
    }

    /// Maps a raw pixel value (already assembled from its bytes) to `0x00RRGGBB`.
    #[inline]
    pub fn map(&self, raw: u32) -> u32 {
        let f = &self.format;
        match self.fast {
            Fast::Identity => raw & 0x00ff_ffff,
            Fast::Shifts => {
                let r = (raw >> f.red_shift) & 0xff;
                let g = (raw >> f.green_shift) & 0xff;
                let b = (raw >> f.blue_shift) & 0xff;
                (r << 16) | (g << 8) | b
            }
            Fast::Tables => {
                // INVARIANT: each table has `max + 1` entries and the mask keeps the index ≤ max.
                let r = self.red[((raw >> f.red_shift) & u32::from(f.red_max)) as usize];
                let g = self.green[((raw >> f.green_shift) & u32::from(f.green_max)) as usize];
                let b = self.blue[((raw >> f.blue_shift) & u32::from(f.blue_max)) as usize];
                (u32::from(r) << 16) | (u32::from(g) << 8) | u32::from(b)
            }
            Fast::ColourMap => self.colour_map.get(raw as usize).copied().unwrap_or(0),
        }
    }

    /// Assembles a pixel value from `bytes` (at least `bytes_per_pixel` of them) in the
    /// format's byte order, without mapping it.
    #[inline]
    pub fn raw_pixel(&self, bytes: &[u8]) -> u32 {
        let be = self.format.big_endian;
        match self.format.bits_per_pixel {
            8 => u32::from(bytes[0]),
            16 => {
                let b = [bytes[0], bytes[1]];
                u32::from(if be {
                    u16::from_be_bytes(b)
                } else {
                    u16::from_le_bytes(b)
                })
            }
            24 => {
                if be {
                    (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2])
                } else {
                    u32::from(bytes[0]) | (u32::from(bytes[1]) << 8) | (u32::from(bytes[2]) << 16)
                }
            }
            _ => {
                let b = [bytes[0], bytes[1], bytes[2], bytes[3]];
                if be {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                }
            }
        }
    }

    /// Reads one pixel from the front of `bytes` (at least `bytes_per_pixel` long).
    #[inline]
    pub fn pixel(&self, bytes: &[u8]) -> u32 {
        self.map(self.raw_pixel(bytes))
    }

    /// Converts a run of wire pixels: `src` holds `dst.len()` pixels.
    pub fn convert_row(&self, src: &[u8], dst: &mut [u32]) {
        let bpp = self.bytes_per_pixel();
        debug_assert!(src.len() >= dst.len() * bpp);
        if self.fast == Fast::Identity {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = u32::from_le_bytes([s[0], s[1], s[2], 0]);
            }
            return;
        }
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(bpp)) {
            *d = self.pixel(s);
        }
    }

    /// Bytes per compressed pixel (ZRLE/TRLE CPIXEL).
    pub fn cpixel_size(&self) -> usize {
        match self.format.cpixel() {
            CPixel::Full => self.bytes_per_pixel(),
            CPixel::Low3 | CPixel::High3 => 3,
        }
    }

    /// Reads one CPIXEL from the front of `bytes` (at least `cpixel_size` long).
    #[inline]
    pub fn cpixel(&self, bytes: &[u8]) -> u32 {
        let be = self.format.big_endian;
        let three = |b: &[u8]| {
            if be {
                (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
            } else {
                u32::from(b[0]) | (u32::from(b[1]) << 8) | (u32::from(b[2]) << 16)
            }
        };
        match self.format.cpixel() {
            CPixel::Full => self.pixel(bytes),
            CPixel::Low3 => self.map(three(bytes)),
            CPixel::High3 => self.map(three(bytes) << 8),
        }
    }

    /// Bytes per Tight pixel (TPIXEL).
    pub fn tpixel_size(&self) -> usize {
        if self.format.tight_uses_rgb24() {
            3
        } else {
            self.bytes_per_pixel()
        }
    }

    /// Reads one TPIXEL from the front of `bytes` (at least `tpixel_size` long).
    #[inline]
    pub fn tpixel(&self, bytes: &[u8]) -> u32 {
        if self.format.tight_uses_rgb24() {
            (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2])
        } else {
            self.pixel(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb565_expands_to_full_range() {
        let c = PixelConverter::new(PixelFormat::RGB565);
        assert_eq!(c.pixel(&0xffffu16.to_le_bytes()), 0x00ff_ffff);
        assert_eq!(c.pixel(&0xf800u16.to_le_bytes()), 0x00ff_0000);
        assert_eq!(c.pixel(&0x07e0u16.to_le_bytes()), 0x0000_ff00);
        assert_eq!(c.pixel(&0x001fu16.to_le_bytes()), 0x0000_00ff);
        // Red 16/31 → round(16 * 255 / 31) = 132 = 0x84.
        assert_eq!(c.pixel(&(16u16 << 11).to_le_bytes()), 0x0084_0000);
    }

    #[test]
    fn big_endian_bgr_32() {
        let f = PixelFormat {
            big_endian: true,
            red_shift: 0,
            blue_shift: 16,
            ..PixelFormat::RGB888
        };
        let c = PixelConverter::new(f);
        // Pixel value 0x00332211 → blue 0x33, green 0x22, red 0x11; big-endian bytes.
        assert_eq!(c.pixel(&[0x00, 0x33, 0x22, 0x11]), 0x0011_2233);
    }

    #[test]
    fn bgr233_layout() {
        let c = PixelConverter::new(PixelFormat::BGR233);
        // blue=3 (bits 6-7), green=0, red=7 (bits 0-2).
        assert_eq!(c.pixel(&[0b1100_0111]), 0x00ff_00ff);
    }

    #[test]
    fn colour_map_lookup() {
        let mut c = PixelConverter::new(PixelFormat::COLOURMAP8);
        c.set_colour_map_entries(254, &[(0xffff, 0x8000, 0), (1, 2, 3), (9, 9, 9)]);
        assert_eq!(c.pixel(&[254]), 0x00ff_8000);
        assert_eq!(c.pixel(&[255]), 0);
    }

    #[test]
    fn cpixel_layouts() {
        assert_eq!(PixelFormat::RGB888.cpixel(), CPixel::Low3);
        let high = PixelFormat {
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            ..PixelFormat::RGB888
        };
        assert_eq!(high.cpixel(), CPixel::High3);
        let c = PixelConverter::new(high);
        assert_eq!(c.cpixel(&[0x33, 0x22, 0x11]), 0x0011_2233);
        let be = PixelFormat {
            big_endian: true,
            ..PixelFormat::RGB888
        };
        assert_eq!(
            PixelConverter::new(be).cpixel(&[0x11, 0x22, 0x33]),
            0x0011_2233
        );
        assert_eq!(PixelFormat::RGB565.cpixel(), CPixel::Full);
    }

    #[test]
    fn validate_rejects_overflowing_channel() {
        let f = PixelFormat {
            red_shift: 30,
            ..PixelFormat::RGB888
        };
        assert!(f.validate().is_err());
        assert!(PixelFormat {
            bits_per_pixel: 12,
            ..PixelFormat::RGB888
        }
        .validate()
        .is_err());
        assert!(PixelFormat::BGR233.validate().is_ok());
    }
}
