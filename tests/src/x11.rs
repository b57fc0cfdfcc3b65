//! X displays: choosing free display numbers and ports, painting the root window, and
//! reading back what the X server shows.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::image::Image;
use crate::process::run;
use crate::xwd::parse_xwd;

/// How long painting may take to show, and `xwd` may take to answer, on a busy machine.
const X_TIMEOUT: Duration = Duration::from_secs(20);

/// Display numbers tried: high enough to stay clear of the `:0`, `:97`, `:99` people use
/// by hand, and below what `/tmp/.X11-unix` tools expect.
const DISPLAYS: std::ops::Range<u32> = 200..1000;

/// A display number that looks free: no lock file, no socket. Each call in a process
/// gives a different number; separate processes start at different offsets (from their
/// process id). Two processes can still pick the same number at the same moment: the X
/// server's lock file settles that, and the loser is restarted on another number (see
/// the servers' `start`).
pub fn free_display() -> u32 {
    static NEXT: OnceLock<Mutex<u32>> = OnceLock::new();
    let span = DISPLAYS.end - DISPLAYS.start;
    let next = NEXT.get_or_init(|| Mutex::new(std::process::id().wrapping_mul(7919) % span));
    let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let n = DISPLAYS.start + *next % span;
        *next = (*next + 1) % span;
        let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        if !lock.exists() && !socket.exists() {
            return n;
        }
    }
}

/// A loopback TCP port nobody listens on right now, never the same twice in a process.
/// Another process may take it before the peer binds it; peers that fail to listen are
/// restarted on another port.
pub fn free_port() -> Result<u16> {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut given = GIVEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Xvnc -localhost also listens on [::1]; make sure that half is free too (when
        // the machine has IPv6 at all).
        let v6_free = match TcpListener::bind(("::1", port)) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::AddrNotAvailable,
        };
        if v6_free && given.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free loopback port found")
}

/// The ImageMagick program `tool` (`convert`, `display`, `compare`, …). The `convert`
/// first on `PATH` may not be ImageMagick, so Debian's binaries are used by full path.
pub fn imagemagick(tool: &str) -> Result<PathBuf> {
    for candidate in [
        format!("/usr/bin/{tool}-im6.q16"),
        format!("/usr/bin/{tool}-im7.q16"),
        format!("/usr/bin/{tool}"),
    ] {
        let path = PathBuf::from(candidate);
        if path.exists() {
            return Ok(path);
        }
    }
    bail!("ImageMagick's {tool} is not installed (run scripts/setup.sh)")
}

/// The X server's own account of its screen: `xwd -root`, parsed.
pub fn capture_root(display: u32) -> Result<Image> {
    let out = run(
        Command::new("xwd").args(["-root", "-silent", "-display", &format!(":{display}")]),
        X_TIMEOUT,
    )?
    .check("xwd")?;
    parse_xwd(&out.stdout).with_context(|| format!("reading the screen of :{display}"))
}

/// Shows `png` on the root window of `display` and waits until `xwd` reads back exactly
/// that picture, which it returns. The picture must be the size of the screen.
pub fn paint(display: u32, png: &Path) -> Result<Image> {
    let wanted = Image::load_png(png)?;
    // `display -window root` sets the root window's background and exits (with status 1
    // even when it worked): the screen itself is the judge.
    run(
        Command::new(imagemagick("display")?)
            .args(["-window", "root"])
            .arg(png)
            .env("DISPLAY", format!(":{display}")),
        X_TIMEOUT,
    )?;
    let deadline = Instant::now() + X_TIMEOUT;
    loop {
        let shown = capture_root(display)?;
        match shown.diff(&wanted) {
            None => return Ok(shown),
            Some(difference) if Instant::now() > deadline => {
                bail!("painting {png:?} on :{display} did not show: {difference}")
            }
            Some(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn displays_are_not_handed_out_twice() {
        let displays: HashSet<u32> = (0..50).map(|_| free_display()).collect();
        assert_eq!(displays.len(), 50);
        assert!(displays.iter().all(|d| DISPLAYS.contains(d)));
    }

    #[test]
    fn imagemagick_is_the_real_one() {
        let convert = imagemagick("convert").unwrap();
        let out = run(Command::new(convert).arg("-version"), X_TIMEOUT).unwrap();
        assert!(
            out.stdout_text().contains("ImageMagick"),
            "{}",
            out.stdout_text()
        );
    }
}
