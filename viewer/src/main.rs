//! `kvmux-viewer [OPTIONS] [ADDRESS...]`: a tab per address.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use gtk::glib;
use kvmux_viewer::app::{self, Options};
use kvmux_viewer::machines::read_password;
use kvmux_viewer::ConnectionSettings;
use rfb::Encoding;

#[derive(Parser, Debug)]
#[command(
    name = "kvmux-viewer",
    version,
    about = "A tabbed VNC viewer that knows kvmux proxies"
)]
struct Args {
    /// Servers to open, a tab each: HOST::PORT, HOST:N (display N, port 5900+N) or HOST.
    addresses: Vec<String>,
    /// File holding the password (VNC authentication or VeNCrypt Plain): text, first
    /// line, or a vncpasswd file. Without it the viewer asks when the server wants one.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// User name for VeNCrypt Plain authentication.
    #[arg(long, value_name = "NAME")]
    username: Option<String>,
    /// PEM file of the certificate authority that signed the server's certificate.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    #[arg(long)]
    tls_insecure: bool,
    /// JPEG quality 0-9: lets the server send lossy JPEG (lossless without it).
    #[arg(long, value_name = "0-9", value_parser = clap::value_parser!(u8).range(0..=9))]
    quality: Option<u8>,
    /// Encoding to ask for (repeatable, in order of preference): tight, zrle, hextile,
    /// zlib, trle, copyrect, corre, rre, raw. Default: in that order.
    #[arg(long = "encoding", value_name = "NAME", value_parser = parse_encoding)]
    encodings: Vec<Encoding>,
    /// Scale the desktop to fit the window (fit) or show it pixel for pixel (none).
    #[arg(long, value_enum, default_value_t = Scaling::Fit)]
    scaling: Scaling,
    /// Send no keyboard or pointer input.
    #[arg(long)]
    view_only: bool,
    /// Start in fullscreen.
    #[arg(long)]
    fullscreen: bool,
    /// Do not reconnect when a connection drops.
    #[arg(long)]
    no_reconnect: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scaling {
    Fit,
    None,
}

fn parse_encoding(name: &str) -> Result<Encoding, String> {
    Encoding::from_name(name)
        .filter(|e| *e != Encoding::OPEN_H264)
        .ok_or_else(|| format!("unknown encoding '{name}'"))
}

/// Frame-sized allocations (a few images of GTK's and cairo's every frame) come from
/// the heap and are reused, rather than mapped afresh and zeroed by the kernel each
/// time. glibc's threshold for mapping adapts to the first mapped block freed: when a
/// smaller image happened to go first, every larger one was mapped anew, and a 1080p
/// frame cost 45% more CPU in about half the runs.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only sets the allocator's parameters, here before any other
    // thread has started; its return value (0 on failure) leaves the defaults.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> Result<glib::ExitCode> {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KVMUX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    for address in &args.addresses {
        if let Err(e) = rfb::net::parse_vnc_address(address) {
            anyhow::bail!("invalid address {address:?}: {e}");
        }
    }
    let password = args
        .password_file
        .as_deref()
        .map(read_password)
        .transpose()?;
    let options = Options {
        addresses: args.addresses,
        template: ConnectionSettings {
            address: String::new(),
            username: args.username,
            password,
            tls_ca: args.tls_ca,
            tls_insecure: args.tls_insecure,
            quality: args.quality.unwrap_or(8),
            lossy: args.quality.is_some(),
            encodings: args.encodings,
        },
        scaling: args.scaling == Scaling::Fit,
        read_only: args.view_only,
        fullscreen: args.fullscreen,
        reconnect: !args.no_reconnect,
    };
    Ok(app::run(options))
}
