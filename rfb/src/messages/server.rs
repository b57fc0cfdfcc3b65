//! Server-to-client messages
//! ([rfbproto: Server to Client Messages](https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#server-to-client-messages)).

use super::{
    fixed, parse_cut_text, parse_fence, shift_incomplete, skip, write_cut_text, write_fence,
    Limits, ParseError, ParseResult,
};
use crate::error::DecodeError;
use nom::number::streaming::{be_u16, be_u8};

pub use super::{CutText, Fence};

/// Message-type bytes of the server-to-client messages kvmux knows.
pub mod message_type {
    pub const FRAMEBUFFER_UPDATE: u8 = 0;
    pub const SET_COLOUR_MAP_ENTRIES: u8 = 1;
    pub const BELL: u8 = 2;
    pub const SERVER_CUT_TEXT: u8 = 3;
    pub const END_OF_CONTINUOUS_UPDATES: u8 = 150;
    pub const SERVER_FENCE: u8 = 248;
    pub const XVP: u8 = 250;
}

/// The code of an xvp server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum XvpServerCode {
    Fail = 0,
    Init = 1,
}

impl XvpServerCode {
    pub fn from_u8(code: u8) -> Option<XvpServerCode> {
        match code {
            0 => Some(XvpServerCode::Fail),
            1 => Some(XvpServerCode::Init),
            _ => None,
        }
    }
}

/// A message from the server to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// Only the header: type, padding, number-of-rectangles (0xFFFF allowed, used with
    /// LastRect). The rectangles follow and are read by the session.
    FramebufferUpdate {
        rectangles: u16,
    },
    SetColourMapEntries {
        first_colour: u16,
        /// Red, green, blue, each 0..=65535.
        colours: Vec<(u16, u16, u16)>,
    },
    Bell,
    ServerCutText(CutText),
    EndOfContinuousUpdates,
    ServerFence(Fence),
    Xvp {
        version: u8,
        code: XvpServerCode,
    },
}

impl ServerMessage {
    /// Parses the message at the front of `buf`. For a FramebufferUpdate that is the
    /// 4-byte header only.
    pub fn parse(buf: &[u8], limits: &Limits) -> ParseResult<ServerMessage> {
        use message_type::*;
        let Some(&kind) = buf.first() else {
            return Err(ParseError::Incomplete(1));
        };
        match kind {
            FRAMEBUFFER_UPDATE => {
                const SIZE: usize = 1 /* message-type */ + 1 /* padding */
                    + 2 /* number-of-rectangles */;
                let (_, _, rectangles) =
                    fixed(buf, SIZE, "FramebufferUpdate", (be_u8, skip(1), be_u16))?;
                Ok((ServerMessage::FramebufferUpdate { rectangles }, SIZE))
            }
            SET_COLOUR_MAP_ENTRIES => {
                const HEADER: usize = 1 /* message-type */ + 1 /* padding */
                    + 2 /* first-colour */ + 2 /* number-of-colours */;
                let (_, _, first_colour, count) = fixed(
                    buf,
                    HEADER,
                    "SetColourMapEntries",
                    (be_u8, skip(1), be_u16, be_u16),
                )?;
                // A colour map has at most 65536 entries (16-bit pixels).
                if u32::from(first_colour) + u32::from(count) > 1 << 16 {
                    return Err(ParseError::Invalid(DecodeError::invalid(
                        "SetColourMapEntries",
                        format!(
                            "{count} colours from {first_colour} run past the 65536-entry colour map"
                        ),
                    )));
                }
                let count = usize::from(count);
                let total = HEADER + count * 6 /* red, green, blue */;
                let colours = fixed(
                    &buf[HEADER.min(buf.len())..],
                    total - HEADER,
                    "SetColourMapEntries",
                    nom::multi::count((be_u16, be_u16, be_u16), count),
                )
                .map_err(|e| shift_incomplete(e, HEADER))?;
                Ok((
                    ServerMessage::SetColourMapEntries {
                        first_colour,
                        colours,
                    },
                    total,
                ))
            }
            BELL => Ok((ServerMessage::Bell, 1)),
            SERVER_CUT_TEXT => parse_cut_text(buf, limits, "ServerCutText")
                .map(|(cut, n)| (ServerMessage::ServerCutText(cut), n)),
            END_OF_CONTINUOUS_UPDATES => Ok((ServerMessage::EndOfContinuousUpdates, 1)),
            SERVER_FENCE => parse_fence(buf, "ServerFence")
                .map(|(fence, n)| (ServerMessage::ServerFence(fence), n)),
            XVP => {
                const SIZE: usize = 1 /* message-type */ + 1 /* padding */ + 1 /* version */
                    + 1 /* message-code */;
                let (_, _, version, code) = fixed(
                    buf,
                    SIZE,
                    "xvp server message",
                    (be_u8, skip(1), be_u8, be_u8),
                )?;
                let code = XvpServerCode::from_u8(code).ok_or_else(|| {
                    DecodeError::invalid("xvp server message", format!("unknown code {code}"))
                })?;
                Ok((ServerMessage::Xvp { version, code }, SIZE))
            }
            other => Err(ParseError::Invalid(DecodeError::invalid(
                "server message",
                format!("unknown message-type {other}"),
            ))),
        }
    }

    /// Appends the message's wire bytes to `out`. A colour list longer than 65535
    /// entries or a fence payload past 64 bytes is cut to fit.
    pub fn write(&self, out: &mut Vec<u8>) {
        use message_type::*;
        match self {
            ServerMessage::FramebufferUpdate { rectangles } => {
                out.extend_from_slice(&[FRAMEBUFFER_UPDATE, 0]);
                out.extend_from_slice(&rectangles.to_be_bytes());
            }
            ServerMessage::SetColourMapEntries {
                first_colour,
                colours,
            } => {
                let colours = &colours[..colours.len().min(usize::from(u16::MAX))];
                out.extend_from_slice(&[SET_COLOUR_MAP_ENTRIES, 0]);
                out.extend_from_slice(&first_colour.to_be_bytes());
                // INVARIANT: at most u16::MAX after the cut above.
                out.extend_from_slice(&(colours.len() as u16).to_be_bytes());
                for (r, g, b) in colours {
                    out.extend_from_slice(&r.to_be_bytes());
                    out.extend_from_slice(&g.to_be_bytes());
                    out.extend_from_slice(&b.to_be_bytes());
                }
            }
            ServerMessage::Bell => out.push(BELL),
            ServerMessage::ServerCutText(cut) => write_cut_text(SERVER_CUT_TEXT, cut, out),
            ServerMessage::EndOfContinuousUpdates => out.push(END_OF_CONTINUOUS_UPDATES),
            ServerMessage::ServerFence(fence) => write_fence(SERVER_FENCE, fence, out),
            ServerMessage::Xvp { version, code } => {
                out.extend_from_slice(&[XVP, 0, *version, *code as u8]);
            }
        }
    }

    /// The spec's name for a message type byte, if it is one this crate knows.
    pub fn name_of_type(message_type: u8) -> Option<&'static str> {
        use message_type::*;
        Some(match message_type {
            FRAMEBUFFER_UPDATE => "FramebufferUpdate",
            SET_COLOUR_MAP_ENTRIES => "SetColourMapEntries",
            BELL => "Bell",
            SERVER_CUT_TEXT => "ServerCutText",
            END_OF_CONTINUOUS_UPDATES => "EndOfContinuousUpdates",
            SERVER_FENCE => "ServerFence",
            XVP => "xvp",
            _ => return None,
        })
    }

    /// The message's name in the spec, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            ServerMessage::FramebufferUpdate { .. } => "FramebufferUpdate",
            ServerMessage::SetColourMapEntries { .. } => "SetColourMapEntries",
            ServerMessage::Bell => "Bell",
            ServerMessage::ServerCutText(_) => "ServerCutText",
            ServerMessage::EndOfContinuousUpdates => "EndOfContinuousUpdates",
            ServerMessage::ServerFence(_) => "ServerFence",
            ServerMessage::Xvp { .. } => "xvp",
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

    /// Parses `bytes` (also followed by a next message) to `message` and writes
    /// `message` back to exactly `bytes`.
    fn check(bytes: &[u8], message: ServerMessage) {
        assert_eq!(
            ServerMessage::parse(bytes, &limits()),
            Ok((message.clone(), bytes.len())),
            "parsing {bytes:02x?}"
        );
        let mut followed = bytes.to_vec();
        followed.extend_from_slice(&[2, 2, 2]);
        assert_eq!(
            ServerMessage::parse(&followed, &limits()),
            Ok((message.clone(), bytes.len()))
        );
        let mut out = vec![0xee];
        message.write(&mut out);
        assert_eq!(out[1..], *bytes, "writing {message:?}");
    }

    fn check_prefixes(bytes: &[u8]) -> Vec<usize> {
        (0..bytes.len())
            .map(|n| match ServerMessage::parse(&bytes[..n], &limits()) {
                Err(ParseError::Incomplete(need)) => {
                    assert!(need > n && need <= bytes.len(), "prefix {n}: need {need}");
                    need
                }
                other => panic!("prefix {n} of {bytes:02x?}: {other:?}"),
            })
            .collect()
    }

    fn assert_invalid(bytes: &[u8], limits: &Limits) -> DecodeError {
        match ServerMessage::parse(bytes, limits) {
            Err(ParseError::Invalid(e)) => e,
            other => panic!("{bytes:02x?}: expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn framebuffer_update_header() {
        check(
            &[0, 0, 0, 3],
            ServerMessage::FramebufferUpdate { rectangles: 3 },
        );
        check(
            &[0, 0, 0xff, 0xff],
            ServerMessage::FramebufferUpdate { rectangles: 0xffff },
        );
        assert_eq!(check_prefixes(&[0, 0, 0, 3]), vec![1, 4, 4, 4]);
    }

    #[test]
    fn set_colour_map_entries() {
        #[rustfmt::skip]
        let bytes = [
            1, 0, 0, 16, 0, 2, // type, padding, first-colour 16, 2 colours
            0xff, 0xff, 0, 0, 0, 0, // red
            0, 0, 0x80, 0, 0xff, 0xff, // half green, full blue
        ];
        check(
            &bytes,
            ServerMessage::SetColourMapEntries {
                first_colour: 16,
                colours: vec![(0xffff, 0, 0), (0, 0x8000, 0xffff)],
            },
        );
        let needs = check_prefixes(&bytes);
        assert_eq!(needs[..6], [1, 6, 6, 6, 6, 6]);
        assert!(needs[6..].iter().all(|&n| n == 18), "{needs:?}");
        // The last entry of the map is allowed, one past it is not.
        check(
            &[1, 0, 0xff, 0xff, 0, 1, 0, 1, 0, 2, 0, 3],
            ServerMessage::SetColourMapEntries {
                first_colour: 0xffff,
                colours: vec![(1, 2, 3)],
            },
        );
        assert_invalid(&[1, 0, 0xff, 0xff, 0, 2], &limits());
        assert_invalid(&[1, 0, 0, 2, 0xff, 0xff], &limits());
        // All 65536 entries from 0 fit.
        assert_eq!(
            ServerMessage::parse(&[1, 0, 0, 1, 0xff, 0xff], &limits()),
            Err(ParseError::Incomplete(6 + 65535 * 6))
        );
    }

    #[test]
    fn bell_and_end_of_continuous_updates() {
        check(&[2], ServerMessage::Bell);
        check(&[150], ServerMessage::EndOfContinuousUpdates);
        assert_eq!(
            ServerMessage::parse(&[], &limits()),
            Err(ParseError::Incomplete(1))
        );
    }

    #[test]
    fn server_cut_text() {
        let bytes = [3, 0, 0, 0, 0, 0, 0, 3, b'a', b'\n', b'b'];
        check(
            &bytes,
            ServerMessage::ServerCutText(CutText::Latin1(b"a\nb".to_vec())),
        );
        assert_eq!(
            check_prefixes(&bytes),
            vec![1, 8, 8, 8, 8, 8, 8, 8, 11, 11, 11]
        );
        check(
            &[3, 0, 0, 0, 0, 0, 0, 0],
            ServerMessage::ServerCutText(CutText::Latin1(vec![])),
        );
        // Oversized, before any text arrives.
        let small = Limits {
            max_cut_text: 2,
            ..Limits::default()
        };
        assert!(matches!(
            assert_invalid(&bytes[..8], &small),
            DecodeError::TooLong {
                length: 3,
                limit: 2,
                ..
            }
        ));
    }

    #[test]
    fn server_cut_text_extended_caps() {
        #[rustfmt::skip]
        let bytes = [
            3, 0, 0, 0, 0xff, 0xff, 0xff, 0xf8, // length -8
            0x1f, 0, 0, 0x01, // caps, request, peek, notify, provide; text
            0, 0x10, 0, 0, // text up to 1 MiB
        ];
        check(
            &bytes,
            ServerMessage::ServerCutText(CutText::Extended(ClipboardMessage::Caps {
                formats: 0x1e00_0001,
                max_sizes: vec![1 << 20],
            })),
        );
        assert_eq!(check_prefixes(&bytes)[8..], [16; 8]);
    }

    #[test]
    fn server_cut_text_extended_provide() {
        let message = ServerMessage::ServerCutText(CutText::Extended(ClipboardMessage::Provide {
            text: Some("copy → paste".into()),
            other: vec![],
        }));
        let mut out = Vec::new();
        message.write(&mut out);
        // Header: type 3, padding, then minus the payload's length.
        assert_eq!(out[..4], [3, 0, 0, 0]);
        let length = i32::from_be_bytes([out[4], out[5], out[6], out[7]]);
        assert_eq!(length, -((out.len() - 8) as i32));
        assert_eq!(out[8..12], [0x10, 0, 0, 0x01]);
        assert_eq!(
            ServerMessage::parse(&out, &limits()),
            Ok((message, out.len()))
        );
        // Nothing is inflated until all of it is there.
        let needs = check_prefixes(&out);
        assert!(needs[8..].iter().all(|&n| n == out.len()), "{needs:?}");
    }

    #[test]
    fn server_fence() {
        check(
            &[248, 0, 0, 0, 0, 0, 0, 0x07, 0],
            ServerMessage::ServerFence(Fence {
                flags: Fence::BLOCK_BEFORE | Fence::BLOCK_AFTER | Fence::SYNC_NEXT,
                payload: vec![],
            }),
        );
        let bytes = [248, 0, 0, 0, 0x80, 0, 0, 0, 2, 0xca, 0xfe];
        check(
            &bytes,
            ServerMessage::ServerFence(Fence {
                flags: Fence::REQUEST,
                payload: vec![0xca, 0xfe],
            }),
        );
        check_prefixes(&bytes);
        assert_invalid(&[248, 0, 0, 0, 0, 0, 0, 0, 65], &limits());
    }

    #[test]
    fn xvp() {
        check(
            &[250, 0, 1, 1],
            ServerMessage::Xvp {
                version: 1,
                code: XvpServerCode::Init,
            },
        );
        check(
            &[250, 0, 1, 0],
            ServerMessage::Xvp {
                version: 1,
                code: XvpServerCode::Fail,
            },
        );
        assert_eq!(check_prefixes(&[250, 0, 1, 0]), vec![1, 4, 4, 4]);
        for code in [2, 3, 4, 255] {
            assert_invalid(&[250, 0, 1, code], &limits());
        }
    }

    #[test]
    fn unknown_message_types_are_invalid() {
        for kind in [4u8, 5, 11, 127, 173, 252, 253, 255] {
            let err = assert_invalid(&[kind, 0, 0, 0], &limits());
            assert!(
                err.to_string().contains(&format!("message-type {kind}")),
                "{err}"
            );
        }
    }

    #[test]
    fn names() {
        assert_eq!(ServerMessage::Bell.name(), "Bell");
        assert_eq!(
            ServerMessage::FramebufferUpdate { rectangles: 0 }.name(),
            "FramebufferUpdate"
        );
    }
}
