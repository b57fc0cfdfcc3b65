//! Hextile encoding (5): 16x16 tiles, each raw or a background with subrectangles
//! ([rfbproto, Hextile Encoding]). The counterpart of
//! [`decode::hextile`](crate::decode::hextile), which describes the layout.
//!
//! Every tile is sent the smallest way it can be:
//!
//! - solid: the background alone, `1` byte when it is the previous tile's background;
//! - two colours: background, foreground (each left out when it carries over from the
//!   previous tile) and subrectangles of 2 bytes;
//! - more colours: background and coloured subrectangles of `bpp + 2` bytes;
//! - raw: `width * height * bpp` bytes, when that is smaller or a tile would need more
//!   than 255 subrectangles.
//!
//! The background is the tile's most common colour; subrectangles are found greedily
//! ([`super::rre::cover`]). Colours carry over as the spec allows: the background
//! not after a raw tile, the foreground not after a raw or coloured-subrectangle
//! tile, and neither from one rectangle to the next (the first non-raw tile of a
//! rectangle always specifies its background).
//!
//! [rfbproto, Hextile Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#hextile-encoding

use super::rre::cover;
use super::wire::Wire;
use super::{EncodeParams, PixelWriter, RectEncoder};
use crate::framebuffer::{Framebuffer, Rect};

const RAW: u8 = 1;
const BACKGROUND_SPECIFIED: u8 = 2;
const FOREGROUND_SPECIFIED: u8 = 4;
const ANY_SUBRECTS: u8 = 8;
const SUBRECTS_COLOURED: u8 = 16;

const TILE: usize = 16;

/// The colours of a tile: its most common one, and whether it has one, two or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colours {
    One(u32),
    /// Background (the more common, the first seen on a tie) and foreground.
    Two(u32, u32),
    /// The most common colour.
    Many(u32),
}

/// Counts colours with a small open-addressing table (at most 256 pixels per tile).
struct Counter {
    keys: [u32; 512],
    counts: [u16; 512],
    used: Vec<usize>,
}

impl Counter {
    fn new() -> Counter {
        Counter {
            keys: [0; 512],
            counts: [0; 512],
            used: Vec::with_capacity(256),
        }
    }

    /// The most common of `values` (at most 256 of them); ties go to the first seen.
    fn most_common(&mut self, values: &[u32]) -> u32 {
        for &slot in &self.used {
            self.counts[slot] = 0;
        }
        self.used.clear();
        let mut best = (0u16, values.first().copied().unwrap_or(0));
        for &v in values {
            let mut s = (v.wrapping_mul(0x9e37_79b1) >> 23) as usize;
            // INVARIANT: at most 256 of 512 slots are used, so the probe ends.
            while self.counts[s] != 0 && self.keys[s] != v {
                s = (s + 1) & 511;
            }
            if self.counts[s] == 0 {
                self.keys[s] = v;
                self.used.push(s);
            }
            self.counts[s] += 1;
            if self.counts[s] > best.0 {
                best = (self.counts[s], v);
            }
        }
        best.1
    }
}

fn colours(values: &[u32], counter: &mut Counter) -> Colours {
    let first = values[0];
    let Some(&second) = values.iter().find(|&&v| v != first) else {
        return Colours::One(first);
    };
    let mut firsts = 0usize;
    for &v in values {
        if v == first {
            firsts += 1;
        } else if v != second {
            return Colours::Many(counter.most_common(values));
        }
    }
    if firsts * 2 >= values.len() {
        Colours::Two(first, second)
    } else {
        Colours::Two(second, first)
    }
}

/// The Hextile encoder; holds scratch space between rectangles.
pub struct HextileEncoder {
    values: Vec<u32>,
    covered: Vec<bool>,
    counter: Counter,
    /// The subrectangles of the tile being encoded, as written (2 bytes each, after
    /// their colour when coloured).
    subrects: Vec<u8>,
}

impl Default for HextileEncoder {
    fn default() -> HextileEncoder {
        HextileEncoder {
            values: vec![0; TILE * TILE],
            covered: Vec::with_capacity(TILE * TILE),
            counter: Counter::new(),
            subrects: Vec::with_capacity(TILE * TILE * 6),
        }
    }
}

impl std::fmt::Debug for HextileEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HextileEncoder").finish_non_exhaustive()
    }
}

/// Colours carried from tile to tile within a rectangle (pixel values).
#[derive(Debug, Clone, Copy, Default)]
struct Carried {
    background: Option<u32>,
    foreground: Option<u32>,
}

impl HextileEncoder {
    /// Encodes the tile in `self.values`, `width` wide.
    fn tile(&mut self, width: usize, wire: Wire, carried: &mut Carried, out: &mut Vec<u8>) {
        let values = &self.values;
        let n = values.len();
        let bpp = wire.size();
        let raw_size = 1 /* mask */ + n * bpp;
        let colours = colours(values, &mut self.counter);
        let background = match colours {
            Colours::One(c) | Colours::Two(c, _) | Colours::Many(c) => c,
        };
        let new_background = carried.background != Some(background);
        let mut mask = if new_background {
            BACKGROUND_SPECIFIED
        } else {
            0
        };
        let mut size = 1 /* mask */ + if new_background { bpp } else { 0 };
        if let Colours::One(_) = colours {
            out.push(mask);
            if new_background {
                wire.put(background, out);
            }
            carried.background = Some(background);
            return;
        }
        let (foreground, coloured) = match colours {
            Colours::Two(_, fg) => (Some(fg), false),
            _ => (None, true),
        };
        let new_foreground = foreground.is_some() && carried.foreground != foreground;
        if new_foreground {
            mask |= FOREGROUND_SPECIFIED;
            size += bpp;
        }
        size += 1 /* number-of-subrectangles */;
        let per_subrect = 2 + if coloured { bpp } else { 0 };
        // Subrectangles while they fit in 255 and keep the tile smaller than raw.
        self.subrects.clear();
        let mut count = 0usize;
        let mut fits = true;
        let subrects = &mut self.subrects;
        cover(values, width, background, &mut self.covered, |r| {
            count += 1;
            if count > 255 || size + count * per_subrect > raw_size {
                fits = false;
                return false;
            }
            if coloured {
                wire.put(r.colour, subrects);
            }
            // INVARIANT: x, y < 16 and width, height ≤ 16.
            subrects.push(((r.x << 4) | r.y) as u8);
            subrects.push((((r.width - 1) << 4) | (r.height - 1)) as u8);
            true
        });
        if !fits {
            out.push(RAW);
            wire.put_all(values, out);
            *carried = Carried::default();
            return;
        }
        mask |= ANY_SUBRECTS | if coloured { SUBRECTS_COLOURED } else { 0 };
        out.push(mask);
        if new_background {
            wire.put(background, out);
        }
        if let (true, Some(fg)) = (new_foreground, foreground) {
            wire.put(fg, out);
        }
        // INVARIANT: count ≤ 255, checked above.
        out.push(count as u8);
        out.extend_from_slice(&self.subrects);
        carried.background = Some(background);
        carried.foreground = foreground;
    }
}

impl RectEncoder for HextileEncoder {
    fn encode(
        &mut self,
        fb: &Framebuffer,
        rect: Rect,
        pw: &PixelWriter,
        _: &EncodeParams,
        out: &mut Vec<u8>,
    ) {
        let wire = Wire::pixel(pw);
        let stride = usize::from(fb.width());
        let pixels = fb.pixels();
        let (x0, y0) = (usize::from(rect.x), usize::from(rect.y));
        let (width, height) = (usize::from(rect.width), usize::from(rect.height));
        let mut carried = Carried::default();
        for ty in (0..height).step_by(TILE) {
            let th = TILE.min(height - ty);
            for tx in (0..width).step_by(TILE) {
                let tw = TILE.min(width - tx);
                self.values.resize(tw * th, 0);
                for (row, dst) in self.values.chunks_exact_mut(tw).enumerate() {
                    let start = (y0 + ty + row) * stride + x0 + tx;
                    wire.values(pw, &pixels[start..start + tw], dst);
                }
                self.tile(tw, wire, &mut carried, out);
            }
        }
    }
}
