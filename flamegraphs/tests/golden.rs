//! Golden files: each writer's output for one fixed profile, compared byte for
//! byte. After an intended change, bless the new output with
//! `FLAMEGRAPHS_BLESS=1 cargo test -p flamegraphs --test golden` and review the diff.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use flamegraphs::speedscope::SpeedscopeOptions;
use flamegraphs::svg::SvgOptions;
use flamegraphs::{
    Format, Frame, FrameKind, Location, Mapping, Meta, Profile, Sample, WriteOptions,
};

/// Two processes, three threads; user, inlined and kernel frames; a mapping with a
/// build id, one without, and an address nothing names.
fn fixed_profile() -> Profile {
    let mut p = Profile::new(Meta {
        target: "command ./demo --fast".into(),
        event: "cpu-clock".into(),
        unit: "ns".into(),
        frequency: Some(99),
        period: None,
        start: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        duration: Duration::from_millis(2500),
        off_cpu: false,
    });
    let demo = p.intern_mapping(Mapping {
        path: "/opt/demo/demo".into(),
        build_id: Some(vec![0xde, 0xad, 0xbe, 0xef]),
        ..Mapping::default()
    });
    let libc = p.intern_mapping(Mapping {
        path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
        build_id: None,
        ..Mapping::default()
    });
    let kernel = p.intern_mapping(Mapping {
        path: "[kernel.kallsyms]".into(),
        build_id: None,
        ..Mapping::default()
    });
    let frame = |p: &mut Profile, name: &str, kind, file: Option<&str>, line| {
        p.intern(Frame {
            name: name.into(),
            kind,
            file: file.map(str::to_string),
            line,
        })
    };
    let start = frame(
        &mut p,
        "__libc_start_call_main",
        FrameKind::User,
        None,
        None,
    );
    let main = frame(
        &mut p,
        "main",
        FrameKind::User,
        Some("src/main.c"),
        Some(40),
    );
    let parse = frame(
        &mut p,
        "parse",
        FrameKind::User,
        Some("src/main.c"),
        Some(12),
    );
    let token = frame(
        &mut p,
        "next_token",
        FrameKind::Inline,
        Some("src/lex.h"),
        Some(7),
    );
    let read = frame(
        &mut p,
        "read_input",
        FrameKind::User,
        Some("src/io.c"),
        Some(3),
    );
    let entry = frame(&mut p, "entry_SYSCALL_64", FrameKind::Kernel, None, None);
    let vfs = frame(&mut p, "vfs_read", FrameKind::Kernel, None, None);
    let loc = |p: &mut Profile, mapping, address, frames: Vec<u32>| {
        p.intern_location(Location {
            mapping: Some(mapping),
            address,
            frames,
        })
    };
    let l_start = loc(&mut p, libc, 0x2724a, vec![start]);
    let l_main = loc(&mut p, demo, 0x1100, vec![main]);
    let l_parse = loc(&mut p, demo, 0x1234, vec![parse, token]);
    let l_read = loc(&mut p, demo, 0x1300, vec![read]);
    let l_entry = loc(&mut p, kernel, 0xffffffff81000100, vec![entry]);
    let l_vfs = loc(&mut p, kernel, 0xffffffff81200200, vec![vfs]);
    let unknown = p.intern(Frame::named("[unknown]", FrameKind::User));
    let l_unknown = p.intern_location(Location {
        mapping: None,
        address: 0x7f00dead,
        frames: vec![unknown],
    });
    let sample = |pid, tid, comm: &str, stack: Vec<u32>, count: u64| Sample {
        pid,
        tid,
        comm: comm.into(),
        stack,
        count,
        weight: count * 10_101_010,
    };
    p.samples = vec![
        sample(100, 100, "demo", vec![l_start, l_main, l_parse], 120),
        sample(100, 101, "demo", vec![l_start, l_main, l_parse], 30),
        sample(
            100,
            101,
            "demo",
            vec![l_start, l_main, l_read, l_entry, l_vfs],
            40,
        ),
        sample(100, 100, "demo", vec![l_start, l_main], 9),
        sample(200, 200, "helper", vec![l_unknown], 1),
    ];
    p
}

fn check(name: &str, format: Format, options: &WriteOptions) -> Vec<u8> {
    let mut out = Vec::new();
    format.write(&fixed_profile(), options, &mut out).unwrap();
    compare(name, out)
}

fn compare(name: &str, out: Vec<u8>) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    if std::env::var_os("FLAMEGRAPHS_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let want = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with FLAMEGRAPHS_BLESS=1)", path.display()));
    assert!(
        out == want,
        "{name} differs from its golden file; if the change is intended, bless it with FLAMEGRAPHS_BLESS=1"
    );
    out
}

#[test]
fn folded() {
    let out = check("profile.folded", Format::Folded, &WriteOptions::default());
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("demo;__libc_start_call_main;main;parse;next_token_[i] 1515151500\n"));
}

#[test]
fn svg() {
    check("profile.svg", Format::Svg, &WriteOptions::default());
    let icicle = WriteOptions {
        svg: SvgOptions {
            title: Some("Where demo spends its time".into()),
            width: Some(800),
            inverted: true,
        },
        ..WriteOptions::default()
    };
    let out = check("profile-icicle.svg", Format::Svg, &icicle);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("width=\"800\"") && text.contains("Where demo spends its time"));
}

#[test]
fn speedscope() {
    check(
        "profile.speedscope.json",
        Format::Speedscope,
        &WriteOptions::default(),
    );
    let per_thread = WriteOptions {
        speedscope: SpeedscopeOptions { per_thread: true },
        ..WriteOptions::default()
    };
    let out = check(
        "profile-threads.speedscope.json",
        Format::Speedscope,
        &per_thread,
    );
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let names: Vec<&str> = doc["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "demo (pid 100, tid 100)",
            "demo (pid 100, tid 101)",
            "helper (pid 200, tid 200)"
        ]
    );
    assert_eq!(doc["profiles"][0]["unit"], "nanoseconds");
}

#[test]
fn pprof() {
    let mut out = Vec::new();
    Format::Pprof
        .write(&fixed_profile(), &WriteOptions::default(), &mut out)
        .unwrap();
    // Compressed bytes depend on which zlib backend the build links (blazesym's
    // features change it in the workspace build), so the golden file is the
    // protobuf inside the gzip stream; its text form is one too, for a readable diff.
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(out.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let raw = compare("profile.pb", raw);
    let decoded = <flamegraphs::pprof::PProfile as prost::Message>::decode(raw.as_slice()).unwrap();
    assert_eq!(decoded, flamegraphs::pprof::to_proto(&fixed_profile()));
    let text = format!("{decoded:#?}\n");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/profile.pprof.txt");
    if std::env::var_os("FLAMEGRAPHS_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(text, std::fs::read_to_string(&path).unwrap());
    // and reads back into the same stacks
    let back = flamegraphs::pprof::read(&out).unwrap();
    let mut folded_back = Vec::new();
    Format::Folded
        .write(&back, &WriteOptions::default(), &mut folded_back)
        .unwrap();
    let mut folded = Vec::new();
    Format::Folded
        .write(&fixed_profile(), &WriteOptions::default(), &mut folded)
        .unwrap();
    assert_eq!(
        String::from_utf8(folded_back).unwrap(),
        String::from_utf8(folded).unwrap()
    );
    assert_eq!(back.meta.frequency, Some(99));
    assert_eq!(back.total_samples(), fixed_profile().total_samples());
    let s = &decoded.string_table;
    let name = |i: i64| s[i as usize].as_str();
    assert_eq!(
        name(decoded.mapping[0].filename),
        "/opt/demo/demo",
        "the main binary comes first"
    );
    assert_eq!(name(decoded.mapping[0].build_id), "deadbeef");
    assert_eq!(name(decoded.sample_type[1].r#type), "cpu");
    assert_eq!(decoded.period, 10_101_010);
    // the inlined function is the first line of its location, its caller the last
    let parse_loc = decoded.location.iter().find(|l| l.line.len() == 2).unwrap();
    let fname = |id: u64| name(decoded.function[id as usize - 1].name);
    assert_eq!(fname(parse_loc.line[0].function_id), "next_token");
    assert_eq!(fname(parse_loc.line[1].function_id), "parse");
}
