#!/usr/bin/env python3
"""Soak test of `flamebpf continuous` at its defaults (19 Hz, the whole machine,
60 s windows): runs it for --minutes while
- a spawner starts short processes (a shell every 100 ms, a short CPU-bound job
  and a short job linked to a library in the temp dir every second: thousands
  over the run);
- a scraper, as a fleet profiler would, GETs /debug/pprof/profile?seconds=10
  and /metrics every 15 s;
- at half time the library is upgraded the way dpkg does it (the new version
  written beside it and renamed over it; its hot function goes from hot_v1 to
  hot_v2).
Samples the daemon's CPU time (schedstat, all threads) and RSS every 15 s.
Reports the daemon's CPU as a share of one core, its RSS at the start (after
warm-up), middle and end and whether it stays within 10% after warm-up, the
scrapes, which windows name which version of the library, and what the store
holds. Not a test: it measures.

Run as root: bench/soak.py [--minutes 32] [--out FILE]
"""

import argparse
import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchlib import FLAMEBPF, ROOT, cpu_ns, prepare, report, sh

PORT = 6099
SCRAPE_EVERY = 15
PROFILE_SECONDS = 10
# RSS may grow while caches fill; after this share of the run (at most 5 min) it
# should stay flat
WARM_UP_SHARE = 1 / 3
WARM_UP_MAX_S = 300
FLAT = 0.10


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def build_library(out, hot):
    """testdata/libversion.c with its hot function called `hot`."""
    sh("gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls", "-shared", "-fPIC",
       "-Wl,-soname,libversion.so", f"-DHOT={hot}", "-o", out, ROOT / "testdata" / "libversion.c")


def prepare_library_job(tmp):
    """libversion.so (v1) in `tmp`, v2 beside it for the upgrade, and uselib linked to it."""
    lib = tmp / "libversion.so"
    build_library(lib, "hot_v1")
    build_library(tmp / "libversion.so.v2", "hot_v2")
    uselib = tmp / "uselib"
    sh("gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-o", uselib, ROOT / "testdata" / "uselib.c",
       "-L", tmp, "-lversion", f"-Wl,-rpath,{tmp}")
    return lib, uselib


def upgrade(lib):
    """What dpkg does: unpack the new file beside the old one, rename it over."""
    new = lib.with_name(lib.name + ".dpkg-new")
    shutil.copy(lib.with_name(lib.name + ".v2"), new)
    os.rename(new, lib)


def spawner(stop, job, uselib, counts):
    """Short-lived processes: what makes a long capture's bookkeeping grow."""
    last_job = 0.0
    while not stop.is_set():
        subprocess.run(["/bin/sh", "-c", "true"])
        counts["shells"] += 1
        if time.monotonic() - last_job >= 1.0:
            subprocess.run([str(job), "0.05"])
            subprocess.run([str(uselib), "0.05"])
            counts["jobs"] += 2
            last_job = time.monotonic()
        time.sleep(0.1)


def get(path, timeout):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=timeout) as r:
        return r.status, r.read()


def scraper(stop, scrapes):
    """A fleet profiler's pulls: a 10 s profile and the metrics every 15 s."""
    while not stop.is_set():
        began = time.monotonic()
        try:
            status, body = get(f"/debug/pprof/profile?seconds={PROFILE_SECONDS}", PROFILE_SECONDS + 70)
            ok = status == 200 and len(gzip.decompress(body)) > 0
        except Exception as e:  # a refused or failed scrape is what is counted
            print(f"  scrape failed: {e}", file=sys.stderr)
            ok = False
        took = time.monotonic() - began
        scrapes["profiles"].append((ok, took))
        try:
            status, body = get("/metrics", 10)
            scrapes["metrics_ok"] += status == 200
            for line in body.decode(errors="replace").splitlines():
                if line.startswith('flamebpf_symbol_cache{what="offsets"}'):
                    scrapes["cached_offsets"] = int(line.rsplit(" ", 1)[1])
        except Exception as e:
            print(f"  /metrics failed: {e}", file=sys.stderr)
            scrapes["metrics_failed"] += 1
        stop.wait(max(0.0, SCRAPE_EVERY - (time.monotonic() - began)))


def window_names(store, window):
    """hot_v1 and hot_v2 seconds in one window file (queried alone)."""
    one = Path(tempfile.mkdtemp(prefix="flamebpf-soak-window-"))
    try:
        os.link(window, one / window.name)
        folded = subprocess.run([str(FLAMEBPF), "query", "--dir", str(one), "--comm", "uselib", "-o", "-"],
                                capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(one, ignore_errors=True)
    seconds = {"hot_v1": 0.0, "hot_v2": 0.0}
    for line in folded.splitlines():
        stack, _, weight = line.rpartition(" ")
        for name in seconds:
            if name in stack.split(";"):
                seconds[name] += int(weight) / 1e9
    return seconds


def window_times(window):
    """(start, end) in Unix seconds from `window-<start_ms>-<end_ms>.pb.gz`."""
    start, end = window.name.removeprefix("window-").removesuffix(".pb.gz").split("-")
    return int(start) / 1000, int(end) / 1000


def upgrade_report(windows, store, upgraded_at):
    """Which windows name which version: before the upgrade only hot_v1, after only hot_v2."""
    wrong, rows = 0, []
    for w in windows:
        start, end = window_times(w)
        names = window_names(store, w)
        if end <= upgraded_at:
            when, bad = "before", names["hot_v2"] > 0
        elif start >= upgraded_at + 1:  # a job runs 50 ms: none of the old version is left
            when, bad = "after", names["hot_v1"] > 0
        else:
            when, bad = "across", False
        wrong += bad
        rows.append(f"| {w.name} | {when} | {names['hot_v1']:.2f} | {names['hot_v2']:.2f} |{' **wrong**' if bad else ''}")
    return wrong, rows


def rss_summary(samples, minutes):
    """RSS at the start (after warm-up), middle and end, and the largest departure
    from the start after warm-up."""
    warm_up = min(minutes * WARM_UP_SHARE, WARM_UP_MAX_S / 60)
    after = [s for s in samples if s[0] >= warm_up] or samples[-1:]
    start, end = after[0], after[-1]
    middle = min(after, key=lambda s: abs(s[0] - (start[0] + end[0]) / 2))
    drift = max(abs(s[2] - start[2]) for s in after) / start[2]
    return warm_up, start, middle, end, drift


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=32)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/soak.py: run as root")
    tmp = Path(tempfile.mkdtemp(prefix="flamebpf-soak-"))
    job = prepare(tmp)
    lib, uselib = prepare_library_job(tmp)
    store = tmp / "store"
    daemon = subprocess.Popen([str(FLAMEBPF), "continuous", "--dir", str(store), "--listen", f"127.0.0.1:{PORT}"],
                              stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    counts = {"shells": 0, "jobs": 0}
    scrapes = {"profiles": [], "metrics_ok": 0, "metrics_failed": 0, "cached_offsets": 0}
    threads = [threading.Thread(target=spawner, args=(stop, job, uselib, counts), daemon=True),
               threading.Thread(target=scraper, args=(stop, scrapes), daemon=True)]
    time.sleep(2)
    for t in threads:
        t.start()
    start = time.monotonic()
    cpu0 = cpu_ns(daemon.pid)
    # (minutes, cpu % of a core since start, rss MiB, names cached after the last window)
    samples = [(0.0, 0.0, rss_kib(daemon.pid) / 1024, 0)]
    upgraded_at = None
    try:
        while time.monotonic() - start < args.minutes * 60:
            time.sleep(SCRAPE_EVERY)
            el = time.monotonic() - start
            if upgraded_at is None and el >= args.minutes * 30:
                upgrade(lib)
                upgraded_at = time.time()
                print(f"  {el / 60:5.1f} min: {lib.name} upgraded (hot_v1 -> hot_v2)", file=sys.stderr)
            pct = 100.0 * (cpu_ns(daemon.pid) - cpu0) / (el * 1e9)
            samples.append((el / 60, pct, rss_kib(daemon.pid) / 1024, scrapes["cached_offsets"]))
            print(f"  {el / 60:5.1f} min: {pct:.3f}% of a core, RSS {samples[-1][2]:.1f} MiB, "
                  f"{samples[-1][3]} offsets' names cached, "
                  f"{counts['shells']} shells + {counts['jobs']} jobs spawned, "
                  f"{len(scrapes['profiles'])} profiles scraped", file=sys.stderr)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=PROFILE_SECONDS + 80)
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{PORT}/metrics"], capture_output=True,
                                 text=True).stdout
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=300)
    windows = sorted(store.glob("window-*.pb.gz"))
    store_bytes = sum(w.stat().st_size for w in windows)
    warm_up, r_start, r_middle, r_end, drift = rss_summary(samples, args.minutes)
    rss = [s[2] for s in samples]
    profiles_ok = [took for ok, took in scrapes["profiles"] if ok]
    wrong, upgrade_rows = upgrade_report(windows, store, upgraded_at or float("inf"))
    lines = [
        f"Soak of `flamebpf continuous` (19 Hz, whole machine, 60 s windows) for {args.minutes:g} min on "
        f"{os.cpu_count()} CPUs, kernel {os.uname().release}; `bench/soak.py --minutes {args.minutes:g}`.",
        "",
        f"- spawned: {counts['shells']} shells and {counts['jobs']} short CPU-bound jobs (half of them linked to "
        f"libversion.so, upgraded at half time)",
        f"- scraped every {SCRAPE_EVERY} s: {len(profiles_ok)} of {len(scrapes['profiles'])} "
        f"/debug/pprof/profile?seconds={PROFILE_SECONDS} answered"
        + (f" (in {min(profiles_ok):.1f}-{max(profiles_ok):.1f} s)" if profiles_ok else "")
        + f"; /metrics {scrapes['metrics_ok']} answered, {scrapes['metrics_failed']} failed",
        f"- daemon CPU over the whole run: {samples[-1][1]:.3f}% of one core",
        f"- daemon RSS after {warm_up:.1f} min of warm-up: {r_start[2]:.1f} MiB at {r_start[0]:.1f} min (start), "
        f"{r_middle[2]:.1f} MiB at {r_middle[0]:.1f} min (middle), {r_end[2]:.1f} MiB at {r_end[0]:.1f} min (end); "
        f"at most {100 * drift:.1f}% from the start: {'flat' if drift <= FLAT else 'NOT flat'} "
        f"(within {100 * FLAT:.0f}%); {min(rss):.1f}-{max(rss):.1f} MiB over the whole run",
        f"- library upgrade: {wrong} windows name the wrong version"
        + ("" if upgraded_at else " (the run ended before the upgrade)"),
        f"- store: {len(windows)} windows, {store_bytes / 1024:.0f} KiB",
        "- final line: " + (err.strip().splitlines() or ["(none)"])[-1],
        "",
        "| minutes | CPU % of a core (cumulative) | RSS MiB | offsets' names cached (flamebpf_symbol_cache) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {m:.1f} | {c:.3f} | {r:.1f} | {o} |" for m, c, r, o in samples]
    lines += ["", "| window | upgrade | hot_v1 s | hot_v2 s |", "| --- | --- | --- | --- |"] + upgrade_rows
    lines += ["", "/metrics at the end:", "", "```", metrics.strip(), "```"]
    report(lines, args.out)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
