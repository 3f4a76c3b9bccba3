//! Secure by default, with real processes: a node or an edge without
//! `[tls]` refuses to start unless told `--insecure` (and then says so on
//! `/readyz`); and hostile Raft messages sent to a live node (a snapshot
//! chunk at a huge offset or after a hole, votes and appends with a term of
//! `u64::MAX`, an oversized Vote) are refused while the node keeps serving,
//! its terms unchanged and its memory flat.
//!
//! The hostile messages come over plain gRPC from a node started with
//! `--insecure`: the same checks stand behind mutual TLS, against a peer
//! whose node certificate was stolen.

use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{SnapshotMeta, StoredMembership, Vote};
use roost::replication::TypeConfig;
use roost::rpc::pb;
use tonic::Code;

use crate::harness::{SHARDS, wait_converged};
use crate::procs;

#[test]
fn nodes_and_edges_need_tls_or_insecure_said_out_loud() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = procs::data_dir(root.path(), 1).display().to_string();
    for args in [
        vec!["node", "--grpc-listen", "127.0.0.1:0", "--data-dir", &data],
        vec!["edge", "--listen", "127.0.0.1:0", "--join", "127.0.0.1:1"],
    ] {
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let out = procs::run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started without [tls]");
        assert!(
            stderr.contains("needs mutual TLS") && stderr.contains("--insecure"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        !procs::data_dir(root.path(), 1).exists(),
        "a refused node creates no data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_raft_messages_are_refused_and_the_node_keeps_serving() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    // `--insecure` (the harness's nodes): it starts, and says so.
    let node = procs::node(root.path(), 1, "127.0.0.1:0", &[], SHARDS);
    let addrs = vec![node.addr.clone()];
    wait_converged(&addrs, 1, Duration::from_secs(60)).await;
    let readyz = reqwest::get(format!("{}/readyz", node.admin))
        .await
        .expect("readyz")
        .text()
        .await
        .expect("readyz text");
    assert!(readyz.contains("INSECURE"), "{readyz}");

    let terms_before = raft_terms(&node.admin).await;
    let rss_before = rss_kib(node.child.id());
    let mut client = pb::raft_client::RaftClient::connect(format!("http://{}", node.addr))
        .await
        .expect("connect");
    let request = |payload: Vec<u8>, data: Vec<u8>| pb::RaftRequest {
        shard: 0,
        target: 1,
        payload,
        data,
    };
    let chunk = |offset: u64| InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        meta: SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "hostile".into(),
        },
        offset,
        data: Vec::new(),
        done: false,
    };
    for round in 0..20u64 {
        // Far beyond raft.max_snapshot_bytes (openraft would seek there).
        let huge = postcard::to_stdvec(&chunk(1 << 40)).expect("encode");
        let status = client
            .install_snapshot(request(huge, vec![7; 64 << 10]))
            .await
            .expect_err("a chunk at 1 TiB");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("max_snapshot_bytes"),
            "{status:?}"
        );
        // Within the cap, but after a hole: nothing of it has arrived.
        let gap = postcard::to_stdvec(&chunk((512 << 20) + round)).expect("encode");
        let status = client
            .install_snapshot(request(gap, vec![7; 64 << 10]))
            .await
            .expect_err("a chunk after a hole");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("contiguous"), "{status:?}");

        let vote = VoteRequest::<u64> {
            vote: Vote::new(u64::MAX, 99),
            last_log_id: None,
        };
        let payload = postcard::to_stdvec(&vote).expect("encode");
        let status = client
            .vote(request(payload, Vec::new()))
            .await
            .expect_err("a vote with term u64::MAX");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("too far ahead"), "{status:?}");

        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(u64::MAX - 1, 99),
            prev_log_id: None,
            leader_commit: None,
            entries: Vec::new(),
        };
        let payload = postcard::to_stdvec(&append).expect("encode");
        let status = client
            .append_entries(request(payload, Vec::new()))
            .await
            .expect_err("a heartbeat with a huge term");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    // A Vote is small: a 1 MiB one is not even read.
    let status = client
        .vote(request(vec![0; 1 << 20], Vec::new()))
        .await
        .expect_err("a 1 MiB Vote");
    assert_ne!(status.code(), Code::Ok, "{status:?}");

    // The node still serves, with the terms it had, in about the memory
    // it had (20 refused chunks at 1 TiB would each have been a 1 TiB
    // buffer).
    wait_converged(&addrs, 1, Duration::from_secs(10)).await;
    let terms_after = raft_terms(&node.admin).await;
    assert_eq!(terms_before, terms_after);
    let rss_after = rss_kib(node.child.id());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let metrics = metrics_text(&node.admin).await;
    for reason in ["snapshot_size", "snapshot_gap", "term"] {
        let series = format!("roost_raft_rejected_total{{reason=\"{reason}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing"));
        assert!(count >= 20, "{series}{count}");
    }
    eprintln!("security: RSS {rss_before} KiB before, {rss_after} KiB after the hostile messages");
}

/// `roost_raft_term` of every shard, from the node's `/metrics`.
async fn raft_terms(admin: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut terms: Vec<String> = metrics_text(admin)
            .await
            .lines()
            .filter(|l| l.starts_with("roost_raft_term{"))
            .map(str::to_owned)
            .collect();
        terms.sort();
        if terms.len() >= usize::from(SHARDS) {
            return terms;
        }
        assert!(Instant::now() < deadline, "no roost_raft_term: {terms:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics_text(admin: &str) -> String {
    reqwest::get(format!("{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The resident set size of process `pid`, in KiB (`VmRSS` in /proc).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
