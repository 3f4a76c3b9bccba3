#!/usr/bin/env bash
# Offline checks of Roost's operations artifacts (what `make ops-checks` and
# CI run after `make test`):
#
#   - `promtool check metrics` on the /metrics of a running `roost dev`
#     (the debug binary in $CARGO_TARGET_DIR, on port 0, with a temp dir);
#   - `promtool check rules` and `promtool test rules` on deploy/prometheus;
#   - every Grafana dashboard in deploy/grafana against Grafana's dashboard
#     JSON schema, importable as is (a `datasource` variable, no
#     `__inputs`/`__requires`), and every panel's PromQL parsed by promtool;
#   - every metric the rules and dashboards use is defined in
#     src/telemetry/metrics.rs.
#
# Tools are installed on first use, at pinned versions, and reused: promtool
# from Debian's `prometheus` package (only if `promtool` is missing), the
# npm and PyPI tools under $ROOST_OPS_CACHE (default ~/.cache/roost-ops).
# Prints `ops-checks: N passed, N failed` and fails if any check failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned tool versions. ts-json-schema-generator 2.4 is the last release
# that runs on Node 20 (Debian's and this CI's).
GRAFANA_SCHEMA_VERSION=13.2.3
TS_JSON_SCHEMA_GENERATOR_VERSION=2.4.0
CHECK_JSONSCHEMA_VERSION=0.39.0

CACHE="${ROOST_OPS_CACHE:-$HOME/.cache/roost-ops}"
TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/roost-target}"
ROOST_BIN="${ROOST_BIN:-$TARGET_DIR/debug/roost}"
WORK="$(mktemp -d)"
ROOST_PID=""
started_at=$SECONDS

cleanup() {
    if [ -n "$ROOST_PID" ]; then
        kill -9 "$ROOST_PID" 2>/dev/null
        wait "$ROOST_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=scripts/lib/checks.sh
source scripts/lib/checks.sh

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        echo "need root to run: $*" >&2
        return 1
    fi
}

# --- tools ------------------------------------------------------------------

install_promtool() {
    command -v promtool >/dev/null && return 0
    echo "installing promtool (Debian package prometheus)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -q --no-install-recommends prometheus >/dev/null ||
        { as_root apt-get update -q >/dev/null &&
            as_root apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
}

NPM_DIR="$CACHE/npm-grafana-schema-$GRAFANA_SCHEMA_VERSION-tjsg-$TS_JSON_SCHEMA_GENERATOR_VERSION"
DASHBOARD_SCHEMA="$CACHE/grafana-dashboard-$GRAFANA_SCHEMA_VERSION.schema.json"

# Grafana's dashboard JSON schema, generated once from the `Dashboard`
# TypeScript type of @grafana/schema.
install_dashboard_schema() {
    [ -s "$DASHBOARD_SCHEMA" ] && return 0
    if [ ! -f "$NPM_DIR/.installed" ]; then
        echo "installing @grafana/schema $GRAFANA_SCHEMA_VERSION and ts-json-schema-generator $TS_JSON_SCHEMA_GENERATOR_VERSION"
        mkdir -p "$NPM_DIR" &&
            npm install --prefix "$NPM_DIR" --no-audit --no-fund --ignore-scripts --loglevel=error \
                "@grafana/schema@$GRAFANA_SCHEMA_VERSION" \
                "ts-json-schema-generator@$TS_JSON_SCHEMA_GENERATOR_VERSION" >/dev/null &&
            touch "$NPM_DIR/.installed" || return 1
    fi
    node "$NPM_DIR/node_modules/ts-json-schema-generator/bin/ts-json-schema-generator" \
        --path "$NPM_DIR/node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts" \
        --type Dashboard --no-type-check -o "$DASHBOARD_SCHEMA.tmp" &&
        mv "$DASHBOARD_SCHEMA.tmp" "$DASHBOARD_SCHEMA"
}

VENV="$CACHE/venv-check-jsonschema-$CHECK_JSONSCHEMA_VERSION"

install_check_jsonschema() {
    [ -x "$VENV/bin/check-jsonschema" ] && return 0
    echo "installing check-jsonschema $CHECK_JSONSCHEMA_VERSION"
    rm -rf "$VENV"
    python3 -m venv "$VENV" &&
        "$VENV/bin/pip" install -q --disable-pip-version-check \
            "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
}

# --- checks -----------------------------------------------------------------

# Starts `roost dev`, sends it a few requests, and scrapes /metrics into
# $WORK/metrics.txt.
scrape_running_roost() {
    if [ ! -x "$ROOST_BIN" ]; then
        echo "no roost binary at $ROOST_BIN (run make test first, or set ROOST_BIN)"
        return 1
    fi
    local out="$WORK/roost.out"
    RUST_LOG=warn "$ROOST_BIN" dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --data-dir "$WORK/data" --shards 4 >"$out" 2>"$WORK/roost.err" &
    ROOST_PID=$!
    local admin="" http=""
    for _ in $(seq 1 600); do
        admin="$(sed -n 's|^roost dev: admin on http://||p' "$out")"
        [ -n "$admin" ] && break
        if ! kill -0 "$ROOST_PID" 2>/dev/null; then
            echo "roost dev exited:"
            cat "$WORK/roost.err"
            return 1
        fi
        sleep 0.2
    done
    if [ -z "$admin" ]; then
        echo "roost dev printed no admin line within 120 s"
        return 1
    fi
    http="$(sed -n 's|^roost dev: serving http://\([^ ]*\).*|\1|p' "$out")"
    # Some traffic, so that request, object, storage and commit series exist.
    curl -fsS -X POST "http://$http/counter/ops/increment" >/dev/null &&
        curl -fsS "http://$http/counter/ops" >/dev/null &&
        curl -fsS "http://$http/api/ping" >/dev/null &&
        curl -sS -o /dev/null "http://$http/no/such/route" || return 1
    curl -fsS "http://$admin/metrics" >"$WORK/metrics.txt" || return 1
    curl -fsS "http://$admin/admin/hot-objects" | python3 -c 'import json,sys; json.load(sys.stdin)["objects"]' ||
        return 1
    kill -TERM "$ROOST_PID"
    wait "$ROOST_PID"
    local status=$?
    ROOST_PID=""
    if [ "$status" != 0 ]; then
        echo "roost dev exited with $status after SIGTERM"
        cat "$WORK/roost.err"
        return 1
    fi
}

# promtool's lint, and the families a scrape must have after some traffic.
check_scraped_metrics() {
    [ -s "$WORK/metrics.txt" ] || { echo "nothing scraped"; return 1; }
    promtool check metrics <"$WORK/metrics.txt" || return 1
    local missing=0
    for family in roost_build_info roost_http_requests_total roost_http_request_duration_seconds \
        roost_object_events_total roost_object_commit_wait_seconds roost_storage_operations_total \
        roost_raft_is_leader roost_raft_apply_lag_entries roost_raft_batch_writes \
        roost_rocksdb_sst_files_bytes roost_rocksdb_write_stopped roost_hot_object_busy_ratio \
        roost_disk_size_bytes roost_disk_available_bytes process_resident_memory_bytes \
        process_open_fds process_cpu_seconds_total; do
        if ! grep -q "^# TYPE $family " "$WORK/metrics.txt"; then
            echo "missing metric family $family"
            missing=1
        fi
    done
    return "$missing"
}

# The structure Grafana needs to import a dashboard as is.
check_dashboard_importable() {
    python3 - "$1" <<'EOF'
import json, sys
path = sys.argv[1]
d = json.load(open(path))
problems = []
for key in ("__inputs", "__requires"):
    if key in d:
        problems.append(f"{key} is export-only; leave it out")
variables = d.get("templating", {}).get("list", [])
if not any(v.get("name") == "datasource" and v.get("type") == "datasource"
           and v.get("query") == "prometheus" for v in variables):
    problems.append("no `datasource` variable of type datasource (query: prometheus)")
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
uids = set()
for p in panels(d.get("panels", [])):
    if p.get("id") in uids:
        problems.append(f"panel id {p.get('id')} used twice")
    uids.add(p.get("id"))
    if p.get("type") == "row":
        continue
    for owner in [p] + p.get("targets", []):
        ds = owner.get("datasource", {})
        if ds.get("uid") != "${datasource}":
            problems.append(f"panel {p.get('title')!r}: datasource {ds} is not ${{datasource}}")
    if not p.get("targets"):
        problems.append(f"panel {p.get('title')!r} has no query")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
EOF
}

# Every panel's PromQL, with Grafana's variables substituted, as recording
# rules for `promtool check rules` to parse.
check_dashboard_promql() {
    local rules="$WORK/$(basename "$1" .json).rules.yml"
    python3 - "$1" "$rules" <<'EOF' || return 1
import json, re, sys
path, out = sys.argv[1], sys.argv[2]
d = json.load(open(path))
builtin = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}
def substitute(expr):
    def var(m):
        name = m.group(1) or m.group(2)
        return builtin.get(name, ".+")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", var, expr)
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
rules = []
for p in panels(d.get("panels", [])):
    for t in p.get("targets", []):
        if "expr" in t:
            rules.append({"record": f"dashboard:panel_{p['id']}_{t.get('refId', 'A')}",
                          "expr": substitute(t["expr"])})
for v in d.get("templating", {}).get("list", []):
    q = v.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    m = re.match(r"label_values\((.*),\s*\w+\)$", q or "")
    if v.get("type") == "query" and m:
        rules.append({"record": f"dashboard:variable_{v['name']}", "expr": substitute(m.group(1))})
if not rules:
    sys.exit("no PromQL found")
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(out, "w"), indent=1)
print(f"{len(rules)} expressions")
EOF
    promtool check rules "$rules"
}

# Metric names used by the rules and dashboards, against the definitions.
check_metric_names() {
    python3 - deploy/prometheus/roost-rules.yml deploy/grafana/*.json <<'EOF'
import re, sys
defined = set(re.findall(r'"(roost_[a-z0-9_]+)"', open("src/telemetry/metrics.rs").read()))
unknown = {}
for path in sys.argv[1:]:
    for name in re.findall(r"\broost_[a-z0-9_]+", open(path).read()):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in defined and base not in defined:
            unknown.setdefault(name, path)
for name, path in sorted(unknown.items()):
    print(f"{path}: {name} is not defined in src/telemetry/metrics.rs")
sys.exit(1 if unknown else 0)
EOF
}

# --- run --------------------------------------------------------------------

echo "ops-checks: installing tools (cached in $CACHE)"
mkdir -p "$CACHE"
check "install promtool" install_promtool
check "install Grafana's dashboard schema" install_dashboard_schema
check "install check-jsonschema" install_check_jsonschema
echo "ops-checks: tools ready after $((SECONDS - started_at)) s"

check "roost dev serves /metrics and /admin/hot-objects" scrape_running_roost
check "promtool check metrics (live scrape)" check_scraped_metrics
check "promtool check rules" promtool check rules deploy/prometheus/roost-rules.yml
check "promtool test rules" promtool test rules deploy/prometheus/roost-rules.test.yml
for dashboard in deploy/grafana/*.json; do
    name="$(basename "$dashboard")"
    check "$name: Grafana dashboard schema" \
        "$VENV/bin/check-jsonschema" --schemafile "$DASHBOARD_SCHEMA" "$dashboard"
    check "$name: importable as is" check_dashboard_importable "$dashboard"
    check "$name: PromQL parses" check_dashboard_promql "$dashboard"
done
check "rules and dashboards use defined metrics" check_metric_names

summary ops-checks
