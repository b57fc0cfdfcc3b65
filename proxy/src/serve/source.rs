//! Sources: the machines behind the proxy.
//!
//! Each source has one shared [`Frame`] (its picture, or the no-signal frame while it
//! is down) that every client watching it reads, a broadcast of [`Change`]s, and an
//! input channel to the task that drives it. The task is one of:
//! - an RFB upstream ([`run_rfb`]): a client connection to a VNC server, kept with
//!   reconnect backoff; optionally a command the proxy starts and supervises
//!   ([`supervise`]);
//! - a reverse connection ([`run_reverse`]): the source dials in;
//! - a built-in test machine ([`run_builtin`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rfb::client::{ClientEvent, ClientSession};
use rfb::decode::cursor::CursorImage;
use rfb::handshake::HandshakeError;
use rfb::messages::{
    ClientMessage, CutText, SourceInfo, SourceList, SourceState, XvpClientCode, XvpServerCode,
};
use rfb::net::{BoxStream, ConnectError, ConnectOptions};
use rfb::server::{EncodedRects, UpdateCache, UpdateKey};
use rfb::{Encoding, Framebuffer, PixelFormat, Rect};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info, warn};

use super::nosignal;
use crate::testsrc::pattern::{self, Pattern};

/// The size a source shows before it has ever connected.
pub const DEFAULT_SIZE: (u16, u16) = (1280, 800);

/// How a source is reached.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// A VNC server at `address` (`host::port`), optionally started by the proxy.
    Rfb {
        address: String,
        options: ConnectOptions,
        command: Option<Vec<String>>,
    },
    /// The source dials in to `listen` (as `x11vnc -connect` does).
    Reverse {
        listen: SocketAddr,
        options: ConnectOptions,
    },
    /// A built-in test machine.
    Builtin {
        pattern: Pattern,
        width: u16,
        height: u16,
        desktop_name: String,
        fps: f64,
    },
}

/// What clients see of a source.
pub struct Frame {
    /// The picture: the source's framebuffer while it is connected, else the
    /// no-signal frame at the last known size.
    pub fb: Framebuffer,
    /// The desktop name the source itself reports.
    pub desktop_name: String,
    pub state: SourceState,
    pub status: String,
    pub cursor: Option<CursorImage>,
    /// Changes whenever `fb`'s content does: the key for shared encodings.
    pub generation: u64,
}

/// Encoded updates of one source's frame, shared by the clients that watch it with
/// the same pixel format and encoding (encode once, send to many). Holds the current
/// and the previous generation's; one encoding per key is made, however many clients
/// ask at once.
#[derive(Default)]
pub struct EncodeCache {
    entries: Mutex<HashMap<UpdateKey, Arc<OnceLock<Arc<EncodedRects>>>>>,
}

/// Most entries kept: distinct formats and damage sets of two generations.
const CACHE_ENTRIES: usize = 256;

impl UpdateCache for EncodeCache {
    fn get_or_encode(
        &self,
        key: UpdateKey,
        encode: &mut dyn FnMut() -> EncodedRects,
    ) -> Arc<EncodedRects> {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if !entries.contains_key(&key) {
                let current = key.generation;
                entries.retain(|k, _| k.generation + 1 >= current);
                if entries.len() >= CACHE_ENTRIES {
                    entries.clear();
                }
            }
            entries.entry(key).or_default().clone()
        };
        // Another client encoding the same key is waited for, not repeated.
        cell.get_or_init(|| Arc::new(encode())).clone()
    }
}

/// A change to a source's frame, for the clients watching it.
#[derive(Debug, Clone)]
pub enum Change {
    /// These areas of the frame changed.
    Damage(Arc<[Rect]>),
    /// The frame has a new size (and all of it changed).
    Resized,
    /// The source's cursor changed.
    Cursor,
    /// The number of clients watching changed.
    Watchers,
    /// The source rang its bell.
    Bell,
    /// The source's clipboard has this text.
    CutText(Arc<str>),
}

/// Input for a source, from the client watching it.
#[derive(Debug, Clone)]
pub enum Input {
    Key {
        down: bool,
        keysym: u32,
        /// The XT scan code, when the client sent a QEMU extended key event.
        keycode: Option<u32>,
    },
    Pointer {
        buttons: u8,
        x: u16,
        y: u16,
    },
    CutText(String),
    Xvp(XvpClientCode),
}

/// One source and what clients share of it.
pub struct Source {
    pub name: String,
    frame: RwLock<Frame>,
    /// Shared encodings of the frame's updates.
    pub cache: EncodeCache,
    changes: broadcast::Sender<Change>,
    input: mpsc::Sender<Input>,
    /// Bumped whenever the state, status, size or name changes, for source lists.
    list_version: Arc<watch::Sender<u64>>,
    /// How to open another connection to the source (RFB upstreams only), for
    /// pass-through.
    connect: Option<(String, ConnectOptions)>,
    /// Clients watching the source now.
    watchers: AtomicUsize,
    /// Pass-through connections open now: while there are any, the main connection
    /// asks for no updates.
    passthroughs: watch::Sender<usize>,
}

impl Source {
    pub fn frame(&self) -> RwLockReadGuard<'_, Frame> {
        // A panic while holding the lock leaves a frame that is still a valid picture.
        self.frame.read().unwrap_or_else(|e| e.into_inner())
    }

    fn frame_mut(&self) -> RwLockWriteGuard<'_, Frame> {
        self.frame.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// A client starts watching the source; the others hear of it.
    pub fn attach(&self) {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        let _ = self.changes.send(Change::Watchers);
    }

    /// A client stops watching the source.
    pub fn detach(&self) {
        self.watchers.fetch_sub(1, Ordering::SeqCst);
        let _ = self.changes.send(Change::Watchers);
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::SeqCst)
    }

    /// Whether a second connection to the source can be opened for pass-through.
    pub fn can_pass_through(&self) -> bool {
        self.connect.is_some() && self.frame().state == SourceState::Connected
    }

    /// Sends input to the source; waits while its queue is full (back-pressure on
    /// the one client that floods it). Input for a source that is down is dropped.
    pub async fn send_input(&self, input: Input) {
        let _ = self.input.send(input).await;
    }

    pub fn info(&self) -> SourceInfo {
        let f = self.frame();
        let live = f.state == SourceState::Connected;
        SourceInfo {
            state: f.state,
            width: if live { f.fb.width() } else { 0 },
            height: if live { f.fb.height() } else { 0 },
            name: self.name.clone(),
            status: f.status.clone(),
        }
    }

    /// The DesktopName clients see while watching this source.
    pub fn title(&self) -> String {
        let f = self.frame();
        if f.desktop_name.is_empty() || f.desktop_name == self.name {
            self.name.clone()
        } else {
            format!("{}: {}", self.name, f.desktop_name)
        }
    }

    fn notify_list(&self) {
        self.list_version.send_modify(|v| *v += 1);
    }

    /// Shows the no-signal frame with this state and status.
    fn set_down(&self, state: SourceState, status: String) {
        {
            let mut f = self.frame_mut();
            if f.state == state && f.status == status {
                return;
            }
            f.state = state;
            f.status = status;
            let label = f.status.clone();
            nosignal::draw(&mut f.fb, &self.name, state, &label);
            f.fb.take_damage();
            f.generation += 1;
        }
        let _ = self.changes.send(Change::Damage(Arc::from([Rect::new(
            0,
            0,
            u16::MAX,
            u16::MAX,
        )])));
        self.notify_list();
    }
}

/// Every source, and the version of their list.
pub struct Hub {
    pub sources: Vec<Arc<Source>>,
    list_version: Arc<watch::Sender<u64>>,
}

impl Hub {
    /// Creates the sources (not yet running) and the receivers of their input.
    pub fn new(specs: &[(String, Upstream)]) -> (Hub, Vec<mpsc::Receiver<Input>>) {
        let list_version = Arc::new(watch::channel(0u64).0);
        let mut sources = Vec::new();
        let mut inputs = Vec::new();
        for (name, upstream) in specs {
            let (w, h) = match upstream {
                Upstream::Builtin { width, height, .. } => (*width, *height),
                _ => DEFAULT_SIZE,
            };
            let mut fb = Framebuffer::new(w, h);
            let status = "connecting".to_owned();
            nosignal::draw(&mut fb, name, SourceState::Connecting, &status);
            fb.take_damage();
            let (changes, _) = broadcast::channel(256);
            let (input, input_rx) = mpsc::channel(1024);
            let connect = match upstream {
                Upstream::Rfb {
                    address, options, ..
                } => Some((address.clone(), options.clone())),
                _ => None,
            };
            sources.push(Arc::new(Source {
                name: name.clone(),
                frame: RwLock::new(Frame {
                    fb,
                    desktop_name: String::new(),
                    state: SourceState::Connecting,
                    status,
                    cursor: None,
                    generation: 0,
                }),
                cache: EncodeCache::default(),
                changes,
                input,
                list_version: list_version.clone(),
                connect,
                watchers: AtomicUsize::new(0),
                passthroughs: watch::channel(0).0,
            }));
            inputs.push(input_rx);
        }
        (
            Hub {
                sources,
                list_version,
            },
            inputs,
        )
    }

    pub fn watch_list(&self) -> watch::Receiver<u64> {
        self.list_version.subscribe()
    }

    pub fn list(&self, active: usize) -> SourceList {
        SourceList {
            active: u16::try_from(active).unwrap_or(0),
            sources: self.sources.iter().map(|s| s.info()).collect(),
        }
    }
}

/// Starts the task that drives `source`.
pub fn spawn(source: Arc<Source>, upstream: Upstream, input: mpsc::Receiver<Input>) {
    match upstream {
        Upstream::Rfb {
            address,
            options,
            command,
        } => {
            if let Some(argv) = command {
                tokio::spawn(supervise(source.name.clone(), argv));
            }
            tokio::spawn(run_rfb(source, address, options, input));
        }
        Upstream::Reverse { listen, options } => {
            tokio::spawn(run_reverse(source, listen, options, input));
        }
        Upstream::Builtin {
            pattern,
            width,
            height,
            desktop_name,
            fps,
        } => {
            tokio::spawn(run_builtin(
                source,
                pattern,
                width,
                height,
                desktop_name,
                fps,
                input,
            ));
        }
    }
}

/// Exponential backoff: 0.5 s doubling to 30 s, back to the start after a minute
/// of success.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(30);
    /// Up this long counts as healthy: the next failure starts over.
    pub const HEALTHY: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt, after one that lasted `up`.
    pub fn after(&mut self, up: Duration) -> Duration {
        if up >= Self::HEALTHY {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

/// Waits `delay`, counting down in the source's status once a second, and drops
/// the input that arrives meanwhile.
async fn wait_retry(
    source: &Source,
    state: SourceState,
    reason: &str,
    delay: Duration,
    input: &mut mpsc::Receiver<Input>,
) {
    let until = tokio::time::Instant::now() + delay;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let secs = left.as_secs_f64().ceil() as u64;
        source.set_down(state, format!("retrying in {secs} s: {reason}"));
        let tick = left.min(Duration::from_secs(1));
        let sleep = tokio::time::sleep(tick);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                got = input.recv() => if got.is_none() { return },
            }
        }
    }
}

/// Connects to a VNC server and keeps the connection, forever.
async fn run_rfb(
    source: Arc<Source>,
    address: String,
    options: ConnectOptions,
    mut input: mpsc::Receiver<Input>,
) {
    let mut backoff = Backoff::new();
    loop {
        if source.frame().state != SourceState::Connected {
            source.set_down(SourceState::Connecting, format!("connecting to {address}"));
        }
        let started = Instant::now();
        let (state, reason) = match rfb::net::connect(&address, &options).await {
            Ok(conn) => {
                info!(source = %source.name, %address, "Source connected");
                let loopback = is_loopback(&address);
                let result = drive(&source, conn, loopback, &mut input).await;
                let reason = match result {
                    Ok(()) => "the server closed the connection".to_owned(),
                    Err(e) => format!("{e:#}"),
                };
                warn!(source = %source.name, %reason, "Source lost");
                (SourceState::Retrying, reason)
            }
            Err(e) => {
                let state = match &e {
                    ConnectError::Handshake(
                        HandshakeError::AuthenticationFailed { .. }
                        | HandshakeError::PasswordRequired
                        | HandshakeError::UsernameRequired,
                    ) => SourceState::AuthenticationFailed,
                    _ => SourceState::Retrying,
                };
                let reason = crate::one_line(&anyhow::Error::new(e));
                debug!(source = %source.name, %reason, "Source unreachable");
                (state, reason)
            }
        };
        let delay = backoff.after(started.elapsed());
        if state == SourceState::AuthenticationFailed {
            warn!(source = %source.name, %reason, "Source refused the proxy's credentials");
        }
        wait_retry(&source, state, &reason, delay, &mut input).await;
    }
}

/// Accepts the source's own connections (reverse VNC), one at a time.
async fn run_reverse(
    source: Arc<Source>,
    listen: SocketAddr,
    options: ConnectOptions,
    mut input: mpsc::Receiver<Input>,
) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            let reason = format!("cannot listen on {listen}: {e}");
            warn!(source = %source.name, %reason, "Reverse source unavailable");
            source.set_down(SourceState::Stopped, reason);
            // Keep draining input so clients never block on this source.
            while input.recv().await.is_some() {}
            return;
        }
    };
    loop {
        source.set_down(
            SourceState::Connecting,
            format!("waiting for the machine to connect to {listen}"),
        );
        let accepted = loop {
            tokio::select! {
                a = listener.accept() => break a,
                got = input.recv() => if got.is_none() { return },
            }
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(source = %source.name, error = %e, "Accept failed");
                tokio::time::sleep(Backoff::FIRST).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let host = peer.ip().to_string();
        match rfb::net::handshake(stream, &host, &options).await {
            Ok(conn) => {
                info!(source = %source.name, %peer, "Source dialled in");
                let loopback = peer.ip().is_loopback();
                let reason = match drive(&source, conn, loopback, &mut input).await {
                    Ok(()) => "the machine closed the connection".to_owned(),
                    Err(e) => format!("{e:#}"),
                };
                warn!(source = %source.name, %reason, "Source lost");
            }
            Err(e) => {
                warn!(source = %source.name, %peer, reason = %crate::one_line(&anyhow::Error::new(e)), "Reverse connection failed");
            }
        }
    }
}

/// Whether a VNC address names this machine.
fn is_loopback(address: &str) -> bool {
    match rfb::net::parse_vnc_address(address) {
        Ok((host, _)) => {
            host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Err(_) => false,
    }
}

/// The encodings asked of an upstream: on a loopback link, bandwidth is free and
/// the server's CPU is not, so Raw comes first; elsewhere ZRLE and Tight.
fn upstream_encodings(loopback: bool) -> Vec<Encoding> {
    let mut list = vec![Encoding::COPY_RECT];
    if loopback {
        list.extend([Encoding::RAW, Encoding::ZRLE, Encoding::HEXTILE]);
    } else {
        list.extend([
            Encoding::ZRLE,
            Encoding::TIGHT,
            Encoding::HEXTILE,
            Encoding::RAW,
        ]);
    }
    list.extend([
        Encoding::compress_level(1),
        Encoding::DESKTOP_SIZE,
        Encoding::EXTENDED_DESKTOP_SIZE,
        Encoding::DESKTOP_NAME,
        Encoding::LAST_RECT,
        Encoding::CURSOR_WITH_ALPHA,
        Encoding::CURSOR,
        Encoding::QEMU_EXTENDED_KEY_EVENT,
        Encoding::XVP,
    ]);
    list
}

/// Runs one upstream connection until it ends: updates into the source's frame,
/// input from clients to the server.
async fn drive(
    source: &Source,
    conn: rfb::net::ClientConnection,
    loopback: bool,
    input: &mut mpsc::Receiver<Input>,
) -> Result<()> {
    let mut session = ClientSession::new(&conn.init);
    // The session decodes straight into the source's shared frame, which it borrows
    // for each feed (see `feed`): one copy of the picture per source. Its own
    // framebuffer is an empty stand-in the rest of the time.
    *session.framebuffer_mut() = Framebuffer::new(0, 0);
    let mut size = (conn.init.width, conn.init.height);
    {
        let mut f = source.frame_mut();
        if (f.fb.width(), f.fb.height()) != size {
            f.fb.resize(size.0, size.1);
        }
    }
    let whole = |(w, h): (u16, u16)| Some(Rect::new(0, 0, w, h));
    let (mut reader, mut writer) = tokio::io::split::<BoxStream>(conn.stream);
    let mut out = Vec::new();
    session
        .set_pixel_format(PixelFormat::RGB888, &mut out)
        .context("cannot set the pixel format")?;
    session.set_encodings(&upstream_encodings(loopback), &mut out);
    session.request_update(false, whole(size), &mut out);
    feed(source, &mut session, &conn.leftover)?;
    let mut qemu_keys = false;
    let mut xvp = false;
    let mut first_frame = true;
    let mut resized = false;
    // While a client takes the source's updates through a pass-through connection of
    // its own, this one asks for none; when that ends, it asks for the whole screen.
    let mut paused = source.passthroughs.subscribe();
    let mut request_owed = false;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::UpdateComplete => {
                    publish(source, first_frame || resized);
                    first_frame = false;
                    resized = false;
                    if *paused.borrow() > 0 {
                        request_owed = true;
                    } else {
                        session.request_update(true, whole(size), &mut out);
                    }
                }
                ClientEvent::Resized { width, height, .. } => {
                    size = (width, height);
                    resized = true;
                }
                ClientEvent::DesktopName(name) => {
                    source.frame_mut().desktop_name = name;
                    source.notify_list();
                }
                ClientEvent::Cursor(image) => {
                    source.frame_mut().cursor = Some(image);
                    let _ = source.changes.send(Change::Cursor);
                }
                ClientEvent::QemuExtendedKeyEventSupported => qemu_keys = true,
                ClientEvent::Bell => {
                    let _ = source.changes.send(Change::Bell);
                }
                ClientEvent::CutText(latin1) => {
                    let text: String = latin1.iter().map(|&b| char::from(b)).collect();
                    let _ = source.changes.send(Change::CutText(Arc::from(text)));
                }
                ClientEvent::Clipboard(rfb::messages::ClipboardMessage::Provide {
                    text: Some(text),
                    ..
                }) => {
                    let _ = source.changes.send(Change::CutText(Arc::from(text)));
                }
                ClientEvent::Xvp {
                    code: XvpServerCode::Init,
                    ..
                } => xvp = true,
                ClientEvent::Xvp {
                    code: XvpServerCode::Fail,
                    ..
                } => warn!(source = %source.name, "The source refused a power action"),
                _ => {}
            }
        }
        if !out.is_empty() {
            writer.write_all(&out).await.context("write failed")?;
            out.clear();
        }
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = read.context("read failed")?;
                if n == 0 {
                    return Ok(());
                }
                feed(source, &mut session, &buf[..n])?;
            }
            got = input.recv() => {
                let Some(event) = got else { bail!("the proxy is stopping") };
                write_input(event, qemu_keys, xvp, size, &mut out);
            }
            changed = paused.changed() => {
                if changed.is_ok() && *paused.borrow() == 0 && request_owed {
                    request_owed = false;
                    session.request_update(false, whole(size), &mut out);
                }
            }
        }
    }
}

fn write_input(event: Input, qemu_keys: bool, xvp: bool, size: (u16, u16), out: &mut Vec<u8>) {
    let msg = match event {
        Input::Key {
            down,
            keysym,
            keycode: Some(keycode),
        } if qemu_keys => ClientMessage::QemuExtendedKeyEvent {
            down,
            keysym,
            keycode,
        },
        Input::Key { down, keysym, .. } => ClientMessage::KeyEvent { down, keysym },
        Input::Pointer { buttons, x, y } => ClientMessage::PointerEvent {
            buttons,
            x: x.min(size.0.saturating_sub(1)),
            y: y.min(size.1.saturating_sub(1)),
        },
        Input::CutText(text) => ClientMessage::ClientCutText(CutText::Latin1(
            text.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
        )),
        Input::Xvp(code) if xvp => ClientMessage::Xvp { version: 1, code },
        Input::Xvp(_) => return,
    };
    msg.write(out);
}

/// What a pass-through connection hands its client.
#[derive(Debug)]
pub enum Forward {
    /// Complete server messages, to be written to the client as they are.
    Bytes(Vec<u8>),
    /// A FramebufferUpdate ended with the bytes before this.
    UpdateDone,
}

/// A connection of one client's own to an RFB source, whose server messages are
/// forwarded to the client unchanged (no decoding, no encoding): opened when exactly
/// one client watches the source and that client takes kvmux's zlib-stream-reset.
/// The upstream speaks the client's pixel format and encodings; the first update
/// forwarded carries a zlib-stream-reset, since this connection's zlib streams start
/// where the client's inflaters do not. Dropping it closes the connection and lets
/// the main connection ask for updates again.
pub struct PassThrough {
    /// Ask the upstream for an update (the client has asked for one).
    pub request: mpsc::Sender<()>,
    /// Messages for the client; closed when the connection ends.
    pub forward: mpsc::Receiver<Forward>,
    task: tokio::task::JoinHandle<()>,
    source: Arc<Source>,
}

impl Drop for PassThrough {
    fn drop(&mut self) {
        self.task.abort();
        self.source
            .passthroughs
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The encodings a pass-through connection may ask for: the client's, except those
/// the proxy must see itself (the desktop name is the proxy's, resizes go through
/// the main connection) or cannot frame.
fn passthrough_encodings(client: &[Encoding]) -> Vec<Encoding> {
    client
        .iter()
        .copied()
        .filter(|e| {
            matches!(
                *e,
                Encoding::RAW
                    | Encoding::COPY_RECT
                    | Encoding::RRE
                    | Encoding::CORRE
                    | Encoding::HEXTILE
                    | Encoding::ZLIB
                    | Encoding::TIGHT
                    | Encoding::TRLE
                    | Encoding::ZRLE
                    | Encoding::CURSOR
                    | Encoding::CURSOR_WITH_ALPHA
                    | Encoding::LAST_RECT
            ) || (-32..=-23).contains(&e.0)
                || (-256..=-247).contains(&e.0)
        })
        .collect()
}

/// Opens a pass-through connection for a client with this pixel format and these
/// encodings; `None` if the source is not an RFB upstream.
pub fn pass_through(
    source: &Arc<Source>,
    format: PixelFormat,
    client_encodings: &[Encoding],
) -> Option<PassThrough> {
    let (address, options) = source.connect.clone()?;
    let encodings = passthrough_encodings(client_encodings);
    let (request, request_rx) = mpsc::channel(4);
    let (forward_tx, forward) = mpsc::channel(16);
    source.passthroughs.send_modify(|n| *n += 1);
    let name = source.name.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = run_pass_through(
            &address, &options, format, &encodings, request_rx, forward_tx,
        )
        .await
        {
            info!(source = %name, reason = %crate::one_line(&e), "Pass-through ended");
        }
    });
    Some(PassThrough {
        request,
        forward,
        task,
        source: source.clone(),
    })
}

async fn run_pass_through(
    address: &str,
    options: &ConnectOptions,
    format: PixelFormat,
    encodings: &[Encoding],
    mut request: mpsc::Receiver<()>,
    forward: mpsc::Sender<Forward>,
) -> Result<()> {
    let conn = rfb::net::connect(address, options).await?;
    let mut session = ClientSession::new(&conn.init);
    session.set_skip_pixels(true);
    let (mut reader, mut writer) = tokio::io::split::<BoxStream>(conn.stream);
    let mut out = Vec::new();
    session
        .set_pixel_format(format, &mut out)
        .context("the client's pixel format")?;
    session.set_encodings(encodings, &mut out);
    writer.write_all(&out).await?;
    out.clear();
    // Bytes received and not yet forwarded start at stream offset `forwarded`.
    let mut pending: Vec<u8> = Vec::new();
    let mut forwarded: u64 = 0;
    session.feed(&conn.leftover)?;
    pending.extend_from_slice(&conn.leftover);
    let mut first_update = true;
    let mut outstanding = false;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        // Forward every complete message; the first update also resets the client's
        // zlib streams.
        let boundary = session.message_boundary();
        if boundary > forwarded {
            let n = (boundary - forwarded) as usize;
            let mut chunk: Vec<u8> = pending.drain(..n).collect();
            forwarded = boundary;
            if first_update {
                first_update = !insert_zlib_reset(&mut chunk);
            }
            if forward.send(Forward::Bytes(chunk)).await.is_err() {
                return Ok(());
            }
        }
        while let Some(event) = session.poll_event() {
            if let ClientEvent::UpdateComplete = event {
                outstanding = false;
                session.framebuffer_mut().take_damage();
                if forward.send(Forward::UpdateDone).await.is_err() {
                    return Ok(());
                }
            }
        }
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = read.context("read failed")?;
                if n == 0 {
                    bail!("the server closed the connection");
                }
                session.feed(&buf[..n])?;
                pending.extend_from_slice(&buf[..n]);
            }
            asked = request.recv() => {
                if asked.is_none() {
                    return Ok(());
                }
                if !outstanding {
                    outstanding = true;
                    // The first request is for everything: the client must not miss
                    // what changed before this connection existed.
                    session.request_update(!first_update, None, &mut out);
                    writer.write_all(&out).await?;
                    out.clear();
                }
            }
        }
    }
}

/// Puts a zlib-stream-reset pseudo-rectangle at the front of the first
/// FramebufferUpdate in `chunk` (complete messages); returns whether there was one.
fn insert_zlib_reset(chunk: &mut Vec<u8>) -> bool {
    use rfb::messages::{Limits, RectHeader, ServerMessage};
    let mut at = 0;
    while at < chunk.len() {
        match ServerMessage::parse(&chunk[at..], &Limits::default()) {
            Ok((ServerMessage::FramebufferUpdate { rectangles }, used)) => {
                let count = if rectangles == u16::MAX {
                    // LastRect-terminated: the count stays "unknown".
                    u16::MAX
                } else if rectangles < u16::MAX - 1 {
                    rectangles + 1
                } else {
                    return false;
                };
                chunk[at + 2..at + 4].copy_from_slice(&count.to_be_bytes());
                let mut reset = Vec::with_capacity(12);
                RectHeader {
                    rect: Rect::default(),
                    encoding: Encoding::KVMUX_ZLIB_RESET,
                }
                .write(&mut reset);
                let insert_at = at + used;
                chunk.splice(insert_at..insert_at, reset);
                return true;
            }
            // Other messages (Bell, cut text, colour maps) come whole: skip them.
            Ok((_, used)) => at += used,
            Err(_) => return false,
        }
    }
    false
}

/// Feeds upstream bytes to `session`, which decodes them into the source's frame
/// (lent to it under the frame's write lock).
fn feed(
    source: &Source,
    session: &mut ClientSession,
    data: &[u8],
) -> Result<(), rfb::ProtocolError> {
    let mut f = source.frame_mut();
    std::mem::swap(session.framebuffer_mut(), &mut f.fb);
    let result = session.feed(data);
    std::mem::swap(session.framebuffer_mut(), &mut f.fb);
    // The content may have changed: encodings shared under the old generation are
    // not reused for it.
    f.generation += 1;
    result
}

/// An update is complete in the source's frame: tells the clients what changed.
/// `whole`: the picture is new (the first update, or after a resize).
fn publish(source: &Source, whole: bool) {
    let (damage, was_down) = {
        let mut f = source.frame_mut();
        let was_down = f.state != SourceState::Connected;
        let damage = f.fb.take_damage();
        f.generation += 1;
        f.state = SourceState::Connected;
        f.status.clear();
        (damage, was_down)
    };
    if was_down || whole {
        // The size, and all of the picture, may be new.
        let _ = source.changes.send(Change::Resized);
        source.notify_list();
    } else if !damage.is_empty() {
        let _ = source
            .changes
            .send(Change::Damage(Arc::from(damage.rects())));
    }
}

/// A built-in test machine: a pattern, animated if it is the clock; input is logged
/// at debug level.
async fn run_builtin(
    source: Arc<Source>,
    pattern: Pattern,
    width: u16,
    height: u16,
    desktop_name: String,
    fps: f64,
    mut input: mpsc::Receiver<Input>,
) {
    let image = match &pattern {
        Pattern::Image(path) => match pattern::load_png(path) {
            Ok(image) => Some(image),
            Err(e) => {
                source.set_down(SourceState::Stopped, format!("{e:#}"));
                while input.recv().await.is_some() {}
                return;
            }
        },
        _ => None,
    };
    let (width, height) = match &image {
        Some((w, h, _)) => (*w, *h),
        None => (width, height),
    };
    {
        let mut f = source.frame_mut();
        f.fb.resize(width, height);
        pattern::draw(&mut f.fb, &pattern, &desktop_name, image.as_ref());
        f.fb.take_damage();
        f.desktop_name = desktop_name;
        f.generation += 1;
        f.state = SourceState::Connected;
        f.status.clear();
    }
    let _ = source.changes.send(Change::Resized);
    source.notify_list();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / fps.clamp(0.1, 1000.0)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let animated = pattern::Animator::moves(&pattern);
    let mut animator = pattern::Animator::new();
    loop {
        tokio::select! {
            _ = ticker.tick(), if animated => {
                let damage = {
                    let mut f = source.frame_mut();
                    let damage = animator.step(&pattern, &mut f.fb);
                    f.fb.take_damage();
                    f.generation += 1;
                    damage
                };
                let _ = source.changes.send(Change::Damage(Arc::from(damage)));
            }
            got = input.recv() => match got {
                Some(event) => debug!(source = %source.name, ?event, "Input"),
                None => return,
            },
        }
    }
}

/// Starts `argv` and keeps it running: restarts with backoff when it exits, its
/// stderr lines logged under the source's name. The child is killed when the proxy
/// stops (the task is dropped with the runtime).
async fn supervise(name: String, argv: Vec<String>) {
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        let reason = match run_child(&name, &argv).await {
            Ok(status) => format!("exited with {status}"),
            Err(e) => format!("{e:#}"),
        };
        let delay = backoff.after(started.elapsed());
        warn!(source = %name, command = %argv.join(" "), %reason, restart_in = ?delay, "Source command stopped; restarting");
        tokio::time::sleep(delay).await;
    }
}

async fn run_child(name: &str, argv: &[String]) -> Result<std::process::ExitStatus> {
    let Some((program, args)) = argv.split_first() else {
        bail!("empty command");
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    info!(source = %name, command = %argv.join(" "), pid = child.id(), "Source command started");
    if let Some(stderr) = child.stderr.take() {
        let name = name.to_owned();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                info!(source = %name, "{line}");
            }
        });
    }
    Ok(child.wait().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets_after_a_healthy_minute() {
        let mut b = Backoff::new();
        let short = Duration::from_secs(1);
        let delays: Vec<f64> = (0..9).map(|_| b.after(short).as_secs_f64()).collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(b.after(Duration::from_secs(61)), Duration::from_millis(500));
        assert_eq!(b.after(short), Duration::from_secs(1));
    }

    #[test]
    fn zlib_reset_goes_into_the_first_update_after_other_messages() {
        // A Bell, then an update of one 1x1 Raw rectangle.
        let mut chunk = vec![
            2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 9, 9, 9, 0,
        ];
        assert!(insert_zlib_reset(&mut chunk));
        assert_eq!(
            chunk,
            [
                2, // Bell
                0, 0, 0, 2, // the update, now of two rectangles
                0, 0, 0, 0, 0, 0, 0, 0, 0x4b, 0x56, 0x4d, 0x01, // the reset
                0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 9, 9, 9, 0, // the Raw rectangle
            ]
        );
        // No update in the chunk: nothing to do yet.
        let mut bell = vec![2];
        assert!(!insert_zlib_reset(&mut bell));
        assert_eq!(bell, [2]);
    }
}
