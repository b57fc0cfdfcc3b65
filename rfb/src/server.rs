//! The server side of a connection after the handshake: client messages in, events
//! and framebuffer updates out.
//!
//! A [`ServerSession`] knows what one client asked for — pixel format, encodings in
//! order of preference, the region of its outstanding FramebufferUpdateRequest,
//! continuous updates — and what has changed since it was last sent (damage, desktop
//! size, name, cursor). Any frame source drives it: feed it the client's bytes, tell
//! it what changed with [`ServerSession::add_damage`] and friends, and call
//! [`ServerSession::write_update`] whenever [`ServerSession::update_due`] says so
//! and the connection can take more bytes.

use std::collections::VecDeque;

use crate::decode::cursor::CursorImage;
use crate::encode::{self, EncodeParams, PixelWriter, RectEncoder};
use crate::error::{DecodeError, ProtocolError};
use crate::framebuffer::{Damage, Framebuffer, Rect};
use crate::messages::{
    ClientMessage, ClipboardMessage, CutText, Fence, Limits, ParseError, RectHeader, Screen,
    SelectAction, ServerMessage, SourceList, XvpClientCode, XvpServerCode,
};
use crate::pixel::PixelFormat;
use crate::Encoding;

/// What a client asked of the server, for the application to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    Key {
        down: bool,
        keysym: u32,
    },
    /// A QEMU extended key event: the keysym and the XT scan code.
    QemuKey {
        down: bool,
        keysym: u32,
        keycode: u32,
    },
    Pointer {
        buttons: u8,
        x: u16,
        y: u16,
    },
    /// Legacy cut text, Latin-1.
    CutText(Vec<u8>),
    Clipboard(ClipboardMessage),
    Xvp {
        version: u8,
        code: XvpClientCode,
    },
    /// The client asks for a new desktop size; answer with
    /// [`ServerSession::desktop_size_result`] (and resize if accepted).
    SetDesktopSize {
        width: u16,
        height: u16,
        screens: Vec<Screen>,
    },
    /// The client changed its pixel format or encodings.
    FormatChanged,
    /// kvmux's source selection (client message 75).
    SelectSource(SelectAction),
}

/// The pseudo-encodings a client announced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCaps {
    pub copy_rect: bool,
    pub desktop_size: bool,
    pub extended_desktop_size: bool,
    pub last_rect: bool,
    pub desktop_name: bool,
    pub cursor: bool,
    pub cursor_with_alpha: bool,
    pub continuous_updates: bool,
    pub fence: bool,
    pub xvp: bool,
    pub qemu_extended_key_event: bool,
    pub extended_clipboard: bool,
    pub zlib_reset: bool,
    pub kvmux_sources: bool,
}

/// The encoders a server connection uses. Those that keep zlib streams (and so
/// hundreds of KiB of state each) are made when first used: a client on Hextile never
/// pays for ZRLE's and Tight's streams.
#[derive(Default)]
pub struct Encoders {
    raw: encode::raw::RawEncoder,
    rre: encode::rre::RreEncoder,
    hextile: encode::hextile::HextileEncoder,
    zlib: Option<Box<encode::zlib::ZlibEncoder>>,
    zrle: Option<Box<encode::zrle::ZrleEncoder>>,
    tight: Option<Box<encode::tight::TightEncoder>>,
    /// Worker threads for the encoders that split work (0: their default).
    threads: usize,
    /// Rectangles are encoded in bands of at most this many rows (0: whole), which
    /// bounds the encoders' working memory.
    band_rows: u16,
    /// The streams were reset at least once: an encoder made after that starts with
    /// a reset too, since the client's inflaters may hold another encoder's streams
    /// (a shared update's) that only a reset clears.
    was_reset: bool,
}

impl Encoders {
    /// Encoders whose ZRLE and Tight split work over `threads` threads.
    pub fn with_threads(threads: usize) -> Encoders {
        Encoders {
            threads,
            ..Encoders::default()
        }
    }

    /// The encoder for `encoding` (Raw for encodings without one of their own).
    pub fn get(&mut self, encoding: Encoding) -> &mut dyn RectEncoder {
        let (threads, was_reset) = (self.threads, self.was_reset);
        match encoding {
            Encoding::RRE => &mut self.rre,
            Encoding::HEXTILE => &mut self.hextile,
            Encoding::ZLIB => made::<encode::zlib::ZlibEncoder>(&mut self.zlib, was_reset, || {
                encode::zlib::ZlibEncoder::default()
            }),
            Encoding::ZRLE => made::<encode::zrle::ZrleEncoder>(&mut self.zrle, was_reset, || {
                encode::zrle::ZrleEncoder::with_threads(threads)
            }),
            Encoding::TIGHT => self.tight(),
            _ => &mut self.raw,
        }
    }

    pub fn tight(&mut self) -> &mut encode::tight::TightEncoder {
        let (threads, was_reset) = (self.threads, self.was_reset);
        made(&mut self.tight, was_reset, || {
            encode::tight::TightEncoder::with_threads(threads)
        })
    }

    /// Gives back the encoders' working memory (their streams are kept).
    fn trim(&mut self) {
        self.hextile.trim();
        self.rre.trim();
        if let Some(e) = &mut self.zlib {
            e.trim();
        }
        if let Some(e) = &mut self.zrle {
            e.trim();
        }
        if let Some(e) = &mut self.tight {
            RectEncoder::trim(e.as_mut());
        }
    }

    /// Every zlib stream starts anew (streams not made yet start with a reset when
    /// they are made).
    fn reset(&mut self) {
        self.was_reset = true;
        if let Some(e) = &mut self.zlib {
            e.reset();
        }
        if let Some(e) = &mut self.zrle {
            e.reset();
        }
        if let Some(e) = &mut self.tight {
            e.reset();
        }
    }
}

/// The encoder in `slot`, made with `make` on first use. One made after the session's
/// streams were reset starts with a reset too: the client's inflaters may hold
/// another encoder's streams (a shared update's), which only a reset clears (Tight
/// says so in its first rectangle's reset bits).
fn made<E: RectEncoder>(
    slot: &mut Option<Box<E>>,
    was_reset: bool,
    make: impl FnOnce() -> E,
) -> &mut E {
    slot.get_or_insert_with(|| {
        let mut e = Box::new(make());
        if was_reset {
            e.reset();
        }
        e
    })
}

/// The pixel encodings a server session can send, best first when the client
/// states no preference among them.
const SUPPORTED: [Encoding; 6] = [
    Encoding::TIGHT,
    Encoding::ZRLE,
    Encoding::HEXTILE,
    Encoding::ZLIB,
    Encoding::RRE,
    Encoding::RAW,
];

/// Distinct areas of outstanding FramebufferUpdateRequests kept before they merge.
const MAX_REQUEST_AREAS: usize = 16;

#[derive(Debug, Clone)]
enum Request {
    /// No request outstanding.
    None,
    /// Incremental: send what changed inside these rectangles.
    Incremental(Vec<Rect>),
}

/// The server end of an RFB connection, after the handshake.
pub struct ServerSession {
    width: u16,
    height: u16,
    name: String,
    writer: PixelWriter,
    encodings: Vec<Encoding>,
    /// The pixel encoding chosen from the client's list.
    encoding: Encoding,
    caps: ClientCaps,
    params: EncodeParams,
    limits: Limits,
    request: Request,
    /// Continuous updates: the area, while enabled.
    continuous: Option<Rect>,
    /// Changed areas not yet sent.
    damage: Damage,
    pending_resize: Option<u16 /* reason */>,
    pending_resize_status: u16,
    pending_name: bool,
    /// The QEMU extended key event pseudo-rectangle is owed: the client listed the
    /// pseudo-encoding, and may send QEMU key events once it has seen it.
    pending_qemu_key: bool,
    pending_cursor: Option<CursorImage>,
    pending_zlib_reset: bool,
    pending_sources: Option<SourceList>,
    /// The last update's zlib streams came from a shared encoding.
    streams_shared: bool,
    xvp_enabled: bool,
    encoders: Encoders,
    buf: Vec<u8>,
    start: usize,
    offset: u64,
    events: VecDeque<ServerEvent>,
    failed: bool,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("size", &(self.width, self.height))
            .field("format", self.writer.format())
            .field("encoding", &self.encoding)
            .field("caps", &self.caps)
            .finish()
    }
}

impl ServerSession {
    /// A session for a client that has just received ServerInit with this size,
    /// format and name.
    pub fn new(width: u16, height: u16, format: PixelFormat, name: &str) -> ServerSession {
        ServerSession {
            width,
            height,
            name: name.to_owned(),
            writer: PixelWriter::new(format),
            encodings: Vec::new(),
            encoding: Encoding::RAW,
            caps: ClientCaps::default(),
            params: EncodeParams::default(),
            limits: Limits::default(),
            request: Request::None,
            continuous: None,
            damage: Damage::default(),
            pending_resize: None,
            pending_resize_status: 0,
            pending_name: false,
            pending_qemu_key: false,
            pending_cursor: None,
            pending_zlib_reset: false,
            pending_sources: None,
            streams_shared: false,
            xvp_enabled: false,
            encoders: Encoders::default(),
            buf: Vec::new(),
            start: 0,
            offset: 0,
            events: VecDeque::new(),
            failed: false,
        }
    }

    /// Offer xvp power control: clients that announce xvp get an xvp Init message.
    pub fn enable_xvp(&mut self, enabled: bool) {
        self.xvp_enabled = enabled;
    }

    /// Encodes rectangles in bands of at most `rows` rows (0: whole rectangles, the
    /// default): bounds the working memory each connection keeps, for servers with
    /// many clients, at the cost of a few more rectangle headers.
    pub fn set_band_rows(&mut self, rows: u16) {
        self.encoders.band_rows = rows;
    }

    /// Uses worker threads for encoders that can split work.
    pub fn set_encoder_threads(&mut self, threads: usize) {
        let band_rows = self.encoders.band_rows;
        self.encoders = Encoders::with_threads(threads);
        self.encoders.band_rows = band_rows;
    }

    pub fn caps(&self) -> &ClientCaps {
        &self.caps
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    pub fn pixel_format(&self) -> &PixelFormat {
        self.writer.format()
    }

    pub fn params(&self) -> &EncodeParams {
        &self.params
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Feeds bytes from the client, applying every complete message; replies the
    /// protocol needs at once (fences, xvp init, end of continuous updates) go to
    /// `out`. After an error the session is finished.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        if self.failed {
            return Err(ProtocolError {
                message: "session".into(),
                offset: self.offset,
                error: DecodeError::invalid("session", "already failed"),
            });
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        loop {
            let input = &self.buf[self.start..];
            if input.is_empty() {
                return Ok(());
            }
            match ClientMessage::parse(input, &self.limits) {
                Ok((msg, used)) => {
                    self.start += used;
                    self.offset += used as u64;
                    self.apply(msg, out);
                }
                Err(ParseError::Incomplete(_)) => return Ok(()),
                Err(ParseError::Invalid(error)) => {
                    self.failed = true;
                    let t = input[0];
                    return Err(ProtocolError {
                        message: client_message_name(t),
                        offset: self.offset,
                        error,
                    });
                }
            }
        }
    }

    fn apply(&mut self, msg: ClientMessage, out: &mut Vec<u8>) {
        match msg {
            ClientMessage::SetPixelFormat(format) => {
                self.writer = PixelWriter::new(format);
                if !format.true_colour {
                    write_colour_map(out);
                }
                self.events.push_back(ServerEvent::FormatChanged);
            }
            ClientMessage::SetEncodings(list) => self.set_encodings(list, out),
            ClientMessage::FramebufferUpdateRequest { incremental, rect } => {
                let rect = self.clip(rect);
                if !incremental {
                    // Everything in the area is due, changed or not.
                    self.damage.add(rect);
                }
                match &mut self.request {
                    Request::Incremental(rects) => {
                        if !rects.iter().any(|r| {
                            r.x <= rect.x
                                && r.y <= rect.y
                                && r.right() >= rect.right()
                                && r.bottom() >= rect.bottom()
                        }) {
                            rects.push(rect);
                        }
                        // A client that keeps asking without reading is owed one
                        // area, not an ever longer list.
                        if rects.len() > MAX_REQUEST_AREAS {
                            let bounds = rects.iter().fold(Rect::default(), |a, r| a.union(r));
                            *rects = vec![bounds];
                        }
                    }
                    Request::None => self.request = Request::Incremental(vec![rect]),
                }
            }
            ClientMessage::KeyEvent { down, keysym } => {
                self.events.push_back(ServerEvent::Key { down, keysym })
            }
            ClientMessage::QemuExtendedKeyEvent {
                down,
                keysym,
                keycode,
            } => {
                self.events.push_back(ServerEvent::QemuKey {
                    down,
                    keysym,
                    keycode,
                });
            }
            ClientMessage::PointerEvent { buttons, x, y } => {
                // Clients may send positions outside the screen (dragging past an edge).
                let x = x.min(self.width.saturating_sub(1));
                let y = y.min(self.height.saturating_sub(1));
                self.events
                    .push_back(ServerEvent::Pointer { buttons, x, y });
            }
            ClientMessage::ClientCutText(CutText::Latin1(text)) => {
                self.events.push_back(ServerEvent::CutText(text))
            }
            ClientMessage::ClientCutText(CutText::Extended(msg)) => {
                self.events.push_back(ServerEvent::Clipboard(msg))
            }
            ClientMessage::EnableContinuousUpdates { enable, rect } => {
                if enable {
                    let rect = self.clip(rect);
                    self.continuous = Some(rect);
                    self.damage.add(rect);
                } else {
                    self.continuous = None;
                    ServerMessage::EndOfContinuousUpdates.write(out);
                }
            }
            ClientMessage::ClientFence(fence) => {
                if fence.flags & Fence::REQUEST != 0 {
                    // Everything before this point has been written to `out` already,
                    // so BlockBefore and BlockAfter hold; SyncNext is not supported.
                    let flags = fence.flags & (Fence::BLOCK_BEFORE | Fence::BLOCK_AFTER);
                    ServerMessage::ServerFence(Fence {
                        flags,
                        payload: fence.payload,
                    })
                    .write(out);
                }
            }
            ClientMessage::Xvp { version, code } => {
                if self.xvp_enabled {
                    self.events.push_back(ServerEvent::Xvp { version, code });
                } else {
                    ServerMessage::Xvp {
                        version: 1,
                        code: XvpServerCode::Fail,
                    }
                    .write(out);
                }
            }
            ClientMessage::SetDesktopSize {
                width,
                height,
                screens,
            } => {
                self.events.push_back(ServerEvent::SetDesktopSize {
                    width,
                    height,
                    screens,
                });
            }
            ClientMessage::KvmuxSelect(action) => {
                self.events.push_back(ServerEvent::SelectSource(action));
            }
        }
    }

    fn set_encodings(&mut self, list: Vec<Encoding>, out: &mut Vec<u8>) {
        let had_continuous = self.caps.continuous_updates;
        let had_xvp = self.caps.xvp;
        let had_qemu_key = self.caps.qemu_extended_key_event;
        let mut caps = ClientCaps::default();
        let mut params = EncodeParams::default();
        for e in &list {
            match *e {
                Encoding::COPY_RECT => caps.copy_rect = true,
                Encoding::DESKTOP_SIZE => caps.desktop_size = true,
                Encoding::EXTENDED_DESKTOP_SIZE => caps.extended_desktop_size = true,
                Encoding::LAST_RECT => caps.last_rect = true,
                Encoding::DESKTOP_NAME => caps.desktop_name = true,
                Encoding::CURSOR => caps.cursor = true,
                Encoding::CURSOR_WITH_ALPHA => caps.cursor_with_alpha = true,
                Encoding::CONTINUOUS_UPDATES => caps.continuous_updates = true,
                Encoding::FENCE => caps.fence = true,
                Encoding::XVP => caps.xvp = true,
                Encoding::QEMU_EXTENDED_KEY_EVENT => caps.qemu_extended_key_event = true,
                Encoding::EXTENDED_CLIPBOARD => caps.extended_clipboard = true,
                Encoding::KVMUX_ZLIB_RESET => caps.zlib_reset = true,
                Encoding::KVMUX_SOURCES => caps.kvmux_sources = true,
                Encoding(n @ -32..=-23) if params.quality.is_none() => {
                    params.quality = Some((n + 32) as u8)
                }
                Encoding(n @ -256..=-247) if params.compress.is_none() => {
                    params.compress = Some((n + 256) as u8)
                }
                _ => {}
            }
        }
        self.encoding = list
            .iter()
            .copied()
            .find(|e| SUPPORTED.contains(e))
            .unwrap_or(Encoding::RAW);
        self.caps = caps;
        self.params = params;
        self.encodings = list;
        if caps.continuous_updates && !had_continuous {
            // Announces that the server supports continuous updates.
            ServerMessage::EndOfContinuousUpdates.write(out);
        }
        if caps.xvp && !had_xvp && self.xvp_enabled {
            ServerMessage::Xvp {
                version: 1,
                code: XvpServerCode::Init,
            }
            .write(out);
        }
        // Pseudo-rectangles announcing support go out with the next update.
        self.pending_name |= caps.desktop_name;
        self.pending_qemu_key |= caps.qemu_extended_key_event && !had_qemu_key;
        self.pending_qemu_key &= caps.qemu_extended_key_event;
        self.events.push_back(ServerEvent::FormatChanged);
    }

    fn clip(&self, rect: Rect) -> Rect {
        let x = rect.x.min(self.width);
        let y = rect.y.min(self.height);
        let w = (rect.right().min(u32::from(self.width)) - u32::from(x)) as u16;
        let h = (rect.bottom().min(u32::from(self.height)) - u32::from(y)) as u16;
        Rect::new(x, y, w, h)
    }

    /// The source changed `rect`.
    pub fn add_damage(&mut self, rect: Rect) {
        let rect = self.clip(rect);
        self.damage.add(rect);
    }

    /// The desktop is now `width` x `height` (its framebuffer will be passed to the
    /// next [`ServerSession::write_update`]). Clients that can't be told keep their
    /// size; the caller decides what they see.
    pub fn resize(&mut self, width: u16, height: u16) {
        if (width, height) != (self.width, self.height) {
            self.width = width;
            self.height = height;
            self.pending_resize.get_or_insert(0);
            self.damage = Damage::default();
            self.damage.add(Rect::new(0, 0, width, height));
            if let Request::Incremental(rects) = &mut self.request {
                // A request for the old size stands for the whole new screen.
                *rects = vec![Rect::new(0, 0, width, height)];
            }
        }
    }

    /// The framebuffer size the client knows.
    pub fn size(&self) -> (u16, u16) {
        (self.width, self.height)
    }

    /// Whether this client can be told about a new desktop size.
    pub fn can_resize(&self) -> bool {
        self.caps.desktop_size || self.caps.extended_desktop_size
    }

    /// The answer to a SetDesktopSize request: status 0 accepted, 1 prohibited,
    /// 2 out of resources, 3 invalid layout.
    pub fn desktop_size_result(&mut self, status: u16) {
        self.pending_resize = Some(1);
        self.pending_resize_status = status;
    }

    pub fn set_name(&mut self, name: &str) {
        if name != self.name {
            self.name = name.to_owned();
            self.pending_name = true;
        }
    }

    pub fn set_cursor(&mut self, cursor: CursorImage) {
        self.pending_cursor = Some(cursor);
    }

    /// All zlib streams start anew: the client is told with kvmux's zlib-stream-reset
    /// if it announced it (see `docs/PROTOCOL.md`).
    pub fn reset_streams(&mut self) {
        self.encoders.reset();
        self.pending_zlib_reset = self.caps.zlib_reset;
    }

    /// A kvmux proxy's source list, sent with the next update to clients that list
    /// [`Encoding::KVMUX_SOURCES`] (docs/PROTOCOL.md); others never see it.
    pub fn set_sources(&mut self, list: SourceList) {
        self.pending_sources = Some(list);
    }

    /// Gives back working memory sized by the largest update so far (the encoders'
    /// scratch space, the input buffer); for a connection that has gone idle. The
    /// zlib streams are kept, so the next update continues them.
    pub fn trim_buffers(&mut self) {
        self.encoders.trim();
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Whether the client is waiting for an update (a FramebufferUpdateRequest not yet
    /// answered, or continuous updates on). For a proxy that forwards another server's
    /// updates instead of writing its own.
    pub fn request_pending(&self) -> bool {
        self.continuous.is_some() || matches!(self.request, Request::Incremental(_))
    }

    /// The pending request was answered by an update written elsewhere (see
    /// [`ServerSession::request_pending`]).
    pub fn answer_request(&mut self) {
        if self.continuous.is_none() {
            self.request = Request::None;
        }
    }

    /// The client's encodings, in its order of preference (pseudo-encodings included).
    pub fn encodings(&self) -> &[Encoding] {
        &self.encodings
    }

    /// Whether an update should be written now: the client is waiting for one (or
    /// has continuous updates on) and there is something to send.
    pub fn update_due(&self) -> bool {
        let pseudo = self.pending_resize.is_some()
            || (self.pending_sources.is_some() && self.caps.kvmux_sources)
            || (self.pending_name && self.caps.desktop_name)
            || self.pending_qemu_key
            || (self.pending_cursor.is_some() && (self.caps.cursor || self.caps.cursor_with_alpha));
        match (&self.request, self.continuous) {
            (_, Some(area)) => pseudo || self.damage.rects().iter().any(|r| r.intersects(&area)),
            (Request::Incremental(areas), None) => {
                pseudo
                    || self
                        .damage
                        .rects()
                        .iter()
                        .any(|d| areas.iter().any(|a| d.intersects(a)))
            }
            (Request::None, None) => false,
        }
    }

    /// Writes one FramebufferUpdate with everything due from `fb` (the desktop, of
    /// the size last given to [`ServerSession::resize`]). Returns whether one was
    /// written.
    pub fn write_update(&mut self, fb: &Framebuffer, out: &mut Vec<u8>) -> bool {
        self.write_update_inner(fb, None, out)
    }

    /// Like [`ServerSession::write_update`], but the pixel rectangles are looked up in
    /// `cache` first, under a key of `generation` (which must change whenever `fb`'s
    /// content does), this client's pixel format, encoding and parameters and the
    /// rectangles due: clients that watch the same frame with the same format and
    /// encoding share one encoding of each update. To make that possible, every
    /// update written this way starts new zlib streams (Tight's reset bits, or kvmux's
    /// zlib-stream-reset for ZRLE and Zlib); ZRLE and Zlib clients that did not list
    /// that extension are encoded on their own, as with `write_update`.
    pub fn write_update_shared(
        &mut self,
        fb: &Framebuffer,
        generation: u64,
        cache: &dyn UpdateCache,
        out: &mut Vec<u8>,
    ) -> bool {
        self.write_update_inner(fb, Some((generation, cache)), out)
    }

    /// Whether this client's updates can be shared (see
    /// [`ServerSession::write_update_shared`]).
    pub fn shareable(&self) -> bool {
        match self.encoding {
            Encoding::RAW | Encoding::RRE | Encoding::HEXTILE | Encoding::TIGHT => true,
            Encoding::ZRLE | Encoding::ZLIB => self.caps.zlib_reset,
            _ => false,
        }
    }

    fn write_update_inner(
        &mut self,
        fb: &Framebuffer,
        shared: Option<(u64, &dyn UpdateCache)>,
        out: &mut Vec<u8>,
    ) -> bool {
        if !self.update_due() {
            return false;
        }
        let areas = match (&self.request, self.continuous) {
            (_, Some(area)) => vec![area],
            (Request::Incremental(areas), None) => areas.clone(),
            (Request::None, None) => return false,
        };
        // The message header, its count filled in at the end; rectangles are written
        // straight after it (no copy of the update's bytes).
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        let body = out;
        let mut count: u32 = 0;
        let header = |rect: Rect, encoding: Encoding, body: &mut Vec<u8>| {
            RectHeader { rect, encoding }.write(body);
        };
        if self.pending_zlib_reset {
            header(Rect::default(), Encoding::KVMUX_ZLIB_RESET, body);
            count += 1;
            self.pending_zlib_reset = false;
        }
        if let Some(reason) = self.pending_resize.take() {
            if self.caps.extended_desktop_size {
                let screens = [Screen {
                    id: 0,
                    x: 0,
                    y: 0,
                    width: self.width,
                    height: self.height,
                    flags: 0,
                }];
                header(
                    Rect::new(reason, self.pending_resize_status, self.width, self.height),
                    Encoding::EXTENDED_DESKTOP_SIZE,
                    body,
                );
                crate::messages::write_screens(&screens, body);
                count += 1;
            } else if self.caps.desktop_size && reason == 0 {
                header(
                    Rect::new(0, 0, self.width, self.height),
                    Encoding::DESKTOP_SIZE,
                    body,
                );
                count += 1;
            }
            self.pending_resize_status = 0;
        }
        if self.pending_name && self.caps.desktop_name {
            header(Rect::default(), Encoding::DESKTOP_NAME, body);
            let name = self.name.as_bytes();
            body.extend_from_slice(&(name.len() as u32).to_be_bytes());
            body.extend_from_slice(name);
            count += 1;
            self.pending_name = false;
        }
        if std::mem::take(&mut self.pending_qemu_key) {
            header(Rect::default(), Encoding::QEMU_EXTENDED_KEY_EVENT, body);
            count += 1;
        }
        if let Some(list) = self.pending_sources.take() {
            if self.caps.kvmux_sources {
                list.write(body);
                count += 1;
            }
        }
        if let Some(cursor) = self.pending_cursor.take() {
            if self.caps.cursor_with_alpha {
                encode::cursor::write_alpha_cursor(&cursor, body);
                count += 1;
            } else if self.caps.cursor {
                encode::cursor::write_cursor(&cursor, &self.writer, body);
                count += 1;
            }
        }
        // Pixels: every damaged area inside what was asked for, if the framebuffer
        // is the size the client knows.
        let damage = self.damage.take();
        if fb.width() == self.width && fb.height() == self.height {
            let rects: Vec<Rect> = damage
                .rects()
                .iter()
                .flat_map(|d| areas.iter().filter_map(move |a| intersection(d, a)))
                .collect();
            match shared {
                Some((generation, cache)) if self.shareable() && !rects.is_empty() => {
                    let zlib = matches!(
                        self.encoding,
                        Encoding::ZRLE | Encoding::ZLIB | Encoding::TIGHT
                    );
                    if zlib {
                        // New streams, so that the bytes suit every client.
                        self.encoders.reset();
                        self.streams_shared = true;
                    }
                    let key = UpdateKey {
                        generation,
                        format: *self.writer.format(),
                        encoding: self.encoding,
                        params: self.params,
                        rects: rects.clone(),
                    };
                    let encoding = self.encoding;
                    let (encoders, writer, params) =
                        (&mut self.encoders, &self.writer, &self.params);
                    let encoded = cache.get_or_encode(key, &mut || {
                        let mut bytes = Vec::new();
                        let mut count = 0;
                        if matches!(encoding, Encoding::ZRLE | Encoding::ZLIB) {
                            RectHeader {
                                rect: Rect::default(),
                                encoding: Encoding::KVMUX_ZLIB_RESET,
                            }
                            .write(&mut bytes);
                            count += 1;
                        }
                        count += encode_rects(
                            encoders, encoding, writer, params, fb, &rects, &mut bytes,
                        );
                        EncodedRects { bytes, count }
                    });
                    body.extend_from_slice(&encoded.bytes);
                    count += encoded.count;
                }
                _ => {
                    if std::mem::take(&mut self.streams_shared) {
                        // The client's inflaters hold a shared update's streams, which
                        // this session's encoders did not write: start new ones.
                        self.encoders.reset();
                        if matches!(self.encoding, Encoding::ZRLE | Encoding::ZLIB) {
                            header(Rect::default(), Encoding::KVMUX_ZLIB_RESET, body);
                            count += 1;
                        }
                    }
                    count += encode_rects(
                        &mut self.encoders,
                        self.encoding,
                        &self.writer,
                        &self.params,
                        fb,
                        &rects,
                        body,
                    );
                }
            }
        }
        if self.continuous.is_none() {
            self.request = Request::None;
        }
        // With LastRect the count need not be known up front, but it is here.
        let mut n = count;
        if count > u32::from(u16::MAX) - 1 {
            n = u32::from(u16::MAX);
            header(Rect::default(), Encoding::LAST_RECT, body);
        }
        body[start + 2..start + 4].copy_from_slice(&(n as u16).to_be_bytes());
        true
    }

    /// Writes a Bell.
    pub fn bell(&self, out: &mut Vec<u8>) {
        ServerMessage::Bell.write(out);
    }

    /// Writes text to the client's clipboard: as ExtendedClipboard if it announced
    /// it, else as Latin-1 (characters outside Latin-1 become `?`).
    pub fn cut_text(&self, text: &str, out: &mut Vec<u8>) {
        let cut = if self.caps.extended_clipboard {
            CutText::Extended(ClipboardMessage::Provide {
                text: Some(text.to_owned()),
                other: Vec::new(),
            })
        } else {
            CutText::Latin1(
                text.chars()
                    .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                    .collect(),
            )
        };
        ServerMessage::ServerCutText(cut).write(out);
    }
}

/// Encodes `rects` (non-overlapping, inside `fb`) with `encoding`; returns how many
/// rectangles that took.
fn encode_rects(
    encoders: &mut Encoders,
    encoding: Encoding,
    writer: &PixelWriter,
    params: &EncodeParams,
    fb: &Framebuffer,
    rects: &[Rect],
    body: &mut Vec<u8>,
) -> u32 {
    if encoding == Encoding::TIGHT {
        // The whole batch at once (or band by band): solid areas become fills, and
        // pieces are encoded on the encoder's threads.
        let band = encoders.band_rows;
        let mut write = |batch: &[Rect], body: &mut Vec<u8>| {
            let mut pieces = Vec::new();
            encoders
                .tight()
                .encode_many(fb, batch, writer, params, &mut pieces);
            for (rect, payload) in &pieces {
                RectHeader {
                    rect: *rect,
                    encoding,
                }
                .write(body);
                body.extend_from_slice(payload);
            }
            pieces.len() as u32
        };
        let mut count = 0;
        if band == 0 {
            count += write(rects, body);
        } else {
            for part in rects.iter().flat_map(|r| bands(*r, band)) {
                count += write(std::slice::from_ref(&part), body);
            }
        }
        return count;
    }
    let band = encoders.band_rows;
    let encoder = encoders.get(encoding);
    let mut count = 0;
    for rect in rects.iter().flat_map(|r| bands(*r, band)) {
        RectHeader { rect, encoding }.write(body);
        encoder.encode(fb, rect, writer, params, body);
        count += 1;
    }
    count
}

/// `rect` cut into bands of at most `rows` rows (all of it if `rows` is 0).
fn bands(rect: Rect, rows: u16) -> impl Iterator<Item = Rect> {
    let step = if rows == 0 { rect.height.max(1) } else { rows };
    (0..rect.height.div_ceil(step)).map(move |i| {
        let y = i * step;
        Rect::new(rect.x, rect.y + y, rect.width, step.min(rect.height - y))
    })
}

/// What identifies one encoding of an update's pixel rectangles: the same frame
/// content (`generation`), pixel format, encoding, parameters and rectangles give
/// the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpdateKey {
    pub generation: u64,
    pub format: PixelFormat,
    pub encoding: Encoding,
    pub params: EncodeParams,
    pub rects: Vec<Rect>,
}

/// An update's pixel rectangles, encoded: rectangle headers and payloads.
#[derive(Debug, Clone, Default)]
pub struct EncodedRects {
    pub bytes: Vec<u8>,
    /// How many rectangles `bytes` holds.
    pub count: u32,
}

/// Where sessions that share a frame keep encoded updates (see
/// [`ServerSession::write_update_shared`]).
pub trait UpdateCache {
    /// The encoding stored under `key`, or `encode`'s result, stored.
    fn get_or_encode(
        &self,
        key: UpdateKey,
        encode: &mut dyn FnMut() -> EncodedRects,
    ) -> std::sync::Arc<EncodedRects>;
}

fn intersection(a: &Rect, b: &Rect) -> Option<Rect> {
    let x = a.x.max(b.x);
    let y = a.y.max(b.y);
    let r = a.right().min(b.right());
    let bt = a.bottom().min(b.bottom());
    (r > u32::from(x) && bt > u32::from(y))
        .then(|| Rect::new(x, y, (r - u32::from(x)) as u16, (bt - u32::from(y)) as u16))
}

fn client_message_name(t: u8) -> String {
    match t {
        0 => "SetPixelFormat".into(),
        2 => "SetEncodings".into(),
        3 => "FramebufferUpdateRequest".into(),
        4 => "KeyEvent".into(),
        5 => "PointerEvent".into(),
        6 => "ClientCutText".into(),
        150 => "EnableContinuousUpdates".into(),
        248 => "ClientFence".into(),
        250 => "xvp".into(),
        251 => "SetDesktopSize".into(),
        255 => "QEMU client message".into(),
        t => format!("unknown client message type {t}"),
    }
}

/// SetColourMapEntries with the fixed map [`PixelWriter`] writes indices into.
fn write_colour_map(out: &mut Vec<u8>) {
    ServerMessage::SetColourMapEntries {
        first_colour: 0,
        colours: PixelWriter::colour_map(),
    }
    .write(out);
}

#[cfg(test)]
mod tests {
    //! Client byte streams written out by hand from the spec; updates checked by
    //! decoding them with this crate's client side and with hand-computed bytes.
    use super::*;
    use crate::client::{ClientEvent, ClientSession};
    use crate::handshake::ServerInit;

    fn session(w: u16, h: u16) -> ServerSession {
        ServerSession::new(w, h, PixelFormat::RGB888, "desk")
    }

    /// Our own client, after a ServerInit of `w` x `h` in RGB888.
    fn rgb888_client(w: u16, h: u16) -> ClientSession {
        ClientSession::new(&ServerInit {
            width: w,
            height: h,
            pixel_format: PixelFormat::RGB888,
            name: String::new(),
        })
    }

    fn set_encodings(list: &[i32]) -> Vec<u8> {
        let mut b = vec![2, 0];
        b.extend_from_slice(&(list.len() as u16).to_be_bytes());
        for e in list {
            b.extend_from_slice(&e.to_be_bytes());
        }
        b
    }

    fn request(incremental: bool, x: u16, y: u16, w: u16, h: u16) -> Vec<u8> {
        let mut b = vec![3, u8::from(incremental)];
        for v in [x, y, w, h] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    fn sample_fb(w: u16, h: u16) -> Framebuffer {
        let mut fb = Framebuffer::new(w, h);
        for (i, p) in fb.pixels_mut().iter_mut().enumerate() {
            *p = (i as u32).wrapping_mul(0x9e37_79b9) & 0x00ff_ffff;
        }
        fb
    }

    #[test]
    fn raw_update_bytes_by_hand() {
        let mut s = session(2, 1);
        let mut out = Vec::new();
        s.feed(&set_encodings(&[0]), &mut out).expect("valid");
        s.feed(&request(false, 0, 0, 2, 1), &mut out)
            .expect("valid");
        assert!(out.is_empty());
        let mut fb = Framebuffer::new(2, 1);
        fb.pixels_mut().copy_from_slice(&[0x0011_2233, 0x0044_5566]);
        assert!(s.write_update(&fb, &mut out));
        assert_eq!(
            out,
            [
                0, 0, 0, 1, // FramebufferUpdate, one rectangle
                0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, // 2x1 at 0,0, Raw
                0x33, 0x22, 0x11, 0, 0x66, 0x55, 0x44, 0, // little-endian 0x00RRGGBB
            ]
        );
        // The request is answered: nothing more until the next one.
        out.clear();
        s.add_damage(Rect::new(0, 0, 1, 1));
        assert!(!s.update_due());
        assert!(!s.write_update(&fb, &mut out));
    }

    #[test]
    fn incremental_sends_only_damage_and_round_trips() {
        for encoding in [0, 2, 5, 6, 7, 16] {
            let fb = sample_fb(100, 70);
            let mut s = session(100, 70);
            let mut out = Vec::new();
            s.feed(&set_encodings(&[encoding, -223, -224]), &mut out)
                .expect("valid");
            s.feed(&request(false, 0, 0, 100, 70), &mut out)
                .expect("valid");
            assert!(s.write_update(&fb, &mut out));
            let mut client = rgb888_client(100, 70);
            client.feed(&out).expect("our own update decodes");
            assert_eq!(
                client.framebuffer().pixels(),
                fb.pixels(),
                "encoding {encoding}"
            );
            // An incremental request with nothing changed gets nothing.
            out.clear();
            s.feed(&request(true, 0, 0, 100, 70), &mut out)
                .expect("valid");
            assert!(!s.update_due());
            // A change inside the screen gets just that area.
            let mut fb2 = fb.clone();
            for p in &mut fb2.pixels_mut()[100 * 10..100 * 10 + 30] {
                *p = 0x00ab_cdef;
            }
            s.add_damage(Rect::new(0, 10, 30, 1));
            assert!(s.write_update(&fb2, &mut out));
            client.framebuffer_mut().take_damage();
            client.feed(&out).expect("incremental update decodes");
            assert_eq!(
                client.framebuffer().pixels(),
                fb2.pixels(),
                "encoding {encoding}"
            );
            assert_eq!(
                client.framebuffer().damage().bounds(),
                Rect::new(0, 10, 30, 1),
                "encoding {encoding}"
            );
        }
    }

    #[test]
    fn source_list_only_for_clients_that_ask_and_selection_events() {
        let list = SourceList {
            active: 0,
            sources: vec![crate::messages::SourceInfo {
                state: crate::messages::SourceState::Connecting,
                width: 0,
                height: 0,
                name: "a".into(),
                status: String::new(),
            }],
        };
        let fb = Framebuffer::new(4, 4);
        // A client that did not list 0x4B564D02 never gets it, and is not woken for it.
        let mut plain = session(4, 4);
        let mut out = Vec::new();
        plain.feed(&set_encodings(&[0]), &mut out).expect("valid");
        plain
            .feed(&request(true, 0, 0, 4, 4), &mut out)
            .expect("valid");
        plain.set_sources(list.clone());
        assert!(!plain.update_due());
        // One that did gets it in its next update: header x=active, y=count, then the entry.
        let mut aware = session(4, 4);
        aware
            .feed(&set_encodings(&[0, 0x4b56_4d02]), &mut out)
            .expect("valid");
        aware
            .feed(&request(true, 0, 0, 4, 4), &mut out)
            .expect("valid");
        aware.set_sources(list);
        assert!(aware.write_update(&fb, &mut out));
        assert_eq!(
            out,
            [
                0, 0, 0, 1, // one rectangle
                0, 0, 0, 1, 0, 0, 0, 0, 0x4b, 0x56, 0x4d, 0x02, // active 0 of 1
                1, 0, 0, 0, 0, 1, b'a', 0, 0, // connecting, 0x0, "a", no status
            ]
        );
        // Message 75: select index 2, then next.
        out.clear();
        aware
            .feed(&[75, 0, 0, 2, 75, 1, 0, 0], &mut out)
            .expect("valid");
        assert!(out.is_empty());
        let events: Vec<_> = std::iter::from_fn(|| aware.poll_event())
            .filter(|e| matches!(e, ServerEvent::SelectSource(_)))
            .collect();
        assert_eq!(
            events,
            [
                ServerEvent::SelectSource(SelectAction::Index(2)),
                ServerEvent::SelectSource(SelectAction::Next)
            ]
        );
        // An unknown action ends the session.
        assert!(aware.feed(&[75, 9, 0, 0], &mut out).is_err());
    }

    /// A cache that counts how often it had to encode.
    #[derive(Default)]
    struct CountingCache {
        map: std::sync::Mutex<std::collections::HashMap<UpdateKey, std::sync::Arc<EncodedRects>>>,
        encodes: std::sync::atomic::AtomicUsize,
    }

    impl UpdateCache for CountingCache {
        fn get_or_encode(
            &self,
            key: UpdateKey,
            encode: &mut dyn FnMut() -> EncodedRects,
        ) -> std::sync::Arc<EncodedRects> {
            let mut map = self.map.lock().expect("not poisoned");
            map.entry(key)
                .or_insert_with(|| {
                    self.encodes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::sync::Arc::new(encode())
                })
                .clone()
        }
    }

    #[test]
    fn shared_tight_clients_that_encode_late_still_reset() {
        let (w, h) = (1920u16, 1080u16);
        let cache = CountingCache::default();
        let mut fb = Framebuffer::new(w, h);
        for (i, p) in fb.pixels_mut().iter_mut().enumerate() {
            let (x, y) = ((i % 1920) as u32, (i / 1920) as u32);
            *p = if x < 960 {
                (x * 31 + y * 17).wrapping_mul(0x9e37_79b9) >> 8 & 0x00ff_ffff
            } else if (i / 7) % 3 == 0 {
                0x00ff_0000
            } else {
                0x0000_00ff
            };
        }
        let mut clients: Vec<(ServerSession, ClientSession)> = (0..3)
            .map(|_| {
                let mut s = ServerSession::new(w, h, PixelFormat::RGB888, "x");
                let mut out = Vec::new();
                s.feed(&set_encodings(&[7]), &mut out).expect("valid");
                s.feed(&request(false, 0, 0, w, h), &mut out)
                    .expect("valid");
                (s, rgb888_client(w, h))
            })
            .collect();
        for step in 0..20u16 {
            let bx = Rect::new(step * 20, 100, 33, 32);
            if step > 0 {
                for y in bx.y..bx.y + bx.height {
                    for x in bx.x..bx.x + bx.width {
                        fb.pixels_mut()[usize::from(y) * usize::from(w) + usize::from(x)] =
                            (u32::from(x * 7 + y * 13 + step) * 0x0001_0203) & 0x00ff_ffff;
                    }
                }
            }
            for (n, (s, c)) in clients.iter_mut().enumerate() {
                if step > 0 {
                    s.add_damage(bx);
                }
                if n == 2 && step == 10 {
                    // This client wants more than the others: its first encoding of
                    // its own, after taking only shared ones (its Tight encoder is
                    // made now, and must reset the client's used inflaters).
                    s.add_damage(Rect::new(0, 0, 10, 10));
                }
                let mut out = Vec::new();
                s.write_update_shared(&fb, u64::from(step), &cache, &mut out);
                c.feed(&out)
                    .unwrap_or_else(|e| panic!("client {n} step {step}: {e}"));
                assert_eq!(
                    c.framebuffer().pixels(),
                    fb.pixels(),
                    "client {n} step {step}"
                );
                let mut again = Vec::new();
                s.feed(&request(true, 0, 0, w, h), &mut again)
                    .expect("valid");
            }
        }
    }

    #[test]
    fn shared_updates_decode_for_every_client_and_late_joiners() {
        use std::sync::atomic::Ordering;
        // ZRLE and Zlib share only with clients that take kvmux's zlib-stream-reset.
        for encoding in [0, 5, 7, 16, 6] {
            let cache = CountingCache::default();
            let mut fb = sample_fb(64, 48);
            let encodings = [encoding, 0x4b56_4d01];
            let mut sessions: Vec<(ServerSession, ClientSession)> = Vec::new();
            for step in 0..6u32 {
                if step < 3 {
                    // A client joins at each of the first three steps.
                    let mut s = session(64, 48);
                    let mut out = Vec::new();
                    s.feed(&set_encodings(&encodings), &mut out).expect("valid");
                    assert!(s.shareable(), "encoding {encoding}");
                    s.feed(&request(false, 0, 0, 64, 48), &mut out)
                        .expect("valid");
                    sessions.push((s, rgb888_client(64, 48)));
                }
                // The frame changes in a band; every client has asked for it.
                let band = Rect::new(0, (step * 7) as u16, 64, 9);
                for y in band.y..band.y + band.height {
                    for x in 0..64u16 {
                        let i = usize::from(y) * 64 + usize::from(x);
                        fb.pixels_mut()[i] = (step * 0x0012_3457 + u32::from(x) * 3) & 0x00ff_ffff;
                    }
                }
                let before = cache.encodes.load(Ordering::Relaxed);
                for (s, client) in &mut sessions {
                    s.add_damage(band);
                    let mut out = Vec::new();
                    assert!(s.write_update_shared(&fb, u64::from(step), &cache, &mut out));
                    client.feed(&out).expect("a shared update decodes");
                    assert_eq!(
                        client.framebuffer().pixels(),
                        fb.pixels(),
                        "encoding {encoding} step {step}"
                    );
                    let mut again = Vec::new();
                    s.feed(&request(true, 0, 0, 64, 48), &mut again)
                        .expect("valid");
                }
                // Clients that have been here since an earlier step want the same
                // band: one encoding for all of them (a newcomer wants the whole
                // screen, another).
                let encodes = cache.encodes.load(Ordering::Relaxed) - before;
                let expected = if step == 0 {
                    1
                } else if step < 3 {
                    2
                } else {
                    1
                };
                assert_eq!(encodes, expected, "encoding {encoding} step {step}");
            }
            // Back to unshared updates: the streams start again and still decode.
            for (s, client) in &mut sessions {
                s.add_damage(Rect::new(0, 0, 64, 48));
                let mut out = Vec::new();
                assert!(s.write_update(&fb, &mut out));
                client
                    .feed(&out)
                    .expect("an unshared update after shared ones");
                assert_eq!(
                    client.framebuffer().pixels(),
                    fb.pixels(),
                    "encoding {encoding}"
                );
                let mut again = Vec::new();
                s.feed(&request(true, 0, 0, 64, 48), &mut again)
                    .expect("valid");
                s.add_damage(Rect::new(0, 0, 64, 48));
                out.clear();
                assert!(s.write_update(&fb, &mut out));
                client
                    .feed(&out)
                    .expect("and the next one continues that stream");
            }
        }
        // A ZRLE client without the extension is not shareable.
        let mut s = session(8, 8);
        let mut out = Vec::new();
        s.feed(&set_encodings(&[16]), &mut out).expect("valid");
        assert!(!s.shareable());
    }

    #[test]
    fn endless_requests_do_not_grow_the_session() {
        let mut s = session(100, 100);
        let mut out = Vec::new();
        s.feed(&set_encodings(&[0]), &mut out).expect("valid");
        for i in 0..10_000u16 {
            s.feed(&request(true, i % 90, i % 77, 10, 10), &mut out)
                .expect("valid");
        }
        let Request::Incremental(areas) = &s.request else {
            panic!("a request is pending");
        };
        assert!(areas.len() <= MAX_REQUEST_AREAS, "{} areas", areas.len());
        // The merged area still covers every request.
        let bounds = areas.iter().fold(Rect::default(), |a, r| a.union(r));
        assert_eq!(bounds, Rect::new(0, 0, 99, 86));
    }

    #[test]
    fn band_rows_split_rectangles_and_decode_the_same() {
        assert_eq!(
            bands(Rect::new(3, 5, 10, 40), 16).collect::<Vec<_>>(),
            [
                Rect::new(3, 5, 10, 16),
                Rect::new(3, 21, 10, 16),
                Rect::new(3, 37, 10, 8)
            ]
        );
        assert_eq!(bands(Rect::new(0, 0, 4, 4), 0).count(), 1);
        for encoding in [0, 5, 6, 7, 16] {
            let fb = sample_fb(100, 70);
            let mut s = session(100, 70);
            s.set_band_rows(16);
            let mut out = Vec::new();
            s.feed(&set_encodings(&[encoding]), &mut out)
                .expect("valid");
            s.feed(&request(false, 0, 0, 100, 70), &mut out)
                .expect("valid");
            assert!(s.write_update(&fb, &mut out));
            let mut client = rgb888_client(100, 70);
            client.feed(&out).expect("decodes");
            assert_eq!(
                client.framebuffer().pixels(),
                fb.pixels(),
                "encoding {encoding}"
            );
            let count = u16::from_be_bytes([out[2], out[3]]);
            assert!(
                count >= 5,
                "encoding {encoding}: {count} rectangles for 5 bands"
            );
        }
    }

    #[test]
    fn trimmed_buffers_keep_the_streams() {
        for encoding in [5, 6, 7, 16] {
            let fb = sample_fb(300, 200);
            let mut s = session(300, 200);
            let mut out = Vec::new();
            s.feed(&set_encodings(&[encoding]), &mut out)
                .expect("valid");
            s.feed(&request(false, 0, 0, 300, 200), &mut out)
                .expect("valid");
            assert!(s.write_update(&fb, &mut out));
            let mut client = rgb888_client(300, 200);
            client.feed(&out).expect("decodes");
            s.trim_buffers();
            // The next update continues the same zlib streams.
            let mut fb2 = fb.clone();
            fb2.pixels_mut()[..3000].fill(0x0012_3456);
            out.clear();
            s.feed(&request(true, 0, 0, 300, 200), &mut out)
                .expect("valid");
            s.add_damage(Rect::new(0, 0, 300, 10));
            assert!(s.write_update(&fb2, &mut out));
            client.feed(&out).expect("decodes after a trim");
            assert_eq!(
                client.framebuffer().pixels(),
                fb2.pixels(),
                "encoding {encoding}"
            );
        }
    }

    #[test]
    fn qemu_extended_key_events_are_announced_once() {
        let mut s = session(4, 4);
        let mut out = Vec::new();
        // Raw, then the QEMU extended key event pseudo-encoding (-258).
        s.feed(&set_encodings(&[0, -258]), &mut out).expect("valid");
        s.feed(&request(true, 0, 0, 4, 4), &mut out).expect("valid");
        // Nothing changed, yet an update is due: it carries the announcement alone.
        assert!(s.update_due());
        let fb = sample_fb(4, 4);
        out.clear();
        assert!(s.write_update(&fb, &mut out));
        #[rustfmt::skip]
        let expected = [
            0, 0, 0, 1, // FramebufferUpdate, one rectangle
            0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xfe, 0xfe, // 0x0 at 0,0, encoding -258
        ];
        assert_eq!(out, expected);
        // Not again: not on the next request, nor when the list is sent again.
        s.feed(&request(true, 0, 0, 4, 4), &mut out).expect("valid");
        assert!(!s.update_due());
        s.feed(&set_encodings(&[0, -258]), &mut out).expect("valid");
        assert!(!s.update_due());
        // A client that drops it and lists it again is told again.
        s.feed(&set_encodings(&[0]), &mut out).expect("valid");
        s.feed(&set_encodings(&[0, -258]), &mut out).expect("valid");
        assert!(s.update_due());
    }

    #[test]
    fn resize_name_and_cursor_go_first() {
        let mut s = session(4, 4);
        let mut out = Vec::new();
        s.feed(&set_encodings(&[0, -308, -307, -239]), &mut out)
            .expect("valid");
        s.feed(&request(true, 0, 0, 4, 4), &mut out).expect("valid");
        s.resize(6, 2);
        s.set_name("new name");
        s.set_cursor(CursorImage {
            hotspot_x: 0,
            hotspot_y: 0,
            width: 1,
            height: 1,
            rgba: vec![255, 0, 0, 255],
        });
        let fb = sample_fb(6, 2);
        assert!(s.write_update(&fb, &mut out));
        let mut client = rgb888_client(4, 4);
        client.feed(&out).expect("decodes");
        let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
        assert!(matches!(events[0], ClientEvent::UpdateStarted));
        let events = &events[1..];
        assert!(matches!(
            events[0],
            ClientEvent::ExtendedDesktopSizeSupported
        ));
        assert!(matches!(
            events[1],
            ClientEvent::Resized {
                width: 6,
                height: 2,
                ..
            }
        ));
        assert_eq!(events[2], ClientEvent::DesktopName("new name".into()));
        assert!(matches!(events[3], ClientEvent::Cursor(_)));
        assert_eq!(events.last(), Some(&ClientEvent::UpdateComplete));
        assert_eq!(client.framebuffer().pixels(), fb.pixels());
    }

    #[test]
    fn input_events_and_clamping() {
        let mut s = session(100, 50);
        let mut out = Vec::new();
        let mut b = vec![4, 1, 0, 0, 0, 0, 0, 0x61]; // key 'a' down
        b.extend_from_slice(&[5, 3, 0x03, 0xe8, 0x00, 0x0a]); // pointer (1000, 10), buttons 1|2
        b.extend_from_slice(&[255, 0, 0, 0, 0, 0, 0, 0x61, 0, 0, 0, 0x1e]); // QEMU key up, 'a', scan 0x1e
        b.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        s.feed(&b, &mut out).expect("valid");
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                ServerEvent::Key {
                    down: true,
                    keysym: 0x61
                },
                ServerEvent::Pointer {
                    buttons: 3,
                    x: 99,
                    y: 10
                },
                ServerEvent::QemuKey {
                    down: false,
                    keysym: 0x61,
                    keycode: 0x1e
                },
                ServerEvent::CutText(b"hi".to_vec()),
            ]
        );
    }

    #[test]
    fn protocol_replies() {
        let mut s = session(10, 10);
        s.enable_xvp(true);
        let mut out = Vec::new();
        // Continuous updates and xvp announced when the client lists them.
        s.feed(&set_encodings(&[0, -313, -309, -312]), &mut out)
            .expect("valid");
        assert_eq!(out, [150, 250, 0, 1, 1]);
        out.clear();
        // A fence request is answered with the same payload, request flag cleared.
        s.feed(&[248, 0, 0, 0, 0x80, 0, 0, 0x03, 2, 7, 9], &mut out)
            .expect("valid");
        assert_eq!(out, [248, 0, 0, 0, 0, 0, 0, 0x03, 2, 7, 9]);
        out.clear();
        // Continuous updates: updates without requests until disabled.
        s.feed(&[150, 1, 0, 0, 0, 0, 0, 10, 0, 10], &mut out)
            .expect("valid");
        let fb = sample_fb(10, 10);
        assert!(s.write_update(&fb, &mut out));
        s.add_damage(Rect::new(1, 1, 1, 1));
        assert!(s.update_due());
        out.clear();
        s.feed(&[150, 0, 0, 0, 0, 0, 0, 10, 0, 10], &mut out)
            .expect("valid");
        assert_eq!(out, [150]);
        // A colour-mapped client gets the map at once.
        out.clear();
        let mut pf = vec![0, 0, 0, 0];
        pf.extend_from_slice(&PixelFormat::COLOURMAP8.to_bytes());
        s.feed(&pf, &mut out).expect("valid");
        assert_eq!(&out[..6], &[1, 0, 0, 0, 1, 0]);
        assert_eq!(out.len(), 6 + 256 * 6);
    }

    #[test]
    fn hostile_messages_end_the_session() {
        let mut out = Vec::new();
        let err = session(10, 10)
            .feed(&[0x99], &mut out)
            .expect_err("unknown type");
        assert_eq!(err.message, "unknown client message type 153");
        let err = session(10, 10)
            .feed(&[2, 0, 0xff, 0xff], &mut out)
            .expect_err("too many encodings");
        assert_eq!(err.message, "SetEncodings");
        let err = session(10, 10)
            .feed(&[6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff], &mut out)
            .expect_err("huge cut text");
        assert_eq!(err.message, "ClientCutText");
        let mut s = session(10, 10);
        assert!(s.feed(&[0x99], &mut out).is_err());
        assert!(s.feed(&[4], &mut out).is_err(), "stays failed");
    }
}
