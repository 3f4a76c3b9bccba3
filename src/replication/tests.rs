//! End-to-end tests of the replication layer on real RocksDB in temp dirs.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use super::log_store::{LogStore, log_bounds};
use super::state_machine::StateMachine;
use super::types::{StorageError, TypeConfig};
use super::*;
use crate::id::{ObjectId, ObjectKey};
use crate::storage::{Db, Mutation, ObjectWrite, keys};

const NODE: u64 = 1;

fn fast_opts() -> ReplicationOptions {
    ReplicationOptions {
        heartbeat_ms: 50,
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        ..Default::default()
    }
}

fn object(name: &str) -> ObjectKey {
    ObjectKey::new("TEST", ObjectId::from_name("TEST", name))
}

fn put(object: &ObjectKey, key: &str, value: &str) -> ObjectWrite {
    ObjectWrite {
        object: object.clone(),
        mutations: vec![Mutation::Put {
            key: key.into(),
            value: Bytes::from(value.to_owned()),
        }],
    }
}

fn value(db: &Db, shard: u16, object: &ObjectKey, key: &str) -> Option<String> {
    db.get_state(&keys::data_key(shard, object, key))
        .expect("read state")
        .map(|v| String::from_utf8(v).expect("utf-8 value"))
}

/// Polls `f` until it returns `Some`, failing after a deadline.
async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
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

/// Opens the database, waiting until a previous instance in this process has
/// released it (openraft's workers drop their handles shortly after shutdown).
async fn open_db(dir: &Path) -> Db {
    wait_until("the database lock", || Db::open(dir).ok()).await
}

async fn open(dir: &Path, shards: u16, opts: ReplicationOptions) -> (Db, Replicas) {
    let db = open_db(dir).await;
    let replicas = Replicas::open_single_node(db.clone(), NODE, "127.0.0.1:0".into(), shards, opts)
        .await
        .expect("open replicas");
    replicas
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("every shard elects a leader");
    (db, replicas)
}

async fn commit(replicas: &Replicas, shard: u16, write: ObjectWrite) {
    let handle = replicas.shard(shard).expect("shard exists");
    handle
        .propose(write)
        .await
        .expect("enqueue")
        .await
        .expect("commit");
}

fn last_log_index(replicas: &Replicas, shard: u16) -> u64 {
    let handle = replicas.shard(shard).expect("shard exists");
    handle.raft().metrics().borrow().last_log_index.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_writes_are_readable_on_every_shard() {
    let dir = TempDir::new().expect("temp dir");
    let (db, replicas) = open(dir.path(), 4, fast_opts()).await;
    assert_eq!(replicas.shard_count(), 4);
    assert!(replicas.shard(4).is_none());
    for i in 0..24 {
        let obj = object(&format!("o{i}"));
        let shard = obj.id.shard(4);
        commit(&replicas, shard, put(&obj, "k", &format!("v{i}"))).await;
        assert_eq!(value(&db, shard, &obj, "k"), Some(format!("v{i}")));
    }
    for handle in replicas.shards() {
        handle
            .barrier()
            .await
            .expect("enqueue")
            .await
            .expect("barrier");
        let mut leadership = handle.leadership();
        leadership
            .wait_for(|l| l.is_some())
            .await
            .expect("becomes leader");
        assert!(handle.is_leader());
    }
    replicas.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_proposals_are_group_committed() {
    let dir = TempDir::new().expect("temp dir");
    let (db, replicas) = open(dir.path(), 1, fast_opts()).await;
    let handle = replicas.shard(0).expect("shard 0").clone();
    let before = last_log_index(&replicas, 0);
    let obj = object("hot");
    let proposals = (0..1000).map(|i| {
        let handle = handle.clone();
        let write = put(&obj, &format!("k{i}"), &format!("v{i}"));
        async move { handle.propose(write).await?.await }
    });
    let results = futures_util::future::join_all(proposals).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let entries = last_log_index(&replicas, 0) - before;
    eprintln!("1000 proposals took {entries} log entries");
    assert!(entries < 1000, "{entries} entries for 1000 proposals");
    for i in [0, 499, 999] {
        assert_eq!(value(&db, 0, &obj, &format!("k{i}")), Some(format!("v{i}")));
    }
    // A barrier queued after the writes resolves after them.
    handle
        .barrier()
        .await
        .expect("enqueue")
        .await
        .expect("barrier");
    replicas.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_and_alarms_survive_a_restart() {
    let dir = TempDir::new().expect("temp dir");
    let obj = object("durable");
    let shard = obj.id.shard(2);
    let index_before_restart = {
        let (_db, replicas) = open(dir.path(), 2, fast_opts()).await;
        commit(&replicas, shard, put(&obj, "k", "before")).await;
        let alarm = ObjectWrite {
            object: obj.clone(),
            mutations: vec![Mutation::SetAlarm { at_ms: 1234 }],
        };
        commit(&replicas, shard, alarm).await;
        let index = last_log_index(&replicas, shard);
        let handle = replicas.shard(shard).expect("shard").clone();
        replicas.shutdown().await;
        assert!(!handle.is_leader());
        assert!(matches!(
            handle.propose(put(&obj, "k", "late")).await,
            Err(Error::ShuttingDown)
        ));
        index
    };
    let (db, replicas) = open(dir.path(), 2, fast_opts()).await;
    assert_eq!(value(&db, shard, &obj, "k"), Some("before".into()));
    assert_eq!(
        db.shard_alarms(shard).expect("alarms"),
        vec![(1234, obj.clone())]
    );
    commit(&replicas, shard, put(&obj, "k", "after")).await;
    assert_eq!(value(&db, shard, &obj, "k"), Some("after".into()));
    assert!(last_log_index(&replicas, shard) > index_before_restart);
    let membership = replicas
        .shard(shard)
        .expect("shard")
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .clone();
    assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![NODE]);
    replicas.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_purge_the_log_and_keep_the_state() {
    let dir = TempDir::new().expect("temp dir");
    let opts = ReplicationOptions {
        snapshot_logs_since_last: 10,
        snapshot_keep_logs: 0,
        ..fast_opts()
    };
    let obj = object("snap");
    {
        let (db, replicas) = open(dir.path(), 1, opts.clone()).await;
        for i in 0..50 {
            commit(&replicas, 0, put(&obj, &format!("k{i}"), &format!("v{i}"))).await;
        }
        let raft = replicas.shard(0).expect("shard 0").raft().clone();
        let last = last_log_index(&replicas, 0);
        raft.trigger().snapshot().await.expect("trigger snapshot");
        let mut metrics = raft.metrics();
        metrics
            .wait_for(|m| {
                m.snapshot.is_some_and(|s| s.index >= last)
                    && m.purged.is_some_and(|p| p.index >= last)
            })
            .await
            .expect("snapshot and purge");
        let (first, _) = log_bounds(&db, 0).expect("log bounds");
        assert!(
            first.is_none_or(|f| f > last),
            "log starts at {first:?}, snapshot at {last}"
        );
        replicas.shutdown().await;
    }
    let (db, replicas) = open(dir.path(), 1, opts).await;
    for i in [0, 25, 49] {
        assert_eq!(value(&db, 0, &obj, &format!("k{i}")), Some(format!("v{i}")));
    }
    commit(&replicas, 0, put(&obj, "k50", "v50")).await;
    assert_eq!(value(&db, 0, &obj, "k50"), Some("v50".into()));
    replicas.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn installing_a_snapshot_replaces_the_shard_state() {
    let leader_dir = TempDir::new().expect("temp dir");
    let follower_dir = TempDir::new().expect("temp dir");
    let kept = object("kept");
    let stale = object("stale");
    let (leader_db, replicas) = open(leader_dir.path(), 1, fast_opts()).await;
    commit(&replicas, 0, put(&kept, "k", "v")).await;
    let alarm = ObjectWrite {
        object: kept.clone(),
        mutations: vec![Mutation::SetAlarm { at_ms: 77 }],
    };
    commit(&replicas, 0, alarm).await;
    let mut builder = StateMachine::open(leader_db.clone(), 0)
        .expect("open sm")
        .get_snapshot_builder()
        .await;
    let snapshot = builder.build_snapshot().await.expect("build snapshot");
    replicas.shutdown().await;

    let follower_db = open_db(follower_dir.path()).await;
    let mut sm = StateMachine::open(follower_db.clone(), 0).expect("open sm");
    let entry = openraft::Entry::<TypeConfig> {
        log_id: openraft::testing::log_id(1, NODE, 1),
        payload: openraft::EntryPayload::Normal(ShardCommand {
            writes: vec![put(&stale, "k", "old")],
        }),
    };
    sm.apply([entry]).await.expect("apply");
    assert_eq!(value(&follower_db, 0, &stale, "k"), Some("old".into()));

    sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(value(&follower_db, 0, &kept, "k"), Some("v".into()));
    assert_eq!(value(&follower_db, 0, &stale, "k"), None);
    assert_eq!(
        follower_db.shard_alarms(0).expect("alarms"),
        vec![(77, kept.clone())]
    );
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, snapshot.meta.last_log_id);
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read snapshot")
        .expect("a snapshot");
    assert_eq!(current.meta, snapshot.meta);
}

/// Issue 13 (a write that changed terms): a write bound to the term of the
/// executor that made it takes effect only in a log entry of that term. A
/// batch admitted while this node led in term 7 but appended after it lost
/// and regained leadership (term 9) was computed on a state term 8 may
/// have changed: every replica skips it alike, and the unbound writes
/// beside it (the cluster layer's) still land.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_bound_to_a_term_is_skipped_in_an_entry_of_another() {
    let dir = TempDir::new().expect("temp dir");
    let db = open_db(dir.path()).await;
    let mut sm = StateMachine::open(db.clone(), 0).expect("open sm");
    let obj = object("o");
    let entry = |term: u64, index: u64, writes: Vec<ObjectWrite>| openraft::Entry::<TypeConfig> {
        log_id: openraft::testing::log_id(term, NODE, index),
        payload: openraft::EntryPayload::Normal(ShardCommand { writes }),
    };
    let bound = |key: &str, term: u64| {
        let mut w = put(&obj, key, "v");
        w.bind_to_term(term);
        w
    };
    sm.apply([
        entry(7, 1, vec![bound("in-7", 7)]),
        entry(9, 2, vec![bound("late", 7), put(&obj, "free", "v")]),
    ])
    .await
    .expect("apply");
    assert_eq!(value(&db, 0, &obj, "in-7"), Some("v".into()));
    assert_eq!(
        value(&db, 0, &obj, "late"),
        None,
        "made for term 7, landed in 9"
    );
    assert_eq!(value(&db, 0, &obj, "free"), Some("v".into()));
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(openraft::testing::log_id(9, NODE, 2)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shard_without_a_leader_refuses_writes_and_barriers() {
    let dir = TempDir::new().expect("temp dir");
    let db = open_db(dir.path()).await;
    // Opened over no peers and never initialized: a pristine learner.
    let replicas = Replicas::open(db, NODE, 1, std::sync::Arc::new(NoPeers), fast_opts())
        .await
        .expect("open replicas");
    let waited = replicas.wait_for_leaders(Duration::from_millis(200)).await;
    assert!(matches!(waited, Err(Error::Timeout)), "{waited:?}");
    let handle = replicas.shard(0).expect("shard 0");
    let write = handle
        .propose(put(&object("x"), "k", "v"))
        .await
        .expect("enqueue");
    assert!(matches!(
        write.await,
        Err(Error::NotLeader { leader: None })
    ));
    let barrier = handle.barrier().await.expect("enqueue");
    assert!(matches!(
        barrier.await,
        Err(Error::NotLeader { leader: None })
    ));
    assert!(!handle.is_leader());
    replicas.shutdown().await;
}

/// Builds a fresh log store and state machine (shard 0) in a temp dir.
struct SuiteBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SuiteBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let db = Db::open(dir.path()).expect("open db");
        let sm = StateMachine::open(db.clone(), 0)?;
        Ok((dir, LogStore::new(db, 0), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SuiteBuilder).expect("openraft's storage suite passes");
}
