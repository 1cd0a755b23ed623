#!/usr/bin/env bash
# Sets everything up, builds flamebpf, and profiles the bundled demo workload
# (testdata/demo.c) into demo.svg and demo.folded in the current directory.
# Run as root (BPF and system-wide perf events need it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cargo build --release --manifest-path "$root/Cargo.toml" --bin flamebpf
mkdir -p "$root/target/demo"
gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls \
    -o "$root/target/demo/demo" "$root/testdata/demo.c"
"$root/target/release/flamebpf" record -F 999 -o demo.svg -o demo.folded \
    --title "flamebpf demo" -- "$root/target/demo/demo" 3
echo "wrote $(pwd)/demo.svg (open it in a browser) and $(pwd)/demo.folded" >&2
