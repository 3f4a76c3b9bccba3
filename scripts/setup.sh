#!/usr/bin/env bash
# Installs what building Roost needs that cargo cannot fetch, on Debian or
# Ubuntu: libclang (librocksdb-sys runs bindgen at build time). Idempotent,
# and silent when everything is already there. Run by `make dev`/`make test`.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install the Rust toolchain with rustup" \
        "(see the Rust project's install page), then run this again." >&2
    exit 1
fi

if ! dpkg -s libclang-dev >/dev/null 2>&1; then
    echo "setup: installing libclang-dev (needed to build RocksDB's bindings)"
    as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev
fi
