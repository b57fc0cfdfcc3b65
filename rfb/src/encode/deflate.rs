//! The server side of the zlib stream Zlib and ZRLE keep per connection, compressed in
//! bands on several threads.
//!
//! A client inflates one zlib stream for the whole connection; every rectangle's share
//! ends with a sync flush, which leaves the stream byte-aligned after a non-final
//! block. The stream never ends, so its Adler-32 trailer is never sent, and nothing
//! but the first two bytes (the zlib header) tells it from raw deflate. So the server
//! side is raw deflate (no wrapper) plus a header written by hand at the start:
//!
//! - A rectangle's data may be cut into bands, each compressed by its own compressor
//!   and ended by a sync flush. The concatenation is a valid continuation of the
//!   client's stream as long as no band refers back to bytes the client has not seen
//!   just before it: band 0 goes through the connection's compressor (its history is
//!   the client's), the others through compressors started afresh, so their back
//!   references stay inside the band.
//! - Afterwards the connection's compressor is given the tail of the later bands as
//!   its history (a raw stream may take a preset dictionary after any flush), so the
//!   next rectangle may refer back into it exactly as the client's window allows.

use flate2::{Compress, Compression, FlushCompress};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The zlib level Zlib and ZRLE use when the client asks for none. Level 2 (zlib-rs's
/// fast matcher with dynamic Huffman codes) with ZRLE's tile choices and block ends
/// gives fewer bytes than Xvnc's level 6 on desktop frames (3-10% fewer on the frames
/// measured) for about 60% of level 6's time; level 1 uses fixed Huffman codes and
/// costs a fifth more bytes. TigerVNC's viewer asks for level 2 by default too.
pub(crate) const DEFAULT_LEVEL: u8 = 2;

/// Rectangles below this many pixels are encoded on the calling thread alone: starting
/// threads and fresh compressors costs more than it saves.
pub(crate) const PARALLEL_MIN_PIXELS: usize = 256 * 256;

/// The deflate window: how far back a reference may reach.
const WINDOW: usize = 32 * 1024;

/// The zlib header (RFC 1950): CMF 0x78 (deflate, 32 KiB window), then FLG with the
/// level hint for `level` and FCHECK making the 16-bit value a multiple of 31.
fn zlib_header(level: u32) -> [u8; 2] {
    let flg = match level {
        0 | 1 => 0x01,
        2..=5 => 0x5e,
        6 => 0x9c,
        _ => 0xda,
    };
    [0x78, flg]
}

/// Compressed bytes in a buffer that is zeroed only when it grows: the first `len`
/// bytes of `buf` are the output. (flate2 zeroes a `Vec`'s spare capacity on every
/// call with the zlib-rs backend; compressing into initialised bytes avoids that.)
#[derive(Debug, Default)]
struct Sink {
    buf: Vec<u8>,
    len: usize,
}

impl Sink {
    fn clear(&mut self) {
        self.len = 0;
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Makes room for at least `n` more bytes.
    fn room(&mut self, n: usize) {
        let want = self.len + n;
        if self.buf.len() < want {
            self.buf.resize(want.max(self.buf.len() * 2), 0);
        }
    }
}

/// Deflates `data` into `out`: a block ends at each offset in `block_ends` (ascending,
/// within `data`) with a partial flush, and all of it with a sync flush. Ending blocks
/// where the content changes lets each block's Huffman codes fit its content.
fn deflate_blocks(c: &mut Compress, data: &[u8], block_ends: &[usize], out: &mut Sink) {
    let mut start = 0;
    for &end in block_ends {
        if end > start && end < data.len() {
            deflate_flush(c, &data[start..end], FlushCompress::Partial, out);
            start = end;
        }
    }
    deflate_flush(c, &data[start..], FlushCompress::Sync, out);
}

/// Deflates all of `data` into `out` and flushes.
fn deflate_flush(c: &mut Compress, data: &[u8], flush: FlushCompress, out: &mut Sink) {
    let start = c.total_in();
    // Deflate's worst case is 5 bytes per 64 KiB stored block over the input, plus a
    // little for the flush.
    out.room(data.len() + data.len() / 4096 + 64);
    loop {
        let consumed = (c.total_in() - start) as usize;
        let before = c.total_out();
        // An error means the stream state is inconsistent, which no input can cause:
        // stop rather than loop.
        if c.compress(&data[consumed..], &mut out.buf[out.len..], flush)
            .is_err()
        {
            debug_assert!(false, "deflate failed");
            return;
        }
        let produced = (c.total_out() - before) as usize;
        out.len += produced;
        let done = (c.total_in() - start) as usize == data.len();
        // The flush is complete once the compressor stops short of the space it had.
        if out.len < out.buf.len() {
            if done {
                return;
            }
            if produced == 0 && (c.total_in() - start) as usize == consumed {
                debug_assert!(false, "deflate made no progress");
                return;
            }
        }
        out.room(4096);
    }
}

/// Uncompressed data an encoder produces: bytes, and where deflate blocks should end.
#[derive(Debug, Default)]
pub(crate) struct Data {
    pub(crate) bytes: Vec<u8>,
    /// Offsets into `bytes`, ascending, where a deflate block should end.
    pub(crate) block_ends: Vec<usize>,
}

impl Data {
    fn clear(&mut self) {
        self.bytes.clear();
        self.block_ends.clear();
    }
}

/// One band of a rectangle's data: what it compresses to.
#[derive(Default)]
struct Band {
    data: Data,
    compressed: Sink,
}

/// The connection's zlib stream, with helpers for bands after the first.
pub(crate) struct DeflateStream {
    /// The connection's compressor, raw deflate: its history is the client's window.
    main: Compress,
    level: u32,
    /// Whether the zlib header has been written since the last reset.
    header_sent: bool,
    /// Compressors for bands 1.., started afresh for every rectangle.
    helpers: Vec<Compress>,
    /// Per band buffers, kept to reuse their allocations.
    bands: Vec<Band>,
    /// The history handed to the main compressor after a banded rectangle.
    history: Vec<u8>,
}

impl std::fmt::Debug for DeflateStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateStream")
            .field("level", &self.level)
            .field("total_in", &self.main.total_in())
            .field("total_out", &self.main.total_out())
            .finish()
    }
}

impl DeflateStream {
    pub(crate) fn new(level: u32) -> DeflateStream {
        let level = level.min(9);
        DeflateStream {
            main: Compress::new(Compression::new(level), false),
            level,
            header_sent: false,
            helpers: Vec::new(),
            bands: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Starts a new stream: the next rectangle begins with a zlib header.
    pub(crate) fn reset(&mut self) {
        self.main.reset();
        self.header_sent = false;
    }

    /// Changes the compression level from the next rectangle on.
    pub(crate) fn set_level(&mut self, level: u32) {
        let level = level.min(9);
        if level == self.level {
            return;
        }
        // Every rectangle ends with a flush, so the change cannot fail for want of
        // output space; if it did, a new compressor with a fresh history would not match
        // the client's window, so keep the old level instead.
        if self.main.set_level(Compression::new(level)).is_ok() {
            self.level = level;
            self.helpers.clear();
        } else {
            debug_assert!(false, "set_level after a flush failed");
        }
    }

    fn header(&mut self, out: &mut Vec<u8>) {
        if !self.header_sent {
            out.extend_from_slice(&zlib_header(self.level));
            self.header_sent = true;
        }
    }

    /// The band buffers for a rectangle cut into `count` bands, emptied.
    fn bands(&mut self, count: usize) {
        if self.bands.len() < count {
            self.bands.resize_with(count, Band::default);
        }
        for b in &mut self.bands[..count] {
            b.data.clear();
            b.compressed.clear();
        }
    }

    /// Produces and compresses a rectangle cut into `count` bands on up to `threads`
    /// threads (the calling one included), appending the compressed stream to `out`.
    ///
    /// `produce(band, scratch, data)` appends band `band`'s uncompressed bytes to
    /// `data` (whose offsets start at 0 for each band); `scratch` is the working space
    /// of the thread running it, one element of `scratch` per thread. Bands are taken
    /// in order by whichever thread is free.
    pub(crate) fn write_banded<S, F>(
        &mut self,
        count: usize,
        scratch: &mut [S],
        produce: F,
        out: &mut Vec<u8>,
    ) where
        S: Send,
        F: Fn(usize, &mut S, &mut Data) + Sync,
    {
        let threads = scratch.len().min(count);
        if count <= 1 || threads <= 1 {
            // One band at a time through the main compressor: the stream stays whole.
            let Some(s) = scratch.first_mut() else {
                return;
            };
            self.header(out);
            self.bands(1);
            let Band { data, compressed } = &mut self.bands[0];
            for band in 0..count {
                produce(band, s, data);
            }
            deflate_blocks(&mut self.main, &data.bytes, &data.block_ends, compressed);
            out.extend_from_slice(compressed.bytes());
            return;
        }
        self.bands(count);
        while self.helpers.len() < count - 1 {
            self.helpers
                .push(Compress::new(Compression::new(self.level), false));
        }
        {
            let mut compressors: Vec<&mut Compress> = Vec::with_capacity(count);
            compressors.push(&mut self.main);
            compressors.extend(self.helpers.iter_mut().take(count - 1));
            let slots: Vec<Mutex<(&mut Compress, &mut Band)>> = compressors
                .into_iter()
                .zip(self.bands.iter_mut())
                .map(Mutex::new)
                .collect();
            let next = AtomicUsize::new(0);
            let work = |s: &mut S| loop {
                let band = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = slots.get(band) else {
                    return;
                };
                // Each slot is taken by exactly one thread, so the lock never waits.
                let mut guard = match slot.lock() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let (c, b) = &mut *guard;
                produce(band, s, &mut b.data);
                if band > 0 {
                    c.reset();
                }
                deflate_blocks(c, &b.data.bytes, &b.data.block_ends, &mut b.compressed);
            };
            let (mine, others) = scratch[..threads].split_at_mut(1);
            std::thread::scope(|scope| {
                for s in others {
                    // A thread that cannot be started leaves its bands to the others.
                    let _ = std::thread::Builder::new().spawn_scoped(scope, || work(s));
                }
                work(&mut mine[0]);
            });
        }
        self.header(out);
        for b in &self.bands[..count] {
            out.extend_from_slice(b.compressed.bytes());
        }
        // The main compressor has seen band 0 only: give it the tail of the rest.
        self.history.clear();
        let mut need = WINDOW;
        let mut first = count;
        while first > 1 && need > 0 {
            first -= 1;
            need = need.saturating_sub(self.bands[first].data.bytes.len());
        }
        for b in &self.bands[first..count] {
            self.history.extend_from_slice(&b.data.bytes);
        }
        let excess = self.history.len().saturating_sub(WINDOW);
        self.history.drain(..excess);
        if self.history.is_empty() {
            return;
        }
        if self.main.set_dictionary(&self.history).is_err() {
            // Not expected after a flush; compressing the tail (and dropping the output)
            // puts the same bytes into the history, only slower.
            debug_assert!(false, "set_dictionary after a flush failed");
            let mut discard = Sink::default();
            deflate_flush(
                &mut self.main,
                &self.history,
                FlushCompress::Sync,
                &mut discard,
            );
        }
    }
}
