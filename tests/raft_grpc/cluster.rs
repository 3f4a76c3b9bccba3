//! In-process test nodes: each its own RocksDB in a temp dir, its own shard
//! groups over `GrpcTransport`, and its own gRPC server on a port from the OS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::BasicNode;
use roost::id::{ObjectId, ObjectKey};
use roost::replication::{self, Replicas, ReplicationOptions};
use roost::rpc::{self, GrpcTransport};
use roost::storage::{Db, Mutation, ObjectWrite, keys};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn opts() -> ReplicationOptions {
    ReplicationOptions {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..Default::default()
    }
}

/// Logs to the test's captured output (shown when it fails); `RUST_LOG`
/// picks what, warnings by default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Polls `f` until it returns `Some`, failing after [`DEADLINE`].
pub async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One running node.
pub struct Node {
    pub id: u64,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub db: Db,
    pub replicas: Arc<Replicas>,
    pub transport: Arc<GrpcTransport>,
    stop: CancellationToken,
    server: JoinHandle<Result<(), rpc::Error>>,
}

impl Node {
    /// Starts node `id` on `dir`, serving on `bind` (port 0 for a new node,
    /// its old address for a restart).
    pub async fn start(
        id: u64,
        dir: &Path,
        bind: SocketAddr,
        shards: u16,
        opts: ReplicationOptions,
    ) -> Node {
        // A previous instance in this process releases the lock shortly
        // after it shut down; the port may also take a moment to free.
        let db = wait_until("the database lock", || Db::open(dir).ok()).await;
        let listener = loop {
            match TcpListener::bind(bind).await {
                Ok(l) => break l,
                Err(e) if bind.port() != 0 => {
                    tracing::debug!(error = %e, "port still busy");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind {bind}: {e}"),
            }
        };
        let addr = listener.local_addr().expect("local address");
        let transport = Arc::new(GrpcTransport::new());
        let replicas = Replicas::open(db.clone(), id, shards, transport.clone(), opts)
            .await
            .expect("open replicas");
        let replicas = Arc::new(replicas);
        let stop = CancellationToken::new();
        let server = tokio::spawn(rpc::serve(listener, replicas.clone(), stop.clone()));
        Node {
            id,
            addr,
            dir: dir.to_owned(),
            db,
            replicas,
            transport,
            stop,
            server,
        }
    }

    pub fn basic_node(&self) -> BasicNode {
        BasicNode::new(self.addr.to_string())
    }

    pub fn shard(&self, shard: u16) -> &replication::ShardHandle {
        self.replicas.shard(shard).expect("shard exists")
    }

    /// Stops the server and the shard groups; returns what a restart needs.
    pub async fn stop(self) -> (u64, PathBuf, SocketAddr) {
        self.stop.cancel();
        self.replicas.shutdown().await;
        match tokio::time::timeout(DEADLINE, self.server).await {
            Ok(joined) => joined.expect("server task").expect("server ends cleanly"),
            Err(_) => panic!("server of node {} did not stop", self.id),
        }
        (self.id, self.dir, self.addr)
    }
}

/// Initializes every shard group with `nodes` as voters, from `nodes[0]`.
pub async fn initialize(nodes: &[Node]) {
    let members: BTreeMap<u64, BasicNode> = nodes.iter().map(|n| (n.id, n.basic_node())).collect();
    for handle in nodes[0].replicas.shards() {
        handle
            .raft()
            .initialize(members.clone())
            .await
            .expect("initialize the shard group");
    }
}

/// Waits until every node knows a leader of every shard.
pub async fn wait_for_leaders(nodes: &[Node]) {
    for node in nodes {
        node.replicas
            .wait_for_leaders(DEADLINE)
            .await
            .expect("every shard elects a leader");
    }
}

/// The node that leads `shard`, among `nodes`.
pub async fn leader(nodes: &[Node], shard: u16) -> &Node {
    wait_until(&format!("a leader of shard {shard}"), || {
        nodes.iter().find(|n| n.shard(shard).is_leader())
    })
    .await
}

pub fn object(name: &str) -> ObjectKey {
    ObjectKey::new("TEST", ObjectId::from_name("TEST", name))
}

pub fn put(object: &ObjectKey, key: &str, value: Bytes) -> ObjectWrite {
    ObjectWrite {
        object: object.clone(),
        mutations: vec![Mutation::Put {
            key: key.into(),
            value,
        }],
    }
}

/// Commits `write` through the current leader of `shard` among `nodes`,
/// retrying when leadership moves or a leader's lease lapses (a put is
/// idempotent).
pub async fn commit(nodes: &[Node], shard: u16, write: ObjectWrite) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let node = leader(nodes, shard).await;
        let result = match node.shard(shard).propose(write.clone()).await {
            Ok(commit) => commit.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return,
            Err(replication::Error::NotLeader { .. } | replication::Error::NoQuorum(_))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("commit to shard {shard} via node {}: {e}", node.id),
        }
    }
}

pub fn value(db: &Db, shard: u16, object: &ObjectKey, key: &str) -> Option<Vec<u8>> {
    db.get_state(&keys::data_key(shard, object, key))
        .expect("read state")
}

/// Waits until `node`'s RocksDB holds `expected` under `object`/`key`.
pub async fn wait_value(node: &Node, shard: u16, object: &ObjectKey, key: &str, expected: &[u8]) {
    let what = format!("{object:?}/{key} on node {}", node.id);
    wait_until(&what, || {
        (value(&node.db, shard, object, key).as_deref() == Some(expected)).then_some(())
    })
    .await;
}
