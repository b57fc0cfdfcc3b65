//! `kvmux serve` and `kvmux demo`: the proxy — many machines behind one VNC endpoint,
//! switched by hotkey.
//!
//! The map: [`config`] reads `kvmux.toml`; [`source`] keeps one shared frame per
//! machine (an RFB upstream, a reverse connection, a supervised command or a built-in
//! test machine) and shows [`nosignal`] while one is down; [`client`] serves each
//! downstream client its active source and switches on [`hotkeys`]; [`ws`] carries
//! RFB over WebSocket for noVNC.

pub mod client;
pub mod config;
pub mod hotkeys;
pub mod nosignal;
pub mod source;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rfb::handshake::server::{ServerConfig, ServerSecurity};
use rfb::handshake::{ProtocolVersion, ServerInit};
use rfb::net::{AcceptOptions, BoxStream};
use rfb::PixelFormat;
use tokio::net::TcpListener;
use tracing::{info, warn};

use client::Shared;
use hotkeys::Hotkeys;
use source::{Hub, Upstream};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (see examples/kvmux.toml).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Check the configuration and print what it sets up, then exit.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Address for VNC clients.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5900")]
    pub listen: SocketAddr,
    /// Address for noVNC (RFB over WebSocket).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5800")]
    pub websocket: SocketAddr,
}

/// Everything the proxy runs with, resolved from a config or built for the demo.
pub struct Plan {
    pub listen: SocketAddr,
    pub websocket: Option<SocketAddr>,
    pub security: Vec<ServerSecurity>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub sources: Vec<(String, Upstream)>,
    pub hotkeys: Hotkeys,
}

pub async fn run_demo(args: DemoArgs) -> Result<()> {
    let mut config = config::Config::demo();
    config.listen.rfb = args.listen;
    config.listen.websocket = Some(args.websocket);
    let plan = plan(&config)?;
    let rfb = plan.listen;
    let ws = plan.websocket;
    let (listener, ws_listener) = bind(&plan).await?;
    println!("kvmux demo: three test machines behind one VNC endpoint.\n");
    for (i, (name, _)) in plan.sources.iter().enumerate() {
        println!("  {}. {name}", i + 1);
    }
    println!("\nConnect with any VNC client:");
    println!("  vncviewer {}::{}", rfb.ip(), rfb.port());
    // gtk-vnc takes HOST:DISPLAY only (port 5900 + DISPLAY).
    if let Some(display) = rfb.port().checked_sub(5900) {
        println!("  gvncviewer {}:{display}", rfb.ip());
    }
    if let Some(ws) = ws {
        println!("  noVNC: ws://{ws}/ (RFB over WebSocket, no websockify needed)");
    }
    println!("\nHotkeys:");
    for line in plan.hotkeys.describe() {
        println!("  {line}");
    }
    println!("\nStop with Ctrl+C.");
    serve_plan(plan, listener, ws_listener).await
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let config = config::Config::load(&args.config)?;
    let plan = plan(&config)?;
    if args.check {
        println!(
            "{}: OK: listening on {}{}, {} source(s):",
            args.config.display(),
            plan.listen,
            plan.websocket
                .map(|w| format!(" and WebSocket {w}"))
                .unwrap_or_default(),
            plan.sources.len()
        );
        for (i, (name, upstream)) in plan.sources.iter().enumerate() {
            println!("  {}. {name}: {}", i + 1, describe(upstream));
        }
        println!("hotkeys:");
        for line in plan.hotkeys.describe() {
            println!("  {line}");
        }
        return Ok(());
    }
    let (listener, ws_listener) = bind(&plan).await?;
    serve_plan(plan, listener, ws_listener).await
}

/// Resolves a configuration: reads password, user and certificate files, parses
/// patterns, resolves hotkeys.
pub fn plan(config: &config::Config) -> Result<Plan> {
    use config::{AuthKind, SourceKind};
    use rfb::handshake::{ClientConfig, VeNCryptSubtype};
    use rfb::net::{ConnectOptions, TlsOptions};
    let tls = match &config.listen.tls {
        Some(files) => Some(
            rfb::net::tls::server_config(&files.cert, &files.key)
                .map_err(anyhow::Error::msg)
                .context("cannot use the listener's TLS certificate")?,
        ),
        None => None,
    };
    let mut security = Vec::new();
    match &config.auth.kind {
        AuthKind::None => {
            if tls.is_some() {
                security.push(ServerSecurity::VeNCrypt {
                    subtypes: vec![VeNCryptSubtype::X509None],
                    vnc_password: None,
                    users: Vec::new(),
                });
            }
            security.push(ServerSecurity::None);
        }
        AuthKind::Password(path) => {
            let password = crate::snapshot::read_password(path)?;
            if tls.is_some() {
                security.push(ServerSecurity::VeNCrypt {
                    subtypes: vec![VeNCryptSubtype::X509Vnc],
                    vnc_password: Some(password.clone()),
                    users: Vec::new(),
                });
            }
            security.push(ServerSecurity::VncAuth { password });
        }
        AuthKind::Plain { users_file } => {
            security.push(ServerSecurity::VeNCrypt {
                subtypes: vec![VeNCryptSubtype::X509Plain],
                vnc_password: None,
                users: read_users(users_file)?,
            });
        }
    }
    let mut sources = Vec::new();
    for s in &config.sources {
        let rfb_options = |password: Option<rfb::handshake::Password>,
                           username: Option<String>,
                           ca: Option<PathBuf>| ConnectOptions {
            config: ClientConfig {
                shared: true,
                username,
                password,
                allow_tls: true,
                ..ClientConfig::default()
            },
            tls: TlsOptions {
                ca_file: ca,
                ..TlsOptions::default()
            },
            timeout: Some(Duration::from_secs(10)),
        };
        let upstream = match &s.kind {
            SourceKind::Address {
                address: (host, port),
                password_file,
                username,
                tls_ca,
            } => {
                let password = match password_file {
                    Some(p) => Some(
                        crate::snapshot::read_password(p)
                            .with_context(|| format!("source '{}'", s.name))?,
                    ),
                    None => None,
                };
                Upstream::Rfb {
                    address: vnc_address(host, *port),
                    options: rfb_options(password, username.clone(), tls_ca.clone()),
                    command: None,
                }
            }
            SourceKind::Command {
                argv,
                address: (host, port),
            } => Upstream::Rfb {
                address: vnc_address(host, *port),
                options: rfb_options(None, None, None),
                command: Some(argv.clone()),
            },
            SourceKind::Listen { addr } => Upstream::Reverse {
                listen: *addr,
                options: rfb_options(None, None, None),
            },
            SourceKind::Testsrc {
                pattern,
                width,
                height,
                name,
            } => Upstream::Builtin {
                pattern: pattern
                    .parse()
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("source '{}'", s.name))?,
                width: *width,
                height: *height,
                desktop_name: name.clone(),
                fps: 30.0,
            },
        };
        sources.push((s.name.clone(), upstream));
    }
    let names = config.source_names();
    let hotkeys = Hotkeys::new(&config.hotkeys.bindings, config.hotkeys.defaults, &names)?;
    Ok(Plan {
        listen: config.listen.rfb,
        websocket: config.listen.websocket,
        security,
        tls,
        sources,
        hotkeys,
    })
}

/// `host::port`, with IPv6 hosts in brackets.
fn vnc_address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]::{port}")
    } else {
        format!("{host}::{port}")
    }
}

/// Reads an X509Plain users file: `user:password` lines, `#` comments.
fn read_users(path: &std::path::Path) -> Result<Vec<(String, rfb::handshake::Password)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read users file {}", path.display()))?;
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(':') else {
            anyhow::bail!("{}:{}: expected 'user:password'", path.display(), i + 1);
        };
        users.push((user.to_owned(), rfb::handshake::Password::new(password)));
    }
    if users.is_empty() {
        anyhow::bail!("users file {} lists no users", path.display());
    }
    Ok(users)
}

fn describe(upstream: &Upstream) -> String {
    match upstream {
        Upstream::Rfb {
            address,
            command: Some(argv),
            ..
        } => format!("started with `{}`, at {address}", argv.join(" ")),
        Upstream::Rfb { address, .. } => format!("VNC server at {address}"),
        Upstream::Reverse { listen, .. } => format!("dials in to {listen}"),
        Upstream::Builtin {
            pattern,
            width,
            height,
            ..
        } => format!("built-in test machine ({pattern:?}, {width}x{height})"),
    }
}

async fn bind(plan: &Plan) -> Result<(TcpListener, Option<TcpListener>)> {
    let listener = TcpListener::bind(plan.listen)
        .await
        .with_context(|| format!("cannot listen on {}", plan.listen))?;
    let ws = match plan.websocket {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (websocket)"))?,
        ),
        None => None,
    };
    Ok((listener, ws))
}

async fn serve_plan(
    plan: Plan,
    listener: TcpListener,
    ws_listener: Option<TcpListener>,
) -> Result<()> {
    let (hub, inputs) = Hub::new(&plan.sources);
    for ((source, (_, upstream)), input) in hub.sources.iter().zip(plan.sources).zip(inputs) {
        source::spawn(source.clone(), upstream, input);
    }
    let accept = AcceptOptions {
        config: ServerConfig {
            security: plan.security,
            // Filled in per client from its first source.
            server_init: ServerInit {
                width: 1,
                height: 1,
                pixel_format: PixelFormat::RGB888,
                name: String::new(),
            },
            version: ProtocolVersion::V3_8,
        },
        tls: plan.tls,
        timeout: Duration::from_secs(30),
    };
    accept
        .check()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the listener's security is not usable")?;
    let shared = Arc::new(Shared {
        hub,
        hotkeys: plan.hotkeys,
        accept,
        write_timeout: Duration::from_secs(10),
        stopping: tokio::sync::watch::channel(false).0,
    });
    info!(listen = %plan.listen, websocket = ?plan.websocket, sources = shared.hub.sources.len(), "Proxy listening");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    let mut clients = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    spawn_client(&mut clients, Box::new(tcp), shared.clone(), peer.to_string());
                }
                Err(e) => warn!(error = %e, "Accept failed"),
            },
            accepted = accept_ws(ws_listener.as_ref()) => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let shared = shared.clone();
                    clients.spawn(async move {
                        match ws::accept(tcp).await {
                            Ok(stream) => run_client(Box::new(stream), shared, format!("ws:{peer}"), true).await,
                            Err(e) => warn!(%peer, reason = %e, "WebSocket handshake failed"),
                        }
                    });
                }
                Err(e) => warn!(error = %e, "Accept failed (websocket)"),
            },
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    info!(clients = clients.len(), "Shutting down");
    // Clients release what they hold on their sources and close their connections;
    // supervised commands are killed when their tasks are dropped with the runtime.
    shared.stopping.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    clients.shutdown().await;
    Ok(())
}

async fn accept_ws(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn spawn_client(
    clients: &mut tokio::task::JoinSet<()>,
    stream: BoxStream,
    shared: Arc<Shared>,
    peer: String,
) {
    clients.spawn(run_client(stream, shared, peer, false));
}

async fn run_client(stream: BoxStream, shared: Arc<Shared>, peer: String, websocket: bool) {
    info!(%peer, "Client connected");
    match client::serve(stream, shared, peer.clone(), websocket).await {
        Ok(()) => info!(%peer, "Client disconnected"),
        Err(e) => warn!(%peer, reason = %crate::one_line(&e), "Client dropped"),
    }
}
