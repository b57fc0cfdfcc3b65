//! The pictures `kvmux testsrc` shows.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use rfb::{Framebuffer, Rect};

use super::font::{draw_text, text_width, CELL_H};

/// What a test source shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Colour bars, with the name.
    Bars,
    /// A smooth gradient, with the name.
    Gradient,
    /// A clock redrawn every second and a box that moves every frame.
    Clock,
    /// A PNG file, shown at its own size.
    Image(PathBuf),
    /// Pseudo-random pixels, all of them new every frame: the worst case for a viewer
    /// (benchmarks).
    Noise,
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Pattern, String> {
        match s {
            "bars" => Ok(Pattern::Bars),
            "gradient" => Ok(Pattern::Gradient),
            "clock" => Ok(Pattern::Clock),
            "noise" => Ok(Pattern::Noise),
            _ => match s.strip_prefix("image:") {
                Some(path) if !path.is_empty() => Ok(Pattern::Image(PathBuf::from(path))),
                _ => Err(format!(
                    "unknown pattern '{s}' (one of bars, gradient, clock, noise, image:FILE)"
                )),
            },
        }
    }
}

/// Loads a PNG as canonical pixels.
pub fn load_png(path: &Path) -> Result<(u16, u16, Vec<u32>)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{} is not a PNG", path.display()))?;
    let (w, h) = (reader.info().width, reader.info().height);
    if w == 0 || h == 0 || w > 8192 || h > 8192 {
        bail!(
            "{}: {w}x{h} is not a usable screen size (1 to 8192)",
            path.display()
        );
    }
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buf)
        .with_context(|| format!("cannot decode {}", path.display()))?;
    let channels = frame.color_type.samples();
    let mut pixels = Vec::with_capacity((w * h) as usize);
    for row in buf[..frame.buffer_size()].chunks_exact(frame.line_size) {
        for px in row.chunks_exact(channels).take(w as usize) {
            let (r, g, b) = match channels {
                1 | 2 => (px[0], px[0], px[0]),
                _ => (px[0], px[1], px[2]),
            };
            pixels.push((u32::from(r) << 16) | (u32::from(g) << 8) | u32::from(b));
        }
    }
    // INVARIANT: both are ≤ 8192.
    Ok((w as u16, h as u16, pixels))
}

/// Draws the static part of `pattern` over the whole framebuffer.
pub fn draw(
    fb: &mut Framebuffer,
    pattern: &Pattern,
    name: &str,
    image: Option<&(u16, u16, Vec<u32>)>,
) {
    let (w, h) = (u32::from(fb.width()), u32::from(fb.height()));
    let px = fb.pixels_mut();
    match pattern {
        Pattern::Bars => {
            const BARS: [u32; 8] = [
                0xc0c0c0, 0xc0c000, 0x00c0c0, 0x00c000, 0xc000c0, 0xc00000, 0x0000c0, 0x101010,
            ];
            for y in 0..h {
                for x in 0..w {
                    px[(y * w + x) as usize] = BARS[(x * 8 / w.max(1)) as usize];
                }
            }
        }
        Pattern::Gradient => {
            for y in 0..h {
                for x in 0..w {
                    let r = x * 255 / w.max(1);
                    let g = y * 255 / h.max(1);
                    let b = 255 - (x + y) * 255 / (w + h).max(1);
                    px[(y * w + x) as usize] = (r << 16) | (g << 8) | b;
                }
            }
        }
        Pattern::Clock => px.fill(0x202830),
        Pattern::Noise => {
            noise(fb, 0);
            return;
        }
        Pattern::Image(_) => {
            if let Some((iw, ih, pixels)) = image {
                let (iw, ih) = (u32::from(*iw), u32::from(*ih));
                for y in 0..h {
                    for x in 0..w {
                        px[(y * w + x) as usize] = if x < iw && y < ih {
                            pixels[(y * iw + x) as usize]
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
    if !matches!(pattern, Pattern::Image(_)) {
        let scale = (w / 320).clamp(1, 8);
        let label_w = text_width(name, scale);
        let x = w.saturating_sub(label_w) / 2;
        let y = h / 8;
        draw_text(px, w, x, y, name, scale, 0xffffff);
    }
    fb.add_damage(fb.bounds());
}

/// Steps a moving pattern one frame at a time: the clock's box every frame and its
/// digits when the wall-clock second changes, or new noise every frame.
#[derive(Debug)]
pub struct Animator {
    frame: u64,
    last_second: u64,
}

impl Animator {
    pub fn new() -> Animator {
        Animator {
            frame: 0,
            last_second: u64::MAX,
        }
    }

    /// Whether `pattern` changes from frame to frame.
    pub fn moves(pattern: &Pattern) -> bool {
        matches!(pattern, Pattern::Clock | Pattern::Noise)
    }

    /// Draws the next frame of `pattern` into `fb`; returns the damaged areas.
    pub fn step(&mut self, pattern: &Pattern, fb: &mut Framebuffer) -> Vec<Rect> {
        self.frame += 1;
        if *pattern == Pattern::Noise {
            return noise(fb, self.frame);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let redraw = now != self.last_second;
        self.last_second = now;
        animate(fb, self.frame, now, redraw)
    }
}

/// Fills the whole framebuffer with pseudo-random pixels for frame `frame`
/// (xorshift64, a new sequence every frame); returns the damage.
pub fn noise(fb: &mut Framebuffer, frame: u64) -> Vec<Rect> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ frame.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for pair in fb.pixels_mut().chunks_mut(2) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        for (p, word) in pair.iter_mut().zip([state as u32, (state >> 32) as u32]) {
            *p = word & 0x00ff_ffff;
        }
    }
    let bounds = fb.bounds();
    fb.add_damage(bounds);
    vec![bounds]
}

/// The moving box and the clock of [`Pattern::Clock`] at frame `frame` and wall
/// time `seconds`; returns the damaged areas.
pub fn animate(fb: &mut Framebuffer, frame: u64, seconds: u64, redraw_clock: bool) -> Vec<Rect> {
    let (w, h) = (u32::from(fb.width()), u32::from(fb.height()));
    let mut damage = Vec::new();
    const BOX: u32 = 32;
    if w > BOX && h > BOX * 3 {
        let travel = w - BOX;
        let pos = |f: u64| {
            let t = (f % u64::from(travel * 2)) as u32;
            if t < travel {
                t
            } else {
                travel * 2 - t
            }
        };
        let y = h / 2;
        let (old, new) = (pos(frame.wrapping_sub(1)), pos(frame));
        let px = fb.pixels_mut();
        for (x0, colour) in [(old, 0x202830), (new, 0xffb000)] {
            for yy in y..y + BOX {
                let row = (yy * w) as usize;
                px[row + x0 as usize..row + (x0 + BOX) as usize].fill(colour);
            }
        }
        let left = old.min(new);
        let right = old.max(new) + BOX;
        damage.push(Rect::new(
            left as u16,
            y as u16,
            (right - left) as u16,
            BOX as u16,
        ));
    }
    if redraw_clock {
        let text = format!(
            "{:02}:{:02}:{:02}",
            (seconds / 3600) % 24,
            (seconds / 60) % 60,
            seconds % 60
        );
        let scale = (w / 320).clamp(1, 8);
        let tw = text_width(&text, scale);
        let th = CELL_H * scale;
        let x = w.saturating_sub(tw) / 2;
        let y = (h * 3 / 4).min(h.saturating_sub(th));
        let px = fb.pixels_mut();
        for yy in y..(y + th).min(h) {
            let row = (yy * w) as usize;
            px[row + x as usize..row + (x + tw).min(w) as usize].fill(0x202830);
        }
        draw_text(px, w, x, y, &text, scale, 0x80ff80);
        damage.push(Rect::new(
            x as u16,
            y as u16,
            tw.min(w - x) as u16,
            th.min(h - y) as u16,
        ));
    }
    for r in &damage {
        fb.add_damage(*r);
    }
    damage
}
