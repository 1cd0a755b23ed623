#!/usr/bin/env python3
"""What reading Python frames in BPF costs (issue 12), side by side with py-spy,
in one run.

1. Time per sample in the BPF program (kernel.bpf_stats_enabled, bpftool): -a at
   999 Hz with both CPUs running testdata/python/deep.py 30 frames down, in the
   default mode (Python frames read) and in fp mode (none read), interleaved,
   several rounds, medians; with the Python frames per stack the default mode
   recorded.
2. Slowdown of a fixed Python job (testdata/python/work.py) alone, under
   `flamebpf record` at 99 and 999 Hz and under `py-spy record --nonblocking` at
   99 Hz, interleaved run by run, medians; with each profiler's own CPU.

Run as root: bench/python.py [--runs 5] [--rounds 6000] [--bpf-rounds 3] [--out FILE]
"""

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import FLAMEBPF, ROOT, bpf_time_per_sample, prepare, report, wait_exit

PYTHON = "/usr/bin/python3"
PYSPY = ROOT / "tests" / "clients" / "venv" / "bin" / "py-spy"
DEEP = ROOT / "testdata" / "python" / "deep.py"
WORK = ROOT / "testdata" / "python" / "work.py"


def bpf_round(mode, tmp):
    """(ns per program run, runs, Python frames per stack of the workload)."""
    folded = Path(tmp) / f"{mode}.folded"
    extra = ["--call-graph", "fp"] if mode == "fp" else []
    ns, cnt = bpf_time_per_sample([[PYTHON, DEEP, "12", "30"]] * 2, extra, "profile", folded, settle=0.5)
    frames, n = 0, 0
    for line in folded.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        parts = stack.split(";")
        if not parts[0].startswith("python"):
            continue
        frames += sum(1 for f in parts if f.endswith("_[p]")) * int(count)
        n += int(count)
    return ns, cnt, frames / n if n else 0.0


def bpf_cost(rounds, tmp):
    modes = ["cfi (Python frames)", "fp"]
    results = {m: [] for m in modes}
    for r in range(rounds):
        order = list(modes)
        random.Random(r).shuffle(order)
        for m in order:
            results[m].append(bpf_round("fp" if m == "fp" else "cfi", tmp))
        print(f"  bpf round {r + 1}/{rounds} done", file=sys.stderr)
    return [(m, statistics.median(x[0] for x in rs), min(x[0] for x in rs), max(x[0] for x in rs),
             statistics.median(x[2] for x in rs)) for m, rs in results.items()]


def job(prefix, rounds, tmp):
    """(the job's own ns, the profiler's CPU ns or 0)."""
    if not prefix:
        p = subprocess.run([PYTHON, str(WORK), str(rounds)], capture_output=True, text=True)
        return own_ns(p.stderr), 0
    p = subprocess.Popen([str(a) for a in prefix] + [PYTHON, str(WORK), str(rounds)],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    err = p.stderr.read()
    cpu = wait_exit(p, 600)
    return own_ns(err), cpu


def own_ns(err):
    for line in err.splitlines():
        if line.startswith("work "):
            return int(line.split()[1])
    raise RuntimeError(f"no report from the job:\n{err}")


def slowdown(rounds, runs, tmp):
    out = Path(tmp)
    configs = {
        "alone": [],
        "flamebpf record -F 99": [FLAMEBPF, "record", "-q", "-F", "99", "-o", out / "f.folded", "--"],
        "flamebpf record -F 999": [FLAMEBPF, "record", "-q", "-F", "999", "-o", out / "f.folded", "--"],
    }
    if PYSPY.exists():
        configs["py-spy record -r 99 --nonblocking"] = [
            PYSPY, "record", "-r", "99", "--nonblocking", "-f", "raw", "-o", out / "s.txt", "--"]
    else:
        print(f"py-spy not at {PYSPY} (scripts/setup.sh installs it): left out", file=sys.stderr)
    times = {n: [] for n in configs}
    for i in range(runs):
        order = list(configs)
        random.Random(100 + i).shuffle(order)
        for n in order:
            times[n].append(job(configs[n], rounds, tmp))
        print(f"  slowdown run {i + 1}/{runs} done", file=sys.stderr)
    base = statistics.median(t for t, _ in times["alone"])
    rows = []
    for n, ts in times.items():
        job_s = statistics.median(t for t, _ in ts)
        rows.append((n, job_s / 1e9, 100.0 * (job_s - base) / base, min(t for t, _ in ts) / 1e9,
                     max(t for t, _ in ts) / 1e9, statistics.median(c for _, c in ts) / 1e6))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=6000)
    ap.add_argument("--bpf-rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prepare(tmp)
        bpf = bpf_cost(a.bpf_rounds, tmp)
        print(bpf, file=sys.stderr)
        slow = slowdown(a.rounds, a.runs, tmp)
    version = subprocess.run([PYTHON, "--version"], capture_output=True, text=True).stdout.strip()
    lines = ["# Python frames in BPF: cost", "",
             f"`bench/python.py --runs {a.runs} --rounds {a.rounds} --bpf-rounds {a.bpf_rounds}`, "
             f"{time.strftime('%Y-%m-%d')}, 2-vCPU VM, cpu-clock (no PMU), Debian's {version}.", "",
             "## BPF time per sample: -a at 999 Hz, both CPUs 30 Python frames down (testdata/python/deep.py)",
             "", "| mode | ns per sample (median) | min | max | Python frames per stack |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {m} | {med:.0f} | {lo:.0f} | {hi:.0f} | {fr:.1f} |" for m, med, lo, hi, fr in bpf]
    lines += ["", f"## Slowdown of a fixed Python job ({a.runs} interleaved runs, medians)", "",
              "| configuration | job seconds | slowdown | min | max | CPU ms, profiler and job together |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {s:.3f} | {d:+.2f}% | {lo:.3f} | {hi:.3f} | {c:.0f} |" for n, s, d, lo, hi, c in slow]
    report(lines, a.out)


if __name__ == "__main__":
    main()
