//! RRE encoding (2): a background colour and solid subrectangles
//! ([rfbproto, RRE Encoding]). The counterpart of [`decode::rre`](crate::decode::rre).
//!
//! Layout: `4 /* number-of-subrectangles */ + bpp /* background-pixel-value */`, then per
//! subrectangle `bpp /* subrect-pixel-value */ + 2 /* x */ + 2 /* y */ + 2 /* width */
//! + 2 /* height */`, relative to the rectangle.
//!
//! The background is the most common colour; the other pixels are covered by greedy
//! rectangles (see [`cover`]). RRE suits rectangles of few colours in large areas (a
//! window frame, a flat button); anything busier grows past its Raw size, and the
//! caller should pick another encoding for it.
//!
//! [rfbproto, RRE Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#rre-encoding

use std::collections::HashMap;

use super::wire::Wire;
use super::{rows, EncodeParams, PixelWriter, RectEncoder};
use crate::framebuffer::{Framebuffer, Rect};

/// A subrectangle found by [`cover`], relative to the area searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subrect {
    pub(crate) colour: u32,
    pub(crate) x: usize,
    pub(crate) y: usize,
    pub(crate) width: usize,
    pub(crate) height: usize,
}

/// Covers every pixel of `values` (`width` wide, row-major) that is not `background`
/// with single-colour rectangles, passing each to `emit` in order, until `emit`
/// returns false.
///
/// Greedy, as TigerVNC's Hextile encoder: from each pixel not yet covered (row by row),
/// the larger of two rectangles of its colour: as wide as the run to its right and
/// then as tall as that width allows, or as tall as the run below it and then as wide
/// as that height allows. A rectangle may pass over pixels already covered by its own
/// colour (it paints them the same), never over others. `covered` is scratch space.
pub(crate) fn cover(
    values: &[u32],
    width: usize,
    background: u32,
    covered: &mut Vec<bool>,
    mut emit: impl FnMut(Subrect) -> bool,
) {
    if width == 0 {
        return;
    }
    let height = values.len() / width;
    covered.clear();
    covered.resize(values.len(), false);
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            if covered[i] || values[i] == background {
                continue;
            }
            let c = values[i];
            let same = |x: usize, y: usize| values[y * width + x] == c;
            // Across, then down.
            let mut across_w = 1;
            while x + across_w < width && same(x + across_w, y) {
                across_w += 1;
            }
            let mut across_h = 1;
            while y + across_h < height
                && values[(y + across_h) * width + x..][..across_w]
                    .iter()
                    .all(|&v| v == c)
            {
                across_h += 1;
            }
            // Down, then across.
            let mut down_h = across_h;
            while y + down_h < height && same(x, y + down_h) {
                down_h += 1;
            }
            let mut down_w = 1;
            while x + down_w < width && (y..y + down_h).all(|yy| same(x + down_w, yy)) {
                down_w += 1;
            }
            let (w, h) = if down_w * down_h > across_w * across_h {
                (down_w, down_h)
            } else {
                (across_w, across_h)
            };
            for row in covered[i..].chunks_mut(width).take(h) {
                row[..w].fill(true);
            }
            let r = Subrect {
                colour: c,
                x,
                y,
                width: w,
                height: h,
            };
            if !emit(r) {
                return;
            }
        }
    }
}

/// The most common of `values`, counted run by run.
pub(crate) fn most_common(values: &[u32], counts: &mut HashMap<u32, usize>) -> u32 {
    counts.clear();
    let mut i = 0;
    while i < values.len() {
        let c = values[i];
        let len = values[i..].iter().take_while(|&&v| v == c).count();
        *counts.entry(c).or_insert(0) += len;
        i += len;
    }
    // Ties go to the smaller value, so the choice does not depend on hash order.
    counts
        .iter()
        .max_by_key(|&(&c, &n)| (n, std::cmp::Reverse(c)))
        .map_or(0, |(&c, _)| c)
}

/// The RRE encoder; holds scratch space between rectangles.
#[derive(Debug, Default)]
pub struct RreEncoder {
    values: Vec<u32>,
    covered: Vec<bool>,
    counts: HashMap<u32, usize>,
}

impl RectEncoder for RreEncoder {
    fn encode(
        &mut self,
        fb: &Framebuffer,
        rect: Rect,
        pw: &PixelWriter,
        _: &EncodeParams,
        out: &mut Vec<u8>,
    ) {
        let wire = Wire::pixel(pw);
        // Pixel values, so colours the client's format cannot tell apart are one.
        let width = usize::from(rect.width);
        self.values.clear();
        self.values.resize(rect.area(), 0);
        if width > 0 {
            for (row, dst) in rows(fb, rect).zip(self.values.chunks_exact_mut(width)) {
                wire.values(pw, row, dst);
            }
        }
        let background = most_common(&self.values, &mut self.counts);
        let count_at = out.len();
        out.extend_from_slice(&[0; 4]);
        wire.put(background, out);
        let mut count = 0u32;
        cover(&self.values, width, background, &mut self.covered, |r| {
            wire.put(r.colour, out);
            // INVARIANT: subrectangles lie inside the rectangle, whose sides are u16.
            for v in [r.x, r.y, r.width, r.height] {
                out.extend_from_slice(&(v as u16).to_be_bytes());
            }
            count += 1;
            // At most one subrectangle per pixel; a count past u32 is not reachable
            // for a rectangle that fits in memory, but stop rather than wrap.
            count < u32::MAX
        });
        out[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;

    #[test]
    fn hand_computed_bytes() {
        // 4x3, background white, a red 2x2 block at (1, 0) and a blue pixel at (3, 2):
        //   W R R W
        //   W R R W
        //   W W W B
        const W: u32 = 0x00ff_ffff;
        const R: u32 = 0x00ff_0000;
        const B: u32 = 0x0000_00ff;
        let mut fb = Framebuffer::new(4, 3);
        fb.pixels_mut()
            .copy_from_slice(&[W, R, R, W, W, R, R, W, W, W, W, B]);
        let mut out = Vec::new();
        let pw = PixelWriter::new(PixelFormat::RGB565);
        RreEncoder::default().encode(&fb, fb.bounds(), &pw, &EncodeParams::default(), &mut out);
        #[rustfmt::skip]
        let expected = [
            0, 0, 0, 2, // two subrectangles
            0xff, 0xff, // background white
            0x00, 0xf8, 0, 1, 0, 0, 0, 2, 0, 2, // red at (1, 0), 2x2
            0x1f, 0x00, 0, 3, 0, 2, 0, 1, 0, 1, // blue at (3, 2), 1x1
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn cover_prefers_the_larger_rectangle() {
        // A column of 3 and a row of 2 meeting at the top-left corner:
        //   X X .
        //   X . .
        //   X . .
        // Across first gives 2x1; down first gives 1x3, which is larger.
        let x = 1;
        let values = [x, x, 0, x, 0, 0, x, 0, 0];
        let mut found = Vec::new();
        cover(&values, 3, 0, &mut Vec::new(), |r| {
            found.push((r.x, r.y, r.width, r.height));
            true
        });
        assert_eq!(found, [(0, 0, 1, 3), (1, 0, 1, 1)]);
    }

    #[test]
    fn most_common_breaks_ties_by_value() {
        let mut counts = HashMap::new();
        assert_eq!(most_common(&[5, 5, 3, 3, 9], &mut counts), 3);
        assert_eq!(most_common(&[5, 3, 5, 3, 5], &mut counts), 5);
        assert_eq!(most_common(&[], &mut counts), 0);
    }
}
