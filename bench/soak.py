#!/usr/bin/env python3
"""Soak test of `flamebpf continuous` at its defaults (19 Hz, the whole machine,
60 s windows): runs it for --minutes while a spawner starts short processes
(a shell every 100 ms, a short CPU-bound job every second: thousands over the
run), and samples the daemon's CPU time (schedstat, all threads) and RSS every
30 s. Reports the daemon's CPU as a share of one core, its RSS over time (flat is
the goal), and what the store holds. Not a test: it measures.

Run as root: bench/soak.py [--minutes 32] [--out FILE]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import FLAMEBPF, cpu_ns, prepare, report


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def spawner(stop, job, counts):
    """Short-lived processes: what makes a long capture's bookkeeping grow."""
    last_job = 0.0
    while not stop.is_set():
        subprocess.run(["/bin/sh", "-c", "true"])
        counts["shells"] += 1
        if time.monotonic() - last_job >= 1.0:
            subprocess.run([str(job), "0.05"])
            counts["jobs"] += 1
            last_job = time.monotonic()
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=32)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/soak.py: run as root")
    tmp = Path(tempfile.mkdtemp(prefix="flamebpf-soak-"))
    job = prepare(tmp)
    store = tmp / "store"
    port = 6099
    daemon = subprocess.Popen([str(FLAMEBPF), "continuous", "--dir", str(store), "--listen", f"127.0.0.1:{port}"],
                              stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    counts = {"shells": 0, "jobs": 0}
    t = threading.Thread(target=spawner, args=(stop, job, counts), daemon=True)
    time.sleep(2)
    t.start()
    start = time.monotonic()
    cpu0 = cpu_ns(daemon.pid)
    samples = []  # (minutes, cpu % of a core since start, rss MiB)
    try:
        while time.monotonic() - start < args.minutes * 60:
            time.sleep(30)
            el = time.monotonic() - start
            pct = 100.0 * (cpu_ns(daemon.pid) - cpu0) / (el * 1e9)
            samples.append((el / 60, pct, rss_kib(daemon.pid) / 1024))
            print(f"  {el / 60:5.1f} min: {pct:.3f}% of a core, RSS {samples[-1][2]:.1f} MiB, "
                  f"{counts['shells']} shells + {counts['jobs']} jobs spawned", file=sys.stderr)
    finally:
        stop.set()
        t.join(timeout=10)
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True).stdout
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=120)
    windows = sorted(store.glob("window-*.pb.gz"))
    store_bytes = sum(w.stat().st_size for w in windows)
    rss = [s[2] for s in samples]
    first5 = next((s for s in samples if s[0] >= 5), samples[0])
    lines = [
        f"Soak of `flamebpf continuous` (19 Hz, whole machine, 60 s windows) for {args.minutes:g} min on "
        f"{os.cpu_count()} CPUs, kernel {os.uname().release}; `bench/soak.py --minutes {args.minutes:g}`.",
        "",
        f"- spawned: {counts['shells']} shells and {counts['jobs']} short CPU-bound jobs",
        f"- daemon CPU over the whole run: {samples[-1][1]:.3f}% of one core",
        f"- daemon RSS: {min(rss):.1f} MiB min, {max(rss):.1f} MiB max; {first5[2]:.1f} MiB at "
        f"{first5[0]:.0f} min, {rss[-1]:.1f} MiB at the end",
        f"- store: {len(windows)} windows, {store_bytes / 1024:.0f} KiB",
        "- final line: " + (err.strip().splitlines() or ["(none)"])[-1],
        "",
        "| minutes | CPU % of a core (cumulative) | RSS MiB |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {m:.1f} | {c:.3f} | {r:.1f} |" for m, c, r in samples]
    lines += ["", "/metrics at the end:", "", "```", metrics.strip(), "```"]
    report(lines, args.out)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
