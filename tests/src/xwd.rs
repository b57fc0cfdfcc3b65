//! Reading `xwd` dumps: the X server's own account of what is on its screen.
//!
//! Format (X11's `XWDFile.h`): a header of big-endian 32-bit fields, the window name,
//! `ncolors` colour entries of 12 bytes, then `height` lines of `bytes_per_line` bytes
//! of pixels in the server's byte order. Only what Xvnc and Xvfb write for their root
//! windows is accepted: ZPixmap, TrueColor, 16/24/32 bits per pixel, channels of at most
//! 8 bits (narrower channels are widened the way kvmux widens RFB pixels:
//! `(v * 255 + max / 2) / max`).

use anyhow::{bail, ensure, Result};

use crate::image::Image;

/// Size of the fixed part of the header: 25 big-endian 32-bit fields.
const FIXED_HEADER: usize = 25 * 4;
const XWD_FILE_VERSION: u32 = 7;
const Z_PIXMAP: u32 = 2;
const TRUE_COLOR: u32 = 4;
const COLOUR_ENTRY: usize =
    4 /* pixel */ + 2 /* red */ + 2 /* green */ + 2 /* blue */ + 1 /* flags */ + 1 /* pad */;

/// One colour channel of a TrueColor pixel, described by its mask.
struct Channel {
    shift: u32,
    max: u32,
}

impl Channel {
    fn from_mask(name: &str, mask: u32) -> Result<Channel> {
        ensure!(mask != 0, "xwd: {name} mask is 0");
        let shift = mask.trailing_zeros();
        let max = mask >> shift;
        ensure!(
            max.count_ones() == 32 - max.leading_zeros(),
            "xwd: {name} mask {mask:#x} is not contiguous"
        );
        ensure!(
            max <= 255,
            "xwd: {name} mask {mask:#x} is wider than 8 bits"
        );
        Ok(Channel { shift, max })
    }

    fn value(&self, pixel: u32) -> u32 {
        let v = (pixel >> self.shift) & self.max;
        if self.max == 255 {
            v
        } else {
            (v * 255 + self.max / 2) / self.max
        }
    }
}

/// Parses an `xwd` dump of a TrueColor ZPixmap.
pub fn parse_xwd(bytes: &[u8]) -> Result<Image> {
    ensure!(bytes.len() >= FIXED_HEADER, "xwd: header cut short");
    let field = |i: usize| {
        u32::from_be_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    let header_size = field(0) as usize;
    let (version, format, width, height) = (field(1), field(2), field(4), field(5));
    let (byte_order, bits_per_pixel, bytes_per_line) = (field(7), field(11), field(12));
    let (visual_class, ncolors) = (field(13), field(19) as usize);
    ensure!(version == XWD_FILE_VERSION, "xwd: file version {version}");
    ensure!(
        format == Z_PIXMAP,
        "xwd: pixmap format {format} is not ZPixmap"
    );
    ensure!(
        visual_class == TRUE_COLOR,
        "xwd: visual class {visual_class} is not TrueColor"
    );
    ensure!(
        header_size >= FIXED_HEADER,
        "xwd: header size {header_size}"
    );
    let red = Channel::from_mask("red", field(14))?;
    let green = Channel::from_mask("green", field(15))?;
    let blue = Channel::from_mask("blue", field(16))?;
    let bytes_per_pixel = match bits_per_pixel {
        16 | 24 | 32 => bits_per_pixel as usize / 8,
        _ => bail!("xwd: {bits_per_pixel} bits per pixel"),
    };
    let (width_px, height_px) = (width as usize, height as usize);
    let bytes_per_line = bytes_per_line as usize;
    ensure!(
        bytes_per_line >= width_px * bytes_per_pixel,
        "xwd: {bytes_per_line} bytes per line for {width} pixels"
    );
    let data_start = header_size + ncolors * COLOUR_ENTRY;
    let data_len = bytes_per_line * height_px;
    ensure!(
        bytes.len() >= data_start + data_len,
        "xwd: {} bytes, expected {}",
        bytes.len(),
        data_start + data_len
    );
    let data = &bytes[data_start..data_start + data_len];
    let little_endian = byte_order == 0;
    let mut pixels = Vec::with_capacity(width_px * height_px);
    for line in data.chunks_exact(bytes_per_line) {
        for p in line[..width_px * bytes_per_pixel].chunks_exact(bytes_per_pixel) {
            let mut word = [0u8; 4];
            let value = if little_endian {
                word[..bytes_per_pixel].copy_from_slice(p);
                u32::from_le_bytes(word)
            } else {
                word[4 - bytes_per_pixel..].copy_from_slice(p);
                u32::from_be_bytes(word)
            };
            pixels.push(red.value(value) << 16 | green.value(value) << 8 | blue.value(value));
        }
    }
    Ok(Image {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Builds a dump by hand, following XWDFile.h.
    fn dump(
        width: u32,
        bits_per_pixel: u32,
        bytes_per_line: u32,
        byte_order: u32,
        masks: [u32; 3],
        data: &[u8],
    ) -> Vec<u8> {
        let height = data.len() as u32 / bytes_per_line;
        let name = b"xwdump\0";
        let header_size = 100 + name.len() as u32;
        let ncolors = 2;
        let fields = [
            header_size,
            7,
            2,
            24,
            width,
            height,
            0,
            byte_order,
            32,
            byte_order,
            32,
            bits_per_pixel,
            bytes_per_line,
            4,
            masks[0],
            masks[1],
            masks[2],
            8,
            256,
            ncolors,
            width,
            height,
            0,
            0,
            0,
        ];
        let mut out: Vec<u8> = fields.iter().flat_map(|f| f.to_be_bytes()).collect();
        out.extend_from_slice(name);
        out.extend(std::iter::repeat_n(0xee, ncolors as usize * 12));
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn depth_24_little_endian_with_line_padding() {
        // 2x2 pixels, 32 bits each, lines padded to 12 bytes.
        let data = [
            0x33, 0x22, 0x11, 0x00, /* */ 0xff, 0x00, 0x00, 0x00, /* */ 9, 9, 9,
            9, //
            0x00, 0x00, 0xff, 0xaa, /* */ 0x01, 0x02, 0x03, 0x00, /* */ 9, 9, 9, 9,
        ];
        let bytes = dump(2, 32, 12, 0, [0xff0000, 0xff00, 0xff], &data);
        let image = parse_xwd(&bytes).unwrap();
        assert_eq!((image.width, image.height), (2, 2));
        assert_eq!(image.pixels, vec![0x112233, 0x0000ff, 0xff0000, 0x030201]);
    }

    #[test]
    fn big_endian_bgr() {
        let data = [0x00, 0x11, 0x22, 0x33];
        let bytes = dump(1, 32, 4, 1, [0xff, 0xff00, 0xff0000], &data);
        assert_eq!(parse_xwd(&bytes).unwrap().pixels, vec![0x332211]);
    }

    #[test]
    fn depth_16_widens_channels() {
        // 0xf800 = full red; 0x0400 = green 32/63 → (32 * 255 + 31) / 63 = 130.
        let data = [0x00, 0xf8, 0x00, 0x04];
        let bytes = dump(2, 16, 4, 0, [0xf800, 0x07e0, 0x001f], &data);
        assert_eq!(parse_xwd(&bytes).unwrap().pixels, vec![0xff0000, 0x008200]);
    }

    #[test]
    fn rejects_truncated_and_odd_dumps() {
        let data = [0u8; 8];
        let bytes = dump(2, 32, 8, 0, [0xff0000, 0xff00, 0xff], &data);
        assert!(parse_xwd(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse_xwd(&bytes[..50]).is_err());
        let bytes = dump(2, 32, 8, 0, [0xff0000, 0xff00, 0x1ff], &data);
        assert!(parse_xwd(&bytes).is_err());
        let bytes = dump(2, 32, 4, 0, [0xff0000, 0xff00, 0xff], &data);
        assert!(parse_xwd(&bytes).is_err());
    }
}
