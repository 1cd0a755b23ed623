#!/usr/bin/env bash
# Installs everything flamebpf needs to build, test and benchmark on Debian 12, as root.
# Idempotent: packages already present are not installed again, so a second run is quick.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# clang builds the BPF program; libelf/zlib/pkg-config let libbpf-sys build libbpf;
# gcc/g++ build the testdata workloads; linux-perf is the reference the tests compare
# against; util-linux brings setpriv/unshare for the privilege and namespace tests;
# chromium (driven by playwright-core) opens the speedscope and SVG outputs and
# golang-go brings `go tool pprof`, the real clients the output tests use; Debian's
# own python3, xz and sqlite3 (built without frame pointers) are what the unwinding
# tests profile; debuginfod is the real server the --debuginfod tests fetch from.
packages=(clang llvm libelf-dev zlib1g-dev pkg-config make gcc g++ libc6-dev linux-libc-dev
          linux-perf util-linux procps binutils chromium golang-go python3 python3-venv xz-utils sqlite3
          debuginfod)
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)
# The benchmarks also read per-program BPF run times with bpftool.
if [[ "${FLAMEBPF_SETUP_BENCH:-0}" == 1 ]]; then
    packages+=(bpftool)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
        exit 1
    fi
fi

# The client-side test tools (speedscope, playwright-core, ajv), pinned by the lock file.
root=$(cd "$(dirname "$0")/.." && pwd)
clients="$root/tests/clients"
if [[ ! -d "$clients/node_modules/speedscope" || "$clients/package-lock.json" -nt "$clients/node_modules" ]]; then
    echo "setup: installing the client test tools (npm ci in tests/clients)" >&2
    npm ci --prefix "$clients" --no-audit --no-fund --loglevel=error </dev/null >&2
    touch "$clients/node_modules"
fi

# py-spy, the reference the Python tests compare shares with, in a venv of its own
# (tests/integration/python.rs looks for it there).
if [[ ! -x "$clients/venv/bin/py-spy" ]]; then
    echo "setup: installing py-spy (pip, in tests/clients/venv)" >&2
    /usr/bin/python3 -m venv "$clients/venv"
    "$clients/venv/bin/pip" install -q --disable-pip-version-check py-spy </dev/null >&2
fi
