"""What the benchmark scripts share: where things are, the build, the job, a
process's CPU time, and writing the report."""

import os
import subprocess
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
