//! Client-to-server messages
//! ([rfbproto: Client to Server Messages](https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#client-to-server-messages)).

use super::kvmux::{SelectAction, KVMUX_SELECT_SIZE};
use super::{
    fixed, parse_cut_text, parse_fence, rect, shift_incomplete, skip, write_cut_text, write_fence,
    write_rect, CutText, Fence, Limits, ParseError, ParseResult, Screen,
};
use crate::encoding::Encoding;
use crate::error::DecodeError;
use crate::framebuffer::Rect;
use crate::pixel::PixelFormat;
use nom::number::streaming::{be_i32, be_u16, be_u32, be_u8};

/// Message-type bytes of the client-to-server messages kvmux knows.
pub mod message_type {
    pub const SET_PIXEL_FORMAT: u8 = 0;
    pub const SET_ENCODINGS: u8 = 2;
    pub const FRAMEBUFFER_UPDATE_REQUEST: u8 = 3;
    pub const KEY_EVENT: u8 = 4;
    pub const POINTER_EVENT: u8 = 5;
    pub const CLIENT_CUT_TEXT: u8 = 6;
    pub const ENABLE_CONTINUOUS_UPDATES: u8 = 150;
    pub const CLIENT_FENCE: u8 = 248;
    pub const XVP: u8 = 250;
    pub const SET_DESKTOP_SIZE: u8 = 251;
    pub const QEMU: u8 = 255;
    /// kvmux's source selection (docs/PROTOCOL.md).
    pub const KVMUX_SELECT: u8 = super::super::kvmux::KVMUX_SELECT;
    /// QEMU submessage-type of the extended key event.
    pub const QEMU_EXTENDED_KEY_EVENT: u8 = 0;
}

/// The operation of an xvp client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum XvpClientCode {
    Shutdown = 2,
    Reboot = 3,
    Reset = 4,
}

impl XvpClientCode {
    pub fn from_u8(code: u8) -> Option<XvpClientCode> {
        match code {
            2 => Some(XvpClientCode::Shutdown),
            3 => Some(XvpClientCode::Reboot),
            4 => Some(XvpClientCode::Reset),
            _ => None,
        }
    }
}

/// A message from the client to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    SetPixelFormat(PixelFormat),
    SetEncodings(Vec<Encoding>),
    FramebufferUpdateRequest {
        incremental: bool,
        rect: Rect,
    },
    KeyEvent {
        down: bool,
        keysym: u32,
    },
    PointerEvent {
        buttons: u8,
        x: u16,
        y: u16,
    },
    ClientCutText(CutText),
    EnableContinuousUpdates {
        enable: bool,
        rect: Rect,
    },
    ClientFence(Fence),
    Xvp {
        version: u8,
        code: XvpClientCode,
    },
    SetDesktopSize {
        width: u16,
        height: u16,
        screens: Vec<Screen>,
    },
    /// QEMU client message, submessage 0.
    QemuExtendedKeyEvent {
        down: bool,
        keysym: u32,
        keycode: u32,
    },
    /// kvmux's source selection, sent only to a kvmux proxy (docs/PROTOCOL.md).
    KvmuxSelect(SelectAction),
}

impl ClientMessage {
    /// Parses the message at the front of `buf`.
    pub fn parse(buf: &[u8], limits: &Limits) -> ParseResult<ClientMessage> {
        use message_type::*;
        let Some(&kind) = buf.first() else {
            return Err(ParseError::Incomplete(1));
        };
        match kind {
            SET_PIXEL_FORMAT => {
                const SIZE: usize = 1 /* message-type */ + 3 /* padding */ + PixelFormat::SIZE;
                let (_, _, bytes) = fixed(
                    buf,
                    SIZE,
                    "SetPixelFormat",
                    (be_u8, skip(3), skip(PixelFormat::SIZE)),
                )?;
                let bytes: &[u8; PixelFormat::SIZE] = bytes.try_into().map_err(|_| {
                    DecodeError::invalid("SetPixelFormat", "pixel format is not 16 bytes")
                })?;
                let format = PixelFormat::from_bytes(bytes);
                format.validate()?;
                Ok((ClientMessage::SetPixelFormat(format), SIZE))
            }
            SET_ENCODINGS => {
                const HEADER: usize = 1 /* message-type */ + 1 /* padding */
                    + 2 /* number-of-encodings */;
                let (_, _, count) = fixed(buf, HEADER, "SetEncodings", (be_u8, skip(1), be_u16))?;
                if count > limits.max_encodings {
                    return Err(ParseError::Invalid(DecodeError::invalid(
                        "SetEncodings",
                        format!(
                            "{count} encodings exceed the limit of {}",
                            limits.max_encodings
                        ),
                    )));
                }
                let count = usize::from(count);
                let total = HEADER + count * 4 /* encoding-type */;
                let encodings = fixed(
                    &buf[HEADER.min(buf.len())..],
                    total - HEADER,
                    "SetEncodings",
                    nom::multi::count(be_i32, count),
                )
                .map_err(|e| shift_incomplete(e, HEADER))?;
                Ok((
                    ClientMessage::SetEncodings(encodings.into_iter().map(Encoding).collect()),
                    total,
                ))
            }
            FRAMEBUFFER_UPDATE_REQUEST => {
                const SIZE: usize = 1 /* message-type */ + 1 /* incremental */ + 8 /* rect */;
                let (_, incremental, rect) = fixed(
                    buf,
                    SIZE,
                    "FramebufferUpdateRequest",
                    (be_u8, be_u8, rect()),
                )?;
                Ok((
                    ClientMessage::FramebufferUpdateRequest {
                        incremental: incremental != 0,
                        rect,
                    },
                    SIZE,
                ))
            }
            KEY_EVENT => {
                const SIZE: usize = 1 /* message-type */ + 1 /* down-flag */ + 2 /* padding */
                    + 4 /* key */;
                let (_, down, _, keysym) =
                    fixed(buf, SIZE, "KeyEvent", (be_u8, be_u8, skip(2), be_u32))?;
                Ok((
                    ClientMessage::KeyEvent {
                        down: down != 0,
                        keysym,
                    },
                    SIZE,
                ))
            }
            POINTER_EVENT => {
                const SIZE: usize = 1 /* message-type */ + 1 /* button-mask */
                    + 2 /* x-position */ + 2 /* y-position */;
                let (_, buttons, x, y) =
                    fixed(buf, SIZE, "PointerEvent", (be_u8, be_u8, be_u16, be_u16))?;
                Ok((ClientMessage::PointerEvent { buttons, x, y }, SIZE))
            }
            CLIENT_CUT_TEXT => parse_cut_text(buf, limits, "ClientCutText")
                .map(|(cut, n)| (ClientMessage::ClientCutText(cut), n)),
            ENABLE_CONTINUOUS_UPDATES => {
                const SIZE: usize = 1 /* message-type */ + 1 /* enable-flag */ + 8 /* rect */;
                let (_, enable, rect) =
                    fixed(buf, SIZE, "EnableContinuousUpdates", (be_u8, be_u8, rect()))?;
                Ok((
                    ClientMessage::EnableContinuousUpdates {
                        enable: enable != 0,
                        rect,
                    },
                    SIZE,
                ))
            }
            CLIENT_FENCE => parse_fence(buf, "ClientFence")
                .map(|(fence, n)| (ClientMessage::ClientFence(fence), n)),
            XVP => {
                const SIZE: usize = 1 /* message-type */ + 1 /* padding */ + 1 /* version */
                    + 1 /* message-code */;
                let (_, _, version, code) = fixed(
                    buf,
                    SIZE,
                    "xvp client message",
                    (be_u8, skip(1), be_u8, be_u8),
                )?;
                let code = XvpClientCode::from_u8(code).ok_or_else(|| {
                    DecodeError::invalid("xvp client message", format!("unknown code {code}"))
                })?;
                Ok((ClientMessage::Xvp { version, code }, SIZE))
            }
            SET_DESKTOP_SIZE => {
                const HEADER: usize = 1 /* message-type */ + 1 /* padding */ + 2 /* width */
                    + 2 /* height */ + 1 /* number-of-screens */ + 1 /* padding */;
                let (_, _, width, height, count, _) = fixed(
                    buf,
                    HEADER,
                    "SetDesktopSize",
                    (be_u8, skip(1), be_u16, be_u16, be_u8, skip(1)),
                )?;
                let count = usize::from(count);
                let total = HEADER + count * Screen::SIZE;
                let screens = fixed(
                    &buf[HEADER.min(buf.len())..],
                    total - HEADER,
                    "SetDesktopSize",
                    nom::multi::count(super::screen(), count),
                )
                .map_err(|e| shift_incomplete(e, HEADER))?;
                Ok((
                    ClientMessage::SetDesktopSize {
                        width,
                        height,
                        screens,
                    },
                    total,
                ))
            }
            QEMU => {
                const HEADER: usize = 1 /* message-type */ + 1 /* submessage-type */;
                let (_, subtype) = fixed(buf, HEADER, "QEMU client message", (be_u8, be_u8))?;
                if subtype != QEMU_EXTENDED_KEY_EVENT {
                    return Err(ParseError::Invalid(DecodeError::invalid(
                        "QEMU client message",
                        format!("unsupported submessage-type {subtype}"),
                    )));
                }
                const SIZE: usize = HEADER + 2 /* down-flag */ + 4 /* keysym */ + 4 /* keycode */;
                let (_, _, down, keysym, keycode) = fixed(
                    buf,
                    SIZE,
                    "QEMU extended key event",
                    (be_u8, be_u8, be_u16, be_u32, be_u32),
                )?;
                Ok((
                    ClientMessage::QemuExtendedKeyEvent {
                        down: down != 0,
                        keysym,
                        keycode,
                    },
                    SIZE,
                ))
            }
            KVMUX_SELECT => {
                let (_, action, index) = fixed(
                    buf,
                    KVMUX_SELECT_SIZE,
                    "kvmux select",
                    (be_u8, be_u8, be_u16),
                )?;
                let action = SelectAction::from_wire(action, index).ok_or_else(|| {
                    DecodeError::invalid("kvmux select", format!("unknown action {action}"))
                })?;
                Ok((ClientMessage::KvmuxSelect(action), KVMUX_SELECT_SIZE))
            }
            other => Err(ParseError::Invalid(DecodeError::invalid(
                "client message",
                format!("unknown message-type {other}"),
            ))),
        }
    }

    /// Appends the message's wire bytes to `out`. Counts that do not fit their field
    /// (more than 65535 encodings, 255 screens or 64 fence bytes) are cut to fit.
    pub fn write(&self, out: &mut Vec<u8>) {
        use message_type::*;
        match self {
            ClientMessage::SetPixelFormat(format) => {
                out.extend_from_slice(&[SET_PIXEL_FORMAT, 0, 0, 0]);
                out.extend_from_slice(&format.to_bytes());
            }
            ClientMessage::SetEncodings(encodings) => {
                let encodings = &encodings[..encodings.len().min(usize::from(u16::MAX))];
                out.extend_from_slice(&[SET_ENCODINGS, 0]);
                // INVARIANT: at most u16::MAX after the cut above.
                out.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
                for e in encodings {
                    out.extend_from_slice(&e.0.to_be_bytes());
                }
            }
            ClientMessage::FramebufferUpdateRequest { incremental, rect } => {
                out.extend_from_slice(&[FRAMEBUFFER_UPDATE_REQUEST, u8::from(*incremental)]);
                write_rect(rect, out);
            }
            ClientMessage::KeyEvent { down, keysym } => {
                out.extend_from_slice(&[KEY_EVENT, u8::from(*down), 0, 0]);
                out.extend_from_slice(&keysym.to_be_bytes());
            }
            ClientMessage::PointerEvent { buttons, x, y } => {
                out.extend_from_slice(&[POINTER_EVENT, *buttons]);
                out.extend_from_slice(&x.to_be_bytes());
                out.extend_from_slice(&y.to_be_bytes());
            }
            ClientMessage::ClientCutText(cut) => write_cut_text(CLIENT_CUT_TEXT, cut, out),
            ClientMessage::EnableContinuousUpdates { enable, rect } => {
                out.extend_from_slice(&[ENABLE_CONTINUOUS_UPDATES, u8::from(*enable)]);
                write_rect(rect, out);
            }
            ClientMessage::ClientFence(fence) => write_fence(CLIENT_FENCE, fence, out),
            ClientMessage::Xvp { version, code } => {
                out.extend_from_slice(&[XVP, 0, *version, *code as u8]);
            }
            ClientMessage::SetDesktopSize {
                width,
                height,
                screens,
            } => {
                let screens = &screens[..screens.len().min(usize::from(u8::MAX))];
                out.extend_from_slice(&[SET_DESKTOP_SIZE, 0]);
                out.extend_from_slice(&width.to_be_bytes());
                out.extend_from_slice(&height.to_be_bytes());
                // INVARIANT: at most 255 after the cut above.
                out.extend_from_slice(&[screens.len() as u8, 0]);
                for s in screens {
                    s.write(out);
                }
            }
            ClientMessage::QemuExtendedKeyEvent {
                down,
                keysym,
                keycode,
            } => {
                out.extend_from_slice(&[QEMU, QEMU_EXTENDED_KEY_EVENT]);
                out.extend_from_slice(&u16::from(*down).to_be_bytes());
                out.extend_from_slice(&keysym.to_be_bytes());
                out.extend_from_slice(&keycode.to_be_bytes());
            }
            ClientMessage::KvmuxSelect(action) => {
                let (action, index) = action.to_wire();
                out.extend_from_slice(&[KVMUX_SELECT, action]);
                out.extend_from_slice(&index.to_be_bytes());
            }
        }
    }

    /// The message's name in the spec, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            ClientMessage::SetPixelFormat(_) => "SetPixelFormat",
            ClientMessage::SetEncodings(_) => "SetEncodings",
            ClientMessage::FramebufferUpdateRequest { .. } => "FramebufferUpdateRequest",
            ClientMessage::KeyEvent { .. } => "KeyEvent",
            ClientMessage::PointerEvent { .. } => "PointerEvent",
            ClientMessage::ClientCutText(_) => "ClientCutText",
            ClientMessage::EnableContinuousUpdates { .. } => "EnableContinuousUpdates",
            ClientMessage::ClientFence(_) => "ClientFence",
            ClientMessage::Xvp { .. } => "xvp",
            ClientMessage::SetDesktopSize { .. } => "SetDesktopSize",
            ClientMessage::QemuExtendedKeyEvent { .. } => "QEMUExtendedKeyEvent",
            ClientMessage::KvmuxSelect(_) => "kvmux select",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::ClipboardMessage;

    fn limits() -> Limits {
        Limits::default()
    }

    /// Parses `bytes` (also with trailing bytes of a next message) to `message` and
    /// writes `message` back to exactly `bytes`.
    fn check(bytes: &[u8], message: ClientMessage) {
        assert_eq!(
            ClientMessage::parse(bytes, &limits()),
            Ok((message.clone(), bytes.len())),
            "parsing {bytes:02x?}"
        );
        let mut followed = bytes.to_vec();
        followed.extend_from_slice(&[4, 1, 0, 0]);
        assert_eq!(
            ClientMessage::parse(&followed, &limits()),
            Ok((message.clone(), bytes.len()))
        );
        let mut out = vec![0xee];
        message.write(&mut out);
        assert_eq!(out[1..], *bytes, "writing {message:?}");
    }

    /// Every proper prefix is Incomplete, asking for more than it has and no more than
    /// the whole message.
    fn check_prefixes(bytes: &[u8]) -> Vec<usize> {
        (0..bytes.len())
            .map(|n| match ClientMessage::parse(&bytes[..n], &limits()) {
                Err(ParseError::Incomplete(need)) => {
                    assert!(need > n && need <= bytes.len(), "prefix {n}: need {need}");
                    need
                }
                other => panic!("prefix {n} of {bytes:02x?}: {other:?}"),
            })
            .collect()
    }

    fn assert_invalid(bytes: &[u8], limits: &Limits) -> DecodeError {
        match ClientMessage::parse(bytes, limits) {
            Err(ParseError::Invalid(e)) => e,
            other => panic!("{bytes:02x?}: expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn set_pixel_format() {
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 0, // message-type, padding
            32, 24, 0, 1, // bpp, depth, big-endian, true-colour
            0, 255, 0, 255, 0, 255, // red-max, green-max, blue-max
            16, 8, 0, // shifts
            0, 0, 0, // padding
        ];
        check(&bytes, ClientMessage::SetPixelFormat(PixelFormat::RGB888));
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 0,
            16, 16, 1, 1,
            0, 31, 0, 63, 0, 31,
            11, 5, 0,
            0, 0, 0,
        ];
        check(
            &bytes,
            ClientMessage::SetPixelFormat(PixelFormat {
                big_endian: true,
                ..PixelFormat::RGB565
            }),
        );
        // Only at 20 bytes is the message there.
        assert_eq!(
            check_prefixes(&bytes),
            vec![1, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20]
        );
    }

    #[test]
    fn bad_pixel_formats_are_invalid() {
        for format in [
            // 12 bits per pixel.
            [
                0u8, 0, 0, 0, 12, 12, 0, 1, 0, 15, 0, 15, 0, 15, 8, 4, 0, 0, 0, 0,
            ],
            // red-max 0.
            [
                0, 0, 0, 0, 32, 24, 0, 1, 0, 0, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
            ],
            // red channel shifted out of a 16-bit pixel.
            [
                0, 0, 0, 0, 16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 12, 5, 0, 0, 0, 0,
            ],
            // Colour-mapped 32-bit pixels.
            [0, 0, 0, 0, 32, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_invalid(&format, &limits());
        }
    }

    #[test]
    fn set_encodings() {
        #[rustfmt::skip]
        let bytes = [
            2, 0, 0, 5, // message-type, padding, number-of-encodings
            0, 0, 0, 7, // Tight
            0, 0, 0, 16, // ZRLE
            0, 0, 0, 0, // Raw
            0xff, 0xff, 0xff, 0x20, // LastRect (-224)
            0xc0, 0xa1, 0xe5, 0xce, // ExtendedClipboard
        ];
        check(
            &bytes,
            ClientMessage::SetEncodings(vec![
                Encoding::TIGHT,
                Encoding::ZRLE,
                Encoding::RAW,
                Encoding::LAST_RECT,
                Encoding::EXTENDED_CLIPBOARD,
            ]),
        );
        let needs = check_prefixes(&bytes);
        assert_eq!(needs[..4], [1, 4, 4, 4]);
        assert!(needs[4..].iter().all(|&n| n == 24), "{needs:?}");
        check(&[2, 0, 0, 0], ClientMessage::SetEncodings(vec![]));
    }

    #[test]
    fn too_many_encodings_are_refused_before_waiting() {
        let err = assert_invalid(&[2, 0, 0xff, 0xff], &limits());
        assert!(err.to_string().contains("65535 encodings"), "{err}");
        assert_invalid(&[2, 0, 0x04, 0x01], &limits());
        // 1024 is allowed: it waits for all of them.
        assert_eq!(
            ClientMessage::parse(&[2, 0, 0x04, 0x00], &limits()),
            Err(ParseError::Incomplete(4 + 4096))
        );
        let strict = Limits {
            max_encodings: 2,
            ..Limits::default()
        };
        assert_invalid(&[2, 0, 0, 3], &strict);
    }

    #[test]
    fn framebuffer_update_request() {
        let bytes = [3, 1, 0, 0, 0, 0, 0x04, 0x00, 0x03, 0x00];
        check(
            &bytes,
            ClientMessage::FramebufferUpdateRequest {
                incremental: true,
                rect: Rect::new(0, 0, 1024, 768),
            },
        );
        check(
            &[3, 0, 0, 10, 0x01, 0x02, 0, 1, 0, 2],
            ClientMessage::FramebufferUpdateRequest {
                incremental: false,
                rect: Rect::new(10, 258, 1, 2),
            },
        );
        // Any non-zero flag is true.
        assert_eq!(
            ClientMessage::parse(&[3, 0x80, 0, 0, 0, 0, 0, 0, 0, 0], &limits()),
            Ok((
                ClientMessage::FramebufferUpdateRequest {
                    incremental: true,
                    rect: Rect::new(0, 0, 0, 0),
                },
                10
            ))
        );
        assert_eq!(
            check_prefixes(&bytes),
            vec![1, 10, 10, 10, 10, 10, 10, 10, 10, 10]
        );
    }

    #[test]
    fn key_event() {
        check(
            &[4, 1, 0, 0, 0, 0, 0, 0x61],
            ClientMessage::KeyEvent {
                down: true,
                keysym: 0x61,
            },
        );
        check(
            &[4, 0, 0, 0, 0, 0, 0xff, 0x0d],
            ClientMessage::KeyEvent {
                down: false,
                keysym: 0xff0d,
            },
        );
        check_prefixes(&[4, 0, 0, 0, 0, 0, 0xff, 0x0d]);
    }

    #[test]
    fn pointer_event() {
        check(
            &[5, 0x05, 0x01, 0x2c, 0x00, 0xc8],
            ClientMessage::PointerEvent {
                buttons: 0b101,
                x: 300,
                y: 200,
            },
        );
        check_prefixes(&[5, 0x05, 0x01, 0x2c, 0x00, 0xc8]);
    }

    #[test]
    fn client_cut_text_latin1() {
        // "héllo" in ISO 8859-1.
        let bytes = [6, 0, 0, 0, 0, 0, 0, 5, b'h', 0xe9, b'l', b'l', b'o'];
        check(
            &bytes,
            ClientMessage::ClientCutText(CutText::Latin1(vec![b'h', 0xe9, b'l', b'l', b'o'])),
        );
        check(
            &[6, 0, 0, 0, 0, 0, 0, 0],
            ClientMessage::ClientCutText(CutText::Latin1(vec![])),
        );
        // The whole length is asked for as soon as the header is there.
        assert_eq!(
            check_prefixes(&bytes),
            vec![1, 8, 8, 8, 8, 8, 8, 8, 13, 13, 13, 13, 13]
        );
    }

    #[test]
    fn client_cut_text_extended() {
        // length -4: a notify for text.
        let bytes = [6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc, 0x08, 0, 0, 0x01];
        check(
            &bytes,
            ClientMessage::ClientCutText(CutText::Extended(ClipboardMessage::Notify {
                formats: ClipboardMessage::TEXT,
            })),
        );
        assert_eq!(check_prefixes(&bytes)[8..], [12, 12, 12, 12]);
        // A bad payload is invalid.
        assert_invalid(
            &[6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc, 0, 0, 0, 0x01],
            &limits(),
        );
        assert_invalid(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe, 0x08, 0], &limits());
    }

    #[test]
    fn oversized_cut_text_is_refused_before_waiting() {
        // 16 MiB + 1.
        let err = assert_invalid(&[6, 0, 0, 0, 0x01, 0x00, 0x00, 0x01], &limits());
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
        // Exactly 16 MiB waits.
        assert_eq!(
            ClientMessage::parse(&[6, 0, 0, 0, 0x01, 0x00, 0x00, 0x00], &limits()),
            Err(ParseError::Incomplete(8 + (16 << 20)))
        );
        // Extended payloads: -32 MiB and i32::MIN.
        assert_invalid(&[6, 0, 0, 0, 0xfe, 0x00, 0x00, 0x00], &limits());
        assert_invalid(&[6, 0, 0, 0, 0x80, 0x00, 0x00, 0x00], &limits());
        // A length of 3 GiB read as unsigned is negative as signed: still refused.
        assert_invalid(&[6, 0, 0, 0, 0xc0, 0x00, 0x00, 0x00], &limits());
    }

    #[test]
    fn enable_continuous_updates() {
        check(
            &[150, 1, 0, 0, 0, 0, 0x03, 0x20, 0x02, 0x58],
            ClientMessage::EnableContinuousUpdates {
                enable: true,
                rect: Rect::new(0, 0, 800, 600),
            },
        );
        check(
            &[150, 0, 0, 1, 0, 2, 0, 3, 0, 4],
            ClientMessage::EnableContinuousUpdates {
                enable: false,
                rect: Rect::new(1, 2, 3, 4),
            },
        );
    }

    #[test]
    fn client_fence() {
        let bytes = [248, 0, 0, 0, 0x80, 0, 0, 0x01, 3, 1, 2, 3];
        check(
            &bytes,
            ClientMessage::ClientFence(Fence {
                flags: Fence::REQUEST | Fence::BLOCK_BEFORE,
                payload: vec![1, 2, 3],
            }),
        );
        assert_eq!(
            check_prefixes(&bytes),
            vec![1, 9, 9, 9, 9, 9, 9, 9, 9, 12, 12, 12]
        );
        check(
            &[248, 0, 0, 0, 0, 0, 0, 0x06, 0],
            ClientMessage::ClientFence(Fence {
                flags: Fence::BLOCK_AFTER | Fence::SYNC_NEXT,
                payload: vec![],
            }),
        );
        let mut longest = vec![248, 0, 0, 0, 0, 0, 0, 0, 64];
        longest.extend_from_slice(&[0xab; 64]);
        check(
            &longest,
            ClientMessage::ClientFence(Fence {
                flags: 0,
                payload: vec![0xab; 64],
            }),
        );
    }

    #[test]
    fn fence_payload_past_64_bytes_is_invalid() {
        assert_invalid(&[248, 0, 0, 0, 0, 0, 0, 0, 65], &limits());
        assert_invalid(&[248, 0, 0, 0, 0, 0, 0, 0, 255], &limits());
        // Writing cuts the payload to 64 bytes.
        let mut out = Vec::new();
        ClientMessage::ClientFence(Fence {
            flags: 0,
            payload: vec![1; 100],
        })
        .write(&mut out);
        assert_eq!(out.len(), 9 + 64);
        assert_eq!(out[8], 64);
    }

    #[test]
    fn xvp() {
        for (code, value) in [
            (XvpClientCode::Shutdown, 2),
            (XvpClientCode::Reboot, 3),
            (XvpClientCode::Reset, 4),
        ] {
            check(&[250, 0, 1, value], ClientMessage::Xvp { version: 1, code });
        }
        for code in [0, 1, 5, 255] {
            assert_invalid(&[250, 0, 1, code], &limits());
        }
    }

    #[test]
    fn set_desktop_size() {
        #[rustfmt::skip]
        let bytes = [
            251, 0, 0x07, 0x80, 0x04, 0x38, 1, 0, // type, padding, 1920x1080, 1 screen, padding
            0, 0, 0, 0x2a, 0, 0, 0, 0, 0x07, 0x80, 0x04, 0x38, 0, 0, 0, 0, // screen 42
        ];
        check(
            &bytes,
            ClientMessage::SetDesktopSize {
                width: 1920,
                height: 1080,
                screens: vec![Screen {
                    id: 42,
                    x: 0,
                    y: 0,
                    width: 1920,
                    height: 1080,
                    flags: 0,
                }],
            },
        );
        let needs = check_prefixes(&bytes);
        assert_eq!(needs[..8], [1, 8, 8, 8, 8, 8, 8, 8]);
        assert!(needs[8..].iter().all(|&n| n == 24), "{needs:?}");
    }

    #[test]
    fn qemu_extended_key_event() {
        let bytes = [255, 0, 0, 1, 0, 0, 0, 0x41, 0, 0, 0, 0x1e];
        check(
            &bytes,
            ClientMessage::QemuExtendedKeyEvent {
                down: true,
                keysym: 0x41,
                keycode: 0x1e,
            },
        );
        check(
            &[255, 0, 0, 0, 0, 0, 0xff, 0x53, 0, 0, 0, 0xcd],
            ClientMessage::QemuExtendedKeyEvent {
                down: false,
                keysym: 0xff53,
                keycode: 0xcd,
            },
        );
        assert_eq!(check_prefixes(&bytes)[..3], [1, 2, 12]);
        // Audio (submessage 1) and unknown submessages are not supported.
        assert_invalid(&[255, 1, 0, 0], &limits());
        assert_invalid(&[255, 9], &limits());
    }

    #[test]
    fn unknown_message_types_are_invalid() {
        for kind in [1u8, 7, 8, 127, 149, 200, 252, 253, 254] {
            let err = assert_invalid(&[kind], &limits());
            assert!(
                err.to_string().contains(&format!("message-type {kind}")),
                "{err}"
            );
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            ClientMessage::PointerEvent {
                buttons: 0,
                x: 0,
                y: 0
            }
            .name(),
            "PointerEvent"
        );
        assert_eq!(ClientMessage::SetEncodings(vec![]).name(), "SetEncodings");
    }
}
