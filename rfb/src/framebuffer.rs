//! The framebuffer decoders draw into, with damage tracking.

use crate::error::DecodeError;
use std::fmt;

/// A rectangle in framebuffer coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
}

impl Rect {
    pub const fn new(x: u16, y: u16, width: u16, height: u16) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    pub fn area(&self) -> usize {
        usize::from(self.width) * usize::from(self.height)
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Right edge, exclusive, without overflow.
    pub fn right(&self) -> u32 {
        u32::from(self.x) + u32::from(self.width)
    }

    /// Bottom edge, exclusive, without overflow.
    pub fn bottom(&self) -> u32 {
        u32::from(self.y) + u32::from(self.height)
    }

    /// The smallest rectangle holding both (an empty one does not count).
    pub fn union(&self, other: &Rect) -> Rect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let r = self.right().max(other.right());
        let b = self.bottom().max(other.bottom());
        // INVARIANT: both rectangles' edges fit in u32 and both lie within a u16 plane
        // after bounds checks, so the differences fit in u16.
        Rect::new(x, y, (r - u32::from(x)) as u16, (b - u32::from(y)) as u16)
    }

    pub fn intersects(&self, other: &Rect) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && u32::from(self.x) < other.right()
            && u32::from(other.x) < self.right()
            && u32::from(self.y) < other.bottom()
            && u32::from(other.y) < self.bottom()
    }
}

impl fmt::Display for Rect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}+{}+{}", self.width, self.height, self.x, self.y)
    }
}

/// Damage: the regions changed since it was last taken. Kept as a short list of
/// rectangles; past [`Damage::MAX_RECTS`] it collapses to their bounding box.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Damage {
    rects: Vec<Rect>,
}

impl Damage {
    pub const MAX_RECTS: usize = 64;

    /// Adds a changed area. One that an area already recorded covers adds nothing;
    /// areas the new one covers are dropped; overlapping areas whose bounding box is
    /// barely larger than they are merge, so that no pixel is sent twice for them.
    pub fn add(&mut self, rect: Rect) {
        if rect.is_empty() || self.rects.iter().any(|r| contains(r, &rect)) {
            return;
        }
        let mut rect = rect;
        loop {
            self.rects.retain(|r| !contains(&rect, r));
            let Some(i) = self.rects.iter().position(|r| {
                r.intersects(&rect) && rect.union(r).area() * 4 <= (r.area() + rect.area()) * 5
            }) else {
                break;
            };
            rect = rect.union(&self.rects.swap_remove(i));
        }
        if self.rects.len() >= Self::MAX_RECTS {
            let bounds = self.bounds().union(&rect);
            self.rects.clear();
            self.rects.push(bounds);
            return;
        }
        self.rects.push(rect);
    }

    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    pub fn rects(&self) -> &[Rect] {
        &self.rects
    }

    pub fn bounds(&self) -> Rect {
        self.rects
            .iter()
            .fold(Rect::default(), |acc, r| acc.union(r))
    }

    pub fn take(&mut self) -> Damage {
        std::mem::take(self)
    }
}

/// Whether `outer` covers all of `inner`.
fn contains(outer: &Rect, inner: &Rect) -> bool {
    outer.x <= inner.x
        && outer.y <= inner.y
        && outer.right() >= inner.right()
        && outer.bottom() >= inner.bottom()
}

/// Pixels as `0x00RRGGBB`, row-major, `width * height` of them.
#[derive(Clone)]
pub struct Framebuffer {
    width: u16,
    height: u16,
    pixels: Vec<u32>,
    damage: Damage,
}

impl fmt::Debug for Framebuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framebuffer")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("damage", &self.damage)
            .finish()
    }
}

impl Framebuffer {
    pub fn new(width: u16, height: u16) -> Framebuffer {
        Framebuffer {
            width,
            height,
            pixels: vec![0; usize::from(width) * usize::from(height)],
            damage: Damage::default(),
        }
    }

    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn height(&self) -> u16 {
        self.height
    }

    pub fn bounds(&self) -> Rect {
        Rect::new(0, 0, self.width, self.height)
    }

    /// Changes the size; the contents become black and all of it is damaged.
    pub fn resize(&mut self, width: u16, height: u16) {
        self.width = width;
        self.height = height;
        self.pixels.clear();
        self.pixels
            .resize(usize::from(width) * usize::from(height), 0);
        self.damage = Damage::default();
        self.damage.add(self.bounds());
    }

    pub fn pixels(&self) -> &[u32] {
        &self.pixels
    }

    /// Raw access to all pixels. Writers must add damage themselves.
    pub fn pixels_mut(&mut self) -> &mut [u32] {
        &mut self.pixels
    }

    pub fn pixel(&self, x: u16, y: u16) -> Option<u32> {
        if x < self.width && y < self.height {
            self.pixels
                .get(usize::from(y) * usize::from(self.width) + usize::from(x))
                .copied()
        } else {
            None
        }
    }

    pub fn damage(&self) -> &Damage {
        &self.damage
    }

    pub fn take_damage(&mut self) -> Damage {
        self.damage.take()
    }

    pub fn add_damage(&mut self, rect: Rect) {
        self.damage.add(rect);
    }

    /// Errors unless `rect` lies wholly inside the framebuffer.
    pub fn check(&self, rect: &Rect) -> Result<(), DecodeError> {
        if rect.right() > u32::from(self.width) || rect.bottom() > u32::from(self.height) {
            return Err(DecodeError::OutOfBounds {
                rect: *rect,
                fb_width: self.width,
                fb_height: self.height,
            });
        }
        Ok(())
    }

    /// The `width` pixels of row `y` starting at `x`. The caller has checked the
    /// rectangle holding them with [`Framebuffer::check`].
    #[inline]
    pub fn row_mut(&mut self, x: u16, y: u16, width: u16) -> &mut [u32] {
        let start = usize::from(y) * usize::from(self.width) + usize::from(x);
        &mut self.pixels[start..start + usize::from(width)]
    }

    /// Fills a checked rectangle with one colour and damages it.
    pub fn fill(&mut self, rect: Rect, colour: u32) -> Result<(), DecodeError> {
        self.check(&rect)?;
        for y in rect.y..rect.y + rect.height {
            self.row_mut(rect.x, y, rect.width).fill(colour);
        }
        self.damage.add(rect);
        Ok(())
    }

    /// Copies `src` (`rect.width * rect.height` pixels, row-major) into a checked rectangle.
    pub fn blit(&mut self, rect: Rect, src: &[u32]) -> Result<(), DecodeError> {
        self.check(&rect)?;
        let w = usize::from(rect.width);
        if src.len() < rect.area() {
            return Err(DecodeError::Truncated {
                context: "pixels",
                needed: rect.area() - src.len(),
            });
        }
        if w == 0 {
            return Ok(());
        }
        for (i, row) in src
            .chunks_exact(w)
            .take(usize::from(rect.height))
            .enumerate()
        {
            self.row_mut(rect.x, rect.y + i as u16, rect.width)
                .copy_from_slice(row);
        }
        self.damage.add(rect);
        Ok(())
    }

    /// CopyRect: copies the area at `(src_x, src_y)` to `dst`. Overlapping areas are
    /// handled as if the source were read in full before writing.
    pub fn copy_rect(&mut self, dst: Rect, src_x: u16, src_y: u16) -> Result<(), DecodeError> {
        self.check(&dst)?;
        let src = Rect::new(src_x, src_y, dst.width, dst.height);
        self.check(&src)?;
        let stride = usize::from(self.width);
        let w = usize::from(dst.width);
        let rows: Box<dyn Iterator<Item = u16>> = if dst.y > src_y {
            Box::new((0..dst.height).rev())
        } else {
            Box::new(0..dst.height)
        };
        for row in rows {
            let s = usize::from(src_y + row) * stride + usize::from(src_x);
            let d = usize::from(dst.y + row) * stride + usize::from(dst.x);
            self.pixels.copy_within(s..s + w, d);
        }
        self.damage.add(dst);
        Ok(())
    }

    /// The pixels of `rect` as `0xRRGGBB` values, row-major.
    pub fn read_rect(&self, rect: Rect) -> Result<Vec<u32>, DecodeError> {
        self.check(&rect)?;
        let mut out = Vec::with_capacity(rect.area());
        let stride = usize::from(self.width);
        for y in rect.y..rect.y + rect.height {
            let s = usize::from(y) * stride + usize::from(rect.x);
            out.extend_from_slice(&self.pixels[s..s + usize::from(rect.width)]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rect_overlapping_down_and_right() {
        let mut fb = Framebuffer::new(4, 4);
        for (i, p) in fb.pixels_mut().iter_mut().enumerate() {
            *p = i as u32;
        }
        fb.copy_rect(Rect::new(1, 1, 3, 3), 0, 0)
            .expect("in bounds");
        // Row 1 now holds the old row 0's first three pixels from x=1.
        assert_eq!(&fb.pixels()[4..8], &[4, 0, 1, 2]);
        assert_eq!(&fb.pixels()[8..12], &[8, 4, 5, 6]);
        assert_eq!(&fb.pixels()[12..16], &[12, 8, 9, 10]);
    }

    #[test]
    fn copy_rect_overlapping_up() {
        let mut fb = Framebuffer::new(2, 3);
        fb.pixels_mut().copy_from_slice(&[0, 1, 2, 3, 4, 5]);
        fb.copy_rect(Rect::new(0, 0, 2, 2), 0, 1)
            .expect("in bounds");
        assert_eq!(fb.pixels(), &[2, 3, 4, 5, 4, 5]);
    }

    #[test]
    fn out_of_bounds_is_an_error() {
        let mut fb = Framebuffer::new(10, 10);
        assert!(fb.fill(Rect::new(5, 5, 6, 1), 1).is_err());
        assert!(fb.fill(Rect::new(u16::MAX, 0, u16::MAX, 1), 1).is_err());
        assert!(fb.copy_rect(Rect::new(0, 0, 2, 2), 9, 9).is_err());
    }

    #[test]
    fn damage_collapses() {
        let mut d = Damage::default();
        for i in 0..100u16 {
            d.add(Rect::new(i, i, 1, 1));
        }
        assert!(d.rects().len() <= Damage::MAX_RECTS);
        assert_eq!(d.bounds(), Rect::new(0, 0, 100, 100));
    }

    #[test]
    fn damage_keeps_no_area_twice() {
        let mut d = Damage::default();
        let screen = Rect::new(0, 0, 100, 100);
        d.add(screen);
        // The same area, or one inside it, adds nothing, however often.
        for _ in 0..10 {
            d.add(screen);
            d.add(Rect::new(10, 10, 5, 5));
        }
        assert_eq!(d.rects(), &[screen]);
        // A larger area replaces those it covers.
        let mut d = Damage::default();
        d.add(Rect::new(0, 0, 10, 10));
        d.add(Rect::new(50, 50, 10, 10));
        d.add(Rect::new(0, 0, 60, 60));
        assert_eq!(d.rects(), &[Rect::new(0, 0, 60, 60)]);
        // Two boxes overlapping by half merge (union 15x10 = 150 <= 1.25 * 200);
        // far-apart ones stay apart.
        let mut d = Damage::default();
        d.add(Rect::new(0, 0, 10, 10));
        d.add(Rect::new(5, 0, 10, 10));
        d.add(Rect::new(80, 80, 10, 10));
        assert_eq!(
            d.rects(),
            &[Rect::new(0, 0, 15, 10), Rect::new(80, 80, 10, 10)]
        );
        // Barely overlapping boxes whose bounding box would be mostly new stay apart.
        let mut d = Damage::default();
        d.add(Rect::new(0, 0, 10, 10));
        d.add(Rect::new(9, 9, 10, 10));
        assert_eq!(d.rects().len(), 2);
    }
}
