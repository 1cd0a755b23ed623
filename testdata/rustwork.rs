//! Rust names for the symbolizer: a method in a module (its mangled name must come
//! out demangled). Runs for SECONDS (default 1).
//! Build: rustc -O -g -C force-frame-pointers=yes
use std::hint::black_box;
use std::time::{Duration, Instant};

mod engine {
    pub struct Engine {
        pub seed: u64,
    }

    impl Engine {
        #[inline(never)]
        pub fn crunch(&self, n: u64) -> u64 {
            let mut x = self.seed;
            for _ in 0..n {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            x
        }
    }
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let e = engine::Engine { seed: 7 };
    let mut sink = 0u64;
    while Instant::now() < end {
        sink = sink.wrapping_add(e.crunch(black_box(1_000_000)));
    }
    black_box(sink);
}
