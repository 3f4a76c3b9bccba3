"""Renders the Helm chart (helm template) and lints it (helm lint --strict)
with helm-python-sdk, for scripts/deploy-checks.sh.

    python3 render.py render CHART VALUES.yaml|- NAMESPACE OUT.yaml
    python3 render.py lint CHART VALUES.yaml|-
    python3 render.py must-fail CHART 'key.path=value' MESSAGE_PART
"""

import sys

import helm_python
import yaml


def values(path):
    return {} if path == "-" else (yaml.safe_load(open(path)) or {})


def render(chart, vals, namespace):
    out = helm_python.Chart.load(chart).render(vals, name="roost", namespace=namespace)
    docs = [text for name, text in sorted(out.items()) if name.endswith(".yaml") and text.strip()]
    return "\n---\n".join(docs)


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
