//! Tight encoding of a realistic 1920x1080 desktop: the frame Xvnc sent in
//! `benches/data/tight.rfbrec` (recorded by `scripts/record-streams.sh`), decoded, then
//! encoded whole with `encode_many` per iteration, lossless and at JPEG quality 8, on
//! one and two threads; and once through `encode`, piece by piece. Each iteration starts from freshly reset zlib streams,
//! as a new connection's first update does. Before timing, prints bytes per frame next
//! to what Xvnc sent for the same picture. Throughput is in pixels.

use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rfb::encode::tight::{split, TightEncoder};
use rfb::encode::{EncodeParams, PixelWriter, RectEncoder};
use rfb::recording::Recording;
use rfb::{Framebuffer, PixelFormat, Rect};

fn data_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data")
}

/// User plus system CPU time of the whole process, threads that ended included
/// (Linux only).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // Clock ticks: 100 per second on Linux.
    Some((utime + stime) / 100.0)
}

/// The framebuffer after replaying a recording.
fn desktop(name: &str) -> (Framebuffer, usize) {
    let bytes = std::fs::read(data_dir().join(name)).expect("readable recording");
    let rec = Recording::parse(&bytes).expect("valid recording");
    (rec.replay().expect("recording decodes"), rec.stream.len())
}

/// One whole frame's payload bytes, with 12 bytes of header per rectangle and the
/// 4-byte update header, as it would go on the wire.
fn encode_frame(
    enc: &mut TightEncoder,
    fb: &Framebuffer,
    rects: &[Rect],
    pw: &PixelWriter,
    params: &EncodeParams,
    out: &mut Vec<(Rect, Vec<u8>)>,
) -> usize {
    enc.reset();
    out.clear();
    enc.encode_many(fb, rects, pw, params, out);
    4 + out.iter().map(|(_, p)| 12 + p.len()).sum::<usize>()
}

fn bench_encode(c: &mut Criterion) {
    let (fb, xvnc_lossless) = desktop("tight.rfbrec");
    let xvnc_jpeg = std::fs::read(data_dir().join("tight-jpeg-q8.rfbrec"))
        .ok()
        .and_then(|b| Recording::parse(&b).ok())
        .map_or(0, |r| r.stream.len());
    let frame = [fb.bounds()];
    let pieces: Vec<Rect> = split(fb.bounds()).collect();
    let pw = PixelWriter::new(PixelFormat::RGB888);
    let mut group = c.benchmark_group("encode_tight");
    group.throughput(Throughput::Elements(
        u64::from(fb.width()) * u64::from(fb.height()),
    ));
    for (label, params, xvnc) in [
        ("lossless", EncodeParams::default(), xvnc_lossless),
        (
            "jpeg-q8",
            EncodeParams {
                quality: Some(8),
                compress: None,
            },
            xvnc_jpeg,
        ),
    ] {
        for threads in [1, 2] {
            let mut enc = TightEncoder::with_threads(threads);
            let mut out = Vec::new();
            // A quick figure outside criterion, for the record: the median and the best
            // wall time per frame (the best is what an idle machine gives), and CPU time
            // of all threads per frame.
            let mut bytes = encode_frame(&mut enc, &fb, &frame, &pw, &params, &mut out);
            let rounds = 100;
            let mut times = Vec::with_capacity(rounds);
            let cpu_start = cpu_seconds();
            for _ in 0..rounds {
                let start = Instant::now();
                bytes = encode_frame(&mut enc, &fb, &frame, &pw, &params, &mut out);
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            let cpu = match (cpu_start, cpu_seconds()) {
                (Some(a), Some(b)) => format!(", {:.1} ms CPU", (b - a) * 1000.0 / rounds as f64),
                _ => String::new(),
            };
            println!(
                "tight {label}, {threads} thread(s): {:.2} ms/frame median, {:.2} best{cpu}; \
                 {bytes} bytes/frame in {} rectangles (Xvnc's recording of this frame: {xvnc} bytes)",
                times[rounds / 2],
                times[0],
                out.len()
            );
            group.bench_function(format!("{label}/{threads}-thread"), |b| {
                b.iter(|| encode_frame(&mut enc, &fb, &frame, &pw, &params, &mut out))
            });
        }
    }
    group.finish();

    // The single-rectangle interface, for comparison.
    let mut enc = TightEncoder::new();
    let mut payload = Vec::new();
    c.bench_function("encode_tight/lossless/encode-per-rect", |b| {
        b.iter(|| {
            enc.reset();
            payload.clear();
            for &rect in &pieces {
                enc.encode(&fb, rect, &pw, &EncodeParams::default(), &mut payload);
            }
            payload.len()
        })
    });
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
