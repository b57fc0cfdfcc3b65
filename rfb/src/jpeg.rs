//! JPEG for Tight: libjpeg-turbo (the TurboJPEG 3 API, built from source and linked
//! statically by `turbojpeg-sys`), the codec TigerVNC uses on both sides.
//!
//! Pictures go straight between the framebuffer and the codec: its canonical
//! `0x00RRGGBB` pixels are B, G, R, X bytes in little-endian memory (X, R, G, B in
//! big-endian), which libjpeg-turbo reads and writes as is, with the framebuffer's
//! stride as the pitch; no intermediate samples.
//!
//! Untrusted streams: the image size is read from the frame header and checked
//! against the rectangle before anything is decoded, and every libjpeg-turbo error or
//! warning (corrupt or truncated data) fails the rectangle.
//!
//! [`JpegPool`] decodes on threads of its own while the caller reads on (a viewer's
//! updates of many JPEG rectangles); the caller draws the results when it must.

use std::fmt;
use std::sync::{mpsc, Arc, Mutex};

use turbojpeg::{Compressor, Decompressor, Image, PixelFormat, Subsamp};

use crate::{Framebuffer, Rect};

/// Canonical pixels keep 0 above blue-green-red; libjpeg-turbo writes 0xff there.
const CANONICAL: u32 = 0x00ff_ffff;

/// The byte order of a canonical pixel in memory.
const FORMAT: PixelFormat = if cfg!(target_endian = "little") {
    PixelFormat::BGRX
} else {
    PixelFormat::XRGB
};

/// Chroma subsampling of an encoded picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsampling {
    /// 4:4:4.
    None,
    /// 4:2:2: half the chroma columns.
    Horizontal,
    /// 4:2:0: half the chroma columns and rows.
    Half,
}

impl Subsampling {
    fn turbojpeg(self) -> Subsamp {
        match self {
            Subsampling::None => Subsamp::None,
            Subsampling::Horizontal => Subsamp::Sub2x1,
            Subsampling::Half => Subsamp::Sub2x2,
        }
    }
}

/// Why a JPEG stream was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JpegError {
    /// The stream's image is not the rectangle's size.
    WrongSize {
        width: usize,
        height: usize,
        rect: Rect,
    },
    /// libjpeg-turbo refused the stream (or could not start).
    Codec(String),
}

impl fmt::Display for JpegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JpegError::WrongSize {
                width,
                height,
                rect,
            } => write!(
                f,
                "image is {width}x{height} but the rectangle is {}x{}",
                rect.width, rect.height
            ),
            JpegError::Codec(detail) => f.write_str(detail),
        }
    }
}

/// The range of framebuffer pixels from `rect`'s first to its last (the rows between
/// included); `None` if `rect` is empty or outside the framebuffer.
fn span(fb_width: usize, len: usize, rect: Rect) -> Option<std::ops::Range<usize>> {
    let (w, h) = (usize::from(rect.width), usize::from(rect.height));
    if w == 0 || h == 0 || usize::from(rect.x) + w > fb_width {
        return None;
    }
    let start = usize::from(rect.y) * fb_width + usize::from(rect.x);
    let end = start + (h - 1) * fb_width + w;
    (end <= len).then_some(start..end)
}

/// A JPEG decoder that writes into a framebuffer; the libjpeg-turbo instance is made
/// on first use and kept.
#[derive(Default)]
pub struct JpegDecoder {
    codec: Option<Decompressor>,
}

impl fmt::Debug for JpegDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JpegDecoder").finish_non_exhaustive()
    }
}

impl JpegDecoder {
    /// Decodes a JFIF stream exactly the size of `rect` into `rect` of `fb`, which the
    /// caller has checked lies inside it. Adds no damage.
    pub fn decode(
        &mut self,
        data: &[u8],
        rect: Rect,
        fb: &mut Framebuffer,
    ) -> Result<(), JpegError> {
        let stride = usize::from(fb.width());
        let pixels = fb.pixels_mut();
        let Some(range) = span(stride, pixels.len(), rect) else {
            return Err(JpegError::Codec(format!(
                "{rect:?} is outside the framebuffer"
            )));
        };
        let pixels = &mut pixels[range];
        let result = self.decompress(data, rect, pixels, stride);
        // libjpeg-turbo sets X to 0xff, also in the rows it wrote before failing.
        let w = usize::from(rect.width);
        for row in pixels.chunks_mut(stride) {
            for p in row.iter_mut().take(w) {
                *p &= CANONICAL;
            }
        }
        result
    }

    /// Decodes into `pixels` as libjpeg-turbo writes them; after a failure the next
    /// stream gets a fresh decompressor.
    fn decompress(
        &mut self,
        data: &[u8],
        rect: Rect,
        pixels: &mut [u32],
        stride: usize,
    ) -> Result<(), JpegError> {
        let slot = &mut self.codec;
        let result = (|| {
            let codec = match slot {
                Some(codec) => codec,
                empty => empty.insert(Decompressor::new().map_err(codec_error)?),
            };
            let header = codec.read_header(data).map_err(codec_error)?;
            let (w, h) = (usize::from(rect.width), usize::from(rect.height));
            if (header.width, header.height) != (w, h) {
                return Err(JpegError::WrongSize {
                    width: header.width,
                    height: header.height,
                    rect,
                });
            }
            let image = Image {
                pixels: bytemuck::cast_slice_mut::<u32, u8>(pixels),
                width: w,
                pitch: stride * 4,
                height: h,
                format: FORMAT,
            };
            codec.decompress(data, image).map_err(codec_error)
        })();
        if result.is_err() {
            // libjpeg-turbo's state after a failure is not always good for the next
            // stream ("Bogus Huffman table definition"): start afresh.
            self.codec = None;
        }
        result
    }
}

/// How many finished jobs' buffers a [`JpegPool`] keeps for the next ones (a 1080p
/// update from TigerVNC or kvmux has about 32 JPEG rectangles).
const SPARE_JOBS: usize = 64;

/// A JFIF stream on its way to a pool thread, and back.
struct Job {
    index: u64,
    rect: Rect,
    data: Vec<u8>,
    picture: Vec<u32>,
    result: Result<(), JpegError>,
}

/// Threads that decode JPEG rectangles while the caller reads on: [`submit`] hands a
/// stream over, [`finish`] waits for everything handed over and draws it into the
/// framebuffer (in the order handed over) on the caller's thread. The threads end
/// when the pool is dropped.
///
/// [`submit`]: JpegPool::submit
/// [`finish`]: JpegPool::finish
pub struct JpegPool {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Job>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Rectangles handed over and not yet drawn.
    in_flight: Vec<Rect>,
    next_index: u64,
    /// Buffers of finished jobs, for the next ones.
    spare: Vec<(Vec<u8>, Vec<u32>)>,
    finished: Vec<Job>,
}

impl fmt::Debug for JpegPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JpegPool")
            .field("threads", &self.threads.len())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl JpegPool {
    /// A pool of `threads` threads (at least one); `None` if none could be started.
    pub fn new(threads: usize) -> Option<JpegPool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let finished = finished.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("jpeg {i}"))
                .spawn(move || {
                    let mut decoder = JpegDecoder::default();
                    loop {
                        let next = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(mut job) = next else { return };
                        // Every pixel is written: whatever the buffer held stays until
                        // then (clearing it would cost a tenth of the decoding). Pixels
                        // stay as libjpeg-turbo writes them, X (the top byte) 0xff:
                        // `finish` clears it as it copies them into the framebuffer.
                        job.picture.resize(job.rect.area(), 0);
                        let width = usize::from(job.rect.width);
                        // A panic must not lose the job: `finish` waits for every one.
                        let decoded =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                decoder.decompress(&job.data, job.rect, &mut job.picture, width)
                            }));
                        job.result = decoded.unwrap_or_else(|_| {
                            decoder = JpegDecoder::default();
                            Err(JpegError::Codec("the decoder failed".into()))
                        });
                        if finished.send(job).is_err() {
                            return;
                        }
                    }
                });
            if let Ok(handle) = spawned {
                handles.push(handle);
            }
        }
        if handles.is_empty() {
            return None;
        }
        Some(JpegPool {
            jobs: Some(jobs),
            done,
            threads: handles,
            in_flight: Vec::new(),
            next_index: 0,
            spare: Vec::new(),
            finished: Vec::new(),
        })
    }

    /// Hands a JFIF stream for `rect` to the threads (a copy of `data`).
    pub fn submit(&mut self, rect: Rect, data: &[u8]) -> Result<(), JpegError> {
        let (mut bytes, picture) = self.spare.pop().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(data);
        let job = Job {
            index: self.next_index,
            rect,
            data: bytes,
            picture,
            result: Ok(()),
        };
        self.next_index += 1;
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(JpegError::Codec("the decoding threads have stopped".into()));
        }
        self.in_flight.push(rect);
        Ok(())
    }

    /// The rectangles handed over and not yet drawn.
    pub fn in_flight(&self) -> &[Rect] {
        &self.in_flight
    }

    /// Waits for every rectangle handed over, draws them into `fb` in the order they
    /// were handed over and damages them. Returns the first error (in that order); the
    /// rectangles without one are drawn all the same.
    pub fn finish(&mut self, fb: &mut Framebuffer) -> Result<(), JpegError> {
        let count = self.in_flight.len();
        self.in_flight.clear();
        self.finished.clear();
        for _ in 0..count {
            match self.done.recv() {
                Ok(job) => self.finished.push(job),
                Err(_) => return Err(JpegError::Codec("a decoding thread failed".into())),
            }
        }
        self.finished.sort_by_key(|job| job.index);
        let stride = usize::from(fb.width());
        let mut first_error = None;
        for job in self.finished.drain(..) {
            let placed = span(stride, fb.pixels().len(), job.rect);
            match (job.result, placed) {
                (Ok(()), Some(range)) => {
                    let w = usize::from(job.rect.width);
                    let rows = fb.pixels_mut()[range].chunks_mut(stride);
                    for (dst, src) in rows.zip(job.picture.chunks_exact(w)) {
                        for (d, &p) in dst[..w].iter_mut().zip(src) {
                            *d = p & CANONICAL;
                        }
                    }
                    fb.add_damage(job.rect);
                }
                (Ok(()), None) => {
                    first_error.get_or_insert_with(|| {
                        JpegError::Codec(format!("{:?} is outside the framebuffer", job.rect))
                    });
                }
                (Err(e), _) => {
                    first_error.get_or_insert(e);
                }
            }
            if self.spare.len() < SPARE_JOBS {
                self.spare.push((job.data, job.picture));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for JpegPool {
    fn drop(&mut self) {
        self.jobs = None;
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A JPEG encoder that reads from a framebuffer; the libjpeg-turbo instance is made on
/// first use and kept, with its output buffer.
#[derive(Default)]
pub struct JpegEncoder {
    codec: Option<Compressor>,
    out: Vec<u8>,
}

impl fmt::Debug for JpegEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JpegEncoder").finish_non_exhaustive()
    }
}

impl JpegEncoder {
    /// Encodes `rect` of `fb` at `quality` (1-100) with `subsampling`; `None` if `rect`
    /// is empty or outside `fb`, or libjpeg-turbo fails.
    pub fn encode(
        &mut self,
        fb: &Framebuffer,
        rect: Rect,
        quality: u8,
        subsampling: Subsampling,
    ) -> Option<&[u8]> {
        let stride = usize::from(fb.width());
        let range = span(stride, fb.pixels().len(), rect)?;
        let codec = match &mut self.codec {
            Some(codec) => codec,
            empty => empty.insert(Compressor::new().ok()?),
        };
        codec.set_quality(i32::from(quality.clamp(1, 100))).ok()?;
        codec.set_subsamp(subsampling.turbojpeg()).ok()?;
        let (w, h) = (usize::from(rect.width), usize::from(rect.height));
        let needed = codec.buf_len(w, h).ok()?;
        if self.out.len() < needed {
            self.out.resize(needed, 0);
        }
        let image = Image {
            pixels: bytemuck::cast_slice::<u32, u8>(&fb.pixels()[range]),
            width: w,
            pitch: stride * 4,
            height: h,
            format: FORMAT,
        };
        let len = codec.compress_to_slice(image, &mut self.out).ok()?;
        self.out.get(..len)
    }
}

fn codec_error(e: turbojpeg::Error) -> JpegError {
    JpegError::Codec(e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A smooth picture: JPEG keeps it well.
    fn smooth(w: u16, h: u16) -> Framebuffer {
        let mut fb = Framebuffer::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = (x as u32 * 3 % 256, y as u32 * 5 % 256, (x + y) as u32 % 256);
                fb.pixels_mut()[usize::from(y) * usize::from(w) + usize::from(x)] =
                    (r << 16) | (g << 8) | b;
            }
        }
        fb
    }

    #[test]
    fn a_rectangle_goes_through_at_its_place_and_leaves_the_rest_alone() {
        let source = smooth(64, 48);
        let rect = Rect::new(5, 7, 33, 21);
        let mut enc = JpegEncoder::default();
        let jpeg = enc
            .encode(&source, rect, 95, Subsampling::None)
            .unwrap()
            .to_vec();
        assert_eq!(jpeg[..2], [0xff, 0xd8]);

        let mut fb = Framebuffer::new(64, 48);
        fb.pixels_mut().fill(0x0012_3456);
        JpegDecoder::default().decode(&jpeg, rect, &mut fb).unwrap();
        for y in 0..48u16 {
            for x in 0..64u16 {
                let got = fb.pixel(x, y).unwrap();
                let inside = (rect.x..rect.x + rect.width).contains(&x)
                    && (rect.y..rect.y + rect.height).contains(&y);
                if !inside {
                    assert_eq!(got, 0x0012_3456, "({x}, {y}) outside was touched");
                    continue;
                }
                assert_eq!(got >> 24, 0, "({x}, {y}) has bits above blue-green-red");
                let want = source.pixel(x, y).unwrap();
                for shift in [0, 8, 16] {
                    let (a, b) = ((got >> shift) & 0xff, (want >> shift) & 0xff);
                    assert!(a.abs_diff(b) <= 12, "({x}, {y}): {got:06x} for {want:06x}");
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_and_junk_are_refused() {
        let source = smooth(16, 8);
        let jpeg = JpegEncoder::default()
            .encode(&source, source.bounds(), 80, Subsampling::Half)
            .unwrap()
            .to_vec();
        let mut fb = Framebuffer::new(32, 32);
        let mut dec = JpegDecoder::default();
        let err = dec
            .decode(&jpeg, Rect::new(0, 0, 16, 9), &mut fb)
            .unwrap_err();
        assert_eq!(err.to_string(), "image is 16x8 but the rectangle is 16x9");
        for junk in [
            &jpeg[..jpeg.len() / 2],
            &jpeg[..2],
            &b"\x89PNG...."[..],
            &[],
        ] {
            let err = dec
                .decode(junk, Rect::new(0, 0, 16, 8), &mut fb)
                .unwrap_err();
            assert!(matches!(err, JpegError::Codec(_)), "{err:?}");
        }
        // The decoder is still good after errors, whichever came last.
        for junk in [&jpeg[..jpeg.len() / 2], &b"not a jpeg"[..]] {
            let _ = dec.decode(junk, Rect::new(0, 0, 16, 8), &mut fb);
            dec.decode(&jpeg, Rect::new(16, 24, 16, 8), &mut fb)
                .unwrap();
        }
    }

    #[test]
    fn many_rectangles_on_many_threads_equal_one_by_one() {
        // Rectangles side by side and stacked, of different sizes, as a server's pieces.
        let source = smooth(200, 120);
        let rects = [
            Rect::new(0, 0, 64, 40),
            Rect::new(64, 0, 136, 40),
            Rect::new(0, 40, 200, 50),
            Rect::new(10, 90, 30, 30),
            Rect::new(41, 95, 150, 20),
        ];
        let mut enc = JpegEncoder::default();
        let jobs: Vec<(Rect, Vec<u8>)> = rects
            .iter()
            .map(|&r| {
                (
                    r,
                    enc.encode(&source, r, 90, Subsampling::Half)
                        .unwrap()
                        .to_vec(),
                )
            })
            .collect();
        let mut one_by_one = Framebuffer::new(200, 120);
        one_by_one.pixels_mut().fill(0x0001_0203);
        let mut dec = JpegDecoder::default();
        for (r, data) in &jobs {
            dec.decode(data, *r, &mut one_by_one).unwrap();
        }
        for threads in [1, 2, 3, 8] {
            let mut pool = JpegPool::new(threads).unwrap();
            // Twice: buffers of the first round are reused in the second.
            for _ in 0..2 {
                let mut fb = Framebuffer::new(200, 120);
                fb.pixels_mut().fill(0x0001_0203);
                for (r, data) in &jobs {
                    pool.submit(*r, data).unwrap();
                }
                assert_eq!(pool.in_flight(), rects);
                pool.finish(&mut fb).unwrap();
                assert!(pool.in_flight().is_empty());
                assert!(fb.pixels() == one_by_one.pixels(), "{threads} threads");
                assert_eq!(fb.take_damage().bounds(), Rect::new(0, 0, 200, 120));
            }
        }
    }

    #[test]
    fn the_pool_reports_the_first_bad_stream_and_draws_the_rest() {
        let source = smooth(96, 32);
        let (a, b, c) = (
            Rect::new(0, 0, 32, 32),
            Rect::new(32, 0, 32, 32),
            Rect::new(64, 0, 32, 32),
        );
        let mut enc = JpegEncoder::default();
        let good = enc
            .encode(&source, a, 90, Subsampling::None)
            .unwrap()
            .to_vec();
        let mut fb = Framebuffer::new(96, 32);
        let mut pool = JpegPool::new(2).unwrap();
        pool.submit(a, &good).unwrap();
        pool.submit(b, &good[..good.len() / 2]).unwrap();
        pool.submit(c, b"not a jpeg").unwrap();
        let err = pool.finish(&mut fb).unwrap_err();
        assert!(matches!(err, JpegError::Codec(_)), "{err}");
        assert!(fb.pixels().iter().all(|&p| p >> 24 == 0));
        assert_eq!(fb.damage().rects(), &[a]);
        // Outside the framebuffer, and the wrong size.
        pool.submit(Rect::new(80, 0, 32, 32), &good).unwrap();
        let err = pool.finish(&mut fb).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        pool.submit(Rect::new(0, 0, 32, 16), &good).unwrap();
        let err = pool.finish(&mut fb).unwrap_err();
        assert_eq!(err.to_string(), "image is 32x32 but the rectangle is 32x16");
        // And still good afterwards.
        pool.submit(b, &good).unwrap();
        pool.finish(&mut fb).unwrap();
    }

    #[test]
    fn empty_or_outside_rectangles_encode_nothing() {
        let fb = smooth(16, 16);
        let mut enc = JpegEncoder::default();
        assert!(enc
            .encode(&fb, Rect::new(0, 0, 0, 4), 80, Subsampling::None)
            .is_none());
        assert!(enc
            .encode(&fb, Rect::new(10, 0, 8, 4), 80, Subsampling::None)
            .is_none());
        assert!(enc
            .encode(&fb, Rect::new(0, 14, 8, 4), 80, Subsampling::None)
            .is_none());
    }
}
