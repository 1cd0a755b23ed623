#!/usr/bin/env python3
"""What the default call-graph mode (`cfi`: user stacks unwound in BPF with CFI
tables) costs, side by side with frame pointers, DWARF stack copies and perf, in
one run.

1. Time per sample in the BPF program (kernel.bpf_stats_enabled, bpftool): -a at
   999 Hz with both CPUs running testdata/deep.c, a ~20-frame stack through code
   built without frame pointers; cfi, fp and dwarf interleaved, several rounds,
   medians; with the frames per stack each mode recorded.
2. Slowdown of the fixed job (testdata/split.c -n ROUNDS) at 999 Hz alone, under
   flamebpf (cfi and fp), `perf record -g` and `perf record --call-graph dwarf`,
   interleaved run by run; medians.
3. The unwind tables with every process of a busy machine loaded (a cargo build,
   python3, node running): objects, rows, kernel memory of the maps, the slowest
   table build, and flamebpf's RSS.

Run as root: bench/unwind.py [--runs 5] [--rounds 1000] [--out FILE]
"""

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import FLAMEBPF, ROOT, bpf_time_per_sample, prepare, report, sh

MODES = {"cfi": [], "fp": ["--call-graph", "fp"], "dwarf": ["--call-graph", "dwarf"]}


def build_deep(tmp):
    deep = Path(tmp) / "deep"
    sh("gcc", "-O2", "-g", "-fomit-frame-pointer", "-fno-optimize-sibling-calls", "-o", deep,
       ROOT / "testdata" / "deep.c")
    return deep


def bpf_round(deep, tmp, mode):
    """(ns per program run, runs, mean user frames of the deep workload's stacks)."""
    folded = Path(tmp) / f"{mode}.folded"
    ns, cnt = bpf_time_per_sample([[deep, "8"]] * 2, MODES[mode],
                                  "profile_dwarf" if mode == "dwarf" else "profile", folded)
    frames, n = 0, 0
    for line in folded.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        parts = stack.split(";")
        if parts[0] != "deep":
            continue
        user = [f for f in parts[1:] if not f.endswith("_[k]")]
        frames += len(user) * int(count)
        n += int(count)
    return ns, cnt, frames / n if n else 0.0


def bpf_cost(deep, tmp, rounds):
    results = {m: [] for m in MODES}
    for r in range(rounds):
        order = list(MODES)
        random.Random(r).shuffle(order)
        for m in order:
            results[m].append(bpf_round(deep, tmp, m))
        print(f"  bpf round {r + 1}/{rounds} done", file=sys.stderr)
    rows = []
    for m, rs in results.items():
        ns = [x[0] for x in rs]
        rows.append((m, statistics.median(ns), min(ns), max(ns), statistics.median(x[2] for x in rs)))
    return rows


def job_ns(prefix, job, rounds):
    p = subprocess.run([str(a) for a in prefix + [job, "-n", rounds]], capture_output=True, text=True)
    for line in p.stderr.splitlines():
        if line.startswith("split "):
            return int(line.split()[1])
    raise RuntimeError(f"{prefix}: no report\n{p.stderr}")


def slowdown(job, rounds, runs, tmp):
    out = Path(tmp)
    configs = {
        "alone": [],
        "flamebpf (cfi, default)": [FLAMEBPF, "record", "-q", "-F", "999", "-o", out / "f.folded", "--"],
        "flamebpf --call-graph fp": [FLAMEBPF, "record", "-q", "-F", "999", "--call-graph", "fp",
                                     "-o", out / "f.folded", "--"],
        "perf record -g": ["perf", "record", "-q", "-g", "-F", "999", "-o", out / "p.data", "--"],
        "perf record --call-graph dwarf": ["perf", "record", "-q", "--call-graph", "dwarf", "-F", "999",
                                           "-o", out / "p.data", "--"],
    }
    times = {n: [] for n in configs}
    for i in range(runs):
        order = list(configs)
        random.Random(100 + i).shuffle(order)
        for n in order:
            times[n].append(job_ns(configs[n], job, rounds))
        print(f"  slowdown run {i + 1}/{runs} done", file=sys.stderr)
    base = statistics.median(times["alone"])
    return [(n, statistics.median(ts) / 1e9, 100.0 * (statistics.median(ts) - base) / base,
             min(ts) / 1e9, max(ts) / 1e9) for n, ts in times.items()]


def busy_machine(tmp):
    """Tables with a cargo build, python3 and node running."""
    work = []
    crate = Path(tmp) / "busy_crate"
    sh("cargo", "new", "--quiet", "--lib", crate)
    (crate / "src" / "lib.rs").write_text(
        "".join(f"pub fn f{i}(x: u64) -> u64 {{ (0..x).map(|v| v.wrapping_mul({i})).sum() }}\n"
                for i in range(3000)))
    work.append(subprocess.Popen(["cargo", "build", "--quiet", "--release", "--manifest-path",
                                  str(crate / "Cargo.toml"), "--target-dir", str(Path(tmp) / "ct")]))
    work.append(subprocess.Popen(["/usr/bin/python3", "-c",
                                  "import time\nt=time.time()+20\nwhile time.time()<t: sum(range(10000))"]))
    work.append(subprocess.Popen(["node", "-e", "const t=Date.now()+20000; while(Date.now()<t){}"]))
    time.sleep(2)
    p = subprocess.Popen([str(FLAMEBPF), "record", "-v", "-a", "-F", "99", "-d", "10",
                          "-o", str(Path(tmp) / "busy.folded")], stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    maps = json.loads(subprocess.run(["bpftool", "map", "show", "-j"], capture_output=True, text=True,
                                     check=True).stdout)
    rss = 0
    for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) // 1024
    _, err = p.communicate(timeout=120)
    for w in work:
        w.kill()
        w.wait()
    mem = {m["name"]: m.get("bytes_memlock", 0) for m in maps
           if m.get("name") in ("unwind_rows", "unwind_index", "process_maps")}
    tables = next((l for l in err.splitlines() if "unwind tables:" in l), "")
    summary = next((l for l in err.splitlines() if "samples," in l), "")
    return mem, rss, tables, summary, whole_shares(Path(tmp) / "busy.folded")


OUTERMOST = {"_start", "__libc_start_main", "__libc_start_main_impl", "__libc_start_call_main",
             "start_thread", "clone3", "clone"}


def whole_shares(folded):
    """Per command: samples, and the share whose stack starts at a process's or a
    thread's outermost frame."""
    per = {}
    for line in folded.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        user = [f for f in frames[1:] if not f.endswith("_[k]")]
        tot, whole = per.get(frames[0], (0, 0))
        per[frames[0]] = (tot + int(n), whole + (int(n) if OUTERMOST & set(user[:3]) else 0))
    return sorted(per.items(), key=lambda kv: -kv[1][0])[:8]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--bpf-rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job = prepare(tmp)
        deep = build_deep(tmp)
        bpf = bpf_cost(deep, tmp, a.bpf_rounds)
        print(bpf, file=sys.stderr)
        slow = slowdown(job, a.rounds, a.runs, tmp)
        print(slow, file=sys.stderr)
        mem, rss, tables, summary, shares = busy_machine(tmp)
    lines = ["# Unwinding in BPF: cost", "",
             f"`bench/unwind.py --runs {a.runs} --rounds {a.rounds} --bpf-rounds {a.bpf_rounds}`, "
             f"{time.strftime('%Y-%m-%d')}, 2-vCPU VM, cpu-clock (no PMU).", "",
             "## BPF time per sample: -a at 999 Hz, both CPUs in a ~20-frame stack built without frame pointers",
             "", "| mode | ns per sample (median) | min | max | user frames per stack |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {m} | {med:.0f} | {lo:.0f} | {hi:.0f} | {fr:.1f} |" for m, med, lo, hi, fr in bpf]
    lines += ["", f"## Slowdown of the fixed job at 999 Hz ({a.runs} interleaved runs, medians)", "",
              "| configuration | seconds | slowdown | min | max |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {s:.3f} | {d:+.2f}% | {lo:.3f} | {hi:.3f} |" for n, s, d, lo, hi in slow]
    lines += ["", "## Tables with a cargo build, python3 and node running (`record -a -F 99 -d 10 -v`)", "",
              f"- {tables.removeprefix('flamebpf: ')}",
              "- kernel memory of the maps (bpftool memlock): " +
              ", ".join(f"{k} {v / (1 << 20):.1f} MiB" for k, v in sorted(mem.items())),
              f"- flamebpf's RSS while sampling: {rss} MiB",
              f"- summary: {summary.removeprefix('flamebpf: ')}", "",
              "| command | weight (ns) | reaching the outermost frame |", "| --- | --- | --- |"]
    lines += [f"| {c} | {t} | {100.0 * w / t:.1f}% |" for c, (t, w) in shares if t]
    report(lines, a.out)


if __name__ == "__main__":
    main()
