"""What the benchmark scripts share: where things are, the build, the job, a
process's CPU time, and writing the report."""

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAMEBPF = ROOT / "target" / "release" / "flamebpf"


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, **kw)


def prepare(tmp):
    """Installs what benchmarks need (setup.sh with bpftool), builds flamebpf in
    release mode and compiles the fixed job (testdata/split.c) into `tmp`."""
    sh(ROOT / "scripts" / "setup.sh", env=dict(os.environ, FLAMEBPF_SETUP_BENCH="1"))
    sh("cargo", "build", "--release", "--quiet", "--bin", "flamebpf", cwd=ROOT)
    job = Path(tmp) / "split"
    sh("gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls", "-o", job,
       ROOT / "testdata" / "split.c")
    return job


def cpu_ns(pid):
    """CPU time of all threads of `pid` in ns (schedstat: finer than utime/stime ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def report(lines, out):
    """Prints the report and, with `out`, writes it there too."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)


def prog_ids(pid):
    """Ids of the BPF programs the process holds (its fds' fdinfo): its own
    programs, not the others loaded on the machine."""
    ids = set()
    try:
        fds = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return ids
    for fd in fds:
        try:
            for line in fd.read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        except (OSError, ValueError):
            pass
    return ids


def prog_stats(ids):
    """{id: (name, run_time_ns, run_cnt)} of these programs (bpftool; the counts
    need kernel.bpf_stats_enabled=1)."""
    progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                                      check=True).stdout)
    return {p["id"]: (p.get("name", "?"), p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in progs if p["id"] in ids}


def wait_exit(p, timeout):
    """Waits for `p` (a Popen not yet reaped) and returns its CPU time (ns) from
    the kernel's rusage, all its threads and its whole life; kills it after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if p.returncode is not None:  # already reaped by poll(): its rusage is gone
            return 0
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return int((ru.ru_utime + ru.ru_stime) * 1e9)
        if time.monotonic() > deadline:
            p.kill()
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            return int((ru.ru_utime + ru.ru_stime) * 1e9)
        time.sleep(0.05)


def med(rows, key):
    """(median, min, max) of rows[*][key], NaNs and missing keys left out."""
    vals = [r[key] for r in rows if key in r and r[key] == r[key]]
    return (statistics.median(vals), min(vals), max(vals)) if vals else (float("nan"),) * 3


def machine():
    cpu_model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "unknown CPU")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{nproc} CPUs (nproc), {cpu_model}, kernel {os.uname().release}"


def bpf_time_per_sample(workload, args, prog, folded, settle=0.0, yardstick=None):
    """Runs `workload` (argv lists, one process each) and, beside it, `flamebpf
    record -q -a -F 999 -d 6 --no-inline -o folded ARGS` with
    kernel.bpf_stats_enabled=1 (restored afterwards); returns (ns per run, runs)
    of the program named `prog`, read just before the capture ends. With
    `yardstick` (argv, program name), that profiler samples the same workload in
    the same seconds, and its program's ns per run comes third: this VM's CPUs
    change speed by half from one minute to the next, and a ratio of two
    programs that ran in the same seconds does not."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = knob.read_text().strip()
    knob.write_text("1")
    procs = [subprocess.Popen([str(a) for a in argv]) for argv in workload]
    other = None
    try:
        time.sleep(settle)
        p = subprocess.Popen([str(FLAMEBPF), "record", "-q", "-a", "-F", "999", "-d", "6", "--no-inline",
                              "-o", str(folded)] + list(args))
        if yardstick:
            other = subprocess.Popen([str(a) for a in yardstick[0]], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(5.5)
        progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                                          check=True).stdout)
        p.wait(timeout=120)

        def per_run(name):
            cnt = sum(q.get("run_cnt", 0) for q in progs if q.get("name") == name)
            ns = sum(q.get("run_time_ns", 0) for q in progs if q.get("name") == name)
            return (ns / cnt if cnt else float("nan")), cnt
        ns, cnt = per_run(prog)
    finally:
        knob.write_text(old)
        for q in procs + ([other] if other else []):
            q.kill()
            q.wait()
    if yardstick:
        return ns, cnt, per_run(yardstick[1])[0]
    return ns, cnt
