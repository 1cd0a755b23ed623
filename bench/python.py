#!/usr/bin/env python3
"""What reading Python frames in BPF costs (issue 12), side by side with py-spy,
in one run.

1. Time per sample in the BPF program (kernel.bpf_stats_enabled, bpftool): -a at
   999 Hz with both CPUs running testdata/python/deep.py 30 frames down, in the
   default mode (cfi) and in fp mode, both reading Python frames, interleaved,
   several rounds, medians; with the Python frames per stack each recorded, and
   libbpf-tools' profile sampling the same processes in the same seconds as a
   yardstick (bench/libbpf_tools.py builds it; left out when it cannot).
2. Slowdown of a Python job, and each profiler's own CPU: two copies of
   testdata/python/steady.py share the last CPU, the profilers run on CPU 0;
   each profiler attaches to copy A with -p for a phase, in a shuffled order,
   with a bare phase between two. The slowdown is copy A's throughput against
   copy B's in the same seconds on the same CPU (so the host's changes of speed,
   which move one job's throughput by tens of percent, cancel), against the same
   ratio in the bare phases around. "nothing" is the control: a phase with no
   profiler.

Run as root: bench/python.py [--bpf-rounds 3] [--phases 16] [--phase-seconds 2]
[--rates 99,999] [--out FILE]
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import libbpf_tools
from benchlib import FLAMEBPF, ROOT, bpf_time_per_sample, prepare, report, wait_exit

PYTHON = "/usr/bin/python3"
PYSPY = ROOT / "tests" / "clients" / "venv" / "bin" / "py-spy"
DEEP = ROOT / "testdata" / "python" / "deep.py"
STEADY = ROOT / "testdata" / "python" / "steady.py"


def bpf_round(mode, tmp, yardstick):
    """(ns per program run, runs, Python frames per stack of the workload, ns per
    run of the yardstick in the same seconds or NaN)."""
    folded = Path(tmp) / f"{mode}.folded"
    extra = ["--call-graph", "fp"] if mode == "fp" else []
    # one copy per CPU: every sample is of a Python stack, none of the idle task
    got = bpf_time_per_sample([[PYTHON, DEEP, "12", "30"]] * os.cpu_count(), extra, "profile", folded,
                              settle=0.5, yardstick=yardstick)
    ns, cnt = got[:2]
    other = got[2] if yardstick else float("nan")
    frames, n = 0, 0
    for line in folded.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        parts = stack.split(";")
        if not parts[0].startswith("python"):
            continue
        frames += sum(1 for f in parts if f.endswith("_[p]")) * int(count)
        n += int(count)
    return ns, cnt, frames / n if n else 0.0, other


def bpf_cost(rounds, tmp):
    """Per mode: (mode, median ns, min, max, Python frames, the yardstick's median
    ns, the median of the rounds' ratios)."""
    tool, label = libbpf_tools.build("profile")
    yardstick = ([tool, "-F", "999", "-f", "6"], "do_perf_event") if tool else None
    if not tool:
        print(f"libbpf-tools profile left out: {label}", file=sys.stderr)
    modes = ["cfi", "fp"]
    results = {m: [] for m in modes}
    for r in range(rounds):
        order = list(modes)
        random.Random(r).shuffle(order)
        for m in order:
            results[m].append(bpf_round(m, tmp, yardstick))
        print(f"  bpf round {r + 1}/{rounds} done", file=sys.stderr)
    nan = float("nan")
    return [(m, statistics.median(x[0] for x in rs), min(x[0] for x in rs), max(x[0] for x in rs),
             statistics.median(x[2] for x in rs),
             statistics.median(x[3] for x in rs) if yardstick else nan,
             statistics.median(x[0] / x[3] for x in rs) if yardstick else nan)
            for m, rs in results.items()], label


def shared_cpu(phases, seconds, rates, tmp):
    """The slowdown of a Python job under each profiler, and the profiler's own
    CPU: see the module's doc (2). Per configuration: (name, median slowdown in
    %, its quartiles, the profiler's median CPU ms per second, phases)."""
    if os.cpu_count() < 2:
        raise SystemExit("bench/python.py needs two CPUs: one for the jobs, one for the profilers")
    out = Path(tmp)
    last = str(os.cpu_count() - 1)
    jobs = [subprocess.Popen(["taskset", "-c", last, PYTHON, str(STEADY)], stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    reports = [[], []]  # per copy: (monotonic ns, calls)

    def read(i):
        for line in jobs[i].stdout:
            t, n = line.split()[:2]
            reports[i].append((int(t), int(n)))
    for i in range(2):
        threading.Thread(target=read, args=(i,), daemon=True).start()
    pid = str(jobs[0].pid)
    configs = {
        "nothing (control)": ["sleep", str(seconds)],
    }
    for rate in rates:
        configs[f"flamebpf record -p A -F {rate}"] = [FLAMEBPF, "record", "-q", "-p", pid, "-F", str(rate), "-d",
                                                      str(seconds), "-o", out / "t.folded"]
    if PYSPY.exists():
        for rate in rates:
            configs[f"py-spy record -p A -r {rate} --nonblocking"] = [
                PYSPY, "record", "-p", pid, "-r", str(rate), "--nonblocking", "-d", str(seconds), "-f", "raw",
                "-o", out / "t.txt"]
    else:
        print(f"py-spy not at {PYSPY} (scripts/setup.sh installs it): left out", file=sys.stderr)

    def rate(i, t0, t1):
        inside = [(t, n) for t, n in reports[i] if t0 <= t <= t1]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / ((inside[-1][0] - inside[0][0]) / 1e9)

    def phase(argv):
        """A's throughput over B's, from 0.4 s in (the profiler started) to the
        end, and the profiler's CPU ns."""
        t0 = time.monotonic_ns()
        cpu = 0
        if argv:
            p = subprocess.Popen(["taskset", "-c", "0"] + [str(a) for a in argv], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            cpu = wait_exit(p, seconds + 60)
        else:
            time.sleep(seconds)
        t1 = time.monotonic_ns()
        return rate(0, t0 + 400_000_000, t1) / rate(1, t0 + 400_000_000, t1), cpu, (t1 - t0) / 1e9

    try:
        time.sleep(2)
        slow = {n: [] for n in configs}
        cpu = {n: [] for n in configs}
        before = phase(None)[0]
        for i in range(phases):
            order = list(configs)
            random.Random(200 + i).shuffle(order)
            for n in order:
                on, ns, wall = phase(configs[n])
                after = phase(None)[0]
                slow[n].append(100.0 * (1.0 - on / ((before + after) / 2)))
                cpu[n].append(ns / 1e6 / wall)
                before = after
            print(f"  shared-CPU phase {i + 1}/{phases} done", file=sys.stderr)
    finally:
        for j in jobs:
            j.kill()
            j.wait()
    return [(n, statistics.median(slow[n]), quartiles(slow[n]), statistics.median(cpu[n]), len(slow[n]))
            for n in configs]


def quartiles(xs):
    """The first and third quartiles, as (low, high)."""
    if len(xs) < 4:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def use_binaries(a):
    """Points this module and benchlib at the given interpreter and binaries."""
    global PYTHON, FLAMEBPF, PYSPY
    import benchlib
    PYTHON = a.python
    if a.flamebpf:
        FLAMEBPF = benchlib.FLAMEBPF = a.flamebpf.resolve()
    if a.py_spy:
        PYSPY = a.py_spy.resolve()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpf-rounds", type=int, default=3)
    ap.add_argument("--phases", type=int, default=16)
    ap.add_argument("--phase-seconds", type=int, default=2)
    ap.add_argument("--rates", default="99,999", help="sampling rates of the slowdown phases (Hz, comma-separated)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--python", default=PYTHON, help="the CPython to profile (default /usr/bin/python3)")
    ap.add_argument("--flamebpf", type=Path, help="a flamebpf binary to use, with --no-prepare")
    ap.add_argument("--py-spy", type=Path, help="a py-spy binary to use")
    ap.add_argument("--no-prepare", action="store_true",
                    help="neither run setup.sh nor build (another machine, binaries given)")
    a = ap.parse_args()
    use_binaries(a)
    with tempfile.TemporaryDirectory() as tmp:
        if not a.no_prepare:
            prepare(tmp)
        bpf, label = bpf_cost(a.bpf_rounds, tmp) if a.bpf_rounds > 0 else ([], "")
        shared = shared_cpu(a.phases, a.phase_seconds, [int(r) for r in a.rates.split(",")], tmp) if a.phases > 0 else []
    version = subprocess.run([PYTHON, "--version"], capture_output=True, text=True).stdout.strip()
    lines = ["# Python frames in BPF: cost", "",
             f"`bench/python.py {' '.join(sys.argv[1:])}`, {time.strftime('%Y-%m-%d %H:%M')}, "
             f"{os.cpu_count()} CPUs, kernel {os.uname().release}, cpu-clock, {PYTHON} ({version}).", "",
             "## BPF time per sample: -a at 999 Hz, every CPU 30 Python frames down (testdata/python/deep.py, "
             "one copy per CPU)", "",
             f"Yardstick: libbpf-tools' profile ({label or 'not built'}), sampling the same processes at 999 Hz "
             "in the same seconds (kernel stack and frame-pointer user stack, no Python frames); the ratio is "
             "the median of each round's flamebpf ns over profile's.", "",
             "| mode | ns per sample (median) | min | max | Python frames per stack | profile's ns, same seconds "
             "| ratio |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {m} | {med:.0f} | {lo:.0f} | {hi:.0f} | {fr:.1f} | {ys:.0f} | {r:.2f} |"
              for m, med, lo, hi, fr, ys, r in bpf]
    lines += ["", f"## Slowdown of a Python job, and the profiler's own CPU ({a.phases} phases of "
              f"{a.phase_seconds} s per configuration, a bare phase between two)", "",
              "Two copies of testdata/python/steady.py share the last CPU; the profiler runs on CPU 0 and "
              "samples copy A. Slowdown: the median over phases of A's throughput over B's in the phase, against "
              "that ratio in the bare phases before and after (positive: A slower), with the quartiles. The "
              "cpu-clock events of `record -p` fire for B too and end at the target filter; that part of the "
              "cost falls on both copies and is not in the figure. Profiler CPU: its own user and system time "
              "over the phase, start included.", "",
              "| configuration | slowdown of A (quartiles) | profiler CPU, ms per s | phases |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {d:+.2f}% ({q[0]:+.2f} to {q[1]:+.2f}) | {c:.1f} | {k} |" for n, d, q, c, k in shared]
    report(lines, a.out)


if __name__ == "__main__":
    main()
