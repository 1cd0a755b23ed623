//! Unwinding throughput: stack snapshots (registers and a 16 KiB copy of the stack,
//! as the BPF program takes them) of this benchmark at recursion depths 1 to 40,
//! unwound with the binary's CFI: cold (a new unwinder, so the CFI table is built
//! again) and warm (tables cached, as in a running capture).
//! `cargo bench -p symbolizer --bench unwind`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use symbolizer::unwind::{snapshot_here, Regs, StackCopy, Unwinder};
use symbolizer::Tracker;

#[inline(never)]
fn recurse(depth: u32) -> (Regs, Vec<u8>) {
    if depth == 0 {
        return snapshot_here(16384);
    }
    let r = recurse(depth - 1);
    std::hint::black_box(r)
}

fn unwind(c: &mut Criterion) {
    let snaps: Vec<(Regs, Vec<u8>)> = (1..=40).map(recurse).collect();
    let mut tracker = Tracker::new();
    tracker.snapshot(std::process::id()).unwrap();
    let pid = std::process::id();
    let mut group = c.benchmark_group("unwind 40 stacks of 3 to 45 frames");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(snaps.len() as u64));
    group.bench_function("cold", |b| {
        b.iter(|| {
            let mut u = Unwinder::new();
            for (regs, bytes) in &snaps {
                u.unwind(
                    &tracker,
                    pid,
                    u64::MAX,
                    *regs,
                    StackCopy {
                        base: regs.sp,
                        bytes,
                    },
                );
            }
        })
    });
    let mut warm = Unwinder::new();
    let mut frames = 0;
    for (regs, bytes) in &snaps {
        frames += warm
            .unwind(
                &tracker,
                pid,
                u64::MAX,
                *regs,
                StackCopy {
                    base: regs.sp,
                    bytes,
                },
            )
            .0
            .len();
    }
    eprintln!("{frames} frames in {} stacks", snaps.len());
    group.bench_function("warm", |b| {
        b.iter(|| {
            for (regs, bytes) in &snaps {
                warm.unwind(
                    &tracker,
                    pid,
                    u64::MAX,
                    *regs,
                    StackCopy {
                        base: regs.sp,
                        bytes,
                    },
                );
            }
        })
    });
    group.finish();
}

criterion_group!(benches, unwind);
criterion_main!(benches);
