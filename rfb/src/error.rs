//! Error types. Every error says what was wrong and, where the caller knows it, where.

use std::fmt;

/// Something in a rectangle, pixel format or message body was invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A rectangle reaches past the framebuffer.
    #[error("rectangle {rect} lies outside the {fb_width}x{fb_height} framebuffer")]
    OutOfBounds {
        rect: crate::Rect,
        fb_width: u16,
        fb_height: u16,
    },
    /// A field holds a value the protocol does not allow.
    #[error("invalid {context}: {detail}")]
    Invalid {
        context: &'static str,
        detail: String,
    },
    /// A declared length is larger than anything legitimate for the rectangle.
    #[error("{context}: length {length} exceeds the limit of {limit} bytes")]
    TooLong {
        context: &'static str,
        length: u64,
        limit: u64,
    },
    /// The bytes ended before the structure did (in a body whose length was known).
    #[error("{context}: data ends early (needed {needed} more bytes)")]
    Truncated {
        context: &'static str,
        needed: usize,
    },
    /// zlib data could not be inflated, or inflated to more than allowed.
    #[error("{context}: {detail}")]
    Zlib {
        context: &'static str,
        detail: String,
    },
    /// An embedded image (JPEG, PNG) could not be decoded.
    #[error("{context}: {detail}")]
    Image {
        context: &'static str,
        detail: String,
    },
    /// The encoding is not one this side asked for or knows.
    #[error("unsupported encoding {0}")]
    UnsupportedEncoding(i32),
}

impl DecodeError {
    pub fn invalid(context: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            context,
            detail: detail.into(),
        }
    }
}

/// The outcome of looking for a complete structure at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The structure is complete and occupies this many bytes.
    Complete(usize),
    /// At least this many bytes in total are needed before looking again.
    Need(usize),
}

/// A protocol error on a connection: what went wrong, in which message, at which byte
/// offset of the stream (counted from the first byte the peer sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub message: String,
    pub offset: u64,
    pub error: DecodeError,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "protocol error in {} at byte {}: {}",
            self.message, self.offset, self.error
        )
    }
}

// No `source`: the message already includes the decode error.
impl std::error::Error for ProtocolError {}
