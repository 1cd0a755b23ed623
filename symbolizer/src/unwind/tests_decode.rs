//! The fast decoder ([`Evaluator::run_bytes`]) against gimli's parser
//! ([`Evaluator::run`]) on generated programs: wherever the fast one finishes,
//! gimli's must finish too with the very same rows; where it gives up, the
//! builder runs gimli's, so giving up is always allowed. Also that the FDE
//! header layout the first pass computes finds the program's bytes.

use gimli::{BaseAddresses, LittleEndian, UnwindSection};
use proptest::prelude::*;

use super::cfi::tests::eh_frame;
use super::eval::{Evaluator, State};
use super::fdes::scan;

/// ULEB128 of `v`, with `pad` redundant continuation bytes (gimli accepts them).
fn uleb(mut v: u64, pad: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 && pad == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
        if v == 0 {
            out.extend(std::iter::repeat_n(0x80, pad - 1));
            out.push(0);
            return out;
        }
    }
}

/// SLEB128 of `v`.
fn sleb(mut v: i64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0) {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// One instruction, mostly well formed, sometimes not (any byte, an
/// over-long number), over registers that matter (rbp 6, rsp 7, ra 16), one
/// that does not (rbx 3) and one gimli refuses (70000).
fn instruction() -> impl Strategy<Value = Vec<u8>> {
    let register = prop_oneof![
        4 => Just(6u64),
        4 => Just(7),
        4 => Just(16),
        4 => Just(3),
        1 => Just(70000)
    ];
    let number = prop_oneof![0u64..64, 0u64..1 << 20, any::<u64>()];
    let signed = prop_oneof![-64i64..64, any::<i64>()];
    prop_oneof![
        8 => (0u8..64).prop_map(|d| vec![0x40 | d]),
        8 => (0u8..64, number.clone(), 0usize..3).prop_map(|(r, n, pad)| {
            let mut v = vec![0x80 | r];
            v.extend(uleb(n, pad));
            v
        }),
        8 => (0u8..64).prop_map(|r| vec![0xc0 | r]),
        8 => (2u8..5, any::<[u8; 4]>()).prop_map(|(op, d)| {
            let n = [1, 2, 4][usize::from(op - 2)];
            let mut v = vec![op];
            v.extend(&d[..n]);
            v
        }),
        8 => (prop_oneof![Just(5u8), Just(0x0c)], register.clone(), number.clone()).prop_map(
            |(op, r, n)| {
                let mut v = vec![op];
                v.extend(uleb(r, 0));
                v.extend(uleb(n, 0));
                v
            }
        ),
        8 => (
            prop_oneof![Just(6u8), Just(7), Just(8), Just(0x0d)],
            register.clone()
        )
            .prop_map(|(op, r)| {
                let mut v = vec![op];
                v.extend(uleb(r, 0));
                v
            }),
        8 => (register.clone(), register.clone()).prop_map(|(a, b)| {
            let mut v = vec![0x09];
            v.extend(uleb(a, 0));
            v.extend(uleb(b, 0));
            v
        }),
        8 => (prop_oneof![Just(0x0eu8), Just(0x2e)], number).prop_map(|(op, n)| {
            let mut v = vec![op];
            v.extend(uleb(n, 0));
            v
        }),
        8 => (prop_oneof![Just(0x11u8), Just(0x12)], register, signed.clone()).prop_map(
            |(op, r, n)| {
                let mut v = vec![op];
                v.extend(uleb(r, 0));
                v.extend(sleb(n));
                v
            }
        ),
        8 => signed.prop_map(|n| {
            let mut v = vec![0x13];
            v.extend(sleb(n));
            v
        }),
        4 => Just(vec![0x0a]),
        2 => Just(vec![0x0b]),
        2 => Just(vec![0x00]),
        // an unsigned number of 10 bytes, left to gimli
        1 => Just(vec![0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ]
}

/// The rows (address, columns) of `program` as one FDE at 0x1000..0x1100, by
/// both decoders: (fast, gimli's), `None` where one failed or gave up.
type Rows = Option<Vec<(u64, State)>>;

fn both(program: &[u8]) -> (Rows, Rows) {
    let bytes = eh_frame(&[(0x1000, 0x100, program.to_vec())]);
    let mut section = gimli::EhFrame::new(&bytes, LittleEndian);
    section.set_address_size(8);
    let bases = BaseAddresses::default().set_eh_frame(0);
    let one = super::cfi::Threads {
        most: 1,
        min_fdes: 1,
    };
    let fdes = scan(&section, Some(&bytes), &bases, &|_| true, one);
    let fde = fdes.list[0];
    let cie = &fdes.cies[fde.cie as usize];
    // the first pass found the program: the bytes given, then padding
    let found = fde.program(Some(&bytes)).expect("the usual layout");
    assert!(found.starts_with(program) && found[program.len()..].iter().all(|&b| b == 0));

    let mut eval = Evaluator::default();
    let mut fast = Vec::new();
    let mut state = cie.state;
    let ran = eval.run_bytes(
        found,
        fde.start,
        cie.factors,
        &cie.state,
        &mut state,
        |a, s| fast.push((a, *s)),
    );
    let fast = ran.is_ok().then_some(fast);

    let parsed = section
        .fde_from_offset(&bases, gimli::EhFrameOffset(fde.offset), |s, b, o| {
            s.cie_from_offset(b, o)
        })
        .unwrap();
    let mut slow = Vec::new();
    let mut state = cie.state;
    let ran = eval.run(
        parsed.instructions(&section, &bases),
        fde.start,
        cie.factors,
        &cie.state,
        &mut state,
        |a, s| slow.push((a, *s)),
    );
    let slow = ran.is_ok().then_some(slow);
    (fast, slow)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_decoder_finishes_only_with_gimlis_rows(
        program in proptest::collection::vec(instruction(), 0..24),
    ) {
        let program: Vec<u8> = program.concat();
        let (fast, slow) = both(&program);
        if let Some(fast) = fast {
            prop_assert_eq!(Some(fast), slow);
        }
    }
}

#[test]
fn the_fast_decoder_takes_what_compilers_emit() {
    use super::cfi::tests::op::*;
    // push rbp; mov rbp,rsp; push rbx; ...; a remembered epilogue; big frames
    let program = [
        vec![advance(1), DEF_CFA_OFFSET, 16, offset(6), 2, advance(3)],
        vec![DEF_CFA_REGISTER, 6, advance(5), offset(3), 3, 0x02, 200],
        vec![REMEMBER_STATE, DEF_CFA, 7, 8, 0xc6, 0x03, 0x34, 0x12],
        vec![RESTORE_STATE, DEF_CFA_OFFSET, 0x80, 0x80, 0x02, 0x2e, 16],
        vec![0x04, 1, 0, 0, 0, 0x13, 0x7e, NOP],
    ]
    .concat();
    let (fast, slow) = both(&program);
    assert!(fast.is_some());
    assert_eq!(fast, slow);
    assert_eq!(fast.map(|r| r.len()), Some(7));
}

#[test]
fn the_fast_decoder_leaves_expressions_and_set_loc_to_gimli() {
    use super::cfi::tests::op::*;
    for program in [
        super::cfi::tests::plt_program(11),
        super::cfi::tests::signal_program(),
        vec![EXPRESSION, 6, 2, 0x76, 0],
        vec![0x01, 0x10, 0x10, 0, 0, 0, 0, 0, 0],
    ] {
        let (fast, slow) = both(&program);
        assert_eq!(fast, None, "{program:x?}");
        assert!(slow.is_some(), "{program:x?}");
    }
}
