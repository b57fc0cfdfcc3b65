//! Pictures as the tests compare them: `0x00RRGGBB` pixels, row by row.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A picture with 8 bits per channel, `pixels[y * width + x] = 0x00RRGGBB`.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u32>,
}

impl fmt::Debug for Image {
    // Megapixels of hex help nobody: a failing assert_eq! prints sizes and a checksum.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checksum = self
            .pixels
            .iter()
            .fold(0u64, |sum, &p| sum.rotate_left(5) ^ u64::from(p));
        write!(
            f,
            "Image({}x{}, checksum {checksum:016x})",
            self.width, self.height
        )
    }
}

/// How two pictures differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// They are not even the same size.
    Size { left: (u32, u32), right: (u32, u32) },
    /// Same size; `count` pixels differ, the first (in row order) at `x, y`.
    Pixels {
        x: u32,
        y: u32,
        left: u32,
        right: u32,
        count: usize,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Difference::Size { left, right } => write!(
                f,
                "sizes differ: {}x{} vs {}x{}",
                left.0, left.1, right.0, right.1
            ),
            Difference::Pixels {
                x,
                y,
                left,
                right,
                count,
            } => write!(
                f,
                "{count} pixels differ, the first at ({x}, {y}): {left:06x} vs {right:06x}"
            ),
        }
    }
}

impl Image {
    /// A picture of one colour.
    pub fn filled(width: u32, height: u32, rgb: u32) -> Image {
        Image {
            width,
            height,
            pixels: vec![rgb; width as usize * height as usize],
        }
    }

    pub fn pixel(&self, x: u32, y: u32) -> u32 {
        self.pixels[y as usize * self.width as usize + x as usize]
    }

    /// Reads a PNG of any colour type and bit depth; rejects transparency, which no
    /// screen has.
    pub fn load_png(path: &Path) -> Result<Image> {
        let file = File::open(path).with_context(|| format!("cannot open {path:?}"))?;
        let mut decoder = png::Decoder::new(BufReader::new(file));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder
            .read_info()
            .with_context(|| format!("{path:?} is not a PNG"))?;
        let mut buffer = vec![0; reader.output_buffer_size()];
        let info = reader
            .next_frame(&mut buffer)
            .with_context(|| format!("cannot decode {path:?}"))?;
        let samples = match info.color_type {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Indexed => bail!("{path:?}: palette was not expanded"),
        };
        let (width, height) = (info.width, info.height);
        let mut pixels = Vec::with_capacity(width as usize * height as usize);
        for row in buffer[..info.buffer_size()]
            .chunks_exact(info.line_size)
            .take(height as usize)
        {
            for p in row[..width as usize * samples].chunks_exact(samples) {
                let (r, g, b, a) = match *p {
                    [v] => (v, v, v, 255),
                    [v, a] => (v, v, v, a),
                    [r, g, b] => (r, g, b, 255),
                    [r, g, b, a] => (r, g, b, a),
                    _ => unreachable!("chunks of 1 to 4 samples"),
                };
                if a != 255 {
                    bail!("{path:?} has transparent pixels");
                }
                pixels.push(u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b));
            }
        }
        Ok(Image {
            width,
            height,
            pixels,
        })
    }

    /// Writes an 8-bit RGB PNG.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let file = File::create(path).with_context(|| format!("cannot create {path:?}"))?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header()?;
        let mut data = Vec::with_capacity(self.pixels.len() * 3);
        for &p in &self.pixels {
            data.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, p as u8]);
        }
        writer.write_image_data(&data)?;
        writer.finish()?;
        Ok(())
    }

    /// `None` when both pictures are the same size and equal pixel for pixel (the unused
    /// top byte is ignored).
    pub fn diff(&self, other: &Image) -> Option<Difference> {
        if (self.width, self.height) != (other.width, other.height) {
            return Some(Difference::Size {
                left: (self.width, self.height),
                right: (other.width, other.height),
            });
        }
        let mut first = None;
        let mut count = 0;
        for (i, (&a, &b)) in self.pixels.iter().zip(&other.pixels).enumerate() {
            if (a ^ b) & 0x00ff_ffff != 0 {
                count += 1;
                first.get_or_insert((i, a, b));
            }
        }
        first.map(|(i, left, right)| Difference::Pixels {
            x: (i % self.width as usize) as u32,
            y: (i / self.width as usize) as u32,
            left: left & 0x00ff_ffff,
            right: right & 0x00ff_ffff,
            count,
        })
    }

    /// Where `part` appears in this picture exactly (the top-left corner of the first
    /// match in row order), if it does.
    pub fn find(&self, part: &Image) -> Option<(u32, u32)> {
        if part.width == 0
            || part.height == 0
            || part.width > self.width
            || part.height > self.height
        {
            return None;
        }
        let (w, pw, ph) = (
            self.width as usize,
            part.width as usize,
            part.height as usize,
        );
        let first_row = &part.pixels[..pw];
        let row_at = |x: usize, y: usize| &self.pixels[y * w + x..y * w + x + pw];
        for y in 0..=(self.height as usize - ph) {
            for x in 0..=(w - pw) {
                if self.pixels[y * w + x] != first_row[0] || row_at(x, y) != first_row {
                    continue;
                }
                if (1..ph).all(|r| row_at(x, y + r) == &part.pixels[r * pw..(r + 1) * pw]) {
                    return Some((x as u32, y as u32));
                }
            }
        }
        None
    }

    /// Peak signal-to-noise ratio in dB over the red, green and blue samples;
    /// infinite for equal pictures. Panics if the sizes differ.
    pub fn psnr(&self, other: &Image) -> f64 {
        assert_eq!(
            (self.width, self.height),
            (other.width, other.height),
            "psnr of pictures of different sizes"
        );
        let mut sum_of_squares: u64 = 0;
        for (&a, &b) in self.pixels.iter().zip(&other.pixels) {
            for shift in [16, 8, 0] {
                let d = i64::from((a >> shift) & 0xff) - i64::from((b >> shift) & 0xff);
                sum_of_squares += (d * d) as u64;
            }
        }
        if sum_of_squares == 0 {
            return f64::INFINITY;
        }
        let mse = sum_of_squares as f64 / (self.pixels.len() as f64 * 3.0);
        10.0 * (255.0 * 255.0 / mse).log10()
    }

    /// The same picture with `f` applied to every pixel.
    pub fn map(&self, f: impl Fn(u32) -> u32) -> Image {
        Image {
            width: self.width,
            height: self.height,
            pixels: self.pixels.iter().map(|&p| f(p)).collect(),
        }
    }

    /// How many different colours the picture has.
    pub fn colour_count(&self) -> usize {
        let mut colours: Vec<u32> = self.pixels.iter().map(|p| p & 0x00ff_ffff).collect();
        colours.sort_unstable();
        colours.dedup();
        colours.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::process::TempDir;

    #[test]
    fn find_locates_a_part_exactly() {
        let mut big = Image::filled(10, 8, 0);
        for (i, p) in big.pixels.iter_mut().enumerate() {
            *p = (i as u32 * 7919) & 0xffffff;
        }
        let part = Image {
            width: 3,
            height: 2,
            pixels: vec![
                big.pixel(4, 5),
                big.pixel(5, 5),
                big.pixel(6, 5),
                big.pixel(4, 6),
                big.pixel(5, 6),
                big.pixel(6, 6),
            ],
        };
        assert_eq!(big.find(&part), Some((4, 5)));
        let mut off = part.clone();
        off.pixels[5] ^= 1;
        assert_eq!(big.find(&off), None);
        assert_eq!(part.find(&big), None);
    }

    #[test]
    fn diff_finds_first_mismatch_and_counts() {
        let a = Image::filled(4, 3, 0x102030);
        assert_eq!(a.diff(&a.clone()), None);
        let mut b = a.clone();
        b.pixels[6] = 0x102031; // (2, 1)
        b.pixels[11] = 0; // (3, 2)
        assert_eq!(
            a.diff(&b),
            Some(Difference::Pixels {
                x: 2,
                y: 1,
                left: 0x102030,
                right: 0x102031,
                count: 2
            })
        );
        assert_eq!(
            a.diff(&Image::filled(3, 4, 0x102030)),
            Some(Difference::Size {
                left: (4, 3),
                right: (3, 4)
            })
        );
        // The top byte is padding.
        let c = a.map(|p| p | 0xff00_0000);
        assert_eq!(a.diff(&c), None);
    }

    #[test]
    fn psnr_by_hand() {
        let a = Image::filled(1, 1, 0x000000);
        assert_eq!(a.psnr(&a), f64::INFINITY);
        // One sample off by 10: MSE = 100 / 3, PSNR = 10 log10(65025 * 3 / 100) = 32.903 dB.
        let b = Image::filled(1, 1, 0x00000a);
        assert!((a.psnr(&b) - 32.903).abs() < 0.001, "{}", a.psnr(&b));
        // Every sample off by 255: 0 dB.
        let c = Image::filled(2, 2, 0xffffff);
        assert!(Image::filled(2, 2, 0).psnr(&c).abs() < 1e-9);
    }

    #[test]
    fn png_round_trip() {
        let dir = TempDir::new("png").unwrap();
        let path = dir.join("a.png");
        let mut a = Image::filled(5, 3, 0x123456);
        a.pixels[7] = 0xfedcba;
        a.save_png(&path).unwrap();
        assert_eq!(Image::load_png(&path).unwrap(), a);
    }

    #[test]
    fn colours_are_counted() {
        let mut a = Image::filled(3, 3, 1);
        a.pixels[0] = 2;
        a.pixels[1] = 0xff00_0002; // same colour as pixels[0]
        assert_eq!(a.colour_count(), 2);
    }
}
