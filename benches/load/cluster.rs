//! A local Roost cluster for the bench: `roost node` × N and one
//! `roost edge` on loopback (ports from the OS, a temporary directory), as
//! `deploy/local-cluster.sh` and `tests/cluster/procs.rs` start them, and
//! what the bench asks of it: the shard leaders as the nodes' `Cluster.Watch`
//! views report them, and SIGKILL of one node.
//!
//! With mutual TLS (the default of a real deployment) `roost certs` makes a
//! CA and the role certificates first: nodes run with the node certificate,
//! the edge with the edge's, and the bench watches with the operator's.
//! Without it, every process runs `--insecure` (plain gRPC), to report what
//! TLS costs.
//!
//! Owns: the processes and their data directories. It never drives load.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use roost::rpc::pb;
use roost::rpc::pb::cluster_client::ClusterClient;
use roost::rpc::tls::{Tls, TlsFiles};
use tokio::process::Command;

use crate::server::{Markers, Spawned, spawn};

pub struct Cluster {
    nodes: BTreeMap<u64, Spawned>,
    /// gRPC address of each node, including killed ones.
    pub addrs: BTreeMap<u64, String>,
    edge: Option<Spawned>,
    pub edge_url: String,
    /// Admin (metrics) URL of each live process, the edge included.
    admins: BTreeMap<String, String>,
    pub shards: u16,
    /// How the bench itself dials the nodes (the operator's certificate).
    tls: Tls,
    dir: tempfile::TempDir,
}

/// The files of `role`'s certificate made by `roost certs` in `pki`.
fn role_files(pki: &Path, role: &str) -> TlsFiles {
    TlsFiles {
        ca_file: pki.join("ca.crt"),
        cert_file: pki.join(format!("{role}.crt")),
        key_file: pki.join(format!("{role}.key")),
        server_name: None,
    }
}

/// `ROOST_TLS_*` for `files`, or `--insecure` when there are none.
fn with_tls(cmd: &mut Command, files: Option<&TlsFiles>) {
    match files {
        Some(f) => {
            cmd.env("ROOST_TLS_CA_FILE", &f.ca_file)
                .env("ROOST_TLS_CERT_FILE", &f.cert_file)
                .env("ROOST_TLS_KEY_FILE", &f.key_file);
        }
        None => {
            cmd.arg("--insecure");
        }
    }
}

/// Makes a CA and the role certificates in `pki` with `roost certs`.
async fn make_certs(bin: &Path, pki: &Path) -> Result<(), String> {
    let out = Command::new(bin)
        .arg("certs")
        .arg("--out")
        .arg(pki)
        .args(["--days", "2"])
        .output()
        .await
        .map_err(|e| format!("roost certs: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "roost certs: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn roost_cmd(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.envs(crate::server::OPEN_LIMITS.iter().copied());
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
    );
    cmd
}

impl Cluster {
    /// Starts `n` nodes (node 1 bootstraps, the others join through it),
    /// waits until every shard has a leader with `min(n, 3)` voters and
    /// (for at most `spread_wait`) until every node leads a shard, as the
    /// nodes claim their preferred leaderships, then starts the edge.
    /// `mtls`: every gRPC hop over mutual TLS, else plain (`--insecure`).
    pub async fn start(
        bin: &Path,
        n: u64,
        shards: u16,
        spread_wait: Duration,
        mtls: bool,
    ) -> Result<Cluster, String> {
        Cluster::start_env(bin, n, shards, spread_wait, mtls, &[]).await
    }

    /// [`start`](Self::start), with `env` set for every node.
    pub async fn start_env(
        bin: &Path,
        n: u64,
        shards: u16,
        spread_wait: Duration,
        mtls: bool,
        env: &[(&str, &str)],
    ) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("roost-bench-cluster-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let pki = dir.path().join("pki");
        let tls = if mtls {
            make_certs(bin, &pki).await?;
            Tls::load(&role_files(&pki, "operator")).map_err(|e| e.to_string())?
        } else {
            Tls::plain()
        };
        let files = |role: &str| mtls.then(|| role_files(&pki, role));
        let mut nodes = BTreeMap::new();
        let mut addrs: BTreeMap<u64, String> = BTreeMap::new();
        let mut admins = BTreeMap::new();
        for id in 1..=n {
            let mut cmd = roost_cmd(bin);
            cmd.envs(env.iter().copied());
            cmd.arg("node");
            with_tls(&mut cmd, files("node").as_ref());
            cmd.args(["--id", &id.to_string()])
                .args(["--grpc-listen", "127.0.0.1:0"])
                .args(["--admin-listen", "127.0.0.1:0"])
                .args(["--shards", &shards.to_string()])
                .arg("--data-dir")
                .arg(dir.path().join(format!("node-{id}")));
            if let Some(first) = addrs.get(&1) {
                cmd.args(["--join", first.as_str()]);
            }
            let p = spawn(
                cmd,
                &format!("roost node {id}"),
                &dir.path().join(format!("node-{id}.log")),
                Markers::Stdout,
                &["roost node: grpc on ", "roost node: admin on http://"],
            )
            .await
            .map_err(|e| e.to_string())?;
            addrs.insert(id, p.addrs[0].clone());
            admins.insert(format!("node-{id}"), format!("http://{}", p.addrs[1]));
            nodes.insert(id, p);
        }
        let mut cluster = Cluster {
            nodes,
            addrs,
            edge: None,
            edge_url: String::new(),
            admins,
            shards,
            tls,
            dir,
        };
        cluster
            .wait_converged(n.min(3) as usize, Duration::from_secs(180))
            .await?;
        let deadline = Instant::now() + spread_wait;
        loop {
            let leading: std::collections::BTreeSet<u64> =
                cluster.leaders().await.into_values().collect();
            if leading.len() as u64 >= n.min(u64::from(shards)) {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "load: after {spread_wait:?} only nodes {leading:?} lead shards; going on"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let join: Vec<String> = cluster.addrs.values().cloned().collect();
        let mut cmd = roost_cmd(bin);
        cmd.arg("edge");
        with_tls(&mut cmd, files("edge").as_ref());
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--join", &join.join(",")]);
        let edge = spawn(
            cmd,
            "roost edge",
            &cluster.dir.path().join("edge.log"),
            Markers::Stdout,
            &[
                "roost edge: serving http://",
                "roost edge: admin on http://",
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
        cluster.edge_url = format!("http://{}", edge.addrs[0]);
        cluster
            .admins
            .insert("edge".into(), format!("http://{}", edge.addrs[1]));
        cluster.edge = Some(edge);
        Ok(cluster)
    }

    pub fn edge_pid(&self) -> Option<u32> {
        self.edge.as_ref().and_then(Spawned::pid)
    }

    pub fn node_pids(&self) -> Vec<u32> {
        self.nodes.values().filter_map(Spawned::pid).collect()
    }

    fn live_addrs(&self) -> Vec<String> {
        self.nodes.keys().map(|id| self.addrs[id].clone()).collect()
    }

    /// For each shard, the leader its own leader reports (the views of the
    /// live nodes).
    pub async fn leaders(&self) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for addr in self.live_addrs() {
            if let Some(view) = view_of(&self.tls, &addr).await {
                for l in view.leaders {
                    if !l.voters.is_empty() {
                        out.insert(l.shard, l.node);
                    }
                }
            }
        }
        out
    }

    /// Waits until every shard has a leader with `voters` voters.
    async fn wait_converged(&self, voters: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut groups = BTreeMap::new();
            for addr in self.live_addrs() {
                if let Some(view) = view_of(&self.tls, &addr).await {
                    for l in view.leaders {
                        if l.voters.len() == voters {
                            groups.insert(l.shard, l.node);
                        }
                    }
                }
            }
            if groups.len() == usize::from(self.shards) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "cluster did not converge within {timeout:?}: {} of {} shards with {voters} voters",
                    groups.len(),
                    self.shards
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until no process reports an open WebSocket (the closes of a
    /// scenario's sockets have all been handled), for at most `timeout`.
    pub async fn wait_sockets_closed(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut open = 0.0;
            for admin in self.admins.values() {
                open += crate::sys::gauge_sum(http, admin, "roost_websockets_open").await?;
            }
            if open == 0.0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{open} WebSockets still open after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the nodes report `shards` quiesced shards between them
    /// (`roost_raft_quiesced_shards`: idle, no heartbeats), for at most
    /// `timeout`; how long that took.
    pub async fn wait_quiet(
        &self,
        http: &reqwest::Client,
        shards: u16,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let mut quiet = 0.0;
            for (name, admin) in &self.admins {
                if name.starts_with("node-") {
                    quiet +=
                        crate::sys::gauge_sum(http, admin, "roost_raft_quiesced_shards").await?;
                }
            }
            if quiet >= f64::from(shards) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "{quiet} of {shards} shards quiesced after {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL node `id`; returns when it is reaped.
    pub async fn kill9(&mut self, id: u64) -> Result<(), String> {
        let p = self
            .nodes
            .remove(&id)
            .ok_or_else(|| format!("no live node {id}"))?;
        self.admins.remove(&format!("node-{id}"));
        p.kill9().await.map_err(|e| e.to_string())
    }

    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the logs and data directories after the cluster stops.
    pub fn keep_logs(&mut self) {
        self.dir.disable_cleanup(true);
    }

    /// SIGTERM everything, the edge first.
    pub async fn stop(mut self) {
        if let Some(e) = self.edge.take()
            && let Err(err) = e.stop().await
        {
            eprintln!("load: stopping the edge: {err}");
        }
        for (_, n) in std::mem::take(&mut self.nodes) {
            if let Err(err) = n.stop().await {
                eprintln!("load: stopping a node: {err}");
            }
        }
    }
}

/// The first view `addr` answers with, if it answers within 2 s.
async fn view_of(tls: &Tls, addr: &str) -> Option<pb::ClusterView> {
    let first = async {
        let channel = tls.endpoint(addr).ok()?.connect().await.ok()?;
        let mut client = ClusterClient::new(channel);
        let mut stream = client.watch(pb::WatchRequest {}).await.ok()?.into_inner();
        stream.message().await.ok()?
    };
    tokio::time::timeout(Duration::from_secs(2), first)
        .await
        .ok()?
}
