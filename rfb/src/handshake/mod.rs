//! The RFB handshake: protocol version, security, ClientInit and ServerInit
//! ([rfbproto: Handshaking Messages], [Initialisation Messages]).
//!
//! The pieces both sides need live here: [`ProtocolVersion`] parsing and the
//! version-compatibility rules, [`SecurityType`] numbers, the chosen [`Security`],
//! [`ServerInit`] with its parser and writer, the masked [`Password`], and
//! [`HandshakeError`]. The client state machine is [`client::ClientHandshake`],
//! the server's [`server::ServerHandshake`]; VNC authentication's DES response is
//! in [`vnc_auth`], VeNCrypt's sub-types in [`vencrypt`].
//!
//! Everything here is sans-I/O: bytes in, bytes out.
//!
//! [rfbproto: Handshaking Messages]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#handshaking-messages
//! [Initialisation Messages]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#initialisation-messages

use std::fmt;

use crate::error::DecodeError;
use crate::pixel::PixelFormat;

pub mod client;
pub mod server;
pub mod vencrypt;
pub mod vnc_auth;

pub use client::{ClientConfig, ClientHandshake, Step};
pub use server::{ClientInit, ServerConfig, ServerHandshake, ServerSecurity, ServerStep};
pub use vencrypt::{VeNCryptError, VeNCryptSubtype};

/// The RFB versions this crate speaks.
///
/// What a peer announces maps onto one of them with [`ProtocolVersion::for_peer`]:
///
/// | announced            | spoken | why                                                        |
/// |----------------------|--------|------------------------------------------------------------|
/// | 3.0 – 3.2            | —      | older than any published version                           |
/// | 3.3 – 3.6            | 3.3    | 3.5 is a known misreport of 3.3 (spec); 3.4 and 3.6 are UltraVNC's 3.3 variants |
/// | 3.7                  | 3.7    |                                                            |
/// | 3.8 and any 3.x > 8  | 3.8    | e.g. Apple's 3.889: a peer must accept lower versions      |
/// | 4.x and later        | 3.8    | RealVNC's 4.x servers accept 3.8 clients                   |
/// | 0.x – 2.x            | —      | not RFB as published                                       |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    V3_3,
    V3_7,
    V3_8,
}

impl ProtocolVersion {
    /// Size of a ProtocolVersion message on the wire.
    pub const SIZE: usize = 4 /* "RFB " */ + 3 /* major */ + 1 /* "." */ + 3 /* minor */ + 1 /* "\n" */;

    /// The version this side speaks with a peer that announced `major.minor`,
    /// following the table on [`ProtocolVersion`]; `None` if there is none.
    pub fn for_peer(major: u16, minor: u16) -> Option<ProtocolVersion> {
        match (major, minor) {
            (3, 3..=6) => Some(ProtocolVersion::V3_3),
            (3, 7) => Some(ProtocolVersion::V3_7),
            (3, 8..) => Some(ProtocolVersion::V3_8),
            (4.., _) => Some(ProtocolVersion::V3_8),
            _ => None,
        }
    }

    /// The 12-byte ProtocolVersion message announcing this version.
    pub const fn wire(self) -> &'static [u8; ProtocolVersion::SIZE] {
        match self {
            ProtocolVersion::V3_3 => b"RFB 003.003\n",
            ProtocolVersion::V3_7 => b"RFB 003.007\n",
            ProtocolVersion::V3_8 => b"RFB 003.008\n",
        }
    }

    pub const fn major_minor(self) -> (u16, u16) {
        match self {
            ProtocolVersion::V3_3 => (3, 3),
            ProtocolVersion::V3_7 => (3, 7),
            ProtocolVersion::V3_8 => (3, 8),
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.major_minor();
        write!(f, "{major}.{minor}")
    }
}

/// Parses a 12-byte ProtocolVersion message, `"RFB xxx.yyy\n"` with three decimal
/// digits each; `None` if the bytes are not one.
pub fn parse_protocol_version(bytes: &[u8; ProtocolVersion::SIZE]) -> Option<(u16, u16)> {
    if &bytes[..4] != b"RFB " || bytes[7] != b'.' || bytes[11] != b'\n' {
        return None;
    }
    let number = |digits: &[u8]| -> Option<u16> {
        digits.iter().try_fold(0u16, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u16::from(d - b'0'))
        })
    };
    Some((number(&bytes[4..7])?, number(&bytes[8..11])?))
}

/// Whether `prefix` (fewer than or exactly 12 bytes) can still begin a
/// ProtocolVersion message: lets a client give up on a non-RFB peer (an SSH or
/// HTTP server) without waiting for all 12 bytes.
pub fn could_be_protocol_version(prefix: &[u8]) -> bool {
    let n = prefix.len().min(4);
    prefix[..n] == b"RFB "[..n]
}

/// Security type numbers (rfbproto "Security"; the registry's other entries are
/// named so errors can say what a server offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum SecurityType {
    Invalid = 0,
    None = 1,
    VncAuth = 2,
    Ra2 = 5,
    Ra2ne = 6,
    Tight = 16,
    Ultra = 17,
    Tls = 18,
    VeNCrypt = 19,
    Sasl = 20,
    Md5 = 21,
    Xvp = 22,
    AppleDh = 30,
}

impl SecurityType {
    pub fn from_u8(value: u8) -> Option<SecurityType> {
        Some(match value {
            0 => SecurityType::Invalid,
            1 => SecurityType::None,
            2 => SecurityType::VncAuth,
            5 => SecurityType::Ra2,
            6 => SecurityType::Ra2ne,
            16 => SecurityType::Tight,
            17 => SecurityType::Ultra,
            18 => SecurityType::Tls,
            19 => SecurityType::VeNCrypt,
            20 => SecurityType::Sasl,
            21 => SecurityType::Md5,
            22 => SecurityType::Xvp,
            30 => SecurityType::AppleDh,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityType::Invalid => "Invalid",
            SecurityType::None => "None",
            SecurityType::VncAuth => "VNC authentication",
            SecurityType::Ra2 => "RA2",
            SecurityType::Ra2ne => "RA2ne",
            SecurityType::Tight => "Tight",
            SecurityType::Ultra => "Ultra",
            SecurityType::Tls => "TLS",
            SecurityType::VeNCrypt => "VeNCrypt",
            SecurityType::Sasl => "SASL",
            SecurityType::Md5 => "MD5 hash",
            SecurityType::Xvp => "xvp",
            SecurityType::AppleDh => "Apple Diffie-Hellman",
        }
    }
}

impl From<SecurityType> for u8 {
    fn from(t: SecurityType) -> u8 {
        t as u8
    }
}

/// Names a list of security type numbers as a server offered them:
/// `"VeNCrypt (19), 2 (VNC authentication)"`.
pub fn describe_security_types(types: &[u8]) -> String {
    if types.is_empty() {
        return "nothing".into();
    }
    let names: Vec<String> = types
        .iter()
        .map(|&t| match SecurityType::from_u8(t) {
            Some(known) => format!("{} ({t})", known.name()),
            None => format!("unknown type {t}"),
        })
        .collect();
    names.join(", ")
}

/// The security a handshake settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Security {
    None,
    VncAuth,
    VeNCrypt(VeNCryptSubtype),
}

impl Security {
    /// Whether the session after the handshake runs inside TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Security::VeNCrypt(s) if s.uses_tls())
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Security::None => f.write_str("None"),
            Security::VncAuth => f.write_str("VNC authentication"),
            Security::VeNCrypt(s) => write!(f, "VeNCrypt {}", s.name()),
        }
    }
}

/// SecurityResult status values (rfbproto "SecurityResult").
pub mod security_result {
    pub const OK: u32 = 0;
    pub const FAILED: u32 = 1;
    /// Only defined with the Tight security type; treated as a failure.
    pub const TOO_MANY_ATTEMPTS: u32 = 2;
}

/// A secret. Its `Debug` output is `MASKED`, so configurations can be logged.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Password {
        Password(secret.into())
    }

    /// The secret itself; say why wherever it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl From<String> for Password {
    fn from(s: String) -> Password {
        Password(s)
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Password {
        Password(s.to_owned())
    }
}

/// The outcome of parsing a structure at the front of a buffer that may hold
/// only part of it (or more than it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseResult<T> {
    /// Parsed; the structure occupied the first `len` bytes.
    Complete { value: T, len: usize },
    /// At least `needed` bytes in total are needed before parsing again.
    Incomplete { needed: usize },
    /// The bytes can never form a valid structure; `at` is the offset in the buffer
    /// of the field at fault.
    Invalid { at: usize, error: DecodeError },
}

/// The longest desktop name or reason string accepted, in bytes. Real ones are
/// short; a larger claim is refused rather than buffered.
pub const STRING_LIMIT: usize = 64 * 1024;

/// Parses an RFB string (`U32` length, then that many bytes) at the front of `buf`,
/// decoded as UTF-8 with invalid sequences replaced. Lengths above `limit` are
/// refused before any byte of the string is awaited.
pub fn parse_string(buf: &[u8], limit: usize, context: &'static str) -> ParseResult<String> {
    const LEN: usize = 4 /* length */;
    let Some(len_bytes) = buf.first_chunk::<LEN>() else {
        return ParseResult::Incomplete { needed: LEN };
    };
    let length = u32::from_be_bytes(*len_bytes);
    let Ok(length) = usize::try_from(length) else {
        return string_too_long(u64::from(length), limit, context);
    };
    if length > limit {
        return string_too_long(length as u64, limit, context);
    }
    // INVARIANT: length <= limit (64 KiB in practice), so this cannot overflow.
    let total = LEN + length;
    match buf.get(LEN..total) {
        Some(bytes) => ParseResult::Complete {
            value: String::from_utf8_lossy(bytes).into_owned(),
            len: total,
        },
        None => ParseResult::Incomplete { needed: total },
    }
}

fn string_too_long<T>(length: u64, limit: usize, context: &'static str) -> ParseResult<T> {
    ParseResult::Invalid {
        at: 0,
        error: DecodeError::TooLong {
            context,
            length,
            limit: limit as u64,
        },
    }
}

/// Writes an RFB string: `U32` length, then the bytes (cut at `u32::MAX` bytes,
/// which the length cannot express).
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

/// The server's ServerInit message (rfbproto "ServerInit").
///
/// The pixel format is kept as sent; callers check it with
/// [`PixelFormat::validate`] before decoding pixels in it (a client usually sends
/// its own with SetPixelFormat anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInit {
    pub width: u16,
    pub height: u16,
    pub pixel_format: PixelFormat,
    /// The desktop name, decoded as UTF-8 with invalid sequences replaced.
    pub name: String,
}

impl ServerInit {
    /// Size of the part before the name.
    pub const FIXED_SIZE: usize = 2 /* framebuffer-width */ + 2 /* framebuffer-height */
        + PixelFormat::SIZE /* server-pixel-format */;

    /// Longest accepted name, in bytes.
    pub const NAME_LIMIT: usize = STRING_LIMIT;

    /// Parses a ServerInit at the front of `buf`.
    pub fn parse(buf: &[u8]) -> ParseResult<ServerInit> {
        let Some(fixed) = buf.first_chunk::<{ ServerInit::FIXED_SIZE }>() else {
            return ParseResult::Incomplete {
                needed: ServerInit::FIXED_SIZE + 4, /* name-length */
            };
        };
        let width = u16::from_be_bytes([fixed[0], fixed[1]]);
        let height = u16::from_be_bytes([fixed[2], fixed[3]]);
        let area = u64::from(width) * u64::from(height);
        if area > u64::from(crate::messages::Limits::default().max_framebuffer_area) {
            // A client allocates its framebuffer from these: 65535x65535 would be 16 GiB.
            return ParseResult::Invalid {
                at: 0,
                error: DecodeError::TooLong {
                    context: "ServerInit framebuffer",
                    length: area,
                    limit: u64::from(crate::messages::Limits::default().max_framebuffer_area),
                },
            };
        }
        let mut format = [0u8; PixelFormat::SIZE];
        format.copy_from_slice(&fixed[4..]);
        let pixel_format = PixelFormat::from_bytes(&format);
        match parse_string(
            &buf[ServerInit::FIXED_SIZE..],
            ServerInit::NAME_LIMIT,
            "ServerInit name",
        ) {
            ParseResult::Complete { value: name, len } => ParseResult::Complete {
                value: ServerInit {
                    width,
                    height,
                    pixel_format,
                    name,
                },
                len: ServerInit::FIXED_SIZE + len,
            },
            ParseResult::Incomplete { needed } => ParseResult::Incomplete {
                needed: ServerInit::FIXED_SIZE + needed,
            },
            ParseResult::Invalid { at, error } => ParseResult::Invalid {
                at: ServerInit::FIXED_SIZE + at,
                error,
            },
        }
    }

    /// Appends the message to `out`. A name longer than [`ServerInit::NAME_LIMIT`]
    /// is cut (at a character boundary) so that every peer accepts it.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.width.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.pixel_format.to_bytes());
        let mut end = self.name.len().min(ServerInit::NAME_LIMIT);
        while !self.name.is_char_boundary(end) {
            end -= 1;
        }
        write_string(&self.name[..end], out);
    }
}

/// Why a handshake failed. Messages say what the peer did and, for protocol
/// errors, where in its byte stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first bytes were not a ProtocolVersion message.
    #[error("server did not speak RFB: it sent \"{got}\"")]
    NotRfb {
        /// The bytes received, escaped.
        got: String,
    },
    /// A well-formed version this side cannot speak.
    #[error("unsupported RFB version {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
    /// The server sent no security types (or type 0) and a reason.
    #[error("server refused the connection: {reason}")]
    ServerRefused { reason: String },
    /// None of the offered security types can be used with this configuration.
    #[error(
        "no security type in common: the server offers {}",
        describe_security_types(offered)
    )]
    NoCommonSecurity { offered: Vec<u8> },
    /// The server requires a password and none was given.
    #[error("the server requires a password")]
    PasswordRequired,
    /// The server requires a username (VeNCrypt Plain) and none was given.
    #[error("the server requires a username and password")]
    UsernameRequired,
    /// SecurityResult said failed. Only RFB 3.8 sends a reason. On the server
    /// side: the client's credentials were wrong, and `reason` says which ones
    /// (for logs; the client is only told "authentication failed").
    #[error("authentication failed{}", match reason { Some(r) => format!(": {r}"), None => String::new() })]
    AuthenticationFailed { reason: Option<String> },
    #[error("VeNCrypt: {0}")]
    VeNCrypt(#[from] VeNCryptError),
    /// The peer sent something the protocol does not allow. `offset` counts the
    /// peer's handshake bytes from its first (the plaintext ones inside TLS).
    #[error("protocol error in {stage} at byte {offset}: {detail}")]
    Protocol {
        stage: &'static str,
        offset: u64,
        detail: String,
    },
    /// The peer closed the connection before the handshake finished.
    #[error("server closed the connection during {stage} (after {offset} bytes)")]
    Closed { stage: &'static str, offset: u64 },
    /// On the server: the client's first bytes were not a ProtocolVersion message.
    #[error("client did not speak RFB: it sent \"{got}\"")]
    ClientNotRfb {
        /// The bytes received, escaped.
        got: String,
    },
    /// On the server: no configured security type can be offered to this client;
    /// `reason` is what the client was told.
    #[error("refused the client: {reason}")]
    RefusedClient { reason: String },
    /// On the server: the client closed the connection before the handshake
    /// finished.
    #[error("client closed the connection during {stage} (after {offset} bytes)")]
    ClientClosed { stage: &'static str, offset: u64 },
}

#[cfg(test)]
mod server_init_tests {
    use super::*;

    #[test]
    fn huge_framebuffer_is_refused() {
        // 65535x65535, then a pixel format and an empty name.
        let mut b = vec![0xff, 0xff, 0xff, 0xff];
        b.extend_from_slice(&PixelFormat::RGB888.to_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(ServerInit::parse(&b), ParseResult::Invalid { .. }));
        b[..4].copy_from_slice(&[0x07, 0x80, 0x04, 0x38]); // 1920x1080 is fine
        assert!(matches!(
            ServerInit::parse(&b),
            ParseResult::Complete { .. }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_strings() {
        assert_eq!(parse_protocol_version(b"RFB 003.008\n"), Some((3, 8)));
        assert_eq!(parse_protocol_version(b"RFB 003.889\n"), Some((3, 889)));
        assert_eq!(parse_protocol_version(b"RFB 004.001\n"), Some((4, 1)));
        assert_eq!(parse_protocol_version(b"RFB 003.008\r"), None);
        assert_eq!(parse_protocol_version(b"RFB 03.0008\n"), None);
        assert_eq!(parse_protocol_version(b"RFB 003.0a8\n"), None);
        assert_eq!(parse_protocol_version(b"SSH-2.0-Open"), None);
        assert_eq!(parse_protocol_version(b"RFB -03.008\n"), None);
    }

    #[test]
    fn version_rules() {
        use ProtocolVersion::*;
        let table = [
            ((3, 3), Some(V3_3)),
            ((3, 4), Some(V3_3)),
            ((3, 5), Some(V3_3)),
            ((3, 6), Some(V3_3)),
            ((3, 7), Some(V3_7)),
            ((3, 8), Some(V3_8)),
            ((3, 889), Some(V3_8)),
            ((4, 0), Some(V3_8)),
            ((4, 1), Some(V3_8)),
            ((3, 2), None),
            ((2, 9), None),
            ((0, 0), None),
        ];
        for ((major, minor), expected) in table {
            assert_eq!(
                ProtocolVersion::for_peer(major, minor),
                expected,
                "{major}.{minor}"
            );
        }
        assert_eq!(V3_7.wire(), b"RFB 003.007\n");
    }

    #[test]
    fn server_init_layout() {
        // 1024x768, RGB888, name "kvm": bytes laid out by hand from the spec table.
        let bytes = [
            0x04, 0x00, 0x03, 0x00, // width 1024, height 768
            32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0, // pixel format
            0, 0, 0, 3, b'k', b'v', b'm', // name
            0xaa, // next message
        ];
        let expected = ServerInit {
            width: 1024,
            height: 768,
            pixel_format: PixelFormat::RGB888,
            name: "kvm".into(),
        };
        assert_eq!(
            ServerInit::parse(&bytes),
            ParseResult::Complete {
                value: expected.clone(),
                len: 27
            }
        );
        let mut out = Vec::new();
        expected.write(&mut out);
        assert_eq!(out, bytes[..27]);
        for cut in 0..27 {
            assert!(
                matches!(ServerInit::parse(&bytes[..cut]), ParseResult::Incomplete { needed } if needed > cut),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn server_init_name_is_lossy_and_bounded() {
        let mut bytes = vec![0u8; ServerInit::FIXED_SIZE];
        bytes.extend_from_slice(&[0, 0, 0, 3, b'a', 0xff, b'b']);
        match ServerInit::parse(&bytes) {
            ParseResult::Complete { value, .. } => assert_eq!(value.name, "a\u{fffd}b"),
            other => panic!("{other:?}"),
        }
        let mut huge = vec![0u8; ServerInit::FIXED_SIZE];
        huge.extend_from_slice(&0x0001_0001u32.to_be_bytes());
        assert!(matches!(
            ServerInit::parse(&huge),
            ParseResult::Invalid {
                at: 20,
                error: DecodeError::TooLong { length: 65537, .. }
            }
        ));
        let mut max = vec![0u8; ServerInit::FIXED_SIZE];
        max.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            ServerInit::parse(&max),
            ParseResult::Invalid { .. }
        ));
    }

    #[test]
    fn long_names_are_cut_on_write() {
        let init = ServerInit {
            width: 1,
            height: 1,
            pixel_format: PixelFormat::RGB888,
            name: "é".repeat(40_000),
        };
        let mut out = Vec::new();
        init.write(&mut out);
        match ServerInit::parse(&out) {
            ParseResult::Complete { value, len } => {
                assert_eq!(len, out.len());
                assert_eq!(value.name.len(), ServerInit::NAME_LIMIT);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn password_debug_is_masked() {
        let p = Password::from("hunter2");
        assert_eq!(format!("{p:?}"), "MASKED");
        assert_eq!(p.expose(), "hunter2");
    }

    #[test]
    fn offered_types_are_named() {
        assert_eq!(
            describe_security_types(&[19, 2, 99]),
            "VeNCrypt (19), VNC authentication (2), unknown type 99"
        );
    }
}
