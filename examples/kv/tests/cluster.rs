//! The example's own class on a cluster: three `roost-example-kv node`
//! processes and a `roost-example-kv edge` (the binary is the example's
//! `main`, i.e. `roost::cli::main` with its app), real gRPC between them.
//! The edge's HTTP side runs the example's router and reaches the `KV`
//! objects on whichever node leads their shard; after SIGKILL of the node
//! leading the most shards every acknowledged write is still there and the
//! objects take writes again. Meanwhile `KV` objects call `LOG` objects
//! (other shards, often other nodes) with typed RPC: every acknowledged
//! `put_and_log`, including those in flight across the kill, is in both
//! objects, and a `KV` object's fetch of each log reads the same. The edge
//! also serves the objects over WebSocket and gRPC.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use roost::cluster::status::{ClusterStatus, gather};
use roost::id::ObjectId;
use roost::rpc::pb;
use roost::rpc::pb::objects_client::ObjectsClient;
use roost::rpc::tls::Tls;
use serde_json::{Value, json};

const SHARDS: u16 = 8;
const OBJECTS: usize = 12;

/// A process of the example binary, killed when dropped.
struct Proc {
    child: Child,
    /// The word after each marker, in the markers' order.
    addrs: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the example binary with `args` and waits (up to 120 s) until it
/// printed every marker.
fn spawn(args: &[String], markers: &[&'static str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roost-example-kv"))
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
        )
        // The app's configuration, as the chart's env would give it.
        .env("ROOST_VAR_GREETING", "hello from config")
        .env("ROOST_SECRET_GREETING", "s3cret")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let wanted = markers.to_vec();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            for (i, marker) in wanted.iter().enumerate() {
                if let Some(rest) = line.split(marker).nth(1) {
                    let word = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send((i, word.to_owned()));
                }
            }
        }
    });
    let mut found = vec![String::new(); markers.len()];
    let mut seen = 0;
    while seen < markers.len() {
        let (i, word) = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{args:?} prints {markers:?} within 120 s"));
        if found[i].is_empty() {
            seen += 1;
        }
        found[i] = word;
    }
    Proc {
        child,
        addrs: found,
    }
}

fn node(dir: &Path, id: u64, join: Option<&str>) -> Proc {
    let mut args: Vec<String> = [
        "node",
        "--insecure",
        "--id",
        &id.to_string(),
        "--grpc-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--shards",
        &SHARDS.to_string(),
        "--data-dir",
        &dir.join(format!("node-{id}")).display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    if let Some(join) = join {
        args.extend(["--join".to_owned(), join.to_owned()]);
    }
    spawn(&args, &["roost node: grpc on "])
}

/// Waits until every shard has a leader and three voters.
async fn converged(seeds: &[String], timeout: Duration) -> ClusterStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(status) = gather(seeds, &Tls::plain()).await
            && status.groups.len() == usize::from(SHARDS)
            && status
                .groups
                .iter()
                .all(|g| g.leader.is_some() && g.voters.len() == 3)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not converge in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `op` to object `name` through the edge until it is answered
/// with something other than 503 (leadership moving), for up to 30 s.
/// A WebSocket to a `KV` object through the edge at `edge` (`host:port`):
/// accepted with its tags and attachment, and echoing.
async fn websocket_echo(edge: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{edge}/kv/ws-obj/ws?tags=t&attach=a1");
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("a WebSocket through the edge");
    assert_eq!(resp.status().as_u16(), 101);
    for ask in ["hello", "whoami"] {
        ws.send(Message::text(ask)).await.expect("sent");
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                    Some(Ok(_)) => continue,
                    other => panic!("the socket ended: {other:?}"),
                }
            }
        })
        .await
        .expect("an answer within 10 s");
        match ask {
            "hello" => assert_eq!(answer, "echo:hello"),
            _ => {
                let me: Value = serde_json::from_str(&answer).expect("whoami is JSON");
                assert_eq!((&me["tags"], &me["attach"]), (&json!(["t"]), &json!("a1")));
            }
        }
    }
    ws.close(None).await.expect("closed");
}

async fn op(http: &reqwest::Client, edge: &str, name: &str, op: &Value) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = http
            .post(format!("{edge}/kv/{name}"))
            .json(op)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(resp) = sent {
            let status = resp.status().as_u16();
            let body = resp.json().await.unwrap_or(Value::Null);
            if status != 503 || Instant::now() >= deadline {
                return (status, body);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{op} on {name}: no answer in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_class_serves_through_an_edge_and_survives_a_leader_kill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n1 = node(dir.path(), 1, None);
    let first = n1.addrs[0].clone();
    let n2 = node(dir.path(), 2, Some(&first));
    let n3 = node(dir.path(), 3, Some(&first));
    let mut nodes = vec![(1u64, n1), (2, n2), (3, n3)];
    let seeds: Vec<String> = nodes.iter().map(|(_, p)| p.addrs[0].clone()).collect();
    converged(&seeds, Duration::from_secs(120)).await;

    let edge = spawn(
        &[
            "edge",
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--join",
            &seeds.join(","),
        ]
        .map(String::from),
        &["roost edge: serving http://", "roost edge: gRPC on "],
    );
    let base = format!("http://{}", edge.addrs[0]);
    let edge_grpc = format!("http://{}", edge.addrs[1]);
    let http = reqwest::Client::new();

    // The example's router on the edge, the example's class on the nodes.
    let (status, body) = op(&http, &base, "x", &json!({"op": "nope"})).await;
    assert_eq!(status, 400, "the class's own error for a bad op: {body}");
    let names: Vec<String> = (0..OBJECTS).map(|i| format!("obj-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let put = json!({"op": "put", "key": "k", "value": format!("v{i}")});
        let (status, body) = op(&http, &base, name, &put).await;
        assert_eq!(status, 200, "put on {name}: {body}");
    }
    for (i, name) in names.iter().enumerate() {
        let (status, body) = op(&http, &base, name, &json!({"op": "get", "key": "k"})).await;
        assert_eq!((status, &body["value"]), (200, &json!(format!("v{i}"))));
    }

    // Every object sees the configured vars and secrets, on any node.
    for name in &names {
        let (status, body) = op(
            &http,
            &base,
            name,
            &json!({"op": "config", "name": "GREETING"}),
        )
        .await;
        assert_eq!(
            (status, &body["var"], &body["secret_len"]),
            (200, &json!("hello from config"), &json!(6)),
            "{name}: {body}"
        );
    }

    // The same objects over the edge's WebSocket and gRPC sides.
    websocket_echo(&edge.addrs[0]).await;
    let mut grpc = ObjectsClient::connect(edge_grpc)
        .await
        .expect("the edge's gRPC side connects");
    let got = grpc
        .fetch(pb::FetchRequest {
            object: Some(pb::ObjectRef {
                namespace: roost_example_kv::BINDING.into(),
                target: Some(pb::object_ref::Target::Name("obj-0".into())),
                id_name: None,
            }),
            method: "POST".into(),
            path: "/kv/obj-0".into(),
            headers: Vec::new(),
            body: serde_json::to_vec(&json!({"op": "get", "key": "k"})).expect("json"),
            client_ip: String::new(),
        })
        .await
        .expect("a gRPC fetch through the edge")
        .into_inner();
    let body: Value = serde_json::from_slice(&got.body).expect("a JSON body");
    assert_eq!((got.status, &body["value"]), (200, &json!("v0")), "{body}");

    // Objects calling objects, before, across and after the kill — once
    // more than one node leads shards, so that calls cross nodes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = gather(&seeds, &Tls::plain()).await;
        if status
            .as_ref()
            .is_ok_and(|s| s.nodes.iter().filter(|n| n.leads > 0).count() >= 2)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "one node still leads every shard after 60 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(call_load(
        http.clone(),
        base.clone(),
        stop.clone(),
        acked_count.clone(),
    ));
    wait_count(&acked_count, 20).await;

    // SIGKILL the node that leads the most shards.
    let status = gather(&seeds, &Tls::plain()).await.expect("cluster status");
    let before_kill = status.clone();
    let busiest = status
        .nodes
        .iter()
        .max_by_key(|n| n.leads)
        .map(|n| n.id)
        .expect("some node leads");
    assert!(status.nodes.iter().any(|n| n.id == busiest && n.leads > 0));
    // Dropping its `Proc` sends SIGKILL.
    nodes.retain(|(id, _)| *id != busiest);
    let live: Vec<String> = nodes.iter().map(|(_, p)| p.addrs[0].clone()).collect();

    // Every acknowledged write survived; every object takes writes again.
    for (i, name) in names.iter().enumerate() {
        let (status, body) = op(&http, &base, name, &json!({"op": "get", "key": "k"})).await;
        assert_eq!(
            (status, &body["value"]),
            (200, &json!(format!("v{i}"))),
            "{name} after node {busiest} was killed"
        );
        let put = json!({"op": "put", "key": "k2", "value": "after"});
        let (status, body) = op(&http, &base, name, &put).await;
        assert_eq!(status, 200, "put on {name} after the kill: {body}");
    }
    // And every shard it led has a new leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = gather(&live, &Tls::plain()).await;
        if let Ok(s) = &status
            && s.groups.len() == usize::from(SHARDS)
            && s.groups
                .iter()
                .all(|g| g.leader.is_some() && g.leader != Some(busiest))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shards without a live leader 30 s after node {busiest} was killed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Calls go on after the kill; then every acknowledged one is in both
    // the caller and the callee.
    let before_stop = acked_count.load(Ordering::Relaxed);
    wait_count(&acked_count, before_stop + 20).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("the call load ran");
    let mut logs: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for log in (0..LOGS).map(|i| format!("log-{i}")) {
        let resp = http
            .get(format!("{base}/log/{log}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the log answers");
        assert_eq!(resp.status(), 200, "GET /log/{log}");
        let body: Value = resp.json().await.expect("json");
        let entries = body["entries"].as_array().cloned().unwrap_or_default();
        logs.insert(log, entries);
    }
    for (name, log, j) in &acked {
        let get = json!({"op": "get", "key": format!("p{j}")});
        let (status, body) = op(&http, &base, name, &get).await;
        assert_eq!(
            (status, &body["value"]),
            (200, &json!(format!("w{j}"))),
            "acknowledged put_and_log {j} on {name}"
        );
        let entry = json!(format!("p{j}=w{j}"));
        assert!(
            logs[log].contains(&entry),
            "acknowledged put_and_log {j} of {name} is missing from {log}"
        );
    }
    // An object reads a log with a fetch of its own (an object's HTTP
    // handler reached from inside another object, often on another node):
    // what the edge's GET saw, or more (nothing is appended any more).
    for (log, entries) in &logs {
        let read = json!({"op": "read_log", "log": log});
        let (status, body) = op(&http, &base, &names[0], &read).await;
        assert_eq!((status, &body["status"]), (200, &json!(200)), "{body}");
        assert_eq!(
            body["entries"].as_array(),
            Some(entries),
            "{log} read by an object"
        );
    }
    // And calls crossed nodes: the first 20, made before the kill, include
    // some between objects that different nodes led then.
    let leader = |ns: &str, name: &str| {
        let shard = u32::from(ObjectId::from_name(ns, name).shard(SHARDS));
        before_kill
            .groups
            .iter()
            .find(|g| g.shard == Some(shard))
            .and_then(|g| g.leader)
    };
    let crossing = acked
        .iter()
        .take(20)
        .filter(|(name, log, _)| leader("KV", name) != leader("LOG", log))
        .count();
    assert!(
        crossing > 0,
        "none of the calls before the kill went between objects led by different nodes"
    );
    eprintln!(
        "object calls: {} acknowledged put_and_log calls across the kill of node {busiest} ({crossing} of the first 20 between objects led by different nodes), all in both objects",
        acked.len()
    );
}

/// Journals the `KV` objects call.
const LOGS: usize = 3;

/// Sends `put_and_log` ops (each once, no retry) until `stop`; returns the
/// acknowledged ones as (object, log, number), counting them in `acked`.
async fn call_load(
    http: reqwest::Client,
    base: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Vec<(String, String, usize)> {
    let mut done = Vec::new();
    let mut j = 0usize;
    while !stop.load(Ordering::Relaxed) {
        j += 1;
        let (name, log) = (format!("obj-{}", j % OBJECTS), format!("log-{}", j % LOGS));
        let body = json!({
            "op": "put_and_log",
            "key": format!("p{j}"),
            "value": format!("w{j}"),
            "log": log,
        });
        let sent = http
            .post(format!("{base}/kv/{name}"))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status() == 200 => {
                done.push((name, log, j));
                acked.fetch_add(1, Ordering::Relaxed);
            }
            // Leadership moving (503), or an unknown outcome: not counted.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    done
}

async fn wait_count(count: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::Relaxed) < at_least {
        assert!(
            Instant::now() < deadline,
            "only {} of {at_least} calls acknowledged in 60 s",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
