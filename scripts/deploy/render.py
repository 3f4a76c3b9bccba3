"""Renders the Helm chart (helm template) and lints it (helm lint --strict)
with helm-python-sdk, for scripts/deploy-checks.sh.

    python3 render.py render CHART VALUES.yaml|- NAMESPACE OUT.yaml
    python3 render.py lint CHART VALUES.yaml|-
    python3 render.py must-fail CHART 'key.path=value' MESSAGE_PART
    python3 render.py guards CHART
"""

import os
import shutil
import sys
import tempfile

import helm_python
import yaml


def values(path):
    return {} if path == "-" else (yaml.safe_load(open(path)) or {})


def render(chart, vals, namespace):
    out = helm_python.Chart.load(chart).render(vals, name="roost", namespace=namespace)
    docs = [text for name, text in sorted(out.items()) if name.endswith(".yaml") and text.strip()]
    return "\n---\n".join(docs)


# A running release as `lookup` would return it: 16 shards, replication 3,
# 3 nodes (the chart's defaults).
RUNNING = """{{- define "roost.running" -}}
{"configMap": {"metadata": {"annotations": {"roost.io/shards": "16", "roost.io/replication": "3"}}},
 "statefulSet": {"spec": {"replicas": 3}}}
{{- end -}}
"""


def guards(chart):
    """The upgrade guards of templates/_ops.tpl against a running release:
    unchanged values and a scale-up render; changing shards or replication,
    or scaling down without nodes.scaleDownDrained, is refused."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "roost")
        shutil.copytree(chart, copy)
        with open(os.path.join(copy, "templates", "_00_running.tpl"), "w") as f:
            f.write(RUNNING)
        cases = [
            ("", None),
            ("nodes.replicas=5", None),
            ("config.node.shards=32", "config.node.shards cannot change"),
            ("nodes.replication=2", "nodes.replication cannot change"),
            ("nodes.replicas=2,nodes.replication=2", "nodes.replication cannot change"),
            ("nodes.replicas=2,nodes.replication=3", "is more than nodes.replicas"),
        ]
        # Scale-down, with replication lowered too would trip that guard
        # first: run it against a running release of 5 nodes.
        failures = []
        for setting, message in cases:
            failures += case(copy, setting, message)
        with open(os.path.join(copy, "templates", "_00_running.tpl"), "w") as f:
            f.write(RUNNING.replace('"replicas": 3', '"replicas": 5'))
        failures += case(copy, "nodes.replicas=4", "first drain each node that goes away")
        failures += case(copy, "nodes.replicas=4,nodes.scaleDownDrained=4", None)
        # A release installed when the default was 64 shards: the new
        # default is refused, its own count renders.
        with open(os.path.join(copy, "templates", "_00_running.tpl"), "w") as f:
            f.write(RUNNING.replace('"16"', '"64"'))
        failures += case(copy, "", "config.node.shards cannot change")
        failures += case(copy, "config.node.shards=64", None)
        for f in failures:
            print(f)
        sys.exit(1 if failures else 0)


def case(chart, setting, message):
    vals = helm_python.parse_set_string(setting) if setting else {}
    try:
        render(chart, vals, "default")
    except helm_python.HelmError as e:
        if message and message in str(e):
            print(f"{setting}: refused as expected")
            return []
        return [f"{setting or 'unchanged values'}: refused: {e}"]
    if message:
        return [f"{setting}: rendered; expected a refusal with {message!r}"]
    print(f"{setting or 'unchanged values'}: renders")
    return []


def main():
    cmd, chart = sys.argv[1:3]
    if cmd == "render":
        vals_path, namespace, out = sys.argv[3:6]
        text = render(chart, values(vals_path), namespace)
        kinds = [d["kind"] for d in yaml.safe_load_all(text) if d]
        open(out, "w").write(text + "\n")
        print(f"{len(kinds)} objects: {', '.join(sorted(set(kinds)))}")
    elif cmd == "lint":
        report = helm_python.lint(chart, values(sys.argv[3]), strict=True)
        bad = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        for m in report["messages"]:
            print(m)
        sys.exit(1 if bad else 0)
    elif cmd == "guards":
        guards(chart)
    elif cmd == "must-fail":
        setting, message = sys.argv[3:5]
        vals = helm_python.parse_set_string(setting)
        try:
            render(chart, vals, "default")
        except helm_python.HelmError as e:
            if message in str(e):
                print(f"refused as expected: {e}")
                return
            sys.exit(f"refused, but without {message!r}: {e}")
        sys.exit(f"{setting} rendered; expected a failure")


if __name__ == "__main__":
    main()
