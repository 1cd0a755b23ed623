//! Outside input that flamebpf's readers must survive: arbitrary bytes into the
//! folded and pprof readers (never a panic, memory in proportion to the input),
//! gzip bombs, and values that do not fit pprof's signed integers.

use std::io::Write;

use flamegraphs::{folded, pprof, Frame, FrameKind, Meta, Profile, Sample};
use proptest::prelude::*;

fn meta() -> Meta {
    Meta {
        unit: "samples".into(),
        event: "samples".into(),
        ..Meta::default()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn folded_reader_never_panics_and_stays_in_proportion(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        if let Ok(p) = folded::parse_reader(bytes.as_slice(), meta()) {
            // every frame and sample comes from bytes of the input
            prop_assert!(p.frames().len() <= bytes.len());
            prop_assert!(p.samples.len() <= bytes.len());
        }
    }

    #[test]
    fn folded_lines_round_trip(
        stacks in proptest::collection::vec(
            (proptest::collection::vec("[^;\\s]{1,12}", 1..6), 0u64..u64::MAX / 64),
            1..20,
        )
    ) {
        let text: String = stacks
            .iter()
            .map(|(frames, n)| format!("{} {n}\n", frames.join(";")))
            .collect();
        let p = folded::parse(&text, meta()).unwrap();
        let total: u64 = stacks.iter().map(|(_, n)| n).sum();
        prop_assert_eq!(p.total_weight(), total);
    }

    #[test]
    fn pprof_reader_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        zipped in any::<bool>(),
    ) {
        let input = if zipped { gzip(&bytes) } else { bytes.clone() };
        if let Ok(p) = pprof::read(&input) {
            prop_assert!(p.samples.len() <= bytes.len());
        }
    }

    #[test]
    fn pprof_reader_never_panics_on_mutated_profiles(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
    ) {
        let mut p = Profile::new(Meta::default());
        let a = p.frame_location(Frame::named("main", FrameKind::User));
        let b = p.frame_location(Frame::named("work", FrameKind::Kernel));
        p.samples.push(Sample { pid: 1, tid: 2, comm: "x".into(), stack: vec![a, b], count: 3, weight: 30 });
        let mut raw = Vec::new();
        {
            use prost::Message;
            pprof::to_proto(&p).encode(&mut raw).unwrap();
        }
        for (i, v) in flips {
            let n = raw.len();
            raw[i % n] = v;
        }
        let _ = pprof::read(&raw);
    }
}

#[test]
fn a_gzip_bomb_is_refused_without_expanding_it_whole() {
    // 300 MiB of zeros compresses to about 300 KiB
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..300 {
        gz.write_all(&block).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 8 << 20);
    let t = std::time::Instant::now();
    let e = pprof::read(&bomb).unwrap_err().to_string();
    assert!(e.contains("expands to more than 256 MiB"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn values_past_i64_saturate_in_pprof() {
    let mut p = Profile::new(Meta {
        unit: "events".into(),
        event: "cycles".into(),
        ..Meta::default()
    });
    let a = p.frame_location(Frame::named("main", FrameKind::User));
    p.samples.push(Sample {
        pid: 1,
        tid: 1,
        comm: "x".into(),
        stack: vec![a],
        count: u64::MAX,
        weight: (1 << 63) + 5,
    });
    let proto = pprof::to_proto(&p);
    assert_eq!(proto.sample[0].value, [i64::MAX, i64::MAX]);
}
