//! `kvmux testsrc`: a built-in machine for demos and tests — an RFB server showing a
//! generated picture, logging every input it receives.

pub mod font;
pub mod pattern;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use rfb::handshake::server::{ServerConfig, ServerSecurity};
use rfb::handshake::{Password, ProtocolVersion, ServerInit, VeNCryptSubtype};
use rfb::messages::ClipboardMessage;
use rfb::net::{AcceptOptions, BoxStream};
use rfb::server::{ServerEvent, ServerSession};
use rfb::{Framebuffer, PixelFormat, Rect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use pattern::Pattern;

#[derive(Args, Debug, Clone)]
pub struct TestsrcArgs {
    /// Address to listen on, e.g. 127.0.0.1:5901.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Screen size, WIDTHxHEIGHT (default 1280x800; an image pattern brings its own).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub size: Option<(u16, u16)>,
    /// Desktop name shown to clients.
    #[arg(long, default_value = "kvmux testsrc")]
    pub name: String,
    /// What to show: bars, gradient, clock (a clock redrawn every second and a box
    /// moving every frame), noise (every pixel new every frame), or image:FILE (a PNG).
    #[arg(long, default_value = "bars", value_parser = clap::value_parser!(Pattern))]
    pub pattern: Pattern,
    /// Frames per second for moving patterns.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Append every input event as a JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub input_log: Option<PathBuf>,
    /// Require VNC authentication with the password in FILE (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Offer VeNCrypt X509 with this certificate (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Drop a client that has not taken its bytes for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, hide = true)]
    pub write_timeout: f64,
}

impl clap::builder::ValueParserFactory for Pattern {
    type Parser = clap::builder::ValueParser;
    fn value_parser() -> Self::Parser {
        clap::builder::ValueParser::new(|s: &str| s.parse::<Pattern>())
    }
}

fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("size '{s}' is not WIDTHxHEIGHT"))?;
    let w: u16 = w
        .trim()
        .parse()
        .map_err(|_| format!("bad width in '{s}'"))?;
    let h: u16 = h
        .trim()
        .parse()
        .map_err(|_| format!("bad height in '{s}'"))?;
    if w == 0 || h == 0 || w > 8192 || h > 8192 {
        return Err(format!("size '{s}' must be between 1x1 and 8192x8192"));
    }
    Ok((w, h))
}

/// The desktop every client of this source sees.
struct Desktop {
    fb: Framebuffer,
    name: String,
}

#[derive(Debug, Clone)]
enum Change {
    Damage(Vec<Rect>),
    Resized,
}

struct Source {
    desktop: RwLock<Desktop>,
    pattern: Pattern,
    image: Option<(u16, u16, Vec<u32>)>,
    changes: broadcast::Sender<Change>,
    log: Option<Mutex<BufWriter<File>>>,
    accept: AcceptOptions,
    /// A client that has not taken its bytes for this long is dropped.
    write_timeout: Duration,
}

pub async fn run(args: TestsrcArgs) -> Result<()> {
    if !(args.fps > 0.0 && args.fps <= 1000.0) {
        bail!("--fps must be between 0 and 1000");
    }
    if !(args.write_timeout > 0.0 && args.write_timeout.is_finite()) {
        bail!("--write-timeout must be a positive number of seconds");
    }
    let image = match &args.pattern {
        Pattern::Image(path) => Some(pattern::load_png(path)?),
        _ => None,
    };
    let (w, h) = match (&image, args.size) {
        (_, Some(size)) => size,
        (Some((w, h, _)), None) => (*w, *h),
        (None, None) => (1280, 800),
    };
    let mut fb = Framebuffer::new(w, h);
    pattern::draw(&mut fb, &args.pattern, &args.name, image.as_ref());
    let log = match &args.input_log {
        Some(path) => Some(Mutex::new(BufWriter::new(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open input log {}", path.display()))?,
        ))),
        None => None,
    };
    let accept = accept_options(&args, w, h)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let (changes, _) = broadcast::channel(256);
    let source = Arc::new(Source {
        desktop: RwLock::new(Desktop {
            fb,
            name: args.name.clone(),
        }),
        pattern: args.pattern.clone(),
        image,
        changes,
        log,
        accept,
        write_timeout: Duration::from_secs_f64(args.write_timeout),
    });
    info!(listen = %args.listen, size = %format!("{w}x{h}"), name = %args.name, "Test source listening");
    eprintln!(
        "kvmux testsrc: listening on {} ({w}x{h}, \"{}\")",
        args.listen, args.name
    );
    if pattern::Animator::moves(&source.pattern) {
        tokio::spawn(animate(source.clone(), args.fps));
    }
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "Accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let source = source.clone();
                tokio::spawn(async move {
                    info!(%peer, "Client connected");
                    match serve_client(Box::new(stream), &source).await {
                        Ok(()) => info!(%peer, "Client disconnected"),
                        Err(e) => warn!(%peer, reason = %format!("{e:#}"), "Client dropped"),
                    }
                });
            }
            _ = &mut shutdown => {
                info!("Shutting down");
                return Ok(());
            }
        }
    }
}

fn accept_options(args: &TestsrcArgs, w: u16, h: u16) -> Result<AcceptOptions> {
    let password = match &args.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read password file {}", path.display()))?;
            Some(Password::new(text.lines().next().unwrap_or("").to_owned()))
        }
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(rfb::net::tls::server_config(cert, key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let mut security = Vec::new();
    if tls.is_some() {
        let subtypes = if password.is_some() {
            vec![VeNCryptSubtype::X509Vnc]
        } else {
            vec![VeNCryptSubtype::X509None]
        };
        security.push(ServerSecurity::VeNCrypt {
            subtypes,
            vnc_password: password.clone(),
            users: Vec::new(),
        });
    }
    match password {
        Some(password) if tls.is_none() => security.push(ServerSecurity::VncAuth { password }),
        Some(_) => {}
        None if tls.is_none() => security.push(ServerSecurity::None),
        None => {}
    }
    let server_init = ServerInit {
        width: w,
        height: h,
        pixel_format: PixelFormat::RGB888,
        name: args.name.clone(),
    };
    Ok(AcceptOptions {
        config: ServerConfig {
            security,
            server_init,
            version: ProtocolVersion::V3_8,
        },
        tls,
        timeout: Duration::from_secs(30),
    })
}

/// Moves the box every frame and redraws the clock every second.
async fn animate(source: Arc<Source>, fps: f64) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / fps));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut animator = pattern::Animator::new();
    loop {
        ticker.tick().await;
        let damage = {
            let Ok(mut desktop) = source.desktop.write() else {
                return;
            };
            let damage = animator.step(&source.pattern, &mut desktop.fb);
            desktop.fb.take_damage();
            damage
        };
        // No receivers is fine: nobody is watching.
        let _ = source.changes.send(Change::Damage(damage));
    }
}

fn log_event(source: &Source, event: &ServerEvent) {
    let Some(log) = &source.log else { return };
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let line = match event {
        ServerEvent::Key { down, keysym } => {
            format!(r#"{{"type":"key","down":{down},"keysym":{keysym},"time":{time:.6}}}"#)
        }
        ServerEvent::QemuKey {
            down,
            keysym,
            keycode,
        } => {
            format!(
                r#"{{"type":"key","down":{down},"keysym":{keysym},"keycode":{keycode},"time":{time:.6}}}"#
            )
        }
        ServerEvent::Pointer { buttons, x, y } => {
            format!(r#"{{"type":"pointer","x":{x},"y":{y},"buttons":{buttons},"time":{time:.6}}}"#)
        }
        ServerEvent::CutText(latin1) => {
            let text: String = latin1.iter().map(|&b| char::from(b)).collect();
            format!(
                r#"{{"type":"cut_text","text":{},"time":{time:.6}}}"#,
                json_string(&text)
            )
        }
        ServerEvent::Clipboard(ClipboardMessage::Provide {
            text: Some(text), ..
        }) => {
            format!(
                r#"{{"type":"cut_text","text":{},"time":{time:.6}}}"#,
                json_string(text)
            )
        }
        ServerEvent::Xvp { code, .. } => {
            let action = match code {
                rfb::messages::XvpClientCode::Shutdown => "shutdown",
                rfb::messages::XvpClientCode::Reboot => "reboot",
                rfb::messages::XvpClientCode::Reset => "reset",
            };
            format!(r#"{{"type":"xvp","action":"{action}","time":{time:.6}}}"#)
        }
        _ => return,
    };
    if let Ok(mut log) = log.lock() {
        // One write and a flush per line: a reader tailing the file sees whole events.
        let _ = writeln!(log, "{line}").and_then(|()| log.flush());
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

async fn serve_client(stream: BoxStream, source: &Source) -> Result<()> {
    let conn = rfb::net::accept(stream, &source.accept).await?;
    let mut session = {
        let desktop = source
            .desktop
            .read()
            .map_err(|_| anyhow::anyhow!("desktop lock poisoned"))?;
        let fb = &desktop.fb;
        ServerSession::new(fb.width(), fb.height(), PixelFormat::RGB888, &desktop.name)
    };
    session.enable_xvp(true);
    session.set_encoder_threads(2);
    let mut changes = source.changes.subscribe();
    // rfb's Damage keeps every rectangle added (up to 64), even ones it already covers: a
    // pattern that damages the whole screen every frame (noise) would have it encoded once
    // per frame since the client's last request. Whole-screen damage is added once.
    let mut whole_pending = false;
    let (mut reader, mut writer) = tokio::io::split(conn.stream);
    let mut out = Vec::new();
    session.feed(&conn.leftover, &mut out)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(event) = session.poll_event() {
            log_event(source, &event);
            if let ServerEvent::SetDesktopSize { width, height, .. } = event {
                resize_desktop(source, width, height);
                // This client hears of its new size in the answer to its request.
                session.resize(width, height);
                session.desktop_size_result(0);
            }
        }
        if session.update_due() {
            let desktop = source
                .desktop
                .read()
                .map_err(|_| anyhow::anyhow!("desktop lock poisoned"))?;
            let started = Instant::now();
            session.write_update(&desktop.fb, &mut out);
            whole_pending = false;
            debug!(bytes = out.len(), elapsed = ?started.elapsed(), "Update encoded");
        }
        if !out.is_empty() {
            match tokio::time::timeout(source.write_timeout, writer.write_all(&out)).await {
                Ok(result) => result.context("write failed")?,
                Err(_) => bail!("the client stopped reading for {:?}", source.write_timeout),
            }
            out.clear();
        }
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = read.context("read failed")?;
                if n == 0 {
                    return Ok(());
                }
                session.feed(&buf[..n], &mut out)?;
            }
            change = changes.recv() => match change {
                Ok(Change::Damage(rects)) => {
                    let (w, h) = session.size();
                    for r in rects {
                        let whole = r.x == 0 && r.y == 0 && r.width >= w && r.height >= h;
                        if whole && std::mem::replace(&mut whole_pending, true) {
                            continue;
                        }
                        session.add_damage(r);
                    }
                }
                Ok(Change::Resized) => {
                    let desktop = source.desktop.read().map_err(|_| anyhow::anyhow!("desktop lock poisoned"))?;
                    if session.can_resize() {
                        session.resize(desktop.fb.width(), desktop.fb.height());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => session.add_damage(Rect::new(0, 0, u16::MAX, u16::MAX)),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// A client asked for a new size: redraw the pattern at that size and tell everyone.
fn resize_desktop(source: &Source, width: u16, height: u16) {
    if let Ok(mut desktop) = source.desktop.write() {
        if (desktop.fb.width(), desktop.fb.height()) == (width, height) {
            return;
        }
        desktop.fb.resize(width, height);
        let name = desktop.name.clone();
        pattern::draw(
            &mut desktop.fb,
            &source.pattern,
            &name,
            source.image.as_ref(),
        );
        desktop.fb.take_damage();
    }
    info!(width, height, "Desktop resized");
    let _ = source.changes.send(Change::Resized);
}
