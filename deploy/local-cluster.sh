#!/usr/bin/env bash
# A local Roost cluster in one command: N nodes and one edge on loopback,
# each node with its own data directory, node gRPC over mutual TLS with
# certificates from `roost certs` (a CA and node, edge and operator
# certificates in $DATA/certs, kept across runs). Prints the edge URL and
# the nodes' PIDs; Ctrl-C (or SIGTERM) stops everything.
#
#   deploy/local-cluster.sh [NODES] [EDGE_PORT]      # defaults: 3 nodes, edge on 8787
#   ROOST_INSECURE=1 deploy/local-cluster.sh          # plain gRPC (--insecure)
#
# Kill a node by hand (kill -9 PID) and watch the edge keep serving: the
# shards it led elect new leaders on the other nodes within about a
# second or two. Restart it with the command printed for it.
set -euo pipefail
NODES="${1:-3}"
EDGE_PORT="${2:-8787}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${ROOST_CLUSTER_DIR:-$ROOT/roost-cluster}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/roost-target}"

bash "$ROOT/scripts/setup.sh"
(cd "$ROOT" && cargo build --quiet --bin roost)
BIN="$CARGO_TARGET_DIR/debug/roost"
mkdir -p "$DATA"

# tls_env ROLE: the ROOST_TLS_* of a process with ROLE's certificate.
CERTS="$DATA/certs"
tls_env() {
    if [ -n "${ROOST_INSECURE:-}" ]; then
        echo "ROOST_TLS_MODE=insecure"
    else
        echo "ROOST_TLS_CA_FILE=$CERTS/ca.crt ROOST_TLS_CERT_FILE=$CERTS/$1.crt ROOST_TLS_KEY_FILE=$CERTS/$1.key"
    fi
}
if [ -z "${ROOST_INSECURE:-}" ] && [ ! -f "$CERTS/node.crt" ]; then
    "$BIN" certs --out "$CERTS" >/dev/null
fi

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

seeds=""
for i in $(seq 1 "$NODES"); do
    port=$((7800 + i))
    args=(node --id "$i" --grpc-listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((9800 + i))"
          --data-dir "$DATA/node-$i")
    if [ -n "$seeds" ]; then args+=(--join "$seeds"); fi
    # shellcheck disable=SC2046 # tls_env prints VAR=VALUE words
    env $(tls_env node) "$BIN" "${args[@]}" > "$DATA/node-$i.log" 2>&1 &
    pids+=("$!")
    echo "node $i: pid $! grpc 127.0.0.1:$port log $DATA/node-$i.log"
    echo "        restart: env $(tls_env node) $BIN ${args[*]}"
    # Wait until the node is up before the next one joins through it.
    for _ in $(seq 1 600); do
        grep -q "roost node: grpc on" "$DATA/node-$i.log" 2>/dev/null && break
        sleep 0.1
    done
    seeds="${seeds:+$seeds,}127.0.0.1:$port"
done

# shellcheck disable=SC2046
env $(tls_env edge) "$BIN" edge --listen "127.0.0.1:$EDGE_PORT" --admin-listen 127.0.0.1:9800 \
    --grpc-listen "127.0.0.1:$((EDGE_PORT + 2))" --join "$seeds" \
    > "$DATA/edge.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 600); do
    grep -q "roost edge: serving" "$DATA/edge.log" 2>/dev/null && break
    sleep 0.1
done
echo "edge: pid $! log $DATA/edge.log"
echo "gRPC object API: 127.0.0.1:$((EDGE_PORT + 2))"
if [ -z "${ROOST_INSECURE:-}" ]; then
    echo "mutual TLS: certificates in $CERTS; a gRPC client presents one of them (any role may call objects)"
    echo "drain a node: env $(tls_env operator) $BIN node drain --join 127.0.0.1:7801 --id N"
else
    echo "WARNING: ROOST_INSECURE: node gRPC is plain and unauthenticated"
fi
echo "metrics: edge http://127.0.0.1:9800/metrics, node i http://127.0.0.1:980i/metrics"
echo "Roost cluster ready: http://127.0.0.1:$EDGE_PORT  (Ctrl-C to stop)"
wait
