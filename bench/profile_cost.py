#!/usr/bin/env python3
"""What on-CPU sampling costs, side by side with bcc's libbpf-tools `profile`,
in one run.

The job: two copies of testdata/deep.c (built with `gcc -O2 -g
-fno-omit-frame-pointer`, so frame pointers reach every frame), each pinned to
one CPU, spinning at the bottom of a recursion of DEPTH (17) frames: both CPUs
busy with the same deep stacks all the time. The copies are started once, for
the whole benchmark (deep's SECONDS argument is the run's length), and stopped
at the end: every capture and its output see the same live processes (profile
symbolizes user stacks from /proc/PID/maps at the end, so a process that has
exited by then would lose its names there and make its output cheaper).

Three profilers, each sampling the whole machine at 999 Hz for a fixed 10 s
capture (-d/duration), started and run to their exit, interleaved in the same
order every round (A B C A B C ...):

  - `profile -F 999 -f 10` (libbpf-tools, built from bcc's source: kernel and
    user stacks, bpf_get_stackid, idle left out, as by default);
  - `flamebpf record -a -F 999 --call-graph fp -q -d 10 -o OUT.folded`;
  - `flamebpf record -a -F 999 -q -d 10 -o OUT.folded` (the default, cfi).

For each capture, with kernel.bpf_stats_enabled=1 (restored afterwards), the
script polls the profiler's own BPF program file descriptors
(/proc/PID/fdinfo: prog_id, run_time_ns, run_cnt; names from bpftool), so no
other program on the machine is counted:

  - BPF time per sample: run_time_ns / run_cnt of the sampling program
    (flamebpf: `profile`; libbpf-tools: `do_perf_event`) in the steady part of
    the capture (from 1 s after its first run to the last poll), and all the
    profiler's programs' time over the sampling program's runs;
  - the profiler's CPU time (its rusage at exit: utime+stime of all its
    threads, start and output included) and wall time from spawn to exit, the
    time to its first sample, and its CPU use while sampling (schedstat, same
    steady window).

Then, with the job stopped (SIGSTOP, so wall times are not a race for a busy
CPU; SIGCONT after), the start cost, wall and CPU time:
`profile -F 99 1` (one second: its wall includes that sleep),
`flamebpf record -q -o X.folded -- true` and the same with --call-graph fp.
With the job running again, the capture the start-cost goal names, one busy
process at 99 Hz for 10 s, symbolization and output included: `profile -p PID
-F 99 -f 10`, `flamebpf record -q -p PID -d 10 -F 99` in fp and in cfi mode;
wall and own CPU (rusage at exit).

Before the job starts, the script waits (at most --wait-quiet, 120 s) for 10 s
in which the machine is under 10% busy.

A capture in which the job had less than --min-share (90%) of the CPUs over
the measured window (another build or test ran: its samples, not deep's, were
then measured) is redone, at most --retries (2) times and none after --budget
seconds (420); the redone ones are listed in the report.

Reported: medians over the rounds with min and max, the machine, the load
average before and after, and checks of the outputs (share of deep's samples
whose stack reaches main through all DEPTH+1 descend frames).

profile's source: $BCC_SRC (a bcc checkout) or the git mirror
/work/.mirror/iovisor+bcc/repo, built (cached) under /tmp/flamebpf-bench-profile
by bench/libbpf_tools.py; without it the profile rows are skipped with the
reason. flamebpf: $FLAMEBPF or --flamebpf, else target/release/flamebpf of this
checkout; copied before the runs.

Run as root: bench/profile_cost.py [--rounds 5] [--seconds 10] [--freq 999] [--depth 17]
    [--min-share 90] [--retries 2] [--budget 420] [--wait-quiet 120] [--note TEXT] [--out FILE]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import libbpf_tools
from benchlib import ROOT, cpu_ns, machine, med, prog_stats, report, sh, wait_exit

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
MAX_RATE = Path("/proc/sys/kernel/perf_event_max_sample_rate")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def find_flamebpf(explicit):
    """The flamebpf binary to use (copied by the caller: it is rebuilt often on a
    shared machine); waits for a missing one, a few minutes at most."""
    cands = [Path(explicit)] if explicit else [benchlib.FLAMEBPF]
    for attempt in range(6):
        for c in cands:
            if c.is_file() and os.access(c, os.X_OK):
                return c
        if attempt < 5:
            log(f"no flamebpf among {', '.join(map(str, cands))}; retrying in 60 s")
            time.sleep(60)
    sys.exit("bench/profile_cost.py: no flamebpf binary (set FLAMEBPF)")


def fd_progs(pid):
    """{prog_id: (run_time_ns, run_cnt)} of the BPF programs whose file
    descriptors the process holds (link fds name a prog_id too, without counts)."""
    out = {}
    try:
        fds = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return out
    for fd in fds:
        try:
            info = dict(l.split(":", 1) for l in fd.read_text().splitlines() if ":" in l)
        except OSError:
            continue
        if "prog_id" in info and "run_cnt" in info:
            out[int(info["prog_id"])] = (int(info["run_time_ns"]), int(info["run_cnt"]))
    return out


def running(p):
    """Whether `p` has not exited, without reaping it (its rusage is read at the end)."""
    return os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


class Profiler:
    def __init__(self, name, cmd, prog, out=None, stdout_is_output=False):
        self.name, self.cmd, self.prog, self.out = name, cmd, prog, out
        self.stdout_is_output = stdout_is_output
        self.rows = []
        self.discarded = []  # captures disturbed by other work, redone
        self.error = None
        self.last_stderr = ""


def capture(pr, tmp, seconds, jobs):
    """One capture of `pr`, from spawn to exit; a dict of figures or None (the
    failure in pr.error)."""
    out_path = pr.out
    if out_path and out_path.exists():
        out_path.unlink()
    stdout = open(out_path, "w") if pr.stdout_is_output else subprocess.DEVNULL
    errf = open(Path(tmp) / "profiler.err", "w+")
    t0 = time.monotonic()
    p = subprocess.Popen([str(c) for c in pr.cmd], stdout=stdout, stderr=errf)
    names = {}
    first = None        # (t, cpu_ns, stats) when the sampling program first ran
    steady = None       # the first poll at least 1 s after that
    last = None         # the last poll at most seconds - 0.3 s after the first run
    try:
        deadline = t0 + seconds + 120
        while running(p) and time.monotonic() < deadline:
            st = fd_progs(p.pid)
            now, c = time.monotonic(), cpu_ns(p.pid)
            jc = sum(cpu_ns(j.pid) for j in jobs)
            new = set(st) - set(names)
            if new:
                names.update({i: v[0] for i, v in prog_stats(new).items()})
            samp = {i for i, n in names.items() if n == pr.prog and i in st}
            if samp and sum(st[i][1] for i in samp) > 0 and running(p):
                snap = (now, c, st, jc)
                if first is None:
                    first = snap
                elif steady is None and now - first[0] >= 1.0:
                    steady = snap
                # The window ends before sampling does: profile keeps its program
                # attached while it prints, and the output is not sampling.
                if now - first[0] <= seconds - 0.3:
                    last = snap
            time.sleep(0.05 if first is None else 0.25)
    finally:
        life_cpu = wait_exit(p, 5)
        t1 = time.monotonic()
        if stdout is not subprocess.DEVNULL:
            stdout.close()
        errf.seek(0)
        pr.last_stderr = errf.read().strip()
        errf.close()
    if p.returncode != 0 or first is None:
        why = (f"exit status {p.returncode}" if p.returncode != 0 else f"its {pr.prog} program never ran")
        pr.error = pr.error or f"{why}; its stderr: {pr.last_stderr[-500:]}"
        log(f"  {pr.name}: {pr.error}")
        return None
    a, b = (steady or first), last
    dt = b[0] - a[0]

    def delta(which):
        ns = cnt = 0
        for i, (rt, rc) in b[2].items():
            if which(i):
                rt0, rc0 = a[2].get(i, (0, 0))
                ns, cnt = ns + rt - rt0, cnt + rc - rc0
        return ns, cnt

    s_ns, s_cnt = delta(lambda i: names.get(i) == pr.prog)
    all_ns, _ = delta(lambda i: True)
    row = {"wall_s": t1 - t0, "cpu_ms": life_cpu / 1e6, "first_sample_s": first[0] - t0,
           "after_s": t1 - t0 - (first[0] - t0) - seconds,
           "sample_ns": s_ns / s_cnt if s_cnt else float("nan"),
           "all_ns": all_ns / s_cnt if s_cnt else float("nan"),
           "samples_per_s": s_cnt / dt if dt > 0 else float("nan"),
           "bpf_pct": 100.0 * all_ns / (dt * 1e9) if dt > 0 else float("nan"),
           "sampling_cpu_pct": 100.0 * (b[1] - a[1]) / (dt * 1e9) if dt > 0 else float("nan"),
           "job_pct": 100.0 * (b[3] - a[3]) / (dt * 1e9 * len(jobs)) if dt > 0 else float("nan"),
           "progs": sorted({names.get(i, "?") for i in b[2]})}
    if out_path and out_path.exists():
        row.update(check_folded(out_path))
    return row


def check_folded(path, depth=None):
    """Share of deep's weight whose stack goes from main through every descend
    frame; deep's share of all the weight."""
    depth = CHECK_DEPTH if depth is None else depth
    tot = deep = whole = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        frames = stack.split(";")
        tot += n
        if frames[0] != "deep":
            continue
        deep += n
        if "main" in frames and frames.count("descend") >= depth + 1:
            whole += n
    return {"whole_pct": 100.0 * whole / deep if deep else float("nan"),
            "deep_pct": 100.0 * deep / tot if tot else float("nan")}


CHECK_DEPTH = 17


def busy_ns():
    """CPU time all CPUs spent not idle (/proc/stat: all but idle and iowait), ns."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) * 1e9 / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit, window=10.0, busy_max=10.0):
    """Waits, at most `limit` seconds, for a `window` of seconds in which the
    machine is under busy_max % busy; returns (seconds waited, busy % of the
    last window)."""
    t0 = time.monotonic()
    while True:
        b0, w0 = busy_ns(), time.monotonic()
        time.sleep(window)
        busy = 100.0 * (busy_ns() - b0) / ((time.monotonic() - w0) * 1e9 * os.cpu_count())
        waited = time.monotonic() - t0
        if busy < busy_max or waited >= limit:
            return waited, busy
        log(f"machine {busy:.0f}% busy, waiting for a quiet moment ({waited:.0f} of {limit:g} s)")


def start_cost(cmd, tmp, stdout_path):
    """(wall s, CPU ms, the others' CPU share %, exit status, stderr) of one run
    of `cmd` to its exit."""
    with open(stdout_path, "w") as out, open(Path(tmp) / "start.err", "w+") as err:
        b0 = busy_ns()
        t0 = time.monotonic()
        p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err)
        cpu = wait_exit(p, 60)
        wall = time.monotonic() - t0
        others = 100.0 * max(0.0, busy_ns() - b0 - cpu) / (wall * 1e9 * os.cpu_count())
        err.seek(0)
        return wall, cpu / 1e6, others, p.returncode, err.read().strip()


def fmt(m, digits=0, unit=""):
    v, lo, hi = m
    if v != v:
        return "–"
    return f"{v:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def main():
    global CHECK_DEPTH
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of all the runs (default 5)")
    ap.add_argument("--seconds", type=int, default=10, help="length of a capture (default 10)")
    ap.add_argument("--freq", type=int, default=999, help="sampling frequency of the captures (default 999)")
    ap.add_argument("--depth", type=int, default=17, help="deep's recursion depth (default 17)")
    ap.add_argument("--min-share", type=float, default=90.0,
                    help="redo a capture in which the job had less than this %% of the CPUs (default 90)")
    ap.add_argument("--retries", type=int, default=2, help="at most this many redos of a capture (default 2)")
    ap.add_argument("--budget", type=float, default=420.0,
                    help="no redos once the runs have taken this many seconds (default 420)")
    ap.add_argument("--wait-quiet", type=float, default=120.0,
                    help="first wait, at most this many seconds, for 10 s with the machine under 10%% busy "
                         "(default 120; 0: no wait)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between two runs (default 1)")
    ap.add_argument("--flamebpf", default=os.environ.get("FLAMEBPF"), help="flamebpf binary ($FLAMEBPF)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile_cost.md",
                    help="where the markdown report goes (default bench/results/profile_cost.md)")
    ap.add_argument("--note", help="a sentence added to the report (what else ran, ...)")
    a = ap.parse_args()
    CHECK_DEPTH = a.depth
    if os.geteuid() != 0:
        sys.exit("bench/profile_cost.py: run as root (BPF needs it)")
    for tool in ("gcc", "bpftool"):
        if not shutil.which(tool):
            sys.exit(f"bench/profile_cost.py: {tool} is missing (scripts/setup.sh with FLAMEBPF_SETUP_BENCH=1)")
    ncpu = os.cpu_count()

    src_flamebpf = find_flamebpf(a.flamebpf)
    profile, pf_label = libbpf_tools.build("profile")
    if profile is None:
        log(f"SKIPPING profile (libbpf-tools): {pf_label}")

    command = " ".join(["bench/profile_cost.py"] + sys.argv[1:])
    waited, quiet_busy = wait_quiet(a.wait_quiet) if a.wait_quiet > 0 else (0.0, float("nan"))
    load0 = os.getloadavg()
    rate0 = MAX_RATE.read_text().strip()
    old_stats = STATS.read_text().strip()
    with tempfile.TemporaryDirectory(prefix="flamebpf-bench-profile-") as tmp:
        tmp = Path(tmp)
        fb = tmp / "flamebpf"
        shutil.copy(src_flamebpf, fb)
        fb_mtime = time.strftime('%Y-%m-%d %H:%M', time.localtime(src_flamebpf.stat().st_mtime))
        deep = tmp / "deep"
        sh("gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-o", deep, ROOT / "testdata" / "deep.c")

        s, f = str(a.seconds), str(a.freq)
        captures = []
        if profile:
            captures.append(Profiler("profile (libbpf-tools)", [profile, "-F", f, "-f", s], "do_perf_event",
                                     tmp / "profile.folded", stdout_is_output=True))
        captures.append(Profiler("flamebpf --call-graph fp",
                                 [fb, "record", "-a", "-F", f, "--call-graph", "fp", "-q", "-d", s,
                                  "-o", tmp / "fp.folded"], "profile", tmp / "fp.folded"))
        captures.append(Profiler("flamebpf (cfi, default)",
                                 [fb, "record", "-a", "-F", f, "-q", "-d", s, "-o", tmp / "cfi.folded"],
                                 "profile", tmp / "cfi.folded"))
        starts = []
        if profile:
            starts.append(["`profile -F 99 1`", [profile, "-F", "99", "1"], [], None])
        starts.append(["`flamebpf record -q -o X.folded -- true`",
                       [fb, "record", "-q", "-o", tmp / "x.folded", "--", "true"], [], None])
        starts.append(["`flamebpf record --call-graph fp -q -o X.folded -- true`",
                       [fb, "record", "--call-graph", "fp", "-q", "-o", tmp / "x.folded", "--", "true"], [], None])

        # The capture the start-cost goal names: one process, 99 Hz, a fixed 10 s,
        # symbolization and output included (filled in once the job's pids are known).
        targeted = []

        # The job: one pinned copy of deep per CPU, for the whole run.
        per_round = len(captures) * (a.seconds + 3 + a.pause) + 3 * (10 + a.pause) + 10
        job_s = int(a.budget + per_round * a.rounds * 2 + 120)
        jobs = []
        for cpu in range(ncpu):
            jobs.append(subprocess.Popen([str(deep), str(job_s), str(a.depth)],
                                         preexec_fn=lambda c=cpu: os.sched_setaffinity(0, {c})))
        pid = str(jobs[0].pid)
        if profile:
            targeted.append(["`profile -p PID -F 99 -f 10`", [profile, "-p", pid, "-F", "99", "-f", "10"],
                             [], None])
        targeted.append(["`flamebpf record -q -p PID -d 10 -F 99 --call-graph fp -o X.folded`",
                         [fb, "record", "-q", "-p", pid, "-d", "10", "-F", "99", "--call-graph", "fp",
                          "-o", tmp / "t.folded"], [], None])
        targeted.append(["`flamebpf record -q -p PID -d 10 -F 99 -o X.folded` (cfi, default)",
                         [fb, "record", "-q", "-p", pid, "-d", "10", "-F", "99", "-o", tmp / "t.folded"],
                         [], None])
        t_start = time.monotonic()
        try:
            STATS.write_text("1")
            time.sleep(2)
            for r in range(a.rounds):
                for pr in captures:
                    tries = []
                    for attempt in range(1 + a.retries):
                        row = capture(pr, tmp, a.seconds, jobs)
                        time.sleep(a.pause)
                        if row is None:
                            break
                        row["round"] = r
                        tries.append(row)
                        if row["job_pct"] >= a.min_share or time.monotonic() - t_start > a.budget:
                            break
                    if tries:
                        # The first try in which the job had the CPUs, else the least disturbed.
                        best = next((x for x in tries if x["job_pct"] >= a.min_share),
                                    max(tries, key=lambda x: x["job_pct"]))
                        pr.rows.append(best)
                        pr.discarded += [x for x in tries if x is not best]
                for j in jobs:
                    j.send_signal(signal.SIGSTOP)
                time.sleep(a.pause)
                for st in starts:
                    wall, cpu, others, rc, err = start_cost(st[1], tmp, tmp / "start.out")
                    if rc != 0:
                        st[3] = st[3] or f"exit status {rc}: {err[-300:]}"
                    else:
                        st[2].append({"wall_s": wall, "cpu_ms": cpu, "others_pct": others})
                    time.sleep(a.pause / 2)
                for j in jobs:
                    j.send_signal(signal.SIGCONT)
                for st in targeted:
                    wall, cpu, others, rc, err = start_cost(st[1], tmp, tmp / "targeted.out")
                    if rc != 0:
                        st[3] = st[3] or f"exit status {rc}: {err[-300:]}"
                    else:
                        st[2].append({"wall_s": wall, "cpu_ms": cpu, "others_pct": others})
                    time.sleep(a.pause)
                if any(j.poll() is not None for j in jobs):
                    raise RuntimeError("a copy of deep exited early")
                log(f"  round {r + 1}/{a.rounds} done ({time.monotonic() - t_start:.0f} s)")
            load1 = os.getloadavg()
        finally:
            STATS.write_text(old_stats)
            for j in jobs:
                if j.poll() is None:
                    j.send_signal(signal.SIGCONT)
                    j.kill()
                    j.wait()
    rate1 = MAX_RATE.read_text().strip()
    took = time.monotonic() - t_start

    lines = ["# On-CPU sampling: cost beside libbpf-tools `profile`", "",
             f"`{command}` (as root), {time.strftime('%Y-%m-%d %H:%M')}, {took:.0f} s; {machine()}.", "",
             f"- job: {ncpu} copies of testdata/deep.c (`gcc -O2 -g -fno-omit-frame-pointer`), "
             f"`deep {job_s} {a.depth}`, one pinned to each CPU, running through the whole benchmark "
             "(stopped with SIGSTOP during the start-cost runs only): every CPU busy in a stack "
             f"{a.depth + 1} `descend` frames deep.",
             f"- {a.rounds} rounds; in each, the captures one after the other in the same order, then the "
             "start-cost runs; medians over the rounds, (min–max). A capture in which other work took the "
             f"CPUs from the job (its share below {a.min_share:g}%) is redone, see below.",
             f"- flamebpf: copy of `{src_flamebpf}` (modified {fb_mtime}).",
             (f"- profile: libbpf-tools from {pf_label}, built by bench/libbpf_tools.py; kernel and user "
              "stacks (bpf_get_stackid), idle left out, as by default." if profile
              else f"- profile (libbpf-tools): SKIPPED: {pf_label}"),
             f"- load average (1, 5, 15 min): {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} before the job "
             f"started, {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at the end (the job itself adds {ncpu}); "
             "others build and test on this machine at times, which makes the figures noisy. "
             f"Before starting, the script waited {waited:.0f} s for a quiet moment (the last 10 s: "
             f"{quiet_busy:.0f}% busy)."
             + (f" {a.note}" if a.note else ""),
             f"- kernel.bpf_stats_enabled=1 during the runs (was {old_stats}; restored): its two clock reads "
             "per program run are in the BPF figures. kernel.perf_event_max_sample_rate "
             f"{rate0} before, {rate1} after.", "",
             f"## {a.seconds} s captures at {a.freq} Hz, whole machine", "",
             "Commands: " + "; ".join(
                 "`" + " ".join(Path(str(c)).name if i == 0 else
                                ("OUT.folded" if str(c).endswith(".folded") else str(c))
                                for i, c in enumerate(pr.cmd)) + "`" + (" > OUT.folded" if pr.stdout_is_output
                                                                         else "")
                 for pr in captures) + ".", "",
             "BPF figures: the sampling program (`do_perf_event`, flamebpf's `profile`) over the steady "
             "part of the capture (from 1 s after its first run to 0.3 s before the capture's end, polled "
             "every 0.25 s). "
             "\"All programs\": the time of every program the profiler holds over the samples. "
             "Profiler CPU: its rusage at exit (all threads, start and output included); "
             "while sampling: schedstat over the steady window.", "",
             "| profiler | BPF ns per sample | all programs ns per sample | samples/s | BPF, % of one CPU | "
             "profiler CPU ms, whole capture | profiler CPU while sampling, % of one CPU | wall s | "
             "first sample after, s | exit after the last second, s | job's share of the CPUs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for pr in captures:
        if not pr.rows:
            lines.append(f"| {pr.name} | failed | | | | | | | | | |")
            continue
        m = lambda k: med(pr.rows, k)  # noqa: E731
        lines.append(f"| {pr.name} | {fmt(m('sample_ns'))} | {fmt(m('all_ns'))} | "
                     f"{m('samples_per_s')[0]:.0f} | {fmt(m('bpf_pct'), 2)} | {fmt(m('cpu_ms'))} | "
                     f"{fmt(m('sampling_cpu_pct'), 2)} | {fmt(m('wall_s'), 2)} | "
                     f"{fmt(m('first_sample_s'), 2)} | {fmt(m('after_s'), 2)} | {fmt(m('job_pct'), 1, '%')} |")
    lines += ["", f"\"Exit after the last second\": wall time from the first sample to the exit, less {a.seconds} s "
              "(stopping, reading the maps, symbolizing, writing; polled every 50 ms). "
              "\"Job's share of the CPUs\": the CPU time of the deep copies over the steady window, of all "
              f"{ncpu} CPUs: about 98% when nothing else runs (the profiler and this script's polls take "
              "the rest); much less means other work took the CPUs, and the samples were partly of it.", "",
              "## Start cost (job stopped)", "",
              "| command | wall s | CPU ms | CPU used by other processes, % of the machine |",
              "| --- | --- | --- | --- |"]
    for name, _, rows, err in starts:
        if not rows:
            lines.append(f"| {name} | failed: {err} | | |")
            continue
        lines.append(f"| {name} | {fmt(med(rows, 'wall_s'), 3)} | {fmt(med(rows, 'cpu_ms'))} | "
                     f"{fmt(med(rows, 'others_pct'), 1)} |")
    if profile:
        lines += ["", "`profile -F 99 1` sleeps one second between attaching and printing: its wall time less "
                  "1 s is its start and output."]
    lines += ["", "## One process, 99 Hz, 10 s (job running)", "",
              "PID: one copy of deep, busy on its CPU. Own CPU is the profiler's rusage at exit: start, "
              "sampling, symbolization and output.", "",
              "| command | wall s | own CPU ms | CPU used by other processes, % of the machine |",
              "| --- | --- | --- | --- |"]
    for name, _, rows, err in targeted:
        if not rows:
            lines.append(f"| {name} | failed: {err} | | |")
            continue
        lines.append(f"| {name} | {fmt(med(rows, 'wall_s'), 2)} | {fmt(med(rows, 'cpu_ms'))} | "
                     f"{fmt(med(rows, 'others_pct'), 1)} |")
    lines += ["", "## Every round", "",
              "BPF ns per sample / profiler CPU ms / wall s / job's share of the CPUs, per capture:", "",
              "| round | " + " | ".join(pr.name for pr in captures) + " |",
              "| --- |" + " --- |" * len(captures)]
    for r in range(a.rounds):
        cells = []
        for pr in captures:
            row = next((x for x in pr.rows if x["round"] == r), None)
            cells.append(f"{row['sample_ns']:.0f} / {row['cpu_ms']:.0f} / {row['wall_s']:.2f} / "
                         f"{row['job_pct']:.0f}%" if row else "failed")
        lines.append(f"| {r + 1} | " + " | ".join(cells) + " |")
    lines += ["", f"Captures in which the job had less than {a.min_share:g}% of the CPUs were redone (at most "
              f"{a.retries} times, none after {a.budget:g} s); the first undisturbed try counts, else the "
              "least disturbed. Redone, left out of the figures (BPF ns / CPU ms / wall s / job's share):", ""]
    for pr in captures:
        lines.append(f"- {pr.name}: " + (", ".join(
            f"round {x['round'] + 1}: {x['sample_ns']:.0f} / {x['cpu_ms']:.0f} / {x['wall_s']:.2f} / "
            f"{x['job_pct']:.0f}%" for x in pr.discarded) if pr.discarded else "none"))
    lines += ["", "## Checks and messages", ""]
    for pr in captures:
        if pr.rows:
            lines.append(f"- {pr.name}: programs {', '.join(f'`{n}`' for n in pr.rows[-1]['progs'])}; "
                         f"deep is {med(pr.rows, 'deep_pct')[0]:.1f}% of the samples, and "
                         f"{med(pr.rows, 'whole_pct')[0]:.1f}% of deep's have main and all {a.depth + 1} "
                         "`descend` frames (medians).")
        if pr.error:
            lines.append(f"- {pr.name}: ERROR: `{pr.error}`")
        if pr.last_stderr:
            msgs = sorted(set(pr.last_stderr.splitlines()))
            lines.append(f"- {pr.name}, stderr of its last capture: " + "; ".join(f"`{l}`" for l in msgs[:4])
                         + (f" (+{len(msgs) - 4} more)" if len(msgs) > 4 else ""))
    for name, _, rows, err in starts:
        if err:
            lines.append(f"- {name}: ERROR: `{err}`")
    report(lines, a.out)


if __name__ == "__main__":
    main()
