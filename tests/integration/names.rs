//! Output a person can read: short C++ and Rust names, the same in every format
//! (`--full-names` keeps the rest); SVG labels that keep the name's beginning; and
//! a frame-pointer summary that says how many stacks broke.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;

use crate::common::{client, flamebpf, go_pprof, record, require_bpf, run, workload, Capture};

/// The folded output's frame names (the command name, the root, among them),
/// markers (`_[k]`, `_[i]`) taken off as the SVG and pprof writers take them off.
fn folded_names(c: &Capture) -> BTreeSet<String> {
    c.folded
        .0
        .iter()
        .flat_map(|(s, _)| s.iter())
        .map(|f| {
            f.strip_suffix("_[k]")
                .or_else(|| f.strip_suffix("_[i]"))
                .or_else(|| f.strip_suffix("_[j]"))
                .unwrap_or(f)
                .to_string()
        })
        .collect()
}

/// The frame names of an SVG: each frame's tooltip, less its `(N ns, P%)` tail.
fn svg_names(path: &Path) -> BTreeSet<String> {
    let svg = std::fs::read_to_string(path).unwrap();
    svg.split("<g><title>")
        .skip(1)
        .filter_map(|g| {
            let title = &g[..g.find("</title>")?];
            let name = &title[..title.rfind(" (")?];
            Some(
                name.replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&amp;", "&"),
            )
        })
        .filter(|n| n != "all")
        .collect()
}

/// The function names of a pprof file as it stores them: `go tool pprof -raw`
/// lists each location's functions as "N: 0xADDR M=N NAME FILE:LINE s=N", inlined
/// ones on lines of their own; where pprof shortens a C++ name for display it
/// gives the stored one after `s=N`, in parentheses.
fn pprof_names(path: &Path) -> BTreeSet<String> {
    let raw = go_pprof(&[OsStr::new("-raw"), path.as_os_str()]);
    let locations = raw.split("\nLocations\n").nth(1).unwrap_or("");
    let locations = locations.split("\nMappings").next().unwrap_or("");
    locations
        .lines()
        .filter_map(|l| {
            let l = match l.split_once(" M=") {
                Some((_, rest)) => rest.split_once(' ')?.1,
                // a location in no mapping (an address nothing maps): "N: 0xADDR name"
                None => l.trim_start().splitn(3, ' ').nth(2)?,
            };
            let (shown, stored) = l.rsplit_once(" s=")?;
            if let Some(stored) = stored.split_once('(').map(|(_, s)| s) {
                return Some(stored.strip_suffix(')')?.to_string());
            }
            let name = shown.rsplit_once(' ')?.0;
            Some(name.strip_suffix(" [kernel]").unwrap_or(name).to_string())
        })
        .collect()
}

fn capture(flags: &[&str], command: &[&str]) -> Capture {
    let mut all = vec![
        "-q",
        "-F",
        "999",
        "-o",
        "{dir}/a.svg",
        "-o",
        "{dir}/a.pb.gz",
    ];
    all.extend_from_slice(flags);
    record(&all, command)
}

/// A frame still carrying a parameter list: `name(…)`, `(anonymous namespace)` aside.
fn has_parameters(name: &str) -> bool {
    name.replace("(anonymous namespace)", "").contains('(')
}

#[test]
fn cxx_names_are_short_and_the_same_in_folded_svg_and_pprof() {
    require_bpf!();
    let cxx = workload("cxxwork");
    let c = capture(&[], &[cxx.to_str().unwrap(), "1"]);
    let folded = folded_names(&c);
    for name in [
        "demo::Worker<unsigned long>::spin",
        "demo::burn",
        "demo::twice<unsigned long>",
        "with_inlined",
    ] {
        assert!(folded.contains(name), "{name} missing from {folded:?}");
    }
    let with_params: Vec<&String> = folded.iter().filter(|n| has_parameters(n)).collect();
    assert!(
        with_params.is_empty(),
        "parameter lists left: {with_params:?}"
    );

    let svg = svg_names(&c.dir.path().join("a.svg"));
    assert_eq!(svg, folded, "the SVG names what the folded file names");
    let pprof = pprof_names(&c.dir.path().join("a.pb.gz"));
    for name in [
        "demo::Worker<unsigned long>::spin",
        "demo::burn",
        "demo::twice<unsigned long>",
    ] {
        assert!(
            pprof.contains(name),
            "{name} missing from pprof's {pprof:?}"
        );
    }
    let unknown: Vec<&String> = pprof.difference(&folded).collect();
    assert!(
        unknown.is_empty(),
        "pprof names the folded file lacks: {unknown:?}"
    );
}

#[test]
fn full_names_keep_parameter_lists_and_return_types() {
    require_bpf!();
    let cxx = workload("cxxwork");
    let c = capture(&["--full-names"], &[cxx.to_str().unwrap(), "1"]);
    let folded = folded_names(&c);
    for name in [
        "demo::burn(double)",
        "demo::burn(unsigned long)",
        "unsigned long demo::twice<unsigned long>(unsigned long)",
    ] {
        assert!(folded.contains(name), "{name} missing from {folded:?}");
    }
    assert_eq!(svg_names(&c.dir.path().join("a.svg")), folded);
}

#[test]
fn rust_names_have_no_hash_unless_full() {
    require_bpf!();
    let rust = workload("rustwork");
    let is_hash = |n: &str| {
        n.rsplit_once("::h")
            .is_some_and(|(_, h)| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let c = capture(&[], &[rust.to_str().unwrap(), "1"]);
    let short = folded_names(&c);
    assert!(
        short.contains("rustwork::engine::Engine::crunch"),
        "{short:?}"
    );
    let hashed: Vec<&String> = short.iter().filter(|n| is_hash(n)).collect();
    assert!(hashed.is_empty(), "hashes left: {hashed:?}");
    assert_eq!(svg_names(&c.dir.path().join("a.svg")), short);

    let c = capture(&["--full-names"], &[rust.to_str().unwrap(), "1"]);
    let full = folded_names(&c);
    assert!(
        full.iter()
            .any(|n| n.starts_with("rustwork::engine::Engine::crunch::h") && is_hash(n)),
        "{full:?}"
    );
}

/// Labels as Chromium shows them, after inferno's script has fitted them to their
/// boxes: each is the beginning of its function's name.
#[test]
fn svg_labels_keep_the_beginning_of_long_names() {
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("long.folded");
    let arg = "std::function<void (node::Environment*, node::InitializationResult const&)>";
    let long = format!("node::LoadEnvironment<{arg}, {arg}, {arg}>::operator()");
    let text = format!(
        "node;_start;main;{long};node::Realm::ExecuteBootstrapper<{arg}>::run 70\n\
         node;_start;main;{long};v8::internal::Execution::Call<{arg}> 25\n\
         node;_start;main;uv_run 5\n"
    );
    std::fs::write(&folded, text).unwrap();
    let svg = dir.path().join("long.svg");
    let out = run(flamebpf().arg("convert").arg(&folded).arg("-o").arg(&svg));
    assert!(out.status.success());
    let shot = dir.path().join("long.png");
    let out = client("svg-labels.mjs", &[svg.as_os_str(), shot.as_os_str()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "a label shows no name's beginning: {said}"
    );
    let cut: u32 = said
        .split("cut ")
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        cut >= 2,
        "the long names were cut (and kept their beginnings): {said}"
    );
}

#[test]
fn frame_pointer_summary_says_how_many_stacks_broke() {
    require_bpf!();
    let omitfp = workload("omitfp");
    let c = record(
        &["-F", "999", "--call-graph", "fp"],
        &[omitfp.to_str().unwrap(), "1"],
    );
    let line = c.stderr();
    let broken = line
        .split(", broken ")
        .nth(1)
        .unwrap_or_else(|| panic!("no broken stacks counted: {line}"));
    let share: f64 = broken
        .split(['(', '%'])
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no share: {line}"));
    assert!(
        share > 50.0,
        "most stacks of a program without frame pointers break: {line}"
    );
    assert!(line.contains("--call-graph cfi"), "{line}");

    // the same program built with frame pointers: its stacks reach _start
    let split = workload("split");
    let c = record(
        &["-F", "999", "--call-graph", "fp"],
        &[split.to_str().unwrap(), "1"],
    );
    let line = c.stderr();
    assert!(
        line.contains("thread's start (_start, start_thread)"),
        "{line}"
    );
    let whole = line
        .split("start_thread) ")
        .nth(1)
        .and_then(|s| s.split_once(" of "))
        .and_then(|(w, rest)| {
            let all: u64 = rest.split([',', ';']).next()?.trim().parse().ok()?;
            Some((w.parse::<u64>().ok()?, all))
        })
        .unwrap_or_else(|| panic!("no count of whole stacks: {line}"));
    assert!(
        whole.0 * 100 >= whole.1 * 95,
        "a program with frame pointers is walked whole: {line}"
    );
    // the default mode counts its walks its own way, not with this figure
    let c = record(&["-F", "999"], &[omitfp.to_str().unwrap(), "1"]);
    assert!(!c.stderr().contains("thread's start"), "{}", c.stderr());
}
