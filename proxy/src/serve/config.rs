//! Temporary stand-in for the configuration module.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::hotkeys::Binding;

pub struct Config {
    pub listen: Listen,
    pub auth: Auth,
    pub sources: Vec<SourceConfig>,
    pub hotkeys: HotkeysConfig,
}
pub struct HotkeysConfig {
    pub defaults: bool,
    pub bindings: Vec<Binding>,
}
pub struct Listen {
    pub rfb: SocketAddr,
    pub websocket: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
}
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}
pub struct Auth {
    pub kind: AuthKind,
    pub allow_unauthenticated_remote: bool,
}
pub enum AuthKind {
    None,
    Password(PathBuf),
    Plain { users_file: PathBuf },
}
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
}
pub enum SourceKind {
    Address {
        address: (String, u16),
        password_file: Option<PathBuf>,
        username: Option<String>,
        tls_ca: Option<PathBuf>,
    },
    Command {
        argv: Vec<String>,
        address: (String, u16),
    },
    Listen {
        addr: SocketAddr,
    },
    Testsrc {
        pattern: String,
        width: u16,
        height: u16,
        name: String,
    },
}
impl Config {
    pub fn load(_path: &Path) -> Result<Config> {
        anyhow::bail!("not yet")
    }
    pub fn demo() -> Config {
        let t = |pattern: &str, width, height, name: &str| SourceConfig {
            name: name.into(),
            kind: SourceKind::Testsrc {
                pattern: pattern.into(),
                width,
                height,
                name: name.into(),
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
                t("bars", 1280, 720, "Machine 1 (bars)"),
                t("gradient", 1024, 768, "Machine 2 (gradient)"),
                t("clock", 1280, 800, "Machine 3 (clock)"),
            ],
            hotkeys: HotkeysConfig {
                defaults: true,
                bindings: Vec::new(),
            },
        }
    }
}
