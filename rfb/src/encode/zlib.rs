//! zlib encoding (6): a rectangle's Raw pixels through the connection's zlib stream
//! ([rfbproto, zlib Encoding]). The counterpart of [`decode::zlib`](crate::decode::zlib).
//!
//! Layout: `4 /* length */ + length /* zlibData */`, each rectangle's data ended by a
//! sync flush. Large rectangles are converted and compressed on several threads
//! ([`ZlibEncoder::with_threads`]), as for ZRLE.
//!
//! [rfbproto, zlib Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#zlib-encoding

use super::deflate::{self, DeflateStream, PARALLEL_MIN_PIXELS};
use super::wire::Wire;
use super::{EncodeParams, PixelWriter, RectEncoder};
use crate::framebuffer::{Framebuffer, Rect};

/// The zlib level when the client asks for none (see [`ZlibEncoder`]).
pub const DEFAULT_LEVEL: u8 = deflate::DEFAULT_LEVEL;

/// Rows per unit of work when a rectangle is encoded on several threads.
const BAND_ROWS: usize = 64;

/// The zlib encoder: the connection's zlib stream.
///
/// The zlib level is the client's compression level if it sent one, else
/// [`DEFAULT_LEVEL`].
pub struct ZlibEncoder {
    stream: DeflateStream,
    /// Threads to use for large rectangles (the caller's included).
    threads: Vec<()>,
}

impl Default for ZlibEncoder {
    fn default() -> ZlibEncoder {
        ZlibEncoder::with_threads(1)
    }
}

impl std::fmt::Debug for ZlibEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZlibEncoder")
            .field("threads", &self.threads.len())
            .field("stream", &self.stream)
            .finish()
    }
}

impl ZlibEncoder {
    /// An encoder that uses up to `threads` threads (at least one: the caller's) for
    /// large rectangles.
    pub fn with_threads(threads: usize) -> ZlibEncoder {
        ZlibEncoder {
            stream: DeflateStream::new(u32::from(DEFAULT_LEVEL)),
            threads: vec![(); threads.max(1)],
        }
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl RectEncoder for ZlibEncoder {
    fn encode(
        &mut self,
        fb: &Framebuffer,
        rect: Rect,
        pw: &PixelWriter,
        params: &EncodeParams,
        out: &mut Vec<u8>,
    ) {
        self.stream
            .set_level(u32::from(params.compress.unwrap_or(DEFAULT_LEVEL)));
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        if rect.is_empty() {
            // No pixels: no data, and the stream is left as it was.
            return;
        }
        let wire = Wire::pixel(pw);
        let height = usize::from(rect.height);
        let threads = if rect.area() >= PARALLEL_MIN_PIXELS {
            self.threads.len()
        } else {
            1
        };
        let stride = usize::from(fb.width());
        let (x0, y0, width) = (
            usize::from(rect.x),
            usize::from(rect.y),
            usize::from(rect.width),
        );
        self.stream.write(
            height.div_ceil(BAND_ROWS),
            &mut self.threads[..threads],
            |band, _, data| {
                let top = band * BAND_ROWS;
                let bottom = (top + BAND_ROWS).min(height);
                data.bytes.reserve((bottom - top) * width * wire.size());
                for y in y0 + top..y0 + bottom {
                    let start = y * stride + x0;
                    wire.put_colours(pw, &fb.pixels()[start..start + width], &mut data.bytes);
                }
            },
            out,
        );
        // A rectangle's data never nears 4 GiB (it is below twice its raw size).
        let length = u32::try_from(out.len() - length_at - 4).unwrap_or(u32::MAX);
        out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }

    fn trim(&mut self) {
        self.stream.trim();
    }

    fn reset(&mut self) {
        self.stream.reset();
    }
}
