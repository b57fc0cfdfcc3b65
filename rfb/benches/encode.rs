//! Encoding a real 1920x1080 desktop, one full frame per iteration: the framebuffer
//! Xvnc sent in `benches/data/zrle.rfbrec` (decoded with the client session), encoded
//! as one rectangle in RGB888 by each encoder, with one and two threads where the
//! encoder can use them. Throughput is in pixels: criterion's `elem/s` are pixels per
//! second. The bytes per frame are printed before each group.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rfb::encode::hextile::HextileEncoder;
use rfb::encode::raw::RawEncoder;
use rfb::encode::rre::RreEncoder;
use rfb::encode::zlib::ZlibEncoder;
use rfb::encode::zrle::ZrleEncoder;
use rfb::encode::{EncodeParams, PixelWriter, RectEncoder};
use rfb::recording::Recording;
use rfb::{Framebuffer, PixelFormat};

fn recorded_desktop() -> (Framebuffer, usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/zrle.rfbrec");
    let bytes = std::fs::read(path).expect("readable recording");
    let rec = Recording::parse(&bytes).expect("valid recording");
    (rec.replay().expect("recording decodes"), rec.stream.len())
}

fn bench_encoders(c: &mut Criterion) {
    let (fb, xvnc_bytes) = recorded_desktop();
    let rect = fb.bounds();
    let pw = PixelWriter::new(PixelFormat::RGB888);
    let params = EncodeParams::default();
    println!("Xvnc's ZRLE stream for this frame: {xvnc_bytes} bytes");
    let encoders: Vec<(String, Box<dyn RectEncoder>)> = vec![
        (
            "zrle/1-thread".into(),
            Box::new(ZrleEncoder::with_threads(1)),
        ),
        (
            "zrle/2-threads".into(),
            Box::new(ZrleEncoder::with_threads(2)),
        ),
        (
            "zlib/1-thread".into(),
            Box::new(ZlibEncoder::with_threads(1)),
        ),
        (
            "zlib/2-threads".into(),
            Box::new(ZlibEncoder::with_threads(2)),
        ),
        ("hextile".into(), Box::new(HextileEncoder::default())),
        ("rre".into(), Box::new(RreEncoder::default())),
        ("raw".into(), Box::new(RawEncoder)),
    ];
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(rect.area() as u64));
    for (name, mut encoder) in encoders {
        let mut out = Vec::new();
        encoder.encode(&fb, rect, &pw, &params, &mut out);
        println!("{name}: {} bytes/frame", out.len());
        group.bench_function(&name, |b| {
            b.iter(|| {
                encoder.reset();
                out.clear();
                encoder.encode(&fb, rect, &pw, &params, &mut out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encoders);
criterion_main!(benches);
