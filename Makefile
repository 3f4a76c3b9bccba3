# Roost's two everyday commands:
#   make dev    start `roost dev` on http://127.0.0.1:8787 (data in ./roost-data);
#               extra flags with ARGS, e.g. make dev ARGS="--listen 0.0.0.0:8787"
#   make test   format check, clippy, and every test (what CI runs)
#   make ops-checks
#               the deploy artifacts, offline: promtool on a running roost's
#               /metrics, the alert rules and their unit tests, the Grafana
#               dashboards against Grafana's schema (CI runs it after test)
#   make bench  the benchmark suite (release builds, ~10 min): roost dev, a
#               3-node cluster, the seed on workerd and a 3-member etcd side
#               by side; writes BENCHMARKS.md (scripts/bench.sh)
#   make nemesis DURATION=30m
#               the randomized fault suite for as long as asked (seconds, or
#               e.g. 30m, 1h; default 10m): real nodes in network namespaces,
#               two edges, a seeded nemesis, a linearizability checker; prints
#               its summary (needs root; SEED=<n> replays a run, NODES=5).
#               `make test` runs a short one (45 s of faults).
#   make fuzz   the property tests (proptest) at length: router decoders, the
#               router itself, protobuf conversions, storage list against a
#               BTreeMap model, the Raft service under arbitrary messages.
#               `make test` runs them briefly; here PROPTEST_CASES cases
#               each (default 10000), e.g. PROPTEST_CASES=100000 make fuzz
#   make upgrade-test SOCKETS=1000
#               the rolling-upgrade test at full size: 3 nodes, two edges,
#               SOCKETS chat sockets in rooms of 20, every node restarted
#               with SIGTERM, then one SIGKILLed; prints disconnects and
#               lost/duplicated/reordered messages and the longest pauses
#               (`make test` runs it with 40 sockets)
#   make deploy-checks
#               the Helm chart, Dockerfile and compose file, offline: render,
#               helm lint, Kubernetes schemas, hadolint, compose schema, and
#               the chart's commands run as local processes (CI: after ops-checks)
#
# `make dev` runs the debug build: it is the profile `make test` builds too,
# so the two share one compiled RocksDB (a clean build of either profile takes
# about 20 minutes on 2 cores). `make dev-release` builds the optimized binary
# instead: faster to run, but a second, separate build.
#
# Builds go to CARGO_TARGET_DIR, outside the clone, so that every clone on a
# machine (and every CI run) reuses them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/roost-target
ARGS ?=
DURATION ?= 10m
SOCKETS ?= 1000
SEED ?=
NODES ?= 3

.PHONY: setup dev dev-release test fuzz bench ops-checks deploy-checks nemesis upgrade-test

setup:
	@bash scripts/setup.sh

dev: setup
	cargo run -- dev $(ARGS)

dev-release: setup
	cargo run --release -- dev $(ARGS)

test:
	@bash scripts/setup.sh --test
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace --all-targets
	cargo test --workspace --doc
	# A short smoke run of every benchmark scenario against roost dev (and
	# failover on a tiny 3-node cluster), so the suite cannot rot. (The
	# micro-benchmarks already ran once each above: divan's test mode.)
	cargo test --bench load -- --bench --smoke

# The randomized fault suite (tests/nemesis/), as long as DURATION; the
# summary is printed at the end. The short run is part of `make test`
# (cargo test --all-targets runs it with its 45 s default). It runs copies
# of the binaries, so building meanwhile is safe (scripts/nemesis.sh).
nemesis:
	@bash scripts/setup.sh --test
	NEMESIS_DURATION=$(DURATION) NEMESIS_SEED=$(SEED) NEMESIS_NODES=$(NODES) \
		bash scripts/nemesis.sh
upgrade-test: setup
	ROOST_UPGRADE_SOCKETS=$(SOCKETS) cargo test --workspace --test cluster upgrade:: -- --nocapture

# The property tests with many cases (see the list at the top).
PROPTEST_CASES ?= 10000
fuzz: setup
	PROPTEST_CASES=$(PROPTEST_CASES) cargo test --lib -- convert_props \
		router::tests list_model any_request_gets_an_allowed_json_answer
	PROPTEST_CASES=$(PROPTEST_CASES) cargo test --test raft_fuzz

# Release builds of roost and the load generator, then the whole suite
# with its peers; writes BENCHMARKS.md.
bench:
	@bash scripts/setup.sh --bench
	bash scripts/bench.sh

# Builds exactly what `make test` builds (a no-op right after it), so that the
# debug `roost` binary the checks start is current.
ops-checks: setup
	cargo test --workspace --all-targets --no-run
	bash scripts/ops-checks.sh

# Also needs the debug `roost` binary (for the chart's processes); promtool
# comes from ops-checks.
deploy-checks: setup
	cargo build --bin roost
	bash scripts/deploy-checks.sh
