//! Test harness for running kvmux against real VNC peers.
//!
//! - [`Xvnc`] (TigerVNC) and [`X11vnc`] (x11vnc on Xvfb) start on free displays and
//!   loopback ports and stop when dropped, or when the test process dies
//!   ([`process`]).
//! - [`test_picture`] draws the picture every encoding test shows; [`VncServer::paint`]
//!   shows it and [`capture_root`] reads back the X server's own account of its screen,
//!   the truth kvmux's snapshots are compared with ([`Image::diff`], [`Image::psnr`]).
//! - [`probe`] is a tiny independent RFB client (None security, Raw only) used to check
//!   the servers themselves: that they serve their X screen, which encodings they really
//!   use, how they reduce colours.
//! - [`kvmux_bin`] finds the binary under test; [`run`] runs commands with a time limit.
//!
//! Needs the Debian packages and files `scripts/setup.sh` installs.

pub mod image;
pub mod picture;
pub mod probe;
pub mod process;
pub mod servers;
pub mod watcher;
pub mod x11;
pub mod xwd;

use std::path::PathBuf;
use std::process::Command;

pub use image::{Difference, Image};
pub use picture::{flat_test_picture, test_picture};
pub use process::{run, run_with_input, CommandOutput, PeerProcess, TempDir};
pub use servers::{
    self_signed_certificate, vnc_password_file, Security, TestCertificate, VncServer, X11vnc, Xvnc,
    XvncOptions, PLAIN_PAM_SERVICE, PLAIN_PASSWORD, PLAIN_USER,
};
pub use x11::{capture_root, free_display, free_port, imagemagick, paint};

/// The `kvmux` binary built with the same profile as the running test:
/// `target/<profile>/deps/<test>` → `target/<profile>/kvmux`, unless `KVMUX_BIN` names
/// one. `scripts/test.sh` builds it first (`cargo test` alone does not build binaries of
/// other packages).
pub fn kvmux_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("KVMUX_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("kvmux")
}

/// The `kvmux-viewer` binary, found like [`kvmux_bin`] (or named by `KVMUX_VIEWER_BIN`).
pub fn viewer_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("KVMUX_VIEWER_BIN") {
        return PathBuf::from(path);
    }
    let bin = kvmux_bin().with_file_name("kvmux-viewer");
    assert!(
        bin.exists(),
        "{bin:?} does not exist: build it first (`cargo build -p kvmux-viewer`, or \
         scripts/test.sh), or set KVMUX_VIEWER_BIN"
    );
    bin
}

/// A command running [`kvmux_bin`]; panics with a hint if the binary was not built.
pub fn kvmux() -> Command {
    let bin = kvmux_bin();
    assert!(
        bin.exists(),
        "{bin:?} does not exist: build it first (`cargo build -p kvmux`, or scripts/test.sh), \
         or set KVMUX_BIN"
    );
    Command::new(bin)
}

/// Self-tests of the harness against the real servers: everything the kvmux tests take
/// as truth is checked here by independent means.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::TcpStream;
    use std::path::Path;
    use std::sync::OnceLock;
    use std::time::Duration;

    use rfb::PixelFormat;

    use super::probe::{encodings_used, fetch_raw, fetch_screen, security_types};
    use super::*;

    /// One 1280x800 test picture for all the tests here.
    fn picture() -> &'static Path {
        static PICTURE: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
        &PICTURE
            .get_or_init(|| {
                let dir = TempDir::new("harness").unwrap();
                let path = dir.join("picture.png");
                test_picture(1280, 800, &path).unwrap();
                (dir, path)
            })
            .1
    }

    fn xvnc() -> &'static (Xvnc, Image) {
        static SERVER: OnceLock<(Xvnc, Image)> = OnceLock::new();
        SERVER.get_or_init(|| {
            let server = Xvnc::start(XvncOptions::default()).unwrap();
            let truth = server.paint(picture()).unwrap();
            (server, truth)
        })
    }

    fn x11vnc() -> &'static (X11vnc, Image) {
        static SERVER: OnceLock<(X11vnc, Image)> = OnceLock::new();
        SERVER.get_or_init(|| {
            let server = X11vnc::start(1280, 800).unwrap();
            let truth = server.paint(picture()).unwrap();
            (server, truth)
        })
    }

    fn assert_same(what: &str, got: &Image, want: &Image) {
        if let Some(difference) = got.diff(want) {
            panic!("{what}: {difference}");
        }
    }

    /// The painted PNG, the X server's screen and the RFB framebuffer (read by the
    /// probe client) are all the same picture.
    fn shows_the_picture(server: &impl VncServer, truth: &Image) {
        let png = Image::load_png(picture()).unwrap();
        assert_same("X screen vs painted PNG", truth, &png);
        assert_same("X screen now", &server.capture_root().unwrap(), &png);
        assert_same(
            "RFB framebuffer",
            &fetch_screen(server.port()).unwrap(),
            &png,
        );
    }

    #[test]
    fn xvnc_shows_the_painted_picture() {
        let (server, truth) = xvnc();
        shows_the_picture(server, truth);
    }

    #[test]
    fn x11vnc_shows_the_painted_picture() {
        let (server, truth) = x11vnc();
        shows_the_picture(server, truth);
    }

    /// vncdotool (from scripts/setup.sh's venv) is a third, independent client. It takes
    /// the first rectangle it receives for the whole screen wherever that rectangle is,
    /// so its first capture can miss a piece; the second, in the same session, is whole.
    #[test]
    fn vncdotool_sees_the_same_screen() {
        let vncdo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/vncdo");
        assert!(vncdo.exists(), "{vncdo:?} is missing: run scripts/setup.sh");
        let (server, truth) = xvnc();
        let dir = TempDir::new("vncdo").unwrap();
        let out = dir.join("capture.png");
        run(
            Command::new(&vncdo)
                .args(["-s", &server.address(), "capture"])
                .arg(dir.join("first.png"))
                .arg("capture")
                .arg(&out),
            Duration::from_secs(60),
        )
        .unwrap()
        .check("vncdo capture")
        .unwrap();
        assert_same("vncdotool capture", &Image::load_png(&out).unwrap(), truth);
    }

    /// Which encodings Xvnc (TigerVNC 1.12) answers with, each offered alone. CopyRect
    /// only ever appears in incremental updates after something moved, so it cannot be
    /// seen here.
    #[test]
    fn xvnc_encodings() {
        let port = xvnc().0.port();
        // RRE is used for some rectangles (few colours); the others are Raw.
        for (name, encoding) in [("rre", 2), ("hextile", 5), ("tight", 7), ("zrle", 16)] {
            let seen = encodings_used(port, &[encoding]).unwrap();
            assert!(seen.used(encoding), "{name}: {seen:?}");
        }
        for (name, encoding) in [
            ("corre", 4),
            ("zlib", 6),
            ("zlibhex", 8),
            ("ultra", 9),
            ("trle", 15),
            ("zywrle", 17),
            ("jpeg", 21),
            ("h264", 50),
            ("tightpng", -260),
        ] {
            let seen = encodings_used(port, &[encoding]).unwrap();
            assert!(seen.raw_only(), "{name}: {seen:?}");
        }
    }

    /// Which encodings x11vnc 0.9.16 (libvncserver 0.9.14) answers with. It sends the
    /// whole screen as one rectangle (CoRRE: tiles of at most 255x255), and falls back to
    /// Raw for any rectangle that RRE or CoRRE would make larger.
    #[test]
    fn x11vnc_encodings() {
        let port = x11vnc().0.port();
        for (name, encoding) in [
            ("corre", 4),
            ("hextile", 5),
            ("zlib", 6),
            ("ultra", 9),
            ("tight", 7),
            ("zrle", 16),
            ("zywrle", 17),
        ] {
            let seen = encodings_used(port, &[encoding]).unwrap();
            assert!(seen.used(encoding), "{name}: {seen:?}");
        }
        // RRE would be larger than Raw for the photo-like picture. Debian's libvncserver is
        // built without libpng: no TightPNG.
        for (name, encoding) in [
            ("rre", 2),
            ("zlibhex", 8),
            ("trle", 15),
            ("jpeg", 21),
            ("h264", 50),
            ("tightpng", -260),
        ] {
            let seen = encodings_used(port, &[encoding]).unwrap();
            assert!(seen.raw_only(), "{name}: {seen:?}");
        }
    }

    /// On the flat picture, x11vnc does use RRE.
    #[test]
    fn x11vnc_uses_rre_for_flat_pictures() {
        let dir = TempDir::new("flat").unwrap();
        let flat = dir.join("flat.png");
        flat_test_picture(1280, 800, &flat).unwrap();
        let server = X11vnc::start(1280, 800).unwrap();
        server.paint(&flat).unwrap();
        let seen = encodings_used(server.port(), &[2]).unwrap();
        assert!(seen.used(2), "{seen:?}");
    }

    /// For each channel (red, green, blue): its maximum, and every (8-bit value, level
    /// the server sent) pair seen over the picture.
    fn levels(port: u16, truth: &Image, format: &PixelFormat) -> [(u32, Vec<(u32, u32)>); 3] {
        let frame = fetch_raw(port, format).unwrap();
        assert_eq!((frame.width, frame.height), (truth.width, truth.height));
        let channels = [
            (16, format.red_max, format.red_shift),
            (8, format.green_max, format.green_shift),
            (0, format.blue_max, format.blue_shift),
        ];
        channels.map(|(rgb_shift, max, shift)| {
            let max = u32::from(max);
            let mut pairs: Vec<(u32, u32)> = truth
                .pixels
                .iter()
                .zip(&frame.pixels)
                .map(|(&rgb, &p)| (rgb >> rgb_shift & 0xff, p >> shift & max))
                .collect();
            pairs.sort_unstable();
            pairs.dedup();
            // The picture has every value of every channel, each sent as one level.
            assert_eq!(pairs.len(), 256, "values and levels of channel max {max}");
            (max, pairs)
        })
    }

    const REDUCED: [(&str, PixelFormat); 3] = [
        ("rgb565", PixelFormat::RGB565),
        ("rgb555", PixelFormat::RGB555),
        ("bgr233", PixelFormat::BGR233),
    ];

    /// x11vnc (libvncserver) reduces colours by rounding: level = (value * max + 127) / 255.
    #[test]
    fn x11vnc_reduces_colours_by_rounding() {
        let (server, truth) = x11vnc();
        for (name, format) in REDUCED {
            for (max, pairs) in levels(server.port(), truth, &format) {
                for (value, level) in pairs {
                    assert_eq!(
                        level,
                        (value * max + 127) / 255,
                        "{name}: {value} (max {max})"
                    );
                }
            }
        }
    }

    /// Xvnc rounds too, half a step differently: level = (value * max + 128) / 255.
    #[test]
    fn xvnc_reduces_colours_by_rounding() {
        let (server, truth) = xvnc();
        for (name, format) in REDUCED {
            for (max, pairs) in levels(server.port(), truth, &format) {
                for (value, level) in pairs {
                    assert_eq!(
                        level,
                        (value * max + 128) / 255,
                        "{name}: {value} (max {max})"
                    );
                }
            }
        }
    }

    #[test]
    fn security_types_are_as_configured() {
        let dir = TempDir::new("security").unwrap();
        let vnc = Xvnc::start(XvncOptions {
            width: 640,
            height: 400,
            security: Security::VncAuth {
                password: "secret".into(),
            },
            ..Default::default()
        })
        .unwrap();
        assert_eq!(security_types(vnc.port()).unwrap(), vec![2]);
        assert!(vnc.password_file().unwrap().exists());

        let certificate = self_signed_certificate(dir.path(), "server").unwrap();
        let tls = Xvnc::start(XvncOptions {
            width: 640,
            height: 400,
            security: Security::X509 {
                cert: certificate.cert,
                key: certificate.key,
                types: "X509Vnc,X509Plain".into(),
                password: Some("secret".into()),
                plain_users: Some(PLAIN_USER.into()),
            },
            ..Default::default()
        })
        .unwrap();
        assert_eq!(security_types(tls.port()).unwrap(), vec![19 /* VeNCrypt */]);
    }

    /// An X509Plain login with Python's own TLS: VeNCrypt 0.2, subtype 262, TLS checked
    /// against the CA file, then user and password. Prints the SecurityResult and reason.
    const X509_PLAIN_CLIENT: &str = r#"
import socket, ssl, struct, sys
port, ca, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def rx(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise EOFError
        b += c
    return b
s = socket.create_connection(("127.0.0.1", port), timeout=20)
rx(s, 12); s.sendall(b"RFB 003.008\n")
assert 19 in rx(s, rx(s, 1)[0])
s.sendall(bytes([19])); assert rx(s, 2) == b"\0\2"; s.sendall(b"\0\2"); assert rx(s, 1) == b"\0"
n = rx(s, 1)[0]; assert 262 in struct.unpack(">%dI" % n, rx(s, 4 * n))
s.sendall(struct.pack(">I", 262)); assert rx(s, 1) == b"\1"
t = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="127.0.0.1")
t.sendall(struct.pack(">II", len(user), len(password)) + user.encode() + password.encode())
result = struct.unpack(">I", rx(t, 4))[0]
reason = rx(t, struct.unpack(">I", rx(t, 4))[0]).decode() if result else ""
print(result, reason)
"#;

    /// X509Plain works on this machine: Xvnc asks PAM, and the `kvmux-tests` service
    /// from scripts/setup.sh knows the test account.
    #[test]
    fn x509_plain_login_works_through_pam() {
        let dir = TempDir::new("plain").unwrap();
        let certificate = self_signed_certificate(dir.path(), "server").unwrap();
        let server = Xvnc::start(XvncOptions {
            width: 640,
            height: 400,
            security: Security::X509 {
                cert: certificate.cert.clone(),
                key: certificate.key,
                types: "X509Plain".into(),
                password: None,
                plain_users: Some(PLAIN_USER.into()),
            },
            ..Default::default()
        })
        .unwrap();
        let login = |user: &str, password: &str| {
            run(
                Command::new("/usr/bin/python3")
                    .args(["-c", X509_PLAIN_CLIENT, &server.port().to_string()])
                    .arg(&certificate.cert)
                    .args([user, password]),
                Duration::from_secs(30),
            )
            .unwrap()
            .check("X509Plain client")
            .unwrap()
            .stdout_text()
        };
        assert_eq!(login(PLAIN_USER, PLAIN_PASSWORD).trim(), "0");
        let wrong = login(PLAIN_USER, "not-it");
        assert!(wrong.starts_with("1 Authentication failure"), "{wrong}");
        let stranger = login("root", PLAIN_PASSWORD);
        assert!(
            stranger.starts_with("1 Authentication failure"),
            "{stranger}"
        );
    }

    #[test]
    fn stopped_servers_leave_nothing_behind() {
        let server = Xvnc::start(XvncOptions {
            width: 640,
            height: 400,
            ..Default::default()
        })
        .unwrap();
        let (display, port) = (server.display(), server.port());
        let lock = PathBuf::from(format!("/tmp/.X{display}-lock"));
        assert!(lock.exists());
        drop(server);
        assert!(!lock.exists(), "Xvnc left {lock:?}");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

        let server = X11vnc::start(640, 400).unwrap();
        let (display, port) = (server.display(), server.port());
        drop(server);
        assert!(!PathBuf::from(format!("/tmp/.X{display}-lock")).exists());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn servers_start_in_parallel() {
        let servers: Vec<Xvnc> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        Xvnc::start(XvncOptions {
                            width: 320,
                            height: 200,
                            ..Default::default()
                        })
                        .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut displays: Vec<u32> = servers.iter().map(|s| s.display()).collect();
        displays.sort_unstable();
        displays.dedup();
        assert_eq!(displays.len(), 4);
    }

    #[test]
    fn kvmux_bin_is_next_to_deps() {
        if std::env::var_os("KVMUX_BIN").is_some() {
            return;
        }
        let bin = kvmux_bin();
        assert_eq!(bin.file_name().unwrap(), "kvmux");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(bin.parent(), exe.parent().unwrap().parent());
    }
}
