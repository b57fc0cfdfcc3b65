//! RFB protocol messages after initialisation, in both directions
//! ([rfbproto: Protocol Messages]).
//!
//! Every message parses from the front of a buffer of received bytes and writes into a
//! `Vec<u8>`. Both sides of kvmux use both directions: the client side parses
//! [`ServerMessage`]s and writes [`ClientMessage`]s, the server side does the reverse.
//!
//! Parsing never waits byte by byte: [`ParseError::Incomplete`] says how many bytes
//! (counted from the start of the message) are needed as soon as that is known, and
//! lengths a peer declares are checked against [`Limits`] before anything waits for
//! them. A FramebufferUpdate parses as its 4-byte header only; the session reads the
//! rectangles that follow with [`RectHeader`] and the decoders.
//!
//! [rfbproto: Protocol Messages]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#protocol-messages

use crate::encoding::Encoding;
use crate::error::DecodeError;
use crate::framebuffer::Rect;
use nom::bytes::streaming::take;
use nom::number::streaming::{be_i32, be_u16, be_u32, be_u8};
use nom::Parser;
use std::fmt;

pub mod client;
pub mod clipboard;
pub mod kvmux;
pub mod server;

pub use client::{ClientMessage, XvpClientCode};
pub use clipboard::ClipboardMessage;
pub use kvmux::{SelectAction, SourceInfo, SourceList, SourceState};
pub use server::{ServerMessage, XvpServerCode};

/// Why a message could not be parsed (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// At least this many bytes in total are needed from the message start.
    Incomplete(usize),
    /// The bytes are not a valid message.
    Invalid(DecodeError),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Incomplete(n) => write!(f, "incomplete message: {n} bytes needed"),
            ParseError::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ParseError::Incomplete(_) => None,
            ParseError::Invalid(e) => Some(e),
        }
    }
}

impl From<DecodeError> for ParseError {
    fn from(e: DecodeError) -> ParseError {
        ParseError::Invalid(e)
    }
}

/// On success: the message and how many bytes it occupied.
pub type ParseResult<T> = Result<(T, usize), ParseError>;

/// Limits on what a peer may make us buffer or allocate.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest cut text (legacy or ExtendedClipboard, compressed or inflated) in bytes.
    pub max_cut_text: u32,
    /// The most encodings a SetEncodings message may list.
    pub max_encodings: u16,
    /// The largest framebuffer, in pixels, a DesktopSize or ExtendedDesktopSize may
    /// ask for. The default, 64 Mi pixels (256 MiB at 4 bytes a pixel), holds
    /// 8192x8192 or two 8K screens side by side; a 65535x65535 desktop would take 16 GiB.
    pub max_framebuffer_area: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_cut_text: 16 << 20,
            max_encodings: 1024,
            max_framebuffer_area: 1 << 26,
        }
    }
}

/// A FramebufferUpdate rectangle header (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RectHeader {
    pub rect: Rect,
    pub encoding: Encoding,
}

impl RectHeader {
    pub const SIZE: usize = 2 /* x-position */ + 2 /* y-position */ + 2 /* width */
        + 2 /* height */ + 4 /* encoding-type */;

    pub fn parse(buf: &[u8]) -> ParseResult<RectHeader> {
        let (rect, encoding) = fixed(buf, Self::SIZE, "rectangle header", (rect(), be_i32))?;
        Ok((
            RectHeader {
                rect,
                encoding: Encoding(encoding),
            },
            Self::SIZE,
        ))
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        write_rect(&self.rect, out);
        out.extend_from_slice(&self.encoding.0.to_be_bytes());
    }
}

/// Cut text as carried by ClientCutText and ServerCutText.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CutText {
    /// Legacy ISO 8859-1 text (length ≥ 0).
    Latin1(Vec<u8>),
    /// Negative length: an ExtendedClipboard payload.
    Extended(ClipboardMessage),
}

/// ClientFence and ServerFence (same layout, roles reversed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub flags: u32,
    /// At most [`Fence::MAX_PAYLOAD`] bytes; more is invalid.
    pub payload: Vec<u8>,
}

impl Fence {
    /// All messages before the fence are processed before the response is sent.
    pub const BLOCK_BEFORE: u32 = 1;
    /// No message after the fence starts processing before the response is sent.
    pub const BLOCK_AFTER: u32 = 1 << 1;
    /// The message after the fence takes effect atomically at the response.
    pub const SYNC_NEXT: u32 = 1 << 2;
    /// A new request (cleared in a response).
    pub const REQUEST: u32 = 1 << 31;
    /// The largest payload the spec allows.
    pub const MAX_PAYLOAD: usize = 64;
}

/// A screen of the ExtendedDesktopSize screen layout (16 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screen {
    pub id: u32,
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
    pub flags: u32,
}

impl Screen {
    pub const SIZE: usize = 4 /* id */ + 2 /* x-position */ + 2 /* y-position */
        + 2 /* width */ + 2 /* height */ + 4 /* flags */;

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.x.to_be_bytes());
        out.extend_from_slice(&self.y.to_be_bytes());
        out.extend_from_slice(&self.width.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
    }
}

/// The ExtendedDesktopSize pseudo-rectangle body
/// ([rfbproto](https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#extendeddesktopsize-pseudo-encoding)):
/// number-of-screens (u8), 3 bytes padding, then the screens (16 bytes each).
pub fn parse_screens(buf: &[u8]) -> ParseResult<Vec<Screen>> {
    const HEADER: usize = 1 /* number-of-screens */ + 3 /* padding */;
    let (count, _) = fixed(buf, HEADER, "ExtendedDesktopSize", (be_u8, take(3usize)))?;
    let count = usize::from(count);
    let total = HEADER + count * Screen::SIZE;
    let screens = fixed(
        &buf[HEADER.min(buf.len())..],
        total - HEADER,
        "ExtendedDesktopSize",
        nom::multi::count(screen(), count),
    )
    .map_err(|e| shift_incomplete(e, HEADER))?;
    Ok((screens, total))
}

/// Writes an ExtendedDesktopSize body. At most 255 screens fit; any more are left out.
pub fn write_screens(screens: &[Screen], out: &mut Vec<u8>) {
    let screens = &screens[..screens.len().min(usize::from(u8::MAX))];
    // INVARIANT: at most 255 screens after the line above.
    out.push(screens.len() as u8);
    out.extend_from_slice(&[0; 3]);
    for s in screens {
        s.write(out);
    }
}

// ---- shared parsing and writing helpers ----

pub(crate) type NomError<'a> = nom::error::Error<&'a [u8]>;

/// Runs `parser` over the first `size` bytes of `buf`, or asks for `size` bytes. The
/// parser must read no more than `size` bytes; anything it rejects is invalid.
pub(crate) fn fixed<'a, O, P>(
    buf: &'a [u8],
    size: usize,
    context: &'static str,
    mut parser: P,
) -> Result<O, ParseError>
where
    P: Parser<&'a [u8], Output = O, Error = NomError<'a>>,
{
    let Some(head) = buf.get(..size) else {
        return Err(ParseError::Incomplete(size));
    };
    parser
        .parse(head)
        .map(|(_, out)| out)
        .map_err(|e| ParseError::Invalid(DecodeError::invalid(context, format!("malformed: {e}"))))
}

/// Turns a count needed from some offset into one needed from the message start.
pub(crate) fn shift_incomplete(e: ParseError, offset: usize) -> ParseError {
    match e {
        ParseError::Incomplete(n) => ParseError::Incomplete(n + offset),
        invalid => invalid,
    }
}

/// `n` bytes of padding (or any bytes to skip).
pub(crate) fn skip<'a>(n: usize) -> impl Parser<&'a [u8], Output = &'a [u8], Error = NomError<'a>> {
    take(n)
}

/// x-position, y-position, width, height.
pub(crate) fn rect<'a>() -> impl Parser<&'a [u8], Output = Rect, Error = NomError<'a>> {
    (be_u16, be_u16, be_u16, be_u16).map(|(x, y, width, height)| Rect::new(x, y, width, height))
}

fn screen<'a>() -> impl Parser<&'a [u8], Output = Screen, Error = NomError<'a>> {
    (be_u32, be_u16, be_u16, be_u16, be_u16, be_u32).map(|(id, x, y, width, height, flags)| {
        Screen {
            id,
            x,
            y,
            width,
            height,
            flags,
        }
    })
}

pub(crate) fn write_rect(rect: &Rect, out: &mut Vec<u8>) {
    out.extend_from_slice(&rect.x.to_be_bytes());
    out.extend_from_slice(&rect.y.to_be_bytes());
    out.extend_from_slice(&rect.width.to_be_bytes());
    out.extend_from_slice(&rect.height.to_be_bytes());
}

/// ClientCutText / ServerCutText: type, 3 padding, S32 length, then the text or the
/// ExtendedClipboard payload.
pub(crate) fn parse_cut_text(
    buf: &[u8],
    limits: &Limits,
    context: &'static str,
) -> ParseResult<CutText> {
    const HEADER: usize = 1 /* message-type */ + 3 /* padding */ + 4 /* length */;
    let (_, _, length) = fixed(buf, HEADER, context, (be_u8, skip(3), be_i32))?;
    let size = length.unsigned_abs();
    let too_long = || {
        ParseError::Invalid(DecodeError::TooLong {
            context,
            length: u64::from(size),
            limit: u64::from(limits.max_cut_text),
        })
    };
    if size > limits.max_cut_text {
        return Err(too_long());
    }
    let total = usize::try_from(size)
        .ok()
        .and_then(|s| s.checked_add(HEADER))
        .ok_or_else(too_long)?;
    let Some(body) = buf.get(HEADER..total) else {
        return Err(ParseError::Incomplete(total));
    };
    let cut = if length >= 0 {
        CutText::Latin1(body.to_vec())
    } else {
        CutText::Extended(ClipboardMessage::parse(body, limits)?)
    };
    Ok((cut, total))
}

pub(crate) fn write_cut_text(message_type: u8, cut: &CutText, out: &mut Vec<u8>) {
    out.push(message_type);
    out.extend_from_slice(&[0; 3]);
    match cut {
        CutText::Latin1(text) => {
            // A length past i32::MAX would read as an ExtendedClipboard payload.
            let text = &text[..text.len().min(i32::MAX as usize)];
            // INVARIANT: at most i32::MAX after the line above.
            out.extend_from_slice(&(text.len() as u32).to_be_bytes());
            out.extend_from_slice(text);
        }
        CutText::Extended(message) => {
            let length_at = out.len();
            out.extend_from_slice(&[0; 4]);
            message.write(out);
            let size = out.len() - length_at - 4;
            // A payload can only be that large if the caller built a message of 2 GiB;
            // the length then saturates and the peer will refuse it.
            let length = -(i32::try_from(size).unwrap_or(i32::MAX));
            out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
        }
    }
}

/// ClientFence / ServerFence: type, 3 padding, U32 flags, U8 length, payload.
pub(crate) fn parse_fence(buf: &[u8], context: &'static str) -> ParseResult<Fence> {
    const HEADER: usize = 1 /* message-type */ + 3 /* padding */ + 4 /* flags */ + 1 /* length */;
    let (_, _, flags, length) = fixed(buf, HEADER, context, (be_u8, skip(3), be_u32, be_u8))?;
    let length = usize::from(length);
    if length > Fence::MAX_PAYLOAD {
        return Err(ParseError::Invalid(DecodeError::invalid(
            context,
            format!(
                "payload of {length} bytes exceeds the limit of {}",
                Fence::MAX_PAYLOAD
            ),
        )));
    }
    let total = HEADER + length;
    let Some(payload) = buf.get(HEADER..total) else {
        return Err(ParseError::Incomplete(total));
    };
    Ok((
        Fence {
            flags,
            payload: payload.to_vec(),
        },
        total,
    ))
}

/// Writes a fence; a payload past [`Fence::MAX_PAYLOAD`] bytes is cut to it.
pub(crate) fn write_fence(message_type: u8, fence: &Fence, out: &mut Vec<u8>) {
    let payload = &fence.payload[..fence.payload.len().min(Fence::MAX_PAYLOAD)];
    out.push(message_type);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&fence.flags.to_be_bytes());
    // INVARIANT: at most 64 bytes after the cut above.
    out.push(payload.len() as u8);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_header_from_spec_bytes() {
        // x 10, y 20, width 640, height 480, encoding ZRLE (16).
        let bytes = [0, 10, 0, 20, 0x02, 0x80, 0x01, 0xe0, 0, 0, 0, 16];
        let header = RectHeader {
            rect: Rect::new(10, 20, 640, 480),
            encoding: Encoding::ZRLE,
        };
        assert_eq!(RectHeader::parse(&bytes), Ok((header, 12)));
        let mut out = Vec::new();
        header.write(&mut out);
        assert_eq!(out, bytes);

        // A negative pseudo-encoding: LastRect (-224 = 0xffffff20).
        let bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x20];
        let (header, _) = RectHeader::parse(&bytes).expect("last rect");
        assert_eq!(header.encoding, Encoding::LAST_RECT);

        for n in 0..12 {
            assert_eq!(
                RectHeader::parse(&bytes[..n]),
                Err(ParseError::Incomplete(12))
            );
        }
    }

    #[test]
    fn screens_from_spec_bytes() {
        #[rustfmt::skip]
        let bytes = [
            2, 0, 0, 0, // number-of-screens, padding
            0, 0, 0, 1,  0, 0, 0, 0,  0x07, 0x80, 0x04, 0x38,  0, 0, 0, 0, // id 1, 0,0 1920x1080
            0xde, 0xad, 0xbe, 0xef,  0x07, 0x80, 0, 0,  0x05, 0, 0x04, 0,  0x80, 0, 0, 1,
        ];
        let screens = vec![
            Screen {
                id: 1,
                x: 0,
                y: 0,
                width: 1920,
                height: 1080,
                flags: 0,
            },
            Screen {
                id: 0xdead_beef,
                x: 1920,
                y: 0,
                width: 1280,
                height: 1024,
                flags: 0x8000_0001,
            },
        ];
        assert_eq!(parse_screens(&bytes), Ok((screens.clone(), 36)));
        let mut out = Vec::new();
        write_screens(&screens, &mut out);
        assert_eq!(out, bytes);

        for n in 0..4 {
            assert_eq!(parse_screens(&bytes[..n]), Err(ParseError::Incomplete(4)));
        }
        for n in 4..36 {
            assert_eq!(parse_screens(&bytes[..n]), Err(ParseError::Incomplete(36)));
        }
        // No screens at all.
        assert_eq!(parse_screens(&[0, 0, 0, 0]), Ok((vec![], 4)));
    }

    #[test]
    fn too_many_screens_are_cut_when_writing() {
        let screens = vec![
            Screen {
                id: 0,
                x: 0,
                y: 0,
                width: 1,
                height: 1,
                flags: 0,
            };
            300
        ];
        let mut out = Vec::new();
        write_screens(&screens, &mut out);
        assert_eq!(out[0], 255);
        assert_eq!(out.len(), 4 + 255 * 16);
    }
}
