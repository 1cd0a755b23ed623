//! Unwind table size and build time for the biggest objects of this machine
//! (librustc_driver, libLLVM, node, python3, libc, xz, sqlite3): each table is
//! built once to print its rows, then built again and again (cold: no table
//! cache, the file in the page cache) for criterion's timing. Objects that are
//! missing are skipped with a line saying so.
//! `cargo bench -p symbolizer --bench unwind_table`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use symbolizer::unwind::{TableError, UnwindTable};

const TOOLCHAIN_LIB: &str = "/root/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/lib";

fn objects() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(TOOLCHAIN_LIB)
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with("librustc_driver-") || n.starts_with("libLLVM")
                    })
                })
                .collect()
        })
        .unwrap_or_else(|e| {
            println!("{TOOLCHAIN_LIB}: {e}: the toolchain's libraries are skipped");
            Vec::new()
        });
    found.sort();
    found.extend(
        [
            "/usr/bin/node",
            "/usr/bin/python3.11",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/bin/xz",
            "/usr/bin/sqlite3",
        ]
        .map(PathBuf::from),
    );
    found
}

fn range(r: Option<(i32, i32)>) -> String {
    r.map_or("-".into(), |(lo, hi)| format!("{lo}..={hi}"))
}

fn tables(c: &mut Criterion) {
    let mut group = c.benchmark_group("unwind table");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for path in objects() {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let t0 = Instant::now();
        let table = match UnwindTable::load(&path) {
            Ok(t) => t,
            Err(TableError::Io(e)) => {
                println!("{}: {e}: skipped", path.display());
                continue;
            }
            Err(e) => {
                // libLLVM-*.so is a linker script naming the real library
                println!("{}: {e}: skipped", path.display());
                continue;
            }
        };
        let first = t0.elapsed();
        let s = table.summary();
        println!(
            "{name}: {} rows from the CFI, {} after merging ({:.0}%), {} KiB, first build {:.1} ms; \
             kinds [rsp, rbp, plt, signal, end, noinfo, unsupported] {:?}; \
             rsp offsets {}, rbp offsets {}, rbp saved at {}, span {:#x}",
            table.raw_rows(),
            table.len(),
            100.0 * table.len() as f64 / table.raw_rows().max(1) as f64,
            table.bytes() / 1024,
            first.as_secs_f64() * 1000.0,
            s.kinds,
            range(s.rsp_offsets),
            range(s.rbp_offsets),
            range(s.rbp_saved_at),
            s.span,
        );
        group.bench_function(&name, |b| {
            b.iter(|| UnwindTable::load(&path).map(|t| t.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, tables);
criterion_main!(benches);
