"""Building one of bcc's libbpf-tools (offcputime, profile, ...) from bcc's
source, for the benchmarks that compare flamebpf with them.

The source: $BCC_SRC (a bcc checkout) or the git mirror
/work/.mirror/iovisor+bcc/repo. A tool is built as libbpf-tools' Makefile does
(vmlinux.h from the kernel's BTF, clang -target bpf, a bpftool skeleton, the
common helpers from an archive, linked with libbpf, libelf and zlib), cached
under /tmp/flamebpf-bench-TOOL/ by the source's contents and the kernel's BTF.
Missing packages (libbpf-dev, libelf-dev, zlib1g-dev, clang, bpftool) are
installed with apt-get.

    exe, label = libbpf_tools.build("profile")   # (None, reason) when it cannot
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BCC_MIRROR = Path("/work/.mirror/iovisor+bcc/repo")


def cache_dir(tool):
    return Path(f"/tmp/flamebpf-bench-{tool}")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bcc_source(tool):
    """(kind, location) of bcc's source, or (None, reason)."""
    env = os.environ.get("BCC_SRC")
    if env:
        if (Path(env) / "libbpf-tools" / f"{tool}.bpf.c").is_file():
            return "dir", Path(env)
        return None, f"BCC_SRC={env} has no libbpf-tools/{tool}.bpf.c"
    if BCC_MIRROR.is_dir():
        return "git", BCC_MIRROR
    return None, f"no bcc source: BCC_SRC is not set and {BCC_MIRROR} does not exist"


def wanted(tool, name):
    """The libbpf-tools files the tool's build may need: its own, every header,
    the common helpers (linked from an archive, so only what is used comes in)."""
    return (name.startswith(tool + ".") or name.endswith(".h")
            or name.endswith("_helpers.c") or name == "compat.c")


def fetch_source(tool, kind, loc, dst):
    """Copies the files the tool needs into `dst`; returns a label of the source."""
    if kind == "dir":
        for f in (loc / "libbpf-tools").iterdir():
            if f.is_file() and wanted(tool, f.name):
                shutil.copy(f, dst / f.name)
        rev = subprocess.run(["git", "-C", str(loc), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True)
        return f"{loc}" + (f" at {rev.stdout.strip()}" if rev.returncode == 0 else "")
    git = ["git", "--git-dir", str(loc)]
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    names = subprocess.run(git + ["ls-tree", "--name-only", commit, "libbpf-tools/"], capture_output=True,
                           text=True, check=True).stdout.split()
    # One file at a time: the mirror lacks some objects of the tree (arm64 headers),
    # which makes `git archive` of the whole directory fail.
    for path in names:
        name = path.rsplit("/", 1)[-1]
        if wanted(tool, name):
            blob = subprocess.run(git + ["show", f"{commit}:{path}"], capture_output=True)
            if blob.returncode == 0:
                (dst / name).write_bytes(blob.stdout)
    return f"{loc} at {commit[:12]}"


def ensure_packages():
    """libbpf-dev (static libbpf.a and headers), libelf-dev, zlib1g-dev, clang,
    bpftool: installed with apt-get when missing. Returns a reason when it fails."""
    need = {"libbpf-dev": Path("/usr/include/bpf/libbpf.h"), "libelf-dev": Path("/usr/include/gelf.h"),
            "zlib1g-dev": Path("/usr/include/zlib.h")}
    missing = [p for p, f in need.items() if not f.exists()]
    missing += [p for p in ("clang", "bpftool") if not shutil.which(p)]
    if not missing:
        return None
    log(f"installing {' '.join(missing)} with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    p = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, stdin=subprocess.DEVNULL)
        p = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                           capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        return f"apt-get install {' '.join(missing)} failed: {p.stderr.strip()[-300:]}"
    return None


def build(tool):
    """(path of the tool's binary, label of its source), or (None, reason).
    Built as libbpf-tools' Makefile does, cached by the source's contents and
    the kernel's BTF."""
    kind, loc = bcc_source(tool)
    if kind is None:
        return None, loc
    reason = ensure_packages()
    if reason:
        return None, reason
    stage = Path(tempfile.mkdtemp(prefix="flamebpf-bench-bcc-src-"))
    try:
        try:
            label = fetch_source(tool, kind, loc, stage)
        except (subprocess.CalledProcessError, OSError) as e:
            return None, f"cannot read bcc's source at {loc}: {e}"
        if not (stage / f"{tool}.bpf.c").exists():
            return None, f"no libbpf-tools/{tool}.bpf.c in {loc}"
        h = hashlib.sha256(Path("/sys/kernel/btf/vmlinux").read_bytes())
        for f in sorted(stage.iterdir()):
            h.update(f.name.encode() + f.read_bytes())
        out = cache_dir(tool) / h.hexdigest()[:16]
        exe = out / tool
        if exe.exists():
            return exe, label
        out.mkdir(parents=True, exist_ok=True)
        for f in stage.iterdir():
            shutil.copy(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    libbpf_a = subprocess.run(["gcc", "-print-file-name=libbpf.a"], capture_output=True, text=True).stdout.strip()
    libbpf = [libbpf_a] if os.path.isabs(libbpf_a) and Path(libbpf_a).exists() else ["-lbpf"]

    def step(cmd, stdout=None):
        p = subprocess.run(cmd, cwd=out, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {p.stderr.strip()[-600:]}")

    try:
        log(f"building {tool} from {label} in {out} ...")
        with open(out / "vmlinux.h", "w") as f:
            step(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"], stdout=f)
        step(["clang", "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-I.",
              f"-I/usr/include/{multiarch}", "-c", f"{tool}.bpf.c", "-o", f"{tool}.bpf.o"])
        with open(out / f"{tool}.skel.h", "w") as f:
            step(["bpftool", "gen", "skeleton", f"{tool}.bpf.o"], stdout=f)
        step(["gcc", "-g", "-O2", "-I.", "-c", f"{tool}.c", "-o", f"{tool}.o"])
        helpers = []
        for c in sorted(out.glob("*.c")):
            if c.name.startswith(tool + "."):
                continue
            o = c.with_suffix(".o")
            # A helper that does not build here is left out; the link says if it was needed.
            if subprocess.run(["gcc", "-g", "-O2", "-I.", "-c", c.name, "-o", o.name], cwd=out,
                              capture_output=True).returncode == 0:
                helpers.append(o.name)
        step(["ar", "rcs", "libhelpers.a"] + helpers)
        step(["gcc", "-o", f"{tool}.tmp", f"{tool}.o", "libhelpers.a"] + libbpf + ["-lelf", "-lz"])
        (out / f"{tool}.tmp").rename(exe)
    except (RuntimeError, OSError) as e:
        return None, f"building {tool} failed: {e}"
    return exe, label


if __name__ == "__main__":
    for t in sys.argv[1:] or ["profile"]:
        print(t, *build(t))
