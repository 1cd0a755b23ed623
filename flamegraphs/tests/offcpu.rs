//! Off-CPU stacks in every format: the `[off-cpu]` / `[runqueue]` frames survive
//! folded and pprof round trips, pprof puts their time in an `off_cpu` column of
//! its own, and the SVG colours them apart and says how much time was off the CPU.

use std::time::Duration;

use flamegraphs::pprof::{self, PProfile};
use flamegraphs::{folded, svg, Frame, FrameKind, Meta, Profile, Sample, OFF_CPU, RUNQUEUE};
use prost::Message;

fn profile() -> Profile {
    let mut p = Profile::new(Meta {
        target: "command ./offcpu".into(),
        frequency: Some(99),
        duration: Duration::from_secs(3),
        off_cpu: true,
        ..Meta::default()
    });
    let main = p.frame_location(Frame::named("main", FrameKind::User));
    let sched = p.frame_location(Frame::named("__schedule", FrameKind::Kernel));
    let off = p.frame_location(Frame::named(OFF_CPU, FrameKind::OffCpu));
    let rq = p.frame_location(Frame::named(RUNQUEUE, FrameKind::OffCpu));
    for (stack, count, weight) in [
        (vec![main], 100, 1_000_000_000),
        (vec![main, sched, off], 3, 1_500_000_000),
        (vec![main, sched, rq], 2, 500_000_000),
    ] {
        p.samples.push(Sample {
            pid: 7,
            tid: 8,
            comm: "offcpu".into(),
            stack,
            count,
            weight,
        });
    }
    p
}

#[test]
fn pprof_puts_off_cpu_time_in_its_own_column_and_reads_it_back() {
    let p = profile();
    let proto = pprof::to_proto(&p);
    let types: Vec<&str> = proto
        .sample_type
        .iter()
        .map(|t| proto.string_table[t.r#type as usize].as_str())
        .collect();
    assert_eq!(types, ["samples", "cpu", "off_cpu"]);
    let mut values: Vec<Vec<i64>> = proto.sample.iter().map(|s| s.value.clone()).collect();
    values.sort();
    assert_eq!(
        values,
        [
            vec![0, 0, 500_000_000],
            vec![0, 0, 1_500_000_000],
            vec![100, 1_000_000_000, 0]
        ]
    );
    let back =
        pprof::from_proto(&PProfile::decode(proto.encode_to_vec().as_slice()).unwrap()).unwrap();
    assert!(back.meta.off_cpu);
    assert_eq!(back.off_cpu_weight(), 2_000_000_000);
    assert_eq!(back.total_weight(), 3_000_000_000);
    // without --off-cpu, two columns as before
    let mut on = profile();
    on.meta.off_cpu = false;
    assert_eq!(pprof::to_proto(&on).sample_type.len(), 2);
}

#[test]
fn folded_keeps_the_off_cpu_frames_through_a_round_trip() {
    let p = profile();
    let mut text = Vec::new();
    folded::write(&p, false, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("offcpu;main;__schedule_[k];[off-cpu] 1500000000"),
        "{text}"
    );
    let back = folded::parse(&text, Meta::default()).unwrap();
    assert_eq!(back.off_cpu_weight(), 2_000_000_000);
}

#[test]
fn the_svg_colours_off_cpu_frames_apart_and_its_subtitle_splits_the_time() {
    let mut out = Vec::new();
    svg::write(&profile(), &svg::SvgOptions::default(), false, &mut out).unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(svg::subtitle(&profile()).contains("1.00 s on CPU, 2.00 s off CPU"));
    let frame = |name: &str| {
        let at = s
            .find(&format!("<title>{name} ("))
            .expect("the frame is drawn");
        s[at..at + s[at..].find("</g>").unwrap()].to_string()
    };
    assert!(
        frame("[off-cpu]").contains(svg::OFF_CPU_FILL),
        "{}",
        frame("[off-cpu]")
    );
    assert!(frame("[runqueue]").contains(svg::RUNQUEUE_FILL));
    assert!(!frame("main").contains(svg::OFF_CPU_FILL));
    assert_eq!(s.matches(svg::OFF_CPU_FILL).count(), 1);
}
