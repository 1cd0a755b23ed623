#!/usr/bin/env python3
"""What off-CPU profiling costs, side by side with bcc's libbpf-tools
`offcputime`, in one run.

The job is testdata/pingpong.c: two threads bouncing one byte over a pair of
pipes, nearly all context switches (both threads pinned to one CPU by default,
the worst case: every round trip is two switches back to back). It is run, a
fixed number of round trips (calibrated to --seconds alone), in four
configurations interleaved round by round (shuffled within a round):

  - alone;
  - `offcputime` (libbpf-tools, built from bcc's source) tracing the whole
    machine (no -p), like flamebpf's -a;
  - `flamebpf record -a --off-cpu -F 99 -q --call-graph fp`;
  - `flamebpf record -a --off-cpu -F 99 -q` (the default --call-graph cfi).

A profiler is started first, the job runs once its sched_switch program is
loaded (found through the profiler's own BPF file descriptors) and a settling
time has passed, and the profiler is stopped with SIGINT once the job is done.
Between the job's start and end the script reads, with kernel.bpf_stats_enabled
on (restored afterwards), each of the profiler's programs' run_time_ns and
run_cnt (bpftool), and the profiler's own CPU time (schedstat of its threads).

Reported, medians over the rounds: the job's slowdown against alone; the time
per run of the sched_switch program (flamebpf: on_switch; offcputime:
sched_switch) and the time of all the profiler's programs per switch; the
profiler's CPU time during the job and over its whole life (start and output
included).

offcputime's source: $BCC_SRC (a bcc checkout) or the git mirror
/work/.mirror/iovisor+bcc/repo; it is built (cached) under
/tmp/flamebpf-bench-offcputime. Without a source, or when the build fails, the
offcputime column is skipped with the reason.

flamebpf: $FLAMEBPF, else target/release/flamebpf of this checkout; it is copied
before the runs, since it may be rebuilt meanwhile.

Run as root: bench/offcpu.py [--rounds 3] [--seconds 5] [--cpu 0] [--settle 2] [--note TEXT] [--out FILE]
"""

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import libbpf_tools
from benchlib import ROOT, cpu_ns, machine, med, prog_ids, prog_stats, report, sh, wait_exit

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- flamebpf

def find_flamebpf(explicit):
    """The flamebpf binary to use, copied into a temporary place (it is rebuilt
    often on a shared machine); waits for a missing one, a few minutes at most."""
    cands = [Path(explicit)] if explicit else [benchlib.FLAMEBPF]
    for attempt in range(6):
        for c in cands:
            if c.is_file() and os.access(c, os.X_OK):
                help_text = subprocess.run([str(c), "record", "--help"], capture_output=True,
                                           text=True).stdout
                if "--off-cpu" in help_text:
                    return c
                log(f"{c} has no --off-cpu")
        if attempt < 5:
            log(f"no flamebpf with --off-cpu among {', '.join(map(str, cands))}; retrying in 60 s")
            time.sleep(60)
    sys.exit("bench/offcpu.py: no flamebpf binary with --off-cpu (set FLAMEBPF)")


# ---------------------------------------------------------------- measuring

def run_pingpong(job, trips, cpu):
    cmd = [str(job)] + (["-c", str(cpu)] if cpu >= 0 else []) + [str(trips)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"pingpong failed: {p.stderr}")
    for line in p.stdout.splitlines():
        if line.startswith("pingpong "):
            return {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    raise RuntimeError(f"pingpong printed no report: {p.stdout}")


class Config:
    def __init__(self, name, cmd=None, switch_prog=None, out=None):
        self.name, self.cmd, self.switch_prog, self.out = name, cmd, switch_prog, out
        self.rows = []       # one dict per round
        self.error = None    # the first failure, verbatim
        self.last_stderr = ""


def one_run(cfg, job, trips, cpu, settle, tmp):
    """One run of the job under `cfg`; a dict of figures, or None after a failure
    (kept in cfg.error)."""
    if cfg.cmd is None:
        r = run_pingpong(job, trips, cpu)
        return {"elapsed_ns": r["elapsed_ns"], "rate": r["round_trips_per_s"], "csw_per_s": r["csw_per_s"]}
    errf = open(Path(tmp) / "profiler.err", "w+")
    outf = open(Path(tmp) / "profiler.out", "w+")
    p = subprocess.Popen([str(c) for c in cfg.cmd], stdout=outf, stderr=errf)
    try:
        # Ready once its sched_switch program is loaded.
        deadline = time.monotonic() + 60
        ids = set()
        while time.monotonic() < deadline and p.poll() is None:
            ids = prog_ids(p.pid)
            if ids and any(n == cfg.switch_prog for n, _, _ in prog_stats(ids).values()):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"exited with status {p.returncode} before loading {cfg.switch_prog}"
                               if p.poll() is not None else f"no {cfg.switch_prog} program after 60 s")
        time.sleep(settle)
        ids = prog_ids(p.pid)
        s0, c0 = prog_stats(ids), cpu_ns(p.pid)
        r = run_pingpong(job, trips, cpu)
        s1, c1 = prog_stats(ids), cpu_ns(p.pid)
        if p.poll() is not None:
            raise RuntimeError(f"exited with status {p.returncode} during the job")
    except Exception as e:  # noqa: BLE001 (a profiler's failure is reported, not fatal)
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        wait_exit(p, 30)
        errf.seek(0)
        cfg.error = cfg.error or f"{e}; its stderr: {errf.read().strip()}"
        log(f"  {cfg.name}: {cfg.error}")
        return None
    p.send_signal(signal.SIGINT)
    life_cpu = wait_exit(p, 120)
    errf.seek(0)
    cfg.last_stderr = errf.read().strip()
    if p.returncode != 0:
        cfg.error = cfg.error or f"exit status {p.returncode}; its stderr: {cfg.last_stderr}"
    per = {}
    for i, (name, ns1, cnt1) in s1.items():
        _, ns0, cnt0 = s0.get(i, (name, 0, 0))
        a = per.setdefault(name, [0, 0])
        a[0] += ns1 - ns0
        a[1] += cnt1 - cnt0
    sw_ns, sw_cnt = per.get(cfg.switch_prog, [0, 0])
    all_ns = sum(v[0] for v in per.values())
    row = {"elapsed_ns": r["elapsed_ns"], "rate": r["round_trips_per_s"], "csw_per_s": r["csw_per_s"],
           "switch_ns": sw_ns / sw_cnt if sw_cnt else float("nan"),
           "all_ns_per_switch": all_ns / sw_cnt if sw_cnt else float("nan"),
           "switches_per_s": sw_cnt / (r["elapsed_ns"] / 1e9),
           "bpf_share": 100.0 * all_ns / r["elapsed_ns"],
           "cpu_ms": (c1 - c0) / 1e6, "cpu_pct": 100.0 * (c1 - c0) / r["elapsed_ns"],
           "cpu_ns_per_switch": (c1 - c0) / sw_cnt if sw_cnt else float("nan"),
           "life_cpu_ms": life_cpu / 1e6,
           "progs": {n: (v[0] / v[1] if v[1] else float("nan"), v[1]) for n, v in per.items()}}
    if cfg.out and cfg.out.exists():
        row["ping_pong_share"] = ping_pong_share(cfg.out)
    return row


def ping_pong_share(folded):
    """Share of pingpong's off-CPU weight (ns) whose stack goes through ping or pong."""
    tot = inside = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if frames[0] != "pingpong" or frames[-1] not in ("[off-cpu]", "[runqueue]"):
            continue
        tot += int(n)
        if "ping" in frames or "pong" in frames:
            inside += int(n)
    return 100.0 * inside / tot if tot else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the four configurations (default 3)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the job alone (default 5)")
    ap.add_argument("--cpu", type=int, default=0, help="CPU both job threads are pinned to; -1: none (default 0)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds between a profiler's program loading and the job (default 2)")
    ap.add_argument("--flamebpf", default=os.environ.get("FLAMEBPF"), help="flamebpf binary ($FLAMEBPF)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "offcpu.md",
                    help="where the markdown report goes (default bench/results/offcpu.md)")
    ap.add_argument("--note", help="a sentence added to the report (what else ran, ...)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/offcpu.py: run as root (BPF needs it)")
    for tool in ("gcc", "bpftool"):
        if not shutil.which(tool):
            sys.exit(f"bench/offcpu.py: {tool} is missing (scripts/setup.sh with FLAMEBPF_SETUP_BENCH=1)")

    src_flamebpf = find_flamebpf(a.flamebpf)
    offcputime, oc_label = libbpf_tools.build("offcputime")
    if offcputime is None:
        log(f"SKIPPING offcputime: {oc_label}")

    load0 = os.getloadavg()
    old_stats = STATS.read_text().strip()
    with tempfile.TemporaryDirectory(prefix="flamebpf-bench-offcpu-") as tmp:
        fb = Path(tmp) / "flamebpf"
        shutil.copy(src_flamebpf, fb)
        job = Path(tmp) / "pingpong"
        sh("gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o", job, ROOT / "testdata" / "pingpong.c")

        # Calibration: round trips for --seconds alone.
        r = run_pingpong(job, 50000, a.cpu)
        trips = max(10000, int(r["round_trips_per_s"] * a.seconds))
        log(f"calibrated: {trips} round trips ({r['round_trips_per_s']:.0f}/s alone)")
        dur = str(int(a.seconds * 10 + 60))  # an upper bound; stopped with SIGINT at the job's end

        def flamebpf(mode_args, name):
            out = Path(tmp) / f"{name}.folded"
            return [fb, "record", "-a", "--off-cpu", "-F", "99", "-d", dur, "-o", out, "-q"] + mode_args, out

        configs = [Config("alone")]
        if offcputime:
            configs.append(Config("offcputime (libbpf-tools, system-wide)", [offcputime, dur], "sched_switch"))
        cmd, out = flamebpf(["--call-graph", "fp"], "fp")
        configs.append(Config("flamebpf --off-cpu --call-graph fp", cmd, "on_switch", out))
        cmd, out = flamebpf([], "cfi")
        configs.append(Config("flamebpf --off-cpu (cfi, default)", cmd, "on_switch", out))

        try:
            STATS.write_text("1")
            for i in range(a.rounds):
                order = list(configs)
                random.Random(i).shuffle(order)
                for cfg in order:
                    row = one_run(cfg, job, trips, a.cpu, a.settle, tmp)
                    if row:
                        cfg.rows.append(row)
                log(f"  round {i + 1}/{a.rounds} done")
        finally:
            STATS.write_text(old_stats)
    load1 = os.getloadavg()

    base = med(configs[0].rows, "elapsed_ns")[0]
    pin = f"both threads pinned to CPU {a.cpu}" if a.cpu >= 0 else "threads not pinned"
    lines = ["# Off-CPU profiling: cost", "",
             f"`bench/offcpu.py --rounds {a.rounds} --seconds {a.seconds:g} --cpu {a.cpu} --settle {a.settle:g}`, "
             f"{time.strftime('%Y-%m-%d %H:%M')}; {machine()}.", "",
             f"- job: testdata/pingpong.c, {trips} round trips ({pin}), {a.rounds} rounds of the "
             "configurations interleaved (shuffled within each round); medians, with min and max.",
             f"- flamebpf: copy of `{src_flamebpf}` (modified "
             f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(src_flamebpf.stat().st_mtime))}), "
             f"`record -a --off-cpu -F 99 -d {dur} -q -o OUT.folded [--call-graph fp]`, stopped with SIGINT "
             "after the job.",
             (f"- offcputime: libbpf-tools from {oc_label}, system-wide (no -p: all threads, kernel threads "
              "and idle included, as bcc traces them), default 1 us minimum like flamebpf's --off-cpu-min, "
              "stopped with SIGINT after the job." if offcputime else f"- offcputime: SKIPPED: {oc_label}"),
             f"- load average (1 min) {load0[0]:.2f} before, {load1[0]:.2f} after the runs; whatever else "
             "runs on the machine makes the figures noisy." + (f" {a.note}" if a.note else ""),
             "- kernel.bpf_stats_enabled=1 during all runs (its own cost, two clock reads per program run, "
             "is in the profilers' figures).", "",
             "## The job's slowdown", "",
             "| configuration | seconds | round trips/s | slowdown | min s | max s | job switches/s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for cfg in configs:
        if not cfg.rows:
            lines.append(f"| {cfg.name} | failed | | | | | |")
            continue
        m, lo, hi = med(cfg.rows, "elapsed_ns")
        lines.append(f"| {cfg.name} | {m / 1e9:.3f} | {med(cfg.rows, 'rate')[0]:.0f} | "
                     f"{100.0 * (m - base) / base:+.1f}% | {lo / 1e9:.3f} | {hi / 1e9:.3f} | "
                     f"{med(cfg.rows, 'csw_per_s')[0]:.0f} |")
    lines += ["", "## BPF time and the profiler's CPU during the job", "",
              "Switch program: flamebpf's `on_switch`, offcputime's `sched_switch` (tp_btf). \"All programs "
              "per switch\": the time of every program the profiler holds (flamebpf also has `on_wakeup` and "
              "the 99 Hz `profile`) over the switch program's runs. Switches/s: machine-wide runs of the "
              "switch program during the job.", "",
              "| configuration | switch program ns/run (min–max) | all programs ns per switch | switches/s | "
              "BPF time, % of the job's wall time | profiler CPU during the job, ms (% of a core) | "
              "profiler CPU ns per switch | profiler CPU over its life, ms |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cfg in configs[1:]:
        if not cfg.rows:
            continue
        sw = med(cfg.rows, "switch_ns")
        lines.append(f"| {cfg.name} | {sw[0]:.0f} ({sw[1]:.0f}–{sw[2]:.0f}) | "
                     f"{med(cfg.rows, 'all_ns_per_switch')[0]:.0f} | {med(cfg.rows, 'switches_per_s')[0]:.0f} | "
                     f"{med(cfg.rows, 'bpf_share')[0]:.1f}% | {med(cfg.rows, 'cpu_ms')[0]:.1f} "
                     f"({med(cfg.rows, 'cpu_pct')[0]:.1f}%) | {med(cfg.rows, 'cpu_ns_per_switch')[0]:.0f} | "
                     f"{med(cfg.rows, 'life_cpu_ms')[0]:.0f} |")
    lines += ["", "Per program (median ns per run, runs during the job in the last round):", ""]
    for cfg in configs[1:]:
        if cfg.rows:
            names = sorted({n for r in cfg.rows for n in r["progs"]})
            parts = []
            for n in names:
                vals = [r["progs"][n][0] for r in cfg.rows if n in r["progs"] and r["progs"][n][1]]
                runs = cfg.rows[-1]["progs"].get(n, (0, 0))[1]
                parts.append(f"`{n}` {statistics.median(vals):.0f} ns × {runs}" if vals else f"`{n}` no runs")
            lines.append(f"- {cfg.name}: " + ", ".join(parts))
    lines += ["", "## Checks and messages", ""]
    for cfg in configs[1:]:
        if cfg.error:
            lines.append(f"- {cfg.name}: ERROR: `{cfg.error}`")
        if cfg.out and cfg.rows:
            lines.append(f"- {cfg.name}: {med(cfg.rows, 'ping_pong_share')[0]:.1f}% of pingpong's off-CPU "
                         "time is under `ping` or `pong`")
        if cfg.out and cfg.last_stderr:
            lines.append(f"- {cfg.name}, its last summary: `{cfg.last_stderr.splitlines()[-1]}`")
    report(lines, a.out)


if __name__ == "__main__":
    main()
