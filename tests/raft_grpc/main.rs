//! Raft over gRPC between in-process nodes with real sockets and real
//! RocksDB: replication, failover and restart, catch-up by snapshot, and
//! bad input on the wire.

mod cluster;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cluster::{
    DEADLINE, Node, commit, initialize, leader, object, opts, put, wait_for_leaders, wait_until,
    wait_value,
};
use openraft::error::RPCError;
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, VoteRequest, VoteResponse};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use roost::replication::{Peer, Raft, ReplicationOptions, ShardCommand, Transport, TypeConfig};
use roost::rpc::GrpcTransport;
use roost::rpc::pb::raft_client::RaftClient;
use roost::rpc::pb::raft_frame::Body;
use roost::rpc::pb::{RaftBatch, RaftFrame, RaftReply, RaftRequest};
use tempfile::TempDir;
use tonic::Code;

const ANY_PORT: &str = "127.0.0.1:0";

/// Starts nodes 1..=n on fresh temp dirs.
async fn start(n: u64, shards: u16, opts: ReplicationOptions) -> (Vec<TempDir>, Vec<Node>) {
    cluster::init_logging();
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for id in 1..=n {
        let dir = TempDir::new().expect("temp dir");
        let bind: SocketAddr = ANY_PORT.parse().expect("address");
        nodes.push(Node::start(id, dir.path(), bind, shards, opts.clone()).await);
        dirs.push(dir);
    }
    (dirs, nodes)
}

async fn stop_all(nodes: Vec<Node>) {
    for node in nodes {
        node.stop().await;
    }
}

fn text(s: String) -> Bytes {
    Bytes::from(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_replicate_to_every_node_over_one_channel_per_peer() {
    const SHARDS: u16 = 4;
    let (_dirs, nodes) = start(3, SHARDS, opts()).await;
    initialize(&nodes).await;
    wait_for_leaders(&nodes).await;

    let mut written = Vec::new();
    for i in 0..32 {
        let obj = object(&format!("o{i}"));
        let shard = obj.id.shard(SHARDS);
        let v = format!("v{i}");
        commit(&nodes, shard, put(&obj, "k", text(v.clone()))).await;
        written.push((obj, shard, v));
    }
    for node in &nodes {
        for (obj, shard, v) in &written {
            wait_value(node, *shard, obj, "k", v.as_bytes()).await;
        }
    }

    // Every shard's traffic to a peer shares one channel: a node that leads
    // several shards (one must: 4 shards, 3 nodes) still holds exactly one
    // channel per other node, and no node holds more.
    let busiest = nodes
        .iter()
        .max_by_key(|n| (0..SHARDS).filter(|s| n.shard(*s).is_leader()).count())
        .expect("nodes");
    let led = (0..SHARDS)
        .filter(|s| busiest.shard(*s).is_leader())
        .count();
    assert!(led >= 2, "node {} leads {led} shards", busiest.id);
    for node in &nodes {
        let mut others: Vec<String> = nodes
            .iter()
            .filter(|n| n.id != node.id)
            .map(|n| n.addr.to_string())
            .collect();
        others.sort();
        let peers = node.transport.peers();
        assert!(
            peers.iter().all(|p| others.contains(p)),
            "node {}: {peers:?}",
            node.id
        );
        if node.id == busiest.id {
            assert_eq!(peers, others, "node {}", node.id);
        }
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_leader_fails_over_and_catches_up_after_restart() {
    const SHARDS: u16 = 2;
    let (_dirs, mut nodes) = start(3, SHARDS, opts()).await;
    initialize(&nodes).await;
    wait_for_leaders(&nodes).await;

    let mut acked = Vec::new();
    for i in 0..16 {
        let obj = object(&format!("before{i}"));
        let shard = obj.id.shard(SHARDS);
        let v = format!("b{i}");
        commit(&nodes, shard, put(&obj, "k", text(v.clone()))).await;
        acked.push((obj, shard, v));
    }

    let victim = leader(&nodes, 0).await.id;
    let at = nodes.iter().position(|n| n.id == victim).expect("victim");
    let (id, dir, addr) = nodes.remove(at).stop().await;

    // The other two elect a new leader of shard 0 that has every
    // acknowledged write, and both apply them.
    let new_leader = leader(&nodes, 0).await.id;
    assert_ne!(new_leader, victim);
    for node in &nodes {
        for (obj, shard, v) in &acked {
            wait_value(node, *shard, obj, "k", v.as_bytes()).await;
        }
    }
    for i in 0..16 {
        let obj = object(&format!("after{i}"));
        let shard = obj.id.shard(SHARDS);
        let v = format!("a{i}");
        commit(&nodes, shard, put(&obj, "k", text(v.clone()))).await;
        acked.push((obj, shard, v));
    }

    // The stopped node comes back on its data dir and address and catches up.
    nodes.push(Node::start(id, &dir, addr, SHARDS, opts()).await);
    let restarted = nodes.last().expect("restarted node");
    for (obj, shard, v) in &acked {
        wait_value(restarted, *shard, obj, "k", v.as_bytes()).await;
    }
    wait_for_leaders(&nodes).await;
    let obj = object("after-restart");
    let shard = obj.id.shard(SHARDS);
    commit(&nodes, shard, put(&obj, "k", text("r".into()))).await;
    for node in &nodes {
        wait_value(node, shard, &obj, "k", b"r").await;
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_learner_is_brought_up_to_date_by_snapshot() {
    const SHARDS: u16 = 2;
    let opts = ReplicationOptions {
        snapshot_logs_since_last: 10,
        snapshot_keep_logs: 0,
        ..opts()
    };
    let (mut dirs, mut nodes) = start(3, SHARDS, opts.clone()).await;
    initialize(&nodes).await;
    wait_for_leaders(&nodes).await;

    // ~4 MiB per shard, so each snapshot is sent in more than one chunk
    // (openraft's default chunk is 3 MiB).
    let big = |i: usize| Bytes::from(vec![b'a' + (i % 26) as u8; 100 * 1024]);
    let mut written = Vec::new();
    for shard in 0..SHARDS {
        let mut n = 0;
        let mut i = 0;
        while n < 40 {
            let obj = object(&format!("s{i}"));
            i += 1;
            if obj.id.shard(SHARDS) != shard {
                continue;
            }
            commit(&nodes, shard, put(&obj, "k", big(n))).await;
            written.push((obj, shard, big(n)));
            n += 1;
        }
    }

    // Every replica snapshots and purges most of its log, so that whichever
    // leads when the learner joins (leadership may move on a loaded
    // machine) can bring it up to date only by a snapshot.
    for node in &nodes {
        for shard in 0..SHARDS {
            purge_at_least(node.shard(shard).raft(), shard, 20).await;
        }
    }

    let dir = TempDir::new().expect("temp dir");
    let bind: SocketAddr = ANY_PORT.parse().expect("address");
    let learner = Node::start(4, dir.path(), bind, SHARDS, opts.clone()).await;
    dirs.push(dir);
    for shard in 0..SHARDS {
        add_learner(&nodes, shard, &learner).await;
    }
    for (obj, shard, v) in &written {
        wait_value(&learner, *shard, obj, "k", v).await;
    }
    // RaftCore publishes the installed snapshot in its metrics a moment
    // after the state it carries is in RocksDB (where `wait_value` reads).
    for shard in 0..SHARDS {
        let raft = learner.shard(shard).raft().clone();
        wait_until(
            &format!("shard {shard} of the learner holds a snapshot"),
            || {
                let snapshot = raft.metrics().borrow().snapshot;
                snapshot.filter(|s| s.index >= 20)
            },
        )
        .await;
    }

    // And it follows new writes by plain replication.
    nodes.push(learner);
    let obj = object("after-learner");
    let shard = obj.id.shard(SHARDS);
    commit(&nodes, shard, put(&obj, "k", text("new".into()))).await;
    wait_value(&nodes[3], shard, &obj, "k", b"new").await;
    stop_all(nodes).await;
}

/// Adds `learner` to `shard`'s group through its leader among `nodes`,
/// again through the new leader when leadership moves meanwhile (on a
/// loaded machine a follower may start an election at any time).
async fn add_learner(nodes: &[Node], shard: u16, learner: &Node) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let raft = leader(nodes, shard).await.shard(shard).raft().clone();
        match raft
            .add_learner(learner.id, learner.basic_node(), true)
            .await
        {
            Ok(_) => return,
            Err(e) if e.forward_to_leader().is_some() => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "add the learner to shard {shard}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("add the learner to shard {shard}: {e}"),
        }
    }
}

/// Has `raft` snapshot what it applied and purge its log up to at least
/// `index` (a leader purges only what no replication to a follower still
/// reads).
///
/// Waiting for openraft's snapshot policy alone is not enough: it starts a
/// build only when the commit index passes the threshold while no build is
/// running, and does not look again when that build ends. A build still
/// running when the last write commits (a slow machine) leaves the node at
/// the snapshot before for good — index 19 of 41, say, which is not purged
/// past 20 however long one waits. openraft drops a request made while a
/// build is running, so it is made again until the log is purged.
async fn purge_at_least(raft: &Raft, shard: u16, index: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        raft.trigger().snapshot().await.expect("ask for a snapshot");
        let purged = raft
            .wait(Some(Duration::from_millis(500)))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= index),
                "the log purged",
            )
            .await;
        if purged.is_ok() {
            return;
        }
        let m = raft.metrics().borrow().clone();
        assert!(
            tokio::time::Instant::now() < deadline,
            "shard {shard}'s replica did not purge its log up to {index}: \
             state {:?}, applied {:?}, snapshot {:?}, purged {:?}",
            m.state,
            m.last_applied,
            m.snapshot,
            m.purged
        );
    }
}

fn raw_request(shard: u32, target: u64, payload: Vec<u8>) -> RaftRequest {
    RaftRequest {
        shard,
        target,
        payload,
        data: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_an_error_status_and_the_server_keeps_working() {
    let (_dirs, nodes) = start(3, 1, opts()).await;
    initialize(&nodes).await;
    wait_for_leaders(&nodes).await;

    let target = &nodes[1];
    let mut client = RaftClient::connect(format!("http://{}", target.addr))
        .await
        .expect("connect");
    let garbage = vec![0xff; 64];
    let status = client
        .append_entries(raw_request(0, target.id, garbage.clone()))
        .await
        .expect_err("garbage AppendEntries");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = client
        .vote(raw_request(0, target.id, Vec::new()))
        .await
        .expect_err("empty Vote");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = client
        .install_snapshot(raw_request(0, target.id, garbage.clone()))
        .await
        .expect_err("garbage InstallSnapshot");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let stale_vote = VoteRequest::<u64> {
        vote: Vote::new(0, 99),
        last_log_id: None,
    };
    let vote_payload = postcard::to_stdvec(&stale_vote).expect("encode");
    for shard in [1, 7, u32::MAX] {
        let status = client
            .vote(raw_request(shard, target.id, vote_payload.clone()))
            .await
            .expect_err("unknown shard");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let status = client
        .vote(raw_request(0, 99, vote_payload.clone()))
        .await
        .expect_err("wrong node");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // Decodes, but its entries do not follow prev_log_id.
    let skipping = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 5),
            payload: EntryPayload::Normal(ShardCommand::default()),
        }],
    };
    let payload = postcard::to_stdvec(&skipping).expect("encode");
    let status = client
        .append_entries(raw_request(0, target.id, payload))
        .await
        .expect_err("non-consecutive entries");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The same on the batched stream: each bad frame gets its own status,
    // in one answer message or several, and the stream goes on serving.
    let frame = |id, body| RaftFrame {
        id,
        timeout_ms: 1000,
        body: Some(body),
    };
    let bad = vec![
        frame(
            1,
            Body::AppendEntries(raw_request(0, target.id, garbage.clone())),
        ),
        frame(2, Body::Vote(raw_request(0, target.id, Vec::new()))),
        frame(
            3,
            Body::Vote(raw_request(7, target.id, vote_payload.clone())),
        ),
        frame(4, Body::Vote(raw_request(0, 99, vote_payload.clone()))),
        frame(5, Body::Vote(raw_request(0, target.id, vec![0; 128 << 10]))),
        frame(
            6,
            Body::Reply(RaftReply {
                payload: Vec::new(),
            }),
        ),
        frame(
            7,
            Body::Vote(raw_request(0, target.id, vote_payload.clone())),
        ),
    ];
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(RaftBatch { frames: bad }).await.expect("queue");
    let mut answers = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("a stream opens")
        .into_inner();
    let mut codes = std::collections::BTreeMap::new();
    while codes.len() < 7 {
        let batch = answers
            .message()
            .await
            .expect("the stream stays up")
            .expect("answers");
        for f in batch.frames {
            let code = match f.body {
                Some(Body::Status(s)) => Code::from(s.code),
                Some(Body::Reply(_)) => Code::Ok,
                other => panic!("not an answer: {other:?}"),
            };
            codes.insert(f.id, code);
        }
    }
    let expected = [
        (1, Code::InvalidArgument),
        (2, Code::InvalidArgument),
        (3, Code::NotFound),
        (4, Code::FailedPrecondition),
        (5, Code::InvalidArgument),
        (6, Code::InvalidArgument),
        (7, Code::Ok),
    ];
    assert_eq!(codes, expected.into_iter().collect(), "answers by frame id");
    drop(tx);

    // A well-formed but stale vote is answered, and refused, by Raft itself.
    let reply = client
        .vote(raw_request(0, target.id, vote_payload))
        .await
        .expect("a stale vote is answered")
        .into_inner();
    let answer: Result<VoteResponse<u64>, openraft::error::RaftError<u64>> =
        postcard::from_bytes(&reply.payload).expect("decode the reply");
    assert!(!answer.expect("no remote error").vote_granted);

    // The cluster still replicates.
    let obj = object("after-garbage");
    commit(&nodes, 0, put(&obj, "k", text("ok".into()))).await;
    for node in &nodes {
        wait_value(node, 0, &obj, "k", b"ok").await;
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_tell_openraft_what_to_do() {
    // A port nobody listens on: connection refused is `Unreachable`.
    let listener = tokio::net::TcpListener::bind(ANY_PORT).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let transport = GrpcTransport::new();
    let peer = Peer {
        shard: 0,
        id: 2,
        node: BasicNode::new(addr.to_string()),
    };
    let vote = VoteRequest::<u64> {
        vote: Vote::new(1, 1),
        last_log_id: None,
    };
    let err = tokio::time::timeout(
        DEADLINE,
        transport.vote(&peer, vote, RPCOption::new(DEADLINE)),
    )
    .await
    .expect("fails before the deadline")
    .expect_err("nobody listens");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    // An AppendEntries too large for one message is split by openraft.
    let entry = |index| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ShardCommand {
            writes: vec![put(&object("big"), "k", Bytes::from(vec![0u8; 2 << 20]))],
        }),
    };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![entry(1), entry(2), entry(3)],
    };
    let err = transport
        .append_entries(&peer, append, RPCOption::new(DEADLINE))
        .await
        .expect_err("too large");
    match err {
        RPCError::PayloadTooLarge(too_large) => {
            let hint = too_large.entries_hint();
            assert!((1..3).contains(&hint), "hint {hint}");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
}
