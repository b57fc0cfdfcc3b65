//! A zlib stream that lives across rectangles, as Zlib, ZRLE and Tight use them.

use crate::error::DecodeError;
use flate2::{Decompress, FlushDecompress, Status};

/// One persistent inflater. Servers end every rectangle's share of the stream with a
/// sync flush, so each rectangle's compressed bytes inflate completely on their own.
pub struct ZStream {
    inner: Decompress,
}

impl Default for ZStream {
    fn default() -> Self {
        ZStream {
            inner: Decompress::new(true),
        }
    }
}

impl std::fmt::Debug for ZStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZStream")
            .field("total_in", &self.inner.total_in())
            .finish()
    }
}

impl ZStream {
    pub fn reset(&mut self) {
        self.inner.reset(true);
    }

    /// Inflates all of `input` into the front of `buf` and returns how many bytes it
    /// produced: the output is `&buf[..n]`. Refuses to produce more than `limit` bytes
    /// (a zlib bomb ends here, not in memory).
    ///
    /// `buf` is scratch space that only grows: its length is what has been zeroed once,
    /// so the same buffer passed again is written by the inflater alone (inflating into
    /// a `Vec`'s spare capacity would zero it on every call).
    pub fn inflate(
        &mut self,
        input: &[u8],
        buf: &mut Vec<u8>,
        limit: usize,
        context: &'static str,
    ) -> Result<usize, DecodeError> {
        // One byte past the limit tells "exactly full" from "more was coming".
        let hard = limit.saturating_add(1);
        // Start with a guess and grow: a few times the input, capped just past the limit.
        let mut want = input.len().saturating_mul(4).max(1024).min(hard);
        let mut filled = 0usize;
        let mut consumed = 0usize;
        loop {
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let end = buf.len().min(hard);
            let before_in = self.inner.total_in();
            let before_out = self.inner.total_out();
            let status = self
                .inner
                .decompress(
                    &input[consumed..],
                    &mut buf[filled..end],
                    FlushDecompress::Sync,
                )
                .map_err(|e| DecodeError::Zlib {
                    context,
                    detail: format!("invalid zlib data: {e}"),
                })?;
            let used = (self.inner.total_in() - before_in) as usize;
            let produced = (self.inner.total_out() - before_out) as usize;
            consumed += used;
            filled += produced;
            if filled > limit {
                return Err(DecodeError::TooLong {
                    context,
                    length: filled as u64,
                    limit: limit as u64,
                });
            }
            if status == Status::StreamEnd {
                if consumed < input.len() {
                    return Err(DecodeError::Zlib {
                        context,
                        detail: format!(
                            "{} bytes after the end of the zlib stream",
                            input.len() - consumed
                        ),
                    });
                }
                return Ok(filled);
            }
            if filled < end {
                if consumed >= input.len() {
                    // All input taken with room to spare: everything is out.
                    return Ok(filled);
                }
                if used == 0 && produced == 0 {
                    return Err(DecodeError::Zlib {
                        context,
                        detail: "zlib stream made no progress".into(),
                    });
                }
            } else {
                // Output full below the hard cap (at the cap, the check above fired): grow.
                want = end.saturating_mul(2).min(hard).max(end + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflate_sync(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 1024);
        c.compress_vec(data, &mut out, FlushCompress::Sync)
            .expect("compress");
        out
    }

    #[test]
    fn stream_spans_rectangles() {
        let mut c = Compress::new(Compression::default(), true);
        let a = deflate_sync(&mut c, b"hello hello hello");
        let b = deflate_sync(&mut c, b"hello again");
        let mut z = ZStream::default();
        let mut out = Vec::new();
        let n = z.inflate(&a, &mut out, 1000, "test").expect("first");
        assert_eq!(&out[..n], b"hello hello hello");
        let n = z.inflate(&b, &mut out, 1000, "test").expect("second");
        assert_eq!(&out[..n], b"hello again");
    }

    #[test]
    fn bomb_is_refused() {
        let mut c = Compress::new(Compression::best(), true);
        let zeros = vec![0u8; 10 << 20];
        let bomb = deflate_sync(&mut c, &zeros);
        assert!(bomb.len() < 20_000);
        let mut z = ZStream::default();
        let mut out = Vec::new();
        let err = z
            .inflate(&bomb, &mut out, 1 << 20, "test")
            .expect_err("limit");
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
        assert!(out.len() <= 2 << 20);
    }

    #[test]
    fn exact_limit_is_allowed() {
        let mut c = Compress::new(Compression::default(), true);
        let data = vec![7u8; 4096];
        let z_data = deflate_sync(&mut c, &data);
        let mut z = ZStream::default();
        let mut out = Vec::new();
        let n = z
            .inflate(&z_data, &mut out, 4096, "test")
            .expect("fits exactly");
        assert_eq!(&out[..n], &data[..]);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut z = ZStream::default();
        let mut out = Vec::new();
        assert!(z.inflate(&[0xff; 64], &mut out, 4096, "test").is_err());
    }
}
