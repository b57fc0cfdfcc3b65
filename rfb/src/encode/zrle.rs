//! ZRLE encoding (16): 64x64 tiles, each solid, packed palette, palette RLE, plain RLE
//! or raw CPIXELs, whichever is estimated smallest, through the connection's zlib
//! stream. The counterpart of [`decode::zrle`](crate::decode::zrle), which describes
//! the layout ([rfbproto, ZRLE Encoding]).
//!
//! Each tile is checked for a single colour, then its runs are counted (runs go on from
//! one row of the tile to the next), its colours collected while a palette could still
//! pay off, and the subencoding chosen by its estimated size after deflate (see
//! `Estimate`): like RealVNC's and TigerVNC's per-tile estimates of the bytes before
//! compression, but with palettes weighted as the repetition deflate finds in runs of
//! real colours makes them cost. Deflate blocks end every few KiB at a tile boundary.
//! On the recorded 1080p Xvnc desktop this gives 531 KB at zlib level 2 where Xvnc's
//! own ZRLE stream is 546 KB at level 6.
//!
//! Large rectangles are encoded row of tiles by row of tiles and compressed in chunks
//! on several threads ([`ZrleEncoder::with_threads`]); see [`super::deflate`] for why
//! the concatenated chunks are one valid zlib stream for the client.
//!
//! [rfbproto, ZRLE Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#zrle-encoding

use super::deflate::{self, Data, DeflateStream, PARALLEL_MIN_PIXELS};
use super::wire::Wire;
use super::{EncodeParams, PixelWriter, RectEncoder};
use crate::framebuffer::{Framebuffer, Rect};

/// ZRLE's tile size.
const TILE: usize = 64;

/// The zlib level when the client asks for none (see [`ZrleEncoder`]).
pub const DEFAULT_LEVEL: u8 = deflate::DEFAULT_LEVEL;

/// Up to this zlib level, raw tiles are sent as deflate blocks of literals with no
/// match search ([`super::huffman`]): on photos, where ZRLE picks raw tiles, that
/// costs no more bytes for a fraction of the time (on the 1080p desktop picture of
/// `scripts/bench-server.sh`, 529 KB instead of 532 KB, against Xvnc's 546 KB at
/// level 6, and under half the CPU time). A client asking for more compression gets
/// the match search everywhere.
const LITERAL_MAX_LEVEL: u8 = DEFAULT_LEVEL;

/// The largest palette a tile may carry.
const MAX_PALETTE: usize = 127;

/// A deflate block ends after the first tile that brings it to this many bytes:
/// blocks of a few tiles get Huffman codes that fit them (photo, text, flat areas) at
/// little cost for the code tables. (On desktop frames, 2-4% smaller than letting
/// zlib end blocks when its buffer fills.)
const BLOCK_SIZE: usize = 4096;

/// Subencodings.
const RAW: u8 = 0;
const SOLID: u8 = 1;
const PLAIN_RLE: u8 = 128;

/// The distinct colours of a tile, up to 127 of them, in order of first appearance,
/// with an open-addressing index for looking them up.
struct Palette {
    colours: [u32; MAX_PALETTE],
    len: usize,
    /// Slot → palette index + 1; 0 is empty. At most 127 of 256 slots are used.
    slots: [u8; 256],
    keys: [u32; 256],
}

impl Palette {
    fn new() -> Palette {
        Palette {
            colours: [0; MAX_PALETTE],
            len: 0,
            slots: [0; 256],
            keys: [0; 256],
        }
    }

    fn clear(&mut self) {
        self.slots = [0; 256];
        self.len = 0;
    }

    fn colours(&self) -> &[u32] {
        &self.colours[..self.len]
    }

    /// The index of `v`, added if it is new; `None` if it is new and the palette
    /// already holds `limit` (≤ 127) colours.
    #[inline]
    fn index_or_insert(&mut self, v: u32, limit: usize) -> Option<u8> {
        let mut s = (v.wrapping_mul(0x9e37_79b1) >> 24) as usize;
        // INVARIANT: fewer than 256 slots are used, so the probe meets an empty one.
        loop {
            match self.slots[s] {
                0 => {
                    if self.len >= limit {
                        return None;
                    }
                    self.colours[self.len] = v;
                    // INVARIANT: len < limit ≤ 127, so len + 1 fits in u8.
                    self.len += 1;
                    self.slots[s] = self.len as u8;
                    self.keys[s] = v;
                    return Some(self.len as u8 - 1);
                }
                i if self.keys[s] == v => return Some(i - 1),
                _ => s = (s + 1) & 255,
            }
        }
    }
}

/// A thread's working space for tiles.
struct TileScratch {
    /// The tile's pixel values, row-major, `width * height` of them.
    values: Vec<u32>,
    work: TileWork,
}

/// Working space for encoding one tile.
struct TileWork {
    palette: Palette,
    /// Where each run starts, and the tile's length after the last one.
    starts: Vec<u16>,
    /// Packed palette indices, one per pixel.
    indices: Vec<u8>,
    /// The last tile was photo-like: at least 7 in 8 of its pixels are runs of one.
    photo: bool,
}

impl TileScratch {
    fn new() -> TileScratch {
        TileScratch {
            values: vec![0; TILE * TILE],
            work: TileWork {
                palette: Palette::new(),
                starts: vec![0; TILE * TILE + 1],
                indices: vec![0; TILE * TILE],
                photo: false,
            },
        }
    }
}

/// Appends a run length: one less than it, as bytes of 255 and a last one below 255.
#[inline]
fn push_run_length(len: usize, out: &mut Vec<u8>) {
    let mut rest = len - 1;
    while rest >= 255 {
        out.push(255);
        rest -= 255;
    }
    // INVARIANT: rest < 255.
    out.push(rest as u8);
}

/// Bits per packed palette index, for 2 to 16 colours.
fn packed_bits(colours: usize) -> usize {
    match colours {
        0..=2 => 1,
        3 | 4 => 2,
        _ => 4,
    }
}

/// The runs of a tile's pixels (row after row, as ZRLE's runs go): how many there are,
/// and how many of them are a single pixel long. Branch-free, so it vectorises.
fn count_runs(values: &[u32]) -> (usize, usize) {
    let n = values.len();
    if n < 2 {
        return (n, n);
    }
    let changes: u32 = values
        .iter()
        .zip(&values[1..])
        .map(|(a, b)| u32::from(a != b))
        .sum();
    // A pixel inside the tile is a run by itself if it differs from both neighbours.
    let inner: u32 = values
        .iter()
        .zip(&values[1..])
        .zip(&values[2..])
        .map(|((a, b), c)| u32::from((a != b) & (b != c)))
        .sum();
    let first = values[0] != values[1];
    let last = values[n - 1] != values[n - 2];
    (
        changes as usize + 1,
        inner as usize + usize::from(first) + usize::from(last),
    )
}

/// Writes where each run of `values` (at most 4096, at least 1) starts into `starts`,
/// followed by `values.len()`: `starts` holds one more entry than there are runs (as
/// [`count_runs`] counts them). Branch-free: every position is written and only a run
/// start advances the cursor.
fn find_run_starts(values: &[u32], starts: &mut [u16]) {
    let mut runs = 1;
    starts[0] = 0;
    for (i, (a, b)) in values.iter().zip(&values[1..]).enumerate() {
        // INVARIANT: `runs` never exceeds the number of runs, the last index of
        // `starts`; i + 1 < 4096 fits in u16.
        starts[runs] = (i + 1) as u16;
        runs += usize::from(a != b);
    }
    starts[runs] = values.len() as u16;
}

/// Estimated sizes of a tile's encodings after deflate, in half bytes.
///
/// A palette's colours are weighted four times (8 half bytes per byte): they rarely
/// repeat exactly from tile to tile, while the same colours written in runs (plain RLE,
/// raw) give deflate long matches wherever content repeats (text, window decorations).
/// Palette indices are weighted 1.5 for the same reason. Plain RLE must beat raw by a
/// tenth: deflate matches the repeated pixels of raw runs almost as well as it codes
/// RLE's length bytes. (On desktop frames these weights give streams 3-4% smaller than
/// comparing plain byte counts, as RealVNC's and TigerVNC's per-tile encoders do.)
#[derive(Debug, Clone, Copy)]
struct Estimate {
    width: usize,
    height: usize,
    cp: usize,
    runs: usize,
    singles: usize,
}

impl Estimate {
    /// Raw or plain RLE, whichever is estimated smaller: (cost, subencoding).
    fn without_palette(&self) -> (usize, u8) {
        let raw = 2 * self.width * self.height * self.cp;
        let plain = 2 * (self.cp + 1) * self.runs;
        if plain * 10 < raw * 9 {
            (plain, PLAIN_RLE)
        } else {
            (raw, RAW)
        }
    }

    /// The palette's share of a palette encoding with `colours` colours.
    fn palette(&self, colours: usize) -> usize {
        8 * self.cp * colours
    }

    /// Palette RLE's indices and run lengths.
    fn palette_rle_body(&self) -> usize {
        3 * (2 * (self.runs - self.singles) + self.singles)
    }

    /// Packed palette's indices.
    fn packed_body(&self, colours: usize) -> usize {
        3 * self.height * (self.width * packed_bits(colours)).div_ceil(8)
    }

    /// The most colours a palette encoding may have and still be estimated smaller
    /// than `cost`.
    fn palette_limit(&self, cost: usize) -> usize {
        let body = self.palette_rle_body().min(self.packed_body(2));
        let colours = cost.saturating_sub(body).saturating_sub(1) / self.palette(1);
        colours.min(MAX_PALETTE)
    }

    /// The best encoding with a palette of `colours` (2 to 127), if it beats `best`.
    fn with_palette(&self, colours: usize, best: (usize, u8)) -> (usize, u8) {
        let mut best = best;
        let palette_rle = self.palette(colours) + self.palette_rle_body();
        if palette_rle < best.0 {
            // INVARIANT: colours ≤ 127.
            best = (palette_rle, 128 + colours as u8);
        }
        if colours <= 16 {
            let packed = self.palette(colours) + self.packed_body(colours);
            if packed < best.0 {
                best = (packed, colours as u8);
            }
        }
        best
    }
}

/// Writes the packed-palette body: rows of `BITS`-bit indices, most significant first,
/// each row padded to a byte. `indices` holds one index per pixel.
fn write_packed<const BITS: usize>(indices: &[u8], width: usize, out: &mut Vec<u8>) {
    let per_byte = 8 / BITS;
    let row_bytes = width.div_ceil(per_byte);
    let start = out.len();
    out.resize(start + row_bytes * (indices.len() / width), 0);
    for (row, dst) in indices
        .chunks_exact(width)
        .zip(out[start..].chunks_exact_mut(row_bytes))
    {
        for (group, byte) in row.chunks(per_byte).zip(dst.iter_mut()) {
            let mut b = 0u8;
            for (i, &index) in group.iter().enumerate() {
                b |= index << (8 - BITS * (i + 1));
            }
            *byte = b;
        }
    }
}

/// Encodes one tile of `values` (`width` wide, row-major pixel values); returns the
/// subencoding.
fn encode_tile(
    values: &[u32],
    width: usize,
    wire: Wire,
    w: &mut TileWork,
    out: &mut Vec<u8>,
) -> u8 {
    let n = values.len();
    let (runs, singles) = count_runs(values);
    w.photo = singles * 8 >= n * 7;
    if runs == 1 {
        out.push(SOLID);
        wire.put(values[0], out);
        return SOLID;
    }
    let estimate = Estimate {
        width,
        height: n / width,
        cp: wire.size(),
        runs,
        singles,
    };
    let mut best = estimate.without_palette();
    let limit = estimate.palette_limit(best.0);
    let starts = &mut w.starts[..=runs];
    let mut have_starts = false;
    if best.1 == PLAIN_RLE {
        find_run_starts(values, starts);
        have_starts = true;
    }
    // The palette, unless it grows past what could pay off.
    let palette = &mut w.palette;
    palette.clear();
    let mut colours = 0;
    if limit >= 2 {
        let complete = if have_starts {
            starts[..runs].iter().all(|&start| {
                palette
                    .index_or_insert(values[usize::from(start)], limit)
                    .is_some()
            })
        } else {
            // Photo-like tiles stop after a few hundred pixels.
            let mut prev = !values[0];
            values.iter().all(|&v| {
                let new = v != prev;
                prev = v;
                !new || palette.index_or_insert(v, limit).is_some()
            })
        };
        if complete {
            colours = palette.len;
            best = estimate.with_palette(colours, best);
        }
    }
    let subencoding = best.1;
    out.push(subencoding);
    match subencoding {
        RAW => wire.put_all(values, out),
        PLAIN_RLE => {
            out.reserve(runs * (wire.size() + 1));
            for run in starts.windows(2) {
                let (start, end) = (usize::from(run[0]), usize::from(run[1]));
                wire.put(values[start], out);
                push_run_length(end - start, out);
            }
        }
        2..=16 => {
            for &c in palette.colours() {
                wire.put(c, out);
            }
            // Indices colour by colour: a pass per colour, each one vectorised.
            let indices = &mut w.indices[..n];
            indices.fill(0);
            for (j, &c) in palette.colours().iter().enumerate().skip(1) {
                // INVARIANT: j < 16.
                let j = j as u8;
                for (index, &v) in indices.iter_mut().zip(values) {
                    *index |= if v == c { j } else { 0 };
                }
            }
            match packed_bits(colours) {
                1 => write_packed::<1>(indices, width, out),
                2 => write_packed::<2>(indices, width, out),
                _ => write_packed::<4>(indices, width, out),
            }
        }
        _ => {
            for &c in palette.colours() {
                wire.put(c, out);
            }
            if !have_starts {
                find_run_starts(values, starts);
            }
            out.reserve(2 * runs);
            for run in starts.windows(2) {
                let (start, end) = (usize::from(run[0]), usize::from(run[1]));
                // Every colour of the tile is in the palette: the lookup finds it.
                let index = palette
                    .index_or_insert(values[start], MAX_PALETTE)
                    .unwrap_or(0);
                let len = end - start;
                if len == 1 {
                    out.push(index);
                } else {
                    out.push(index | 0x80);
                    push_run_length(len, out);
                }
            }
        }
    }
    subencoding
}

/// What a rectangle's tiles are read from and how their pixels are written.
#[derive(Clone, Copy)]
struct Source<'a> {
    fb: &'a Framebuffer,
    rect: Rect,
    pw: &'a PixelWriter,
    wire: Wire,
    /// Raw tiles go out as blocks of literals (see [`LITERAL_MAX_LEVEL`]).
    literal_raw: bool,
}

/// Encodes the tiles of rows `top..bottom` of the rectangle (relative, `top` a
/// multiple of 64) into `data`, ending a deflate block after every [`BLOCK_SIZE`] bytes
/// or so.
fn encode_rows(src: Source<'_>, top: usize, bottom: usize, s: &mut TileScratch, data: &mut Data) {
    let stride = usize::from(src.fb.width());
    let pixels = src.fb.pixels();
    let (x0, y0, width) = (
        usize::from(src.rect.x),
        usize::from(src.rect.y),
        usize::from(src.rect.width),
    );
    for ty in (top..bottom).step_by(TILE) {
        let th = TILE.min(bottom - ty);
        for tx in (0..width).step_by(TILE) {
            let tw = TILE.min(width - tx);
            let values = &mut s.values[..tw * th];
            for (row, dst) in values.chunks_exact_mut(tw).enumerate() {
                let start = (y0 + ty + row) * stride + x0 + tx;
                src.wire.values(src.pw, &pixels[start..start + tw], dst);
            }
            let start = data.bytes.len();
            if encode_tile(values, tw, src.wire, &mut s.work, &mut data.bytes) == RAW {
                if src.literal_raw && s.work.photo {
                    // In photo-like raw tiles literals alone come within 1-2% of
                    // what the match search finds, at a fraction of its time. (Not
                    // in tiles with runs: a tile half flat, half photo is half
                    // matches.)
                    data.mark_literal(start, data.bytes.len());
                } else {
                    // Raw tiles take deflate about two and a half times as long per
                    // byte as the others.
                    let len = data.bytes.len() - start;
                    data.extra_cost += len + len / 2;
                }
            }
            let block_start = data.block_ends.last().copied().unwrap_or(0);
            if data.bytes.len() - block_start >= BLOCK_SIZE {
                data.block_ends.push(data.bytes.len());
            }
        }
    }
}

/// The ZRLE encoder: the connection's zlib stream and per-thread working space.
///
/// The zlib level is the client's compression level (pseudo-encodings -256..-247,
/// 0 to 9, 0 meaning stored blocks) if it sent one, else [`DEFAULT_LEVEL`]. Xvnc uses
/// zlib's default, 6, whatever the client asks; level 2 here already gives fewer bytes.
pub struct ZrleEncoder {
    stream: DeflateStream,
    /// One per thread; its length is the number of threads.
    scratch: Vec<TileScratch>,
}

impl Default for ZrleEncoder {
    fn default() -> ZrleEncoder {
        ZrleEncoder::with_threads(1)
    }
}

impl std::fmt::Debug for ZrleEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZrleEncoder")
            .field("threads", &self.scratch.len())
            .field("stream", &self.stream)
            .finish()
    }
}

impl ZrleEncoder {
    /// An encoder that uses up to `threads` threads (at least one: the caller's) for
    /// large rectangles.
    pub fn with_threads(threads: usize) -> ZrleEncoder {
        ZrleEncoder {
            stream: DeflateStream::new(u32::from(DEFAULT_LEVEL)),
            scratch: (0..threads.max(1)).map(|_| TileScratch::new()).collect(),
        }
    }

    pub fn threads(&self) -> usize {
        self.scratch.len()
    }
}

impl RectEncoder for ZrleEncoder {
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
            // No tiles: no data, and the stream is left as it was.
            return;
        }
        let level = params.compress.unwrap_or(DEFAULT_LEVEL);
        let src = Source {
            fb,
            rect,
            pw,
            wire: Wire::cpixel(pw),
            literal_raw: level <= LITERAL_MAX_LEVEL,
        };
        let height = usize::from(rect.height);
        let threads = if rect.area() >= PARALLEL_MIN_PIXELS {
            self.scratch.len()
        } else {
            1
        };
        // One unit of work per row of tiles.
        self.stream.write(
            height.div_ceil(TILE),
            &mut self.scratch[..threads],
            |row, s, data| {
                let top = row * TILE;
                encode_rows(src, top, (top + TILE).min(height), s, data);
            },
            out,
        );
        // A rectangle's data never nears 4 GiB (it is below twice its raw size).
        let length = u32::try_from(out.len() - length_at - 4).unwrap_or(u32::MAX);
        out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }

    fn trim(&mut self) {
        self.stream.trim();
        let threads = self.scratch.len();
        self.scratch = (0..threads).map(|_| TileScratch::new()).collect();
    }

    fn reset(&mut self) {
        self.stream.reset();
    }
}
