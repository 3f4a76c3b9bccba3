#!/usr/bin/env bash
# The benchmark suite in one command (`make bench`): release builds, the
# peers side by side, and BENCHMARKS.md.
#
#   scripts/bench.sh [extra load-generator flags, e.g. --duration 20]
#
# It starts the seed app on workerd (../shared/peer/start.sh, or $PEER_START)
# on $PEER_PORT (default 8791) with its storage in a fresh temporary
# directory on the same disk as Roost's, then runs
# `cargo bench --bench load -- --suite`, which itself starts and stops
# `roost dev`, a `roost dev` for cold activation, a 3-member etcd cluster
# (Debian's etcd-server: `apt-get install -y etcd-server`) and a 3-node
# Roost cluster with an edge. Without the peer or etcd it still runs, and
# BENCHMARKS.md says what was not measured.
#
# Environment: CARGO_TARGET_DIR (default ~/.cache/roost-target, outside the
# clone), BENCH_OUT (default BENCHMARKS.md in the clone), PEER_START,
# PEER_PORT, ETCD_BIN (default: etcd on PATH), BENCH_PROFILE (default
# release; `debug` only checks the script itself on a debug build: its
# figures mean nothing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/roost-target}"
OUT="${BENCH_OUT:-$ROOT/BENCHMARKS.md}"
PEER_PORT="${PEER_PORT:-8791}"
if [ -z "${PEER_START:-}" ]; then
    for candidate in "$ROOT/../shared/peer/start.sh" /work/shared/peer/start.sh; do
        if [ -x "$candidate" ]; then PEER_START="$candidate"; break; fi
    done
fi
ETCD_BIN="${ETCD_BIN:-$(command -v etcd || true)}"

cd "$ROOT"
echo "[bench] building (${BENCH_PROFILE:-release}) in $CARGO_TARGET_DIR" >&2
case "${BENCH_PROFILE:-release}" in
    release)
        cargo build --release --bin roost
        cargo bench --bench load --no-run
        run=(cargo bench --bench load --) ;;
    debug)
        cargo build --bin roost
        cargo test --bench load --no-run
        run=(cargo test --bench load -- --bench) ;;
    *) echo "[bench] BENCH_PROFILE must be release or debug" >&2; exit 2 ;;
esac

peer_pid=""
persist=""
cleanup() {
    if [ -n "$peer_pid" ]; then kill -TERM "$peer_pid" 2>/dev/null || true; wait "$peer_pid" 2>/dev/null || true; fi
    if [ -n "$persist" ]; then rm -rf "$persist"; fi
}
trap cleanup EXIT INT TERM

args=(--suite --markdown "$OUT" --command "make bench (scripts/bench.sh $*)")
scenarios="both,chat,cold,sockets,failover,idle"
if [ -n "$ETCD_BIN" ]; then
    args+=(--etcd-bin "$ETCD_BIN")
    scenarios="$scenarios,etcd"
else
    echo "[bench] no etcd on PATH (apt-get install -y etcd-server): the etcd peer is skipped" >&2
fi
args+=(--scenario "$scenarios")

if [ -n "${PEER_START:-}" ]; then
    persist="$(mktemp -d "${TMPDIR:-/tmp}/roost-bench-peer.XXXXXX")"
    peer_log="$persist.log"
    echo "[bench] starting the seed on workerd: $PEER_START $PEER_PORT (log $peer_log)" >&2
    PEER_PERSIST_DIR="$persist" "$PEER_START" "$PEER_PORT" >"$peer_log" 2>&1 &
    peer_pid=$!
    # Ready when it says so (npm may install on a first run: allow 10 min).
    for _ in $(seq 1 6000); do
        grep -q "Ready on http://" "$peer_log" 2>/dev/null && break
        kill -0 "$peer_pid" 2>/dev/null || { cat "$peer_log" >&2; echo "[bench] the peer exited" >&2; exit 1; }
        sleep 0.1
    done
    grep -q "Ready on http://" "$peer_log" || { echo "[bench] the peer did not get ready" >&2; exit 1; }
    args+=(--peer-url "http://127.0.0.1:$PEER_PORT")
else
    echo "[bench] no peer start script (../shared/peer/start.sh): the workerd peer is skipped" >&2
fi

log="$CARGO_TARGET_DIR/bench-last.log"
echo "[bench] ${run[*]} ${args[*]} $* (output also in $log)" >&2
set +e
"${run[@]}" "${args[@]}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 0 ] && [ "${BENCH_PROFILE:-release}" = release ]; then
    # The micro-benchmarks (benches/micro.rs, divan), appended as divan
    # prints them: medians are the figures to compare.
    micro="$CARGO_TARGET_DIR/bench-micro.log"
    echo "[bench] cargo bench --bench micro (output also in $micro)" >&2
    cargo bench --bench micro 2>/dev/null | tee "$micro"
    {
        echo
        echo "## Micro-benchmarks (\`cargo bench --bench micro\`)"
        echo
        echo "The hot paths on the real code, without HTTP: ring lookups, the typed keyspace,"
        echo "one executor's dispatch (read-only: dispatch + read barrier; one write: + group"
        echo "commit and WAL fsync), and a shard's group commit of 1/64/1024 writes."
        echo
        echo '```'
        grep -v '^Timer precision' "$micro"
        echo '```'
    } >> "$OUT"
fi
# Figures the fault tests measure rather than this suite (each with the
# command that measured it), kept beside the benches' own.
if [ -f "$ROOT/benches/fault-pauses.md" ]; then
    { echo; cat "$ROOT/benches/fault-pauses.md"; } >> "$OUT"
fi
echo "[bench] wrote $OUT (exit $status)" >&2
exit "$status"
