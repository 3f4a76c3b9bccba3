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
role and 127.0.0.1 (where every node's address is mapped). Then it starts
the nodes as the StatefulSet's podManagementPolicy says (Parallel: all at
once, in a random order; OrderedReady: each after the previous one is
ready), the edges, checks every probe path answers 200, increments a counter
through an edge, runs the chart's `helm test` Pod's script against them (and the
backup CronJob's command once, when the values enable it), and
stops everything with SIGTERM, expecting clean exits. With --crash, before
stopping: every node SIGKILLed at once and all restarted together in a
random order; each must become ready again, the acknowledged increments must
all be there, and the counter must take writes.

    python3 chart_processes.py MANIFESTS.yaml ROOST_BIN WORKDIR [--crash]
"""

import base64
import glob
import json
import os
import random
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


_handed_out = set()


def free_port():
    """A loopback port nothing listens on now and that this run has not
    handed out before: ports are picked for every pod before any process
    binds them, and the kernel may offer a released port again."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


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
        self.ports = {p["containerPort"]: free_port() for p in self.container.get("ports", [])}
        self.named_ports = {p["name"]: p["containerPort"] for p in self.container.get("ports", [])}
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


def run_helm_test(pod, docs, nodes, edges):
    """Runs a `helm test` Pod's `sh -c` script here: each Service's DNS name
    and port become the first local pod behind it."""
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c"], "a test Pod runs `sh -c SCRIPT`"
    script = container["args"][0]
    for svc in [d for d in docs if d["kind"] == "Service"]:
        component = svc["spec"].get("selector", {}).get("app.kubernetes.io/component")
        behind = {"node": nodes, "edge": edges}.get(component)
        if not behind:
            continue
        for port in svc["spec"]["ports"]:
            target = port["targetPort"]
            target = behind[0].named_ports[target] if isinstance(target, str) else target
            host = f"{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{port['port']}"
            script = script.replace(host, f"127.0.0.1:{behind[0].ports[target]}")
    for pod_ in nodes + edges:
        script = localize(script, pod_, nodes, {"/nonexistent": "/nonexistent"})
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    print("".join(f"  helm test {pod['metadata']['name']}: {line}\n" for line in result.stdout.splitlines()), end="")
    if result.returncode != 0:
        raise RuntimeError(f"helm test {pod['metadata']['name']} failed: {result.stderr.strip()}")


def main():
    manifests, binary, workdir = sys.argv[1:4]
    crash = "--crash" in sys.argv[4:]
    # --app kv: the binary is the kv example's (a user's app on the chart):
    # its router and classes instead of the seed app's.
    kv = "--app=kv" in sys.argv[4:]
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
    http = None
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

    def start_nodes(policy):
        if policy == "Parallel":  # all at once, in no particular order
            order = list(nodes)
            random.shuffle(order)
            print(f"  Parallel: starting {[p.name for p in order]} at once")
            for pod in order:
                start(pod)
            for pod in order:
                wait_ready(pod)
                print(f"  {pod.name}: ready")
        else:  # OrderedReady: one at a time, each ready first
            for pod in nodes:
                start(pod)
                wait_ready(pod)
                print(f"  {pod.name}: ready")

    def kv_op(http, op):
        """One op of the kv example's object `chart-ci`."""
        return urllib.request.Request(f"{http}/kv/chart-ci", method="POST",
                                      data=json.dumps(op).encode(),
                                      headers={"content-type": "application/json"})

    def read_counter(http):
        """The counter's value through `http`: (status, value or body)."""
        if kv:
            try:
                with urllib.request.urlopen(kv_op(http, {"op": "get", "key": "n"}), timeout=10) as r:
                    return r.status, int(json.loads(r.read())["value"])
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode(errors="replace")
        status, body = get(f"{http}/counter/chart-ci", timeout=10)
        return status, (json.loads(body)["value"] if status == 200 else body)

    def increment(edge):
        """POST an increment through `edge`, retrying 503 (no leader yet)."""
        http = f"http://127.0.0.1:{edge.ports[edge.named_ports['http']]}"
        while True:
            if kv:
                req = kv_op(http, {"op": "slow_increment", "key": "n"})
            else:
                req = urllib.request.Request(f"{http}/counter/chart-ci/increment", method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return json.loads(r.read())["value"]
            except (urllib.error.HTTPError, OSError) as e:
                code = getattr(e, "code", None)
                if code not in (None, 503) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    try:
        start_nodes(sts_spec.get("podManagementPolicy", "OrderedReady"))
        for pod in edges:
            start(pod)
        for pod in edges:
            wait_ready(pod)
            print(f"  {pod.name}: ready")
        # Every probe answers 200 (readiness may blink while shard
        # leaderships move to their preferred nodes: a kubelet tolerates
        # failureThreshold misses, so this waits, up to the deadline).
        for pod in nodes + edges:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                while True:
                    status, body = get(probe_url(pod, kind))
                    if status == 200:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{pod.name} {kind} answered {status}: {body}")
                    time.sleep(0.2)
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
            values.append(increment(edge))
            print(f"  {edge.name}: increment answered {values[-1]} after {time.monotonic() - first:.1f} s")
        status, value = read_counter(http)
        print(f"  read through {edges[-1].name}: {status} {value}")
        # A retried 503 may have been committed, so >= and not ==.
        if status != 200 or value != values[-1] or values[-1] < len(edges):
            raise RuntimeError(f"counter after increments {values}: {status} {value}")
        if kv:
            # One object calls another (maybe on another node): the entry
            # is in the journal once the call is acknowledged.
            op = {"op": "put_and_log", "key": "k", "value": "v", "log": "chart-ci"}
            with urllib.request.urlopen(kv_op(http, op), timeout=30) as r:
                logged = json.loads(r.read())
            status, body = get(f"{http}/log/chart-ci", timeout=10)
            print(f"  put_and_log: {logged}; GET /log/chart-ci: {status} {body.strip()}")
            if status != 200 or "k=v" not in json.loads(body)["entries"]:
                raise RuntimeError(f"the journal lacks the call's entry: {status} {body}")
        else:
            # `helm test`: the chart's test Pod's script (the seed app's
            # routes), its cluster names mapped onto the local processes.
            for test in [d for d in docs if d["kind"] == "Pod"
                         and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]:
                run_helm_test(test, docs, nodes, edges)
        # The backup CronJob (backup.enabled): one run of its Job's
        # command, its PVC a local directory; it must write a backup.
        for cron in [d for d in docs if d["kind"] == "CronJob"]:
            job = Pod(cron["metadata"]["name"], 0, cron["spec"]["jobTemplate"]["spec"], workdir, configmaps, secrets)
            env = job.env()
            full_env = {**os.environ, **{k: localize(v, job, nodes, job.mounts) for k, v in env.items()}}
            full_env.pop("RUST_LOG", None)
            args = [localize(a, job, nodes, job.mounts) for a in job.command(env, nodes)]
            print(f"  {job.name}: roost {' '.join(args)}")
            result = subprocess.run([binary, *args], env=full_env, capture_output=True, text=True,
                                    cwd=job.dir, timeout=120)
            print(f"  {job.name}: exit {result.returncode}: {result.stdout.strip()}")
            manifests_written = glob.glob(os.path.join(job.mounts["/backup"], "backup-*", "manifest.json"))
            if result.returncode != 0 or len(manifests_written) != 1:
                raise RuntimeError(f"{job.name} wrote {manifests_written}: {result.stderr.strip()[-2000:]}")
        if crash:
            # A whole-cluster crash (node-pool upgrade, zone outage): every
            # node SIGKILLed at once, then all restarted together in a
            # random order on their volumes, as the StatefulSet would.
            for pod in nodes:
                pod.proc.kill()
            for pod in nodes:
                pod.proc.wait()
                started.remove(pod)
            print("  SIGKILL to every node")
            deadline = time.monotonic() + DEADLINE_S
            start_nodes("Parallel")
            acked = values[-1]
            after = increment(edges[0])
            status, value = read_counter(http)
            print(f"  after the restart: increment answered {after}, read {status} {value}")
            # Every acknowledged increment survived, and the cluster serves.
            if after <= acked or status != 200 or value < after:
                raise RuntimeError(f"acknowledged {acked}, then {after}: {status} {value}")
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
