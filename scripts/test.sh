#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: formatting, lints, unit tests of
# every crate and the integration tests. BPF captures need root: as root a test
# that cannot use BPF fails (FLAMEBPF_REQUIRE_BPF=1 unless set otherwise); without
# root they skip with a reason, listed at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if [ "$(id -u)" = 0 ]; then
    export FLAMEBPF_REQUIRE_BPF="${FLAMEBPF_REQUIRE_BPF:-1}"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --nocapture so that each skip's reason reaches the log
set +e
cargo test --workspace --locked -- --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
skipped=$(grep -c '^skipped: ' "$log" || true)
if [ "$skipped" -gt 0 ]; then
    echo
    echo "SKIPPED: $skipped tests did not run:"
    grep '^skipped: ' "$log" | sort | uniq -c
fi
exit "$status"
