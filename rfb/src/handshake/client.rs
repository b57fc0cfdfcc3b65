//! The client side of the handshake, from the server's ProtocolVersion to its
//! ServerInit, as a sans-I/O state machine.
//!
//! The caller owns the connection. It keeps a buffer of bytes received from the
//! server and calls [`ClientHandshake::step`] with it; each call consumes what it
//! can, appends what must be sent to `output`, and says what to do next
//! ([`Step`]). The `net` module (feature `tokio`) drives it over a socket.
//!
//! Security choice, when the server (RFB 3.7 and later) offers several: VeNCrypt
//! when TLS is allowed, else VNC authentication when a password is given, else
//! None; VeNCrypt as a last resort (its sub-types may include something usable).
//! With RFB 3.3 the server decides. Inside VeNCrypt see
//! [`vencrypt::choose_subtype`].

use super::vencrypt::{self, InnerAuth, VeNCryptError, VeNCryptSubtype};
use super::vnc_auth;
use super::{
    parse_protocol_version, parse_string, security_result, HandshakeError, ParseResult, Password,
    ProtocolVersion, Security, SecurityType, ServerInit, STRING_LIMIT,
};

/// What the client brings to the handshake.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// ClientInit's shared-flag: leave other clients connected (true) or ask for
    /// exclusive access.
    pub shared: bool,
    /// For VeNCrypt Plain.
    pub username: Option<String>,
    /// For VNC authentication and VeNCrypt Plain.
    pub password: Option<Password>,
    /// The driver can wrap the connection in TLS when asked with [`Step::StartTls`]
    /// (VeNCrypt X509 sub-types).
    pub allow_tls: bool,
    /// Allow VeNCrypt Plain without TLS, which sends the password in clear.
    pub allow_plain_without_tls: bool,
}

impl Default for ClientConfig {
    /// Shared, no credentials, no TLS, no plain passwords in clear.
    fn default() -> ClientConfig {
        ClientConfig {
            shared: true,
            username: None,
            password: None,
            allow_tls: false,
            allow_plain_without_tls: false,
        }
    }
}

/// What the caller does after a [`ClientHandshake::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send everything in `output`, then read more and call step again with the
    /// unconsumed input plus the new bytes. `consumed` input bytes were used.
    Continue { consumed: usize },
    /// Send `output`, then wrap the connection in TLS (verifying the server
    /// certificate: only X509 sub-types are chosen), then call step again at once
    /// with the plaintext bytes received so far (possibly none: the client may
    /// speak first). Input past `consumed` was sent by the server before the TLS
    /// handshake, which a correct server never does.
    StartTls { consumed: usize },
    /// The handshake is over: send `output` (it may still hold ClientInit when the
    /// server's bytes came all at once). Input past `consumed` belongs to the
    /// normal protocol.
    Done { consumed: usize, init: ServerInit },
}

/// The client handshake state machine.
#[derive(Debug)]
pub struct ClientHandshake {
    config: ClientConfig,
    state: State,
    /// Server bytes consumed so far (plaintext after TLS).
    offset: u64,
    server_version: Option<(u16, u16)>,
    version: Option<ProtocolVersion>,
    security_type: Option<SecurityType>,
    subtype: Option<VeNCryptSubtype>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ProtocolVersion,
    /// RFB 3.3: the server's `U32` choice.
    SecurityType33,
    /// RFB 3.7+: `U8` count and the list.
    SecurityTypes,
    /// The reason after zero security types (or type 0 with 3.3).
    RefusalReason,
    VncChallenge,
    SecurityResult,
    /// The reason after a failed SecurityResult (3.8).
    FailureReason,
    VeNCryptVersion,
    VeNCryptVersionAck,
    VeNCryptSubtypes,
    VeNCryptTlsAck,
    /// StartTls was returned; the next step starts the inner authentication.
    TlsStarted,
    ServerInit,
    Done,
    Failed,
}

impl State {
    /// What is being read, for errors.
    fn stage(self) -> &'static str {
        match self {
            State::ProtocolVersion => "ProtocolVersion",
            State::SecurityType33 => "security type",
            State::SecurityTypes => "security types",
            State::RefusalReason => "the connection-failed reason",
            State::VncChallenge => "VNC authentication challenge",
            State::SecurityResult => "SecurityResult",
            State::FailureReason => "the authentication-failed reason",
            State::VeNCryptVersion => "VeNCrypt version",
            State::VeNCryptVersionAck => "VeNCrypt version acknowledgement",
            State::VeNCryptSubtypes => "VeNCrypt sub-types",
            State::VeNCryptTlsAck => "VeNCrypt TLS acknowledgement",
            State::TlsStarted => "TLS handshake",
            State::ServerInit => "ServerInit",
            State::Done => "the finished handshake",
            State::Failed => "the failed handshake",
        }
    }
}

/// What one state did with the bytes at the front of the input.
enum Progress {
    /// Consumed this many bytes and moved to another state.
    Advanced(usize),
    NeedMore,
    StartTls(usize),
    Done(usize, ServerInit),
}

impl ClientHandshake {
    pub fn new(config: ClientConfig) -> ClientHandshake {
        ClientHandshake {
            config,
            state: State::ProtocolVersion,
            offset: 0,
            server_version: None,
            version: None,
            security_type: None,
            subtype: None,
        }
    }

    /// Feeds the server's bytes received so far (not yet consumed) and collects
    /// what to send in `output`. Never panics, whatever `input` holds.
    ///
    /// On an error nothing more should be sent; the connection is to be closed.
    pub fn step(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<Step, HandshakeError> {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            let progress = match self.advance(rest, output) {
                Ok(progress) => progress,
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            };
            let used = match progress {
                Progress::Advanced(n) | Progress::StartTls(n) | Progress::Done(n, _) => n,
                Progress::NeedMore => 0,
            };
            consumed += used;
            self.offset += used as u64;
            match progress {
                Progress::Advanced(_) => {}
                Progress::NeedMore => return Ok(Step::Continue { consumed }),
                Progress::StartTls(_) => return Ok(Step::StartTls { consumed }),
                Progress::Done(_, init) => return Ok(Step::Done { consumed, init }),
            }
        }
    }

    /// The error to report when the server closes the connection while the
    /// handshake waits for more. `unconsumed` is what is left of its bytes.
    pub fn closed(&self, unconsumed: &[u8]) -> HandshakeError {
        match self.state {
            // Servers claiming 3.8 that close without the reason the spec promises.
            State::FailureReason => HandshakeError::AuthenticationFailed { reason: None },
            state => HandshakeError::Closed {
                stage: state.stage(),
                offset: self.offset + unconsumed.len() as u64,
            },
        }
    }

    /// The version in use once negotiated, e.g. `(3, 8)`.
    pub fn version(&self) -> Option<(u16, u16)> {
        self.version.map(ProtocolVersion::major_minor)
    }

    /// The version the server announced, e.g. `(3, 889)`.
    pub fn server_version(&self) -> Option<(u16, u16)> {
        self.server_version
    }

    /// The security type chosen (by the server with RFB 3.3).
    pub fn security_type(&self) -> Option<SecurityType> {
        self.security_type
    }

    /// The security in use, once fully chosen (for VeNCrypt: with its sub-type).
    pub fn security(&self) -> Option<Security> {
        match self.security_type? {
            SecurityType::None => Some(Security::None),
            SecurityType::VncAuth => Some(Security::VncAuth),
            SecurityType::VeNCrypt => self.subtype.map(Security::VeNCrypt),
            _ => None,
        }
    }

    /// What the handshake is waiting for, for messages and logs.
    pub fn stage(&self) -> &'static str {
        self.state.stage()
    }

    /// Server bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn protocol_error(&self, at: usize, detail: impl Into<String>) -> HandshakeError {
        HandshakeError::Protocol {
            stage: self.state.stage(),
            offset: self.offset + at as u64,
            detail: detail.into(),
        }
    }

    /// Runs the current state on `buf`, the unconsumed input.
    fn advance(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        match self.state {
            State::ProtocolVersion => {
                const SIZE: usize = ProtocolVersion::SIZE;
                let head = &buf[..buf.len().min(SIZE)];
                if !super::could_be_protocol_version(head) {
                    return Err(HandshakeError::NotRfb { got: escape(head) });
                }
                let Some(bytes) = buf.first_chunk::<SIZE>() else {
                    return Ok(Progress::NeedMore);
                };
                let Some((major, minor)) = parse_protocol_version(bytes) else {
                    return Err(HandshakeError::NotRfb { got: escape(bytes) });
                };
                self.server_version = Some((major, minor));
                let version = ProtocolVersion::for_peer(major, minor)
                    .ok_or(HandshakeError::UnsupportedVersion { major, minor })?;
                self.version = Some(version);
                out.extend_from_slice(version.wire());
                self.state = if version == ProtocolVersion::V3_3 {
                    State::SecurityType33
                } else {
                    State::SecurityTypes
                };
                Ok(Progress::Advanced(SIZE))
            }

            State::SecurityType33 => {
                let Some(&bytes) = buf.first_chunk::<4>() else {
                    return Ok(Progress::NeedMore);
                };
                let value = u32::from_be_bytes(bytes);
                if value == 0 {
                    self.state = State::RefusalReason;
                    return Ok(Progress::Advanced(4));
                }
                let chosen = match u8::try_from(value).ok().and_then(SecurityType::from_u8) {
                    Some(t @ (SecurityType::None | SecurityType::VncAuth)) => t,
                    _ if value <= 0xff => {
                        return Err(HandshakeError::NoCommonSecurity {
                            offered: vec![value as u8],
                        })
                    }
                    _ => {
                        return Err(self.protocol_error(0, format!("invalid security type {value}")))
                    }
                };
                self.begin_security(chosen, out)?;
                Ok(Progress::Advanced(4))
            }

            State::SecurityTypes => {
                let Some(&count) = buf.first() else {
                    return Ok(Progress::NeedMore);
                };
                if count == 0 {
                    self.state = State::RefusalReason;
                    return Ok(Progress::Advanced(1));
                }
                let len = 1 /* number-of-security-types */ + usize::from(count);
                let Some(offered) = buf.get(1..len) else {
                    return Ok(Progress::NeedMore);
                };
                let chosen = choose_security(offered, &self.config)?;
                out.push(chosen.into());
                self.begin_security(chosen, out)?;
                Ok(Progress::Advanced(len))
            }

            State::RefusalReason => match parse_string(buf, STRING_LIMIT, "reason") {
                ParseResult::Complete { value, .. } => {
                    Err(HandshakeError::ServerRefused { reason: value })
                }
                ParseResult::Incomplete { .. } => Ok(Progress::NeedMore),
                ParseResult::Invalid { at, error } => {
                    Err(self.protocol_error(at, error.to_string()))
                }
            },

            State::VncChallenge => {
                let Some(challenge) = buf.first_chunk::<{ vnc_auth::CHALLENGE_SIZE }>() else {
                    return Ok(Progress::NeedMore);
                };
                let password = self
                    .config
                    .password
                    .as_ref()
                    .ok_or(HandshakeError::PasswordRequired)?;
                // The password keys the DES response; it never goes on the wire.
                out.extend_from_slice(&vnc_auth::challenge_response(
                    password.expose().as_bytes(),
                    challenge,
                ));
                self.state = State::SecurityResult;
                Ok(Progress::Advanced(vnc_auth::CHALLENGE_SIZE))
            }

            State::SecurityResult => {
                let Some(&bytes) = buf.first_chunk::<4>() else {
                    return Ok(Progress::NeedMore);
                };
                match u32::from_be_bytes(bytes) {
                    security_result::OK => {
                        self.enter_server_init(out);
                        Ok(Progress::Advanced(4))
                    }
                    status @ (security_result::FAILED | security_result::TOO_MANY_ATTEMPTS) => {
                        if self.version >= Some(ProtocolVersion::V3_8) {
                            self.state = State::FailureReason;
                            return Ok(Progress::Advanced(4));
                        }
                        Err(HandshakeError::AuthenticationFailed {
                            reason: (status == security_result::TOO_MANY_ATTEMPTS)
                                .then(|| "too many attempts".to_owned()),
                        })
                    }
                    status => Err(self.protocol_error(0, format!("invalid status {status}"))),
                }
            }

            State::FailureReason => match parse_string(buf, STRING_LIMIT, "reason") {
                ParseResult::Complete { value, .. } => Err(HandshakeError::AuthenticationFailed {
                    reason: Some(value),
                }),
                ParseResult::Incomplete { .. } => Ok(Progress::NeedMore),
                ParseResult::Invalid { at, error } => {
                    Err(self.protocol_error(at, error.to_string()))
                }
            },

            State::VeNCryptVersion => {
                let Some(&[major, minor]) = buf.first_chunk::<2>() else {
                    return Ok(Progress::NeedMore);
                };
                if (major, minor) < vencrypt::VERSION {
                    return Err(VeNCryptError::UnsupportedVersion { major, minor }.into());
                }
                out.extend_from_slice(&[vencrypt::VERSION.0, vencrypt::VERSION.1]);
                self.state = State::VeNCryptVersionAck;
                Ok(Progress::Advanced(2))
            }

            State::VeNCryptVersionAck => {
                let Some(&status) = buf.first() else {
                    return Ok(Progress::NeedMore);
                };
                if status != 0 {
                    return Err(VeNCryptError::VersionRefused { status }.into());
                }
                self.state = State::VeNCryptSubtypes;
                Ok(Progress::Advanced(1))
            }

            State::VeNCryptSubtypes => {
                let Some(&count) = buf.first() else {
                    return Ok(Progress::NeedMore);
                };
                if count == 0 {
                    return Err(VeNCryptError::NoSubtypes.into());
                }
                let len = 1 /* count */ + 4 * usize::from(count) /* sub-types */;
                let Some(list) = buf.get(1..len) else {
                    return Ok(Progress::NeedMore);
                };
                let offered: Vec<u32> = list
                    .chunks_exact(4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let chosen = vencrypt::choose_subtype(&offered, &self.config)?;
                self.subtype = Some(chosen);
                out.extend_from_slice(&u32::from(chosen).to_be_bytes());
                if chosen.uses_tls() {
                    self.state = State::VeNCryptTlsAck;
                } else {
                    self.begin_inner_auth(chosen, out)?;
                }
                Ok(Progress::Advanced(len))
            }

            State::VeNCryptTlsAck => {
                let Some(&ack) = buf.first() else {
                    return Ok(Progress::NeedMore);
                };
                if ack == 0 {
                    return Err(VeNCryptError::TlsRefused.into());
                }
                self.state = State::TlsStarted;
                Ok(Progress::StartTls(1))
            }

            State::TlsStarted => {
                let subtype = self
                    .subtype
                    .ok_or_else(|| self.protocol_error(0, "no VeNCrypt sub-type chosen"))?;
                self.begin_inner_auth(subtype, out)?;
                Ok(Progress::Advanced(0))
            }

            State::ServerInit => match ServerInit::parse(buf) {
                ParseResult::Complete { value, len } => {
                    self.state = State::Done;
                    Ok(Progress::Done(len, value))
                }
                ParseResult::Incomplete { .. } => Ok(Progress::NeedMore),
                ParseResult::Invalid { at, error } => {
                    Err(self.protocol_error(at, error.to_string()))
                }
            },

            State::Done | State::Failed => {
                Err(self.protocol_error(0, "step called after the handshake ended"))
            }
        }
    }

    /// Moves on once the top-level security type is settled.
    fn begin_security(
        &mut self,
        chosen: SecurityType,
        out: &mut Vec<u8>,
    ) -> Result<(), HandshakeError> {
        self.security_type = Some(chosen);
        match chosen {
            SecurityType::None => self.after_none(out),
            SecurityType::VncAuth => {
                if self.config.password.is_none() {
                    return Err(HandshakeError::PasswordRequired);
                }
                self.state = State::VncChallenge;
            }
            SecurityType::VeNCrypt => self.state = State::VeNCryptVersion,
            // INVARIANT: choose_security and the 3.3 path only pick the three above.
            _ => return Err(self.protocol_error(0, "unsupported security type chosen")),
        }
        Ok(())
    }

    /// Starts VeNCrypt's inner authentication (after TLS, or at once without).
    fn begin_inner_auth(
        &mut self,
        subtype: VeNCryptSubtype,
        out: &mut Vec<u8>,
    ) -> Result<(), HandshakeError> {
        match subtype.inner_auth() {
            // TigerVNC, the reference, skips SecurityResult before 3.8 only when
            // the security in effect is None itself: the VeNCrypt sub-type 1.
            InnerAuth::None if subtype == VeNCryptSubtype::None => self.after_none(out),
            InnerAuth::None => self.state = State::SecurityResult,
            InnerAuth::VncAuth => {
                if self.config.password.is_none() {
                    return Err(HandshakeError::PasswordRequired);
                }
                self.state = State::VncChallenge;
            }
            InnerAuth::Plain => {
                let username = self
                    .config
                    .username
                    .as_deref()
                    .ok_or(HandshakeError::UsernameRequired)?;
                let password = self
                    .config
                    .password
                    .as_ref()
                    .ok_or(HandshakeError::PasswordRequired)?;
                // Plain sends the password itself: inside TLS, or in clear only when
                // allow_plain_without_tls let choose_subtype pick Plain.
                vencrypt::write_plain_credentials(
                    username.as_bytes(),
                    password.expose().as_bytes(),
                    out,
                )
                .ok_or_else(|| self.protocol_error(0, "credentials longer than 4 GiB"))?;
                self.state = State::SecurityResult;
            }
        }
        Ok(())
    }

    /// After None: RFB 3.8 sends SecurityResult; 3.3 and 3.7 go straight to
    /// initialisation.
    fn after_none(&mut self, out: &mut Vec<u8>) {
        if self.version >= Some(ProtocolVersion::V3_8) {
            self.state = State::SecurityResult;
        } else {
            self.enter_server_init(out);
        }
    }

    /// Sends ClientInit and waits for ServerInit.
    fn enter_server_init(&mut self, out: &mut Vec<u8>) {
        out.push(u8::from(self.config.shared)); // shared-flag
        self.state = State::ServerInit;
    }
}

/// Picks the top-level security type (RFB 3.7+) as described in the module
/// documentation.
fn choose_security(offered: &[u8], config: &ClientConfig) -> Result<SecurityType, HandshakeError> {
    let has = |t: SecurityType| offered.contains(&u8::from(t));
    if has(SecurityType::VeNCrypt) && config.allow_tls {
        return Ok(SecurityType::VeNCrypt);
    }
    if has(SecurityType::VncAuth) && config.password.is_some() {
        return Ok(SecurityType::VncAuth);
    }
    if has(SecurityType::None) {
        return Ok(SecurityType::None);
    }
    if has(SecurityType::VncAuth) {
        return Err(HandshakeError::PasswordRequired);
    }
    if has(SecurityType::VeNCrypt) {
        return Ok(SecurityType::VeNCrypt);
    }
    Err(HandshakeError::NoCommonSecurity {
        offered: offered.to_vec(),
    })
}

/// Shows received bytes in an error message: printable ASCII as is, the rest escaped.
fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;

    /// Challenge 00 01 … 0f and the response for "password", computed with
    /// `openssl enc -des-ecb` (see `vnc_auth`'s tests for the commands).
    const CHALLENGE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const RESPONSE: [u8; 16] = [
        0xb8, 0x66, 0x92, 0x41, 0x25, 0xc8, 0xee, 0xbb, 0x9d, 0xeb, 0xc1, 0xdb, 0x61, 0xc5, 0x38,
        0xe2,
    ];

    /// ServerInit for 640x480 RGB565 "desk", by hand from the spec's table.
    const SERVER_INIT: [u8; 28] = [
        0x02, 0x80, 0x01, 0xe0, // 640 x 480
        16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0, // RGB565
        0, 0, 0, 4, b'd', b'e', b's', b'k',
    ];

    fn server_init() -> ServerInit {
        ServerInit {
            width: 640,
            height: 480,
            pixel_format: PixelFormat::RGB565,
            name: "desk".into(),
        }
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn with_password(password: &str) -> ClientConfig {
        ClientConfig {
            password: Some(password.into()),
            ..ClientConfig::default()
        }
    }

    fn tls_config(username: Option<&str>, password: Option<&str>) -> ClientConfig {
        ClientConfig {
            allow_tls: true,
            username: username.map(Into::into),
            password: password.map(Password::from),
            ..ClientConfig::default()
        }
    }

    struct Outcome {
        result: Result<ServerInit, HandshakeError>,
        sent: Vec<u8>,
        tls_starts: usize,
        leftover: Vec<u8>,
    }

    /// Delivers `server` in chunks of `chunk` bytes, as a socket might, and sends
    /// everything the client writes into `sent`; StartTls wraps nothing (the
    /// bytes after it stand for the plaintext inside TLS). Running out of bytes
    /// ends like a closed connection.
    fn drive(config: ClientConfig, server: &[u8], chunk: usize) -> Outcome {
        let mut hs = ClientHandshake::new(config);
        let mut sent = Vec::new();
        let mut buf = Vec::new();
        let mut pos = 0;
        let mut tls_starts = 0;
        loop {
            let mut out = Vec::new();
            let step = hs.step(&buf, &mut out);
            sent.extend_from_slice(&out);
            match step {
                Ok(Step::Continue { consumed }) => {
                    buf.drain(..consumed);
                    if pos == server.len() {
                        return Outcome {
                            result: Err(hs.closed(&buf)),
                            sent,
                            tls_starts,
                            leftover: buf,
                        };
                    }
                    let end = (pos + chunk).min(server.len());
                    buf.extend_from_slice(&server[pos..end]);
                    pos = end;
                }
                Ok(Step::StartTls { consumed }) => {
                    buf.drain(..consumed);
                    tls_starts += 1;
                }
                Ok(Step::Done { consumed, init }) => {
                    assert!(hs.is_done());
                    buf.drain(..consumed);
                    buf.extend_from_slice(&server[pos..]);
                    return Outcome {
                        result: Ok(init),
                        sent,
                        tls_starts,
                        leftover: buf,
                    };
                }
                Err(e) => {
                    return Outcome {
                        result: Err(e),
                        sent,
                        tls_starts,
                        leftover: buf,
                    }
                }
            }
        }
    }

    /// Runs a complete, valid exchange whole, byte by byte and in odd chunks, and
    /// every truncation of it: all must agree, and a truncated one must only ever
    /// wait for more (ending as a closed connection, never as a protocol error).
    fn check_exchange(config: &ClientConfig, server: &[u8], client: &[u8], tls_starts: usize) {
        for chunk in [server.len().max(1), 1, 3, 7] {
            let o = drive(config.clone(), server, chunk);
            assert_eq!(o.result, Ok(server_init()), "chunk {chunk}");
            assert_eq!(o.sent, client, "chunk {chunk}");
            assert_eq!(o.tls_starts, tls_starts, "chunk {chunk}");
            assert!(o.leftover.is_empty());
        }
        for cut in 0..server.len() {
            let o = drive(config.clone(), &server[..cut], 1);
            assert!(
                matches!(o.result, Err(HandshakeError::Closed { offset, .. }) if offset == cut as u64),
                "cut at {cut}: {:?}",
                o.result
            );
            assert!(client.starts_with(&o.sent), "cut at {cut}");
        }
    }

    #[test]
    fn none_3_8() {
        let server = cat(&[b"RFB 003.008\n", &[1, 1], &[0, 0, 0, 0], &SERVER_INIT]);
        let client = cat(&[b"RFB 003.008\n", &[1], &[1]]);
        check_exchange(&ClientConfig::default(), &server, &client, 0);
    }

    #[test]
    fn none_3_7_has_no_security_result() {
        let server = cat(&[b"RFB 003.007\n", &[1, 1], &SERVER_INIT]);
        let client = cat(&[b"RFB 003.007\n", &[1], &[1]]);
        check_exchange(&ClientConfig::default(), &server, &client, 0);
    }

    #[test]
    fn none_3_3_server_decides() {
        let server = cat(&[b"RFB 003.003\n", &[0, 0, 0, 1], &SERVER_INIT]);
        let exclusive = ClientConfig {
            shared: false,
            ..ClientConfig::default()
        };
        let client = cat(&[b"RFB 003.003\n", &[0]]);
        check_exchange(&exclusive, &server, &client, 0);
    }

    #[test]
    fn vnc_auth_3_8() {
        let server = cat(&[
            b"RFB 003.008\n",
            &[2, 1, 2],
            &CHALLENGE,
            &[0, 0, 0, 0],
            &SERVER_INIT,
        ]);
        let client = cat(&[b"RFB 003.008\n", &[2], &RESPONSE, &[1]]);
        check_exchange(&with_password("password"), &server, &client, 0);
    }

    #[test]
    fn vnc_auth_3_3() {
        let server = cat(&[
            b"RFB 003.003\n",
            &[0, 0, 0, 2],
            &CHALLENGE,
            &[0, 0, 0, 0],
            &SERVER_INIT,
        ]);
        let client = cat(&[b"RFB 003.003\n", &RESPONSE, &[1]]);
        check_exchange(&with_password("password"), &server, &client, 0);
    }

    #[test]
    fn vnc_auth_failure_with_reason_3_8() {
        let server = cat(&[
            b"RFB 003.008\n",
            &[1, 2],
            &CHALLENGE,
            &[0, 0, 0, 1],
            &[0, 0, 0, 14],
            b"wrong password",
        ]);
        let o = drive(with_password("password"), &server, 5);
        assert_eq!(
            o.result,
            Err(HandshakeError::AuthenticationFailed {
                reason: Some("wrong password".into())
            })
        );
        assert_eq!(
            o.result.expect_err("failed").to_string(),
            "authentication failed: wrong password"
        );
        // A server that closes before the promised reason.
        let o = drive(with_password("password"), &server[..server.len() - 14], 5);
        assert_eq!(
            o.result,
            Err(HandshakeError::AuthenticationFailed { reason: None })
        );
    }

    #[test]
    fn vnc_auth_failure_without_reason_3_3_and_3_7() {
        let server = cat(&[b"RFB 003.003\n", &[0, 0, 0, 2], &CHALLENGE, &[0, 0, 0, 1]]);
        let o = drive(with_password("password"), &server, 64);
        assert_eq!(
            o.result,
            Err(HandshakeError::AuthenticationFailed { reason: None })
        );
        let server = cat(&[b"RFB 003.007\n", &[1, 2], &CHALLENGE, &[0, 0, 0, 1]]);
        let o = drive(with_password("password"), &server, 64);
        assert_eq!(
            o.result,
            Err(HandshakeError::AuthenticationFailed { reason: None })
        );
    }

    #[test]
    fn refused_with_reason() {
        let reason = b"Too many security failures";
        let server = cat(&[b"RFB 003.008\n", &[0], &[0, 0, 0, 26], reason]);
        let o = drive(ClientConfig::default(), &server, 4);
        assert_eq!(
            o.result,
            Err(HandshakeError::ServerRefused {
                reason: "Too many security failures".into()
            })
        );
        assert_eq!(o.sent, b"RFB 003.008\n");
        let server = cat(&[b"RFB 003.003\n", &[0, 0, 0, 0], &[0, 0, 0, 26], reason]);
        let o = drive(ClientConfig::default(), &server, 4);
        assert_eq!(
            o.result.expect_err("refused").to_string(),
            "server refused the connection: Too many security failures"
        );
    }

    #[test]
    fn security_preference() {
        let offer = |types: &[u8], config: ClientConfig| {
            let server = cat(&[b"RFB 003.008\n", &[types.len() as u8], types]);
            let mut hs = ClientHandshake::new(config);
            let mut out = Vec::new();
            hs.step(&server, &mut out).map(|_| out[12..].to_vec())
        };
        assert_eq!(offer(&[1, 2, 19], tls_config(None, None)), Ok(vec![19]));
        assert_eq!(offer(&[1, 2, 19], with_password("p")), Ok(vec![2]));
        assert_eq!(offer(&[1, 2, 19], ClientConfig::default()), Ok(vec![1]));
        assert_eq!(offer(&[19, 2], with_password("p")), Ok(vec![2]));
        // VeNCrypt as a last resort: its sub-types may offer what is needed.
        assert_eq!(offer(&[19, 16], with_password("p")), Ok(vec![19]));
        assert_eq!(
            offer(&[2, 19], ClientConfig::default()),
            Err(HandshakeError::PasswordRequired)
        );
        let err = offer(&[16, 5, 99], with_password("p")).expect_err("nothing in common");
        assert_eq!(
            err,
            HandshakeError::NoCommonSecurity {
                offered: vec![16, 5, 99]
            }
        );
        assert_eq!(
            err.to_string(),
            "no security type in common: the server offers Tight (16), RA2 (5), unknown type 99"
        );
    }

    #[test]
    fn server_chosen_type_3_3_we_cannot_do() {
        let mut hs = ClientHandshake::new(ClientConfig::default());
        let server = cat(&[b"RFB 003.003\n", &[0, 0, 0, 2]]);
        assert_eq!(
            hs.step(&server, &mut Vec::new()),
            Err(HandshakeError::PasswordRequired)
        );
        let mut hs = ClientHandshake::new(ClientConfig::default());
        let server = cat(&[b"RFB 003.003\n", &[0, 0, 0, 16]]);
        assert_eq!(
            hs.step(&server, &mut Vec::new()),
            Err(HandshakeError::NoCommonSecurity { offered: vec![16] })
        );
        let mut hs = ClientHandshake::new(ClientConfig::default());
        let server = cat(&[b"RFB 003.003\n", &[1, 0, 0, 1]]);
        assert_eq!(
            hs.step(&server, &mut Vec::new()),
            Err(HandshakeError::Protocol {
                stage: "security type",
                offset: 12,
                detail: "invalid security type 16777217".into()
            })
        );
    }

    /// VeNCrypt up to StartTls, then VNC authentication inside TLS.
    #[test]
    fn vencrypt_x509_vnc() {
        let before_tls = cat(&[
            b"RFB 003.008\n",
            &[2, 19, 2],
            &[0, 2],                      // server's VeNCrypt version
            &[0],                         // version accepted
            &[2, 0, 0, 1, 5, 0, 0, 0, 2], // X509Vnc, VncAuth
            &[1],                         // TLS acknowledgement
        ]);
        let mut hs = ClientHandshake::new(tls_config(None, Some("password")));
        let mut out = Vec::new();
        let step = hs.step(&before_tls, &mut out);
        assert_eq!(
            step,
            Ok(Step::StartTls {
                consumed: before_tls.len()
            })
        );
        assert_eq!(out, cat(&[b"RFB 003.008\n", &[19], &[0, 2], &[0, 0, 1, 5]]));
        assert_eq!(
            hs.security(),
            Some(Security::VeNCrypt(VeNCryptSubtype::X509Vnc))
        );
        assert_eq!(hs.offset(), before_tls.len() as u64);

        let server = cat(&[&before_tls, &CHALLENGE, &[0, 0, 0, 0], &SERVER_INIT]);
        let client = cat(&[
            b"RFB 003.008\n",
            &[19],
            &[0, 2],
            &[0, 0, 1, 5],
            &RESPONSE,
            &[1],
        ]);
        check_exchange(&tls_config(None, Some("password")), &server, &client, 1);
    }

    /// X509Plain: the client speaks first after TLS, with no server byte to read.
    #[test]
    fn vencrypt_x509_plain_credentials() {
        let server = cat(&[
            b"RFB 003.008\n",
            &[1, 19],
            &[0, 2],
            &[0],
            &[1, 0, 0, 1, 6], // X509Plain
            &[1],
            &[0, 0, 0, 0],
            &SERVER_INIT,
        ]);
        let client = cat(&[
            b"RFB 003.008\n",
            &[19],
            &[0, 2],
            &[0, 0, 1, 6],
            &[0, 0, 0, 5, 0, 0, 0, 6],
            b"alicehunter",
            &[1],
        ]);
        check_exchange(
            &tls_config(Some("alice"), Some("hunter")),
            &server,
            &client,
            1,
        );
        // The credentials come out of the step right after StartTls, with no input.
        let mut hs = ClientHandshake::new(tls_config(Some("alice"), Some("hunter")));
        let mut out = Vec::new();
        let Ok(Step::StartTls { consumed }) = hs.step(&server, &mut out) else {
            panic!("expected StartTls");
        };
        assert_eq!(consumed, 12 + 2 + 2 + 1 + 5 + 1);
        out.clear();
        assert_eq!(hs.step(&[], &mut out), Ok(Step::Continue { consumed: 0 }));
        assert_eq!(out, cat(&[&[0, 0, 0, 5, 0, 0, 0, 6], b"alicehunter"]));
    }

    #[test]
    fn vencrypt_x509_none() {
        let server = cat(&[
            b"RFB 003.008\n",
            &[2, 1, 19],
            &[0, 2],
            &[0],
            &[1, 0, 0, 1, 4], // X509None
            &[1],
            &[0, 0, 0, 0],
            &SERVER_INIT,
        ]);
        let client = cat(&[b"RFB 003.008\n", &[19], &[0, 2], &[0, 0, 1, 4], &[1]]);
        check_exchange(&tls_config(None, None), &server, &client, 1);
    }

    #[test]
    fn vencrypt_plain_without_tls_only_when_allowed() {
        let server = cat(&[
            b"RFB 003.008\n",
            &[1, 19],
            &[0, 2],
            &[0],
            &[1, 0, 0, 1, 0], // Plain
            &[0, 0, 0, 0],
            &SERVER_INIT,
        ]);
        let allowed = ClientConfig {
            allow_plain_without_tls: true,
            ..tls_config(Some("bob"), Some("pw"))
        };
        let client = cat(&[
            b"RFB 003.008\n",
            &[19],
            &[0, 2],
            &[0, 0, 1, 0],
            &[0, 0, 0, 3, 0, 0, 0, 2],
            b"bobpw",
            &[1],
        ]);
        check_exchange(&allowed, &server, &client, 0);

        let o = drive(tls_config(Some("bob"), Some("pw")), &server, 100);
        assert_eq!(
            o.result,
            Err(HandshakeError::VeNCrypt(VeNCryptError::NoCommonSubtype {
                offered: vec![256],
                tls_allowed: true,
                plain_allowed: false
            }))
        );
        // Nothing of the password went out.
        assert!(!o.sent.windows(2).any(|w| w == b"pw"));
    }

    #[test]
    fn vencrypt_vnc_auth_subtype_without_tls() {
        // TigerVNC's default: VeNCrypt offering TLSVnc (anonymous) and VncAuth.
        let server = cat(&[
            b"RFB 003.008\n",
            &[2, 19, 2],
            &[0, 2],
            &[0],
            &[2, 0, 0, 1, 2, 0, 0, 0, 2],
            &CHALLENGE,
            &[0, 0, 0, 0],
            &SERVER_INIT,
        ]);
        let client = cat(&[
            b"RFB 003.008\n",
            &[19],
            &[0, 2],
            &[0, 0, 0, 2],
            &RESPONSE,
            &[1],
        ]);
        check_exchange(&tls_config(None, Some("password")), &server, &client, 0);
    }

    #[test]
    fn vencrypt_failures() {
        let prefix = cat(&[b"RFB 003.008\n", &[1, 19]]);
        let cases: [(&[u8], HandshakeError); 4] = [
            (
                &[0, 1],
                VeNCryptError::UnsupportedVersion { major: 0, minor: 1 }.into(),
            ),
            (
                &[0, 2, 255],
                VeNCryptError::VersionRefused { status: 255 }.into(),
            ),
            (&[0, 2, 0, 0], VeNCryptError::NoSubtypes.into()),
            (
                &[0, 2, 0, 1, 0, 0, 1, 5, 0],
                VeNCryptError::TlsRefused.into(),
            ),
        ];
        for (tail, expected) in cases {
            let o = drive(tls_config(None, Some("p")), &cat(&[&prefix, tail]), 100);
            assert_eq!(o.result, Err(expected));
        }
        // A higher VeNCrypt version is answered with 0.2.
        let mut hs = ClientHandshake::new(tls_config(None, None));
        let mut out = Vec::new();
        hs.step(&cat(&[&prefix, &[0, 7]]), &mut out)
            .expect("continues");
        assert_eq!(&out[13..], [0, 2]);
    }

    #[test]
    fn version_oddities() {
        let replies = [
            (&b"RFB 003.889\n", Ok(b"RFB 003.008\n")),
            (&b"RFB 004.001\n", Ok(b"RFB 003.008\n")),
            (&b"RFB 003.005\n", Ok(b"RFB 003.003\n")),
            (&b"RFB 003.006\n", Ok(b"RFB 003.003\n")),
            (&b"RFB 003.004\n", Ok(b"RFB 003.003\n")),
            (&b"RFB 003.007\n", Ok(b"RFB 003.007\n")),
            (
                &b"RFB 002.000\n",
                Err(HandshakeError::UnsupportedVersion { major: 2, minor: 0 }),
            ),
            (
                &b"RFB 003.002\n",
                Err(HandshakeError::UnsupportedVersion { major: 3, minor: 2 }),
            ),
        ];
        for (announced, expected) in replies {
            let mut hs = ClientHandshake::new(ClientConfig::default());
            let mut out = Vec::new();
            let result = hs.step(&announced[..], &mut out).map(|_| out);
            assert_eq!(result, expected.map(|r| r.to_vec()));
        }
        let mut hs = ClientHandshake::new(ClientConfig::default());
        hs.step(b"RFB 003.889\n", &mut Vec::new()).expect("3.8");
        assert_eq!(hs.server_version(), Some((3, 889)));
        assert_eq!(hs.version(), Some((3, 8)));
    }

    #[test]
    fn garbage_instead_of_rfb() {
        let cases: [(&[u8], &str); 5] = [
            (b"SSH-2.0-OpenSSH_9.6\r\n", "SSH-2.0-Open"),
            (b"HTTP/1.1 400 Bad Request\r\n", "HTTP/1.1 400"),
            (b"RX", "RX"),
            (b"RFB 003.00x\n", "RFB 003.00x\\n"),
            (b"\x16\x03\x01\x02\x00", "\\x16\\x03\\x01\\x02\\x00"),
        ];
        for (bytes, got) in cases {
            let mut hs = ClientHandshake::new(ClientConfig::default());
            let mut out = Vec::new();
            assert_eq!(
                hs.step(bytes, &mut out),
                Err(HandshakeError::NotRfb { got: got.into() })
            );
            assert!(out.is_empty());
        }
        let err = HandshakeError::NotRfb {
            got: "SSH-2.0-Open".into(),
        };
        assert_eq!(
            err.to_string(),
            "server did not speak RFB: it sent \"SSH-2.0-Open\""
        );
    }

    #[test]
    fn protocol_errors_name_stage_and_offset() {
        let server = cat(&[b"RFB 003.008\n", &[1, 1], &[0, 0, 0, 7]]);
        let o = drive(ClientConfig::default(), &server, 100);
        assert_eq!(
            o.result,
            Err(HandshakeError::Protocol {
                stage: "SecurityResult",
                offset: 14,
                detail: "invalid status 7".into()
            })
        );
        let mut init = SERVER_INIT;
        init[20..24].copy_from_slice(&0x0100_0000u32.to_be_bytes());
        let server = cat(&[b"RFB 003.008\n", &[1, 1], &[0, 0, 0, 0], &init]);
        let err = drive(ClientConfig::default(), &server, 100)
            .result
            .expect_err("name too long");
        assert_eq!(
            err.to_string(),
            "protocol error in ServerInit at byte 38: ServerInit name: length 16777216 \
             exceeds the limit of 65536 bytes"
        );
        let server = cat(&[b"RFB 003.008\n", &[0], &u32::MAX.to_be_bytes()]);
        assert!(matches!(
            drive(ClientConfig::default(), &server, 100).result,
            Err(HandshakeError::Protocol { offset: 13, .. })
        ));
    }

    #[test]
    fn bytes_after_server_init_are_left() {
        let server = cat(&[b"RFB 003.007\n", &[1, 1], &SERVER_INIT, &[2, 9, 9]]);
        let mut hs = ClientHandshake::new(ClientConfig::default());
        let mut out = Vec::new();
        let step = hs.step(&server, &mut out);
        assert_eq!(
            step,
            Ok(Step::Done {
                consumed: server.len() - 3,
                init: server_init()
            })
        );
        assert!(hs.step(&[], &mut out).is_err());
    }

    #[test]
    fn closed_reports_stage() {
        let hs = ClientHandshake::new(ClientConfig::default());
        assert_eq!(
            hs.closed(&[]),
            HandshakeError::Closed {
                stage: "ProtocolVersion",
                offset: 0
            }
        );
        assert_eq!(
            hs.closed(&[]).to_string(),
            "server closed the connection during ProtocolVersion (after 0 bytes)"
        );
    }

    /// Random bytes after valid prefixes, in random chunks: the state machine must
    /// only ever return, never panic.
    #[test]
    fn random_input_never_panics() {
        let prefixes: [&[u8]; 5] = [
            b"",
            b"RFB 003.008\n",
            b"RFB 003.003\n",
            b"RFB 003.008\n\x01\x13\x00\x02\x00",
            b"RFB 003.007\n\x02\x01\x02",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..4000 {
            let prefix = prefixes[round % prefixes.len()];
            let len = (next() % 80) as usize;
            let mut server = prefix.to_vec();
            // Small values make counts and lengths plausible more often.
            server.extend((0..len).map(|_| {
                let r = next();
                if r % 3 == 0 {
                    (r >> 8) as u8 % 4
                } else {
                    (r >> 8) as u8
                }
            }));
            let chunk = 1 + (next() % 9) as usize;
            let config = match round % 3 {
                0 => ClientConfig::default(),
                1 => tls_config(Some("u"), Some("p")),
                _ => ClientConfig {
                    allow_plain_without_tls: true,
                    ..tls_config(Some("u"), Some("p"))
                },
            };
            let _ = drive(config, &server, chunk);
        }
    }
}
