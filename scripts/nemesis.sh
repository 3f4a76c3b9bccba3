#!/usr/bin/env bash
# The long randomized fault run (`make nemesis`): builds the nemesis test
# and the `roost` binary, copies both to a temporary directory and runs the
# copies, so that building the project meanwhile cannot swap the binaries
# the run's node and edge processes re-execute.
#
# Environment: NEMESIS_DURATION, NEMESIS_SEED, NEMESIS_NODES (see
# tests/nemesis/main.rs); RUST_LOG.
set -euo pipefail
cd "$(dirname "$0")/.."

built=$(cargo test --workspace --test nemesis --no-run 2>&1 | tee /dev/stderr |
    sed -n 's/.*Executable tests\/nemesis\/main.rs (\(.*\))$/\1/p' | tail -1)
cargo build --bin roost
target=${CARGO_TARGET_DIR:-target}
if [ -z "$built" ] || [ ! -x "$built" ]; then
    echo "nemesis.sh: cannot find the nemesis test binary" >&2
    exit 1
fi
run=$(mktemp -d -t roost-nemesis.XXXXXX)
trap 'rm -rf "$run"' EXIT
cp "$built" "$run/nemesis"
cp "$target/debug/roost" "$run/roost"
ROOST_TEST_BIN="$run/roost" "$run/nemesis" --nocapture randomized_faults_keep_every_promise
