//! ExtendedClipboard payloads: what ClientCutText and ServerCutText carry when their
//! length is negative
//! ([rfbproto: Extended Clipboard Pseudo-Encoding](https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#extended-clipboard-pseudo-encoding)).
//!
//! A payload is a U32 *flags* word, formats in bits 0-15 and actions in bits 24-31,
//! followed by data depending on the action. *provide* carries its own zlib stream
//! (fresh for every message) holding a U32 *size* and *size* bytes of data for each
//! format, in bit order.

use super::{Limits, NomError};
use crate::error::DecodeError;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use nom::multi::count;
use nom::number::complete::be_u32;
use nom::Parser;

const CONTEXT: &str = "ExtendedClipboard";

/// An ExtendedClipboard message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClipboardMessage {
    /// What the sender accepts. `formats` is the flags word without the *caps* bit: the
    /// formats (bits 0-15) and the actions (bits 24-31) the sender is willing to receive.
    /// `max_sizes` holds the largest unsolicited size per format bit set, in bit order;
    /// [`ClipboardMessage::write`] writes it as given.
    Caps { formats: u32, max_sizes: Vec<u32> },
    /// Asks for the data of these formats (bits 0-15).
    Request { formats: u32 },
    /// Asks for a Notify.
    Peek,
    /// These formats (bits 0-15) are available.
    Notify { formats: u32 },
    /// Clipboard data. `text` is the UTF-8 text without the terminating NUL that the
    /// wire form carries (invalid UTF-8 is replaced with U+FFFD); `other` holds every
    /// other format as (format bit, raw data), in bit order.
    Provide {
        text: Option<String>,
        other: Vec<(u32, Vec<u8>)>,
    },
}

impl ClipboardMessage {
    pub const TEXT: u32 = 1;
    pub const RTF: u32 = 1 << 1;
    pub const HTML: u32 = 1 << 2;
    pub const DIB: u32 = 1 << 3;
    pub const FILES: u32 = 1 << 4;
    /// Bits 0-15: formats.
    pub const FORMAT_MASK: u32 = 0xffff;

    pub const CAPS: u32 = 1 << 24;
    pub const REQUEST: u32 = 1 << 25;
    pub const PEEK: u32 = 1 << 26;
    pub const NOTIFY: u32 = 1 << 27;
    pub const PROVIDE: u32 = 1 << 28;
    /// Bits 24-31: actions.
    pub const ACTION_MASK: u32 = 0xff00_0000;

    /// Parses a whole payload (the *abs(length)* bytes after the cut text header).
    /// Provide data inflates to at most `limits.max_cut_text` bytes.
    pub fn parse(payload: &[u8], limits: &Limits) -> Result<ClipboardMessage, DecodeError> {
        let (rest, flags) = be_u32::<_, NomError>(payload).map_err(|_| {
            DecodeError::invalid(
                CONTEXT,
                format!("payload of {} bytes has no flags", payload.len()),
            )
        })?;
        let formats = flags & Self::FORMAT_MASK;
        if flags & Self::CAPS != 0 {
            // INVARIANT: at most 16 format bits.
            let n = formats.count_ones() as usize;
            if rest.len() != n * 4 {
                return Err(DecodeError::invalid(
                    CONTEXT,
                    format!(
                        "caps for {n} formats carries {} bytes of sizes, not {}",
                        rest.len(),
                        n * 4
                    ),
                ));
            }
            let (_, max_sizes) = count(be_u32::<_, NomError>, n)
                .parse(rest)
                .map_err(|e| DecodeError::invalid(CONTEXT, format!("malformed caps: {e}")))?;
            return Ok(ClipboardMessage::Caps {
                formats: flags & !Self::CAPS,
                max_sizes,
            });
        }
        let action = flags & Self::ACTION_MASK;
        let no_data = |message: ClipboardMessage| {
            if rest.is_empty() {
                Ok(message)
            } else {
                Err(DecodeError::invalid(
                    CONTEXT,
                    format!("{} unexpected bytes after flags 0x{flags:08x}", rest.len()),
                ))
            }
        };
        match action {
            Self::REQUEST => no_data(ClipboardMessage::Request { formats }),
            Self::PEEK => no_data(ClipboardMessage::Peek),
            Self::NOTIFY => no_data(ClipboardMessage::Notify { formats }),
            Self::PROVIDE => parse_provide(formats, rest, limits),
            _ => Err(DecodeError::invalid(
                CONTEXT,
                format!("flags 0x{flags:08x} do not name exactly one action"),
            )),
        }
    }

    /// Appends the payload (flags and data, without the cut text header) to `out`.
    /// Provide data is compressed into a new zlib stream at the default level;
    /// entries of `other` that are not a single format bit other than text, or repeat
    /// one, are left out.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            ClipboardMessage::Caps { formats, max_sizes } => {
                out.extend_from_slice(&(formats | Self::CAPS).to_be_bytes());
                for size in max_sizes {
                    out.extend_from_slice(&size.to_be_bytes());
                }
            }
            ClipboardMessage::Request { formats } => {
                out.extend_from_slice(
                    &(Self::REQUEST | (formats & Self::FORMAT_MASK)).to_be_bytes(),
                );
            }
            ClipboardMessage::Peek => out.extend_from_slice(&Self::PEEK.to_be_bytes()),
            ClipboardMessage::Notify { formats } => {
                out.extend_from_slice(
                    &(Self::NOTIFY | (formats & Self::FORMAT_MASK)).to_be_bytes(),
                );
            }
            ClipboardMessage::Provide { text, other } => {
                let mut flags = Self::PROVIDE;
                let mut data = Vec::new();
                let mut push = |format: u32, bytes: &[&[u8]]| {
                    flags |= format;
                    let size: usize = bytes.iter().map(|b| b.len()).sum();
                    // Sizes past 4 GiB cannot be expressed; such a message is refused
                    // by any peer's limits anyway.
                    data.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes());
                    for b in bytes {
                        data.extend_from_slice(b);
                    }
                };
                if let Some(text) = text {
                    push(Self::TEXT, &[text.as_bytes(), &[0]]);
                }
                let mut others: Vec<&(u32, Vec<u8>)> = other
                    .iter()
                    .filter(|(format, _)| {
                        format.is_power_of_two()
                            && format & Self::FORMAT_MASK != 0
                            && *format != Self::TEXT
                    })
                    .collect();
                others.sort_by_key(|(format, _)| *format);
                others.dedup_by_key(|(format, _)| *format);
                for (format, bytes) in others {
                    push(*format, &[bytes]);
                }
                out.extend_from_slice(&flags.to_be_bytes());
                deflate(&data, out);
            }
        }
    }
}

/// Provide: inflates the zlib stream and splits it into one (size, data) per format.
fn parse_provide(
    formats: u32,
    compressed: &[u8],
    limits: &Limits,
) -> Result<ClipboardMessage, DecodeError> {
    let data = inflate(compressed, limits.max_cut_text as usize)?;
    let mut rest = data.as_slice();
    let mut text = None;
    let mut other = Vec::new();
    for bit in 0..16 {
        let format = 1u32 << bit;
        if formats & format == 0 {
            continue;
        }
        let ends_early = || {
            DecodeError::invalid(
                CONTEXT,
                format!("provide data ends before the data of format 0x{format:x}"),
            )
        };
        let (after, size) = be_u32::<_, NomError>(rest).map_err(|_| ends_early())?;
        let bytes = usize::try_from(size)
            .ok()
            .and_then(|size| after.get(..size))
            .ok_or_else(ends_early)?;
        rest = &after[bytes.len()..];
        if format == ClipboardMessage::TEXT {
            // The spec requires a terminating NUL; accept text without one.
            let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
            text = Some(String::from_utf8_lossy(bytes).into_owned());
        } else {
            other.push((format, bytes.to_vec()));
        }
    }
    if !rest.is_empty() {
        return Err(DecodeError::invalid(
            CONTEXT,
            format!("{} bytes after the provided formats", rest.len()),
        ));
    }
    Ok(ClipboardMessage::Provide { text, other })
}

/// Inflates one complete zlib stream (finished, or ended with a sync flush as TigerVNC
/// sends it) into at most `limit` bytes.
fn inflate(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let zlib_error = |detail: String| DecodeError::Zlib {
        context: CONTEXT,
        detail,
    };
    let too_long = |length: usize| DecodeError::TooLong {
        context: CONTEXT,
        length: length as u64,
        limit: limit as u64,
    };
    let mut z = Decompress::new(true);
    let mut out = Vec::new();
    // Room for one byte past the limit tells a stream that fits from one that does not.
    let hard_cap = limit.saturating_add(1);
    let mut cap = input.len().saturating_mul(4).max(256).min(hard_cap);
    loop {
        if out.capacity() < cap {
            out.reserve_exact(cap - out.len());
        }
        let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let produced = out.len();
        let status = z
            .decompress_vec(
                input.get(consumed..).unwrap_or_default(),
                &mut out,
                FlushDecompress::Sync,
            )
            .map_err(|e| zlib_error(format!("invalid zlib data: {e}")))?;
        if out.len() > limit {
            return Err(too_long(out.len()));
        }
        let now_consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        if status == Status::StreamEnd {
            if now_consumed < input.len() {
                return Err(zlib_error(format!(
                    "{} bytes after the end of the zlib stream",
                    input.len() - now_consumed
                )));
            }
            return Ok(out);
        }
        if out.len() < out.capacity() {
            // Output space left over: everything inflatable so far has been produced.
            if now_consumed >= input.len() {
                return Ok(out);
            }
            if now_consumed == consumed && out.len() == produced {
                return Err(zlib_error("zlib stream made no progress".into()));
            }
        } else {
            cap = cap.saturating_mul(2).min(hard_cap).max(out.capacity() + 1);
        }
    }
}

/// Compresses `data` as one finished zlib stream, appended to `out`.
fn deflate(data: &[u8], out: &mut Vec<u8>) {
    let mut z = Compress::new(Compression::default(), true);
    loop {
        out.reserve(data.len() / 2 + 64);
        let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let input = data.get(consumed..).unwrap_or_default();
        match z.compress_vec(input, out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return,
            Ok(_) => {}
            // INVARIANT: a fresh deflate stream over memory does not fail; stop rather
            // than loop if it ever does.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::ZlibEncoder;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).expect("compress");
        e.finish().expect("finish")
    }

    fn unzlib(data: &[u8]) -> Vec<u8> {
        let mut d = flate2::write::ZlibDecoder::new(Vec::new());
        d.write_all(data).expect("inflate");
        d.finish().expect("finish")
    }

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn caps_from_spec_bytes() {
        // text | rtf | html, request | peek | notify | provide, caps; sizes 20 MiB, 0, 0.
        let bytes = [
            0x1f, 0x00, 0x00, 0x07, //
            0x01, 0x40, 0x00, 0x00, //
            0, 0, 0, 0, //
            0, 0, 0, 0,
        ];
        let message = ClipboardMessage::Caps {
            formats: 0x1e00_0007,
            max_sizes: vec![20 << 20, 0, 0],
        };
        assert_eq!(
            ClipboardMessage::parse(&bytes, &limits()),
            Ok(message.clone())
        );
        let mut out = Vec::new();
        message.write(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn caps_with_wrong_number_of_sizes_is_invalid() {
        // Two formats but one size.
        let bytes = [0x01, 0, 0, 0x03, 0, 0, 0, 1];
        assert!(ClipboardMessage::parse(&bytes, &limits()).is_err());
    }

    #[test]
    fn request_peek_notify_from_spec_bytes() {
        for (bytes, message) in [
            (
                [0x02, 0, 0, 0x01],
                ClipboardMessage::Request {
                    formats: ClipboardMessage::TEXT,
                },
            ),
            ([0x04, 0, 0, 0], ClipboardMessage::Peek),
            (
                [0x08, 0, 0, 0x05],
                ClipboardMessage::Notify {
                    formats: ClipboardMessage::TEXT | ClipboardMessage::HTML,
                },
            ),
        ] {
            assert_eq!(
                ClipboardMessage::parse(&bytes, &limits()),
                Ok(message.clone())
            );
            let mut out = Vec::new();
            message.write(&mut out);
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn bad_actions_are_invalid() {
        // No action.
        assert!(ClipboardMessage::parse(&[0, 0, 0, 1], &limits()).is_err());
        // Two actions.
        assert!(ClipboardMessage::parse(&[0x0a, 0, 0, 1], &limits()).is_err());
        // A reserved action.
        assert!(ClipboardMessage::parse(&[0x20, 0, 0, 1], &limits()).is_err());
        // Notify with data after it.
        assert!(ClipboardMessage::parse(&[0x08, 0, 0, 1, 0], &limits()).is_err());
        // Shorter than the flags.
        assert!(ClipboardMessage::parse(&[0x08, 0, 0], &limits()).is_err());
        assert!(ClipboardMessage::parse(&[], &limits()).is_err());
    }

    #[test]
    fn provide_text_from_an_independent_stream() {
        // size 6, "héllo" is 6 bytes in UTF-8 ... plus the NUL: 7.
        let inner = [0, 0, 0, 7, b'h', 0xc3, 0xa9, b'l', b'l', b'o', 0];
        let mut bytes = vec![0x10, 0, 0, 0x01];
        bytes.extend_from_slice(&zlib(&inner));
        assert_eq!(
            ClipboardMessage::parse(&bytes, &limits()),
            Ok(ClipboardMessage::Provide {
                text: Some("héllo".into()),
                other: vec![],
            })
        );
    }

    #[test]
    fn provide_text_and_html_in_bit_order() {
        let inner = [
            0, 0, 0, 3, b'h', b'i', 0, // text
            0, 0, 0, 2, b'<', b'>', // html
        ];
        let mut bytes = vec![0x10, 0, 0, 0x05];
        bytes.extend_from_slice(&zlib(&inner));
        let message = ClipboardMessage::Provide {
            text: Some("hi".into()),
            other: vec![(ClipboardMessage::HTML, b"<>".to_vec())],
        };
        assert_eq!(
            ClipboardMessage::parse(&bytes, &limits()),
            Ok(message.clone())
        );

        // Written: the same flags and, inflated independently, the same stream.
        let mut out = Vec::new();
        message.write(&mut out);
        assert_eq!(out[..4], [0x10, 0, 0, 0x05]);
        assert_eq!(unzlib(&out[4..]), inner);
    }

    #[test]
    fn provide_write_orders_and_filters_other_formats() {
        let message = ClipboardMessage::Provide {
            text: None,
            other: vec![
                (ClipboardMessage::DIB, vec![4]),
                (ClipboardMessage::RTF, vec![2]),
                (3, vec![9]),                      // not a single bit
                (ClipboardMessage::CAPS, vec![9]), // not a format
                (ClipboardMessage::RTF, vec![7]),  // repeated
            ],
        };
        let mut out = Vec::new();
        message.write(&mut out);
        assert_eq!(out[..4], [0x10, 0, 0, 0x0a]);
        assert_eq!(unzlib(&out[4..]), [0, 0, 0, 1, 2, 0, 0, 0, 1, 4]);
    }

    #[test]
    fn provide_accepts_a_sync_flushed_stream() {
        // TigerVNC ends the stream with a sync flush, not a finished stream.
        let inner = [0, 0, 0, 4, b'a', b'b', b'c', 0];
        let mut c = Compress::new(Compression::default(), true);
        let mut z = Vec::with_capacity(256);
        c.compress_vec(&inner, &mut z, FlushCompress::Sync)
            .expect("compress");
        let mut bytes = vec![0x10, 0, 0, 0x01];
        bytes.extend_from_slice(&z);
        assert_eq!(
            ClipboardMessage::parse(&bytes, &limits()),
            Ok(ClipboardMessage::Provide {
                text: Some("abc".into()),
                other: vec![],
            })
        );
    }

    #[test]
    fn provide_round_trips() {
        for message in [
            ClipboardMessage::Provide {
                text: Some(String::new()),
                other: vec![],
            },
            ClipboardMessage::Provide {
                text: Some("line one\r\nline two ✓".repeat(1000)),
                other: vec![
                    (ClipboardMessage::RTF, b"{\\rtf1 x}".to_vec()),
                    (ClipboardMessage::DIB, vec![0xaa; 5000]),
                ],
            },
            ClipboardMessage::Provide {
                text: None,
                other: vec![],
            },
        ] {
            let mut out = Vec::new();
            message.write(&mut out);
            assert_eq!(ClipboardMessage::parse(&out, &limits()), Ok(message));
        }
    }

    #[test]
    fn provide_with_missing_or_extra_data_is_invalid() {
        // Flags name text and html, the stream holds only text.
        let mut bytes = vec![0x10, 0, 0, 0x05];
        bytes.extend_from_slice(&zlib(&[0, 0, 0, 1, 0]));
        assert!(ClipboardMessage::parse(&bytes, &limits()).is_err());
        // A size past the end of the stream.
        let mut bytes = vec![0x10, 0, 0, 0x01];
        bytes.extend_from_slice(&zlib(&[0xff, 0xff, 0xff, 0xff, b'a', 0]));
        assert!(ClipboardMessage::parse(&bytes, &limits()).is_err());
        // Bytes after the last format.
        let mut bytes = vec![0x10, 0, 0, 0x01];
        bytes.extend_from_slice(&zlib(&[0, 0, 0, 1, 0, 0xee]));
        assert!(ClipboardMessage::parse(&bytes, &limits()).is_err());
        // Bytes after the end of the zlib stream.
        let mut bytes = vec![0x10, 0, 0, 0x01];
        bytes.extend_from_slice(&zlib(&[0, 0, 0, 1, 0]));
        bytes.push(0);
        assert!(matches!(
            ClipboardMessage::parse(&bytes, &limits()),
            Err(DecodeError::Zlib { .. })
        ));
        // Not zlib at all.
        let bytes = [0x10, 0, 0, 0x01, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            ClipboardMessage::parse(&bytes, &limits()),
            Err(DecodeError::Zlib { .. })
        ));
    }

    #[test]
    fn provide_bomb_is_refused() {
        // 64 MiB of text compressing to well under 100 KiB.
        let size = 64u32 << 20;
        let mut inner = size.to_be_bytes().to_vec();
        inner.resize(4 + size as usize, b'a');
        let mut bytes = vec![0x10, 0, 0, 0x01];
        bytes.extend_from_slice(&zlib(&inner));
        assert!(bytes.len() < 1 << 20);
        let err = ClipboardMessage::parse(&bytes, &limits()).expect_err("bomb");
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");

        // A small limit, below any initial buffer size, is still exact.
        let small = Limits {
            max_cut_text: 10,
            ..Limits::default()
        };
        let mut bytes = vec![0x10, 0, 0, 0x01];
        bytes.extend_from_slice(&zlib(&[0, 0, 0, 6, b'a', b'b', b'c', b'd', b'e', 0]));
        assert_eq!(
            ClipboardMessage::parse(&bytes, &small),
            Ok(ClipboardMessage::Provide {
                text: Some("abcde".into()),
                other: vec![],
            })
        );
        let mut bytes = vec![0x10, 0, 0, 0x01];
        bytes.extend_from_slice(&zlib(&[0, 0, 0, 7, b'a', b'b', b'c', b'd', b'e', b'f', 0]));
        assert!(matches!(
            ClipboardMessage::parse(&bytes, &small),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn invalid_utf8_text_is_replaced() {
        let mut bytes = vec![0x10, 0, 0, 0x01];
        bytes.extend_from_slice(&zlib(&[0, 0, 0, 3, b'a', 0xff, 0]));
        assert_eq!(
            ClipboardMessage::parse(&bytes, &limits()),
            Ok(ClipboardMessage::Provide {
                text: Some("a\u{fffd}".into()),
                other: vec![],
            })
        );
    }
}
