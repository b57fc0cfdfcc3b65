//! The `kvmux serve` configuration file (TOML; annotated example in
//! `examples/kvmux.toml`).
//!
//! Parsing is in two steps: serde reads the file into `Raw*` structs that keep the
//! position of every value they will check (`toml::Spanned`), then validation
//! turns them into [`Config`]. Every error, from either step, names the file, the
//! line and the column: `kvmux.toml:12:3: unknown field 'adress', expected ...`.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use toml::Spanned;

use super::hotkeys::{Binding, KeyCombo, Target};
use crate::testsrc::pattern::Pattern;

/// The largest test source screen, either way.
const MAX_TESTSRC_SIDE: u16 = 8192;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: Listen,
    pub auth: Auth,
    /// In the order of the file: hotkeys and clients refer to them by index.
    pub sources: Vec<SourceConfig>,
    pub hotkeys: HotkeysConfig,
}

/// The `[hotkeys]` table; resolve it with `Hotkeys::new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotkeysConfig {
    /// Whether the default bindings apply too.
    pub defaults: bool,
    pub bindings: Vec<Binding>,
}

/// Where viewers connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub rfb: SocketAddr,
    /// RFB over WebSocket, for noVNC.
    pub websocket: Option<SocketAddr>,
    /// Offers VeNCrypt X509 security on both listeners.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How viewers authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub kind: AuthKind,
    /// Set to accept unauthenticated viewers on an address other machines reach.
    pub allow_unauthenticated_remote: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthKind {
    None,
    /// VNC authentication with the password in this file (text or vncpasswd).
    Password(PathBuf),
    /// VeNCrypt X509Plain, `user:password` lines in this file.
    Plain {
        users_file: PathBuf,
    },
}

/// One machine to switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A VNC server to connect to.
    Address {
        /// Host and TCP port.
        address: (String, u16),
        password_file: Option<PathBuf>,
        /// For VeNCrypt Plain upstreams.
        username: Option<String>,
        /// CA certificates to check the server's certificate against.
        tls_ca: Option<PathBuf>,
    },
    /// A program the proxy starts and supervises, serving VNC on `address`.
    Command {
        argv: Vec<String>,
        address: (String, u16),
    },
    /// A reverse connection: the source dials in to this address.
    Listen { addr: SocketAddr },
    /// A built-in test machine.
    Testsrc {
        /// A valid `kvmux testsrc --pattern`: bars, gradient, clock or image:FILE.
        pattern: String,
        width: u16,
        height: u16,
        /// The desktop name it reports.
        name: String,
    },
}

/// A configuration error, at a place in the file when it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column (in characters).
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: RawListen,
    auth: Option<RawAuth>,
    #[serde(default, rename = "source")]
    sources: Vec<Spanned<RawSource>>,
    hotkeys: Option<RawHotkeys>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    rfb: Spanned<String>,
    websocket: Option<Spanned<String>>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    password_file: Option<Spanned<PathBuf>>,
    users_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    allow_unauthenticated_remote: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    address: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    listen: Option<Spanned<String>>,
    testsrc: Option<Spanned<RawTestsrc>>,
    password_file: Option<Spanned<PathBuf>>,
    username: Option<Spanned<String>>,
    tls_ca: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestsrc {
    pattern: Option<Spanned<String>>,
    size: Option<Spanned<String>>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHotkeys {
    #[serde(default = "default_true")]
    defaults: bool,
    #[serde(default)]
    bind: Vec<Spanned<RawBinding>>,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinding {
    keys: Spanned<String>,
    action: Option<RawAction>,
    source: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawAction {
    Next,
    Previous,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Config::parse(&text, &path.display().to_string())?)
    }

    /// Parses and validates a configuration; `file_name` is only for messages.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let at = Locator {
            text,
            file: file_name,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml quotes names in backticks; messages here use single quotes.
            let message = e.message().trim().replace('`', "'");
            match e.span() {
                Some(span) => at.error(&span, message),
                None => ConfigError {
                    file: file_name.to_owned(),
                    location: None,
                    message,
                },
            }
        })?;
        raw.validate(&at)
    }

    /// The configuration `kvmux demo` runs: three test machines on loopback.
    pub fn demo() -> Config {
        let testsrc = |name: &str, pattern: &str, width, height| SourceConfig {
            name: name.to_owned(),
            kind: SourceKind::Testsrc {
                pattern: pattern.to_owned(),
                width,
                height,
                name: name.to_owned(),
            },
        };
        Config {
            listen: Listen {
                rfb: SocketAddr::from(([127, 0, 0, 1], 5900)),
                websocket: Some(SocketAddr::from(([127, 0, 0, 1], 5800))),
                tls: None,
            },
            auth: Auth {
                kind: AuthKind::None,
                allow_unauthenticated_remote: false,
            },
            sources: vec![
                testsrc("Machine 1 (bars)", "bars", 1280, 720),
                testsrc("Machine 2 (gradient)", "gradient", 1024, 768),
                testsrc("Machine 3 (clock)", "clock", 1280, 800),
            ],
            hotkeys: HotkeysConfig {
                defaults: true,
                bindings: Vec::new(),
            },
        }
    }

    /// The source names, in order, as `Hotkeys::new` takes them.
    pub fn source_names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name.clone()).collect()
    }
}

/// Turns byte offsets in the file into positions for messages.
struct Locator<'a> {
    text: &'a str,
    file: &'a str,
}

impl Locator<'_> {
    fn error(&self, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            location: Some(self.line_column(span.start)),
            message: message.into(),
        }
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        (line, before[line_start..].chars().count() + 1)
    }
}

fn socket_addr(
    at: &Locator,
    key: &str,
    value: &Spanned<String>,
) -> Result<SocketAddr, ConfigError> {
    value.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
        at.error(
            &value.span(),
            format!(
                "{key}: invalid address '{}' (expected IP:port, e.g. 127.0.0.1:5900 or [::1]:5900)",
                value.get_ref()
            ),
        )
    })
}

fn vnc_address(
    at: &Locator,
    source: &str,
    value: &Spanned<String>,
) -> Result<(String, u16), ConfigError> {
    rfb::net::parse_vnc_address(value.get_ref()).map_err(|detail| {
        at.error(
            &value.span(),
            format!(
                "source '{source}': invalid address '{}': {detail} (expected host::port or host:display)",
                value.get_ref()
            ),
        )
    })
}

impl RawConfig {
    fn validate(self, at: &Locator) -> Result<Config, ConfigError> {
        // [listen]
        let rfb = socket_addr(at, "listen.rfb", &self.listen.rfb)?;
        let websocket = match &self.listen.websocket {
            Some(ws) => Some(socket_addr(at, "listen.websocket", ws)?),
            None => None,
        };
        let tls = match (self.listen.tls_cert, self.listen.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into_inner(),
                key: key.into_inner(),
            }),
            (Some(cert), None) => {
                return Err(at.error(&cert.span(), "listen.tls_cert needs listen.tls_key too"))
            }
            (None, Some(key)) => {
                return Err(at.error(&key.span(), "listen.tls_key needs listen.tls_cert too"))
            }
            (None, None) => None,
        };

        // [auth]
        let auth = match self.auth {
            Some(auth) => auth.validate(at, tls.is_some())?,
            None => Auth {
                kind: AuthKind::None,
                allow_unauthenticated_remote: false,
            },
        };
        if auth.kind == AuthKind::None && !auth.allow_unauthenticated_remote {
            let mut listeners = vec![("listen.rfb", rfb, self.listen.rfb.span())];
            if let (Some(addr), Some(raw)) = (websocket, &self.listen.websocket) {
                listeners.push(("listen.websocket", addr, raw.span()));
            }
            for (key, addr, span) in listeners {
                if !addr.ip().is_loopback() {
                    return Err(at.error(
                        &span,
                        format!(
                            "{key} = \"{addr}\" is reachable from other machines but no authentication \
                             is configured: set [auth] password_file or users_file, or allow it with \
                             `[auth] allow_unauthenticated_remote = true`"
                        ),
                    ));
                }
            }
        }

        // [[source]]
        let mut sources: Vec<SourceConfig> = Vec::with_capacity(self.sources.len());
        let mut listening: Vec<SocketAddr> = [Some(rfb), websocket].into_iter().flatten().collect();
        for raw in self.sources {
            let span = raw.span();
            let source = raw.into_inner();
            let name = source.name.get_ref().trim().to_owned();
            if name.is_empty() {
                return Err(at.error(&source.name.span(), "source name is empty"));
            }
            if sources.iter().any(|s| s.name == name) {
                return Err(at.error(
                    &source.name.span(),
                    format!("duplicate source name '{name}'"),
                ));
            }
            let kind = source.kind(at, &name, &span)?;
            if let SourceKind::Listen { addr } = kind {
                if listening.contains(&addr) {
                    return Err(at.error(
                        &source.listen.as_ref().map_or(span, Spanned::span),
                        format!("source '{name}': {addr} is already a listening address"),
                    ));
                }
                listening.push(addr);
            }
            sources.push(SourceConfig { name, kind });
        }
        if sources.is_empty() {
            return Err(ConfigError {
                file: at.file.to_owned(),
                location: None,
                message: "no sources: add at least one [[source]]".into(),
            });
        }

        // [hotkeys]
        let (hotkey_defaults, raw_bindings) = match self.hotkeys {
            Some(h) => (h.defaults, h.bind),
            None => (true, Vec::new()),
        };
        let mut hotkeys: Vec<Binding> = Vec::with_capacity(raw_bindings.len());
        for raw in raw_bindings {
            let span = raw.span();
            let binding = raw.into_inner();
            let keys: KeyCombo =
                binding.keys.get_ref().parse().map_err(|e| {
                    at.error(&binding.keys.span(), format!("hotkeys.bind keys: {e}"))
                })?;
            if hotkeys.iter().any(|b| b.keys == keys) {
                return Err(at.error(
                    &binding.keys.span(),
                    format!("hotkey '{keys}' is bound twice"),
                ));
            }
            let target = match (binding.action, binding.source) {
                (Some(RawAction::Next), None) => Target::Next,
                (Some(RawAction::Previous), None) => Target::Previous,
                (None, Some(source)) => {
                    if !sources.iter().any(|s| s.name == *source.get_ref()) {
                        return Err(at.error(
                            &source.span(),
                            format!("hotkey '{keys}': no source is named '{}'", source.get_ref()),
                        ));
                    }
                    Target::Source(source.into_inner())
                }
                (Some(_), Some(source)) => {
                    return Err(at.error(
                        &source.span(),
                        format!("hotkey '{keys}' has both action and source: give one"),
                    ))
                }
                (None, None) => {
                    return Err(at.error(
                        &span,
                        format!("hotkey '{keys}' needs action = \"next\" or \"previous\", or source = \"NAME\""),
                    ))
                }
            };
            hotkeys.push(Binding { keys, target });
        }

        Ok(Config {
            listen: Listen {
                rfb,
                websocket,
                tls,
            },
            auth,
            sources,
            hotkeys: HotkeysConfig {
                defaults: hotkey_defaults,
                bindings: hotkeys,
            },
        })
    }
}

impl RawAuth {
    fn validate(self, at: &Locator, tls: bool) -> Result<Auth, ConfigError> {
        let kind = match (self.password_file, self.users_file) {
            (Some(_), Some(users)) => {
                return Err(at.error(
                    &users.span(),
                    "auth.users_file and auth.password_file exclude each other: choose one",
                ))
            }
            (Some(password), None) => AuthKind::Password(password.into_inner()),
            (None, Some(users)) if !tls => {
                return Err(at.error(
                    &users.span(),
                    "auth.users_file needs listen.tls_cert and listen.tls_key \
                     (user names and passwords are only accepted over TLS)",
                ))
            }
            (None, Some(users)) => AuthKind::Plain {
                users_file: users.into_inner(),
            },
            (None, None) => AuthKind::None,
        };
        Ok(Auth {
            kind,
            allow_unauthenticated_remote: self.allow_unauthenticated_remote,
        })
    }
}

impl RawSource {
    /// Which kind of source this is; `span` is the whole `[[source]]` table.
    fn kind(
        &self,
        at: &Locator,
        name: &str,
        span: &Range<usize>,
    ) -> Result<SourceKind, ConfigError> {
        let kind = match (&self.address, &self.command, &self.listen, &self.testsrc) {
            (Some(address), None, None, None) => {
                return Ok(SourceKind::Address {
                    address: vnc_address(at, name, address)?,
                    password_file: self.password_file.as_ref().map(|v| v.get_ref().clone()),
                    username: self.username.as_ref().map(|v| v.get_ref().clone()),
                    tls_ca: self.tls_ca.as_ref().map(|v| v.get_ref().clone()),
                })
            }
            (Some(address), Some(command), None, None) => {
                let argv = command.get_ref();
                if argv.first().is_none_or(|program| program.is_empty()) {
                    return Err(at.error(
                        &command.span(),
                        format!("source '{name}': command needs a program: [\"program\", \"arg\", ...]"),
                    ));
                }
                SourceKind::Command {
                    argv: argv.clone(),
                    address: vnc_address(at, name, address)?,
                }
            }
            (None, Some(command), None, None) => {
                return Err(at.error(
                    &command.span(),
                    format!("source '{name}': command needs address too (where the program will listen)"),
                ))
            }
            (None, None, Some(listen), None) => SourceKind::Listen {
                addr: socket_addr(at, &format!("source '{name}' listen"), listen)?,
            },
            (None, None, None, Some(testsrc)) => testsrc.get_ref().kind(at, name)?,
            (None, None, None, None) => {
                return Err(at.error(
                    span,
                    format!("source '{name}' needs one of address, command (with address), listen or testsrc"),
                ))
            }
            _ => {
                // Two kinds given (address counts as part of command): name the
                // first two in the order of the file, pointing at the second.
                let mut given: Vec<(&str, Range<usize>)> = [
                    self.address
                        .as_ref()
                        .filter(|_| self.command.is_none())
                        .map(|v| ("address", v.span())),
                    self.command.as_ref().map(|v| ("command", v.span())),
                    self.listen.as_ref().map(|v| ("listen", v.span())),
                    self.testsrc.as_ref().map(|v| ("testsrc", v.span())),
                ]
                .into_iter()
                .flatten()
                .collect();
                given.sort_by_key(|(_, span)| span.start);
                let [(first, _), (second, second_span), ..] = &given[..] else {
                    // Unreachable: the cases with fewer than two are matched above.
                    return Err(at.error(span, format!("source '{name}' has conflicting keys")));
                };
                return Err(at.error(
                    second_span,
                    format!("source '{name}' has both {first} and {second}: give one of address, command, listen or testsrc"),
                ));
            }
        };
        // Credentials for the upstream connection belong to address sources only.
        let upstream_only = [
            self.password_file
                .as_ref()
                .map(|v| ("password_file", v.span())),
            self.username.as_ref().map(|v| ("username", v.span())),
            self.tls_ca.as_ref().map(|v| ("tls_ca", v.span())),
        ];
        if let Some((key, key_span)) = upstream_only.into_iter().flatten().next() {
            let kind = match kind {
                SourceKind::Command { .. } => "command",
                SourceKind::Listen { .. } => "listen",
                _ => "testsrc",
            };
            return Err(at.error(
                &key_span,
                format!("source '{name}': {key} only applies to a source with an address, not to {kind}"),
            ));
        }
        Ok(kind)
    }
}

impl RawTestsrc {
    fn kind(&self, at: &Locator, source: &str) -> Result<SourceKind, ConfigError> {
        let pattern = match &self.pattern {
            Some(p) => {
                p.get_ref()
                    .parse::<Pattern>()
                    .map_err(|e| at.error(&p.span(), format!("source '{source}' testsrc: {e}")))?;
                p.get_ref().clone()
            }
            None => "bars".to_owned(),
        };
        let (width, height) = match &self.size {
            Some(size) => parse_size(size.get_ref()).ok_or_else(|| {
                at.error(
                    &size.span(),
                    format!(
                        "source '{source}' testsrc: invalid size '{}' (expected WIDTHxHEIGHT, each 1 to {MAX_TESTSRC_SIDE})",
                        size.get_ref()
                    ),
                )
            })?,
            None => (1280, 720),
        };
        Ok(SourceKind::Testsrc {
            pattern,
            width,
            height,
            name: self.name.clone().unwrap_or_else(|| source.to_owned()),
        })
    }
}

/// `WIDTHxHEIGHT`, each side 1..=8192.
fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (w, h) = s.trim().split_once(['x', 'X'])?;
    let side = |n: &str| {
        n.parse::<u16>()
            .ok()
            .filter(|n| (1..=MAX_TESTSRC_SIDE).contains(n))
    };
    Some((side(w)?, side(h)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::hotkeys::{Hotkeys, Key};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "kvmux.toml").map_err(|e| e.to_string())
    }

    fn parse_err(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error, parsed {config:?}"),
            Err(e) => e,
        }
    }

    const LISTEN: &str = "[listen]\nrfb = \"127.0.0.1:5900\"\n";

    #[test]
    fn example_config() {
        let config = Config::parse(
            include_str!("../../../examples/kvmux.toml"),
            "examples/kvmux.toml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.listen,
            Listen {
                rfb: "127.0.0.1:5900".parse().expect("address"),
                websocket: Some("127.0.0.1:5800".parse().expect("address")),
                tls: Some(TlsFiles {
                    cert: "/etc/kvmux/cert.pem".into(),
                    key: "/etc/kvmux/key.pem".into(),
                }),
            }
        );
        assert_eq!(
            config.auth,
            Auth {
                kind: AuthKind::Plain {
                    users_file: "/etc/kvmux/users".into()
                },
                allow_unauthenticated_remote: false,
            }
        );
        let expected = [
            SourceConfig {
                name: "db1".into(),
                kind: SourceKind::Address {
                    address: ("10.0.0.5".into(), 5900),
                    password_file: Some("/etc/kvmux/db1.passwd".into()),
                    username: Some("operator".into()),
                    tls_ca: Some("/etc/kvmux/db1-ca.pem".into()),
                },
            },
            SourceConfig {
                name: "vm".into(),
                kind: SourceKind::Command {
                    argv: ["qemu-system-x86_64", "-m", "2G", "-vnc", "127.0.0.1:7"]
                        .map(String::from)
                        .to_vec(),
                    address: ("127.0.0.1".into(), 5907),
                },
            },
            SourceConfig {
                name: "laptop".into(),
                kind: SourceKind::Listen {
                    addr: SocketAddr::from(([127, 0, 0, 1], 5501)),
                },
            },
            SourceConfig {
                name: "test".into(),
                kind: SourceKind::Testsrc {
                    pattern: "clock".into(),
                    width: 1024,
                    height: 768,
                    name: "Test machine".into(),
                },
            },
        ];
        assert_eq!(config.sources, expected);
        assert!(config.hotkeys.defaults);
        let ctrl_alt = |last: &str| {
            let last: Key = last.parse().expect("key");
            KeyCombo::Chord(vec![Key::Named(0), Key::Named(1), last])
        };
        assert_eq!(
            config.hotkeys.bindings,
            [
                Binding {
                    keys: ctrl_alt("right"),
                    target: Target::Next
                },
                Binding {
                    keys: ctrl_alt("left"),
                    target: Target::Previous
                },
                Binding {
                    keys: "scroll_lock scroll_lock 1".parse().expect("keys"),
                    target: Target::Source("db1".into())
                },
            ]
        );
        let hotkeys = Hotkeys::new(
            &config.hotkeys.bindings,
            config.hotkeys.defaults,
            &config.source_names(),
        )
        .expect("hotkeys resolve");
        // Three bindings, four numbered sources, previous and next.
        assert_eq!(hotkeys.describe().len(), 3 + 4 + 2);
        assert_eq!(
            hotkeys.describe()[2],
            "scroll_lock scroll_lock 1: switch to db1"
        );
    }

    #[test]
    fn demo_config() {
        let demo = Config::demo();
        assert_eq!(demo.listen.rfb, SocketAddr::from(([127, 0, 0, 1], 5900)));
        assert_eq!(
            demo.listen.websocket,
            Some(SocketAddr::from(([127, 0, 0, 1], 5800)))
        );
        assert_eq!(demo.listen.tls, None);
        assert_eq!(demo.auth.kind, AuthKind::None);
        let kinds: Vec<(&str, &str, u16, u16)> = demo
            .sources
            .iter()
            .map(|s| match &s.kind {
                SourceKind::Testsrc {
                    pattern,
                    width,
                    height,
                    name,
                } => {
                    assert_eq!(*name, s.name);
                    (s.name.as_str(), pattern.as_str(), *width, *height)
                }
                other => panic!("demo source {other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("Machine 1 (bars)", "bars", 1280, 720),
                ("Machine 2 (gradient)", "gradient", 1024, 768),
                ("Machine 3 (clock)", "clock", 1280, 800),
            ]
        );
        assert!(demo.hotkeys.bindings.is_empty() && demo.hotkeys.defaults);
    }

    #[test]
    fn minimal_config_and_defaults() {
        let config = parse(&format!(
            "{LISTEN}[[source]]\nname = \"t\"\ntestsrc = {{}}\n"
        ))
        .expect("minimal config");
        assert_eq!(config.listen.websocket, None);
        assert_eq!(config.auth.kind, AuthKind::None);
        assert!(!config.auth.allow_unauthenticated_remote);
        assert_eq!(
            config.sources,
            [SourceConfig {
                name: "t".into(),
                kind: SourceKind::Testsrc {
                    pattern: "bars".into(),
                    width: 1280,
                    height: 720,
                    name: "t".into()
                }
            }]
        );
        assert!(config.hotkeys.bindings.is_empty() && config.hotkeys.defaults);
        let config = parse(&format!(
            "{LISTEN}[[source]]\nname = \"t\"\ntestsrc = {{ pattern = \"image:/tmp/a.png\", size = \"1x8192\" }}\n\
             [hotkeys]\ndefaults = false\n"
        ))
        .expect("image pattern");
        assert_eq!(
            config.sources[0].kind,
            SourceKind::Testsrc {
                pattern: "image:/tmp/a.png".into(),
                width: 1,
                height: 8192,
                name: "t".into()
            }
        );
        assert!(!config.hotkeys.defaults);
    }

    #[test]
    fn addresses() {
        let config = parse(
            "[listen]\nrfb = \"[::1]:5900\"\nwebsocket = \"127.0.0.2:80\"\n\
             [[source]]\nname = \"a\"\naddress = \"host:3\"\n\
             [[source]]\nname = \"b\"\naddress = \"[fe80::1]::5901\"\n\
             [[source]]\nname = \"c\"\naddress = \"host\"\n\
             [[source]]\nname = \"d\"\nlisten = \"[::1]:5501\"\n",
        )
        .expect("addresses");
        assert_eq!(
            config.listen.rfb,
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 5900))
        );
        assert_eq!(
            config.listen.websocket,
            Some(SocketAddr::from(([127, 0, 0, 2], 80)))
        );
        let addresses: Vec<_> = config
            .sources
            .iter()
            .map(|s| match &s.kind {
                SourceKind::Address { address, .. } => format!("{}/{}", address.0, address.1),
                SourceKind::Listen { addr } => addr.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            addresses,
            ["host/5903", "fe80::1/5901", "host/5900", "[::1]:5501"]
        );
    }

    #[test]
    fn authentication() {
        let tls = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        let source = "[[source]]\nname = \"t\"\ntestsrc = {}\n";
        let config = parse(&format!(
            "[listen]\nrfb = \"0.0.0.0:5900\"\n{source}[auth]\npassword_file = \"pw\"\n"
        ))
        .expect("password");
        assert_eq!(config.auth.kind, AuthKind::Password("pw".into()));
        let config = parse(&format!(
            "[listen]\nrfb = \"0.0.0.0:5900\"\n{tls}{source}[auth]\nusers_file = \"users\"\n"
        ))
        .expect("plain");
        assert_eq!(
            config.auth.kind,
            AuthKind::Plain {
                users_file: "users".into()
            }
        );
        let config = parse(&format!(
            "[listen]\nrfb = \"0.0.0.0:5900\"\n{source}[auth]\nallow_unauthenticated_remote = true\n"
        ))
        .expect("explicitly open");
        assert_eq!(config.auth.kind, AuthKind::None);
        assert!(config.auth.allow_unauthenticated_remote);
    }

    /// Each case: the file, and the whole message with the line and column
    /// counted by hand.
    #[test]
    fn errors_name_the_place() {
        let t = "[[source]]\nname = \"t\"\ntestsrc = {}\n";
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{LISTEN}[[source]]\nname = \"a\"\n  adress = \"x\"\n"),
                "kvmux.toml:5:3: unknown field 'adress', expected one of 'name', 'address', 'command', \
                 'listen', 'testsrc', 'password_file', 'username', 'tls_ca'",
            ),
            (
                format!("[listen]\nrfb = \"127.0.0.1:5900\"\nport = 1\n{t}"),
                "kvmux.toml:3:1: unknown field 'port', expected one of 'rfb', 'websocket', 'tls_cert', 'tls_key'",
            ),
            (
                format!("[listen]\nrfb = \"localhost:5900\"\n{t}"),
                "kvmux.toml:2:7: listen.rfb: invalid address 'localhost:5900' (expected IP:port, e.g. 127.0.0.1:5900 or [::1]:5900)",
            ),
            (
                format!("[listen]\nrfb = 5900\n{t}"),
                "kvmux.toml:2:7: invalid type: integer '5900', expected a string",
            ),
            (
                format!("[listen]\nrfb = \"0.0.0.0:5900\"\n{t}"),
                "kvmux.toml:2:7: listen.rfb = \"0.0.0.0:5900\" is reachable from other machines but no \
                 authentication is configured: set [auth] password_file or users_file, or allow it with \
                 `[auth] allow_unauthenticated_remote = true`",
            ),
            (
                format!("{LISTEN}websocket = \"[::]:5800\"\n{t}[auth]\n"),
                "kvmux.toml:3:13: listen.websocket = \"[::]:5800\" is reachable from other machines but no \
                 authentication is configured: set [auth] password_file or users_file, or allow it with \
                 `[auth] allow_unauthenticated_remote = true`",
            ),
            (
                format!("{LISTEN}tls_key = \"k.pem\"\n{t}"),
                "kvmux.toml:3:11: listen.tls_key needs listen.tls_cert too",
            ),
            (
                format!("{LISTEN}{t}[auth]\nusers_file = \"u\"\n"),
                "kvmux.toml:7:14: auth.users_file needs listen.tls_cert and listen.tls_key \
                 (user names and passwords are only accepted over TLS)",
            ),
            (
                format!("{LISTEN}tls_cert = \"c\"\ntls_key = \"k\"\n{t}[auth]\npassword_file = \"p\"\nusers_file = \"u\"\n"),
                "kvmux.toml:10:14: auth.users_file and auth.password_file exclude each other: choose one",
            ),
            (LISTEN.to_owned(), "kvmux.toml: no sources: add at least one [[source]]"),
            (
                "[[source]]\nname = \"t\"\ntestsrc = {}\n".to_owned(),
                "kvmux.toml:1:1: missing field 'listen'",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \" \"\ntestsrc = {{}}\n"),
                "kvmux.toml:4:8: source name is empty",
            ),
            (
                format!("{LISTEN}{t}{t}"),
                "kvmux.toml:7:8: duplicate source name 't'",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\n"),
                "kvmux.toml:3:1: source 'x' needs one of address, command (with address), listen or testsrc",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\nlisten = \"127.0.0.1:1\"\ntestsrc = {{}}\n"),
                "kvmux.toml:6:11: source 'x' has both listen and testsrc: give one of address, command, listen or testsrc",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\naddress = \"h\"\nlisten = \"127.0.0.1:1\"\n"),
                "kvmux.toml:6:10: source 'x' has both address and listen: give one of address, command, listen or testsrc",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\ncommand = [\"qemu\"]\n"),
                "kvmux.toml:5:11: source 'x': command needs address too (where the program will listen)",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\ncommand = []\naddress = \"h::1\"\n"),
                "kvmux.toml:5:11: source 'x': command needs a program: [\"program\", \"arg\", ...]",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\nlisten = \"127.0.0.1:1\"\nusername = \"u\"\n"),
                "kvmux.toml:6:12: source 'x': username only applies to a source with an address, not to listen",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\naddress = \"h:70000\"\n"),
                "kvmux.toml:5:11: source 'x': invalid address 'h:70000': invalid display \"70000\" \
                 (expected host::port or host:display)",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\nlisten = \"127.0.0.1:5900\"\n"),
                "kvmux.toml:5:10: source 'x': 127.0.0.1:5900 is already a listening address",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\ntestsrc = {{ pattern = \"plaid\" }}\n"),
                "kvmux.toml:5:23: source 'x' testsrc: unknown pattern 'plaid' (one of bars, gradient, clock, noise, image:FILE)",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\ntestsrc = {{ size = \"8193x100\" }}\n"),
                "kvmux.toml:5:20: source 'x' testsrc: invalid size '8193x100' (expected WIDTHxHEIGHT, each 1 to 8192)",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\ntestsrc = {{ size = \"0x100\" }}\n"),
                "kvmux.toml:5:20: source 'x' testsrc: invalid size '0x100' (expected WIDTHxHEIGHT, each 1 to 8192)",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\ntestsrc = {{ colour = \"red\" }}\n"),
                "kvmux.toml:5:13: unknown field 'colour', expected one of 'pattern', 'size', 'name'",
            ),
            (
                format!("{LISTEN}{t}[[hotkeys.bind]]\nkeys = \"ctrl ctrl 1\"\nsource = \"db9\"\n"),
                "kvmux.toml:8:10: hotkey 'ctrl ctrl 1': no source is named 'db9'",
            ),
            (
                format!("{LISTEN}{t}[[hotkeys.bind]]\nkeys = \"ctrl+alt+fn\"\naction = \"next\"\n"),
                "kvmux.toml:7:8: hotkeys.bind keys: unknown key 'fn' (expected ctrl, alt, shift, super, \
                 a letter, a digit, f1..f12, a name such as scroll_lock, pause, left or right, or keysym:0xNNNN)",
            ),
            (
                format!("{LISTEN}{t}[[hotkeys.bind]]\nkeys = \"pause\"\naction = \"jump\"\n"),
                "kvmux.toml:8:10: unknown variant 'jump', expected 'next' or 'previous'",
            ),
            (
                format!("{LISTEN}{t}[[hotkeys.bind]]\nkeys = \"pause\"\naction = \"next\"\nsource = \"t\"\n"),
                "kvmux.toml:9:10: hotkey 'pause' has both action and source: give one",
            ),
            (
                format!("{LISTEN}{t}[[hotkeys.bind]]\nkeys = \"pause\"\n"),
                "kvmux.toml:6:1: hotkey 'pause' needs action = \"next\" or \"previous\", or source = \"NAME\"",
            ),
            (
                format!("{LISTEN}{t}[[hotkeys.bind]]\nkeys = \"pause\"\naction = \"next\"\n[[hotkeys.bind]]\nkeys = \"Pause\"\naction = \"next\"\n"),
                "kvmux.toml:10:8: hotkey 'pause' is bound twice",
            ),
            (
                format!("{LISTEN}{t}[hotkeys]\ndefault = false\n"),
                "kvmux.toml:7:1: unknown field 'default', expected 'defaults' or 'bind'",
            ),
            (
                format!("{LISTEN}{t}[hotkey]\n"),
                "kvmux.toml:6:2: unknown field 'hotkey', expected one of 'listen', 'auth', 'source', 'hotkeys'",
            ),
            (
                "[listen]\nrfb = \"abc\n".to_owned(),
                "kvmux.toml:2:11: invalid basic string, expected '\"'",
            ),
            (
                "[listen]\nrfb = \"127.0.0.1:1\"\nrfb = \"127.0.0.1:2\"\n".to_owned(),
                "kvmux.toml:3:1: duplicate key",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\ncommand = \"qemu -vnc :1\"\naddress = \"h:1\"\n"),
                "kvmux.toml:5:11: invalid type: string \"qemu -vnc :1\", expected a sequence",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\naddress = \"h::1\"\ncommand = [\"a\"]\ntestsrc = {{}}\n"),
                "kvmux.toml:7:11: source 'x' has both command and testsrc: give one of address, command, listen or testsrc",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\ncommand = [\"a\"]\naddress = \"h::1\"\npassword_file = \"p\"\n"),
                "kvmux.toml:7:17: source 'x': password_file only applies to a source with an address, not to command",
            ),
            (
                format!("{LISTEN}[[source]]\nname = \"x\"\ntls_ca = \"ca.pem\"\ntestsrc = {{}}\n"),
                "kvmux.toml:5:10: source 'x': tls_ca only applies to a source with an address, not to testsrc",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_err(&text), expected, "in\n{text}");
        }
    }

    #[test]
    fn columns_count_characters() {
        // "é" is two bytes; the column after it counts it once.
        let text = "[listen]\nrfb = \"127.0.0.1:5900\"\n[[source]]\nname = \"é\"\n\
                    testsrc = { name = \"é\", pattern = \"x\" }\n";
        assert_eq!(
            parse_err(text),
            "kvmux.toml:5:35: source 'é' testsrc: unknown pattern 'x' (one of bars, gradient, clock, noise, image:FILE)"
        );
        // Two kinds: the error points at the later one.
        let text = "[listen]\nrfb = \"127.0.0.1:5900\"\n[[source]]\nname = \"x\"\ntestsrc = {}\nlisten = \"x\"\n";
        assert_eq!(
            parse_err(text),
            "kvmux.toml:6:10: source 'x' has both testsrc and listen: give one of address, command, listen or testsrc"
        );
        let at = Locator {
            text: "ab\né\nc",
            file: "f",
        };
        assert_eq!(at.line_column(0), (1, 1));
        assert_eq!(at.line_column(2), (1, 3));
        assert_eq!(at.line_column(3), (2, 1));
        assert_eq!(at.line_column(5), (2, 2));
        assert_eq!(at.line_column(6), (3, 1));
        // Inside "é", and past the end: clamped, never a panic.
        assert_eq!(at.line_column(4), (2, 1));
        assert_eq!(at.line_column(99), (3, 2));
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("kvmux-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[listen]\nrfb = \"127.0.0.1:5900\"\nrgb = 1\n").expect("write");
        let err = Config::load(&path).expect_err("bad file");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:3:1: unknown field 'rgb', expected one of 'rfb', 'websocket', 'tls_cert', 'tls_key'",
                path.display()
            )
        );
        let missing = dir.join("missing.toml");
        let err = Config::load(&missing).expect_err("missing file");
        assert_eq!(
            err.to_string(),
            format!("cannot read {}", missing.display())
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
