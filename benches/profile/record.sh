#!/bin/bash
# Profiles one counters scenario on a 3-node cluster and its edge (all four
# `roost` processes at once) while the load bench drives it.
#
#   benches/profile/record.sh many out/many   # or: hot
#
# Writes out/many.load.log (the bench's figures), out/many.pids, and
# out/many.script (perf script with DWARF call graphs), which
# benches/profile/components.py turns into the component table:
#
#   python3 benches/profile/components.py "before=out/many.script" ...
#
# Needs a release build of `roost` and of the load bench (see
# benches/profile.md) and perf. RUST_LOG is passed to the nodes (the bench
# runs them at `warn,openraft=off` unless it is set).
set -eu
SCEN=$1
OUT=$2
TARGET=${CARGO_TARGET_DIR:-target}
LOAD=$(ls -t "$TARGET"/release/deps/load-* | grep -v '\.d$' | head -1)
mkdir -p "$(dirname "$OUT")"
"$LOAD" --bench --scenario "$SCEN" --cluster --duration 25 > "$OUT.load.log" 2>&1 &
LOAD_PID=$!
for _ in $(seq 1 60); do
  grep -q warmup "$OUT.load.log" && break
  sleep 1
done
sleep 8   # past the warm-up and the start of the measured window
PIDS=$(pgrep -f "$TARGET/release/roost (node|edge)" | paste -sd,)
pgrep -af "$TARGET/release/roost (node|edge)" | cut -c1-150 > "$OUT.pids"
perf record -F 299 --call-graph dwarf,16384 -p "$PIDS" -o "$OUT.perf.data" -- sleep 12
wait "$LOAD_PID"
perf script -i "$OUT.perf.data" -F comm,pid,tid,ip,sym --no-inline > "$OUT.script"
