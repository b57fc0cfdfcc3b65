//! One VNC connection, driven on its own thread: no GTK here.
//!
//! [`Connection::open`] starts a thread with a single-threaded tokio runtime that
//! connects ([`rfb::net::connect`]), runs an [`rfb::client::ClientSession`] and owns its
//! framebuffer. The GTK side talks to it through [`Command`]s and hears back through
//! [`Event`]s; finished frames do not travel through the event queue but through a
//! one-frame slot ([`FrameSlot`]): when the GTK thread is slower than the server, older
//! frames are replaced, never queued, and the viewer always paints the newest one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rfb::client::{ClientEvent, ClientSession};
use rfb::handshake::{ClientConfig, HandshakeError, Password};
use rfb::messages::{
    ClientMessage, ClipboardMessage, CutText, SelectAction, SourceList, XvpClientCode,
    XvpServerCode,
};
use rfb::net::{ConnectError, ConnectOptions, TlsOptions};
use rfb::{Encoding, PixelFormat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What to connect to and how.
#[derive(Clone, Default)]
pub struct ConnectionSettings {
    /// A VNC address: `HOST`, `HOST:DISPLAY`, `HOST::PORT`, `[IPv6]::PORT`.
    pub address: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA certificate (PEM) for VeNCrypt X509; the system's roots without it.
    pub tls_ca: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    pub tls_insecure: bool,
    /// JPEG quality 0-9 when lossy encodings are allowed.
    pub quality: u8,
    /// Let the server send lossy (JPEG) rectangles.
    pub lossy: bool,
    /// Encodings in order of preference; empty means the default list.
    pub encodings: Vec<Encoding>,
}

impl std::fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSettings")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "MASKED"))
            .field("tls_ca", &self.tls_ca)
            .field("quality", &self.quality)
            .field("lossy", &self.lossy)
            .finish_non_exhaustive()
    }
}

/// The encodings asked for when none are given: Tight first (it sends solid areas as
/// fills and photos as JPEG when allowed), then the other lossless ones.
pub const DEFAULT_ENCODINGS: &[Encoding] = &[
    Encoding::TIGHT,
    Encoding::ZRLE,
    Encoding::HEXTILE,
    Encoding::ZLIB,
    Encoding::TRLE,
    Encoding::COPY_RECT,
    Encoding::CORRE,
    Encoding::RRE,
    Encoding::RAW,
];

impl ConnectionSettings {
    /// The SetEncodings list: encodings, then the pseudo-encodings the widget handles.
    pub fn encoding_list(&self) -> Vec<Encoding> {
        let mut list = if self.encodings.is_empty() {
            DEFAULT_ENCODINGS.to_vec()
        } else {
            self.encodings.clone()
        };
        if self.lossy {
            list.push(Encoding::jpeg_quality(self.quality.min(9)));
        }
        list.extend([
            Encoding::compress_level(1),
            Encoding::DESKTOP_SIZE,
            Encoding::EXTENDED_DESKTOP_SIZE,
            Encoding::LAST_RECT,
            Encoding::DESKTOP_NAME,
            Encoding::CURSOR_WITH_ALPHA,
            Encoding::CURSOR,
            Encoding::QEMU_EXTENDED_KEY_EVENT,
            Encoding::EXTENDED_CLIPBOARD,
            Encoding::XVP,
            Encoding::KVMUX_ZLIB_RESET,
            Encoding::KVMUX_SOURCES,
        ]);
        list
    }
}

/// A finished frame: the whole framebuffer as B8G8R8A8 (opaque), row after row.
pub struct Frame {
    pub width: u16,
    pub height: u16,
    /// Bytes per row.
    pub stride: usize,
    pub data: FrameBytes,
}

/// A frame buffer given back for reuse, and the frame it shows.
struct SpareFrame {
    data: Vec<u8>,
    serial: u64,
    size: (u16, u16),
}

/// Frame buffers given back for reuse.
type Spare = Arc<Mutex<Vec<SpareFrame>>>;

/// How many given-back frame buffers are kept.
const SPARE_FRAMES: usize = 3;

/// How many frames' damage [`Frames`] remembers: a buffer given back within that many
/// frames is brought up to date by copying what changed since, an older one whole.
const DAMAGE_HISTORY: usize = 8;

/// A frame's bytes. When the GTK side drops the picture made of them they go back to
/// the connection for a later frame, so that frames reuse memory rather than fault in
/// fresh zeroed pages every time, and only what changed since is copied into them;
/// once the connection has ended they are freed.
pub struct FrameBytes {
    data: Vec<u8>,
    /// The frame these bytes show ([`Frames`] numbers them).
    serial: u64,
    size: (u16, u16),
    spare: std::sync::Weak<Mutex<Vec<SpareFrame>>>,
}

/// Makes frames of the framebuffer, reusing given-back buffers.
#[derive(Default)]
struct Frames {
    spare: Spare,
    /// The latest frames' damage, oldest first.
    history: std::collections::VecDeque<(u64, Vec<rfb::Rect>)>,
    /// The last frame made.
    serial: u64,
    /// Buffers of this frame or older are copied whole (the desktop was resized since).
    floor: u64,
}

impl Frames {
    /// The framebuffer as a frame; `damage` is what changed since the last one.
    fn make(&mut self, fb: &rfb::Framebuffer, damage: &rfb::Damage) -> Frame {
        self.serial += 1;
        self.history
            .push_back((self.serial, damage.rects().to_vec()));
        while self.history.len() > DAMAGE_HISTORY {
            self.history.pop_front();
        }
        let size = (fb.width(), fb.height());
        // The newest given-back buffer of this size: the least to copy.
        let reused = self.spare.lock().ok().and_then(|mut spare| {
            let i = (0..spare.len())
                .filter(|&i| spare[i].size == size)
                .max_by_key(|&i| spare[i].serial)?;
            Some(spare.swap_remove(i))
        });
        // Copying what changed in several frames may add up to more than the frame.
        let area = usize::from(size.0) * usize::from(size.1);
        let changed = reused
            .as_ref()
            .and_then(|r| self.changed_since(r.serial))
            .filter(|rects| rects.iter().map(|r| r.area()).sum::<usize>() < area);
        let mut data = reused.map(|r| r.data).unwrap_or_default();
        match changed {
            Some(rects) => {
                for rect in rects {
                    copy_rect(fb, rect, &mut data);
                }
            }
            None => {
                data.resize(fb.pixels().len() * 4, 0);
                copy_rect(fb, rfb::Rect::new(0, 0, size.0, size.1), &mut data);
            }
        }
        Frame {
            width: size.0,
            height: size.1,
            stride: usize::from(size.0) * 4,
            data: FrameBytes {
                data,
                serial: self.serial,
                size,
                spare: Arc::downgrade(&self.spare),
            },
        }
    }

    /// What changed in the frames after `serial`, if the history still holds them all.
    fn changed_since(&self, serial: u64) -> Option<Vec<rfb::Rect>> {
        let oldest = self.history.front()?.0;
        if serial <= self.floor || serial + 1 < oldest {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|(s, _)| *s > serial)
                .flat_map(|(_, rects)| rects.iter().copied())
                .collect(),
        )
    }

    /// The desktop changed size: buffers made before are copied whole.
    fn resized(&mut self) {
        self.floor = self.serial;
    }
}

/// Copies `rect` of the framebuffer into a frame buffer of its size as opaque B8G8R8A8
/// (canonical `0x00RRGGBB` pixels are B, G, R, 0 in little-endian memory: only alpha
/// is set). Parts outside the framebuffer are left out.
fn copy_rect(fb: &rfb::Framebuffer, rect: rfb::Rect, data: &mut [u8]) {
    let stride = usize::from(fb.width());
    let x0 = usize::from(rect.x).min(stride);
    let x1 = (usize::from(rect.x) + usize::from(rect.width)).min(stride);
    let rows = usize::from(fb.height());
    let y0 = usize::from(rect.y).min(rows);
    let y1 = (usize::from(rect.y) + usize::from(rect.height)).min(rows);
    let pixels = fb.pixels();
    for y in y0..y1 {
        let (from, to) = (y * stride + x0, y * stride + x1);
        let (Some(src), Some(dst)) = (pixels.get(from..to), data.get_mut(from * 4..to * 4)) else {
            return;
        };
        for (bytes, p) in dst.chunks_exact_mut(4).zip(src) {
            bytes.copy_from_slice(&(p | 0xff00_0000).to_le_bytes());
        }
    }
}

impl AsRef<[u8]> for FrameBytes {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl AsMut<[u8]> for FrameBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Drop for FrameBytes {
    fn drop(&mut self) {
        if let Some(spare) = self.spare.upgrade() {
            if let Ok(mut spare) = spare.lock() {
                if spare.len() < SPARE_FRAMES {
                    spare.push(SpareFrame {
                        data: std::mem::take(&mut self.data),
                        serial: self.serial,
                        size: self.size,
                    });
                }
            }
        }
    }
}

/// The newest frame not yet taken by the GTK thread.
pub type FrameSlot = Arc<Mutex<Option<Frame>>>;

/// Which credentials the server asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Password,
    Username,
}

/// Why a connection ended, in the classes a user needs told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nobody listens there (or the host is unreachable).
    Refused(String),
    /// The server turned the credentials down.
    AuthenticationFailed(String),
    /// The connection was up and broke (or the server closed it).
    Lost(String),
    /// Anything else: protocol errors, TLS, bad addresses.
    Other(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Refused(m)
            | Failure::AuthenticationFailed(m)
            | Failure::Lost(m)
            | Failure::Other(m) => m,
        }
    }
}

/// From the connection thread to the GTK thread.
#[derive(Debug)]
pub enum Event {
    /// The handshake is done; the desktop is this size.
    Initialized {
        width: u16,
        height: u16,
        name: String,
    },
    /// The server wants credentials: answer with [`Command::Credentials`].
    AuthCredential(Vec<Credential>),
    /// A new frame is in the slot.
    Frame,
    Resized {
        width: u16,
        height: u16,
    },
    DesktopName(String),
    /// A cursor shape, straight RGBA, and its hotspot.
    Cursor {
        width: u16,
        height: u16,
        hotspot: (u16, u16),
        rgba: Vec<u8>,
    },
    /// Text the server put on its clipboard.
    CutText(String),
    Bell,
    /// The server accepts xvp power requests.
    PowerAvailable,
    /// The server accepts QEMU extended key events (scancodes).
    ScancodesAvailable,
    /// A kvmux proxy's sources and which one this connection shows.
    Sources(SourceList),
    /// The connection ended; nothing follows.
    Closed(Failure),
}

/// From the GTK thread to the connection thread.
#[derive(Debug)]
pub enum Command {
    Credentials {
        username: Option<String>,
        password: String,
    },
    Key {
        down: bool,
        keysym: u32,
        /// QEMU scancode, sent with an extended key event when the server takes them.
        scancode: Option<u32>,
    },
    Pointer {
        buttons: u8,
        x: u16,
        y: u16,
    },
    /// The local clipboard now holds this text.
    Clipboard(String),
    Power(XvpClientCode),
    /// Ask a kvmux proxy to switch source (ignored unless the server sent a source list).
    SelectSource(SelectAction),
    /// Ask the server for a whole frame.
    Refresh,
    Close,
}

/// Handle to a running connection thread; dropping it closes the connection.
pub struct Connection {
    commands: mpsc::UnboundedSender<Command>,
    frames: FrameSlot,
}

impl Connection {
    /// Starts connecting on a new thread. Events arrive on `events` until
    /// [`Event::Closed`].
    pub fn open(
        settings: ConnectionSettings,
        events: async_channel::Sender<Event>,
    ) -> std::io::Result<Connection> {
        let (commands, receiver) = mpsc::unbounded_channel();
        let frames = FrameSlot::default();
        let slot = Arc::clone(&frames);
        std::thread::Builder::new()
            .name(format!("vnc {}", settings.address))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let failure = Failure::Other(format!("cannot start the runtime: {e}"));
                        let _ = events.send_blocking(Event::Closed(failure));
                        return;
                    }
                };
                let failure = runtime.block_on(run(settings, receiver, &events, &slot));
                tracing::info!(?failure, "Connection ended");
                let _ = events.send_blocking(Event::Closed(failure));
            })?;
        Ok(Connection { commands, frames })
    }

    pub fn send(&self, command: Command) {
        // A closed thread has already reported why.
        let _ = self.commands.send(command);
    }

    /// Takes the newest frame, if one arrived since the last call.
    pub fn take_frame(&self) -> Option<Frame> {
        self.frames.lock().ok()?.take()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// Classifies a connection failure.
fn connect_failure(e: &ConnectError) -> Failure {
    match e {
        ConnectError::Connect { .. } => Failure::Refused(e.to_string()),
        ConnectError::Handshake(HandshakeError::AuthenticationFailed { .. }) => {
            Failure::AuthenticationFailed(e.to_string())
        }
        _ => Failure::Other(e.to_string()),
    }
}

async fn run(
    mut settings: ConnectionSettings,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: &async_channel::Sender<Event>,
    frames: &FrameSlot,
) -> Failure {
    // Connect, asking for credentials as often as the server wants them.
    let conn = loop {
        let options = ConnectOptions {
            config: ClientConfig {
                shared: true,
                username: settings.username.clone(),
                password: settings.password.clone().map(Password::new),
                allow_tls: true,
                ..ClientConfig::default()
            },
            tls: TlsOptions {
                ca_file: settings.tls_ca.clone(),
                insecure_skip_verify: settings.tls_insecure,
                ..TlsOptions::default()
            },
            timeout: Some(Duration::from_secs(15)),
        };
        let needed = match rfb::net::connect(&settings.address, &options).await {
            Ok(conn) => break conn,
            Err(ConnectError::Handshake(HandshakeError::PasswordRequired)) => {
                vec![Credential::Password]
            }
            Err(ConnectError::Handshake(HandshakeError::UsernameRequired)) => {
                vec![Credential::Username, Credential::Password]
            }
            Err(e) => return connect_failure(&e),
        };
        if events.send(Event::AuthCredential(needed)).await.is_err() {
            return Failure::Other("closed".into());
        }
        loop {
            match commands.recv().await {
                Some(Command::Credentials { username, password }) => {
                    settings.username = username.or(settings.username.take());
                    settings.password = Some(password);
                    break;
                }
                Some(Command::Close) | None => return Failure::Other("closed".into()),
                Some(_) => {}
            }
        }
    };
    tracing::info!(address = %settings.address, security = ?conn.security, "Connected");

    let mut session = ClientSession::new(&conn.init);
    // JPEG rectangles of one update decode side by side, as many as there are cores.
    session.set_decode_threads(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4),
    );
    let (mut reader, mut writer) = tokio::io::split(conn.stream);
    let mut out = Vec::new();
    if let Err(e) = session.set_pixel_format(PixelFormat::RGB888, &mut out) {
        return Failure::Other(format!("cannot use rgb888: {e}"));
    }
    session.set_encodings(&settings.encoding_list(), &mut out);
    session.request_update(false, None, &mut out);
    let _ = events
        .send(Event::Initialized {
            width: conn.init.width,
            height: conn.init.height,
            name: conn.init.name.clone(),
        })
        .await;
    let mut state = SessionState::default();
    if let Err(e) = session.feed(&conn.leftover) {
        return Failure::Other(e.to_string());
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        while let Some(event) = session.poll_event() {
            state
                .apply(event, &mut session, &mut out, events, frames)
                .await;
        }
        if !out.is_empty() {
            if let Err(e) = writer.write_all(&out).await {
                return Failure::Lost(format!("connection lost: {e}"));
            }
            out.clear();
        }
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => return Failure::Lost("connection lost: the server closed the connection".into()),
                Ok(n) => {
                    if let Err(e) = session.feed(&buf[..n]) {
                        return Failure::Other(e.to_string());
                    }
                }
                Err(e) => return Failure::Lost(format!("connection lost: {e}")),
            },
            command = commands.recv() => match command {
                None | Some(Command::Close) => return Failure::Other("closed".into()),
                Some(command) => state.command(command, &session, &mut out),
            },
        }
    }
}

/// What the connection knows about the server beyond the session itself.
#[derive(Default)]
struct SessionState {
    scancodes: bool,
    /// The server speaks ExtendedClipboard (it sent its caps).
    extended_clipboard: bool,
    /// Local clipboard text announced to the server, sent when it asks.
    local_clipboard: Option<String>,
    frames_sent: u64,
    /// The server sent a kvmux source list: it takes message 75.
    kvmux_proxy: bool,
    frames: Frames,
}

/// The largest clipboard text sent or announced.
const MAX_CLIPBOARD: u32 = 1 << 20;

impl SessionState {
    async fn apply(
        &mut self,
        event: ClientEvent,
        session: &mut ClientSession,
        out: &mut Vec<u8>,
        events: &async_channel::Sender<Event>,
        frames: &FrameSlot,
    ) {
        let event = match event {
            ClientEvent::UpdateStarted => {
                // Ask for the next update as this one begins: the server prepares it
                // while this one is read and decoded, with at most one in flight.
                session.request_update(true, None, out);
                return;
            }
            ClientEvent::UpdateComplete => {
                let fb = session.framebuffer_mut();
                let damage = fb.take_damage();
                if damage.is_empty() {
                    return;
                }
                let frame = self.frames.make(fb, &damage);
                let was_empty = match frames.lock() {
                    Ok(mut slot) => slot.replace(frame).is_none(),
                    Err(_) => return,
                };
                self.frames_sent += 1;
                if !was_empty {
                    // The GTK thread has not taken the last one yet: it will take this.
                    return;
                }
                Event::Frame
            }
            ClientEvent::Resized { width, height, .. } => {
                self.frames.resized();
                Event::Resized { width, height }
            }
            ClientEvent::DesktopName(name) => Event::DesktopName(name),
            ClientEvent::Cursor(cursor) => Event::Cursor {
                width: cursor.width,
                height: cursor.height,
                hotspot: (cursor.hotspot_x, cursor.hotspot_y),
                rgba: cursor.rgba,
            },
            ClientEvent::Bell => Event::Bell,
            ClientEvent::CutText(latin1) => {
                Event::CutText(latin1.iter().map(|&b| char::from(b)).collect())
            }
            ClientEvent::Clipboard(message) => match self.clipboard(message, out) {
                Some(text) => Event::CutText(text),
                None => return,
            },
            ClientEvent::Xvp {
                code: XvpServerCode::Init,
                ..
            } => Event::PowerAvailable,
            ClientEvent::QemuExtendedKeyEventSupported => {
                self.scancodes = true;
                Event::ScancodesAvailable
            }
            ClientEvent::Sources(list) => {
                self.kvmux_proxy = true;
                Event::Sources(list)
            }
            ClientEvent::ZlibStreamsReset => {
                tracing::debug!("zlib streams reset by the server");
                return;
            }
            other => {
                tracing::trace!(event = ?other, "unhandled server event");
                return;
            }
        };
        let _ = events.send(event).await;
    }

    /// Answers an ExtendedClipboard message; returns text the server provided.
    fn clipboard(&mut self, message: ClipboardMessage, out: &mut Vec<u8>) -> Option<String> {
        let write = |message: ClipboardMessage, out: &mut Vec<u8>| {
            ClientMessage::ClientCutText(CutText::Extended(message)).write(out)
        };
        match message {
            ClipboardMessage::Caps { .. } => {
                self.extended_clipboard = true;
                write(
                    ClipboardMessage::Caps {
                        formats: ClipboardMessage::TEXT
                            | ClipboardMessage::REQUEST
                            | ClipboardMessage::PEEK
                            | ClipboardMessage::NOTIFY
                            | ClipboardMessage::PROVIDE,
                        max_sizes: vec![MAX_CLIPBOARD],
                    },
                    out,
                );
                None
            }
            ClipboardMessage::Notify { formats } if formats & ClipboardMessage::TEXT != 0 => {
                write(
                    ClipboardMessage::Request {
                        formats: ClipboardMessage::TEXT,
                    },
                    out,
                );
                None
            }
            ClipboardMessage::Request { formats } if formats & ClipboardMessage::TEXT != 0 => {
                let text = self.local_clipboard.clone();
                write(
                    ClipboardMessage::Provide {
                        text,
                        other: Vec::new(),
                    },
                    out,
                );
                None
            }
            ClipboardMessage::Peek => {
                let formats = if self.local_clipboard.is_some() {
                    ClipboardMessage::TEXT
                } else {
                    0
                };
                write(ClipboardMessage::Notify { formats }, out);
                None
            }
            ClipboardMessage::Provide { text, .. } => text,
            _ => None,
        }
    }

    fn command(&mut self, command: Command, session: &ClientSession, out: &mut Vec<u8>) {
        match command {
            Command::Key {
                down,
                keysym,
                scancode,
            } => match scancode.filter(|_| self.scancodes) {
                Some(keycode) => ClientMessage::QemuExtendedKeyEvent {
                    down,
                    keysym,
                    keycode,
                }
                .write(out),
                None => ClientMessage::KeyEvent { down, keysym }.write(out),
            },
            Command::Pointer { buttons, x, y } => {
                ClientMessage::PointerEvent { buttons, x, y }.write(out)
            }
            Command::Clipboard(text) => {
                if text.len() > MAX_CLIPBOARD as usize {
                    tracing::info!(bytes = text.len(), "Clipboard too large to send");
                    return;
                }
                if self.extended_clipboard {
                    self.local_clipboard = Some(text);
                    ClientMessage::ClientCutText(CutText::Extended(ClipboardMessage::Notify {
                        formats: ClipboardMessage::TEXT,
                    }))
                    .write(out);
                } else {
                    ClientMessage::ClientCutText(CutText::Latin1(to_latin1(&text))).write(out);
                }
            }
            Command::Power(code) => ClientMessage::Xvp { version: 1, code }.write(out),
            Command::SelectSource(action) => {
                // Other servers would take message 75 for garbage (docs/PROTOCOL.md).
                if self.kvmux_proxy {
                    ClientMessage::KvmuxSelect(action).write(out);
                }
            }
            Command::Refresh => session.request_update(false, None, out),
            Command::Credentials { .. } | Command::Close => {}
        }
    }
}

/// Text as ISO 8859-1 for legacy cut text: characters outside it become `?`.
pub fn to_latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn latin1_replaces_what_it_cannot_hold() {
        assert_eq!(to_latin1("aé€"), vec![b'a', 0xe9, b'?']);
    }

    /// The framebuffer as opaque B8G8R8A8 bytes, pixel by pixel.
    fn bgra(fb: &rfb::Framebuffer) -> Vec<u8> {
        fb.pixels()
            .iter()
            .flat_map(|&p| [p as u8, (p >> 8) as u8, (p >> 16) as u8, 0xff])
            .collect()
    }

    fn damage(rects: &[rfb::Rect]) -> rfb::Damage {
        let mut damage = rfb::Damage::default();
        for &r in rects {
            damage.add(r);
        }
        damage
    }

    #[test]
    fn frames_are_bgra_and_opaque() {
        let mut fb = rfb::Framebuffer::new(2, 1);
        fb.pixels_mut().copy_from_slice(&[0x0011_2233, 0x00ff_0000]);
        let mut frames = Frames::default();
        let frame = frames.make(&fb, &damage(&[fb.bounds()]));
        assert_eq!(frame.stride, 8);
        assert_eq!(
            frame.data.as_ref(),
            [0x33, 0x22, 0x11, 0xff, 0x00, 0x00, 0xff, 0xff]
        );
        // Dropped, the bytes go back and make the next frame.
        let pointer = frame.data.as_ref().as_ptr();
        drop(frame);
        fb.pixels_mut()[0] = 0x0044_5566;
        let frame = frames.make(&fb, &damage(&[rfb::Rect::new(0, 0, 1, 1)]));
        assert_eq!(frame.data.as_ref().as_ptr(), pointer);
        assert_eq!(frame.data.as_ref()[..4], [0x66, 0x55, 0x44, 0xff]);
        // Not once the connection is gone.
        drop(frames);
        drop(frame);
    }

    /// Changes pixel (x, y), makes a frame and checks it against the framebuffer.
    fn step(frames: &mut Frames, fb: &mut rfb::Framebuffer, x: u16, y: u16, colour: u32) -> Frame {
        let i = usize::from(y) * usize::from(fb.width()) + usize::from(x);
        fb.pixels_mut()[i] = colour;
        let frame = frames.make(fb, &damage(&[rfb::Rect::new(x, y, 1, 1)]));
        assert_eq!(frame.data.as_ref(), bgra(fb), "after ({x}, {y})");
        frame
    }

    #[test]
    fn reused_frames_get_what_changed_since_they_were_made() {
        let mut fb = rfb::Framebuffer::new(4, 3);
        for (i, p) in fb.pixels_mut().iter_mut().enumerate() {
            *p = 0x0001_0101 * i as u32;
        }
        let mut frames = Frames::default();
        let first = frames.make(&fb, &damage(&[fb.bounds()]));
        assert_eq!(first.data.as_ref(), bgra(&fb));
        let second = step(&mut frames, &mut fb, 1, 1, 0x00aa_0000);
        drop(first);
        drop(second);
        // The newest buffer (frame 2) makes frame 3: one pixel to copy.
        let third = step(&mut frames, &mut fb, 3, 2, 0x0000_bb00);
        // Only frame 1's buffer is free: frames 2 to 4 changed it in three places.
        let fourth = step(&mut frames, &mut fb, 0, 0, 0x0000_00cc);
        drop(third);
        drop(fourth);
        // Past the history a buffer is copied whole: frame 5's buffer comes back
        // after ten more frames, the first of which changed a pixel no later one did.
        let kept = step(&mut frames, &mut fb, 2, 0, 0x0012_3456);
        let mut held = vec![step(&mut frames, &mut fb, 0, 2, 0x00de_adbe)];
        for i in 1..DAMAGE_HISTORY as u32 + 2 {
            held.push(step(&mut frames, &mut fb, 3, 1, 0x0010_0000 + i));
        }
        drop(kept);
        drop(step(&mut frames, &mut fb, 3, 0, 0x0077_7777));
        drop(held);
        // After a resize (and back) no buffer of before is patched.
        let older = frames.make(&fb, &damage(&[]));
        drop(older);
        frames.resized();
        fb.pixels_mut().fill(0x0000_0001);
        let frame = frames.make(&fb, &damage(&[rfb::Rect::new(0, 0, 1, 1)]));
        assert_eq!(frame.data.as_ref(), bgra(&fb));
    }

    #[test]
    fn lossy_adds_jpeg_quality_and_pseudo_encodings_follow() {
        let settings = ConnectionSettings {
            lossy: true,
            quality: 7,
            ..ConnectionSettings::default()
        };
        let list = settings.encoding_list();
        assert_eq!(list[0], Encoding::TIGHT);
        assert!(list.contains(&Encoding(-32 + 7)));
        assert!(list.contains(&Encoding::QEMU_EXTENDED_KEY_EVENT));
        assert!(list.contains(&Encoding::KVMUX_ZLIB_RESET));
        assert!(list.contains(&Encoding::KVMUX_SOURCES));
        let lossless = ConnectionSettings::default().encoding_list();
        assert!(!lossless.iter().any(|e| (-32..=-23).contains(&e.0)));
    }
}
