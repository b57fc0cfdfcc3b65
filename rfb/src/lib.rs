//! RFB (VNC) protocol for kvmux.
//!
//! The core is sans-I/O: it takes bytes in and gives bytes and events out, never
//! touches a socket, spawns no task and reads no clock. The [`tokio`](crate::net)
//! adapter (feature `tokio`) owns sockets and TLS.
//!
//! Specification: [RFC 6143](https://www.rfc-editor.org/rfc/rfc6143) and the
//! community registry (rfbproto). kvmux's own extensions are in `docs/PROTOCOL.md`.

pub mod client;
pub mod decode;
pub mod encode;
pub mod encoding;
pub mod error;
pub mod framebuffer;
pub mod fuzzing;
pub mod handshake;
pub mod jpeg;
pub mod messages;
#[cfg(feature = "tokio")]
pub mod net;
pub mod pixel;
pub mod recording;
pub mod server;

pub use encoding::Encoding;
pub use error::{DecodeError, Measure, ProtocolError};
pub use framebuffer::{Damage, Framebuffer, Rect};
pub use pixel::{PixelConverter, PixelFormat};
