#!/usr/bin/env python3
"""Measures what flamebpf costs, side by side with perf, in one run.

1. Slowdown of a fixed CPU-bound job (testdata/split.c -n ROUNDS) profiled at 99 and
   999 Hz by `flamebpf record` and by `perf record -g`, against the job alone;
   the configurations are interleaved run by run and medians compared.
2. flamebpf's own CPU time while it samples (utime+stime of its process between
   two points of a capture), beside perf record's, both sampling the whole machine.
3. Time per sample spent in the BPF program (kernel.bpf_stats_enabled, bpftool).
4. From the end of the job to the SVG on disk: flamebpf against
   perf record + perf script | inferno-collapse-perf | inferno-flamegraph.

Run as root from anywhere: bench/overhead.py [--runs N] [--rounds N] [--out FILE]
It runs scripts/setup.sh (with bpftool), builds flamebpf (release), compiles the
job, and installs inferno's command line tools into target/bench-tools when they
are missing.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import FLAMEBPF, ROOT, cpu_ns, report, sh
from benchlib import prepare as prepare_common

TOOLS = ROOT / "target" / "bench-tools"


def prepare(tmp):
    job = prepare_common(tmp)
    if not (TOOLS / "bin" / "inferno-flamegraph").exists():
        print("installing inferno's tools into target/bench-tools ...", file=sys.stderr)
        sh("cargo", "install", "--quiet", "--root", TOOLS, "inferno")
    return job


def job_report(stderr):
    """(ns the work took, CLOCK_REALTIME ns when it ended) from `split -n`'s stderr."""
    for line in stderr.splitlines():
        if line.startswith("split "):
            _, took, end = line.split()
            return int(took), int(end)
    raise RuntimeError("the job printed no report:\n" + stderr)


def run_job(prefix, job, rounds):
    p = subprocess.run([str(a) for a in prefix + [job, "-n", rounds]], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{prefix} failed:\n{p.stderr}")
    took, end = job_report(p.stderr)
    return took, end, time.time_ns()


def slowdown(job, rounds, runs, tmp):
    out = Path(tmp)
    configs = {
        "alone": [],
        "flamebpf 99 Hz": [FLAMEBPF, "record", "-q", "-F", "99", "-o", out / "f.folded", "--"],
        "perf -g 99 Hz": ["perf", "record", "-q", "-g", "-F", "99", "-o", out / "p.data", "--"],
        "flamebpf 999 Hz": [FLAMEBPF, "record", "-q", "-F", "999", "-o", out / "f.folded", "--"],
        "perf -g 999 Hz": ["perf", "record", "-q", "-g", "-F", "999", "-o", out / "p.data", "--"],
    }
    times = {name: [] for name in configs}
    for i in range(runs):
        order = list(configs)
        random.Random(i).shuffle(order)
        for name in order:
            took, _, _ = run_job(configs[name], job, rounds)
            times[name].append(took)
        print(f"  run {i + 1}/{runs} done", file=sys.stderr)
    base = statistics.median(times["alone"])
    rows = []
    for name, ts in times.items():
        m = statistics.median(ts)
        rows.append((name, m / 1e9, 100.0 * (m - base) / base, min(ts) / 1e9, max(ts) / 1e9))
    return rows


def own_cpu(cmd, window=(2.0, 10.0), total=12.0):
    """CPU time of the profiler's own process between two instants of a capture, as
    a percentage of one core."""
    p = subprocess.Popen([str(a) for a in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(window[0])
    a = cpu_ns(p.pid)
    time.sleep(window[1] - window[0])
    b = cpu_ns(p.pid)
    p.wait(timeout=total + 60)
    return 100.0 * (b - a) / ((window[1] - window[0]) * 1e9)


def capture_cpu(job, tmp):
    out = Path(tmp)
    bg = subprocess.Popen([str(job), "-n", "100000"], stderr=subprocess.DEVNULL)
    try:
        rows = []
        for hz in ("99", "999"):
            fb = own_cpu([FLAMEBPF, "record", "-q", "-a", "-F", hz, "-d", "12", "-o", out / "c.folded"])
            pf = own_cpu(["perf", "record", "-q", "-a", "-g", "-F", hz, "-o", out / "c.data", "--", "sleep", "12"])
            rows.append((hz, fb, pf))
        return rows
    finally:
        bg.kill()
        bg.wait()


def bpf_time_per_sample(job, tmp):
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = knob.read_text().strip()
    knob.write_text("1")
    bg = subprocess.Popen([str(job), "-n", "100000"], stderr=subprocess.DEVNULL)
    try:
        p = subprocess.Popen([str(FLAMEBPF), "record", "-q", "-a", "-F", "999", "-d", "6",
                              "-o", str(Path(tmp) / "s.folded")])
        time.sleep(5)
        progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True,
                                          text=True, check=True).stdout)
        p.wait(timeout=60)
        runs = [(q.get("run_cnt", 0), q.get("run_time_ns", 0)) for q in progs if q.get("name") == "profile"]
        cnt = sum(r[0] for r in runs)
        ns = sum(r[1] for r in runs)
        return cnt, (ns / cnt if cnt else float("nan"))
    finally:
        knob.write_text(old)
        bg.kill()
        bg.wait()


def end_to_svg(job, rounds, runs, tmp):
    out = Path(tmp)
    env = dict(os.environ, PATH=f"{TOOLS / 'bin'}:{os.environ['PATH']}")
    fb, pr, pp = [], [], []
    for _ in range(runs):
        _, end, exited = run_job([FLAMEBPF, "record", "-q", "-F", "999", "-o", out / "f.svg", "--"], job, rounds)
        fb.append((exited - end) / 1e9)
        _, end, exited = run_job(["perf", "record", "-q", "-g", "-F", "999", "-o", out / "p.data", "--"], job, rounds)
        pr.append((exited - end) / 1e9)
        t = time.monotonic()
        subprocess.run(f"perf script -i {out / 'p.data'} 2>/dev/null | inferno-collapse-perf | "
                       f"inferno-flamegraph > {out / 'p.svg'}", shell=True, check=True, env=env)
        pp.append(time.monotonic() - t)
    perf_total = [a + b for a, b in zip(pr, pp)]
    return statistics.median(fb), statistics.median(pr), statistics.median(pp), statistics.median(perf_total)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="runs of each configuration (default 7)")
    ap.add_argument("--rounds", type=int, default=1000, help="work of the job (default 1000, ~4 s)")
    ap.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/overhead.py: run as root (BPF and perf need it)")
    with tempfile.TemporaryDirectory() as tmp:
        job = prepare(tmp)
        print("slowdown ...", file=sys.stderr)
        slow = slowdown(job, args.rounds, args.runs, tmp)
        print("profiler CPU ...", file=sys.stderr)
        cpu = capture_cpu(job, tmp)
        print("BPF time per sample ...", file=sys.stderr)
        bpf_cnt, bpf_ns = bpf_time_per_sample(job, tmp)
        print("end of capture to SVG ...", file=sys.stderr)
        fb, pr, pp, ptot = end_to_svg(job, args.rounds, max(3, args.runs // 2), tmp)

    cpu_model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "unknown CPU")
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs ({cpu_model}), "
        f"kernel {os.uname().release}; `bench/overhead.py --runs {args.runs} --rounds {args.rounds}`.",
        "",
        "Slowdown of the fixed job (median of the job's own run time):",
        "",
        "| configuration | median s | slowdown | min s | max s |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {n} | {m:.3f} | {s:+.2f}% | {lo:.3f} | {hi:.3f} |" for n, m, s, lo, hi in slow]
    lines += [
        "",
        "The profiler's own CPU while sampling the whole machine (one busy CPU), % of one core:",
        "",
        "| frequency | flamebpf | perf record -a -g |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {hz} Hz | {f:.2f}% | {p:.2f}% |" for hz, f, p in cpu]
    lines += [
        "",
        f"BPF program time per sample (bpf_stats, -a at 999 Hz): {bpf_ns:.0f} ns over {bpf_cnt} runs.",
        "",
        "From the end of the job to the flame graph on disk (999 Hz, median):",
        "",
        "| pipeline | seconds |",
        "| --- | --- |",
        f"| flamebpf record → SVG | {fb:.3f} |",
        f"| perf record (finishing) | {pr:.3f} |",
        f"| perf script \\| inferno-collapse-perf \\| inferno-flamegraph | {pp:.3f} |",
        f"| perf total | {ptot:.3f} ({ptot / fb:.1f}× flamebpf) |",
    ]
    report(lines, args.out)


if __name__ == "__main__":
    main()
