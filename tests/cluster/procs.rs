//! Real `roost node` and `roost edge` processes on loopback.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
    /// What the process printed after the marker (its address): a node's
    /// gRPC address, an edge's `http://` URL.
    pub addr: String,
    /// An edge's gRPC object API address (empty for a node).
    pub grpc: String,
    /// A node's admin server, `http://host:port` (empty for an edge).
    pub admin: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// SIGTERM, then wait for the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// SIGKILL: the node gets no chance to flush or hand anything over.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// SIGSTOP: the process freezes mid-flight, sockets open.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// SIGCONT: a paused process runs again.
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Starts `n` nodes (node 1 bootstraps, the others join through it).
pub fn cluster(root: &Path, n: u64, shards: u16) -> BTreeMap<u64, Proc> {
    let first = node(root, 1, "127.0.0.1:0", &[], shards);
    let seeds = vec![first.addr.clone()];
    let mut nodes = BTreeMap::from([(1, first)]);
    for id in 2..=n {
        nodes.insert(id, node(root, id, "127.0.0.1:0", &seeds, shards));
    }
    nodes
}

/// Runs `WRAP… roost ARGS` (`wrap` empty: `roost ARGS`) and waits (up to
/// 120 s) for a stdout line containing `marker`; the word after it is the
/// address.
fn spawn(wrap: &[String], args: &[String], marker: &'static str) -> Proc {
    let (child, mut addrs) = spawn_marked(wrap, args, &[], &[marker]);
    Proc {
        child,
        addr: addrs.remove(0),
        grpc: String::new(),
        admin: String::new(),
    }
}

/// The `roost` binary the tests start: `ROOST_TEST_BIN` if set (a copy,
/// so that a long fault run is not affected by builds meanwhile — see
/// `make nemesis`), else the one Cargo built for this test.
pub fn roost_exe() -> std::ffi::OsString {
    std::env::var_os("ROOST_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_roost").into())
}

/// Starts `WRAP… roost ARGS` with `env` added, and waits until it printed
/// every marker; the word after each is returned, in the markers' order.
pub fn spawn_marked(
    wrap: &[String],
    args: &[String],
    env: &[(String, String)],
    markers: &[&'static str],
) -> (Child, Vec<String>) {
    let roost = roost_exe();
    let mut command = match wrap.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(roost);
            c
        }
        None => Command::new(roost),
    };
    let mut child = command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("roost binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    let wanted: Vec<&'static str> = markers.to_vec();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            for (i, marker) in wanted.iter().enumerate() {
                if let Some(rest) = line.split(marker).nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send((i, addr));
                }
            }
        }
    });
    let mut found: BTreeMap<usize, String> = BTreeMap::new();
    while found.len() < markers.len() {
        let (i, addr) = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("roost {args:?} prints {markers:?} within 120 s"));
        found.insert(i, addr);
    }
    (child, found.into_values().collect())
}

/// The data directory of node `id` under `root`.
pub fn data_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("node-{id}"))
}

/// Starts node `id` on `grpc` (e.g. "127.0.0.1:0"), joining through `join`.
pub fn node(root: &Path, id: u64, grpc: &str, join: &[String], shards: u16) -> Proc {
    node_wrapped(&[], root, id, grpc, join, shards)
}

/// [`node`], run through the command `wrap` (e.g. `ip netns exec NS`,
/// which execs the node in place: the child is the node itself).
pub fn node_wrapped(
    wrap: &[String],
    root: &Path,
    id: u64,
    grpc: &str,
    join: &[String],
    shards: u16,
) -> Proc {
    node_wrapped_env(wrap, root, id, grpc, join, shards, &[])
}

/// [`node_wrapped`] with `env` added to the node's environment.
pub fn node_wrapped_env(
    wrap: &[String],
    root: &Path,
    id: u64,
    grpc: &str,
    join: &[String],
    shards: u16,
    env: &[(String, String)],
) -> Proc {
    // Plain gRPC: the tests of mutual TLS start their own processes.
    let mut args: Vec<String> = vec![
        "node".into(),
        "--insecure".into(),
        "--id".into(),
        id.to_string(),
        "--grpc-listen".into(),
        grpc.into(),
        "--admin-listen".into(),
        "127.0.0.1:0".into(),
        "--shards".into(),
        shards.to_string(),
        "--data-dir".into(),
        data_dir(root, id).display().to_string(),
    ];
    if !join.is_empty() {
        args.push("--join".into());
        args.push(join.join(","));
    }
    let (child, addrs) = spawn_marked(
        wrap,
        &args,
        env,
        &["roost node: grpc on ", "roost node: admin on http://"],
    );
    Proc {
        child,
        addr: addrs[0].clone(),
        grpc: String::new(),
        admin: format!("http://{}", addrs[1]),
    }
}

/// Starts an edge that learns the cluster from `join`.
pub fn edge(join: &[String]) -> Proc {
    let args: Vec<String> = vec![
        "edge".into(),
        "--insecure".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--admin-listen".into(),
        "127.0.0.1:0".into(),
        "--grpc-listen".into(),
        "127.0.0.1:0".into(),
        "--join".into(),
        join.join(","),
    ];
    let (child, addrs) = spawn_marked(
        &[],
        &args,
        &[],
        &["roost edge: serving http://", "roost edge: gRPC on "],
    );
    Proc {
        child,
        addr: format!("http://{}", addrs[0]),
        grpc: addrs[1].clone(),
        admin: String::new(),
    }
}

/// Runs `roost ARGS` to completion (an operator command such as
/// `roost node drain`) and returns what it printed and its exit status.
pub fn run(args: &[String]) -> std::process::Output {
    Command::new(roost_exe())
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
        )
        .stdin(Stdio::null())
        .output()
        .expect("roost binary runs")
}
