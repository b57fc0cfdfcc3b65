//! The server side of the zlib stream Zlib and ZRLE keep per connection, compressed in
//! bands on several threads.
//!
//! A client inflates one zlib stream for the whole connection; every rectangle's share
//! ends with a sync flush, which leaves the stream byte-aligned after a non-final
//! block. The stream never ends, so its Adler-32 trailer is never sent, and nothing
//! but the first two bytes (the zlib header) tells it from raw deflate. So the server
//! side is raw deflate (no wrapper) plus a header written by hand at the start:
//!
//! A large rectangle is encoded in two parallel steps. First its units (ZRLE's tile
//! rows, bands of rows for Zlib) are produced, each into its own buffer, by whichever
//! thread is free. Then the units are split into one chunk per thread of about equal
//! bytes, and each chunk is deflated by its own compressor, ending with a sync flush:
//!
//! - chunk 0 goes through the connection's compressor, whose history is the client's;
//! - every other chunk through a helper started afresh and given the 32 KiB before the
//!   chunk as a preset dictionary: exactly what the client's window holds when it
//!   reaches the chunk, so back references across the cut are as good as in one
//!   stream, and never reach anything the client has not seen;
//! - afterwards the connection's compressor takes the data after chunk 0 as its
//!   history (a raw stream may take a preset dictionary after any flush), so the next
//!   rectangle may refer back into it as the client's window allows.
//!
//! The concatenated chunks are byte-aligned runs of non-final blocks: one valid
//! continuation of the client's stream, which inflates to the same bytes whatever the
//! number of threads.

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
pub(crate) fn zlib_header(level: u32) -> [u8; 2] {
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
/// within `data`) with a partial flush, and all of it with `last`. Ending blocks where
/// the content changes lets each block's Huffman codes fit its content.
fn deflate_blocks(
    c: &mut Compress,
    data: &[u8],
    block_ends: &[usize],
    last: FlushCompress,
    out: &mut Sink,
) {
    deflate_range(c, data, block_ends, 0, data.len(), last, out);
}

/// [`deflate_blocks`] for `data[from..to]`, with block ends given as offsets into
/// `data` (those outside the range are skipped).
fn deflate_range(
    c: &mut Compress,
    data: &[u8],
    block_ends: &[usize],
    from: usize,
    to: usize,
    last: FlushCompress,
    out: &mut Sink,
) {
    let mut start = from;
    for &end in block_ends {
        if end > start && end < to {
            deflate_flush(c, &data[start..end], FlushCompress::Partial, out);
            start = end;
        }
    }
    deflate_flush(c, &data[start..to], last, out);
}

/// Deflates a unit: its literal ranges as blocks of literals (see [`super::huffman`]),
/// the rest through `c` as [`deflate_blocks`] does, ending with `last`.
///
/// Before a literal range, `c` is sync-flushed so the stream is byte-aligned; the
/// literal blocks end byte-aligned too; afterwards `c` takes the literals as a preset
/// dictionary (appended to its history, as zlib's `deflateSetDictionary` does for a
/// raw stream), so its window is again exactly the client's.
fn deflate_unit(c: &mut Compress, data: &Data, last: FlushCompress, out: &mut Sink) {
    if data.literal.is_empty() {
        deflate_blocks(c, &data.bytes, &data.block_ends, last, out);
        return;
    }
    let mut pos = 0;
    for &(start, end) in &data.literal {
        let (start, end) = (start.max(pos), end.min(data.bytes.len()));
        if end <= start {
            continue;
        }
        deflate_range(
            c,
            &data.bytes,
            &data.block_ends,
            pos,
            start,
            FlushCompress::Sync,
            out,
        );
        let literals = &data.bytes[start..end];
        out.buf.truncate(out.len);
        super::huffman::write_literal_blocks(literals, &mut out.buf);
        out.len = out.buf.len();
        let history = &literals[literals.len().saturating_sub(WINDOW)..];
        if c.set_dictionary(history).is_err() {
            // Not expected after a flush; compressing the literals (and dropping the
            // output) puts the same bytes into the history, only slower.
            debug_assert!(false, "set_dictionary after a flush failed");
            let mut discard = Sink::default();
            deflate_flush(c, history, FlushCompress::Sync, &mut discard);
        }
        pos = end;
    }
    if pos < data.bytes.len() || matches!(last, FlushCompress::Finish) {
        deflate_range(
            c,
            &data.bytes,
            &data.block_ends,
            pos,
            data.bytes.len(),
            last,
            out,
        );
    }
}

/// Deflates all of `data` into `out` and flushes (with `FlushCompress::None`, only
/// what the compressor has ready comes out).
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
    /// How much more than its length these bytes cost to deflate, in bytes of the
    /// cheapest kind: deflate spends longer per byte on data with few matches (raw
    /// photo pixels) than on repetitive data. Chunks are balanced by cost.
    pub(crate) extra_cost: usize,
    /// Ranges of `bytes` (ascending, not overlapping) to send as blocks of literals
    /// without a match search: data in which deflate finds next to no matches (raw
    /// photo pixels) costs it far more time than the few bytes the search saves.
    pub(crate) literal: Vec<(usize, usize)>,
}

impl Data {
    fn clear(&mut self) {
        self.bytes.clear();
        self.block_ends.clear();
        self.extra_cost = 0;
        self.literal.clear();
    }

    /// Marks `start..end` of `bytes` for blocks of literals, joining it to the last
    /// range if they touch.
    pub(crate) fn mark_literal(&mut self, start: usize, end: usize) {
        match self.literal.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.literal.push((start, end)),
        }
    }

    fn cost(&self) -> usize {
        self.bytes.len() + self.extra_cost
    }
}

/// The connection's zlib stream, with helpers for chunks after the first.
pub(crate) struct DeflateStream {
    /// The connection's compressor, raw deflate: its history is the client's window.
    main: Compress,
    level: u32,
    /// Whether the zlib header has been written since the last reset.
    header_sent: bool,
    /// Compressors for chunks 1.., started afresh for every rectangle.
    helpers: Vec<Compress>,
    /// Per unit data, kept to reuse the allocations.
    units: Vec<Data>,
    /// Per chunk output and dictionary space.
    chunks: Vec<Chunk>,
}

/// A chunk's compressed bytes, and the dictionary its compressor starts from.
#[derive(Debug, Default)]
struct Chunk {
    compressed: Sink,
    dictionary: Vec<u8>,
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

/// Appends the last `WINDOW` bytes of `units` (or all of them, if fewer) to `out`.
fn tail(units: &[Data], out: &mut Vec<u8>) {
    let mut need = WINDOW;
    let mut first = units.len();
    while first > 0 && need > 0 {
        first -= 1;
        need = need.saturating_sub(units[first].bytes.len());
    }
    let start = out.len();
    for u in &units[first..] {
        out.extend_from_slice(&u.bytes);
    }
    let excess = (out.len() - start).saturating_sub(WINDOW);
    out.drain(start..start + excess);
}

/// Splits `units` into at most `count` runs of consecutive units of about equal cost:
/// the first unit of each run after the first, ascending.
fn chunk_starts(units: &[Data], count: usize) -> Vec<usize> {
    let total: usize = units.iter().map(Data::cost).sum();
    let mut starts = Vec::with_capacity(count);
    let mut sum = 0;
    for (i, u) in units.iter().enumerate() {
        // A new chunk starts at the unit whose first half reaches the next share.
        let share = total * (starts.len() + 1) / count.max(1);
        if i > 0 && sum + u.cost() / 2 >= share && starts.len() + 1 < count {
            starts.push(i);
        }
        sum += u.cost();
    }
    starts
}

/// Takes the items of `slots` one at a time, in order, on one thread per element of
/// `scratch` (the calling thread included), running `work` on each with the index, the
/// thread's element of `scratch` and the item. A thread that cannot be started leaves
/// its share to the others.
fn in_parallel<S: Send, T: Send>(
    scratch: &mut [S],
    slots: Vec<T>,
    work: impl Fn(usize, &mut S, T) + Sync,
) {
    let slots: Vec<Mutex<Option<T>>> = slots.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    let run = |s: &mut S| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = slots.get(i) else {
            return;
        };
        // Each slot is taken once, by one thread: the lock never waits.
        let item = match slot.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(item) = item {
            work(i, s, item);
        }
    };
    let Some((mine, others)) = scratch.split_first_mut() else {
        return;
    };
    std::thread::scope(|scope| {
        for s in others {
            let _ = std::thread::Builder::new().spawn_scoped(scope, || run(s));
        }
        run(mine);
    });
}

impl DeflateStream {
    pub(crate) fn new(level: u32) -> DeflateStream {
        let level = level.min(9);
        DeflateStream {
            main: Compress::new(Compression::new(level), false),
            level,
            header_sent: false,
            helpers: Vec::new(),
            units: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// Gives back the per-rectangle working space (units, chunks, helper
    /// compressors); the stream itself is kept.
    pub(crate) fn trim(&mut self) {
        self.helpers = Vec::new();
        self.units = Vec::new();
        self.chunks = Vec::new();
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
        if self.main.set_level(Compression::new(level)).is_err() {
            // zlib-rs changes level in place only within one of its algorithms (levels
            // 0, 1, 2, 3-6, 7-9). A fresh compressor refers back to nothing before
            // its first byte, which any point of the client's stream allows.
            self.main = Compress::new(Compression::new(level), false);
        }
        self.level = level;
        self.helpers.clear();
    }

    fn header(&mut self, out: &mut Vec<u8>) {
        if !self.header_sent {
            out.extend_from_slice(&zlib_header(self.level));
            self.header_sent = true;
        }
    }

    /// Produces a rectangle's `count` units and compresses them, on up to
    /// `scratch.len()` threads (the calling one included), appending the compressed
    /// stream to `out`.
    ///
    /// `produce(unit, scratch, data)` appends unit `unit`'s uncompressed bytes to
    /// `data` (which starts empty for each unit); `scratch` is the working space of the
    /// thread running it.
    pub(crate) fn write<S, F>(
        &mut self,
        count: usize,
        scratch: &mut [S],
        produce: F,
        out: &mut Vec<u8>,
    ) where
        S: Send,
        F: Fn(usize, &mut S, &mut Data) + Sync,
    {
        self.header(out);
        if self.units.len() < count {
            self.units.resize_with(count, Data::default);
        }
        let threads = scratch.len().min(count);
        if threads <= 1 {
            // One thread: all units through the main compressor in one go.
            let Some(s) = scratch.first_mut() else {
                return;
            };
            if self.chunks.is_empty() {
                self.chunks.push(Chunk::default());
            }
            let data = &mut self.units[0];
            data.clear();
            for unit in 0..count {
                produce(unit, s, data);
            }
            let sink = &mut self.chunks[0].compressed;
            sink.clear();
            deflate_unit(&mut self.main, data, FlushCompress::Sync, sink);
            out.extend_from_slice(sink.bytes());
            return;
        }
        // Step 1: the units.
        let units = &mut self.units[..count];
        in_parallel(
            scratch,
            units.iter_mut().collect(),
            |unit, s, data: &mut Data| {
                data.clear();
                produce(unit, s, data);
            },
        );
        // Step 2: the chunks.
        let units = &self.units[..count];
        let mut starts = chunk_starts(units, threads);
        starts.insert(0, 0);
        let chunks = starts.len();
        while self.helpers.len() < chunks - 1 {
            self.helpers
                .push(Compress::new(Compression::new(self.level), false));
        }
        if self.chunks.len() < chunks {
            self.chunks.resize_with(chunks, Chunk::default);
        }
        let mut compressors: Vec<&mut Compress> = Vec::with_capacity(chunks);
        compressors.push(&mut self.main);
        compressors.extend(self.helpers.iter_mut());
        let slots: Vec<(&mut Compress, &mut Chunk)> = compressors
            .into_iter()
            .zip(self.chunks.iter_mut())
            .take(chunks)
            .collect();
        in_parallel(scratch, slots, |i, _, (c, chunk)| {
            let first = starts[i];
            let end = starts.get(i + 1).copied().unwrap_or(count);
            chunk.compressed.clear();
            if i > 0 {
                c.reset();
                chunk.dictionary.clear();
                tail(&units[..first], &mut chunk.dictionary);
                if c.set_dictionary(&chunk.dictionary).is_err() {
                    // Not expected on a fresh compressor; without the dictionary the
                    // chunk still refers only to its own bytes.
                    debug_assert!(false, "set_dictionary on a fresh compressor failed");
                    c.reset();
                }
            }
            for (u, data) in units[first..end].iter().enumerate() {
                let flush = if first + u + 1 == end {
                    FlushCompress::Sync
                } else {
                    FlushCompress::None
                };
                deflate_unit(c, data, flush, &mut chunk.compressed);
            }
        });
        for chunk in &self.chunks[..chunks] {
            out.extend_from_slice(chunk.compressed.bytes());
        }
        // The main compressor has seen chunk 0 only: give it what followed.
        let Some(history) = self.chunks.first_mut().map(|c| &mut c.dictionary) else {
            return;
        };
        history.clear();
        tail(
            &self.units[starts.get(1).copied().unwrap_or(count)..count],
            history,
        );
        if history.is_empty() {
            return;
        }
        if self.main.set_dictionary(history).is_err() {
            // Not expected after a flush; compressing the tail (and dropping the output)
            // puts the same bytes into the history, only slower.
            debug_assert!(false, "set_dictionary after a flush failed");
            let mut discard = Sink::default();
            deflate_flush(&mut self.main, history, FlushCompress::Sync, &mut discard);
        }
    }
}
