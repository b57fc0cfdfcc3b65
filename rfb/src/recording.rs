//! Recorded server streams, for benchmarks and replay tests.
//!
//! A recording is what a server sent after ServerInit, with the framebuffer size and
//! the pixel format the stream is in:
//!
//! ```text
//! 8 /* magic "KVMUXREC" */ + 2 /* width */ + 2 /* height */ + 16 /* pixel format */
//!   + N /* the server's bytes */
//! ```

use crate::client::ClientSession;
use crate::error::{DecodeError, ProtocolError};
use crate::framebuffer::Framebuffer;
use crate::handshake::ServerInit;
use crate::pixel::PixelFormat;

const MAGIC: &[u8; 8] = b"KVMUXREC";
const HEADER: usize = 8 /* magic */ + 2 /* width */ + 2 /* height */ + PixelFormat::SIZE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub width: u16,
    pub height: u16,
    pub pixel_format: PixelFormat,
    pub stream: Vec<u8>,
}

impl Recording {
    pub fn parse(bytes: &[u8]) -> Result<Recording, DecodeError> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(DecodeError::invalid("recording", "not a kvmux recording"));
        }
        let mut pf = [0u8; 16];
        pf.copy_from_slice(&bytes[12..28]);
        let pixel_format = PixelFormat::from_bytes(&pf);
        pixel_format.validate()?;
        Ok(Recording {
            width: u16::from_be_bytes([bytes[8], bytes[9]]),
            height: u16::from_be_bytes([bytes[10], bytes[11]]),
            pixel_format,
            stream: bytes[HEADER..].to_vec(),
        })
    }

    /// The ServerInit the stream follows (with no desktop name).
    pub fn server_init(&self) -> ServerInit {
        ServerInit {
            width: self.width,
            height: self.height,
            pixel_format: self.pixel_format,
            name: String::new(),
        }
    }

    /// The picture the whole stream leaves, as a client decodes it.
    pub fn replay(&self) -> Result<Framebuffer, ProtocolError> {
        let mut session = ClientSession::new(&self.server_init());
        session.feed(&self.stream)?;
        Ok(session.framebuffer().clone())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.stream.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.width.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.pixel_format.to_bytes());
        out.extend_from_slice(&self.stream);
        out
    }
}
