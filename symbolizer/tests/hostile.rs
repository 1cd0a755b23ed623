//! Property tests of the parsers of outside input a root process reads: JIT perf
//! maps (any user writes /tmp), kallsyms and the kernel's tracking records. None
//! may panic, and what they keep stays in proportion to what they were given.

use proptest::prelude::*;
use symbolizer::kallsyms::Kallsyms;
use symbolizer::perfmap::PerfMap;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn perf_maps_never_panic_and_keep_at_most_a_line_each(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        max_lines in 0usize..64,
        addr in any::<u64>(),
    ) {
        let (m, _) = PerfMap::parse_bytes(&bytes, max_lines);
        prop_assert!(m.len() <= max_lines);
        prop_assert!(m.len() <= bytes.len() / 4 + 1);
        let _ = m.resolve(addr);
    }

    #[test]
    fn perf_map_lines_resolve_within_their_range(
        entries in proptest::collection::vec((any::<u64>(), 1u64..1 << 20, "[a-z]{1,8}"), 1..20),
    ) {
        let text: String = entries.iter().map(|(s, n, name)| format!("{s:x} {n:x} {name}\n")).collect();
        let m = PerfMap::parse(&text);
        prop_assert_eq!(m.len(), entries.len());
        for (start, size, _) in &entries {
            // an address at the end of a range (even at u64::MAX) must not wrap
            let _ = m.resolve(start.saturating_add(*size));
            prop_assert!(m.resolve(*start).is_some());
        }
    }

    #[test]
    fn kallsyms_never_panics(text in "(?s).{0,2048}", addr in any::<u64>()) {
        let k = Kallsyms::parse(&text);
        prop_assert!(k.len() <= text.lines().count());
        let _ = k.resolve(addr);
    }

    #[test]
    fn kallsyms_lines_never_panic(
        lines in proptest::collection::vec(("[0-9a-f]{0,17}", "[tTwWdDbB?]", "[ -~]{0,20}"), 0..50),
        addr in any::<u64>(),
    ) {
        let text: String = lines.iter().map(|(a, t, n)| format!("{a} {t} {n}\n")).collect();
        let _ = Kallsyms::parse(&text).resolve(addr);
    }

    #[test]
    fn tracking_records_never_panic(
        kind in 0u32..20,
        misc in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = symbolizer::records::parse(kind, misc, &body);
    }
}
