//! Time to write a large profile (100,000 unique stacks) in every format.
//! `cargo bench -p flamegraphs --bench writers`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flamegraphs::{
    Format, Frame, FrameKind, Location, Mapping, Meta, Profile, Sample, WriteOptions,
};

/// 100,000 distinct stacks, 8 to 32 frames deep, over 2,000 functions in 20
/// objects, with kernel tails and inlined frames: the size of a long `-a` capture.
fn big_profile() -> Profile {
    let mut p = Profile::new(Meta::default());
    let mappings: Vec<u32> = (0..20)
        .map(|i| {
            p.intern_mapping(Mapping {
                path: format!("/usr/lib/libbench{i}.so"),
                build_id: Some(vec![i as u8; 20]),
                ..Mapping::default()
            })
        })
        .collect();
    let mut locations = Vec::new();
    for f in 0..2000u32 {
        let kind = if f % 10 == 0 {
            FrameKind::Kernel
        } else {
            FrameKind::User
        };
        let mut frames = vec![p.intern(Frame {
            name: format!("module{}::function_{f}", f % 50),
            kind,
            file: Some(format!("src/module{}.rs", f % 50)),
            line: Some(f % 700 + 1),
        })];
        if f % 7 == 0 {
            frames.push(p.intern(Frame {
                name: format!("inlined_helper_{f}"),
                kind: FrameKind::Inline,
                file: None,
                line: None,
            }));
        }
        locations.push(p.intern_location(Location {
            mapping: Some(mappings[(f % 20) as usize]),
            address: 0x1000 + u64::from(f) * 16,
            frames,
        }));
    }
    let mut rng: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..100_000u32 {
        let depth = 8 + (next() % 25) as usize;
        let stack = (0..depth)
            .map(|_| locations[(next() % 2000) as usize])
            .collect();
        p.samples.push(Sample {
            pid: 1000 + i % 50,
            tid: 1000 + i % 200,
            comm: format!("worker{}", i % 50),
            stack,
            count: 1 + next() % 10,
            weight: 10_101_010 * (1 + next() % 10),
        });
    }
    p
}

fn writers(c: &mut Criterion) {
    let profile = big_profile();
    let options = WriteOptions::default();
    let mut group = c.benchmark_group("write 100k unique stacks");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(profile.samples.len() as u64));
    for format in Format::ALL {
        group.bench_function(format.name(), |b| {
            b.iter(|| format.write(&profile, &options, std::io::sink()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, writers);
criterion_main!(benches);
