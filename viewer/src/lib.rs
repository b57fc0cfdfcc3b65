//! kvmux's viewer: [`VncDisplay`], a GTK4 widget that shows a remote desktop over RFB
//! (VNC) and sends it keyboard, pointer and clipboard, and the tabbed viewer application
//! built on it ([`app`]).
//!
//! - [`connection`]: one connection on its own thread (tokio, [`rfb::client`]); no GTK.
//! - [`display`]: the widget; signals and properties in gtk-vnc's vocabulary.
//! - [`keymap`]: X keycodes to QEMU scancodes, and the special key combinations.
//! - [`machines`]: saved machines, TOML in the XDG config directory.
//! - [`app`]: the application: tabs, dialogs, menus, reconnection.

pub mod app;
pub mod connection;
pub mod display;
pub mod keymap;
pub mod machines;

pub use connection::{ConnectionSettings, Failure};
pub use display::{PowerAction, VncDisplay};

/// A machine behind a kvmux proxy and its state, as the proxy reports it
/// (docs/PROTOCOL.md, kvmux-sources).
pub use rfb::messages::{SourceInfo, SourceState};
