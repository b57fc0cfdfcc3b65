//! VeNCrypt (security type 19): TLS around the other security types.
//!
//! Layout (version 0.2, the only one still in use; documented by the VeNCrypt
//! project and in TigerVNC, not in rfbproto.rst itself):
//!
//! 1. server: `U8` major, `U8` minor of its highest version; client: `U8 U8` of the
//!    version it uses (0.2), or `0 0` to give up; server: `U8` 0 = accepted.
//! 2. server: `U8` count, then count × `U32` sub-types; client: `U32` choice.
//! 3. for a TLS sub-type the server sends `U8` 1 (0 = it could not start TLS) and
//!    the TLS handshake follows; X509 sub-types verify the server certificate,
//!    TLS* sub-types use anonymous TLS.
//! 4. the inner authentication (None, VNC authentication or Plain) runs, inside
//!    TLS where there is one, and SecurityResult follows.
//!
//! Plain credentials are `U32` username-length, `U32` password-length, username,
//! password. Sub-types 1 to 255 stand for the plain RFB security types:
//! TigerVNC lists its enabled None (1) and VNC authentication (2) there too.

use std::fmt;

use super::{ClientConfig, HandshakeError};

/// The VeNCrypt version this crate speaks.
pub const VERSION: (u8, u8) = (0, 2);

/// VeNCrypt 0.2 sub-types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum VeNCryptSubtype {
    /// The RFB None type, without TLS.
    None = 1,
    /// RFB VNC authentication, without TLS.
    VncAuth = 2,
    /// Username and password in clear.
    Plain = 256,
    TlsNone = 257,
    TlsVnc = 258,
    TlsPlain = 259,
    X509None = 260,
    X509Vnc = 261,
    X509Plain = 262,
}

/// The authentication that runs after TLS (or without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerAuth {
    None,
    VncAuth,
    Plain,
}

impl VeNCryptSubtype {
    pub fn from_u32(value: u32) -> Option<VeNCryptSubtype> {
        Some(match value {
            1 => VeNCryptSubtype::None,
            2 => VeNCryptSubtype::VncAuth,
            256 => VeNCryptSubtype::Plain,
            257 => VeNCryptSubtype::TlsNone,
            258 => VeNCryptSubtype::TlsVnc,
            259 => VeNCryptSubtype::TlsPlain,
            260 => VeNCryptSubtype::X509None,
            261 => VeNCryptSubtype::X509Vnc,
            262 => VeNCryptSubtype::X509Plain,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            VeNCryptSubtype::None => "None",
            VeNCryptSubtype::VncAuth => "VncAuth",
            VeNCryptSubtype::Plain => "Plain",
            VeNCryptSubtype::TlsNone => "TLSNone",
            VeNCryptSubtype::TlsVnc => "TLSVnc",
            VeNCryptSubtype::TlsPlain => "TLSPlain",
            VeNCryptSubtype::X509None => "X509None",
            VeNCryptSubtype::X509Vnc => "X509Vnc",
            VeNCryptSubtype::X509Plain => "X509Plain",
        }
    }

    /// Whether a TLS handshake (after the server's `U8` acknowledgement) comes first.
    pub fn uses_tls(self) -> bool {
        self.anonymous_tls() || self.x509()
    }

    /// TLS without certificates (anonymous Diffie-Hellman), which rustls cannot do.
    pub fn anonymous_tls(self) -> bool {
        matches!(
            self,
            VeNCryptSubtype::TlsNone | VeNCryptSubtype::TlsVnc | VeNCryptSubtype::TlsPlain
        )
    }

    /// TLS with a server certificate the client verifies.
    pub fn x509(self) -> bool {
        matches!(
            self,
            VeNCryptSubtype::X509None | VeNCryptSubtype::X509Vnc | VeNCryptSubtype::X509Plain
        )
    }

    pub fn inner_auth(self) -> InnerAuth {
        match self {
            VeNCryptSubtype::None | VeNCryptSubtype::TlsNone | VeNCryptSubtype::X509None => {
                InnerAuth::None
            }
            VeNCryptSubtype::VncAuth | VeNCryptSubtype::TlsVnc | VeNCryptSubtype::X509Vnc => {
                InnerAuth::VncAuth
            }
            VeNCryptSubtype::Plain | VeNCryptSubtype::TlsPlain | VeNCryptSubtype::X509Plain => {
                InnerAuth::Plain
            }
        }
    }
}

impl From<VeNCryptSubtype> for u32 {
    fn from(s: VeNCryptSubtype) -> u32 {
        s as u32
    }
}

/// Names sub-type numbers as a server offered them: `"X509Vnc (261), 2 (VncAuth)"`.
pub fn describe_subtypes(subtypes: &[u32]) -> String {
    let names: Vec<String> = subtypes
        .iter()
        .map(|&s| match VeNCryptSubtype::from_u32(s) {
            Some(known) => format!("{} ({s})", known.name()),
            None => format!("unknown sub-type {s}"),
        })
        .collect();
    names.join(", ")
}

/// What went wrong inside VeNCrypt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VeNCryptError {
    #[error("the server's highest version is {major}.{minor}; 0.2 is needed")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("the server refused version 0.2 (status {status})")]
    VersionRefused { status: u8 },
    #[error("the server offers no sub-types")]
    NoSubtypes,
    /// No offered sub-type fits the configuration; the message says why each
    /// kind was ruled out.
    #[error("no usable sub-type: the server offers {}{}", describe_subtypes(offered), SubtypeHints { offered, tls_allowed: *tls_allowed, plain_allowed: *plain_allowed })]
    NoCommonSubtype {
        offered: Vec<u32>,
        tls_allowed: bool,
        plain_allowed: bool,
    },
    #[error("the server could not start TLS")]
    TlsRefused,
}

/// The reasons appended to [`VeNCryptError::NoCommonSubtype`].
struct SubtypeHints<'a> {
    offered: &'a [u32],
    tls_allowed: bool,
    plain_allowed: bool,
}

impl fmt::Display for SubtypeHints<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offered = || {
            self.offered
                .iter()
                .filter_map(|&s| VeNCryptSubtype::from_u32(s))
        };
        if offered().any(VeNCryptSubtype::anonymous_tls) {
            f.write_str("; anonymous TLS (TLSNone, TLSVnc, TLSPlain) is not supported")?;
        }
        if !self.tls_allowed && offered().any(VeNCryptSubtype::x509) {
            f.write_str("; X509 sub-types need TLS, which is disabled")?;
        }
        if !self.plain_allowed && offered().any(|s| s == VeNCryptSubtype::Plain) {
            f.write_str("; Plain would send the password unencrypted and is not allowed")?;
        }
        Ok(())
    }
}

/// Picks the sub-type to use from those the server offers: the strongest this
/// configuration can complete, in this order: X509Plain (username and password),
/// X509Vnc (password), X509None (when TLS is allowed), VNC authentication
/// (password), Plain (username and password, only when sending them in clear is
/// allowed), None. Anonymous TLS is never chosen.
pub fn choose_subtype(
    offered: &[u32],
    config: &ClientConfig,
) -> Result<VeNCryptSubtype, HandshakeError> {
    use VeNCryptSubtype::*;
    let has = |s: VeNCryptSubtype| offered.contains(&u32::from(s));
    let tls = config.allow_tls;
    let user = config.username.is_some();
    let password = config.password.is_some();
    let plain = config.allow_plain_without_tls;
    let preference = [
        (X509Plain, tls && user && password),
        (X509Vnc, tls && password),
        (X509None, tls),
        (VncAuth, password),
        (Plain, plain && user && password),
        (None, true),
    ];
    if let Some(&(chosen, _)) = preference.iter().find(|&&(s, usable)| usable && has(s)) {
        return Ok(chosen);
    }
    // Nothing fits: say what is missing, if something offered would fit with it.
    if (tls && has(X509Vnc)) || has(VncAuth) {
        return Err(HandshakeError::PasswordRequired);
    }
    if (tls && has(X509Plain)) || (plain && has(Plain)) {
        return Err(if user {
            HandshakeError::PasswordRequired
        } else {
            HandshakeError::UsernameRequired
        });
    }
    Err(VeNCryptError::NoCommonSubtype {
        offered: offered.to_vec(),
        tls_allowed: tls,
        plain_allowed: plain,
    }
    .into())
}

/// Appends Plain credentials: `U32` username-length, `U32` password-length,
/// username, password. `None` if either is longer than a `U32` can say.
pub fn write_plain_credentials(username: &[u8], password: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let user_len = u32::try_from(username.len()).ok()?;
    let password_len = u32::try_from(password.len()).ok()?;
    out.extend_from_slice(&user_len.to_be_bytes());
    out.extend_from_slice(&password_len.to_be_bytes());
    out.extend_from_slice(username);
    out.extend_from_slice(password);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Password;

    fn config(tls: bool, user: Option<&str>, password: Option<&str>) -> ClientConfig {
        ClientConfig {
            allow_tls: tls,
            username: user.map(Into::into),
            password: password.map(Password::from),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn subtype_preference_table() {
        use VeNCryptSubtype as S;
        let all = [1, 2, 256, 257, 258, 259, 260, 261, 262];
        let table: [(
            &[u32],
            ClientConfig,
            Result<VeNCryptSubtype, HandshakeError>,
        ); 10] = [
            (&all, config(true, Some("u"), Some("p")), Ok(S::X509Plain)),
            (&all, config(true, None, Some("p")), Ok(S::X509Vnc)),
            (&all, config(true, None, None), Ok(S::X509None)),
            (&all, config(false, Some("u"), Some("p")), Ok(S::VncAuth)),
            (&all, config(false, None, None), Ok(S::None)),
            (&[258, 2], config(true, None, Some("p")), Ok(S::VncAuth)),
            (
                &[261],
                config(true, None, None),
                Err(HandshakeError::PasswordRequired),
            ),
            (
                &[262],
                config(true, None, Some("p")),
                Err(HandshakeError::UsernameRequired),
            ),
            (&[256, 1], config(false, Some("u"), Some("p")), Ok(S::None)),
            (
                &[256],
                ClientConfig {
                    allow_plain_without_tls: true,
                    ..config(false, Some("u"), Some("p"))
                },
                Ok(S::Plain),
            ),
        ];
        for (i, (offered, config, expected)) in table.into_iter().enumerate() {
            assert_eq!(choose_subtype(offered, &config), expected, "row {i}");
        }
    }

    #[test]
    fn no_common_subtype_explains() {
        let err = choose_subtype(&[257, 258, 260, 256], &config(false, Some("u"), Some("p")))
            .expect_err("nothing usable");
        assert_eq!(
            err.to_string(),
            "VeNCrypt: no usable sub-type: the server offers TLSNone (257), TLSVnc (258), \
             X509None (260), Plain (256); anonymous TLS (TLSNone, TLSVnc, TLSPlain) is not \
             supported; X509 sub-types need TLS, which is disabled; Plain would send the \
             password unencrypted and is not allowed"
        );
    }

    #[test]
    fn plain_credentials_layout() {
        let mut out = Vec::new();
        write_plain_credentials(b"ab", b"xyz", &mut out).expect("short");
        assert_eq!(out, [0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'x', b'y', b'z']);
    }
}
