#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: formatting, lints, unit tests of
# every crate and the integration tests (BPF captures need root; without it they
# skip with a reason, or fail when FLAMEBPF_REQUIRE_BPF=1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
