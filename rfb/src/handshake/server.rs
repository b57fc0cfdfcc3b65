//! The server side of the handshake, from the server's ProtocolVersion to its
//! ServerInit, as a sans-I/O state machine ([rfbproto: Handshaking Messages],
//! [Initialisation Messages]).
//!
//! The caller owns the connection. It keeps a buffer of bytes received from the
//! client and calls [`ServerHandshake::step`] with it; each call consumes what it
//! can, appends what must be sent to `output`, and says what to do next
//! ([`ServerStep`]). The first call, with no input, produces the server's
//! ProtocolVersion. The `net` module (feature `tokio`) drives it over a socket.
//!
//! Versions: the server announces [`ServerConfig::version`] (3.8 unless told
//! otherwise) and speaks what the client answers, mapped as
//! [`ProtocolVersion::for_peer`] describes; a client asking for more than was
//! announced is refused.
//!
//! - RFB 3.3: the server picks the type, the first configured one that 3.3 has
//!   (None or VNC authentication; VeNCrypt needs 3.7). There is no
//!   SecurityResult after None.
//! - RFB 3.7: the client picks from the list. No SecurityResult after None, and
//!   no reason after a failed one.
//! - RFB 3.8: SecurityResult after None too, and a reason string after a failure.
//!
//! Randomness is the caller's: [`ServerHandshake::new`] takes the VNC
//! authentication challenge, which must come from a cryptographically secure
//! generator and be fresh for every connection.
//!
//! [rfbproto: Handshaking Messages]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#handshaking-messages
//! [Initialisation Messages]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#initialisation-messages

use super::vencrypt::{self, describe_subtypes, InnerAuth, VeNCryptSubtype};
use super::vnc_auth;
use super::{
    describe_security_types, parse_protocol_version, security_result, write_string, HandshakeError,
    Password, ProtocolVersion, Security, SecurityType, ServerInit,
};

/// One security type the server offers, with what it checks clients against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSecurity {
    /// No authentication.
    None,
    /// VNC authentication: DES over a challenge. Only the first 8 bytes of the
    /// password count, as with every VNC implementation.
    VncAuth { password: Password },
    /// VeNCrypt with these sub-types, offered in this order. Supported: X509None,
    /// X509Vnc and X509Plain (TLS with the adapter's certificate), and the plain
    /// None and VncAuth. Anonymous TLS (which rustls cannot do) and Plain without
    /// TLS (a password in clear) are never offered.
    VeNCrypt {
        subtypes: Vec<VeNCryptSubtype>,
        /// For X509Vnc and VncAuth.
        vnc_password: Option<Password>,
        /// Username and password pairs accepted by X509Plain.
        users: Vec<(String, Password)>,
    },
}

impl ServerSecurity {
    pub fn security_type(&self) -> SecurityType {
        match self {
            ServerSecurity::None => SecurityType::None,
            ServerSecurity::VncAuth { .. } => SecurityType::VncAuth,
            ServerSecurity::VeNCrypt { .. } => SecurityType::VeNCrypt,
        }
    }
}

/// Whether the server can complete this VeNCrypt sub-type; see
/// [`ServerSecurity::VeNCrypt`].
pub fn subtype_supported(subtype: VeNCryptSubtype) -> bool {
    matches!(
        subtype,
        VeNCryptSubtype::None
            | VeNCryptSubtype::VncAuth
            | VeNCryptSubtype::X509None
            | VeNCryptSubtype::X509Vnc
            | VeNCryptSubtype::X509Plain
    )
}

/// What the server brings to the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The security types offered, in order of preference (RFB 3.3 clients get
    /// the first one 3.3 has).
    pub security: Vec<ServerSecurity>,
    /// Sent at the end of the handshake.
    pub server_init: ServerInit,
    /// The highest version announced; clients may answer with a lower one.
    pub version: ProtocolVersion,
}

impl ServerConfig {
    /// Announces RFB 3.8.
    pub fn new(security: Vec<ServerSecurity>, server_init: ServerInit) -> ServerConfig {
        ServerConfig {
            security,
            server_init,
            version: ProtocolVersion::V3_8,
        }
    }

    /// Whether some offered VeNCrypt sub-type needs TLS: the driver must then be
    /// able to act on [`ServerStep::StartTls`].
    pub fn needs_tls(&self) -> bool {
        self.security.iter().any(|s| match s {
            ServerSecurity::VeNCrypt { subtypes, .. } => subtypes
                .iter()
                .any(|&t| subtype_supported(t) && t.uses_tls()),
            _ => false,
        })
    }

    /// Finds what makes this configuration useless or surprising: nothing
    /// offered, a type listed twice, unsupported sub-types, empty passwords,
    /// X509Vnc without a password, X509Plain without users, credentials longer
    /// than [`PLAIN_LIMIT`]. Run it once at startup.
    ///
    /// The handshake itself copes with any configuration: it never offers what
    /// it cannot complete, and with a missing password every attempt fails.
    pub fn check(&self) -> Result<(), String> {
        if self.security.is_empty() {
            return Err("no security type is configured".into());
        }
        for (i, entry) in self.security.iter().enumerate() {
            let kind = entry.security_type();
            if self.security[..i].iter().any(|e| e.security_type() == kind) {
                return Err(format!("{} is configured twice", kind.name()));
            }
            match entry {
                ServerSecurity::None => {}
                ServerSecurity::VncAuth { password } => check_vnc_password(password)?,
                ServerSecurity::VeNCrypt {
                    subtypes,
                    vnc_password,
                    users,
                } => {
                    if subtypes.is_empty() {
                        return Err("VeNCrypt is configured without sub-types".into());
                    }
                    for (j, &subtype) in subtypes.iter().enumerate() {
                        if !subtype_supported(subtype) {
                            return Err(format!(
                                "VeNCrypt sub-type {} is not supported (supported: X509None, \
                                 X509Vnc, X509Plain, None, VncAuth)",
                                subtype.name()
                            ));
                        }
                        if subtypes[..j].contains(&subtype) {
                            return Err(format!(
                                "VeNCrypt sub-type {} is listed twice",
                                subtype.name()
                            ));
                        }
                    }
                    let vnc = subtypes
                        .iter()
                        .any(|s| s.inner_auth() == InnerAuth::VncAuth);
                    match vnc_password {
                        Some(password) => check_vnc_password(password)?,
                        None if vnc => {
                            return Err(
                                "VeNCrypt X509Vnc or VncAuth is offered without a VNC password"
                                    .into(),
                            )
                        }
                        None => {}
                    }
                    let plain = subtypes.iter().any(|s| s.inner_auth() == InnerAuth::Plain);
                    if plain && users.is_empty() {
                        return Err("VeNCrypt X509Plain is offered without users".into());
                    }
                    for (user, password) in users {
                        if user.is_empty() || user.len() > PLAIN_LIMIT {
                            return Err(format!(
                                "Plain username {user:?} must be 1 to {PLAIN_LIMIT} bytes long"
                            ));
                        }
                        let len = password.expose().len();
                        if len == 0 || len > PLAIN_LIMIT {
                            return Err(format!(
                                "the password of Plain user {user:?} must be 1 to \
                                 {PLAIN_LIMIT} bytes long"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_vnc_password(password: &Password) -> Result<(), String> {
    if password.expose().is_empty() {
        return Err("the VNC password is empty".into());
    }
    Ok(())
}

/// The longest Plain username, and the longest Plain password, accepted from a
/// client, in bytes. Longer claims are refused before any of it is awaited.
pub const PLAIN_LIMIT: usize = 1024;

/// The reason sent to an RFB 3.8 client after a failed SecurityResult. It says
/// nothing about what was wrong.
pub const FAILURE_REASON: &str = "authentication failed";

/// The client's ClientInit message (rfbproto "ClientInit").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientInit {
    /// Leave other clients connected (true), or give this one exclusive access.
    pub shared: bool,
}

impl ClientInit {
    pub const SIZE: usize = 1 /* shared-flag */;
}

/// What the caller does after a [`ServerHandshake::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Send everything in `output`, then read more and call step again with the
    /// unconsumed input plus the new bytes. `consumed` input bytes were used.
    Continue { consumed: usize },
    /// Send `output` (VeNCrypt's acknowledgement, in clear), then run the
    /// server side of a TLS handshake on the connection, then call step again at
    /// once with the plaintext bytes received so far (possibly none: the server
    /// may speak first). Input past `consumed` was sent by the client before the
    /// TLS handshake, which a correct client never does.
    StartTls { consumed: usize },
    /// The handshake is over: send `output` (it ends with ServerInit). Input
    /// past `consumed` belongs to the normal protocol.
    Done {
        consumed: usize,
        client_init: ClientInit,
    },
}

/// The server handshake state machine.
#[derive(Debug)]
pub struct ServerHandshake {
    config: ServerConfig,
    challenge: [u8; vnc_auth::CHALLENGE_SIZE],
    state: State,
    /// Client bytes consumed so far (plaintext after TLS).
    offset: u64,
    /// Security type numbers offered to 3.7+ clients, configuration order,
    /// without duplicates; entry `i` stands for `config.security[entries[i]]`.
    offered: Vec<u8>,
    entries: Vec<usize>,
    /// The VeNCrypt sub-types offered (supported ones only).
    offered_subtypes: Vec<u32>,
    client_version: Option<(u16, u16)>,
    version: Option<ProtocolVersion>,
    /// The `config.security` entry chosen.
    entry: Option<usize>,
    security: Option<Security>,
    username: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing sent yet.
    SendVersion,
    ClientVersion,
    /// RFB 3.7+: the client's `U8` choice.
    SecurityChoice,
    VncResponse,
    VeNCryptVersion,
    VeNCryptSubtype,
    /// StartTls was returned; the next step starts the inner authentication.
    TlsStarted,
    PlainCredentials,
    ClientInit,
    Done,
    Failed,
}

impl State {
    /// What is being waited for, for errors.
    fn stage(self) -> &'static str {
        match self {
            State::SendVersion | State::ClientVersion => "ProtocolVersion",
            State::SecurityChoice => "security type choice",
            State::VncResponse => "VNC authentication response",
            State::VeNCryptVersion => "VeNCrypt version",
            State::VeNCryptSubtype => "VeNCrypt sub-type choice",
            State::TlsStarted => "TLS handshake",
            State::PlainCredentials => "Plain credentials",
            State::ClientInit => "ClientInit",
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
    Done(usize, ClientInit),
}

impl ServerHandshake {
    /// `challenge` is the VNC authentication challenge: 16 bytes from a
    /// cryptographically secure generator, never reused.
    pub fn new(config: ServerConfig, challenge: [u8; vnc_auth::CHALLENGE_SIZE]) -> ServerHandshake {
        let mut offered = Vec::new();
        let mut entries = Vec::new();
        let mut offered_subtypes = Vec::new();
        for (i, entry) in config.security.iter().enumerate() {
            let kind = u8::from(entry.security_type());
            if offered.contains(&kind) {
                continue;
            }
            if let ServerSecurity::VeNCrypt { subtypes, .. } = entry {
                for &subtype in subtypes {
                    let number = u32::from(subtype);
                    if subtype_supported(subtype) && !offered_subtypes.contains(&number) {
                        offered_subtypes.push(number);
                    }
                }
                // The sub-type count is a U8.
                offered_subtypes.truncate(usize::from(u8::MAX));
                if offered_subtypes.is_empty() {
                    continue;
                }
            }
            offered.push(kind);
            entries.push(i);
        }
        ServerHandshake {
            config,
            challenge,
            state: State::SendVersion,
            offset: 0,
            offered,
            entries,
            offered_subtypes,
            client_version: None,
            version: None,
            entry: None,
            security: None,
            username: None,
        }
    }

    /// Feeds the client's bytes received so far (not yet consumed) and collects
    /// what to send in `output`. Never panics, whatever `input` holds.
    ///
    /// On an error the connection is to be closed, but `output` may hold a last
    /// message for the client: the refusal when no security type fits, or the
    /// failed SecurityResult (with its reason, in RFB 3.8) after
    /// [`HandshakeError::AuthenticationFailed`]. The caller sends and flushes it
    /// before closing, or the client never learns why.
    pub fn step(
        &mut self,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> Result<ServerStep, HandshakeError> {
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
                Progress::NeedMore => return Ok(ServerStep::Continue { consumed }),
                Progress::StartTls(_) => return Ok(ServerStep::StartTls { consumed }),
                Progress::Done(_, client_init) => {
                    return Ok(ServerStep::Done {
                        consumed,
                        client_init,
                    })
                }
            }
        }
    }

    /// The error to report when the client closes the connection while the
    /// handshake waits for more. `unconsumed` is what is left of its bytes.
    pub fn closed(&self, unconsumed: &[u8]) -> HandshakeError {
        HandshakeError::ClientClosed {
            stage: self.state.stage(),
            offset: self.offset + unconsumed.len() as u64,
        }
    }

    /// The version in use once negotiated.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// The version the client announced, e.g. `(3, 8)`.
    pub fn client_version(&self) -> Option<(u16, u16)> {
        self.client_version
    }

    /// The security in use, once fully chosen (for VeNCrypt: with its sub-type).
    pub fn security(&self) -> Option<Security> {
        self.security
    }

    /// The user that VeNCrypt Plain authenticated.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// What the handshake is waiting for, for messages and logs.
    pub fn stage(&self) -> &'static str {
        self.state.stage()
    }

    /// Client bytes consumed so far.
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
            State::SendVersion => {
                out.extend_from_slice(self.config.version.wire());
                self.state = State::ClientVersion;
                Ok(Progress::Advanced(0))
            }

            State::ClientVersion => {
                const SIZE: usize = ProtocolVersion::SIZE;
                let head = &buf[..buf.len().min(SIZE)];
                if !super::could_be_protocol_version(head) {
                    return Err(HandshakeError::ClientNotRfb { got: escape(head) });
                }
                let Some(bytes) = buf.first_chunk::<SIZE>() else {
                    return Ok(Progress::NeedMore);
                };
                let Some((major, minor)) = parse_protocol_version(bytes) else {
                    return Err(HandshakeError::ClientNotRfb { got: escape(bytes) });
                };
                self.client_version = Some((major, minor));
                let version = ProtocolVersion::for_peer(major, minor)
                    .ok_or(HandshakeError::UnsupportedVersion { major, minor })?;
                if version > self.config.version {
                    return Err(self.protocol_error(
                        4, /* "RFB " */
                        format!(
                            "the client asked for RFB {major}.{minor}, above the {} offered",
                            self.config.version
                        ),
                    ));
                }
                self.version = Some(version);
                if version == ProtocolVersion::V3_3 {
                    self.offer_3_3(out)?;
                } else if self.offered.is_empty() {
                    out.push(0); // number-of-security-types
                    return Err(self.refuse("no security type is configured".into(), out));
                } else {
                    // INVARIANT: new() keeps at most one entry per security type,
                    // so there are fewer than 256.
                    out.push(self.offered.len() as u8);
                    out.extend_from_slice(&self.offered);
                    self.state = State::SecurityChoice;
                }
                Ok(Progress::Advanced(SIZE))
            }

            State::SecurityChoice => {
                let Some(&choice) = buf.first() else {
                    return Ok(Progress::NeedMore);
                };
                let Some(index) = self.offered.iter().position(|&t| t == choice) else {
                    return Err(self.protocol_error(
                        0,
                        format!(
                            "the client chose {}, which was not offered (offered: {})",
                            describe_security_types(&[choice]),
                            describe_security_types(&self.offered)
                        ),
                    ));
                };
                // INVARIANT: entries has one element per offered type.
                let entry = self.entries[index];
                self.begin_security(entry, out);
                Ok(Progress::Advanced(1))
            }

            State::VncResponse => {
                let Some(response) = buf.first_chunk::<{ vnc_auth::CHALLENGE_SIZE }>() else {
                    return Ok(Progress::NeedMore);
                };
                // The password keys DES over the challenge; compared in constant time.
                let expected = self.vnc_password().map(|password| {
                    vnc_auth::challenge_response(password.expose().as_bytes(), &self.challenge)
                });
                let matches = expected.is_some_and(|e| constant_time_eq(&e, response));
                if !matches {
                    return Err(self.fail("wrong VNC authentication response".into(), out));
                }
                self.succeed(out);
                Ok(Progress::Advanced(vnc_auth::CHALLENGE_SIZE))
            }

            State::VeNCryptVersion => {
                let Some(&[major, minor]) = buf.first_chunk::<2>() else {
                    return Ok(Progress::NeedMore);
                };
                if (major, minor) != vencrypt::VERSION {
                    out.push(0xff); // refused
                    let detail = if (major, minor) == (0, 0) {
                        "the client gave up on VeNCrypt (version 0.0)".to_owned()
                    } else {
                        format!("the client asked for VeNCrypt {major}.{minor}; only 0.2 is spoken")
                    };
                    return Err(self.protocol_error(0, detail));
                }
                out.push(0); // accepted
                             // INVARIANT: new() keeps at most 255 sub-types.
                out.push(self.offered_subtypes.len() as u8);
                for subtype in &self.offered_subtypes {
                    out.extend_from_slice(&subtype.to_be_bytes());
                }
                self.state = State::VeNCryptSubtype;
                Ok(Progress::Advanced(2))
            }

            State::VeNCryptSubtype => {
                let Some(&bytes) = buf.first_chunk::<4>() else {
                    return Ok(Progress::NeedMore);
                };
                let choice = u32::from_be_bytes(bytes);
                let subtype = VeNCryptSubtype::from_u32(choice)
                    .filter(|_| self.offered_subtypes.contains(&choice));
                let Some(subtype) = subtype else {
                    return Err(self.protocol_error(
                        0,
                        format!(
                            "the client chose {}, which was not offered (offered: {})",
                            describe_subtypes(&[choice]),
                            describe_subtypes(&self.offered_subtypes)
                        ),
                    ));
                };
                self.security = Some(Security::VeNCrypt(subtype));
                if subtype.uses_tls() {
                    out.push(1); // TLS acknowledgement
                    self.state = State::TlsStarted;
                    return Ok(Progress::StartTls(4));
                }
                self.begin_inner_auth(subtype, out);
                Ok(Progress::Advanced(4))
            }

            State::TlsStarted => {
                let Some(Security::VeNCrypt(subtype)) = self.security else {
                    return Err(self.protocol_error(0, "no VeNCrypt sub-type chosen"));
                };
                self.begin_inner_auth(subtype, out);
                Ok(Progress::Advanced(0))
            }

            State::PlainCredentials => {
                const HEADER: usize = 4 /* username-length */ + 4 /* password-length */;
                let Some(header) = buf.first_chunk::<HEADER>() else {
                    return Ok(Progress::NeedMore);
                };
                let user_len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                let password_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                for (at, what, len) in [(0, "username", user_len), (4, "password", password_len)] {
                    if u64::from(len) > PLAIN_LIMIT as u64 {
                        return Err(self.protocol_error(
                            at,
                            format!("{what} length {len} exceeds the limit of {PLAIN_LIMIT} bytes"),
                        ));
                    }
                }
                // INVARIANT: both lengths are at most PLAIN_LIMIT (1 KiB).
                let user_end = HEADER + user_len as usize;
                let total = user_end + password_len as usize;
                let Some(credentials) = buf.get(..total) else {
                    return Ok(Progress::NeedMore);
                };
                let user = &credentials[HEADER..user_end];
                let password = &credentials[user_end..];
                match self.plain_user(user, password) {
                    Some(name) => {
                        self.username = Some(name);
                        self.succeed(out);
                        Ok(Progress::Advanced(total))
                    }
                    None => Err(self.fail(
                        format!(
                            "wrong username or password (user \"{}\")",
                            user.escape_ascii()
                        ),
                        out,
                    )),
                }
            }

            State::ClientInit => {
                let Some(&shared) = buf.first() else {
                    return Ok(Progress::NeedMore);
                };
                self.config.server_init.write(out);
                self.state = State::Done;
                Ok(Progress::Done(
                    ClientInit::SIZE,
                    ClientInit {
                        // Any non-zero value means shared.
                        shared: shared != 0,
                    },
                ))
            }

            State::Done | State::Failed => {
                Err(self.protocol_error(0, "step called after the handshake ended"))
            }
        }
    }

    /// RFB 3.3: the server decides, and says so with a `U32`.
    fn offer_3_3(&mut self, out: &mut Vec<u8>) -> Result<(), HandshakeError> {
        let usable = self
            .config
            .security
            .iter()
            .position(|s| matches!(s, ServerSecurity::None | ServerSecurity::VncAuth { .. }));
        let Some(entry) = usable else {
            out.extend_from_slice(&0u32.to_be_bytes()); // security-type: invalid
            let offered: Vec<u8> = self
                .config
                .security
                .iter()
                .map(|s| u8::from(s.security_type()))
                .collect();
            let reason = if offered.is_empty() {
                "no security type is configured".to_owned()
            } else {
                format!(
                    "RFB 3.3 has only None and VNC authentication; this server offers {}",
                    describe_security_types(&offered)
                )
            };
            return Err(self.refuse(reason, out));
        };
        let kind = self.config.security[entry].security_type();
        out.extend_from_slice(&u32::from(u8::from(kind)).to_be_bytes());
        self.begin_security(entry, out);
        Ok(())
    }

    /// Moves on once the top-level security type is settled.
    fn begin_security(&mut self, entry: usize, out: &mut Vec<u8>) {
        self.entry = Some(entry);
        match self.config.security.get(entry) {
            Some(ServerSecurity::None) | None => {
                self.security = Some(Security::None);
                self.after_none(out);
            }
            Some(ServerSecurity::VncAuth { .. }) => {
                self.security = Some(Security::VncAuth);
                out.extend_from_slice(&self.challenge);
                self.state = State::VncResponse;
            }
            Some(ServerSecurity::VeNCrypt { .. }) => {
                out.extend_from_slice(&[vencrypt::VERSION.0, vencrypt::VERSION.1]);
                self.state = State::VeNCryptVersion;
            }
        }
    }

    /// Starts VeNCrypt's inner authentication (after TLS, or at once without).
    fn begin_inner_auth(&mut self, subtype: VeNCryptSubtype, out: &mut Vec<u8>) {
        match subtype.inner_auth() {
            // As TigerVNC: before 3.8 only the security None itself, here the
            // sub-type 1, goes without SecurityResult.
            InnerAuth::None if subtype == VeNCryptSubtype::None => self.after_none(out),
            InnerAuth::None => self.succeed(out),
            InnerAuth::VncAuth => {
                out.extend_from_slice(&self.challenge);
                self.state = State::VncResponse;
            }
            InnerAuth::Plain => self.state = State::PlainCredentials,
        }
    }

    /// After None: RFB 3.8 sends SecurityResult; 3.3 and 3.7 go straight to
    /// initialisation.
    fn after_none(&mut self, out: &mut Vec<u8>) {
        if self.version >= Some(ProtocolVersion::V3_8) {
            self.succeed(out);
        } else {
            self.state = State::ClientInit;
        }
    }

    /// SecurityResult OK, then wait for ClientInit.
    fn succeed(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&security_result::OK.to_be_bytes());
        self.state = State::ClientInit;
    }

    /// SecurityResult failed, with the reason in RFB 3.8. `detail` is for the
    /// server's logs only.
    fn fail(&mut self, detail: String, out: &mut Vec<u8>) -> HandshakeError {
        out.extend_from_slice(&security_result::FAILED.to_be_bytes());
        if self.version >= Some(ProtocolVersion::V3_8) {
            write_string(FAILURE_REASON, out);
        }
        HandshakeError::AuthenticationFailed {
            reason: Some(detail),
        }
    }

    /// Appends the reason after a refusal (no security types, or type 0).
    fn refuse(&mut self, reason: String, out: &mut Vec<u8>) -> HandshakeError {
        write_string(&reason, out);
        HandshakeError::RefusedClient { reason }
    }

    /// The password VNC authentication checks against, for the chosen entry.
    fn vnc_password(&self) -> Option<&Password> {
        match self.config.security.get(self.entry?)? {
            ServerSecurity::VncAuth { password } => Some(password),
            ServerSecurity::VeNCrypt { vnc_password, .. } => vnc_password.as_ref(),
            ServerSecurity::None => None,
        }
    }

    /// The configured user these Plain credentials belong to. Every user is
    /// compared, each in constant time, so the time taken says nothing about
    /// which one (if any) matched or how much of it did.
    fn plain_user(&self, user: &[u8], password: &[u8]) -> Option<String> {
        let entry = self.config.security.get(self.entry?)?;
        let ServerSecurity::VeNCrypt { users, .. } = entry else {
            return None;
        };
        let mut found = None;
        for (name, secret) in users {
            // `&`, not `&&`: both comparisons always run.
            let matches = constant_time_eq(name.as_bytes(), user)
                & constant_time_eq(secret.expose().as_bytes(), password);
            if matches {
                found = Some(name.clone());
            }
        }
        found
    }
}

/// Whether `secret` equals `given`, in time that depends on the length of
/// `given` only, not on where the bytes differ (nor on `secret`'s bytes).
pub fn constant_time_eq(secret: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(secret.len() != given.len());
    for (i, &g) in given.iter().enumerate() {
        diff |= secret.get(i).copied().unwrap_or(0) ^ g;
    }
    // Keeps the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

/// Shows received bytes in an error message: printable ASCII as is, the rest escaped.
fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;

    /// Challenge 00 01 … 0f.
    const CHALLENGE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    // Responses to CHALLENGE computed with `openssl enc -des-ecb` (the commands
    // are in vnc_auth's tests): the key is the password's first 8 bytes,
    // zero-padded, each byte's bits reversed.
    /// "password"
    const PASSWORD_RESPONSE: [u8; 16] = [
        0xb8, 0x66, 0x92, 0x41, 0x25, 0xc8, 0xee, 0xbb, 0x9d, 0xeb, 0xc1, 0xdb, 0x61, 0xc5, 0x38,
        0xe2,
    ];
    /// "kvm"
    const KVM_RESPONSE: [u8; 16] = [
        0x07, 0x1c, 0x90, 0x0f, 0xac, 0xb3, 0xf8, 0xc4, 0x14, 0xcb, 0x2d, 0x25, 0x73, 0x4e, 0x79,
        0x76,
    ];
    /// "longpass", and so any password starting with it
    const LONGPASS_RESPONSE: [u8; 16] = [
        0x59, 0x31, 0x25, 0x65, 0x85, 0xfd, 0x62, 0x10, 0x6d, 0x31, 0x7e, 0x09, 0xfc, 0x96, 0x3b,
        0xaf,
    ];

    /// ServerInit for 640x480 RGB565 "desk", by hand from the spec's table.
    const SERVER_INIT: [u8; 28] = [
        0x02, 0x80, 0x01, 0xe0, // 640 x 480
        16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0, // RGB565
        0, 0, 0, 4, b'd', b'e', b's', b'k',
    ];

    /// SecurityResult failed with the 3.8 reason "authentication failed" (21 bytes).
    const FAILED_3_8: [u8; 29] = [
        0, 0, 0, 1, 0, 0, 0, 21, b'a', b'u', b't', b'h', b'e', b'n', b't', b'i', b'c', b'a', b't',
        b'i', b'o', b'n', b' ', b'f', b'a', b'i', b'l', b'e', b'd',
    ];

    const OK: [u8; 4] = [0, 0, 0, 0];

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

    fn config(security: Vec<ServerSecurity>) -> ServerConfig {
        ServerConfig::new(security, server_init())
    }

    fn vnc(password: &str) -> ServerSecurity {
        ServerSecurity::VncAuth {
            password: password.into(),
        }
    }

    fn vencrypt(subtypes: &[VeNCryptSubtype]) -> ServerSecurity {
        ServerSecurity::VeNCrypt {
            subtypes: subtypes.to_vec(),
            vnc_password: Some("password".into()),
            users: vec![
                ("bob".into(), "builder".into()),
                ("alice".into(), "hunter".into()),
            ],
        }
    }

    struct Outcome {
        result: Result<ClientInit, HandshakeError>,
        sent: Vec<u8>,
        tls_starts: usize,
        leftover: Vec<u8>,
        security: Option<Security>,
        username: Option<String>,
    }

    /// Delivers `client` in chunks of `chunk` bytes, as a socket might, and
    /// collects everything the server writes into `sent`; StartTls wraps nothing
    /// (the bytes after it stand for the plaintext inside TLS). Running out of
    /// bytes ends like a closed connection.
    fn drive(config: ServerConfig, client: &[u8], chunk: usize) -> Outcome {
        let mut hs = ServerHandshake::new(config, CHALLENGE);
        let mut sent = Vec::new();
        let mut buf = Vec::new();
        let mut pos = 0;
        let mut tls_starts = 0;
        let result = loop {
            let mut out = Vec::new();
            let step = hs.step(&buf, &mut out);
            sent.extend_from_slice(&out);
            match step {
                Ok(ServerStep::Continue { consumed }) => {
                    buf.drain(..consumed);
                    if pos == client.len() {
                        break Err(hs.closed(&buf));
                    }
                    let end = (pos + chunk).min(client.len());
                    buf.extend_from_slice(&client[pos..end]);
                    pos = end;
                }
                Ok(ServerStep::StartTls { consumed }) => {
                    buf.drain(..consumed);
                    tls_starts += 1;
                }
                Ok(ServerStep::Done {
                    consumed,
                    client_init,
                }) => {
                    assert!(hs.is_done());
                    buf.drain(..consumed);
                    buf.extend_from_slice(&client[pos..]);
                    break Ok(client_init);
                }
                Err(e) => break Err(e),
            }
        };
        Outcome {
            result,
            sent,
            tls_starts,
            leftover: buf,
            security: hs.security(),
            username: hs.username().map(str::to_owned),
        }
    }

    /// Runs a complete exchange whole, byte by byte and in odd chunks, and every
    /// truncation of it: all must agree, and a truncated one must only ever wait
    /// for more (ending as a closed connection, never as a protocol error).
    fn check_exchange(
        config: &ServerConfig,
        client: &[u8],
        server: &[u8],
        expected: Result<ClientInit, HandshakeError>,
        tls_starts: usize,
    ) {
        for chunk in [client.len().max(1), 1, 3, 7] {
            let o = drive(config.clone(), client, chunk);
            assert_eq!(o.result, expected, "chunk {chunk}");
            assert_eq!(o.sent, server, "chunk {chunk}");
            assert_eq!(o.tls_starts, tls_starts, "chunk {chunk}");
            if o.result.is_ok() {
                assert!(o.leftover.is_empty());
            }
        }
        for cut in 0..client.len() {
            let o = drive(config.clone(), &client[..cut], 1);
            assert!(
                matches!(o.result, Err(HandshakeError::ClientClosed { offset, .. }) if offset == cut as u64),
                "cut at {cut}: {:?}",
                o.result
            );
            assert!(server.starts_with(&o.sent), "cut at {cut}");
        }
    }

    const SHARED: Result<ClientInit, HandshakeError> = Ok(ClientInit { shared: true });
    const EXCLUSIVE: Result<ClientInit, HandshakeError> = Ok(ClientInit { shared: false });

    fn auth_failed(detail: &str) -> Result<ClientInit, HandshakeError> {
        Err(HandshakeError::AuthenticationFailed {
            reason: Some(detail.into()),
        })
    }

    #[test]
    fn none_3_8() {
        let config = config(vec![ServerSecurity::None]);
        let client = cat(&[b"RFB 003.008\n", &[1], &[1]]);
        let server = cat(&[b"RFB 003.008\n", &[1, 1], &OK, &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 0);
        assert_eq!(drive(config, &client, 1).security, Some(Security::None));
    }

    #[test]
    fn none_3_7_has_no_security_result() {
        let config = config(vec![ServerSecurity::None]);
        let client = cat(&[b"RFB 003.007\n", &[1], &[0]]);
        let server = cat(&[b"RFB 003.008\n", &[1, 1], &SERVER_INIT]);
        check_exchange(&config, &client, &server, EXCLUSIVE, 0);
    }

    #[test]
    fn none_3_3_server_decides() {
        // 3.3 gets the first configured type it has: None, skipping VeNCrypt.
        let config = config(vec![
            vencrypt(&[VeNCryptSubtype::X509Vnc]),
            ServerSecurity::None,
            vnc("password"),
        ]);
        let client = cat(&[b"RFB 003.003\n", &[7]]);
        let server = cat(&[b"RFB 003.008\n", &[0, 0, 0, 1], &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 0);
    }

    #[test]
    fn vnc_auth_3_8() {
        let config = config(vec![vnc("password"), ServerSecurity::None]);
        let client = cat(&[b"RFB 003.008\n", &[2], &PASSWORD_RESPONSE, &[1]]);
        let server = cat(&[b"RFB 003.008\n", &[2, 2, 1], &CHALLENGE, &OK, &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 0);
        assert_eq!(drive(config, &client, 4).security, Some(Security::VncAuth));
    }

    #[test]
    fn vnc_auth_3_3_and_3_7() {
        let config = config(vec![vnc("kvm")]);
        let client = cat(&[b"RFB 003.003\n", &KVM_RESPONSE, &[1]]);
        let server = cat(&[
            b"RFB 003.008\n",
            &[0, 0, 0, 2],
            &CHALLENGE,
            &OK,
            &SERVER_INIT,
        ]);
        check_exchange(&config, &client, &server, SHARED, 0);
        let client = cat(&[b"RFB 003.007\n", &[2], &KVM_RESPONSE, &[1]]);
        let server = cat(&[b"RFB 003.008\n", &[1, 2], &CHALLENGE, &OK, &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 0);
    }

    #[test]
    fn vnc_auth_only_eight_bytes_count() {
        let config = config(vec![vnc("longpassword12")]);
        let client = cat(&[b"RFB 003.008\n", &[2], &LONGPASS_RESPONSE, &[1]]);
        let server = cat(&[b"RFB 003.008\n", &[1, 2], &CHALLENGE, &OK, &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 0);
    }

    #[test]
    fn vnc_auth_wrong_password() {
        let wrong = auth_failed("wrong VNC authentication response");
        // 3.8: failed, with the reason.
        let config = config(vec![vnc("password")]);
        let client = cat(&[b"RFB 003.008\n", &[2], &KVM_RESPONSE]);
        let server = cat(&[b"RFB 003.008\n", &[1, 2], &CHALLENGE, &FAILED_3_8]);
        check_exchange(&config, &client, &server, wrong.clone(), 0);
        // 3.7 and 3.3: failed, without a reason.
        let client = cat(&[b"RFB 003.007\n", &[2], &KVM_RESPONSE]);
        let server = cat(&[b"RFB 003.008\n", &[1, 2], &CHALLENGE, &[0, 0, 0, 1]]);
        check_exchange(&config, &client, &server, wrong.clone(), 0);
        let client = cat(&[b"RFB 003.003\n", &KVM_RESPONSE]);
        let server = cat(&[b"RFB 003.008\n", &[0, 0, 0, 2], &CHALLENGE, &[0, 0, 0, 1]]);
        check_exchange(&config, &client, &server, wrong.clone(), 0);
        // A response differing in its last bit only.
        let mut almost = PASSWORD_RESPONSE;
        almost[15] ^= 1;
        let client = cat(&[b"RFB 003.008\n", &[2], &almost]);
        let o = drive(config.clone(), &client, 100);
        assert_eq!(o.result, wrong);
        assert!(o.sent.ends_with(&FAILED_3_8));
        assert_eq!(
            o.result.expect_err("failed").to_string(),
            "authentication failed: wrong VNC authentication response"
        );
    }

    /// VeNCrypt up to StartTls, then VNC authentication inside TLS.
    #[test]
    fn vencrypt_x509_vnc() {
        use VeNCryptSubtype::*;
        let config = config(vec![vencrypt(&[X509Vnc, X509Plain, X509None]), vnc("kvm")]);
        let client_before_tls = cat(&[b"RFB 003.008\n", &[19], &[0, 2], &[0, 0, 1, 5]]);
        let server_before_tls = cat(&[
            b"RFB 003.008\n",
            &[2, 19, 2],
            &[0, 2],                                  // VeNCrypt version
            &[0],                                     // accepted
            &[3, 0, 0, 1, 5, 0, 0, 1, 6, 0, 0, 1, 4], // X509Vnc, X509Plain, X509None
            &[1],                                     // TLS acknowledgement
        ]);
        let mut hs = ServerHandshake::new(config.clone(), CHALLENGE);
        let mut out = Vec::new();
        assert_eq!(
            hs.step(&client_before_tls, &mut out),
            Ok(ServerStep::StartTls {
                consumed: client_before_tls.len()
            })
        );
        assert_eq!(out, server_before_tls);
        assert_eq!(hs.security(), Some(Security::VeNCrypt(X509Vnc)));
        // Inside TLS the server speaks first: the challenge, with no input.
        out.clear();
        assert_eq!(
            hs.step(&[], &mut out),
            Ok(ServerStep::Continue { consumed: 0 })
        );
        assert_eq!(out, CHALLENGE);

        let client = cat(&[&client_before_tls, &PASSWORD_RESPONSE, &[1]]);
        let server = cat(&[&server_before_tls, &CHALLENGE, &OK, &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 1);
        // The top-level VNC password ("kvm") is not the VeNCrypt one.
        let client = cat(&[&client_before_tls, &KVM_RESPONSE]);
        let server = cat(&[&server_before_tls, &CHALLENGE, &FAILED_3_8]);
        let wrong = auth_failed("wrong VNC authentication response");
        check_exchange(&config, &client, &server, wrong, 1);
    }

    #[test]
    fn vencrypt_x509_none_always_has_security_result() {
        let config = config(vec![vencrypt(&[VeNCryptSubtype::X509None])]);
        for version in [b"RFB 003.007\n", b"RFB 003.008\n"] {
            let client = cat(&[version, &[19], &[0, 2], &[0, 0, 1, 4], &[1]]);
            let server = cat(&[
                b"RFB 003.008\n",
                &[1, 19],
                &[0, 2],
                &[0],
                &[1, 0, 0, 1, 4],
                &[1],
                &OK,
                &SERVER_INIT,
            ]);
            check_exchange(&config, &client, &server, SHARED, 1);
        }
    }

    #[test]
    fn vencrypt_plain_subtypes_without_tls() {
        use VeNCryptSubtype::*;
        // Sub-type None (1) goes without SecurityResult before 3.8, as None does.
        let config = config(vec![vencrypt(&[None, VncAuth])]);
        let head = [&[19][..], &[0, 2], &[0, 0, 0, 1], &[1]].concat();
        let server_head = cat(&[&[1, 19], &[0, 2], &[0], &[2, 0, 0, 0, 1, 0, 0, 0, 2]]);
        let client = cat(&[b"RFB 003.007\n", &head]);
        let server = cat(&[b"RFB 003.008\n", &server_head, &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 0);
        let client = cat(&[b"RFB 003.008\n", &head]);
        let server = cat(&[b"RFB 003.008\n", &server_head, &OK, &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 0);
        // VncAuth (2) inside VeNCrypt, without TLS.
        let client = cat(&[
            b"RFB 003.008\n",
            &[19],
            &[0, 2],
            &[0, 0, 0, 2],
            &PASSWORD_RESPONSE,
            &[1],
        ]);
        let server = cat(&[
            b"RFB 003.008\n",
            &server_head,
            &CHALLENGE,
            &OK,
            &SERVER_INIT,
        ]);
        check_exchange(&config, &client, &server, SHARED, 0);
    }

    fn plain_exchange(user: &[u8], password: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut client = cat(&[b"RFB 003.008\n", &[19], &[0, 2], &[0, 0, 1, 6]]);
        client.extend_from_slice(&(user.len() as u32).to_be_bytes());
        client.extend_from_slice(&(password.len() as u32).to_be_bytes());
        client.extend_from_slice(user);
        client.extend_from_slice(password);
        let server = cat(&[
            b"RFB 003.008\n",
            &[1, 19],
            &[0, 2],
            &[0],
            &[1, 0, 0, 1, 6],
            &[1],
        ]);
        (client, server)
    }

    #[test]
    fn vencrypt_x509_plain() {
        let config = config(vec![vencrypt(&[VeNCryptSubtype::X509Plain])]);
        // The second configured user.
        let (client, server) = plain_exchange(b"alice", b"hunter");
        assert_eq!(
            &client[client.len() - 19..],
            [&[0, 0, 0, 5, 0, 0, 0, 6][..], b"alicehunter"].concat()
        );
        let client = cat(&[&client, &[1]]);
        let server = cat(&[&server, &OK, &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 1);
        let o = drive(config.clone(), &client, 5);
        assert_eq!(o.username.as_deref(), Some("alice"));
        assert_eq!(
            o.security,
            Some(Security::VeNCrypt(VeNCryptSubtype::X509Plain))
        );

        let wrong: [(&[u8], &[u8], &str); 5] = [
            (b"alice", b"builder", "alice"), // another user's password
            (b"alice", b"hunte", "alice"),   // a prefix
            (b"alice", b"hunter2", "alice"), // longer
            (b"mallory", b"hunter", "mallory"),
            (b"", b"", ""),
        ];
        for (user, password, shown) in wrong {
            let (client, server) = plain_exchange(user, password);
            let server = cat(&[&server, &FAILED_3_8]);
            let expected = auth_failed(&format!("wrong username or password (user \"{shown}\")"));
            check_exchange(&config, &client, &server, expected, 1);
        }
        // Usernames in errors are escaped.
        let (client, _) = plain_exchange(b"\x1b[2J", b"x");
        assert_eq!(
            drive(config, &client, 100).result,
            auth_failed("wrong username or password (user \"\\x1b[2J\")")
        );
    }

    #[test]
    fn plain_credentials_are_bounded() {
        let config = config(vec![vencrypt(&[VeNCryptSubtype::X509Plain])]);
        let at_limit = vec![b'u'; PLAIN_LIMIT];
        let (client, _) = plain_exchange(&at_limit, &at_limit);
        assert_eq!(
            drive(config.clone(), &client, 100).result,
            auth_failed(&format!(
                "wrong username or password (user \"{}\")",
                "u".repeat(PLAIN_LIMIT)
            ))
        );
        // 1025-byte claims are refused as soon as their lengths are in.
        let prefix = plain_exchange(b"", b"").0;
        let header_at = prefix.len() - 8;
        for (lengths, at, detail) in [
            (
                [0, 0, 4, 1, 0, 0, 0, 1],
                header_at,
                "username length 1025 exceeds the limit of 1024 bytes",
            ),
            (
                [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
                header_at + 4,
                "password length 4294967295 exceeds the limit of 1024 bytes",
            ),
        ] {
            let client = cat(&[&prefix[..header_at], &lengths]);
            let o = drive(config.clone(), &client, 3);
            assert_eq!(
                o.result,
                Err(HandshakeError::Protocol {
                    stage: "Plain credentials",
                    offset: at as u64,
                    detail: detail.into()
                })
            );
        }
    }

    #[test]
    fn version_answers() {
        let config = config(vec![ServerSecurity::None]);
        let table: [(&[u8; 12], Result<ProtocolVersion, HandshakeError>); 7] = [
            (b"RFB 003.889\n", Ok(ProtocolVersion::V3_8)),
            (b"RFB 004.001\n", Ok(ProtocolVersion::V3_8)),
            (b"RFB 003.005\n", Ok(ProtocolVersion::V3_3)),
            (b"RFB 003.006\n", Ok(ProtocolVersion::V3_3)),
            (
                b"RFB 003.002\n",
                Err(HandshakeError::UnsupportedVersion { major: 3, minor: 2 }),
            ),
            (
                b"RFB 000.000\n",
                Err(HandshakeError::UnsupportedVersion { major: 0, minor: 0 }),
            ),
            (
                b"RFB 003.00x\n",
                Err(HandshakeError::ClientNotRfb {
                    got: "RFB 003.00x\\n".into(),
                }),
            ),
        ];
        for (answer, expected) in table {
            let mut hs = ServerHandshake::new(config.clone(), CHALLENGE);
            let result = hs.step(answer, &mut Vec::new()).map(|_| {
                assert_eq!(hs.client_version(), parse_protocol_version(answer));
                hs.version().expect("negotiated")
            });
            assert_eq!(result, expected, "{}", answer.escape_ascii());
        }
    }

    #[test]
    fn client_above_announced_version() {
        let mut config = config(vec![ServerSecurity::None]);
        config.version = ProtocolVersion::V3_7;
        let o = drive(config.clone(), b"RFB 003.008\n", 100);
        assert_eq!(o.sent, b"RFB 003.007\n");
        assert_eq!(
            o.result.expect_err("too high").to_string(),
            "protocol error in ProtocolVersion at byte 4: the client asked for RFB 3.8, \
             above the 3.7 offered"
        );
        let client = cat(&[b"RFB 003.007\n", &[1], &[1]]);
        let server = cat(&[b"RFB 003.007\n", &[1, 1], &SERVER_INIT]);
        check_exchange(&config, &client, &server, SHARED, 0);
    }

    #[test]
    fn garbage_instead_of_rfb() {
        let cases: [(&[u8], &str); 5] = [
            (b"SSH-2.0-OpenSSH_9.6\r\n", "SSH-2.0-Open"),
            (b"GET / HTTP/1.1\r\n", "GET / HTTP/1"),
            (b"RX", "RX"),
            (b"\x16\x03\x01\x02\x00", "\\x16\\x03\\x01\\x02\\x00"),
            (b"rfb 003.008\n", "rfb 003.008\\n"),
        ];
        for (bytes, got) in cases {
            let o = drive(config(vec![ServerSecurity::None]), bytes, 100);
            assert_eq!(
                o.result,
                Err(HandshakeError::ClientNotRfb { got: got.into() })
            );
            assert_eq!(o.sent, b"RFB 003.008\n");
        }
        assert_eq!(
            HandshakeError::ClientNotRfb { got: "RX".into() }.to_string(),
            "client did not speak RFB: it sent \"RX\""
        );
    }

    #[test]
    fn choices_not_offered() {
        use VeNCryptSubtype::X509Vnc;
        let config = config(vec![vnc("p"), vencrypt(&[X509Vnc])]);
        let cases: [(&[u8], u64, &str, &str); 6] = [
            (
                &[1],
                12,
                "security type choice",
                "the client chose None (1), which was not offered (offered: \
                 VNC authentication (2), VeNCrypt (19))",
            ),
            (
                &[0],
                12,
                "security type choice",
                "the client chose Invalid (0), which was not offered (offered: \
                 VNC authentication (2), VeNCrypt (19))",
            ),
            (
                &[19, 0, 1],
                13,
                "VeNCrypt version",
                "the client asked for VeNCrypt 0.1; only 0.2 is spoken",
            ),
            (
                &[19, 0, 0],
                13,
                "VeNCrypt version",
                "the client gave up on VeNCrypt (version 0.0)",
            ),
            (
                &[19, 0, 2, 0, 0, 1, 6],
                15,
                "VeNCrypt sub-type choice",
                "the client chose X509Plain (262), which was not offered (offered: X509Vnc (261))",
            ),
            (
                &[19, 0, 2, 0xde, 0xad, 0xbe, 0xef],
                15,
                "VeNCrypt sub-type choice",
                "the client chose unknown sub-type 3735928559, which was not offered \
                 (offered: X509Vnc (261))",
            ),
        ];
        for (tail, offset, stage, detail) in cases {
            let o = drive(config.clone(), &cat(&[b"RFB 003.008\n", tail]), 2);
            assert_eq!(
                o.result,
                Err(HandshakeError::Protocol {
                    stage,
                    offset,
                    detail: detail.into()
                }),
                "{tail:?}"
            );
            // A refused VeNCrypt version is answered with 0xff.
            if stage == "VeNCrypt version" {
                assert_eq!(o.sent.last(), Some(&0xff));
            }
        }
    }

    #[test]
    fn refusals() {
        // A 3.3 client and a VeNCrypt-only server: type 0, then the reason.
        let config33 = config(vec![vencrypt(&[VeNCryptSubtype::X509Vnc])]);
        let reason = "RFB 3.3 has only None and VNC authentication; this server offers \
                      VeNCrypt (19)";
        let o = drive(config33, b"RFB 003.003\n", 100);
        assert_eq!(
            o.result,
            Err(HandshakeError::RefusedClient {
                reason: reason.into()
            })
        );
        let mut expected = cat(&[b"RFB 003.008\n", &[0, 0, 0, 0]]);
        expected.extend_from_slice(&(reason.len() as u32).to_be_bytes());
        expected.extend_from_slice(reason.as_bytes());
        assert_eq!(o.sent, expected);

        // Nothing configured: no types, then the reason.
        let o = drive(config(vec![]), b"RFB 003.008\n", 100);
        let reason = b"no security type is configured";
        assert_eq!(
            o.sent,
            cat(&[b"RFB 003.008\n", &[0], &[0, 0, 0, 30], reason])
        );
        assert_eq!(
            o.result.expect_err("refused").to_string(),
            "refused the client: no security type is configured"
        );

        // VeNCrypt with only unsupported sub-types is not offered at all.
        let only_anonymous = config(vec![
            vencrypt(&[VeNCryptSubtype::TlsVnc, VeNCryptSubtype::Plain]),
            ServerSecurity::None,
        ]);
        let o = drive(only_anonymous, b"RFB 003.008\n", 100);
        assert_eq!(o.sent, cat(&[b"RFB 003.008\n", &[1, 1]]));
    }

    #[test]
    fn duplicates_and_unsupported_subtypes_are_not_offered() {
        use VeNCryptSubtype::*;
        let config = config(vec![
            vnc("a"),
            vencrypt(&[TlsPlain, X509None, X509None, Plain, X509Plain]),
            vnc("b"),
            ServerSecurity::None,
        ]);
        let client = cat(&[b"RFB 003.008\n", &[19], &[0, 2]]);
        let o = drive(config, &client, 100);
        assert_eq!(
            o.sent,
            cat(&[
                b"RFB 003.008\n",
                &[3, 2, 19, 1],
                &[0, 2],
                &[0],
                &[2, 0, 0, 1, 4, 0, 0, 1, 6]
            ])
        );
    }

    #[test]
    fn missing_vnc_password_fails_every_attempt() {
        let config = config(vec![ServerSecurity::VeNCrypt {
            subtypes: vec![VeNCryptSubtype::VncAuth],
            vnc_password: None,
            users: vec![],
        }]);
        assert!(config.check().is_err());
        // Even the response to an empty password.
        let client = cat(&[b"RFB 003.008\n", &[19], &[0, 2], &[0, 0, 0, 2]]);
        let empty_key_response = vnc_auth::challenge_response(b"", &CHALLENGE);
        let o = drive(config, &cat(&[&client, &empty_key_response]), 100);
        assert_eq!(o.result, auth_failed("wrong VNC authentication response"));
    }

    #[test]
    fn bytes_after_client_init_are_left() {
        let config = config(vec![ServerSecurity::None]);
        let client = cat(&[b"RFB 003.008\n", &[1], &[1], &[3, 0, 0, 0]]);
        let mut hs = ServerHandshake::new(config, CHALLENGE);
        let mut out = Vec::new();
        assert_eq!(
            hs.step(&client, &mut out),
            Ok(ServerStep::Done {
                consumed: client.len() - 4,
                client_init: ClientInit { shared: true }
            })
        );
        assert!(out.ends_with(&SERVER_INIT));
        assert!(matches!(
            hs.step(&[], &mut out),
            Err(HandshakeError::Protocol { .. })
        ));
    }

    #[test]
    fn closed_reports_stage() {
        let o = drive(config(vec![vnc("p")]), b"RFB 003.008\n\x02abc", 100);
        assert_eq!(
            o.result,
            Err(HandshakeError::ClientClosed {
                stage: "VNC authentication response",
                offset: 16
            })
        );
        assert_eq!(
            o.result.expect_err("closed").to_string(),
            "client closed the connection during VNC authentication response (after 16 bytes)"
        );
    }

    #[test]
    fn config_checks() {
        use VeNCryptSubtype::{Plain, TlsVnc, VncAuth, X509None, X509Plain, X509Vnc};
        let table: [(Vec<ServerSecurity>, Option<&str>); 10] = [
            (vec![ServerSecurity::None, vnc("x")], None),
            (vec![vencrypt(&[X509Plain, X509Vnc, X509None])], None),
            (vec![], Some("no security type is configured")),
            (
                vec![vnc("x"), ServerSecurity::None, vnc("y")],
                Some("VNC authentication is configured twice"),
            ),
            (vec![vnc("")], Some("the VNC password is empty")),
            (
                vec![vencrypt(&[X509Vnc, TlsVnc])],
                Some(
                    "VeNCrypt sub-type TLSVnc is not supported (supported: X509None, X509Vnc, \
                     X509Plain, None, VncAuth)",
                ),
            ),
            (
                vec![vencrypt(&[Plain])],
                Some(
                    "VeNCrypt sub-type Plain is not supported (supported: X509None, X509Vnc, \
                     X509Plain, None, VncAuth)",
                ),
            ),
            (
                vec![vencrypt(&[X509Vnc, X509Vnc])],
                Some("VeNCrypt sub-type X509Vnc is listed twice"),
            ),
            (
                vec![ServerSecurity::VeNCrypt {
                    subtypes: vec![X509Plain],
                    vnc_password: None,
                    users: vec![],
                }],
                Some("VeNCrypt X509Plain is offered without users"),
            ),
            (
                vec![ServerSecurity::VeNCrypt {
                    subtypes: vec![X509Plain],
                    vnc_password: None,
                    users: vec![("u".into(), "x".repeat(PLAIN_LIMIT + 1).into())],
                }],
                Some("the password of Plain user \"u\" must be 1 to 1024 bytes long"),
            ),
        ];
        for (i, (security, expected)) in table.into_iter().enumerate() {
            assert_eq!(
                config(security).check(),
                expected.map_or(Ok(()), |e| Err(e.to_owned())),
                "row {i}"
            );
        }
        assert!(config(vec![vencrypt(&[X509None])]).needs_tls());
        assert!(!config(vec![vencrypt(&[VncAuth]), vnc("x")]).needs_tls());
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"hunter", b"hunter"));
        assert!(!constant_time_eq(b"hunter", b"hunteR"));
        assert!(!constant_time_eq(b"hunter", b"hunte"));
        assert!(!constant_time_eq(b"hunter", b"hunter\0"));
        assert!(!constant_time_eq(b"", b"\0"));
        assert!(!constant_time_eq(b"\0", b""));
    }

    /// Random bytes after valid prefixes, in random chunks: the state machine must
    /// only ever return, never panic, and never buffer more than it can bound.
    #[test]
    fn random_input_never_panics() {
        use VeNCryptSubtype::*;
        let prefixes: [&[u8]; 6] = [
            b"",
            b"RFB 003.008\n",
            b"RFB 003.003\n",
            b"RFB 003.008\n\x13\x00\x02",
            b"RFB 003.008\n\x13\x00\x02\x00\x00\x01\x06",
            b"RFB 003.007\n\x02",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..4000 {
            let prefix = prefixes[round % prefixes.len()];
            let len = (next() % 80) as usize;
            let mut client = prefix.to_vec();
            // Small values make choices and lengths plausible more often.
            client.extend((0..len).map(|_| {
                let r = next();
                if r % 3 == 0 {
                    (r >> 8) as u8 % 4
                } else {
                    (r >> 8) as u8
                }
            }));
            let chunk = 1 + (next() % 9) as usize;
            let security = match round % 3 {
                0 => vec![ServerSecurity::None],
                1 => vec![vnc("p"), ServerSecurity::None],
                _ => vec![vencrypt(&[X509Plain, X509Vnc, None, VncAuth]), vnc("p")],
            };
            let o = drive(config(security), &client, chunk);
            assert!(o.leftover.len() <= client.len());
        }
    }
}
