//! Decoding recorded real server streams (`benches/data/*.rfbrec`, recorded from Xvnc
//! at 1920x1080 by `scripts/record-streams.sh`), one full frame per iteration, through
//! the whole client path: message parsing, measuring, inflating, drawing.
//! Throughput is in pixels: criterion's `elem/s` are pixels per second.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rfb::client::ClientSession;
use rfb::handshake::ServerInit;
use rfb::recording::Recording;

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
        let init = ServerInit {
            width: rec.width,
            height: rec.height,
            pixel_format: rec.pixel_format,
            name: String::new(),
        };
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

criterion_group!(benches, bench_recordings);
criterion_main!(benches);
