//! The frame a source shows while it is down: its name, "NO SIGNAL" and why, like a
//! monitor whose input has gone.

use rfb::messages::SourceState;
use rfb::Framebuffer;

use crate::testsrc::font::{draw_text, text_width, CELL_H};

const BACKGROUND: u32 = 0x0010_1820;
const TITLE: u32 = 0x00e0_e0e0;
const ALERT: u32 = 0x00e0_a030;
const DETAIL: u32 = 0x00a0_a8b0;

/// Draws the no-signal frame for `name` in `state` with `status` over all of `fb`.
pub fn draw(fb: &mut Framebuffer, name: &str, state: SourceState, status: &str) {
    let (w, h) = (u32::from(fb.width()), u32::from(fb.height()));
    let px = fb.pixels_mut();
    px.fill(BACKGROUND);
    let alert = match state {
        SourceState::AuthenticationFailed => "AUTHENTICATION FAILED",
        SourceState::Stopped => "STOPPED",
        SourceState::Connected => "",
        SourceState::Connecting | SourceState::Retrying => "NO SIGNAL",
    };
    // Scales that fit the longest line in the width.
    let fit = |text: &str, max: u32| -> u32 {
        let unit = text_width(text, 1).max(1);
        (w * 9 / 10 / unit).clamp(1, max)
    };
    let big = fit(alert, 8).min(fit(name, 8));
    let small = fit(status, 3);
    let lines = [
        (name, big, TITLE),
        (alert, big, ALERT),
        (status, small, DETAIL),
    ];
    let total: u32 = lines.iter().map(|(_, s, _)| CELL_H * s * 2).sum();
    let mut y = h.saturating_sub(total) / 2;
    for (text, scale, colour) in lines {
        let x = w.saturating_sub(text_width(text, scale)) / 2;
        draw_text(px, w, x, y, text, scale, colour);
        y += CELL_H * scale * 2;
    }
    fb.add_damage(fb.bounds());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_name_and_state_in_the_middle() {
        let mut fb = Framebuffer::new(640, 480);
        draw(
            &mut fb,
            "db1",
            SourceState::Retrying,
            "retrying in 4 s: refused",
        );
        let px = fb.pixels();
        let count = |c: u32| px.iter().filter(|&&p| p == c).count();
        assert!(count(TITLE) > 100, "the name is drawn");
        assert!(count(ALERT) > 100, "NO SIGNAL is drawn");
        assert!(count(DETAIL) > 50, "the status is drawn");
        // Nothing but background in the corners.
        for (x, y) in [(0, 0), (639, 0), (0, 479), (639, 479)] {
            assert_eq!(px[y * 640 + x], BACKGROUND);
        }
    }

    #[test]
    fn tiny_frames_do_not_panic() {
        let mut fb = Framebuffer::new(1, 1);
        draw(
            &mut fb,
            "a very long source name indeed",
            SourceState::Stopped,
            "x",
        );
    }
}
