#!/usr/bin/env python3
"""What reading Python frames in BPF costs (issue 12), side by side with py-spy,
in one run.

1. Time per sample in the BPF program (kernel.bpf_stats_enabled, bpftool): -a at
   999 Hz with both CPUs running testdata/python/deep.py 30 frames down, in the
   default mode (cfi) and in fp mode, both reading Python frames, interleaved,
   several rounds, medians; with the Python frames per stack each recorded.
2. Slowdown of a fixed Python job (testdata/python/work.py) alone, under
   `flamebpf record` at 99 and 999 Hz and under `py-spy record --nonblocking` at
   99 Hz, interleaved run by run, medians of paired ratios; with each profiler's
   own CPU.
3. Slowdown of a Python job that runs throughout (testdata/python/steady.py)
   while each profiler attaches with -p for a phase and detaches: throughput in
   each phase against the bare phases around it.

Run as root: bench/python.py [--runs 5] [--rounds 6000] [--bpf-rounds 3] [--phases 10]
[--phase-seconds 4] [--out FILE]
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

from benchlib import FLAMEBPF, ROOT, bpf_time_per_sample, prepare, report, wait_exit

PYTHON = "/usr/bin/python3"
PYSPY = ROOT / "tests" / "clients" / "venv" / "bin" / "py-spy"
DEEP = ROOT / "testdata" / "python" / "deep.py"
WORK = ROOT / "testdata" / "python" / "work.py"
STEADY = ROOT / "testdata" / "python" / "steady.py"


def bpf_round(mode, tmp):
    """(ns per program run, runs, Python frames per stack of the workload)."""
    folded = Path(tmp) / f"{mode}.folded"
    extra = ["--call-graph", "fp"] if mode == "fp" else []
    # one copy per CPU: every sample is of a Python stack, none of the idle task
    ns, cnt = bpf_time_per_sample([[PYTHON, DEEP, "12", "30"]] * os.cpu_count(), extra, "profile", folded,
                                  settle=0.5)
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
    modes = ["cfi", "fp"]
    results = {m: [] for m in modes}
    for r in range(rounds):
        order = list(modes)
        random.Random(r).shuffle(order)
        for m in order:
            results[m].append(bpf_round(m, tmp))
        print(f"  bpf round {r + 1}/{rounds} done", file=sys.stderr)
    return [(m, statistics.median(x[0] for x in rs), min(x[0] for x in rs), max(x[0] for x in rs),
             statistics.median(x[2] for x in rs)) for m, rs in results.items()]


def job(prefix, rounds, tmp):
    """(the job's own wall ns, its own CPU ns, the profiler's and job's CPU ns or 0).
    The job runs on the last CPU only, so that it moves less."""
    pin = ["taskset", "-c", str(os.cpu_count() - 1)]
    if not prefix:
        p = subprocess.run(pin + [PYTHON, str(WORK), str(rounds)], capture_output=True, text=True)
        return own_ns(p.stderr) + (0,)
    p = subprocess.Popen([str(a) for a in prefix] + pin + [PYTHON, str(WORK), str(rounds)],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    err = p.stderr.read()
    cpu = wait_exit(p, 600)
    return own_ns(err) + (cpu,)


def own_ns(err):
    for line in err.splitlines():
        if line.startswith("work "):
            wall, cpu = line.split()[1:3]
            return int(wall), int(cpu)
    raise RuntimeError(f"no report from the job:\n{err}")


def slowdown(rounds, runs, tmp):
    """Per configuration: the job's median wall and CPU seconds, and its slowdown
    as the median over runs of its time against the unprofiled job's in the same
    run (each run has every configuration, in a shuffled order: pairs within a
    run share the host's mood, which swings the job's time by tens of percent
    across the hour)."""
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
    rows = []
    for n, ts in times.items():
        paired = lambda k: [100.0 * (t[k] - a[k]) / a[k] for t, a in zip(ts, times["alone"])]  # noqa: E731
        wall, cpu = paired(0), paired(1)
        rows.append((n, statistics.median(t[0] for t in ts) / 1e9, statistics.median(t[1] for t in ts) / 1e9,
                     statistics.median(wall), quartiles(wall), statistics.median(cpu), quartiles(cpu),
                     statistics.median(t[2] for t in ts) / 1e6))
    return rows


def toggled(phases, seconds, tmp):
    """The slowdown of a job that runs throughout (testdata/python/steady.py,
    pinned to the last CPU) while each profiler attaches to it with -p for
    `seconds` and detaches, phase after phase, with a phase of nothing between
    two: per profiler, the median over its phases of the job's throughput against
    the mean of the bare phases just before and after, with the quartiles. Pairs
    seconds apart share the host's mood far better than whole runs do."""
    out = Path(tmp)
    job = subprocess.Popen(["taskset", "-c", str(os.cpu_count() - 1), PYTHON, str(STEADY)],
                           stdout=subprocess.PIPE, text=True)
    reports = []  # (monotonic ns, calls)

    def read():
        for line in job.stdout:
            t, n = line.split()
            reports.append((int(t), int(n)))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    pid = str(job.pid)
    profilers = {
        "flamebpf record -p PID -F 99": [FLAMEBPF, "record", "-q", "-p", pid, "-F", "99", "-d", str(seconds),
                                         "-o", out / "t.folded"],
        "flamebpf record -p PID -F 999": [FLAMEBPF, "record", "-q", "-p", pid, "-F", "999", "-d", str(seconds),
                                          "-o", out / "t.folded"],
    }
    if PYSPY.exists():
        profilers["py-spy record -p PID -r 99 --nonblocking"] = [
            PYSPY, "record", "-p", pid, "-r", "99", "--nonblocking", "-d", str(seconds), "-f", "raw",
            "-o", out / "t.txt"]

    def rate(t0, t1):
        inside = [(t, n) for t, n in reports if t0 <= t <= t1]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / ((inside[-1][0] - inside[0][0]) / 1e9)

    def bare():
        t0 = time.monotonic_ns()
        time.sleep(seconds)
        return rate(t0 + 300_000_000, time.monotonic_ns())

    try:
        time.sleep(2)
        ratios = {n: [] for n in profilers}
        before = bare()
        for i in range(phases):
            order = list(profilers)
            random.Random(200 + i).shuffle(order)
            for n in order:
                t0 = time.monotonic_ns()
                p = subprocess.Popen([str(a) for a in profilers[n]], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                p.wait(timeout=120)
                # from 0.5 s in (the profiler started) to its exit
                on = rate(t0 + 500_000_000, time.monotonic_ns())
                after = bare()
                ratios[n].append(100.0 * (on / ((before + after) / 2) - 1.0))
                before = after
            print(f"  toggled phase {i + 1}/{phases} done", file=sys.stderr)
    finally:
        job.kill()
        job.wait()
    return [(n, -statistics.median(r), quartiles([-x for x in r]), len(r)) for n, r in ratios.items()]


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
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=6000)
    ap.add_argument("--bpf-rounds", type=int, default=3)
    ap.add_argument("--phases", type=int, default=10)
    ap.add_argument("--phase-seconds", type=int, default=4)
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
        bpf = bpf_cost(a.bpf_rounds, tmp)
        print(bpf, file=sys.stderr)
        slow = slowdown(a.rounds, a.runs, tmp) if a.runs > 0 else []
        tog = toggled(a.phases, a.phase_seconds, tmp) if a.phases > 0 else []
    version = subprocess.run([PYTHON, "--version"], capture_output=True, text=True).stdout.strip()
    lines = ["# Python frames in BPF: cost", "",
             f"`bench/python.py {' '.join(sys.argv[1:])}`, {time.strftime('%Y-%m-%d %H:%M')}, "
             f"{os.cpu_count()} CPUs, kernel {os.uname().release}, cpu-clock, {PYTHON} ({version}).", "",
             "## BPF time per sample: -a at 999 Hz, every CPU 30 Python frames down (testdata/python/deep.py, "
             "one copy per CPU)",
             "", "| mode | ns per sample (median) | min | max | Python frames per stack |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {m} | {med:.0f} | {lo:.0f} | {hi:.0f} | {fr:.1f} |" for m, med, lo, hi, fr in bpf]
    lines += ["", f"## Slowdown of a fixed Python job ({a.runs} runs, each with every configuration in a "
              "shuffled order; the job pinned to the last CPU)", "",
              "Slowdown: the median over runs of the job's time against the unprofiled job's in the same run, "
              "with the quartiles; wall time, and the job's own CPU time (CLOCK_PROCESS_CPUTIME_ID).", "",
              "| configuration | job wall s | job CPU s | slowdown, wall (quartiles) | slowdown, job CPU (quartiles) "
              "| CPU ms, profiler and job together |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {w:.3f} | {c:.3f} | {dw:+.2f}% ({qw[0]:+.2f} to {qw[1]:+.2f}) | "
              f"{dc:+.2f}% ({qc[0]:+.2f} to {qc[1]:+.2f}) | {cpu:.0f} |"
              for n, w, c, dw, qw, dc, qc, cpu in slow]
    lines += ["", f"## Slowdown of a running Python job while a profiler attaches ({a.phases} phases of "
              f"{a.phase_seconds} s each, a bare phase between two)", "",
              "testdata/python/steady.py runs throughout, pinned to the last CPU, and reports its calls every "
              "100 ms; each profiler attaches with -p for a phase, in a shuffled order. Slowdown: the median over "
              "phases of the job's throughput against the mean of the bare phases before and after (positive: "
              "slower), with the quartiles.", "",
              "| profiler | slowdown (quartiles) | phases |", "| --- | --- | --- |"]
    lines += [f"| {n} | {d:+.2f}% ({q[0]:+.2f} to {q[1]:+.2f}) | {k} |" for n, d, q, k in tog]
    report(lines, a.out)


if __name__ == "__main__":
    main()
