//! Mutual TLS on node gRPC: three nodes and an edge configured with `[tls]`
//! (through `ROOST_TLS_*`) form a cluster and serve the seed app (also
//! after the counter's leader is killed), and a node refuses gRPC clients
//! that are plain, present no certificate, present one from another CA, or
//! present one whose role may not make the call (an edge's or an
//! operator's calling Raft, an edge's joining the cluster).
//!
//! Certificates are made at test time by `roost certs` (a CA, and one
//! certificate per role naming `localhost` and `127.0.0.1`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use roost::id::ObjectId;
use roost::rpc::pb;
use roost::rpc::tls::{Tls, TlsFiles};
use serde_json::json;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::harness::{SHARDS, json_of};
use crate::procs::Proc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_cluster_serves_and_refuses_clients_without_a_ca_certificate() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let pki = root.path().join("pki");
    let foreign_pki = root.path().join("foreign-pki");
    roost_certs(&pki);
    roost_certs(&foreign_pki);
    let files = role_files(&pki, "node");
    let edge_files = role_files(&pki, "edge");
    let operator_files = role_files(&pki, "operator");
    // A node certificate, but from another CA.
    let foreign = role_files(&foreign_pki, "node");
    let env = tls_env(&files);

    let n1 = node(root.path(), 1, &[], &env);
    let seeds = vec![n1.addr.clone()];
    let n2 = node(root.path(), 2, &seeds, &env);
    let n3 = node(root.path(), 3, &seeds, &env);
    let addrs = vec![n1.addr.clone(), n2.addr.clone(), n3.addr.clone()];

    // Raft, joins and the cluster service all run over mutual TLS: the
    // cluster forms, seen by a client holding a certificate of the CA.
    let tls = Tls::load(&files).expect("test certificates load");
    wait_converged(&addrs, &tls, 3, Duration::from_secs(90)).await;

    // The edge reaches the nodes over mutual TLS too, with its own role.
    let edge = edge(&addrs, &tls_env(&edge_files));
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", edge.addr);
    let (s, b) = json_of(
        http.get(url("/counter/mtls"))
            .send()
            .await
            .expect("answered"),
    )
    .await;
    assert_eq!((s, b), (200, json!({"value": 0})));
    for expected in 1..=3 {
        let (s, b) = json_of(
            http.post(url("/counter/mtls/increment"))
                .send()
                .await
                .expect("answered"),
        )
        .await;
        assert_eq!((s, b), (200, json!({"value": expected})));
    }

    // Every node refuses clients without a certificate of the CA.
    for addr in &addrs {
        let plain = watch(Endpoint::from_shared(format!("http://{addr}")).expect("uri")).await;
        assert!(plain.is_err(), "{addr}: a plain client is refused");

        let ca_pem = std::fs::read(&files.ca_file).expect("ca");
        let https = Endpoint::from_shared(format!("https://{addr}")).expect("uri");
        let anonymous = https
            .clone()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
            .expect("client TLS config");
        let refused = watch(anonymous).await;
        assert!(
            refused.is_err(),
            "{addr}: a client without a certificate is refused"
        );

        let identity = Identity::from_pem(
            std::fs::read(&foreign.cert_file).expect("cert"),
            std::fs::read(&foreign.key_file).expect("key"),
        );
        let intruder = https
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&ca_pem))
                    .identity(identity),
            )
            .expect("client TLS config");
        let refused = watch(intruder).await;
        assert!(
            refused.is_err(),
            "{addr}: a client with another CA's certificate is refused"
        );

        // The control: the same call with the CA's certificate is served.
        let served = watch(tls.endpoint(addr).expect("endpoint")).await;
        assert!(served.is_ok(), "{addr}: {served:?}");
    }

    // Roles: an edge's certificate may watch the cluster and call objects,
    // but not speak Raft or join; an operator's may not speak Raft either.
    let edge_tls = Tls::load(&edge_files).expect("edge certificate loads");
    let operator_tls = Tls::load(&operator_files).expect("operator certificate loads");
    for addr in &addrs {
        assert!(
            watch(edge_tls.endpoint(addr).expect("endpoint"))
                .await
                .is_ok()
        );
        for (who, tls) in [("edge", &edge_tls), ("operator", &operator_tls)] {
            let status = raft_vote(tls.endpoint(addr).expect("endpoint")).await;
            assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
        }
        // The attack of issue 15: rewrite node 2's address in the directory.
        let status = join_as_node_2(edge_tls.endpoint(addr).expect("endpoint")).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let status = join_as_node_2(operator_tls.endpoint(addr).expect("endpoint")).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // The directory still has every node at its own address.
    let view = watch(tls.endpoint(&addrs[0]).expect("endpoint"))
        .await
        .expect("a view");
    for n in &view.nodes {
        assert_ne!(n.addr, "127.0.0.1:9", "{view:?}");
    }
    // Refusals are counted per service and role.
    let metrics = reqwest::get(format!("{}/metrics", n1.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for series in [
        "roost_rpc_denied_total{service=\"raft\",role=\"edge\"}",
        "roost_rpc_denied_total{service=\"raft\",role=\"operator\"}",
        "roost_rpc_denied_total{service=\"cluster\",role=\"edge\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }

    // A client that trusts another CA does not accept the node.
    let foreign_tls = Tls::load(&foreign).expect("foreign certificates load");
    let wrong_server = watch(foreign_tls.endpoint(&addrs[0]).expect("endpoint")).await;
    assert!(wrong_server.is_err(), "a node is verified against the CA");

    // The edge fails over between nodes over TLS as it does in plain: with
    // the leader of the counter's shard killed, the counter takes
    // increments again (a retried 503 may have been committed, hence `>`).
    let shard = u32::from(ObjectId::from_name("COUNTER", "mtls").shard(SHARDS));
    let view = watch(tls.endpoint(&addrs[0]).expect("endpoint"))
        .await
        .expect("a view");
    let leader = view
        .leaders
        .iter()
        .find(|l| l.shard == shard)
        .map(|l| l.node)
        .expect("the counter's shard has a leader");
    let mut nodes = std::collections::BTreeMap::from([(1, n1), (2, n2), (3, n3)]);
    nodes
        .remove(&leader)
        .expect("the leader is one of ours")
        .kill9();
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(60);
    let after_kill = loop {
        let (s, b) = json_of(
            http.post(url("/counter/mtls/increment"))
                .send()
                .await
                .expect("answered"),
        )
        .await;
        if s == 200 {
            break b["value"].as_i64().expect("a value");
        }
        assert!(
            s == 503 && Instant::now() < deadline,
            "increment after node {leader} died: {s} {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(after_kill > 3, "{after_kill}");
    eprintln!(
        "mtls: counter writable {:?} after SIGKILL of node {leader}, its leader",
        killed_at.elapsed()
    );

    drop(edge);
    drop(nodes);
}

/// The first `Cluster.Watch` view from `endpoint`, or why there is none.
async fn watch(endpoint: Endpoint) -> Result<pb::ClusterView, String> {
    let call = async {
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        let mut client = pb::cluster_client::ClusterClient::new(channel);
        let mut stream = client
            .watch(pb::WatchRequest {})
            .await
            .map_err(|s| format!("{s:?}"))?
            .into_inner();
        stream
            .message()
            .await
            .map_err(|s| format!("{s:?}"))?
            .ok_or_else(|| "the stream ended".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

/// Waits until every shard has a leader with `voters` voters, asking the
/// nodes over `tls`.
async fn wait_converged(addrs: &[String], tls: &Tls, voters: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut shards = std::collections::BTreeMap::new();
        for addr in addrs {
            if let Ok(view) = watch(tls.endpoint(addr).expect("endpoint")).await {
                for l in view.leaders.into_iter().filter(|l| !l.voters.is_empty()) {
                    shards.insert(l.shard, l.voters.len());
                }
            }
        }
        if shards.len() == usize::from(SHARDS) && shards.values().all(|v| *v == voters) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the mTLS cluster did not converge: {shards:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ROOST_TLS_*` for `files`.
fn tls_env(files: &TlsFiles) -> Vec<(String, String)> {
    let path = |p: &PathBuf| p.display().to_string();
    vec![
        ("ROOST_TLS_CA_FILE".into(), path(&files.ca_file)),
        ("ROOST_TLS_CERT_FILE".into(), path(&files.cert_file)),
        ("ROOST_TLS_KEY_FILE".into(), path(&files.key_file)),
    ]
}

/// A Vote over `endpoint`: the status it gets (the test expects a refusal).
async fn raft_vote(endpoint: Endpoint) -> tonic::Status {
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => return tonic::Status::unavailable(format!("{e:?}")),
    };
    let request = pb::RaftRequest {
        shard: 0,
        target: 1,
        payload: Vec::new(),
        data: Vec::new(),
    };
    let mut client = pb::raft_client::RaftClient::new(channel);
    status_of(client.vote(request)).await
}

/// `Cluster.Join` naming node 2 at `127.0.0.1:9`: the status it gets.
async fn join_as_node_2(endpoint: Endpoint) -> tonic::Status {
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => return tonic::Status::unavailable(format!("{e:?}")),
    };
    let request = pb::JoinRequest {
        node: Some(pb::NodeInfo {
            id: 2,
            addr: "127.0.0.1:9".into(),
            draining: false,
        }),
        settings: None,
    };
    let mut client = pb::cluster_client::ClusterClient::new(channel);
    status_of(client.join(request)).await
}

/// The status a call that must fail ends with (`OK` if it succeeded).
async fn status_of<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> tonic::Status {
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Err(status)) => status,
        Ok(Ok(_)) => tonic::Status::ok("answered"),
        Err(_) => tonic::Status::deadline_exceeded("no answer within 10 s"),
    }
}

/// Runs `roost certs --out DIR` (a CA and node, edge and operator
/// certificates for localhost).
fn roost_certs(dir: &Path) {
    let out = crate::procs::run(&[
        "certs".to_owned(),
        "--out".to_owned(),
        dir.display().to_string(),
        "--days".to_owned(),
        "2".to_owned(),
    ]);
    assert!(
        out.status.success(),
        "roost certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The files of `role`'s certificate made by [`roost_certs`] in `dir`.
fn role_files(dir: &Path, role: &str) -> TlsFiles {
    TlsFiles {
        ca_file: dir.join("ca.crt"),
        cert_file: dir.join(format!("{role}.crt")),
        key_file: dir.join(format!("{role}.key")),
        server_name: None,
    }
}

/// Starts node `id` with `env`, on an OS-chosen port, joining `join`.
fn node(root: &Path, id: u64, join: &[String], env: &[(String, String)]) -> Proc {
    let mut args: Vec<String> = [
        "node",
        "--id",
        &id.to_string(),
        "--grpc-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--shards",
        &SHARDS.to_string(),
        "--data-dir",
        &crate::procs::data_dir(root, id).display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    if !join.is_empty() {
        args.extend(["--join".to_owned(), join.join(",")]);
    }
    let (child, addrs) = crate::procs::spawn_marked(
        &[],
        &args,
        env,
        &["roost node: grpc on ", "roost node: admin on "],
    );
    Proc {
        child,
        addr: addrs[0].clone(),
        grpc: String::new(),
        admin: addrs[1].clone(),
    }
}

/// Starts an edge with `env` that learns the cluster from `join`.
fn edge(join: &[String], env: &[(String, String)]) -> Proc {
    let args = [
        "edge",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--join",
        &join.join(","),
    ]
    .map(str::to_owned);
    let mut p = spawn(&args, env, "roost edge: serving http://");
    p.addr = format!("http://{}", p.addr);
    p
}

/// Runs `roost ARGS` with `env` added and waits (up to 120 s) for a stdout
/// line containing `marker`; the word after it is the address.
fn spawn(args: &[String], env: &[(String, String)], marker: &'static str) -> Proc {
    let (child, mut addrs) = crate::procs::spawn_marked(&[], args, env, &[marker]);
    Proc {
        child,
        addr: addrs.remove(0),
        grpc: String::new(),
        admin: String::new(),
    }
}
