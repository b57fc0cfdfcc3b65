//! Deflate blocks of literals only, with dynamic Huffman codes ([RFC 1951] 3.2.7):
//! what zlib's `Z_HUFFMAN_ONLY` strategy sends, for data in which a match search finds
//! next to nothing (raw photo pixels).
//!
//! On the photo of a desktop frame, zlib level 2 shrinks raw 24-bit pixels by 13.4%
//! and zlib's literals alone by 12.1%, at about half the time; with blocks of 4 KiB
//! literals do better than level 2, and our own loop over the bytes (count, then write
//! codes) is several times faster than zlib's. Flate2 does not let a
//! stream change its strategy, so [`super::deflate`] writes these blocks itself
//! between byte-aligned stretches of its compressor's output.
//!
//! [RFC 1951]: https://www.rfc-editor.org/rfc/rfc1951#section-3.2.7

/// Literals are counted in pieces of this many bytes, and a block is one piece or a run
/// of them. Small blocks pay off on photos despite a code table each (about 150 bytes):
/// on the desktop picture's ZRLE stream, blocks of 4 KiB gave 529 KB, 16 KiB 544 KB,
/// 64 KiB 557 KB. But every block costs the inflating side a fresh decoding table, and
/// on data whose statistics do not change (noise, or a long stretch of one photo)
/// 4 KiB blocks made rebuilding tables a tenth of a client's decoding time. So a piece
/// joins the block before it when that costs no more bits than a block of its own
/// would (estimated from the counts, see [`join_gain`]), up to [`MAX_BLOCK`].
const PIECE: usize = 4 * 1024;

/// The most literals in one block.
const MAX_BLOCK: usize = 64 * 1024;

/// What a block's header costs in bits, about: the code-length codes and 259 code
/// lengths of 3-5 bits each.
const HEADER_BITS: f32 = 1200.0;

/// Longest code deflate allows for literals and lengths, and for code lengths.
const MAX_BITS: u8 = 15;
const MAX_CODE_LENGTH_BITS: u8 = 7;

/// End of block.
const EOB: usize = 256;

/// The order in which code-length code lengths are sent (RFC 1951 3.2.7).
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Bits written least significant first, as deflate packs them.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter<'_> {
    /// Appends the low `n` (≤ 32) bits of `value`.
    #[inline]
    fn put(&mut self, value: u32, n: u32) {
        self.acc |= u64::from(value) << self.bits;
        self.bits += n;
        if self.bits >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.bits -= 32;
        }
    }

    /// Pads to a byte boundary and writes out what is left.
    fn finish(mut self) {
        while self.bits > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.bits = self.bits.saturating_sub(8);
        }
    }
}

/// Huffman code lengths for `freqs`, none longer than `limit`; symbols of frequency 0
/// get length 0. At least two symbols must have a non-zero frequency.
fn code_lengths(freqs: &[u32], limit: u8, lengths: &mut [u8]) {
    let mut freqs: Vec<u32> = freqs.to_vec();
    loop {
        // Huffman's algorithm on (weight, node) with a sorted list of leaves and a
        // queue of internal nodes, which come out in ascending order.
        let mut leaves: Vec<(u32, usize)> = freqs
            .iter()
            .enumerate()
            .filter(|&(_, &f)| f > 0)
            .map(|(s, &f)| (f, s))
            .collect();
        leaves.sort_unstable();
        let n = leaves.len();
        // parent[node]: leaves are 0..n, internal nodes n..2n-1.
        let mut parent = vec![0usize; 2 * n];
        let mut internal: Vec<u32> = Vec::with_capacity(n);
        let (mut li, mut ii) = (0, 0);
        let pick = |internal: &Vec<u32>, li: &mut usize, ii: &mut usize| -> (u32, usize) {
            let leaf = leaves.get(*li).map(|l| l.0);
            let node = internal.get(*ii).copied();
            match (leaf, node) {
                (Some(l), Some(i)) if l <= i => {
                    *li += 1;
                    (l, *li - 1)
                }
                (_, Some(i)) => {
                    *ii += 1;
                    (i, n + *ii - 1)
                }
                (Some(l), None) => {
                    *li += 1;
                    (l, *li - 1)
                }
                (None, None) => (0, 0),
            }
        };
        for _ in 0..n.saturating_sub(1) {
            let (wa, a) = pick(&internal, &mut li, &mut ii);
            let (wb, b) = pick(&internal, &mut li, &mut ii);
            let node = n + internal.len();
            internal.push(wa + wb);
            parent[a] = node;
            parent[b] = node;
        }
        // Depths: the root (the last internal node) is at depth 0.
        let mut depth = vec![0u8; 2 * n];
        for node in (0..2 * n - 1).rev() {
            if node + 1 < 2 * n - 1 {
                depth[node] = depth[parent[node]].saturating_add(1);
            }
        }
        lengths.fill(0);
        let mut longest = 0;
        for (i, &(_, symbol)) in leaves.iter().enumerate() {
            lengths[symbol] = depth[i];
            longest = longest.max(depth[i]);
        }
        if longest <= limit {
            return;
        }
        // Flatten the distribution and try again (rare: only very skewed data).
        for f in freqs.iter_mut().filter(|f| **f > 0) {
            *f = (*f >> 1).max(1);
        }
    }
}

/// Canonical codes for `lengths` (RFC 1951 3.2.2), bit-reversed for writing LSB first.
fn canonical_codes(lengths: &[u8], codes: &mut [u16]) {
    let mut count = [0u16; 16];
    for &l in lengths {
        count[usize::from(l)] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; 16];
    let mut code = 0u16;
    for bits in 1..16 {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    for (&l, c) in lengths.iter().zip(codes.iter_mut()) {
        if l > 0 {
            let v = next[usize::from(l)];
            next[usize::from(l)] += 1;
            *c = v.reverse_bits() >> (16 - u32::from(l));
        }
    }
}

/// Appends `data` as non-final deflate blocks of literals with dynamic Huffman codes,
/// then an empty stored block, so the output ends on a byte boundary after a
/// non-final block, as after a sync flush. Empty `data` gives nothing.
pub(crate) fn write_literal_blocks(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    out.reserve(data.len() + data.len() / 8 + 64);
    let mut w = BitWriter {
        out: &mut *out,
        acc: 0,
        bits: 0,
    };
    let table = xlog2x_table();
    // The block being gathered: data[start..end] and its literal counts.
    let (mut start, mut end) = (0, 0);
    let mut counts = [0u32; 256];
    for piece in data.chunks(PIECE) {
        let piece_counts = count_bytes(piece);
        let joined = end > start
            && end - start + piece.len() <= MAX_BLOCK
            && join_gain(table, &counts, end - start, &piece_counts, piece.len()) >= 0.0;
        if !joined && end > start {
            write_block(&mut w, &data[start..end], &counts);
            start = end;
            counts = [0; 256];
        }
        for (c, p) in counts.iter_mut().zip(piece_counts) {
            *c += p;
        }
        end += piece.len();
    }
    write_block(&mut w, &data[start..end], &counts);
    // An empty stored block: BFINAL 0, BTYPE 00, pad, LEN 0, NLEN 0xffff.
    w.put(0, 3);
    w.finish();
    out.extend_from_slice(&[0, 0, 0xff, 0xff]);
}

/// How often each byte value occurs in `data`.
fn count_bytes(data: &[u8]) -> [u32; 256] {
    // Four counters break the dependency chain on repeated bytes.
    let mut partial = [[0u32; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        partial[0][usize::from(q[0])] += 1;
        partial[1][usize::from(q[1])] += 1;
        partial[2][usize::from(q[2])] += 1;
        partial[3][usize::from(q[3])] += 1;
    }
    for &b in quads.remainder() {
        partial[0][usize::from(b)] += 1;
    }
    let mut counts = [0u32; 256];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = partial[0][i] + partial[1][i] + partial[2][i] + partial[3][i];
    }
    counts
}

/// `x * log2(x)` for every count a block can hold (0 for 0).
fn xlog2x_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=MAX_BLOCK)
            .map(|x| {
                if x == 0 {
                    0.0
                } else {
                    (x as f64 * (x as f64).log2()) as f32
                }
            })
            .collect()
    })
}

/// Bits saved by coding a piece (`b`, `nb` bytes) in one block with the literals
/// before it (`a`, `na` bytes) rather than in a block of its own: the two blocks'
/// entropies plus a header, less the joined block's entropy. The entropy of counts
/// `c` over `n` bytes is `n log2 n - Σ c log2 c`. `na + nb` is at most [`MAX_BLOCK`].
fn join_gain(table: &[f32], a: &[u32; 256], na: usize, b: &[u32; 256], nb: usize) -> f32 {
    let g = |x: u32| table.get(x as usize).copied().unwrap_or(0.0);
    let n = |x: usize| g(x as u32);
    // Σ over symbols of g(a) + g(b) - g(a + b): what joining costs in the counts.
    let mut sum = 0.0f32;
    for (&x, &y) in a.iter().zip(b) {
        sum += g(x) + g(y) - g(x + y);
    }
    // apart - joined = [n(na) - Σg(a)] + [n(nb) - Σg(b)] + H - [n(na+nb) - Σg(a+b)]
    n(na) + n(nb) - n(na + nb) - sum + HEADER_BITS
}

/// Writes `block` (non-empty) as one deflate block of literals, `counts` being its
/// byte counts.
fn write_block(w: &mut BitWriter<'_>, block: &[u8], counts: &[u32; 256]) {
    {
        // Literal/length alphabet: 256 literals and end-of-block.
        let mut freqs = [0u32; EOB + 1];
        freqs[..256].copy_from_slice(counts);
        freqs[EOB] = 1;
        // Huffman needs two symbols; a block of one byte value gets a second.
        if freqs[..256].iter().filter(|&&f| f > 0).count() < 2 {
            let other = usize::from(block[0] == 0);
            freqs[other] = 1;
        }
        let mut lengths = [0u8; EOB + 1];
        code_lengths(&freqs, MAX_BITS, &mut lengths);
        let mut codes = [0u16; EOB + 1];
        canonical_codes(&lengths, &mut codes);

        // Two distance codes of one bit each (none is used; zlib does the same, as
        // some inflaters want a complete distance code).
        let all: Vec<u8> = lengths.iter().copied().chain([1, 1]).collect();
        // Code lengths as code-length symbols 0-15 (no run-length symbols).
        let mut cl_freqs = [0u32; 19];
        for &l in &all {
            cl_freqs[usize::from(l)] += 1;
        }
        if cl_freqs.iter().filter(|&&f| f > 0).count() < 2 {
            // INVARIANT: lengths of 1 are used (the distance codes), so 18 is unused.
            cl_freqs[18] = 1;
        }
        let mut cl_lengths = [0u8; 19];
        code_lengths(&cl_freqs, MAX_CODE_LENGTH_BITS, &mut cl_lengths);
        let mut cl_codes = [0u16; 19];
        canonical_codes(&cl_lengths, &mut cl_codes);
        let hclen = CODE_LENGTH_ORDER
            .iter()
            .rposition(|&s| cl_lengths[s] > 0)
            .map_or(4, |last| (last + 1).max(4));

        // Header: BFINAL 0, BTYPE 10 (dynamic).
        w.put(0b100, 3);
        w.put((EOB + 1 - 257) as u32, 5); // HLIT
        w.put(2 - 1, 5); // HDIST
        w.put((hclen - 4) as u32, 4); // HCLEN
        for &s in &CODE_LENGTH_ORDER[..hclen] {
            w.put(u32::from(cl_lengths[s]), 3);
        }
        for &l in &all {
            let l = usize::from(l);
            w.put(u32::from(cl_codes[l]), u32::from(cl_lengths[l]));
        }
        // The literals, two at a time (two codes of at most 15 bits fit in 32).
        let mut pairs = block.chunks_exact(2);
        for p in &mut pairs {
            let (a, b) = (usize::from(p[0]), usize::from(p[1]));
            let la = u32::from(lengths[a]);
            let v = u32::from(codes[a]) | (u32::from(codes[b]) << la);
            w.put(v, la + u32::from(lengths[b]));
        }
        for &b in pairs.remainder() {
            let b = usize::from(b);
            w.put(u32::from(codes[b]), u32::from(lengths[b]));
        }
        w.put(u32::from(codes[EOB]), u32::from(lengths[EOB]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    /// Inflates raw deflate data with zlib-rs (through flate2).
    fn inflate(data: &[u8], expected_len: usize) -> Vec<u8> {
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(expected_len + 64);
        d.decompress_vec(data, &mut out, FlushDecompress::Sync)
            .expect("valid deflate");
        assert_eq!(d.total_in() as usize, data.len(), "all input used");
        out
    }

    /// Deterministic pseudo-random numbers (xorshift32).
    fn xorshift(mut seed: u32) -> impl FnMut() -> u32 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        }
    }

    #[test]
    fn hand_checked_code_lengths() {
        // Weights 1, 1, 2, 4: lengths 3, 3, 2, 1.
        let mut lengths = [0u8; 4];
        code_lengths(&[1, 1, 2, 4], 15, &mut lengths);
        assert_eq!(lengths, [3, 3, 2, 1]);
        // RFC 1951's example: lengths (3, 3, 3, 3, 3, 2, 4, 4) give codes 010, 011,
        // 100, 101, 110, 00, 1110, 1111 (here bit-reversed).
        let mut codes = [0u16; 8];
        canonical_codes(&[3, 3, 3, 3, 3, 2, 4, 4], &mut codes);
        assert_eq!(
            codes,
            [0b010, 0b110, 0b001, 0b101, 0b011, 0b00, 0b0111, 0b1111]
        );
    }

    #[test]
    fn limits_code_lengths() {
        // Fibonacci weights make a maximally deep tree: 30 symbols would need 29 bits.
        let mut freqs = vec![1u32, 1];
        while freqs.len() < 30 {
            let n = freqs.len();
            freqs.push(freqs[n - 1] + freqs[n - 2]);
        }
        let mut lengths = vec![0u8; 30];
        code_lengths(&freqs, 15, &mut lengths);
        assert!(lengths.iter().all(|&l| (1..=15).contains(&l)));
        // Kraft: a complete prefix code.
        let kraft: f64 = lengths.iter().map(|&l| 0.5f64.powi(i32::from(l))).sum();
        assert!((kraft - 1.0).abs() < 1e-9, "{kraft}");
    }

    #[test]
    fn round_trips_through_zlib_rs() {
        let mut next = xorshift(0x1234_5678);
        let skewed: Vec<u8> = (0..200_000)
            .map(|_| ((next() % 7) * (next() % 40)) as u8)
            .collect();
        let uniform: Vec<u8> = (0..70_000).map(|_| next() as u8).collect();
        for data in [
            vec![0u8],
            vec![0xffu8; 3],
            vec![7u8; 100_000],
            b"abc".to_vec(),
            skewed.clone(),
            uniform,
        ] {
            let mut out = Vec::new();
            write_literal_blocks(&data, &mut out);
            assert_eq!(&out[out.len() - 4..], &[0, 0, 0xff, 0xff]);
            assert_eq!(inflate(&out, data.len()), data);
        }
        // Skewed data shrinks to within 2% of its entropy (plus code tables).
        let mut out = Vec::new();
        write_literal_blocks(&skewed, &mut out);
        let mut counts = [0f64; 256];
        skewed.iter().for_each(|&b| counts[usize::from(b)] += 1.0);
        let n = skewed.len() as f64;
        let entropy_bytes: f64 = counts
            .iter()
            .filter(|&&c| c > 0.0)
            .map(|&c| -c * (c / n).log2() / 8.0)
            .sum();
        assert!(entropy_bytes < n * 0.8);
        assert!(
            (out.len() as f64) < entropy_bytes * 1.02 + 200.0 * skewed.len().div_ceil(PIECE) as f64,
            "{} vs entropy {entropy_bytes}",
            out.len()
        );
        // Nothing for nothing.
        out.clear();
        write_literal_blocks(&[], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn join_gain_by_hand() {
        let table = xlog2x_table();
        // 4096 zeros, then 4096 ones: apart, two blocks of entropy 0 (one header
        // more); joined, 8192 bytes of one bit each. Keep them apart.
        let (mut zeros, mut ones) = ([0u32; 256], [0u32; 256]);
        zeros[0] = 4096;
        ones[1] = 4096;
        let gain = join_gain(table, &zeros, 4096, &ones, 4096);
        assert!((gain - (HEADER_BITS - 8192.0)).abs() < 1.0, "{gain}");
        // Two pieces of every byte value 16 times: the same 8 bits a byte either way,
        // so joining saves exactly a header.
        let even = [16u32; 256];
        let gain = join_gain(table, &even, 4096, &even, 4096);
        assert!((gain - HEADER_BITS).abs() < 1.0, "{gain}");
    }

    #[test]
    fn blocks_follow_the_statistics() {
        let mut next = xorshift(0x9e37_79b9);
        // Uniform bytes: 8 bits each whatever the blocks, so few blocks. In 4 KiB
        // blocks the 64 headers alone would take some 9 KB.
        let uniform: Vec<u8> = (0..256 * 1024).map(|_| next() as u8).collect();
        let mut out = Vec::new();
        write_literal_blocks(&uniform, &mut out);
        assert_eq!(inflate(&out, uniform.len()), uniform);
        assert!(out.len() < uniform.len() + 1500, "{}", out.len());
        // 32 KiB of 16 values (4 bits a byte), then 32 KiB of uniform bytes: apart,
        // 16 + 32 KiB; in one block the first half would cost nearly 8 bits a byte.
        let mut mixed: Vec<u8> = (0..32 * 1024).map(|_| (next() % 16) as u8).collect();
        mixed.extend((0..32 * 1024).map(|_| next() as u8));
        out.clear();
        write_literal_blocks(&mixed, &mut out);
        assert_eq!(inflate(&out, mixed.len()), mixed);
        assert!(out.len() < 50 * 1024, "{}", out.len());
    }

    #[test]
    fn continues_a_compressed_stream() {
        // Compressor output, literal blocks, then compressor output that refers back
        // into the literals (given to it as a dictionary): one valid stream.
        use flate2::{Compress, Compression, FlushCompress};
        let first = b"hello hello hello world".repeat(50);
        let middle: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let last = middle[1000..3000].to_vec();
        let mut c = Compress::new(Compression::new(2), false);
        let mut out = Vec::with_capacity(100_000);
        c.compress_vec(&first, &mut out, FlushCompress::Sync)
            .expect("deflate");
        write_literal_blocks(&middle, &mut out);
        let mut history = first.clone();
        history.extend_from_slice(&middle);
        c.set_dictionary(&history[history.len().saturating_sub(32 * 1024)..])
            .expect("dictionary");
        let before = out.len();
        c.compress_vec(&last, &mut out, FlushCompress::Sync)
            .expect("deflate");
        assert!(out.len() - before < 100, "back references were used");
        let mut all = history;
        all.extend_from_slice(&last);
        assert_eq!(inflate(&out, all.len()), all);
    }
}
