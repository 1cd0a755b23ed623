//! Every output format opened by the real tool that reads it: speedscope in
//! headless Chromium, `go tool pprof`, the SVG's search box; and the convert and
//! diff commands.

use std::ffi::OsStr;
use std::path::Path;

use crate::common::{
    client, flamebpf, go_pprof, pprof_raw_totals, record, require_bpf, run, workload, Folded,
};

fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/folded")
        .join(name)
}

#[test]
fn one_capture_into_every_format_read_by_real_clients() {
    require_bpf!();
    let split = workload("split");
    let c = record(
        &[
            "-F",
            "999",
            "-o",
            "{dir}/a.svg",
            "-o",
            "{dir}/a.speedscope.json",
            "-o",
            "{dir}/a.pb.gz",
        ],
        &[split.to_str().unwrap(), "2"],
    );
    let d = c.dir.path();

    // speedscope: valid against its schema, opened by the app, the workload's frames shown
    let out = client(
        "speedscope-check.mjs",
        &[
            d.join("a.speedscope.json").as_os_str(),
            OsStr::new("heavy"),
            OsStr::new("light"),
        ],
    );
    assert!(
        out.status.success(),
        "speedscope rejected the file or showed no workload frames"
    );

    // pprof: go tool pprof reads it; its totals are the folded output's
    let pb = d.join("a.pb.gz");
    let top = go_pprof(&[OsStr::new("-top"), pb.as_os_str()]);
    assert!(top.contains("heavy") && top.contains("light"), "{top}");
    let raw = go_pprof(&[OsStr::new("-raw"), pb.as_os_str()]);
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
    let totals = pprof_raw_totals(&raw);
    assert_eq!(
        totals,
        [c.samples(), c.folded.total()],
        "pprof's totals: samples, then nanoseconds"
    );
    assert!(
        raw.contains("comm:[split]") && raw.contains("pid:["),
        "labels pid, tid, comm"
    );

    // SVG: the search box finds heavy, in about three quarters of the samples
    let out = client(
        "svg-search.mjs",
        &[d.join("a.svg").as_os_str(), OsStr::new("heavy")],
    );
    assert!(out.status.success());
    let pct: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!((60.0..=90.0).contains(&pct), "heavy matched {pct}%");
}

#[test]
fn convert_turns_perf_and_bcc_folded_into_every_format() {
    let dir = tempfile::tempdir().unwrap();
    for (input, frame, total) in [
        ("perf-demo.folded", "compress_block", 999_999_992u64),
        ("bcc-profile.folded", "list_sort", 153),
    ] {
        let out = run(flamebpf()
            .arg("convert")
            .arg(testdata(input))
            .current_dir(dir.path())
            .args([
                "-o",
                "c.svg",
                "-o",
                "c.speedscope.json",
                "-o",
                "c.pb.gz",
                "-o",
                "c.folded",
            ]));
        assert!(out.status.success());
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "convert is quiet"
        );
        let back = Folded::read(&dir.path().join("c.folded"));
        let mut want: Vec<String> = std::fs::read_to_string(testdata(input))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let mut got: Vec<String> = std::fs::read_to_string(dir.path().join("c.folded"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "folded → folded is the identity");
        assert_eq!(back.total(), total);
        let raw = go_pprof(&[OsStr::new("-raw"), dir.path().join("c.pb.gz").as_os_str()]);
        assert_eq!(pprof_raw_totals(&raw), [total]);
        let s = client(
            "speedscope-check.mjs",
            &[
                dir.path().join("c.speedscope.json").as_os_str(),
                OsStr::new(frame),
            ],
        );
        assert!(s.status.success());
        let s = client(
            "svg-search.mjs",
            &[dir.path().join("c.svg").as_os_str(), OsStr::new(frame)],
        );
        assert!(s.status.success());
    }
}

#[test]
fn convert_refuses_a_malformed_line_by_number_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.folded");
    std::fs::write(&input, "a;b 1\na;c 2\na;d two\n").unwrap();
    let out = run(flamebpf()
        .current_dir(dir.path())
        .arg("convert")
        .arg(&input)
        .args(["-o", "x.svg", "-o", "x.pb.gz"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1);
    assert!(
        stderr.contains("in.folded:3: the count \"two\" is not a whole number"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["in.folded"], "nothing written");
}

#[test]
fn diff_draws_grown_frames_red_and_shrunk_frames_blue() {
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before.folded");
    let after = dir.path().join("after.folded");
    std::fs::write(&before, "app;main;grows 10\napp;main;shrinks 90\n").unwrap();
    std::fs::write(&after, "app;main;grows 300\napp;main;shrinks 100\n").unwrap();
    for normalize in [false, true] {
        let mut cmd = flamebpf();
        cmd.current_dir(dir.path())
            .args(["diff", "before.folded", "after.folded", "-o", "d.svg"]);
        if normalize {
            cmd.arg("--normalize");
        }
        let out = run(&mut cmd);
        assert!(out.status.success());
        let svg = std::fs::read_to_string(dir.path().join("d.svg")).unwrap();
        assert!(svg.contains("Differential Flame Graph"));
        // inferno paints growth red (rgb(255,...)) and shrinkage blue (rgb(...,255))
        let fill_of = |name: &str| {
            let i = svg.find(&format!("<title>{name} (")).expect(name);
            let rest = &svg[i..];
            let f = rest.find("fill=\"").expect("a fill") + 6;
            rest[f..rest[f..].find('"').unwrap() + f].to_string()
        };
        assert!(
            fill_of("grows").starts_with("rgb(255,"),
            "{}",
            fill_of("grows")
        );
        if normalize {
            // scaled to the same total, shrinks went from 90% to 25% of the time
            assert!(
                fill_of("shrinks").ends_with(",255)"),
                "{}",
                fill_of("shrinks")
            );
        }
    }
}

#[test]
fn pprof_mappings_carry_the_build_id_read_from_the_file() {
    require_bpf!();
    let w = workload("offcpu");
    let c = record(
        &["-F", "999", "-o", "{dir}/p.pb.gz"],
        &[w.to_str().unwrap(), "wall", "300"],
    );
    let raw = go_pprof(&[OsStr::new("-raw"), c.dir.path().join("p.pb.gz").as_os_str()]);
    let readelf = std::process::Command::new("readelf")
        .arg("-n")
        .arg(&w)
        .output()
        .expect("readelf runs");
    let id = String::from_utf8_lossy(&readelf.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .expect("gcc gives the workload a build id");
    let mappings = raw.split("Mappings").nth(1).expect("-raw lists mappings");
    let line = mappings
        .lines()
        .find(|l| l.contains(w.to_str().unwrap()))
        .unwrap_or_else(|| panic!("a mapping of the workload: {raw}"));
    assert!(line.contains(&id), "{line} lacks {id}");
}

#[test]
fn threads_are_kept_apart_only_when_an_output_shows_them() {
    require_bpf!();
    let w = workload("offcpu");
    // two threads taking turns at a mutex, spinning while they hold it
    let c = record(
        &["-F", "999", "-o", "{dir}/p.pb.gz"],
        &[w.to_str().unwrap(), "mutex", "10"],
    );
    let raw = go_pprof(&[OsStr::new("-raw"), c.dir.path().join("p.pb.gz").as_os_str()]);
    assert!(
        raw.contains("pid:[") && !raw.contains("tid:["),
        "one entry per process and stack"
    );
    let c = record(
        &["-F", "999", "--per-thread", "-o", "{dir}/t.speedscope.json"],
        &[w.to_str().unwrap(), "mutex", "10"],
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.dir.path().join("t.speedscope.json")).unwrap(),
    )
    .unwrap();
    let threads: Vec<String> = json["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .filter(|n| n.starts_with("offcpu"))
        .collect();
    assert!(threads.len() >= 2, "a profile per thread: {threads:?}");
}
