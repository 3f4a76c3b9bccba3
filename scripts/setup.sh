#!/usr/bin/env bash
# Installs what building (and, with --test, testing) Roost needs that cargo
# cannot fetch, on Debian or Ubuntu: libclang (librocksdb-sys runs bindgen at
# build time). Idempotent, and silent when everything is already there. Run
# by `make dev`, (with --test) `make test` and (with --bench) `make bench`.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install the Rust toolchain with rustup" \
        "(see the Rust project's install page), then run this again." >&2
    exit 1
fi

# libclang-dev for the build; with --test, also what the tests run: openssl
# (certificates for the mTLS tests), iproute2 (`ip netns`, the partition
# test's and the nemesis's network namespaces) and nftables (`nft`: the
# nemesis's partitions, one-way cuts and packet loss inside them); with
# --bench, etcd-server (the replicated peer `make bench` measures against).
packages=(libclang-dev)
case "${1:-}" in
    --test) packages+=(openssl iproute2 nftables) ;;
    --bench) packages+=(etcd-server) ;;
esac
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
