//! Rust names for the symbolizer: a method in a module (its mangled name must come
//! out demangled) and a function the compiler always inlines into it (it must show
//! as an inlined frame, with the right file and line). Runs for SECONDS (default 1).
//! Build: rustc -O -g -C force-frame-pointers=yes
use std::hint::black_box;
use std::time::{Duration, Instant};

mod engine {
    #[inline(always)]
    fn mix(x: u64) -> u64 {
        std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1)) // MIX BODY
    }

    pub struct Engine {
        pub seed: u64,
    }

    impl Engine {
        #[inline(never)]
        pub fn crunch(&self, n: u64) -> u64 {
            let mut x = self.seed;
            for _ in 0..n {
                x = mix(x); // CALLS MIX
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
