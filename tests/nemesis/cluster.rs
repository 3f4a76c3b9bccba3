//! The cluster under test: `roost node` processes, each in its own network
//! namespace (`netns.rs`), and what the nemesis does to them: signals,
//! restarts, nft rules inside the namespaces (partitions, one-way cuts,
//! packet loss with `numgen random`), joins and drains.
//!
//! Edges and clients stay in the root namespace and reach every node
//! through the bridge; every nft rule names only node addresses, so a
//! node cut off from its peers still serves the edges (unless the fault
//! is packet loss, which hits every packet that leaves or enters a node).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{SHARDS, wait_agreed};
use crate::netns::Net;
use crate::procs::{self, Proc};

/// The nft table every rule of the nemesis lives in (one per namespace).
const TABLE: &str = "roostnem";

pub struct Node {
    /// `host:port`, fixed after the first start (a restart reuses it).
    pub addr: String,
    /// `None` while the process is down (killed, not yet restarted).
    pub proc: Option<Proc>,
}

pub struct Cluster {
    /// Declared before `net`, so dropped (killed) before the namespaces go.
    pub nodes: BTreeMap<u64, Node>,
    net: Arc<Net>,
    root: Arc<tempfile::TempDir>,
    /// Namespaces with a nemesis table in place.
    ruled: Vec<u64>,
    /// Every node id the network has a namespace for.
    max_id: u64,
    /// Nodes are this test binary serving the lab class too (`lab.rs`),
    /// not `roost node`.
    lab: bool,
}

impl Cluster {
    /// Starts nodes `1..=n` (node 1 bootstraps) in a network with room for
    /// nodes up to `max_id`, and waits until every shard has three voters.
    pub async fn start(n: u64, max_id: u64, lab: bool) -> Cluster {
        let net = Arc::new(Net::new(max_id));
        let root = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            net,
            root,
            ruled: Vec::new(),
            max_id,
            lab,
        };
        let first = c.spawn(1, None, Vec::new()).await;
        let seeds = vec![first.addr.clone()];
        c.nodes.insert(
            1,
            Node {
                addr: first.addr.clone(),
                proc: Some(first),
            },
        );
        for id in 2..=n {
            let p = c.spawn(id, None, seeds.clone()).await;
            c.nodes.insert(
                id,
                Node {
                    addr: p.addr.clone(),
                    proc: Some(p),
                },
            );
        }
        let addrs = c.addrs();
        tokio::time::timeout(
            Duration::from_secs(120),
            wait_agreed(&addrs, 3, Duration::from_secs(150)),
        )
        .await
        .expect("the cluster forms within 120 s");
        c
    }

    /// Starts node `id` in its namespace (at `addr` on a restart), off the
    /// async threads: starting waits for the process's first lines.
    async fn spawn(&self, id: u64, addr: Option<String>, join: Vec<String>) -> Proc {
        let wrap = self.net.exec_prefix(id);
        let listen = addr.unwrap_or_else(|| format!("{}:0", self.net.ip(id)));
        let root: PathBuf = self.root.path().to_owned();
        let lab = self.lab;
        let env = [(
            roost::object::JOURNAL_ENV.to_owned(),
            self.journal().display().to_string(),
        )];
        tokio::task::spawn_blocking(move || {
            if lab {
                lab_node(&wrap, &root, id, &listen, &join, &env)
            } else {
                procs::node_wrapped_env(&wrap, &root, id, &listen, &join, SHARDS, &env)
            }
        })
        .await
        .expect("node start task")
    }

    /// The activation journal every node appends to (`activations.rs`).
    pub fn journal(&self) -> PathBuf {
        self.root.path().join("activations.log")
    }

    /// The addresses of every member (running or not).
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(p) = self.nodes.get_mut(&id).and_then(|n| n.proc.take()) {
            p.kill9();
        }
    }

    /// Restarts a killed node on its old address (its data dir remembers
    /// the cluster).
    pub async fn restart(&mut self, id: u64) {
        let Some(addr) = self.nodes.get(&id).map(|n| n.addr.clone()) else {
            return;
        };
        if self.nodes[&id].proc.is_some() {
            return;
        }
        let p = self.spawn(id, Some(addr), Vec::new()).await;
        if let Some(n) = self.nodes.get_mut(&id) {
            n.proc = Some(p);
        }
    }

    pub fn pause(&self, id: u64) {
        if let Some(p) = self.nodes.get(&id).and_then(|n| n.proc.as_ref()) {
            p.pause();
        }
    }

    pub fn resume(&self, id: u64) {
        if let Some(p) = self.nodes.get(&id).and_then(|n| n.proc.as_ref()) {
            p.resume();
        }
    }

    /// Starts node `id`, joining through the members.
    pub async fn add(&mut self, id: u64) {
        let join = self.addrs();
        let p = self.spawn(id, None, join).await;
        self.nodes.insert(
            id,
            Node {
                addr: p.addr.clone(),
                proc: Some(p),
            },
        );
    }

    /// `roost node drain --id id` through the other members, then SIGTERM
    /// the drained node. `Err` says what the drain printed if it failed.
    pub async fn drain(&mut self, id: u64) -> Result<(), String> {
        let join: Vec<String> = self
            .nodes
            .iter()
            .filter(|(n, _)| **n != id)
            .map(|(_, n)| n.addr.clone())
            .collect();
        let args: Vec<String> = vec![
            "node".into(),
            "drain".into(),
            "--join".into(),
            join.join(","),
            "--id".into(),
            id.to_string(),
            "--timeout".into(),
            "120".into(),
        ];
        let out = tokio::task::spawn_blocking(move || procs::run(&args))
            .await
            .expect("drain task");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || !stdout.contains("removed") {
            return Err(format!(
                "drain of node {id} failed ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if let Some(n) = self.nodes.remove(&id)
            && let Some(p) = n.proc
        {
            tokio::task::spawn_blocking(move || p.terminate())
                .await
                .expect("terminate task");
        }
        Ok(())
    }

    /// Every node id that has a namespace, except `id`: its peers' IPs.
    fn peer_ips(&self, except: &[u64]) -> Vec<String> {
        (1..=self.max_id)
            .filter(|k| !except.contains(k))
            .map(|k| self.net.ip(k))
            .collect()
    }

    /// Puts the nemesis table with `input`/`output` rules into node
    /// `id`'s namespace (replacing what was there).
    fn rules(&mut self, id: u64, input: &[String], output: &[String]) {
        let ns = self.net.ns(id);
        let _ = nft(&ns, &format!("delete table inet {TABLE}"));
        let script = format!(
            "table inet {TABLE} {{\n chain input {{ type filter hook input priority 0; policy accept;\n{}\n }}\n chain output {{ type filter hook output priority 0; policy accept;\n{}\n }}\n}}\n",
            input.join("\n"),
            output.join("\n")
        );
        nft(&ns, &script).unwrap_or_else(|e| panic!("nft in {ns}: {e}\n{script}"));
        if !self.ruled.contains(&id) {
            self.ruled.push(id);
        }
    }

    /// No packet between `a`'s nodes and `b`'s, either way.
    pub fn split(&mut self, a: &[u64], b: &[u64]) {
        for (side, other) in [(a, b), (b, a)] {
            let ips = set(&other.iter().map(|k| self.net.ip(*k)).collect::<Vec<_>>());
            for id in side {
                self.rules(
                    *id,
                    &[format!("ip saddr {ips} drop")],
                    &[format!("ip daddr {ips} drop")],
                );
            }
        }
    }

    /// Node `id` off from every peer, both ways; the edges still reach it.
    pub fn isolate(&mut self, id: u64) {
        let ips = set(&self.peer_ips(&[id]));
        self.rules(
            id,
            &[format!("ip saddr {ips} drop")],
            &[format!("ip daddr {ips} drop")],
        );
    }

    /// One way only: `deaf`, node `id` drops what its peers send; else
    /// what it sends to them is dropped.
    pub fn one_way(&mut self, id: u64, deaf: bool) {
        let ips = set(&self.peer_ips(&[id]));
        if deaf {
            self.rules(id, &[format!("ip saddr {ips} drop")], &[]);
        } else {
            self.rules(id, &[], &[format!("ip daddr {ips} drop")]);
        }
    }

    /// Every node loses `percent` % of its packets, in and out.
    pub fn loss(&mut self, percent: u8) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.rules(
                id,
                &[format!(
                    "iifname != \"lo\" numgen random mod 100 < {percent} drop"
                )],
                &[format!(
                    "oifname != \"lo\" numgen random mod 100 < {percent} drop"
                )],
            );
        }
    }

    /// Removes every nft rule the nemesis put in place.
    pub fn heal(&mut self) {
        for id in std::mem::take(&mut self.ruled) {
            let ns = self.net.ns(id);
            if let Err(e) = nft(&ns, &format!("delete table inet {TABLE}")) {
                panic!("heal {ns}: {e}");
            }
        }
    }

    /// Waits (up to `timeout`) until every member answers and agrees on
    /// each shard's leader, each shard with three voters.
    pub async fn recovered(&self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let addrs = self.addrs();
        match tokio::time::timeout(timeout, wait_agreed(&addrs, 3, timeout * 2)).await {
            Ok(_) => Ok(started.elapsed()),
            Err(_) => Err(format!(
                "the cluster did not come back together within {timeout:?}"
            )),
        }
    }
}

/// Starts this test binary as a lab node (`lab::serve_if_asked`) through
/// `wrap`, and waits (up to 120 s) for its two address lines.
fn lab_node(
    wrap: &[String],
    root: &std::path::Path,
    id: u64,
    listen: &str,
    join: &[String],
    env: &[(String, String)],
) -> Proc {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().expect("the test binary's path");
    let spec = format!(
        "{id};{listen};{};{SHARDS};{}",
        procs::data_dir(root, id).display(),
        join.join(",")
    );
    let mut child = Command::new(&wrap[0])
        .args(&wrap[1..])
        .arg(exe)
        .args([
            "--exact",
            "lab_node_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(crate::lab::NODE_ENV, spec)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("lab node starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            for (i, marker) in ["roost node: grpc on ", "roost node: admin on "]
                .iter()
                .enumerate()
            {
                if let Some(rest) = line.split(marker).nth(1) {
                    let word = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send((i, word.to_owned()));
                }
            }
        }
    });
    let mut found: BTreeMap<usize, String> = BTreeMap::new();
    while found.len() < 2 {
        let (i, a) = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("lab node {id} prints its addresses within 120 s"));
        found.insert(i, a);
    }
    Proc {
        child,
        addr: found.remove(&0).unwrap_or_default(),
        grpc: String::new(),
        admin: found.remove(&1).unwrap_or_default(),
    }
}

/// `{ a, b }`, an nft anonymous set.
fn set(ips: &[String]) -> String {
    format!("{{ {} }}", ips.join(", "))
}

/// Runs an nft script in namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("run nft (package nftables): {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft stdin")?
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Panics unless `nft` can run (nftables installed; `make test` installs it).
pub fn preflight() {
    let ok = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the nemesis needs nftables' `nft` on the PATH (scripts/setup.sh --test installs it)"
    );
}
