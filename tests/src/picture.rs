//! The test picture every encoding test shows: photo-like areas (fractal plasma, smooth
//! gradients, noise) that only many-colour encodings handle well, text (antialiased and
//! not, small and large, DejaVu fonts), and flat UI-like areas (title bar, solid
//! rectangles, buttons, one-pixel lines and dither patterns) for solid and few-colour
//! encodings. Drawn by ImageMagick with a fixed seed, so the same on every run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::process::run;
use crate::x11::imagemagick;

const FONTS: &str = "/usr/share/fonts/truetype/dejavu";
const SEED: &str = "20240601";

/// Draws the test picture, `width` x `height` (at least 640x400; the layout is made for
/// 1280x800 and scales with the size), into the 8-bit RGB PNG `path`.
pub fn test_picture(width: u32, height: u32, path: &Path) -> Result<()> {
    draw(width, height, path, true)
}

/// The test picture without its photo-like areas (plasma, gradients, noise): text and
/// flat UI only. For encodings a server gives up for Raw on photo-like content (x11vnc
/// sends the whole screen as one rectangle and falls back to Raw when RRE would be
/// larger).
pub fn flat_test_picture(width: u32, height: u32, path: &Path) -> Result<()> {
    draw(width, height, path, false)
}

/// An ImageMagick `convert` command line under construction.
#[derive(Default)]
struct Drawing {
    args: Vec<String>,
}

impl Drawing {
    fn args(&mut self, items: &[&str]) -> &mut Drawing {
        self.args.extend(items.iter().map(|s| s.to_string()));
        self
    }

    /// A `width` x `height` picture made by `source` (generator and operators), laid at
    /// `x, y`.
    fn layer(&mut self, (width, height): (i64, i64), source: &[&str], (x, y): (i64, i64)) {
        self.args(&["(", "-size", &format!("{width}x{height}")])
            .args(source)
            .args(&[")", "-geometry", &format!("+{x}+{y}"), "-composite"]);
    }

    /// A filled rectangle, corners included, outlined by the current stroke.
    fn rect(&mut self, fill: &str, (x0, y0): (i64, i64), (x1, y1): (i64, i64)) {
        self.args(&["-fill", fill, "-draw"])
            .args(&[&format!("rectangle {x0},{y0} {x1},{y1}")]);
    }

    /// Text with its baseline starting at `x, y`. ImageMagick expands `%` escapes.
    fn text(&mut self, font: &str, points: &str, fill: &str, (x, y): (i64, i64), text: &str) {
        self.args(&["-font", font, "-pointsize", points, "-fill", fill])
            .args(&["-annotate", &format!("+{x}+{y}"), text]);
    }
}

fn draw(width: u32, height: u32, path: &Path, photos: bool) -> Result<()> {
    ensure!(
        width >= 640 && height >= 400,
        "test picture {width}x{height} is smaller than 640x400"
    );
    let font = |name: &str| {
        let path = format!("{FONTS}/{name}.ttf");
        ensure!(
            Path::new(&path).exists(),
            "font {path} is missing (run scripts/setup.sh)"
        );
        Ok(path)
    };
    let sans = &font("DejaVuSans")?;
    let bold = &font("DejaVuSans-Bold")?;
    let mono = &font("DejaVuSansMono")?;
    let serif = &font("DejaVuSerif")?;

    // Layout, in pixels at 1280x800: a 40-pixel title bar, a 24-pixel status bar, a left
    // column of pictures and a right column with a text panel over a panel of widgets.
    let (w, h) = (i64::from(width), i64::from(height));
    let margin = 20;
    let top = 56;
    let column = (w - 3 * margin) / 2;
    let left = margin;
    let right = 2 * margin + column;
    let photo_height = h * 380 / 800;
    let gradient_top = top + photo_height + 12;
    let gradient_height = h * 110 / 800;
    let tiles_top = gradient_top + gradient_height + 12;
    let tiles_height = h - 24 - 12 - tiles_top;
    let tile_width = (column - 2 * 10) / 3;
    let text_bottom = top + h * 505 / 800;
    let widgets_top = text_bottom + 16;
    let status_top = h - 24;

    let mut d = Drawing::default();
    d.args(&["-size", &format!("{w}x{h}"), "xc:#ececec", "-seed", SEED]);
    if photos {
        // Photo-like: fractal plasma, slightly softened like a camera picture.
        let plasma = ["plasma:fractal", "-blur", "0x0.7"];
        d.layer((column, photo_height), &plasma, (left, top));
        // Smooth gradients: many colours, little texture.
        let gradient = ["gradient:#0b3d91-#f7b733"];
        d.layer((column, gradient_height), &gradient, (left, gradient_top));
        let tile = (tile_width, tiles_height);
        d.layer(
            tile,
            &["radial-gradient:#ffffff-#7a1f5c"],
            (left, tiles_top),
        );
        // Colour noise: the worst case for every encoder.
        let noise = ["xc:#808080", "-attenuate", "0.6", "+noise", "Gaussian"];
        d.layer(tile, &noise, (left + tile_width + 10, tiles_top));
        let plasma = ["plasma:red-blue"];
        d.layer(tile, &plasma, (left + 2 * (tile_width + 10), tiles_top));
    }

    // Title and status bars.
    d.rect("#2b3a55", (0, 0), (w - 1, 39));
    d.rect("#d0d4da", (0, status_top), (w - 1, h - 1));
    let title = "kvmux test picture — Xvnc / x11vnc";
    d.text(bold, "20", "white", (14, 27), title);
    let status = format!("Ready.  {width} × {height}  24-bit");
    d.text(sans, "11", "#303030", (10, status_top + 16), &status);

    // Text panel: white with a one-pixel border.
    d.args(&["-stroke", "#8899aa", "-strokewidth", "1"]);
    d.rect("white", (right, top), (w - margin - 1, text_bottom));
    d.args(&["-stroke", "none"]);
    let x = right + 12;
    let lorem = [
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor",
        "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud",
        "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute",
        "irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla.",
    ];
    // (font, points, colour, line advance, text)
    let mut lines: Vec<(&str, &str, &str, i64, &str)> = vec![
        (
            sans,
            "9",
            "black",
            18,
            "The quick brown fox jumps over the lazy dog 0123456789 (9 pt)",
        ),
        (
            sans,
            "11",
            "black",
            18,
            "Pack my box with five dozen liquor jugs. !\"#$%%&'()*+,-./:;<=>?@[]^_`{|}~",
        ),
        (
            mono,
            "12",
            "black",
            20,
            "fn main() { println!(\"{:#x}\", 0x00ff_ffffu32); } // mono 12",
        ),
        (
            serif,
            "16",
            "#202020",
            26,
            "Serif 16: Sphinx of black quartz, judge my vow.",
        ),
        (bold, "36", "#b22222", 50, "Large Bold 36 pt"),
        (sans, "64", "#1a7f37", 80, "Ag 64 pt"),
    ];
    for (i, text) in lorem.into_iter().enumerate() {
        // The first line clears the descenders of the 64-point line.
        let advance = if i == 0 { 30 } else { 14 };
        lines.push((sans, "10", "#333333", advance, text));
    }
    let mut y = top;
    for (font, points, colour, advance, text) in lines {
        y += advance;
        if y > text_bottom - 6 {
            break;
        }
        d.text(font, points, colour, (x, y), text);
    }
    // Words without antialiasing: exactly two colours.
    y += 24;
    if y < text_bottom - 6 {
        d.args(&["+antialias"]);
        let crisp = "Two colours only: no antialiasing (13 pt)";
        d.text(sans, "13", "#003399", (x, y), crisp);
        d.args(&["-antialias"]);
    }
    // White text on a coloured band.
    y += 16;
    if y + 30 < text_bottom {
        d.rect("#0b5394", (right + 1, y), (w - margin - 2, y + 30));
        d.text(
            bold,
            "14",
            "white",
            (x, y + 21),
            "Selected row — white on blue",
        );
    }

    // Widgets: crisp edges, no antialiasing, few colours.
    d.args(&["+antialias"]);
    let buttons = [
        ("#e1e1e1", "#adadad", "Cancel", "black"),
        ("#0078d7", "#005a9e", "OK", "white"),
        ("#5cb85c", "#4cae4c", "Apply", "white"),
    ];
    for (i, (fill, border, _, _)) in buttons.iter().enumerate() {
        let bx = right + 110 * i as i64;
        d.args(&["-stroke", border]);
        d.rect(fill, (bx, widgets_top), (bx + 99, widgets_top + 29));
    }
    d.args(&["-stroke", "none", "-antialias"]);
    for (i, (_, _, label, colour)) in buttons.iter().enumerate() {
        let at = (right + 110 * i as i64 + 30, widgets_top + 20);
        d.text(sans, "12", colour, at, label);
    }
    d.args(&["+antialias"]);
    // Sixteen colour swatches.
    let swatches = [
        "#000000", "#800000", "#008000", "#808000", "#000080", "#800080", "#008080", "#c0c0c0",
        "#808080", "#ff0000", "#00ff00", "#ffff00", "#0000ff", "#ff00ff", "#00ffff", "#ffffff",
    ];
    let swatch_top = widgets_top + 40;
    for (i, colour) in swatches.iter().enumerate() {
        let sx = right + 24 * i as i64;
        d.rect(colour, (sx, swatch_top), (sx + 21, swatch_top + 21));
    }
    // A grid of one-pixel lines on white.
    let grid_left = right + 400;
    let grid_bottom = (widgets_top + 120).min(status_top - 8);
    d.rect(
        "white",
        (grid_left, widgets_top),
        (grid_left + 180, grid_bottom),
    );
    for gx in (grid_left..=grid_left + 180).step_by(9) {
        d.rect("#b0bcc8", (gx, widgets_top), (gx, grid_bottom));
    }
    for gy in (widgets_top..=grid_bottom).step_by(7) {
        d.rect("#b0bcc8", (grid_left, gy), (grid_left + 180, gy));
    }
    // One-pixel dither patterns and a fan of thin antialiased lines.
    let pattern_top = swatch_top + 32;
    let pattern_height = (grid_bottom - pattern_top).max(8);
    d.layer(
        (120, pattern_height),
        &["pattern:gray50"],
        (right, pattern_top),
    );
    let cross = ["pattern:hs_diagcross"];
    d.layer((120, pattern_height), &cross, (right + 130, pattern_top));
    d.args(&[
        "-antialias",
        "-fill",
        "none",
        "-stroke",
        "#c04000",
        "-strokewidth",
        "1",
    ]);
    for i in 0..8 {
        let (x0, x1) = (right + 260, right + 260 + i * 15);
        d.args(&[
            "-draw",
            &format!("line {x0},{grid_bottom} {x1},{pattern_top}"),
        ]);
    }
    d.args(&["-stroke", "none"]);

    d.args(&[
        "-strip",
        "-depth",
        "8",
        &format!("PNG24:{}", path.display()),
    ]);
    run(
        Command::new(imagemagick("convert")?).args(&d.args),
        Duration::from_secs(60),
    )?
    .check("drawing the test picture")
    .with_context(|| format!("writing {path:?}"))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::Image;
    use crate::process::TempDir;

    /// Whether the `size` x `size` block at `x, y` is a single colour.
    fn solid(image: &Image, x: u32, y: u32, size: u32) -> bool {
        let first = image.pixel(x, y);
        (y..y + size).all(|yy| (x..x + size).all(|xx| image.pixel(xx, yy) == first))
    }

    fn colours_in(image: &Image, x: u32, y: u32, w: u32, h: u32) -> usize {
        let mut colours: Vec<u32> = (y..y + h)
            .flat_map(|yy| (x..x + w).map(move |xx| (xx, yy)))
            .map(|(xx, yy)| image.pixel(xx, yy))
            .collect();
        colours.sort_unstable();
        colours.dedup();
        colours.len()
    }

    #[test]
    fn picture_is_deterministic_and_varied() {
        let dir = TempDir::new("picture").unwrap();
        test_picture(1280, 800, &dir.join("a.png")).unwrap();
        test_picture(1280, 800, &dir.join("b.png")).unwrap();
        let a = Image::load_png(&dir.join("a.png")).unwrap();
        let b = Image::load_png(&dir.join("b.png")).unwrap();
        assert_eq!((a.width, a.height), (1280, 800));
        assert_eq!(a.diff(&b), None, "two drawings differ");

        // Many colours overall, and in the photo area.
        assert!(a.colour_count() > 100_000, "{} colours", a.colour_count());
        assert!(colours_in(&a, 40, 80, 64, 64) > 1000);
        // Solid areas: title bar, background, status bar.
        assert!(solid(&a, 600, 2, 32));
        assert!(solid(&a, 620, 780, 16) || solid(&a, 1200, 778, 20));
        assert!(solid(&a, 0, 40, 16));
        // A few-colour area: the non-antialiased text line, the swatches, the dither.
        let text_colours = colours_in(&a, 652, 56, 600, 500);
        assert!(
            text_colours > 16,
            "{text_colours} colours in the text panel"
        );
    }

    #[test]
    fn flat_picture_has_few_colours() {
        let dir = TempDir::new("picture").unwrap();
        flat_test_picture(1280, 800, &dir.join("flat.png")).unwrap();
        let flat = Image::load_png(&dir.join("flat.png")).unwrap();
        assert!(
            flat.colour_count() < 2000,
            "{} colours",
            flat.colour_count()
        );
        assert!(solid(&flat, 40, 80, 64));
    }

    #[test]
    fn other_sizes_work() {
        let dir = TempDir::new("picture").unwrap();
        test_picture(1920, 1080, &dir.join("a.png")).unwrap();
        let a = Image::load_png(&dir.join("a.png")).unwrap();
        assert_eq!((a.width, a.height), (1920, 1080));
        assert!(test_picture(320, 200, &dir.join("b.png")).is_err());
    }
}
