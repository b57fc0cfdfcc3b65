//! The client side of a connection after the handshake: server messages in,
//! framebuffer and events out.
//!
//! A [`ClientSession`] buffers what it is fed until a whole message (or a whole
//! rectangle of an update) is there, then applies it. Rectangles are measured before
//! they are decoded ([`RectDecoder::measure`](crate::decode::RectDecoder::measure)), so
//! a rectangle that arrives in many reads is decoded once, and nothing is buffered
//! beyond what a legitimate message of the framebuffer's size can hold.

use std::collections::{BTreeMap, VecDeque};

use crate::decode::{cursor, payload_limit, Decoders, Reader, ScanState};
use crate::error::{DecodeError, Measure, ProtocolError};
use crate::framebuffer::{Framebuffer, Rect};
use crate::handshake::ServerInit;
use crate::messages::{
    parse_screens, ClientMessage, ClipboardMessage, CutText, Fence, Limits, ParseError, RectHeader,
    Screen, ServerMessage, XvpServerCode,
};
use crate::pixel::{PixelConverter, PixelFormat};
use crate::Encoding;

/// What a session reports as it applies the server's messages.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A FramebufferUpdate has begun. A client that asks for updates one at a time can
    /// ask for the next one now, so that the server prepares it while this one is still
    /// being read and drawn (TigerVNC's viewer does the same).
    UpdateStarted,
    /// A FramebufferUpdate has been applied in full; the framebuffer's damage says where.
    UpdateComplete,
    /// The desktop changed size (DesktopSize or ExtendedDesktopSize). The framebuffer
    /// has been resized and is black until the server fills it.
    Resized {
        width: u16,
        height: u16,
        screens: Vec<Screen>,
    },
    /// The server answered a SetDesktopSize request (ExtendedDesktopSize with reason 1).
    DesktopSizeResult {
        status: u16,
    },
    /// The server supports ExtendedDesktopSize (and so SetDesktopSize).
    ExtendedDesktopSizeSupported,
    DesktopName(String),
    Cursor(cursor::CursorImage),
    Bell,
    /// Legacy cut text, Latin-1.
    CutText(Vec<u8>),
    Clipboard(ClipboardMessage),
    ServerFence(Fence),
    /// The server supports continuous updates (or ended them).
    EndOfContinuousUpdates,
    Xvp {
        version: u8,
        code: XvpServerCode,
    },
    /// The server will accept QEMU extended key events.
    QemuExtendedKeyEventSupported,
    /// Keyboard LEDs: bit 0 Scroll Lock, bit 1 Num Lock, bit 2 Caps Lock.
    LedState(u8),
    /// The server will accept ExtendedMouseButtons pointer events.
    ExtendedMouseButtonsSupported,
    /// QEMU pointer motion change: whether the pointer is absolute.
    PointerMode {
        absolute: bool,
    },
    /// An Open H.264 rectangle: the framing is checked, the video is not decoded here.
    H264 {
        rect: Rect,
        flags: u32,
        data: Vec<u8>,
    },
    /// kvmux zlib-stream-reset: every inflater has been reset.
    ZlibStreamsReset,
    /// A kvmux proxy's source list (sent to clients that list
    /// [`Encoding::KVMUX_SOURCES`]).
    Sources(crate::messages::SourceList),
}

/// Input buffer capacity past which it is given back once mostly empty.
const SHRINK_ABOVE: usize = 1 << 20;

#[derive(Debug)]
enum State {
    /// Waiting for the next message.
    Idle,
    /// Inside a FramebufferUpdate.
    Update {
        /// Rectangles left; `None` for an update that ends with LastRect.
        remaining: Option<u16>,
        index: u16,
        /// The rectangle in progress: its header, how far its payload was measured,
        /// and the stream offset of its header (errors point there however the
        /// bytes arrived).
        rect: Option<(RectHeader, ScanState, u64)>,
    },
    /// A protocol error ended the session.
    Failed,
}

/// Open H.264 rectangle header: U32 length + U32 flags.
const H264_HEADER: usize = 4 /* length */ + 4 /* flags */;
/// The longest desktop name accepted.
const MAX_NAME: u32 = 64 * 1024;

/// The client end of an RFB connection, after the handshake.
pub struct ClientSession {
    fb: Framebuffer,
    conv: PixelConverter,
    decoders: Decoders,
    limits: Limits,
    name: String,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    /// Stream offset of `buf[start]`, counted from the first byte after ServerInit.
    offset: u64,
    /// Where the last complete server message ended, counted like `offset`.
    boundary: u64,
    /// Don't look again until this many unconsumed bytes are buffered.
    need: usize,
    state: State,
    events: VecDeque<ClientEvent>,
    /// Rectangles applied so far, per encoding.
    rect_counts: BTreeMap<Encoding, u64>,
    /// Framing only: pixel rectangles are measured and skipped, not decoded.
    skip_pixels: bool,
    /// Rows of the Raw rectangle in progress already drawn: Raw is decoded row by row
    /// as it arrives, never buffered whole (a 1080p frame is 8 MiB).
    raw_rows_done: u16,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("fb", &self.fb)
            .field("format", self.conv.format())
            .field("state", &self.state)
            .finish()
    }
}

impl ClientSession {
    pub fn new(init: &ServerInit) -> ClientSession {
        ClientSession {
            fb: Framebuffer::new(init.width, init.height),
            conv: PixelConverter::new(init.pixel_format),
            decoders: Decoders::default(),
            limits: Limits::default(),
            name: init.name.clone(),
            buf: Vec::new(),
            start: 0,
            offset: 0,
            boundary: 0,
            need: 1,
            state: State::Idle,
            events: VecDeque::new(),
            rect_counts: BTreeMap::new(),
            skip_pixels: false,
            raw_rows_done: 0,
        }
    }

    /// Framing only (for measuring a server, not for showing its screen): rectangles
    /// of pixel encodings are measured ([`RectDecoder::measure`](crate::decode::RectDecoder::measure))
    /// and their area marked as damage, but their pixels are not decoded and the
    /// framebuffer keeps its old contents. Zlib streams are not inflated, so switch
    /// this on before the first update and leave it on for the session.
    pub fn set_skip_pixels(&mut self, skip: bool) {
        self.skip_pixels = skip;
    }

    /// Decodes Tight JPEG rectangles on `threads` threads of their own (1, the
    /// default, decodes everything on the caller's thread). JPEG rectangles are then
    /// decoded while the rest of the update is read, and drawn when the update ends,
    /// or earlier when another rectangle would draw over one of them (or copy from the
    /// picture, or resize it), so the picture is the same; only decoding errors
    /// surface later.
    pub fn set_decode_threads(&mut self, threads: usize) {
        self.decoders.tight.set_jpeg_threads(threads);
    }

    /// Draws the JPEG rectangles in flight if `area` (`None`: anything) touches one.
    fn settle(&mut self, area: Option<Rect>) -> Result<(), DecodeError> {
        let touched = self
            .decoders
            .tight
            .jpeg_in_flight()
            .iter()
            .any(|r| area.is_none_or(|a| a.intersects(r)));
        if touched {
            self.decoders.tight.finish_jpeg(&mut self.fb)?;
        }
        Ok(())
    }

    /// How many of the bytes fed so far form complete server messages (the end of the
    /// last one): what a proxy forwarding this stream may pass on without cutting a
    /// message.
    pub fn message_boundary(&self) -> u64 {
        self.boundary
    }

    pub fn framebuffer(&self) -> &Framebuffer {
        &self.fb
    }

    pub fn framebuffer_mut(&mut self) -> &mut Framebuffer {
        &mut self.fb
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pixel_format(&self) -> &PixelFormat {
        self.conv.format()
    }

    /// How many rectangles of each encoding (pseudo-encodings included) have been
    /// applied since the session started.
    pub fn rect_counts(&self) -> &BTreeMap<Encoding, u64> {
        &self.rect_counts
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Starts every zlib stream anew, as after kvmux's zlib-stream-reset (a replayed
    /// recording starts its streams from the beginning).
    pub fn reset_decoders(&mut self) {
        self.decoders.reset_streams();
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Writes SetPixelFormat and decodes with `format` from now on. Send it while no
    /// update is outstanding (servers apply it from the next update).
    pub fn set_pixel_format(
        &mut self,
        format: PixelFormat,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        format.validate()?;
        ClientMessage::SetPixelFormat(format).write(out);
        self.conv = PixelConverter::new(format);
        Ok(())
    }

    /// Writes SetEncodings.
    pub fn set_encodings(&mut self, encodings: &[Encoding], out: &mut Vec<u8>) {
        ClientMessage::SetEncodings(encodings.to_vec()).write(out);
    }

    /// Writes a FramebufferUpdateRequest for `rect` (the whole screen when `None`).
    pub fn request_update(&self, incremental: bool, rect: Option<Rect>, out: &mut Vec<u8>) {
        let rect = rect.unwrap_or_else(|| self.fb.bounds());
        ClientMessage::FramebufferUpdateRequest { incremental, rect }.write(out);
    }

    /// Feeds bytes from the server and applies every complete message. After an
    /// error the session is finished: further calls return the same kind of error.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        if matches!(self.state, State::Failed) {
            return Err(ProtocolError {
                message: "session".into(),
                offset: self.offset,
                error: DecodeError::invalid("session", "already failed"),
            });
        }
        if self.start > 0 {
            // Only after something was consumed: a large rectangle arriving in many
            // reads is never moved while it grows.
            self.buf.drain(..self.start);
            self.start = 0;
            // A large rectangle (a Raw frame is megabytes) is not kept buffered after
            // it has been decoded.
            if self.buf.capacity() > SHRINK_ABOVE && self.buf.len() < SHRINK_ABOVE / 4 {
                self.buf.shrink_to(SHRINK_ABOVE / 4);
            }
        }
        self.buf.extend_from_slice(data);
        let result = self.process();
        if result.is_err() {
            self.state = State::Failed;
        }
        if self.start == self.buf.len() {
            // Everything was used: nothing need stay buffered (an idle server may send
            // nothing more for a long time after a large rectangle).
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf.shrink_to(SHRINK_ABOVE / 4);
            }
        }
        result
    }

    fn available(&self) -> usize {
        self.buf.len() - self.start
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
        self.need = 1;
    }

    fn process(&mut self) -> Result<(), ProtocolError> {
        while self.available() >= self.need {
            let progressed = match self.state {
                State::Idle => self.process_message()?,
                State::Update { .. } => self.process_rect()?,
                State::Failed => false,
            };
            if !progressed {
                break;
            }
        }
        Ok(())
    }

    fn process_message(&mut self) -> Result<bool, ProtocolError> {
        let offset = self.offset;
        let input = &self.buf[self.start..];
        let (msg, used) = match ServerMessage::parse(input, &self.limits) {
            Ok(ok) => ok,
            Err(ParseError::Incomplete(n)) => {
                self.need = n.max(self.available() + 1);
                return Ok(false);
            }
            Err(ParseError::Invalid(error)) => {
                let t = input.first().copied().unwrap_or(0);
                let message = match ServerMessage::name_of_type(t) {
                    Some(name) => name.to_owned(),
                    None => format!("unknown server message type {t}"),
                };
                return Err(ProtocolError {
                    message,
                    offset,
                    error,
                });
            }
        };
        self.consume(used);
        match msg {
            ServerMessage::FramebufferUpdate { rectangles: 0 } => {
                self.events.push_back(ClientEvent::UpdateStarted);
                // Nothing is collected between updates: no decoding error here.
                self.finish_update().map_err(|error| ProtocolError {
                    message: "FramebufferUpdate".into(),
                    offset,
                    error,
                })?;
            }
            ServerMessage::FramebufferUpdate { rectangles } => {
                self.events.push_back(ClientEvent::UpdateStarted);
                self.state = State::Update {
                    remaining: (rectangles != u16::MAX).then_some(rectangles),
                    index: 0,
                    rect: None,
                };
            }
            ServerMessage::SetColourMapEntries {
                first_colour,
                colours,
            } => {
                self.conv.set_colour_map_entries(first_colour, &colours);
            }
            ServerMessage::Bell => self.events.push_back(ClientEvent::Bell),
            ServerMessage::ServerCutText(CutText::Latin1(text)) => {
                self.events.push_back(ClientEvent::CutText(text))
            }
            ServerMessage::ServerCutText(CutText::Extended(msg)) => {
                self.events.push_back(ClientEvent::Clipboard(msg))
            }
            ServerMessage::EndOfContinuousUpdates => {
                self.events.push_back(ClientEvent::EndOfContinuousUpdates)
            }
            ServerMessage::ServerFence(fence) => {
                self.events.push_back(ClientEvent::ServerFence(fence))
            }
            ServerMessage::Xvp { version, code } => {
                self.events.push_back(ClientEvent::Xvp { version, code })
            }
        }
        if matches!(self.state, State::Idle) {
            self.boundary = self.offset;
        }
        Ok(true)
    }

    fn finish_update(&mut self) -> Result<(), DecodeError> {
        self.settle(None)?;
        self.state = State::Idle;
        self.boundary = self.offset;
        self.events.push_back(ClientEvent::UpdateComplete);
        Ok(())
    }

    fn process_rect(&mut self) -> Result<bool, ProtocolError> {
        let State::Update {
            index,
            ref mut rect,
            ..
        } = self.state
        else {
            return Ok(false);
        };
        // The header first: consumed as soon as it is complete.
        let (header, mut scan, offset) = match rect.take() {
            Some(current) => current,
            None => {
                let offset = self.offset;
                let input = &self.buf[self.start..];
                match RectHeader::parse(input) {
                    Ok((header, used)) => {
                        self.consume(used);
                        (header, ScanState::default(), offset)
                    }
                    Err(ParseError::Incomplete(n)) => {
                        self.need = n;
                        return Ok(false);
                    }
                    Err(ParseError::Invalid(error)) => {
                        return Err(ProtocolError {
                            message: format!("FramebufferUpdate rectangle {index}"),
                            offset,
                            error,
                        });
                    }
                }
            }
        };
        let context = |error: DecodeError| ProtocolError {
            message: format!(
                "FramebufferUpdate rectangle {index} ({} {})",
                header.encoding, header.rect
            ),
            offset,
            error,
        };
        if header.encoding == Encoding::RAW && !self.skip_pixels && !header.rect.is_empty() {
            return self.process_raw_rows(header, scan, offset, index);
        }
        let measured = self.measure(&header, &mut scan).map_err(context)?;
        let len = match measured {
            Measure::Complete(len) => len,
            Measure::Need(n) => {
                if let State::Update { ref mut rect, .. } = self.state {
                    *rect = Some((header, scan, offset));
                }
                self.need = n.max(self.available() + 1);
                return Ok(false);
            }
        };
        let last = self.apply_rect(&header, len).map_err(context)?;
        self.consume(len);
        self.rect_done(header.encoding, last).map_err(context)?;
        Ok(true)
    }

    /// Draws the rows of a Raw rectangle that have arrived; the rectangle stays in
    /// progress until its last row.
    fn process_raw_rows(
        &mut self,
        header: RectHeader,
        scan: ScanState,
        offset: u64,
        index: u16,
    ) -> Result<bool, ProtocolError> {
        let r = header.rect;
        let context = |error: DecodeError| ProtocolError {
            message: format!("FramebufferUpdate rectangle {index} (raw {r})"),
            offset,
            error,
        };
        self.fb.check(&r).map_err(context)?;
        let row_bytes = usize::from(r.width) * usize::from(self.conv.format().bits_per_pixel / 8);
        let left = r.height - self.raw_rows_done;
        let rows = (self.available() / row_bytes.max(1)).min(usize::from(left)) as u16;
        if rows == 0 {
            if let State::Update { ref mut rect, .. } = self.state {
                *rect = Some((header, scan, offset));
            }
            self.need = row_bytes;
            return Ok(false);
        }
        let part = Rect::new(r.x, r.y + self.raw_rows_done, r.width, rows);
        self.settle(Some(part)).map_err(context)?;
        let len = usize::from(rows) * row_bytes;
        let payload = &self.buf[self.start..self.start + len];
        let decoder = self
            .decoders
            .get_mut(Encoding::RAW)
            .ok_or(DecodeError::UnsupportedEncoding(0))
            .map_err(context)?;
        decoder
            .decode(part, payload, &self.conv, &mut self.fb)
            .map_err(context)?;
        self.consume(len);
        self.raw_rows_done += rows;
        if self.raw_rows_done < r.height {
            if let State::Update { ref mut rect, .. } = self.state {
                *rect = Some((header, scan, offset));
            }
            return Ok(true);
        }
        self.raw_rows_done = 0;
        self.rect_done(Encoding::RAW, false).map_err(context)?;
        Ok(true)
    }

    /// A rectangle is complete: counts it, and ends the update after the last one.
    fn rect_done(&mut self, encoding: Encoding, last: bool) -> Result<(), DecodeError> {
        *self.rect_counts.entry(encoding).or_default() += 1;
        let mut done = last;
        if let State::Update {
            ref mut remaining,
            ref mut index,
            ..
        } = self.state
        {
            *index = index.wrapping_add(1);
            if let Some(r) = remaining {
                *r -= 1;
                done |= *r == 0;
            }
        }
        if done {
            self.finish_update()?;
        }
        Ok(())
    }

    /// How long the payload of the rectangle in progress is.
    fn measure(&self, header: &RectHeader, scan: &mut ScanState) -> Result<Measure, DecodeError> {
        let buf = &self.buf[self.start..];
        let r = header.rect;
        let need = |len: usize| {
            if buf.len() >= len {
                Measure::Complete(len)
            } else {
                Measure::Need(len)
            }
        };
        Ok(match header.encoding {
            Encoding::DESKTOP_SIZE
            | Encoding::LAST_RECT
            | Encoding::QEMU_EXTENDED_KEY_EVENT
            | Encoding::QEMU_POINTER_MOTION_CHANGE
            | Encoding::EXTENDED_MOUSE_BUTTONS
            | Encoding::KVMUX_ZLIB_RESET => Measure::Complete(0),
            Encoding::QEMU_LED_STATE => need(1),
            Encoding::VMWARE_LED_STATE => need(4),
            Encoding::KVMUX_SOURCES => crate::messages::SourceList::measure(r.y, buf)?,
            Encoding::EXTENDED_DESKTOP_SIZE => match parse_screens(buf) {
                Ok((_, used)) => Measure::Complete(used),
                Err(ParseError::Incomplete(n)) => Measure::Need(n),
                Err(ParseError::Invalid(e)) => return Err(e),
            },
            Encoding::DESKTOP_NAME => {
                if buf.len() < 4 {
                    return Ok(Measure::Need(4));
                }
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if len > MAX_NAME {
                    return Err(DecodeError::TooLong {
                        context: "desktop name",
                        length: len.into(),
                        limit: MAX_NAME.into(),
                    });
                }
                need(4 + len as usize)
            }
            Encoding::CURSOR => cursor::measure_cursor(r, &self.conv, buf)?,
            Encoding::CURSOR_WITH_ALPHA => cursor::measure_alpha_cursor(r, buf)?,
            Encoding::OPEN_H264 => {
                if buf.len() < H264_HEADER {
                    return Ok(Measure::Need(H264_HEADER));
                }
                let len = u64::from(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                let limit = payload_limit(r);
                if len > limit {
                    return Err(DecodeError::TooLong {
                        context: "open h.264 rectangle",
                        length: len,
                        limit,
                    });
                }
                need(H264_HEADER + len as usize)
            }
            encoding => {
                self.fb.check(&r)?;
                let decoder = self
                    .decoders
                    .get(encoding)
                    .ok_or(DecodeError::UnsupportedEncoding(encoding.0))?;
                let m = decoder.measure(r, &self.conv, buf, scan)?;
                let (Measure::Complete(len) | Measure::Need(len)) = m;
                let limit = payload_limit(r);
                if len as u64 > limit {
                    return Err(DecodeError::TooLong {
                        context: "rectangle",
                        length: len as u64,
                        limit,
                    });
                }
                m
            }
        })
    }

    /// Applies a complete rectangle of `len` payload bytes. Returns true for LastRect.
    fn apply_rect(&mut self, header: &RectHeader, len: usize) -> Result<bool, DecodeError> {
        let payload = &self.buf[self.start..self.start + len];
        let r = header.rect;
        match header.encoding {
            Encoding::LAST_RECT => return Ok(true),
            Encoding::DESKTOP_SIZE => {
                self.settle(None)?;
                self.resize(r.width, r.height, Vec::new())?
            }
            Encoding::EXTENDED_DESKTOP_SIZE => {
                let (screens, _) = parse_screens(payload).map_err(|e| match e {
                    ParseError::Invalid(e) => e,
                    ParseError::Incomplete(n) => DecodeError::Truncated {
                        context: "screens",
                        needed: n,
                    },
                })?;
                // x is the reason, y the status; reason 1 answers our SetDesktopSize.
                if r.x == 1 {
                    self.events
                        .push_back(ClientEvent::DesktopSizeResult { status: r.y });
                } else if r.x == 0
                    && r.y == 0
                    && r.width == 0
                    && r.height == 0
                    && screens.is_empty()
                {
                    // Nothing to apply.
                } else {
                    self.events
                        .push_back(ClientEvent::ExtendedDesktopSizeSupported);
                }
                if r.y == 0 {
                    self.settle(None)?;
                    self.resize(r.width, r.height, screens)?;
                }
            }
            Encoding::DESKTOP_NAME => {
                let name = String::from_utf8_lossy(&payload[4..]).into_owned();
                self.name.clone_from(&name);
                self.events.push_back(ClientEvent::DesktopName(name));
            }
            Encoding::CURSOR => {
                let image = cursor::decode_cursor(r, payload, &self.conv)?;
                self.events.push_back(ClientEvent::Cursor(image));
            }
            Encoding::CURSOR_WITH_ALPHA => {
                let image = cursor::decode_alpha_cursor(r, payload)?;
                self.events.push_back(ClientEvent::Cursor(image));
            }
            Encoding::QEMU_EXTENDED_KEY_EVENT => self
                .events
                .push_back(ClientEvent::QemuExtendedKeyEventSupported),
            Encoding::EXTENDED_MOUSE_BUTTONS => self
                .events
                .push_back(ClientEvent::ExtendedMouseButtonsSupported),
            Encoding::QEMU_POINTER_MOTION_CHANGE => {
                self.events
                    .push_back(ClientEvent::PointerMode { absolute: r.x != 0 });
            }
            Encoding::QEMU_LED_STATE => self.events.push_back(ClientEvent::LedState(payload[0])),
            Encoding::VMWARE_LED_STATE => {
                // VMware's bits: 0 Scroll, 1 Num, 2 Caps — the same order as QEMU's.
                let mut r = Reader::new(payload, "vmware led state");
                self.events
                    .push_back(ClientEvent::LedState((r.u32()? & 0x7) as u8));
            }
            Encoding::KVMUX_ZLIB_RESET => {
                self.decoders.reset_streams();
                self.events.push_back(ClientEvent::ZlibStreamsReset);
            }
            Encoding::KVMUX_SOURCES => {
                let list = crate::messages::SourceList::parse(r.x, r.y, payload)?;
                self.events.push_back(ClientEvent::Sources(list));
            }
            Encoding::OPEN_H264 => {
                let mut rd = Reader::new(payload, "open h.264 rectangle");
                let _len = rd.u32()?;
                let flags = rd.u32()?;
                self.events.push_back(ClientEvent::H264 {
                    rect: r,
                    flags,
                    data: rd.rest().to_vec(),
                });
            }
            _ if self.skip_pixels => self.fb.add_damage(r),
            encoding => {
                // CopyRect reads the picture: everything collected must be in it.
                let area = (encoding != Encoding::COPY_RECT).then_some(r);
                self.settle(area)?;
                let payload = &self.buf[self.start..self.start + len];
                let decoder = self
                    .decoders
                    .get_mut(encoding)
                    .ok_or(DecodeError::UnsupportedEncoding(encoding.0))?;
                decoder.decode(r, payload, &self.conv, &mut self.fb)?;
            }
        }
        Ok(false)
    }

    /// Resizes the framebuffer, refusing sizes past [`Limits::max_framebuffer_area`].
    fn resize(&mut self, width: u16, height: u16, screens: Vec<Screen>) -> Result<(), DecodeError> {
        let limit = self.limits.max_framebuffer_area;
        if u64::from(width) * u64::from(height) > u64::from(limit) {
            return Err(DecodeError::invalid(
                "desktop size",
                format!("{width}x{height} exceeds the limit of {limit} pixels"),
            ));
        }
        if width != self.fb.width() || height != self.fb.height() {
            self.fb.resize(width, height);
        }
        self.events.push_back(ClientEvent::Resized {
            width,
            height,
            screens,
        });
        Ok(())
    }
}

#[cfg(test)]
mod fuzz_found_tests {
    use super::*;

    fn session() -> ClientSession {
        ClientSession::new(&ServerInit {
            width: 64,
            height: 48,
            pixel_format: PixelFormat::RGB888,
            name: String::new(),
        })
    }

    #[test]
    fn a_rectangle_error_points_at_its_header_however_the_bytes_arrive() {
        #[rustfmt::skip]
        let stream = [
            2, // Bell: the update starts at byte 1
            0, 0, 0, 1, // FramebufferUpdate, 1 rectangle; its header at byte 5
            0, 0, 0, 0, 0, 4, 0, 4, 0, 0, 0, 16, // 4x4 ZRLE
            0, 0, 0, 2, 0x12, 0x34, // 2 bytes that are no zlib stream
        ];
        let mut whole = session();
        let error = whole.feed(&stream).expect_err("bad zlib");
        assert_eq!(error.offset, 5, "{error}");
        // The header alone first: the rectangle is then finished by a later feed.
        let mut split = session();
        split.feed(&stream[..17]).expect("header and length");
        assert_eq!(split.feed(&stream[17..]), Err(error));
    }

    /// A FramebufferUpdate of one pseudo-rectangle resizing to `width` x `height`.
    fn resize_to(encoding: Encoding, width: u16, height: u16) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 1];
        RectHeader {
            rect: Rect::new(0, 0, width, height),
            encoding,
        }
        .write(&mut out);
        if encoding == Encoding::EXTENDED_DESKTOP_SIZE {
            out.extend_from_slice(&[0, 0, 0, 0]); // no screens
        }
        out
    }

    #[test]
    fn a_desktop_larger_than_the_limit_is_refused_before_allocating() {
        for encoding in [Encoding::DESKTOP_SIZE, Encoding::EXTENDED_DESKTOP_SIZE] {
            // 65535 x 65535 would be 16 GiB of pixels.
            let mut s = session();
            let err = s
                .feed(&resize_to(encoding, u16::MAX, u16::MAX))
                .expect_err("too large");
            assert!(
                err.to_string()
                    .contains("65535x65535 exceeds the limit of 67108864 pixels"),
                "{err}"
            );
            assert_eq!(
                (s.framebuffer().width(), s.framebuffer().height()),
                (64, 48)
            );

            // Exactly at a smaller limit is fine, one row more is not.
            let mut s = session();
            s.set_limits(Limits {
                max_framebuffer_area: 100 * 30,
                ..Limits::default()
            });
            s.feed(&resize_to(encoding, 100, 30)).expect("at the limit");
            assert_eq!(
                (s.framebuffer().width(), s.framebuffer().height()),
                (100, 30)
            );
            assert!(s.feed(&resize_to(encoding, 100, 31)).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    //! Server byte streams written out by hand from the spec.
    use super::*;

    fn init(width: u16, height: u16) -> ServerInit {
        ServerInit {
            width,
            height,
            pixel_format: PixelFormat::RGB888,
            name: "test".into(),
        }
    }

    /// A Tight JPEG rectangle of `rect` of `fb`, header included.
    fn tight_jpeg(fb: &Framebuffer, r: Rect) -> Vec<u8> {
        let jfif = crate::jpeg::JpegEncoder::default()
            .encode(fb, r, 90, crate::jpeg::Subsampling::None)
            .expect("jpeg")
            .to_vec();
        let mut b = rect(r.x, r.y, r.width, r.height, 7);
        b.push(0x90);
        let n = jfif.len();
        assert!(n < 1 << 21);
        b.extend_from_slice(&[
            (n as u8 & 0x7f) | 0x80,
            ((n >> 7) as u8 & 0x7f) | 0x80,
            (n >> 14) as u8,
        ]);
        b.extend(jfif);
        b
    }

    #[test]
    fn jpeg_on_several_threads_draws_what_one_thread_draws() {
        // A picture to send as JPEG pieces.
        let mut source = Framebuffer::new(96, 64);
        for (i, p) in source.pixels_mut().iter_mut().enumerate() {
            let (x, y) = ((i % 96) as u32, (i / 96) as u32);
            *p = ((x * 2) << 16) | ((y * 3) << 8) | ((x + y) & 0xff);
        }
        // Update 1: four JPEG quarters, a fill over part of the second, a CopyRect from
        // the third, then a JPEG that overlaps the fill.
        let mut b = vec![0, 0, 0, 7];
        for r in [
            Rect::new(0, 0, 48, 32),
            Rect::new(48, 0, 48, 32),
            Rect::new(0, 32, 48, 32),
            Rect::new(48, 32, 48, 32),
        ] {
            b.extend(tight_jpeg(&source, r));
        }
        b.extend(rect(60, 10, 20, 10, 7));
        b.extend_from_slice(&[0x80, 0xff, 0x00, 0x00]);
        b.extend(rect(0, 0, 16, 16, 1));
        b.extend_from_slice(&[0, 5, 0, 40]);
        b.extend(tight_jpeg(&source, Rect::new(70, 15, 8, 8)));
        let first_len = b.len();
        // Update 2: a JPEG piece, then a desktop resize.
        b.extend_from_slice(&[0, 0, 0, 2]);
        b.extend(tight_jpeg(&source, Rect::new(8, 8, 40, 40)));
        b.extend(rect(0, 0, 80, 60, -223));

        let mut pictures = Vec::new();
        for threads in [1, 2, 3] {
            let mut s = ClientSession::new(&init(96, 64));
            s.set_decode_threads(threads);
            // Fed in odd-sized pieces, so rectangles end at every point.
            for piece in b[..first_len].chunks(997) {
                s.feed(piece).expect("valid");
            }
            let first = s.framebuffer().pixels().to_vec();
            for piece in b[first_len..].chunks(997) {
                s.feed(piece).expect("valid");
            }
            assert_eq!(s.framebuffer().width(), 80);
            let second = s.framebuffer().pixels().to_vec();
            let events = events(&mut s);
            assert_eq!(
                events
                    .iter()
                    .filter(|e| matches!(e, ClientEvent::UpdateComplete))
                    .count(),
                2
            );
            pictures.push((first, second));
        }
        // The fill, the copy and the JPEG over the fill are where they belong.
        let (fb, _) = &pictures[0];
        assert_eq!(fb[12 * 96 + 62], 0x00ff_0000);
        let near = |got: u32, want: u32| {
            [0, 8, 16]
                .iter()
                .all(|s| ((got >> s) & 0xff).abs_diff((want >> s) & 0xff) <= 12)
        };
        assert!(near(fb[3 * 96 + 2], source.pixels()[43 * 96 + 7]), "copied");
        assert!(
            near(fb[16 * 96 + 71], source.pixels()[16 * 96 + 71]),
            "jpeg over fill"
        );
        for (threads, picture) in [2, 3].iter().zip(&pictures[1..]) {
            assert!(picture.0 == pictures[0].0, "{threads} threads, update 1");
            assert!(picture.1 == pictures[0].1, "{threads} threads, update 2");
        }
    }

    fn rect(x: u16, y: u16, w: u16, h: u16, encoding: i32) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [x, y, w, h] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&encoding.to_be_bytes());
        b
    }

    fn events(s: &mut ClientSession) -> Vec<ClientEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// A 4x2 screen: a Raw rectangle for the left half, an RRE fill for the right,
    /// then DesktopName, ending with LastRect in an update of 0xFFFF rectangles.
    fn sample_update() -> Vec<u8> {
        let mut b = vec![0, 0, 0xff, 0xff];
        b.extend(rect(0, 0, 2, 2, 0));
        for px in [0x0011_2233u32, 0x0044_5566, 0x0077_8899, 0x00aa_bbcc] {
            b.extend_from_slice(&px.to_le_bytes());
        }
        b.extend(rect(2, 0, 2, 2, 2));
        b.extend_from_slice(&[0, 0, 0, 0]); // no subrectangles
        b.extend_from_slice(&0x00de_ad00u32.to_le_bytes());
        b.extend(rect(0, 0, 0, 0, -307));
        b.extend_from_slice(&[0, 0, 0, 3]);
        b.extend_from_slice(b"pc1");
        b.extend(rect(0, 0, 0, 0, -224));
        b.push(2); // then a Bell
        b
    }

    const SAMPLE_PIXELS: [u32; 8] = [
        0x0011_2233,
        0x0044_5566,
        0x00de_ad00,
        0x00de_ad00,
        0x0077_8899,
        0x00aa_bbcc,
        0x00de_ad00,
        0x00de_ad00,
    ];

    #[test]
    fn update_with_last_rect_and_name() {
        let mut s = ClientSession::new(&init(4, 2));
        s.feed(&sample_update()).expect("valid stream");
        assert_eq!(s.framebuffer().pixels(), &SAMPLE_PIXELS);
        assert_eq!(
            events(&mut s),
            vec![
                ClientEvent::UpdateStarted,
                ClientEvent::DesktopName("pc1".into()),
                ClientEvent::UpdateComplete,
                ClientEvent::Bell
            ]
        );
        assert_eq!(s.name(), "pc1");
        assert_eq!(s.framebuffer().damage().bounds(), Rect::new(0, 0, 4, 2));
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let mut s = ClientSession::new(&init(4, 2));
        for b in sample_update() {
            s.feed(&[b]).expect("valid stream");
        }
        assert_eq!(s.framebuffer().pixels(), &SAMPLE_PIXELS);
        assert_eq!(events(&mut s).len(), 4);
    }

    #[test]
    fn message_boundary_follows_complete_messages() {
        // A Bell (1 byte), then an update of one 1x1 Raw rectangle (4 + 12 + 4 bytes).
        let mut b = vec![2];
        b.extend_from_slice(&[0, 0, 0, 1]);
        b.extend(rect(0, 0, 1, 1, 0));
        b.extend_from_slice(&[1, 2, 3, 0]);
        let mut s = ClientSession::new(&init(4, 2));
        let mut boundaries = Vec::new();
        for byte in &b {
            s.feed(std::slice::from_ref(byte)).expect("valid");
            boundaries.push(s.message_boundary());
        }
        // After the Bell: 1. Inside the update: still 1. At its last byte: 21.
        assert_eq!(boundaries[0], 1);
        assert!(boundaries[1..20].iter().all(|&b| b == 1));
        assert_eq!(boundaries[20], 21);
    }

    #[test]
    fn skipping_pixels_frames_the_update_without_drawing() {
        let mut s = ClientSession::new(&init(4, 2));
        s.set_skip_pixels(true);
        s.feed(&sample_update()).expect("valid stream");
        assert_eq!(s.framebuffer().pixels(), &[0; 8]);
        assert_eq!(
            s.framebuffer().damage().rects(),
            &[Rect::new(0, 0, 2, 2), Rect::new(2, 0, 2, 2)]
        );
        // Pseudo-rectangles still apply, and the stream stays in step (the Bell).
        assert_eq!(
            events(&mut s),
            vec![
                ClientEvent::UpdateStarted,
                ClientEvent::DesktopName("pc1".into()),
                ClientEvent::UpdateComplete,
                ClientEvent::Bell
            ]
        );
        // A rectangle outside the framebuffer is still refused.
        let mut b = vec![0, 0, 0, 1];
        b.extend(rect(3, 0, 2, 2, 0));
        b.extend_from_slice(&[0; 16]);
        assert!(s.feed(&b).is_err());
    }

    #[test]
    fn desktop_size_resizes() {
        let mut s = ClientSession::new(&init(4, 2));
        let mut b = vec![0, 0, 0, 1];
        b.extend(rect(0, 0, 8, 6, -223));
        s.feed(&b).expect("valid");
        assert_eq!((s.framebuffer().width(), s.framebuffer().height()), (8, 6));
        assert_eq!(
            events(&mut s),
            vec![
                ClientEvent::UpdateStarted,
                ClientEvent::Resized {
                    width: 8,
                    height: 6,
                    screens: vec![]
                },
                ClientEvent::UpdateComplete
            ]
        );
    }

    #[test]
    fn extended_desktop_size_with_screens_and_a_refusal() {
        let mut s = ClientSession::new(&init(4, 2));
        let screen = |id: u32, w: u16, h: u16| {
            let mut b = id.to_be_bytes().to_vec();
            for v in [0u16, 0, w, h] {
                b.extend_from_slice(&v.to_be_bytes());
            }
            b.extend_from_slice(&0u32.to_be_bytes());
            b
        };
        let mut b = vec![0, 0, 0, 2];
        // Reason 0 (server), status 0: the new layout.
        b.extend(rect(0, 0, 10, 4, -308));
        b.extend_from_slice(&[1, 0, 0, 0]);
        b.extend(screen(7, 10, 4));
        // Reason 1 (this client asked), status 3 (invalid layout): nothing changes.
        b.extend(rect(1, 3, 10, 4, -308));
        b.extend_from_slice(&[1, 0, 0, 0]);
        b.extend(screen(7, 10, 4));
        s.feed(&b).expect("valid");
        let screens = vec![Screen {
            id: 7,
            x: 0,
            y: 0,
            width: 10,
            height: 4,
            flags: 0,
        }];
        assert_eq!(
            events(&mut s),
            vec![
                ClientEvent::UpdateStarted,
                ClientEvent::ExtendedDesktopSizeSupported,
                ClientEvent::Resized {
                    width: 10,
                    height: 4,
                    screens
                },
                ClientEvent::DesktopSizeResult { status: 3 },
                ClientEvent::UpdateComplete,
            ]
        );
        assert_eq!(s.framebuffer().width(), 10);
    }

    #[test]
    fn open_h264_framing() {
        let mut s = ClientSession::new(&init(16, 16));
        let mut b = vec![0, 0, 0, 2];
        b.extend(rect(0, 0, 16, 16, 50));
        b.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 1]); // length 5, ResetContext
        b.extend_from_slice(&[0, 0, 0, 1, 0x67]);
        b.extend(rect(0, 0, 16, 16, 50));
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]); // flags only: ResetAllContexts
        s.feed(&b).expect("valid");
        let r = Rect::new(0, 0, 16, 16);
        assert_eq!(
            events(&mut s),
            vec![
                ClientEvent::UpdateStarted,
                ClientEvent::H264 {
                    rect: r,
                    flags: 1,
                    data: vec![0, 0, 0, 1, 0x67]
                },
                ClientEvent::H264 {
                    rect: r,
                    flags: 2,
                    data: vec![]
                },
                ClientEvent::UpdateComplete,
            ]
        );
    }

    #[test]
    fn pseudo_rectangles_without_payload_and_leds() {
        let mut s = ClientSession::new(&init(4, 4));
        let mut b = vec![0, 0, 0, 5];
        b.extend(rect(0, 0, 0, 0, -258));
        b.extend(rect(1, 0, 0, 0, -257));
        b.extend(rect(0, 0, 0, 0, -261));
        b.push(0b101);
        b.extend(rect(0, 0, 0, 0, 0x574d_5668));
        b.extend_from_slice(&[0, 0, 0, 2]);
        b.extend(rect(0, 0, 0, 0, 0x4b56_4d01));
        s.feed(&b).expect("valid");
        assert_eq!(
            events(&mut s),
            vec![
                ClientEvent::UpdateStarted,
                ClientEvent::QemuExtendedKeyEventSupported,
                ClientEvent::PointerMode { absolute: true },
                ClientEvent::LedState(0b101),
                ClientEvent::LedState(2),
                ClientEvent::ZlibStreamsReset,
                ClientEvent::UpdateComplete,
            ]
        );
    }

    #[test]
    fn kvmux_source_list_arrives_in_pieces() {
        // One update: the list (active 0 of 1, "pc", 640x480, connected, no status).
        let mut b = vec![0, 0, 0, 1];
        b.extend(rect(0, 1, 0, 0, 0x4b56_4d02));
        b.extend_from_slice(&[0, 0x02, 0x80, 0x01, 0xe0, 2, b'p', b'c', 0, 0]);
        let mut s = ClientSession::new(&init(4, 4));
        for byte in &b {
            s.feed(std::slice::from_ref(byte)).expect("valid");
        }
        let expected = crate::messages::SourceList {
            active: 0,
            sources: vec![crate::messages::SourceInfo {
                state: crate::messages::SourceState::Connected,
                width: 640,
                height: 480,
                name: "pc".into(),
                status: String::new(),
            }],
        };
        assert_eq!(
            events(&mut s),
            vec![
                ClientEvent::UpdateStarted,
                ClientEvent::Sources(expected),
                ClientEvent::UpdateComplete
            ]
        );
    }

    #[test]
    fn zlib_reset_restarts_the_zrle_stream() {
        use flate2::{Compress, Compression, FlushCompress};
        // A 2x1 ZRLE rectangle: one tile, solid (subencoding 1), CPIXEL 3 bytes.
        fn zrle_rect(c: &mut Compress, colour: [u8; 3]) -> Vec<u8> {
            let tile = [1, colour[0], colour[1], colour[2]];
            let mut z = Vec::with_capacity(64);
            c.compress_vec(&tile, &mut z, FlushCompress::Sync)
                .expect("deflate");
            let mut b = rect(0, 0, 2, 1, 16);
            b.extend_from_slice(&(z.len() as u32).to_be_bytes());
            b.extend(z);
            b
        }
        let mut s = ClientSession::new(&init(2, 1));
        let mut first = Compress::new(Compression::default(), true);
        let mut b = vec![0, 0, 0, 1];
        b.extend(zrle_rect(&mut first, [0x33, 0x22, 0x11]));
        s.feed(&b).expect("first stream");
        assert_eq!(s.framebuffer().pixels(), &[0x0011_2233, 0x0011_2233]);
        // A new server (a new deflate stream) after the reset pseudo-rectangle.
        let mut second = Compress::new(Compression::default(), true);
        let mut b = vec![0, 0, 0, 2];
        b.extend(rect(0, 0, 0, 0, 0x4b56_4d01));
        b.extend(zrle_rect(&mut second, [0x66, 0x55, 0x44]));
        s.feed(&b).expect("second stream after the reset");
        assert_eq!(s.framebuffer().pixels(), &[0x0044_5566, 0x0044_5566]);
        // Without the reset, a third fresh stream is corrupt for the client.
        let mut third = Compress::new(Compression::default(), true);
        let mut b = vec![0, 0, 0, 1];
        b.extend(zrle_rect(&mut third, [1, 2, 3]));
        assert!(s.feed(&b).is_err());
    }

    #[test]
    fn errors_name_the_message_and_offset() {
        let mut s = ClientSession::new(&init(4, 2));
        let mut b = sample_update();
        b.extend_from_slice(&[0, 0, 0, 1]);
        let bad_at = b.len() as u64;
        b.extend(rect(3, 1, 2, 2, 0)); // reaches x=5 > 4
        let err = s.feed(&b).expect_err("out of bounds");
        assert_eq!(err.offset, bad_at);
        assert!(err.message.contains("rectangle 0"), "{err}");
        assert!(
            matches!(err.error, DecodeError::OutOfBounds { .. }),
            "{err}"
        );
        // The session stays failed.
        assert!(s.feed(&[2]).is_err());
        let mut s = ClientSession::new(&init(4, 2));
        let err = s.feed(&[9]).expect_err("unknown type");
        assert_eq!(err.message, "unknown server message type 9");
        assert_eq!(err.offset, 0);
    }

    #[test]
    fn unrequested_encoding_is_refused() {
        let mut s = ClientSession::new(&init(4, 2));
        let mut b = vec![0, 0, 0, 1];
        b.extend(rect(0, 0, 1, 1, 12345));
        let err = s.feed(&b).expect_err("unknown encoding");
        assert!(err.to_string().contains("12345"), "{err}");
    }

    #[test]
    fn raw_rectangles_are_drawn_row_by_row_as_they_arrive() {
        // A large Raw rectangle fed in pieces: whole rows are drawn as they arrive
        // (never buffered whole), the update ends with its last row.
        let mut s = ClientSession::new(&init(64, 64));
        let mut b = vec![0, 0, 0, 1];
        b.extend(rect(0, 0, 64, 64, 0));
        b.extend(std::iter::repeat_n([0x10, 0x20, 0x30, 0], 64 * 64).flatten());
        let (head, tail) = b.split_at(b.len() - 1);
        s.feed(head).expect("valid");
        assert_eq!(
            s.framebuffer().pixel(63, 62),
            Some(0x0030_2010),
            "row 62 drawn"
        );
        assert_eq!(s.framebuffer().pixel(0, 63), Some(0), "row 63 incomplete");
        assert_eq!(events(&mut s), vec![ClientEvent::UpdateStarted]);
        // Nothing of the stream stays buffered but the incomplete row.
        assert!(s.buf.len() - s.start < 64 * 4);
        s.feed(tail).expect("valid");
        assert_eq!(s.framebuffer().pixel(63, 63), Some(0x0030_2010));
        assert_eq!(s.framebuffer().damage().bounds(), Rect::new(0, 0, 64, 64));
        assert_eq!(events(&mut s), vec![ClientEvent::UpdateComplete]);
        // Fed one byte at a time, the same picture and one update.
        let mut s = ClientSession::new(&init(64, 64));
        for byte in &b {
            s.feed(std::slice::from_ref(byte)).expect("valid");
        }
        assert_eq!(s.framebuffer().pixel(63, 63), Some(0x0030_2010));
        assert_eq!(
            events(&mut s),
            vec![ClientEvent::UpdateStarted, ClientEvent::UpdateComplete]
        );
        // A Raw rectangle past the framebuffer is refused at its header.
        let mut s = ClientSession::new(&init(4, 4));
        let mut bad = vec![0, 0, 0, 1];
        bad.extend(rect(2, 0, 4, 1, 0));
        assert!(s.feed(&bad).is_err());
    }

    #[test]
    fn colour_map_entries_apply() {
        let init = ServerInit {
            width: 2,
            height: 1,
            pixel_format: PixelFormat::COLOURMAP8,
            name: String::new(),
        };
        let mut s = ClientSession::new(&init);
        // SetColourMapEntries: type 1, padding, first 5, two colours.
        let mut b = vec![
            1, 0, 0, 5, 0, 2, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 0, 0,
        ];
        b.extend_from_slice(&[0, 0, 0, 1]);
        b.extend(rect(0, 0, 2, 1, 0));
        b.extend_from_slice(&[5, 6]);
        s.feed(&b).expect("valid");
        assert_eq!(s.framebuffer().pixels(), &[0x00ff_0000, 0x0000_8000]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod count_tests {
    use super::*;

    /// A rectangle header: x, y, width, height (U16 each), encoding (S32).
    fn rect_header(out: &mut Vec<u8>, (x, y, w, h): (u16, u16, u16, u16), encoding: i32) {
        for v in [x, y, w, h] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&encoding.to_be_bytes());
    }

    #[test]
    fn rectangles_are_counted_per_encoding() {
        let init = ServerInit {
            width: 4,
            height: 2,
            pixel_format: PixelFormat::RGB888,
            name: String::new(),
        };
        let mut session = ClientSession::new(&init);
        assert!(session.rect_counts().is_empty());
        // FramebufferUpdate: type 0, padding, 2 rectangles.
        let mut update = vec![0, 0, 0, 2];
        // Raw 2x1 at (0, 0): 32 bpp little-endian 0x00RRGGBB pixels.
        rect_header(&mut update, (0, 0, 2, 1), 0);
        update.extend_from_slice(&[0x33, 0x22, 0x11, 0, 0x66, 0x55, 0x44, 0]);
        // CopyRect 2x1 to (1, 1) from (0, 0).
        rect_header(&mut update, (1, 1, 2, 1), 1);
        update.extend_from_slice(&[0, 0, 0, 0]);
        // A second update ended by LastRect: CopyRect 1x1 to (3, 0) from (1, 1).
        update.extend_from_slice(&[0, 0, 0xff, 0xff]);
        rect_header(&mut update, (3, 0, 1, 1), 1);
        update.extend_from_slice(&[0, 1, 0, 1]);
        rect_header(&mut update, (0, 0, 0, 0), -224);
        // Fed a byte at a time: rectangles are counted once, when applied.
        for byte in &update {
            session.feed(std::slice::from_ref(byte)).unwrap();
        }
        for _ in 0..2 {
            assert_eq!(session.poll_event(), Some(ClientEvent::UpdateStarted));
            assert_eq!(session.poll_event(), Some(ClientEvent::UpdateComplete));
        }
        assert_eq!(session.poll_event(), None);
        let counts: Vec<(Encoding, u64)> = session
            .rect_counts()
            .iter()
            .map(|(&e, &n)| (e, n))
            .collect();
        assert_eq!(
            counts,
            [
                (Encoding::LAST_RECT, 1),
                (Encoding::RAW, 1),
                (Encoding::COPY_RECT, 2)
            ]
        );
        assert_eq!(
            session.framebuffer().pixels(),
            [0x112233, 0x445566, 0, 0x112233, 0, 0x112233, 0x445566, 0]
        );
    }

    #[test]
    fn a_failed_rectangle_is_not_counted() {
        let init = ServerInit {
            width: 4,
            height: 2,
            pixel_format: PixelFormat::RGB888,
            name: String::new(),
        };
        let mut session = ClientSession::new(&init);
        // CopyRect 2x2 to (0, 0) from (3, 0): the source leaves the 4x2 framebuffer.
        let mut update = vec![0, 0, 0, 1];
        rect_header(&mut update, (0, 0, 2, 2), 1);
        update.extend_from_slice(&[0, 3, 0, 0]);
        assert!(session.feed(&update).is_err());
        assert!(session.rect_counts().is_empty());
    }
}
