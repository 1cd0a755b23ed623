//! Naming addresses of a large binary with DWARF (this benchmark's own executable:
//! std, blazesym and gimli, built with line tables): 20,000 distinct file offsets
//! spread over its code, cold (a new symbolizer: ELF and DWARF parsed again) and
//! warm (the same symbolizer, as the next window of a continuous capture finds it).
//! `cargo bench -p symbolizer --bench symbolize`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use symbolizer::symbolize::{Options, Symbolizer};

/// Distinct file offsets across this executable's code, read from our own mapping.
fn offsets(n: u64) -> (std::path::PathBuf, Vec<u64>) {
    let exe = std::env::current_exe().unwrap();
    let maps = symbolizer::procmaps::read(std::process::id()).unwrap();
    let text = maps
        .iter()
        .filter(|m| m.exec && std::path::Path::new(&m.path) == exe)
        .max_by_key(|m| m.end - m.start)
        .expect("our code is mapped");
    let len = text.end - text.start;
    let step = (len / n).max(1);
    let offsets = (0..n)
        .map(|i| text.offset + i * step + (i * 7) % step.max(1))
        .collect();
    (exe, offsets)
}

fn symbolize(c: &mut Criterion) {
    let (exe, offsets) = offsets(20_000);
    let mut group = c.benchmark_group("symbolize 20k addresses of a large binary");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(offsets.len() as u64));
    group.bench_function("cold", |b| {
        b.iter(|| {
            let s = Symbolizer::new(Options::default());
            let named = s.object(&exe, &offsets).unwrap();
            assert!(named.iter().filter(|f| !f.is_empty()).count() > offsets.len() / 2);
        })
    });
    for (name, options) in [
        (
            "cold, no inlined frames",
            Options {
                inlined: false,
                ..Options::default()
            },
        ),
        (
            "cold, ELF symbols only",
            Options {
                debug_info: false,
                ..Options::default()
            },
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                Symbolizer::new(options.clone())
                    .object(&exe, &offsets)
                    .unwrap()
            })
        });
    }
    let warm = Symbolizer::new(Options::default());
    warm.object(&exe, &offsets).unwrap();
    group.bench_function("warm", |b| b.iter(|| warm.object(&exe, &offsets).unwrap()));
    group.finish();
}

criterion_group!(benches, symbolize);
criterion_main!(benches);
