//! The etcd peer: a 3-member etcd cluster on loopback (Debian's
//! etcd-server, temporary data directories on the same disk as Roost's,
//! free ports picked at run time), and `KV.Put` from 64 concurrent gRPC
//! clients for D seconds: replicated writes, side by side with Roost's.
//!
//! Owns: the etcd processes and the Put load. It never prints.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::report::{Figures, micros, sorted};
use crate::server::{Markers, Spawned, spawn};
use crate::sys;

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

use etcdserverpb::PutRequest;
use etcdserverpb::kv_client::KvClient;

/// What etcd (3.4, zap logger) logs once it serves clients, after its
/// member joined the cluster.
const READY: &str = "serving client traffic";

pub struct EtcdPlan {
    pub clients: usize,
    pub keys: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// A free loopback port (bound and released: a small race, acceptable for
/// a bench).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

pub struct Etcd {
    members: Vec<Spawned>,
    pub clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start(bin: &Path) -> Result<Etcd, String> {
        let dir = tempfile::Builder::new()
            .prefix("roost-bench-etcd-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_port()?, free_port()?));
        }
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let token = format!("bench-{:08x}", rand::random::<u32>());
        // Start all three before waiting: each waits for a quorum.
        let mut starting = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = Command::new(bin);
            cmd.args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--logger", "zap"]);
            let log = dir.path().join(format!("m{i}.log"));
            starting.push(tokio::spawn(async move {
                spawn(cmd, "etcd", &log, Markers::Stderr, &[READY]).await
            }));
        }
        let mut members = Vec::new();
        for s in starting {
            members.push(
                s.await
                    .map_err(|e| format!("etcd start task: {e}"))?
                    .map_err(|e| e.to_string())?,
            );
        }
        let clients = ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect();
        Ok(Etcd {
            members,
            clients,
            _dir: dir,
        })
    }

    pub async fn stop(self) {
        for m in self.members {
            if let Err(e) = m.stop().await {
                eprintln!("load: stopping etcd: {e}");
            }
        }
    }
}

/// `plan.clients` closed-loop clients, each on its own connection to one of
/// the members (round-robin), putting 8-byte values under `plan.keys` keys.
pub async fn run(etcd: &Etcd, plan: &EtcdPlan) -> Figures {
    let mut fig = Figures::new("etcd-put", "etcd");
    if let Err(e) = run_inner(etcd, plan, &mut fig).await {
        fig.fail(e);
    }
    fig
}

async fn run_inner(etcd: &Etcd, plan: &EtcdPlan, fig: &mut Figures) -> Result<(), String> {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let clock = Arc::new((measure_from, end));
    let mut tasks = Vec::new();
    for c in 0..plan.clients {
        let url = etcd.clients[c % etcd.clients.len()].clone();
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| format!("{url}: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect {url}: {e}"))?;
        let (clock, keys) = (clock.clone(), plan.keys);
        tasks.push(tokio::spawn(async move {
            let mut kv = KvClient::new(channel);
            let mut lat = Vec::new();
            let (mut errors, mut i) = (0u64, c);
            loop {
                let t = Instant::now();
                if t >= clock.1 {
                    break;
                }
                let req = PutRequest {
                    key: format!("bench/{:06}", i % keys).into_bytes(),
                    value: (i as u64).to_le_bytes().to_vec(),
                    ..PutRequest::default()
                };
                i += 1;
                let ok = kv.put(req).await.is_ok();
                if t >= clock.0 {
                    if ok {
                        lat.push(micros(t.elapsed()));
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors, Instant::now())
        }));
    }
    // The CPU of all three members over the measured window.
    let pids: Vec<u32> = etcd.members.iter().filter_map(|m| m.child.id()).collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_at_start = sys::cpu_seconds_of(&pids);
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut last = end;
    for t in tasks {
        let (l, e, done) = t.await.map_err(|e| format!("client task: {e}"))?;
        lat.extend(l);
        errors += e;
        last = last.max(done);
    }
    let cpu_at_end = sys::cpu_seconds_of(&pids);
    let window = last.duration_since(measure_from);
    if let (Some(a), Some(b)) = (cpu_at_start, cpu_at_end) {
        fig.cpu(b - a, lat.len() as u64, window);
    }
    let window = window.as_secs_f64();
    let lat = sorted(lat);
    fig.set("clients", plan.clients as f64)
        .set("keys", plan.keys as f64)
        .set("puts_per_s", lat.len() as f64 / window)
        .latencies("", &lat)
        .set("errors", errors as f64);
    fig.notes.push(format!(
        "3 etcd members on loopback, one gRPC connection per client, keys spread over {} keys",
        plan.keys
    ));
    if lat.is_empty() {
        fig.fail("no Put succeeded");
    }
    Ok(())
}
