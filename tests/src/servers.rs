//! Real VNC servers on free displays and ports: TigerVNC's Xvnc, and x11vnc on Xvfb.
//! Each runs until dropped (see [`crate::process`] for why they never outlive the tests).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::image::Image;
use crate::probe::fetch_screen;
use crate::process::{run, run_with_input, PeerProcess, TempDir};
use crate::x11::{capture_root, free_display, free_port, paint};

/// How long a server may take to start on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries before giving up on finding a free display and port.
const START_ATTEMPTS: usize = 8;

/// The PAM service `scripts/setup.sh` installs for X509Plain: it accepts exactly
/// [`PLAIN_USER`] with [`PLAIN_PASSWORD`]. (Xvnc checks Plain logins through PAM; the
/// service name is looked up in `/etc/pam.d`, so a test cannot bring its own.)
pub const PLAIN_PAM_SERVICE: &str = "kvmux-tests";
pub const PLAIN_USER: &str = "kvmux-plain";
pub const PLAIN_PASSWORD: &str = "kvmux-plain-password";

/// Fails with a hint when `scripts/setup.sh` has not installed the PAM service.
pub fn check_plain_pam_service() -> Result<()> {
    let path = Path::new("/etc/pam.d").join(PLAIN_PAM_SERVICE);
    if path.exists() {
        Ok(())
    } else {
        bail!("{path:?} is missing: run scripts/setup.sh")
    }
}

/// What a client must get through to see the desktop.
#[derive(Debug, Clone, Default)]
pub enum Security {
    #[default]
    None,
    /// Classic VNC authentication (DES challenge), password file made with `vncpasswd -f`.
    VncAuth { password: String },
    /// VeNCrypt over TLS with an X.509 certificate.
    X509 {
        cert: PathBuf,
        key: PathBuf,
        /// Xvnc's `-SecurityTypes`, e.g. `"X509Vnc,X509Plain"`.
        types: String,
        /// The VNC password, for X509Vnc.
        password: Option<String>,
        /// Xvnc's `-PlainUsers` (comma-separated), for X509Plain: checked through the PAM
        /// service [`PLAIN_PAM_SERVICE`], which knows [`PLAIN_USER`] only.
        plain_users: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct XvncOptions {
    pub width: u32,
    pub height: u32,
    pub depth: u8,
    pub security: Security,
}

impl Default for XvncOptions {
    fn default() -> XvncOptions {
        XvncOptions {
            width: 1280,
            height: 800,
            depth: 24,
            security: Security::None,
        }
    }
}

/// What the tests need from any of the servers.
pub trait VncServer {
    /// The X display it serves, `:N`.
    fn display(&self) -> u32;
    /// Its RFB port on 127.0.0.1.
    fn port(&self) -> u16;
    /// Shows `png` (the size of the screen) and waits until both the X server and the
    /// server's RFB framebuffer (where this harness can read it) show exactly it. Returns
    /// the picture as the X server reports it.
    fn paint(&self, png: &Path) -> Result<Image>;
    /// The server's log so far.
    fn log(&self) -> String;

    /// The address as kvmux takes it: `127.0.0.1::PORT`.
    fn address(&self) -> String {
        format!("127.0.0.1::{}", self.port())
    }

    /// The X server's own account of its screen.
    fn capture_root(&self) -> Result<Image> {
        capture_root(self.display())
    }
}

/// Writes a VNC password file (`vncpasswd -f`: the password DES-obfuscated with VNC's
/// fixed key, 8 bytes).
pub fn vnc_password_file(path: &Path, password: &str) -> Result<()> {
    let out = run_with_input(
        Command::new("vncpasswd").arg("-f"),
        format!("{password}\n").as_bytes(),
        Duration::from_secs(10),
    )?
    .check("vncpasswd -f")?;
    std::fs::write(path, &out.stdout).with_context(|| format!("cannot write {path:?}"))?;
    Ok(())
}

/// A self-signed certificate and its key, PEM files.
#[derive(Debug, Clone)]
pub struct TestCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a self-signed P-256 certificate for `localhost` and `127.0.0.1` in `dir`
/// (`NAME-cert.pem`, `NAME-key.pem`). It is not a CA (`CA:FALSE`): WebPKI verifiers
/// such as rustls's reject a CA certificate used as the server's own, while they accept a
/// self-signed end-entity certificate given as the trust anchor.
pub fn self_signed_certificate(dir: &Path, name: &str) -> Result<TestCertificate> {
    let config = dir.join(format!("{name}.cnf"));
    std::fs::write(
        &config,
        "[req]\n\
         prompt = no\n\
         distinguished_name = dn\n\
         x509_extensions = ext\n\
         [dn]\n\
         CN = localhost\n\
         O = kvmux tests\n\
         [ext]\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = DNS:localhost, IP:127.0.0.1\n\
         subjectKeyIdentifier = hash\n",
    )?;
    let certificate = TestCertificate {
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    run(
        Command::new("openssl")
            .args(["req", "-x509", "-new", "-nodes", "-sha256", "-days", "30"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .arg("-config")
            .arg(&config)
            .arg("-keyout")
            .arg(&certificate.key)
            .arg("-out")
            .arg(&certificate.cert),
        Duration::from_secs(30),
    )?
    .check("openssl req")?;
    Ok(certificate)
}

/// Waits for `process` to write a line satisfying `wanted` on its standard output.
fn wait_for_line(
    process: &PeerProcess,
    deadline: Instant,
    wanted: impl Fn(&str) -> bool,
) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if wanted(process.next_line(left)?.trim()) {
            return Ok(());
        }
    }
}

/// Waits until `process` is the X server of `display`: the display's lock file holds its
/// process id (so no other server owns the display) and its socket exists (clients that
/// connect now are served once it finishes starting).
fn wait_for_display(process: &mut PeerProcess, display: u32, deadline: Instant) -> Result<()> {
    let lock = format!("/tmp/.X{display}-lock");
    let socket = format!("/tmp/.X11-unix/X{display}");
    loop {
        if !process.is_running() {
            bail!("exited before serving :{display}");
        }
        let owner = std::fs::read_to_string(&lock).unwrap_or_default();
        if owner.trim() == process.pid().to_string() && Path::new(&socket).exists() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not serving :{display} after {START_TIMEOUT:?} (lock file: {owner:?})");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `port` accepts connections while `process` keeps running.
fn wait_for_port(process: &mut PeerProcess, port: u16, deadline: Instant) -> Result<()> {
    loop {
        if !process.is_running() {
            bail!("exited before accepting connections");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("port {port} accepts no connection after {START_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a peer with `make_command(attempt)` until `ready` says it is up; a peer that
/// exits before that (another process took its display or port) is retried with the
/// next attempt, one that hangs is an error.
fn start_peer(
    name: &str,
    dir: &TempDir,
    mut make_command: impl FnMut() -> Result<(Command, u32, u16)>,
    mut ready: impl FnMut(&mut PeerProcess, u32, u16) -> Result<()>,
) -> Result<(PeerProcess, u32, u16)> {
    let mut last_error = anyhow!("{name} was not started");
    for attempt in 0..START_ATTEMPTS {
        let (command, display, port) = make_command()?;
        let log = dir.join(format!("{name}-{attempt}.log"));
        let mut process = PeerProcess::spawn(&command, &log)?;
        match ready(&mut process, display, port) {
            Ok(()) => return Ok((process, display, port)),
            Err(e) => {
                let log = process.log_text();
                let exited = !process.is_running();
                drop(process);
                last_error =
                    anyhow!("{name} on :{display}, port {port}: {e:#}\n{name} log:\n{log}");
                if !exited {
                    break;
                }
            }
        }
    }
    Err(last_error)
}

/// TigerVNC's Xvnc: an X server whose screen is the VNC framebuffer.
pub struct Xvnc {
    // Dropped first: the server stops before its directory goes.
    process: PeerProcess,
    display: u32,
    port: u16,
    password_file: Option<PathBuf>,
    security: Security,
    dir: TempDir,
}

impl Xvnc {
    /// Starts Xvnc on a free display and loopback port and waits until it accepts RFB
    /// connections.
    pub fn start(options: XvncOptions) -> Result<Xvnc> {
        let dir = TempDir::new("xvnc")?;
        let mut security_args: Vec<String> = Vec::new();
        let mut password_file = None;
        let mut with_password = |args: &mut Vec<String>, password: &str| -> Result<()> {
            let path = dir.join("passwd");
            vnc_password_file(&path, password)?;
            args.push(format!("-PasswordFile={}", path.display()));
            password_file = Some(path);
            Ok(())
        };
        match &options.security {
            Security::None => security_args.push("-SecurityTypes=None".into()),
            Security::VncAuth { password } => {
                security_args.push("-SecurityTypes=VncAuth".into());
                with_password(&mut security_args, password)?;
            }
            Security::X509 {
                cert,
                key,
                types,
                password,
                plain_users,
            } => {
                security_args.push(format!("-SecurityTypes={types}"));
                security_args.push(format!("-X509Cert={}", cert.display()));
                security_args.push(format!("-X509Key={}", key.display()));
                if let Some(password) = password {
                    with_password(&mut security_args, password)?;
                }
                if let Some(users) = plain_users {
                    check_plain_pam_service()?;
                    security_args.push(format!("-PlainUsers={users}"));
                    security_args.push(format!("-PAMService={PLAIN_PAM_SERVICE}"));
                }
            }
        }
        let (process, display, port) = start_peer(
            "Xvnc",
            &dir,
            || {
                let (display, port) = (free_display(), free_port()?);
                let mut command = Command::new("Xvnc");
                command
                    .arg(format!(":{display}"))
                    .args([
                        "-geometry",
                        &format!("{}x{}", options.width, options.height),
                    ])
                    .args(["-depth", &options.depth.to_string()])
                    .args(["-rfbport", &port.to_string()])
                    .args(["-localhost", "-nolisten", "tcp"])
                    .args(["-desktop", "kvmux-tests", "-AlwaysShared"])
                    // Wrong-password tests must not get the client blacklisted.
                    .args(["-BlacklistThreshold=1000000"])
                    .args(&security_args);
                Ok((command, display, port))
            },
            |process, display, port| {
                let deadline = Instant::now() + START_TIMEOUT;
                // (Not -displayfd: with it, X servers take no lock file.)
                wait_for_display(process, display, deadline)?;
                wait_for_port(process, port, deadline)
            },
        )?;
        Ok(Xvnc {
            process,
            display,
            port,
            password_file,
            security: options.security,
            dir,
        })
    }

    /// The VNC password file the server uses (VncAuth, X509Vnc), made with `vncpasswd -f`.
    pub fn password_file(&self) -> Option<&Path> {
        self.password_file.as_deref()
    }

    /// The server's private directory (removed with it): a place for test files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl VncServer for Xvnc {
    fn display(&self) -> u32 {
        self.display
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn paint(&self, png: &Path) -> Result<Image> {
        let shown = paint(self.display, png)?;
        // Xvnc's framebuffer is its screen; check that anyway where the harness's own
        // client can get in.
        if matches!(self.security, Security::None) {
            wait_until_served(self.port, &shown)?;
        }
        Ok(shown)
    }

    fn log(&self) -> String {
        self.process.log_text()
    }
}

/// Waits until the RFB server on `port` serves exactly `picture` (x11vnc copies the X
/// screen into its framebuffer by polling, a little later).
fn wait_until_served(port: u16, picture: &Image) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let served = fetch_screen(port)?;
        match served.diff(picture) {
            None => return Ok(()),
            Some(difference) if Instant::now() > deadline => {
                bail!("the RFB server on port {port} does not serve the X screen: {difference}")
            }
            Some(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// x11vnc serving an Xvfb display.
pub struct X11vnc {
    // Dropped in this order: x11vnc, then its X server, then the directory.
    x11vnc: PeerProcess,
    xvfb: PeerProcess,
    display: u32,
    port: u16,
    dir: TempDir,
}

impl X11vnc {
    /// Starts Xvfb (24-bit) and x11vnc (`-localhost -nopw -forever -shared`, no cursor
    /// drawn into the framebuffer) on a free display and port.
    pub fn start(width: u32, height: u32) -> Result<X11vnc> {
        let dir = TempDir::new("x11vnc")?;
        let (xvfb, display, _) = start_peer(
            "Xvfb",
            &dir,
            || {
                let display = free_display();
                let mut command = Command::new("Xvfb");
                command
                    .arg(format!(":{display}"))
                    .args(["-screen", "0", &format!("{width}x{height}x24")])
                    .args(["-nolisten", "tcp"]);
                Ok((command, display, 0))
            },
            |process, display, _| {
                wait_for_display(process, display, Instant::now() + START_TIMEOUT)
            },
        )?;
        let (x11vnc, _, port) = start_peer(
            "x11vnc",
            &dir,
            || {
                let port = free_port()?;
                let mut command = Command::new("x11vnc");
                command
                    .args(["-display", &format!(":{display}")])
                    .args(["-rfbport", &port.to_string()])
                    .args(["-localhost", "-nopw", "-forever", "-shared", "-norc"])
                    // Without this, x11vnc draws the pointer into the framebuffer of
                    // clients that do not take cursor shapes, and the screen differs.
                    .arg("-nocursor");
                Ok((command, display, port))
            },
            |process, _, port| {
                let deadline = Instant::now() + START_TIMEOUT;
                // x11vnc announces `PORT=N` on stdout once it listens.
                wait_for_line(process, deadline, |line| line == format!("PORT={port}"))?;
                wait_for_port(process, port, deadline)
            },
        )?;
        Ok(X11vnc {
            x11vnc,
            xvfb,
            display,
            port,
            dir,
        })
    }

    /// The servers' private directory (removed with them): a place for test files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Xvfb's log so far.
    pub fn xvfb_log(&self) -> String {
        self.xvfb.log_text()
    }
}

impl VncServer for X11vnc {
    fn display(&self) -> u32 {
        self.display
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn paint(&self, png: &Path) -> Result<Image> {
        let shown = paint(self.display, png)?;
        wait_until_served(self.port, &shown)?;
        Ok(shown)
    }

    fn log(&self) -> String {
        self.x11vnc.log_text()
    }
}
