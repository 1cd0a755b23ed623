#!/usr/bin/env python3
"""What `--call-graph dwarf` costs, side by side with `perf record --call-graph dwarf`.

1. Time per sample in the BPF program (kernel.bpf_stats_enabled, bpftool), dwarf
   mode against frame-pointer mode, -a at 999 Hz with both CPUs busy.
2. The highest frequency at which every CPU (all busy) is sampled without a
   sample lost to the ring buffer (default 16 MiB, 16 KiB stack copies).
3. Slowdown of a fixed job (testdata/split.c -n ROUNDS) alone, under
   `flamebpf record --call-graph dwarf` and under `perf record --call-graph dwarf`,
   both at 999 Hz, interleaved run by run; medians compared.

Run as root: bench/dwarf.py [--runs 5] [--rounds 1000] [--out FILE]
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import FLAMEBPF, prepare, report


def busy(job, n=2):
    return [subprocess.Popen([str(job), "600"], stderr=subprocess.DEVNULL) for _ in range(n)]


def stop(procs):
    for p in procs:
        p.kill()
        p.wait()


def bpf_ns_per_sample(job, tmp, mode):
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = knob.read_text().strip()
    knob.write_text("1")
    procs = busy(job)
    try:
        args = [FLAMEBPF, "record", "-q", "-a", "-F", "999", "-d", "6", "-o", Path(tmp) / "s.folded"]
        if mode == "dwarf":
            args += ["--call-graph", "dwarf"]
        p = subprocess.Popen([str(a) for a in args])
        time.sleep(5)
        progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                                          check=True).stdout)
        p.wait(timeout=120)
        name = "profile_dwarf" if mode == "dwarf" else "profile"
        runs = [(q.get("run_cnt", 0), q.get("run_time_ns", 0)) for q in progs if q.get("name") == name]
        cnt, ns = sum(r[0] for r in runs), sum(r[1] for r in runs)
        return ns / cnt if cnt else float("nan")
    finally:
        knob.write_text(old)
        stop(procs)


def losses_at(job, tmp, hz):
    procs = busy(job)
    try:
        r = subprocess.run([str(FLAMEBPF), "record", "-a", "-F", str(hz), "-d", "4", "--call-graph", "dwarf",
                            "-o", str(Path(tmp) / "f.folded")], capture_output=True, text=True)
        m = re.search(r"(\d+) samples to a full ring buffer", r.stderr)
        total = re.search(r"flamebpf: (\d+) samples", r.stderr)
        return int(total.group(1)) if total else 0, int(m.group(1)) if m else 0
    finally:
        stop(procs)


def slowdown(job, rounds, runs, tmp):
    out = Path(tmp)
    configs = {
        "alone": [],
        "flamebpf --call-graph dwarf 999 Hz": [FLAMEBPF, "record", "-q", "-F", "999", "--call-graph", "dwarf",
                                               "-o", out / "f.folded", "--"],
        "perf --call-graph dwarf 999 Hz": ["perf", "record", "-q", "-F", "999", "--call-graph", "dwarf",
                                           "-o", out / "p.data", "--"],
    }
    times = {k: [] for k in configs}
    for i in range(runs):
        order = list(configs)
        random.Random(i).shuffle(order)
        for name in order:
            p = subprocess.run([str(a) for a in configs[name] + [job, "-n", rounds]], capture_output=True, text=True)
            took = next(int(l.split()[1]) for l in p.stderr.splitlines() if l.startswith("split "))
            times[name].append(took)
        print(f"  run {i + 1}/{runs}", file=sys.stderr)
    base = statistics.median(times["alone"])
    return [(k, statistics.median(v) / 1e9, 100 * (statistics.median(v) - base) / base) for k, v in times.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/dwarf.py: run as root")
    with tempfile.TemporaryDirectory() as tmp:
        job = prepare(tmp)
        print("BPF time per sample ...", file=sys.stderr)
        ns_fp = bpf_ns_per_sample(job, tmp, "fp")
        ns_dwarf = bpf_ns_per_sample(job, tmp, "dwarf")
        print("ring buffer losses by frequency ...", file=sys.stderr)
        rates = [(hz, *losses_at(job, tmp, hz)) for hz in (999, 1999, 4999, 9999)]
        print("slowdown ...", file=sys.stderr)
        slow = slowdown(job, args.rounds, args.runs, tmp)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs, kernel {os.uname().release}; "
        f"`bench/dwarf.py --runs {args.runs} --rounds {args.rounds}`.",
        "",
        f"BPF time per sample (-a, 999 Hz, both CPUs busy): dwarf mode {ns_dwarf:.0f} ns, "
        f"frame-pointer mode {ns_fp:.0f} ns.",
        "",
        "Samples lost to the ring buffer (16 MiB, 16 KiB copies), -a with both CPUs busy for 4 s:",
        "",
        "| frequency | samples | lost |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {hz} Hz | {n} | {lost} |" for hz, n, lost in rates]
    lines += ["", "Slowdown of the fixed job (medians):", "", "| configuration | median s | slowdown |", "| --- | --- | --- |"]
    lines += [f"| {k} | {m:.3f} | {s:+.2f}% |" for k, m, s in slow]
    report(lines, args.out)


if __name__ == "__main__":
    main()
