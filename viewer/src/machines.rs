//! Saved machines: `$XDG_CONFIG_HOME/kvmux/machines.toml` (usually
//! `~/.config/kvmux/machines.toml`).
//!
//! ```toml
//! [[machine]]
//! name = "build server"
//! address = "build.example.org:1"
//! username = "me"               # VeNCrypt Plain only
//! password_file = "~/.vnc/build" # text (first line) or vncpasswd format
//! tls_ca = "/etc/kvmux/ca.pem"
//! quality = 6                    # allow JPEG at this quality
//! ```
//!
//! Passwords are never written here: a machine names a password file, or the viewer asks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::connection::ConnectionSettings;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machines {
    #[serde(default, rename = "machine")]
    pub machines: Vec<Machine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub name: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// JPEG quality 0-9; lossless when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
}

impl Machines {
    /// Where the list lives.
    pub fn path() -> PathBuf {
        gtk::glib::user_config_dir()
            .join("kvmux")
            .join("machines.toml")
    }

    /// Reads the list; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Machines> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Machines::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Machines::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Machines> {
        let machines: Machines = toml::from_str(text)?;
        for m in &machines.machines {
            if let Err(e) = rfb::net::parse_vnc_address(&m.address) {
                bail!("machine {:?}: invalid address {:?}: {e}", m.name, m.address);
            }
            if m.quality.is_some_and(|q| q > 9) {
                bail!("machine {:?}: quality must be 0-9", m.name);
            }
        }
        Ok(machines)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Adds `machine`, replacing one of the same name.
    pub fn upsert(&mut self, machine: Machine) {
        match self.machines.iter_mut().find(|m| m.name == machine.name) {
            Some(slot) => *slot = machine,
            None => self.machines.push(machine),
        }
    }
}

impl Machine {
    /// Connection settings; reads the password file if there is one.
    pub fn settings(&self) -> Result<ConnectionSettings> {
        let password = self
            .password_file
            .as_deref()
            .map(|p| read_password(&expand_home(p)))
            .transpose()?;
        Ok(ConnectionSettings {
            address: self.address.clone(),
            username: self.username.clone(),
            password,
            tls_ca: self.tls_ca.as_deref().map(expand_home),
            lossy: self.quality.is_some(),
            quality: self.quality.unwrap_or(8),
            ..ConnectionSettings::default()
        })
    }
}

/// `~/x` → `$HOME/x`.
fn expand_home(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => gtk::glib::home_dir().join(rest),
        Err(_) => path.to_owned(),
    }
}

/// A password file is text (the first line is the password) or a `vncpasswd` file
/// (8 obscured bytes), as VNC servers and viewers keep them.
pub fn read_password(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read password file {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).ok().filter(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    });
    match text {
        Some(text) => Ok(text.lines().next().unwrap_or("").to_owned()),
        None => match rfb::handshake::vnc_auth::decode_password_file(&bytes) {
            Some(p) => Ok(String::from_utf8_lossy(&p).into_owned()),
            None => bail!(
                "password file {} is neither text nor a vncpasswd file",
                path.display()
            ),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let doc = include_str!("machines.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let machines = Machines::parse(&example).unwrap();
        assert_eq!(machines.machines.len(), 1);
        let m = &machines.machines[0];
        assert_eq!(m.name, "build server");
        assert_eq!(m.address, "build.example.org:1");
        assert_eq!(m.quality, Some(6));
    }

    #[test]
    fn refuses_unknown_fields_bad_addresses_and_quality() {
        assert!(Machines::parse("[[machine]]\nname='a'\naddress='h'\npassword='x'\n").is_err());
        assert!(Machines::parse("[[machine]]\nname='a'\naddress='h:x'\n").is_err());
        assert!(Machines::parse("[[machine]]\nname='a'\naddress='h'\nquality=10\n").is_err());
        assert_eq!(Machines::parse("").unwrap(), Machines::default());
    }

    #[test]
    fn saves_and_loads() {
        let dir = std::env::temp_dir().join(format!("kvmux-machines-{}", std::process::id()));
        let path = dir.join("machines.toml");
        let mut machines = Machines::default();
        machines.upsert(Machine {
            name: "one".into(),
            address: "127.0.0.1::5901".into(),
            username: None,
            password_file: None,
            tls_ca: None,
            quality: None,
        });
        let mut two = machines.machines[0].clone();
        two.address = "host:2".into();
        machines.upsert(two);
        assert_eq!(machines.machines.len(), 1);
        machines.save(&path).unwrap();
        assert_eq!(Machines::load(&path).unwrap(), machines);
        assert_eq!(
            Machines::load(&dir.join("missing.toml")).unwrap(),
            Machines::default()
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
