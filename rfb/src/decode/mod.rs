//! Rectangle decoders, one module per encoding.
//!
//! Reading a rectangle is split from decoding it, as TigerVNC does (`readRect` /
//! `decodeRect`): [`RectDecoder::measure`] finds how many bytes a rectangle's payload
//! occupies without touching any state, so a session can wait until all of it has
//! arrived (or forward it untouched); [`RectDecoder::decode`] then draws a complete
//! payload into a [`Framebuffer`]. Decoders never see a socket.

use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::pixel::PixelConverter;
use crate::Encoding;

pub mod copyrect;
pub mod cursor;
pub mod hextile;
pub mod raw;
pub mod rre;
pub mod tight;
pub mod trle;
pub mod zlib;
pub mod zrle;
pub mod zstream;

/// Where a resumable [`RectDecoder::measure`] got to. A session keeps one per
/// rectangle in progress and passes it back unchanged with the longer buffer, so
/// encodings measured tile by tile (Hextile, TRLE) never rescan what they have seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanState {
    /// Payload bytes already known to belong to whole tiles.
    pub offset: usize,
    /// Tiles already scanned.
    pub tile: u32,
    /// Encoding-specific carry-over (TRLE: the size of the last palette).
    pub extra: u32,
}

/// A decoder for one encoding. Stateful encodings (Zlib, ZRLE, Tight) keep their
/// inflaters between rectangles; [`RectDecoder::reset`] starts them anew.
pub trait RectDecoder: Send {
    /// Looks at the payload bytes received so far (`buf` starts right after the
    /// 12-byte rectangle header and may hold more than this rectangle) and says how
    /// long the payload is, or how many bytes are needed before asking again.
    /// Must not change decoder state: only `scan`.
    fn measure(
        &self,
        rect: Rect,
        conv: &PixelConverter,
        buf: &[u8],
        scan: &mut ScanState,
    ) -> Result<Measure, DecodeError>;

    /// Decodes a complete payload (exactly the length `measure` reported). The
    /// rectangle has been checked against the framebuffer's bounds.
    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError>;

    /// Forgets stream state (zlib dictionaries), as after kvmux's zlib-stream-reset.
    fn reset(&mut self) {}
}

/// One decoder of each kind, as a client connection holds them.
#[derive(Default)]
pub struct Decoders {
    pub raw: raw::RawDecoder,
    pub copy_rect: copyrect::CopyRectDecoder,
    pub rre: rre::RreDecoder,
    pub corre: rre::CoRreDecoder,
    pub hextile: hextile::HextileDecoder,
    pub zlib: zlib::ZlibDecoder,
    pub tight: tight::TightDecoder,
    pub tight_png: tight::TightPngDecoder,
    pub zrle: zrle::ZrleDecoder,
    pub trle: trle::TrleDecoder,
}

/// Picks the field of [`Decoders`] for an encoding, shared or mutable.
macro_rules! select_decoder {
    ($decoders:expr, $encoding:expr, $($r:tt)*) => {
        match $encoding {
            Encoding::RAW => Some($($r)* $decoders.raw as $($r)* dyn RectDecoder),
            Encoding::COPY_RECT => Some($($r)* $decoders.copy_rect),
            Encoding::RRE => Some($($r)* $decoders.rre),
            Encoding::CORRE => Some($($r)* $decoders.corre),
            Encoding::HEXTILE => Some($($r)* $decoders.hextile),
            Encoding::ZLIB => Some($($r)* $decoders.zlib),
            Encoding::TIGHT => Some($($r)* $decoders.tight),
            Encoding::TIGHT_PNG => Some($($r)* $decoders.tight_png),
            Encoding::ZRLE => Some($($r)* $decoders.zrle),
            Encoding::TRLE => Some($($r)* $decoders.trle),
            _ => None,
        }
    };
}

impl Decoders {
    /// The decoder for a pixel-carrying encoding, for measuring.
    pub fn get(&self, encoding: Encoding) -> Option<&dyn RectDecoder> {
        select_decoder!(self, encoding, &)
    }

    /// The decoder for a pixel-carrying encoding, for decoding.
    pub fn get_mut(&mut self, encoding: Encoding) -> Option<&mut dyn RectDecoder> {
        select_decoder!(self, encoding, &mut)
    }

    /// kvmux zlib-stream-reset: every zlib stream starts anew.
    pub fn reset_streams(&mut self) {
        self.zlib.reset();
        self.tight.reset();
        self.tight_png.reset();
        self.zrle.reset();
    }
}

/// A bounds-checked cursor over a payload; every read names what it was reading.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    context: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], context: &'static str) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            context,
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                context: self.context,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The most payload bytes any rectangle of `rect`'s size may occupy: twice its raw
/// size at 32 bits per pixel, or 1600 bytes per 16x16 tile if that is more, plus
/// 64 KiB of slack. Every encoding's legal worst case stays below it (incompressible
/// zlib data; Hextile's 255 coloured subrectangles in a tile, at most 1 + 4 + 4 + 1 +
/// 255 * 6 = 1540 bytes even when the tile is a single pixel). A declared length past
/// it is hostile and refused before anything is buffered.
pub fn payload_limit(rect: Rect) -> u64 {
    let tiles = u64::from(rect.width.div_ceil(16)) * u64::from(rect.height.div_ceil(16));
    (rect.area() as u64 * 4 * 2).max(tiles * 1600) + 64 * 1024
}
