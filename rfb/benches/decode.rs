//! Decoding recorded real server streams (`benches/data/*.rfbrec`, recorded from Xvnc
//! at 1920x1080 by `scripts/record-streams.sh`), one full frame per iteration, through
//! the whole client path: message parsing, measuring, inflating, drawing.
//! Throughput is in pixels: criterion's `elem/s` are pixels per second.
//!
//! Group `decode_ours` decodes what our own Tight encoder sends lossless (gradient
//! filter for many colours) for a frame of noise, every pixel new, as the viewer
//! benchmark's source sends, and for the recorded desktop; then the same with JPEG at
//! quality level 8.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rfb::client::ClientSession;
use rfb::encode::tight::TightEncoder;
use rfb::encode::{EncodeParams, PixelWriter};
use rfb::handshake::ServerInit;
use rfb::recording::Recording;
use rfb::{Framebuffer, PixelFormat};

fn bench_recordings(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "rfbrec"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut group = c.benchmark_group("decode");
    for path in files {
        let bytes = std::fs::read(&path).expect("readable recording");
        let rec = Recording::parse(&bytes).expect("valid recording");
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let init = rec.server_init();
        group.throughput(Throughput::Elements(
            u64::from(rec.width) * u64::from(rec.height),
        ));
        let mut session = ClientSession::new(&init);
        group.bench_function(&name, |b| {
            b.iter(|| {
                session.reset_decoders();
                session.feed(&rec.stream).expect("recording decodes");
                let mut frames = 0;
                while let Some(e) = session.poll_event() {
                    frames += usize::from(matches!(e, rfb::client::ClientEvent::UpdateComplete));
                }
                assert!(frames >= 1);
            })
        });
    }
    group.finish();
}

/// A FramebufferUpdate of `fb` whole, encoded by our Tight encoder, lossless or with
/// JPEG at `quality`.
fn tight_update(fb: &Framebuffer, quality: Option<u8>) -> Vec<u8> {
    let mut enc = TightEncoder::default();
    let mut rects = Vec::new();
    let params = EncodeParams {
        compress: Some(1),
        quality,
    };
    let pw = PixelWriter::new(PixelFormat::RGB888);
    enc.encode_many(fb, &[fb.bounds()], &pw, &params, &mut rects);
    let count = u16::try_from(rects.len()).expect("fewer than 65536 rectangles");
    let mut out = vec![0, 0];
    out.extend(count.to_be_bytes());
    for (r, payload) in rects {
        for v in [r.x, r.y, r.width, r.height] {
            out.extend(v.to_be_bytes());
        }
        out.extend(7i32.to_be_bytes());
        out.extend(payload);
    }
    out
}

/// Every pixel pseudo-random (xorshift64), as `kvmux testsrc --pattern noise`.
fn noise(width: u16, height: u16) -> Framebuffer {
    let mut fb = Framebuffer::new(width, height);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for p in fb.pixels_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *p = (state as u32) & 0x00ff_ffff;
    }
    fb
}

fn bench_ours(c: &mut Criterion) {
    let mut frames = vec![("noise", noise(1920, 1080))];
    if let Ok(bytes) =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/tight.rfbrec"))
    {
        let rec = Recording::parse(&bytes).expect("valid recording");
        frames.push(("desktop", rec.replay().expect("recording decodes")));
    }
    let mut group = c.benchmark_group("decode_ours");
    for ((name, fb), quality) in frames.iter().flat_map(|f| [(f, None), (f, Some(8))]) {
        let update = tight_update(fb, quality);
        let init = ServerInit {
            width: fb.width(),
            height: fb.height(),
            pixel_format: PixelFormat::RGB888,
            name: String::new(),
        };
        group.throughput(Throughput::Elements(
            u64::from(fb.width()) * u64::from(fb.height()),
        ));
        let mut session = ClientSession::new(&init);
        let kind = quality.map_or("lossless".to_owned(), |q| format!("jpeg{q}"));
        group.bench_function(format!("tight-{kind}-{name}"), |b| {
            b.iter(|| {
                session.reset_decoders();
                session.feed(&update).expect("our update decodes");
                let mut frames = 0;
                while let Some(e) = session.poll_event() {
                    frames += usize::from(matches!(e, rfb::client::ClientEvent::UpdateComplete));
                }
                assert_eq!(frames, 1);
                if quality.is_none() {
                    assert_eq!(session.framebuffer().pixels(), fb.pixels());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_recordings, bench_ours);
criterion_main!(benches);
