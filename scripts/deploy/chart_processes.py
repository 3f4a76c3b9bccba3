"""Runs what the rendered Helm chart would run, as local processes.

Reads the manifests `helm template` produced (default values: a StatefulSet
of nodes and a Deployment of edges), and for each pod takes its container's
args and env exactly as rendered, fills in what Kubernetes would (the
downward API's pod name, namespace and index; `$(VAR)` expansion in args;
the ConfigMap and volume mounts as local directories) and maps the network
onto loopback: every pod's `0.0.0.0:PORT` and `<pod>.<headless>...:PORT`
become 127.0.0.1 with a port of its own. A Secret volume (the mTLS
certificates of tls.enabled) gets the Secret's files as rendered: the chart
makes a CA and the nodes' and edges' certificates itself, each naming its
role and 127.0.0.1 (where every node's address is mapped). Then it starts the nodes in order
(waiting for each one's readinessProbe, as OrderedReady does), the edges,
checks every probe path answers 200, increments a counter through an edge,
and stops everything with SIGTERM, expecting clean exits.

    python3 chart_processes.py MANIFESTS.yaml ROOST_BIN WORKDIR
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

NAMESPACE = "roost-ci"  # must match the namespace the manifests were rendered for
DEADLINE_S = 150


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def secret_files(secret, directory):
    """Writes each key of a rendered Secret into `directory` (mode 0600, as
    Roost's key files must not be world-readable)."""
    for key, value in secret.get("data", {}).items():
        path = os.path.join(directory, key)
        with open(path, "wb") as f:
            f.write(base64.b64decode(value))
        os.chmod(path, 0o600)


class Pod:
    def __init__(self, name, index, spec, workdir, configmaps, secrets):
        self.name, self.index, self.spec = name, index, spec
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.container = spec["template"]["spec"]["containers"][0]
        self.ports = {p["containerPort"]: free_port() for p in self.container["ports"]}
        self.named_ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.mounts = self._mounts(spec, configmaps, secrets)
        self.proc = None

    def _mounts(self, spec, configmaps, secrets):
        """Each volumeMount's path -> a local directory holding its files."""
        volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
        mounts = {}
        for m in self.container.get("volumeMounts", []):
            local = os.path.join(self.dir, m["name"])
            os.makedirs(local, exist_ok=True)
            volume = volumes.get(m["name"], {})
            if "configMap" in volume:
                for key, text in configmaps[volume["configMap"]["name"]].items():
                    with open(os.path.join(local, key), "w") as f:
                        f.write(text)
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                if name not in secrets:
                    raise RuntimeError(f"Secret {name} is not rendered by the chart")
                secret_files(secrets[name], local)
            # PVCs from volumeClaimTemplates and emptyDirs start empty.
            mounts[m["mountPath"]] = local
        return mounts

    def env(self):
        env = {}
        for e in self.container.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
                continue
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            env[e["name"]] = {
                "metadata.name": self.name,
                "metadata.namespace": NAMESPACE,
                "metadata.labels['apps.kubernetes.io/pod-index']": str(self.index),
            }[path]
        return env

    def command(self, env, pods):
        assert "command" not in self.container, "the image's ENTRYPOINT is expected"
        return [expand(a, env) for a in self.container["args"]]


def expand(s, env):
    """Kubernetes' $(VAR) expansion (unknown variables stay as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), s)


def localize(s, pod, pods, mounts):
    """Maps addresses and paths of the cluster onto this machine."""
    for pod_dns_pod in pods:
        host = f"{pod_dns_pod.name}.{pod_dns_pod.spec.get('serviceName', '')}.{NAMESPACE}.svc.cluster.local"
        s = re.sub(re.escape(host) + r":(\d+)", lambda m: f"127.0.0.1:{pod_dns_pod.ports[int(m.group(1))]}", s)
    s = re.sub(r"0\.0\.0\.0:(\d+)", lambda m: f"127.0.0.1:{pod.ports[int(m.group(1))]}", s)
    # A mount path at the start of the value or after `=`, in one pass.
    paths = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
    return re.sub(rf"(^|=)({paths})(?=/|$)", lambda m: m.group(1) + mounts[m.group(2)], s)


def main():
    manifests, binary, workdir = sys.argv[1:4]
    docs = [d for d in yaml.safe_load_all(open(manifests)) if d]
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    sts = [d for d in docs if d["kind"] == "StatefulSet"]
    deps = [d for d in docs if d["kind"] == "Deployment"]
    assert len(sts) == 1 and len(deps) == 1, "one StatefulSet (nodes) and one Deployment (edges)"
    sts, dep = sts[0], deps[0]
    sts_spec = dict(sts["spec"])
    nodes = [Pod(f"{sts['metadata']['name']}-{i}", i, sts_spec, workdir, configmaps, secrets)
             for i in range(sts_spec["replicas"])]
    edges = [Pod(f"{dep['metadata']['name']}-{i}", i, dep["spec"], workdir, configmaps, secrets)
             for i in range(dep["spec"].get("replicas", 1))]
    deadline = time.monotonic() + DEADLINE_S
    started = []
    ok = True

    def start(pod):
        env = pod.env()
        full_env = {**os.environ, **{k: localize(v, pod, nodes, pod.mounts) for k, v in env.items()}}
        full_env.pop("RUST_LOG", None)
        args = [localize(a, pod, nodes, pod.mounts) for a in pod.command(env, nodes)]
        print(f"  {pod.name}: roost {' '.join(args)}")
        log = open(os.path.join(pod.dir, "log"), "w")
        pod.proc = subprocess.Popen([binary, *args], env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=pod.dir)
        started.append(pod)

    def probe_url(pod, kind):
        probe = pod.container[kind]["httpGet"]
        port = probe["port"]
        port = pod.named_ports[port] if isinstance(port, str) else port
        return f"http://127.0.0.1:{pod.ports[port]}{probe['path']}"

    def wait_ready(pod):
        url = probe_url(pod, "readinessProbe")
        last = None
        while time.monotonic() < deadline:
            if pod.proc.poll() is not None:
                raise RuntimeError(f"{pod.name} exited with {pod.proc.returncode}")
            status, body = get(url)
            if status == 200:
                return
            last = (status, body.strip())
            time.sleep(0.2)
        raise RuntimeError(f"{pod.name} not ready in time: {last}")

    try:
        for pod in nodes:  # OrderedReady: one at a time, each ready first
            start(pod)
            wait_ready(pod)
            print(f"  {pod.name}: ready")
        for pod in edges:
            start(pod)
        for pod in edges:
            wait_ready(pod)
            print(f"  {pod.name}: ready")
        for pod in nodes + edges:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                status, body = get(probe_url(pod, kind))
                if status != 200:
                    raise RuntimeError(f"{pod.name} {kind} answered {status}: {body}")
        # Node ids are ordinal + 1, and every node is in the cluster.
        for pod in nodes:
            text = open(os.path.join(pod.dir, "log")).read()
            if f"node_id\":{pod.index + 1}" not in text.replace(" ", ""):
                raise RuntimeError(f"{pod.name}: no log line with node_id {pod.index + 1}")
        # A node is ready once it is a member; its shards may still be
        # moving to their ring placement, and the edge answers 503 until a
        # shard has a leader. A client retries that; so does this check.
        values = []
        for edge in edges:
            http = f"http://127.0.0.1:{edge.ports[edge.named_ports['http']]}"
            first = time.monotonic()
            while True:
                req = urllib.request.Request(f"{http}/counter/chart-ci/increment", method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        values.append(json.loads(r.read())["value"])
                        break
                except urllib.error.HTTPError as e:
                    if e.code != 503 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            print(f"  {edge.name}: increment answered {values[-1]} after {time.monotonic() - first:.1f} s")
        status, body = get(f"{http}/counter/chart-ci", timeout=10)
        print(f"  GET through {edges[-1].name}: {status} {body.strip()}")
        # A retried 503 may have been committed, so >= and not ==.
        if status != 200 or json.loads(body)["value"] != values[-1] or values[-1] < len(edges):
            raise RuntimeError(f"counter after increments {values}: {status} {body}")
    except Exception as e:  # report, then stop everything below
        print(f"FAILED: {e}")
        ok = False
        for pod in started:
            print(f"--- {pod.name} log (tail)")
            print("".join(open(os.path.join(pod.dir, "log")).readlines()[-6:]))
    finally:
        for pod in reversed(started):
            if pod.proc.poll() is None:
                pod.proc.send_signal(signal.SIGTERM)
        for pod in reversed(started):
            try:
                code = pod.proc.wait(timeout=30)
                if code != 0 and ok:
                    print(f"FAILED: {pod.name} exited with {code} after SIGTERM")
                    ok = False
            except subprocess.TimeoutExpired:
                pod.proc.kill()
                pod.proc.wait()
                print(f"FAILED: {pod.name} still running 30 s after SIGTERM")
                ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
