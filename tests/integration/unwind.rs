//! The default call-graph mode (`cfi`) on real software: Debian's own binaries,
//! built without frame pointers, reach their outermost frame and agree with perf's
//! DWARF unwinding on where time goes; a sample at any instruction of a function
//! with a prologue and an epilogue unwinds; a library loaded with dlopen() after
//! start and a process that execs are whole; the continuous daemon at its defaults
//! is whole too.

use std::collections::HashMap;
use std::path::Path;

use crate::common::{
    capture_lock, flamebpf, perf_samples, reaches_outermost, record, require_bpf, run,
    shared_library, workload, Folded,
};

/// A frame name as both tools can spell it: no `_[k]`/`_[i]` marks, and code that
/// no symbol names (`python3.11+0x…` here, `[unknown]` in perf) as `[unknown]`.
fn normalize(name: &str) -> String {
    let name = name
        .strip_suffix("_[k]")
        .or_else(|| name.strip_suffix("_[i]"))
        .unwrap_or(name);
    if name.contains("+0x") || name.starts_with('[') {
        "[unknown]".into()
    } else {
        name.to_string()
    }
}

/// Each leaf's share of the samples.
fn leaf_shares<'a>(leaves: impl Iterator<Item = (&'a str, u64)>) -> HashMap<String, f64> {
    let mut shares: HashMap<String, f64> = HashMap::new();
    let mut total = 0.0;
    for (leaf, n) in leaves {
        *shares.entry(normalize(leaf)).or_default() += n as f64;
        total += n as f64;
    }
    shares.values_mut().for_each(|v| *v /= total.max(1.0));
    shares
}

/// Half the L1 distance of two leaf distributions (the share of samples that
/// would have to move to another leaf for them to agree), with the leaves under
/// 1% in both counted together: two captures of a few thousand samples disagree
/// on a long tail of rare leaves by chance alone.
fn distance(a: &HashMap<String, f64>, b: &HashMap<String, f64>) -> f64 {
    let keys: std::collections::HashSet<&String> = a.keys().chain(b.keys()).collect();
    let (mut d, mut rare_a, mut rare_b) = (0.0, 0.0, 0.0);
    for k in keys {
        let (x, y) = (*a.get(k).unwrap_or(&0.0), *b.get(k).unwrap_or(&0.0));
        if x < 0.01 && y < 0.01 {
            rare_a += x;
            rare_b += y;
        } else {
            d += (x - y).abs();
        }
    }
    (d + (rare_a - rare_b).abs()) / 2.0
}

/// `comm`'s samples of a capture, checked to reach the outermost frame in at
/// least 95% of them.
fn assert_whole(c: &crate::common::Capture, comm: &str) -> Folded {
    let mine = Folded(
        c.folded
            .0
            .iter()
            .filter(|(s, _)| s[0] == comm)
            .cloned()
            .collect(),
    );
    let whole = mine.count(reaches_outermost);
    let share = whole as f64 / mine.total().max(1) as f64;
    eprintln!("{comm}: {share:.3} of the samples reach the outermost frame");
    assert!(mine.total() > 0, "no samples of {comm}: {}", c.stderr());
    assert!(
        share >= 0.95,
        "{comm}: only {share:.3} reach the outermost frame; {}",
        c.stderr()
    );
    mine
}

/// A shell command that runs Debian's sqlite3 on `sql`, written into `dir`.
fn sqlite3_command(dir: &Path, sql: &str) -> String {
    let path = dir.join("q.sql");
    std::fs::write(&path, sql).unwrap();
    format!(
        "exec /usr/bin/sqlite3 :memory: < {} > /dev/null",
        path.display()
    )
}

/// Records `command` (run through `sh -c`) in the default mode and checks that at
/// least 95% of the samples of `comm` reach the outermost frame, and that the
/// leaves agree with `perf record --call-graph dwarf` of the same command.
fn whole_and_like_perf(comm: &str, command: &str) {
    let c = record(&["-F", "999", "--no-inline"], &["sh", "-c", command]);
    let mine = assert_whole(&c, comm);

    let _lock = capture_lock();
    let dir = tempfile::tempdir().unwrap();
    let Some(perf) = perf_samples(
        &["--call-graph", "dwarf", "-F", "999"],
        &["sh".as_ref(), "-c".as_ref(), command.as_ref()],
        dir.path(),
    ) else {
        return;
    };
    // perf script lists every sample of the command, the shell's too: the perf
    // samples are matched by leaf only, so few shell samples do not matter
    let theirs = leaf_shares(
        perf.iter()
            .filter_map(|s| s.first().map(|l| (l.as_str(), 1u64))),
    );
    // a Python function at the leaf stands where perf sees CPython's evaluation
    // loop (tests/integration/python.rs checks those frames)
    let ours = leaf_shares(mine.0.iter().filter_map(|(s, n)| {
        s.last().map(|l| {
            let l = if l.ends_with("_[p]") {
                "_PyEval_EvalFrameDefault"
            } else {
                l.as_str()
            };
            (l, *n)
        })
    }));
    let d = distance(&ours, &theirs);
    eprintln!("{comm}: leaves differ from perf's by {d:.3}");
    assert!(
        d <= 0.10,
        "{comm}: leaf shares differ from perf's by {d:.3}"
    );
}

/// Whether Debian's `path` is there; scripts/setup.sh installs it, so where BPF
/// tests are required (CI) its absence fails the test instead of skipping it.
fn debian_binary(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    assert!(
        std::env::var_os("FLAMEBPF_REQUIRE_BPF").is_none_or(|v| v != "1"),
        "{path} is not installed: run scripts/setup.sh"
    );
    eprintln!("skipped: {path} is not installed (scripts/setup.sh installs it)");
    false
}

#[test]
fn debian_python3_recursion_is_whole_and_agrees_with_perf() {
    require_bpf!();
    if !debian_binary("/usr/bin/python3") {
        return;
    }
    let script = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nfib(35)\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fib.py");
    std::fs::write(&path, script).unwrap();
    whole_and_like_perf(
        "python3",
        &format!("exec /usr/bin/python3 {}", path.display()),
    );
}

#[test]
fn debian_xz_is_whole_and_agrees_with_perf() {
    require_bpf!();
    if !debian_binary("/usr/bin/xz") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    // incompressible input keeps xz -9 busy in its match finder for a few seconds
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..4_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&input, bytes).unwrap();
    whole_and_like_perf(
        "xz",
        &format!("exec /usr/bin/xz -9 -k -c {} > /dev/null", input.display()),
    );
}

#[test]
fn debian_sqlite3_query_is_whole_and_agrees_with_perf() {
    require_bpf!();
    if !debian_binary("/usr/bin/sqlite3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let command = sqlite3_command(
        dir.path(),
        "CREATE TABLE t(a, b);\n\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 600000)\n\
         INSERT INTO t SELECT x, hex(random()) FROM c;\n\
         SELECT count(*) FROM t a JOIN t b ON a.a = b.a WHERE a.b < b.b || 'x';\n\
         SELECT sum(length(b)) FROM t GROUP BY a % 1000 ORDER BY 1 LIMIT 1;\n",
    );
    whole_and_like_perf("sqlite3", &command);
}

#[test]
fn a_sample_at_any_instruction_of_a_function_with_a_prologue_unwinds() {
    require_bpf!();
    let p = workload("prologue");
    let f = record(&["-F", "999"], &[p.to_str().unwrap(), "2"]).folded;
    let chain = |leaf: &str| {
        f.count(|s| {
            let pos = |n: &str| s.iter().position(|x| x == n);
            s.last().is_some_and(|l| l == leaf)
                && reaches_outermost(s)
                && matches!((pos("main"), pos("loop"), pos("framed")), (Some(a), Some(b), Some(c)) if a < b && b < c)
        })
    };
    // framed's own samples fall on its pushes, calls, pops and ret; callee's
    // under it
    let (in_framed, in_callee) = (
        f.count(|s| s.last().is_some_and(|l| l == "framed")),
        f.count(|s| s.last().is_some_and(|l| l == "callee")),
    );
    let (whole_framed, whole_callee) = (chain("framed"), chain("callee"));
    eprintln!("framed {whole_framed}/{in_framed}, callee {whole_callee}/{in_callee}");
    assert!(in_framed > 0 && in_callee > 0);
    assert!(
        whole_framed as f64 >= 0.99 * in_framed as f64,
        "framed: {whole_framed} of {in_framed} whole"
    );
    assert!(
        whole_callee as f64 >= 0.99 * in_callee as f64,
        "callee: {whole_callee} of {in_callee} whole"
    );
}

#[test]
fn a_library_loaded_with_dlopen_after_start_is_whole() {
    require_bpf!();
    let prog = workload("dlopen");
    let lib = shared_library("hotlib");
    let f = record(
        &["-F", "999"],
        &[prog.to_str().unwrap(), lib.to_str().unwrap(), "2"],
    )
    .folded;
    let hot = f.with_frame("hot_inner");
    let whole = f.count(|s| {
        let pos = |n: &str| s.iter().position(|x| x == n);
        reaches_outermost(s)
            && matches!((pos("main"), pos("call_library"), pos("hot_outer"), pos("hot_inner")), (Some(a), Some(b), Some(c), Some(d)) if a < b && b < c && c < d)
    });
    eprintln!("hot_inner {hot}, whole {whole}");
    assert!(hot > 0);
    assert!(whole as f64 >= 0.95 * hot as f64, "{whole} of {hot}");
}

#[test]
fn a_process_that_execs_is_whole_before_and_after() {
    require_bpf!();
    let execer = workload("execer");
    let omitfp = workload("omitfp");
    let f = record(
        &["-F", "999"],
        &[execer.to_str().unwrap(), "1", omitfp.to_str().unwrap(), "2"],
    )
    .folded;
    let before = f.with_frame("before_exec");
    let after = f.with_frame("leaf_heavy") + f.with_frame("leaf_light");
    let whole = |name: &str| f.count(|s| s.iter().any(|x| x == name) && reaches_outermost(s));
    let whole_after = whole("leaf_heavy") + whole("leaf_light");
    eprintln!(
        "before exec {}/{before}, after exec {whole_after}/{after}",
        whole("before_exec")
    );
    assert!(before > 0 && after > 0);
    assert!(whole("before_exec") as f64 >= 0.95 * before as f64);
    assert!(whole_after as f64 >= 0.95 * after as f64);
}

#[test]
fn continuous_at_its_defaults_gives_whole_stacks() {
    require_bpf!();
    let omitfp = workload("omitfp");
    let prog = workload("dlopen");
    let lib = shared_library("hotlib");
    let store = tempfile::tempdir().unwrap();
    let _lock = capture_lock();
    let mut cmd = flamebpf();
    cmd.arg("continuous")
        .arg("--dir")
        .arg(store.path())
        .arg("--")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "{} 3; {} {} 3",
            omitfp.display(),
            prog.display(),
            lib.display()
        ));
    let out = run(&mut cmd);
    assert!(out.status.success());
    let folded = store.path().join("all.folded");
    let q = run(flamebpf()
        .arg("query")
        .arg("--dir")
        .arg(store.path())
        .arg("-o")
        .arg(&folded));
    assert!(q.status.success());
    let f = Folded::parse(&std::fs::read_to_string(&folded).unwrap());
    let mine = Folded(
        f.0.iter()
            .filter(|(s, _)| s[0] == "omitfp" || s[0] == "dlopen")
            .cloned()
            .collect(),
    );
    let whole = mine.count(reaches_outermost);
    eprintln!("continuous: {whole} of {} whole", mine.total());
    assert!(mine.total() > 0);
    assert!(
        whole as f64 >= 0.95 * mine.total() as f64,
        "{whole} of {} whole",
        mine.total()
    );
}

#[test]
fn dwarf_mode_names_each_sample_in_the_address_space_it_was_taken_in() {
    require_bpf!();
    // Before the exec, execer's image is mapped where omitfp's is after it: a
    // sample named against the newest mappings would get omitfp's names.
    let execer = workload("execer");
    let omitfp = workload("omitfp");
    let f = record(
        &["-F", "999", "--call-graph", "dwarf"],
        &[execer.to_str().unwrap(), "1", omitfp.to_str().unwrap(), "1"],
    )
    .folded;
    let before = f.with_frame("before_exec");
    let after = f.with_frame("leaf_heavy") + f.with_frame("leaf_light");
    let whole_before = f.count(|s| s.iter().any(|x| x == "before_exec") && reaches_outermost(s));
    eprintln!("before exec {whole_before}/{before}, after exec {after}");
    assert!(before > 0 && after > 0, "both images named");
    assert!(whole_before as f64 >= 0.9 * before as f64);
}

#[test]
fn dwarf_mode_copies_a_stack_up_to_the_end_of_its_mapping() {
    require_bpf!();
    // Debian's sqlite3 runs with its stack's end between 8 and 16 KiB above the
    // sampled stack pointer: a copy that halves on failure lost its outermost
    // frames at the default 16 KiB.
    if !debian_binary("/usr/bin/sqlite3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let command = sqlite3_command(
        dir.path(),
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000)\n\
         SELECT count(*), sum(x % 7), max(length(hex(x))) FROM c;\n",
    );
    let c = record(
        &["-F", "999", "--call-graph", "dwarf"],
        &["sh", "-c", &command],
    );
    assert_whole(&c, "sqlite3");
}

#[test]
fn record_p_builds_tables_for_its_target_alone() {
    require_bpf!();
    let lock = capture_lock();
    let deep = workload("deep");
    let mut target = std::process::Command::new(&deep)
        .args(["5", "10"])
        .spawn()
        .unwrap();
    let pid = target.id().to_string();
    // a process that starts during the capture and maps libraries of its own:
    // tracking sees it, the capture does not sample it
    let bystander = std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_millis(1200));
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import hashlib, json, time; time.sleep(1)"])
            .status()
    });
    let c = crate::common::record_holding(&lock, &["-v", "-p", &pid, "-d", "3"], &[]);
    let _ = target.kill();
    let _ = target.wait();
    assert!(bystander.join().unwrap().unwrap().success());
    let stderr = c.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("unwind tables:"))
        .unwrap_or_else(|| panic!("-v states the tables: {stderr}"));
    // deep maps itself, the C library, the loader and the vDSO; python3 and its
    // modules would add a dozen more
    let built: u32 = line
        .split(" built")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("tables built, in {line}"));
    assert!(
        built <= 6,
        "tables built for the target's objects alone: {line}"
    );
    assert!(
        c.folded.count(|s| s[0] == "deep" && reaches_outermost(s)) > 0,
        "the target is unwound whole"
    );
}

#[test]
fn tables_past_the_first_chunk_of_rows_unwind_rustc_and_llvm_whole() {
    require_bpf!();
    // rustc maps librustc_driver and LLVM, 2.9 million rows of tables: the
    // tables reach the second and third 1M-row chunks of unwind_rows, made as
    // they arrive (bpf/unwind.h)
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("many.rs");
    let mut code = String::from("fn main() { let mut s = 0u64;\n");
    for i in 0..400 {
        code += &format!("    s = s.wrapping_add(f{i}(s));\n");
    }
    code += "    println!(\"{s}\");\n}\n";
    for i in 0..400 {
        code += &format!(
            "#[inline(never)] fn f{i}(x: u64) -> u64 {{ let v: Vec<u64> = (0..x % 7 + {i}).map(|y| y * {i} + 1).collect(); v.iter().sum::<u64>() ^ {i} }}\n"
        );
    }
    std::fs::write(&src, code).unwrap();
    let out = dir.path().join("many");
    let c = record(
        &["-v", "-F", "499"],
        &[
            "rustc",
            "-O",
            "-o",
            out.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    let stderr = c.stderr();
    let rows: u64 = stderr
        .split(" rows (")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("-v counts the rows: {stderr}"));
    assert!(rows > 2 << 20, "{rows} rows: more than two chunks");
    assert!(stderr.contains(" 0 without room"), "{stderr}");
    let f = &c.folded;
    let llvm = |s: &[String]| s.iter().any(|fr| fr.to_lowercase().contains("llvm"));
    let in_llvm = f.count(llvm);
    let whole = f.count(|s| llvm(s) && reaches_outermost(s));
    eprintln!("rows {rows}; LLVM samples {in_llvm}, reaching their outermost frame {whole}");
    assert!(in_llvm > 0, "rustc's samples in LLVM");
    assert!(
        whole as f64 >= 0.9 * in_llvm as f64,
        "{whole} of {in_llvm} LLVM samples reach their outermost frame"
    );
}
