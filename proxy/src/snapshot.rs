//! `kvmux snapshot`: one full frame from a VNC server, written as a PNG.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rfb::client::{ClientEvent, ClientSession};
use rfb::handshake::{ClientConfig, Password};
use rfb::net::{ConnectOptions, TlsOptions};
use rfb::recording::Recording;
use rfb::{Encoding, Framebuffer, PixelFormat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The server: HOST::PORT, or HOST:N for display N (port 5900+N), or HOST (port 5900).
    pub address: String,
    /// Where to write the PNG.
    pub output: PathBuf,
    /// Encoding to ask for (repeatable, in order of preference): raw, copyrect, rre,
    /// corre, hextile, zlib, tight, tightpng, zrle, trle. Default: the best the server offers.
    #[arg(long = "encoding", value_name = "NAME", value_parser = parse_encoding)]
    pub encodings: Vec<Encoding>,
    /// JPEG quality 0-9: lets Tight send lossy JPEG rectangles.
    #[arg(long, value_name = "0-9", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub quality: Option<u8>,
    /// Compression level 0-9.
    #[arg(long, value_name = "0-9", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub compress: Option<u8>,
    /// The pixel format to ask the server to send.
    #[arg(long, value_name = "FORMAT", default_value = "rgb888", value_parser = parse_pixel_format)]
    pub pixel_format: PixelFormat,
    /// File holding the password (VNC authentication or VeNCrypt Plain); a trailing newline is ignored.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// User name for VeNCrypt Plain authentication.
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,
    /// PEM file of the certificate authority that signed the server's certificate
    /// (VeNCrypt X509); without it the system's roots are used.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Accept any server certificate (VeNCrypt X509). Only for testing.
    #[arg(long)]
    pub tls_insecure: bool,
    /// Also write everything the server sent after ServerInit to FILE (a kvmux
    /// recording, replayed by the decoder benchmarks).
    #[arg(long, value_name = "FILE", hide = true)]
    pub record: Option<PathBuf>,
    /// Give up after this many seconds in all.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,
}

fn parse_encoding(name: &str) -> Result<Encoding, String> {
    Encoding::from_name(name)
        .filter(|e| *e != Encoding::OPEN_H264)
        .ok_or_else(|| {
            format!("unknown encoding '{name}' (one of raw, copyrect, rre, corre, hextile, zlib, tight, tightpng, zrle, trle)")
        })
}

fn parse_pixel_format(name: &str) -> Result<PixelFormat, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "rgb888" => PixelFormat::RGB888,
        "rgb565" => PixelFormat::RGB565,
        "rgb555" => PixelFormat::RGB555,
        "bgr233" => PixelFormat::BGR233,
        "colourmap8" | "colormap8" => PixelFormat::COLOURMAP8,
        other => {
            return Err(format!(
                "unknown pixel format '{other}' (one of rgb888, rgb565, rgb555, bgr233, colourmap8)"
            ))
        }
    })
}

/// The encodings to ask for: the chosen ones (or our default preference), then the
/// pseudo-encodings a snapshot needs.
fn encodings(args: &SnapshotArgs) -> Vec<Encoding> {
    let mut list = if args.encodings.is_empty() {
        vec![
            Encoding::TIGHT,
            Encoding::ZRLE,
            Encoding::HEXTILE,
            Encoding::ZLIB,
            Encoding::TRLE,
            Encoding::CORRE,
            Encoding::RRE,
            Encoding::RAW,
        ]
    } else {
        args.encodings.clone()
    };
    if let Some(q) = args.quality {
        list.push(Encoding::jpeg_quality(q));
    }
    if let Some(c) = args.compress {
        list.push(Encoding::compress_level(c));
    }
    // The cursor as a pseudo-encoding keeps the server from drawing it into the picture.
    list.extend([
        Encoding::DESKTOP_SIZE,
        Encoding::EXTENDED_DESKTOP_SIZE,
        Encoding::LAST_RECT,
        Encoding::DESKTOP_NAME,
        Encoding::CURSOR_WITH_ALPHA,
        Encoding::CURSOR,
    ]);
    list
}

/// A password file is either text (the first line is the password) or a password
/// stored by `vncpasswd` (8 obscured bytes), as VNC servers and viewers keep them.
pub(crate) fn read_password(path: &Path) -> Result<Password> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read password file {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).ok().filter(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    });
    let password = match text {
        Some(text) => text.lines().next().unwrap_or("").to_owned(),
        None => match rfb::handshake::vnc_auth::decode_password_file(&bytes) {
            Some(p) => String::from_utf8_lossy(&p).into_owned(),
            None => bail!(
                "password file {} is neither text nor a vncpasswd file",
                path.display()
            ),
        },
    };
    Ok(Password::new(password))
}

pub async fn run(args: SnapshotArgs) -> Result<()> {
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        bail!("--timeout must be a positive number of seconds");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    match tokio::time::timeout(timeout, take(&args)).await {
        Ok(result) => result,
        Err(_) => bail!(
            "timed out after {} s waiting for {}",
            args.timeout,
            args.address
        ),
    }
}

async fn take(args: &SnapshotArgs) -> Result<()> {
    let password = args
        .password_file
        .as_deref()
        .map(read_password)
        .transpose()?;
    let options = ConnectOptions {
        config: ClientConfig {
            shared: true,
            username: args.username.clone(),
            password,
            allow_tls: true,
            ..ClientConfig::default()
        },
        tls: TlsOptions {
            ca_file: args.tls_ca.clone(),
            insecure_skip_verify: args.tls_insecure,
            ..TlsOptions::default()
        },
        timeout: None,
    };
    let conn = rfb::net::connect(&args.address, &options).await?;
    let mut stream = conn.stream;
    let mut session = ClientSession::new(&conn.init);
    let mut out = Vec::new();
    session
        .set_pixel_format(args.pixel_format, &mut out)
        .context("the pixel format is not usable")?;
    session.set_encodings(&encodings(args), &mut out);
    session.request_update(false, None, &mut out);
    stream
        .write_all(&out)
        .await
        .context("cannot send to the server")?;
    out.clear();
    let mut recorded = args.record.as_ref().map(|_| conn.leftover.clone());
    session.feed(&conn.leftover)?;

    let mut buf = vec![0u8; 256 * 1024];
    loop {
        while let Some(event) = session.poll_event() {
            tracing::debug!(?event, "server event");
            match event {
                ClientEvent::Resized { .. } => {
                    // A new size: whatever was drawn before does not count.
                    session.framebuffer_mut().take_damage();
                }
                ClientEvent::UpdateComplete => {
                    let fb = session.framebuffer();
                    if fb.damage().bounds() == fb.bounds() {
                        write_png(fb, &args.output)?;
                        if let (Some(path), Some(stream)) = (&args.record, recorded.take()) {
                            let recording = Recording {
                                width: conn.init.width,
                                height: conn.init.height,
                                pixel_format: args.pixel_format,
                                stream,
                            };
                            std::fs::write(path, recording.to_bytes())
                                .with_context(|| format!("cannot write {}", path.display()))?;
                        }
                        return Ok(());
                    }
                    // Servers may answer with an update of pseudo-rectangles only
                    // (TigerVNC sends the screen layout first): ask for the rest.
                    session.request_update(true, None, &mut out);
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .context("cannot send to the server")?;
            out.clear();
        }
        let n = stream.read(&mut buf).await.context("connection lost")?;
        if n == 0 {
            bail!("the server closed the connection before sending a full frame");
        }
        if let Some(r) = recorded.as_mut() {
            r.extend_from_slice(&buf[..n]);
        }
        tracing::trace!(bytes = n, "read");
        session.feed(&buf[..n])?;
    }
}

fn write_png(fb: &Framebuffer, path: &Path) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(
        BufWriter::new(file),
        u32::from(fb.width()),
        u32::from(fb.height()),
    );
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder
        .write_header()
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut rgb = Vec::with_capacity(fb.pixels().len() * 3);
    for p in fb.pixels() {
        rgb.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, *p as u8]);
    }
    writer
        .write_image_data(&rgb)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writer
        .finish()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
