//! The recording calls: one function per thing that happens, so that a
//! layer records with one line and every label key comes from `super`.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge};

use super::*;

/// A label value from a binding name: shared, not copied.
fn b(binding: &Arc<str>) -> metrics::SharedString {
    binding.clone().into()
}

// --- the edge -------------------------------------------------------------

/// The method as a label: one of the standard methods, else `_OTHER`
/// (as OpenTelemetry's HTTP conventions do, to keep the label bounded).
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// One answered HTTP request.
pub fn http_request(route: &'static str, method: &http::Method, status: u16, elapsed: Duration) {
    let method = method_label(method);
    metrics::counter!(HTTP_REQUESTS, ROUTE => route, METHOD => method, STATUS => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_DURATION, ROUTE => route, METHOD => method).record(elapsed);
}

/// Counts one in a gauge while it lives (also if its future is dropped).
#[must_use = "the gauge goes down again when this is dropped"]
pub struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn open(gauge: Gauge) -> Open {
    gauge.increment(1.0);
    Open(gauge)
}

/// A request in flight at the edge, until dropped.
pub fn http_in_flight() -> Open {
    open(metrics::gauge!(HTTP_IN_FLIGHT))
}

/// A bridged WebSocket, until dropped.
pub fn websocket_open(binding: &Arc<str>) -> Open {
    open(metrics::gauge!(WEBSOCKETS_OPEN, BINDING => b(binding)))
}

/// One WebSocket message of `bytes` payload, `in` from or `out` to a client.
pub fn websocket_frame(binding: &Arc<str>, direction: &'static str, bytes: usize) {
    metrics::counter!(WEBSOCKET_FRAMES, BINDING => b(binding), DIRECTION => direction).increment(1);
    metrics::counter!(WEBSOCKET_BYTES, BINDING => b(binding), DIRECTION => direction)
        .increment(bytes as u64);
}

/// A WebSocket ended, `end` saying how.
pub fn websocket_closed(binding: &Arc<str>, end: &'static str) {
    metrics::counter!(WEBSOCKET_CLOSES, BINDING => b(binding), END => end).increment(1);
}

// --- objects --------------------------------------------------------------

/// An event taken from the mailbox after waiting `waited`.
pub fn object_queue_wait(binding: &Arc<str>, waited: Duration) {
    metrics::histogram!(OBJECT_QUEUE_WAIT, BINDING => b(binding)).record(waited);
}

/// An event run to its end in `busy`.
pub fn object_event(
    binding: &Arc<str>,
    event: &'static str,
    outcome: &'static str,
    busy: Duration,
) {
    metrics::counter!(OBJECT_EVENTS, BINDING => b(binding), EVENT => event, OUTCOME => outcome)
        .increment(1);
    metrics::histogram!(OBJECT_HANDLER_DURATION, BINDING => b(binding), EVENT => event)
        .record(busy);
}

/// An event's outputs released after waiting `waited` at the output gate.
pub fn object_commit_wait(binding: &Arc<str>, gate: &'static str, waited: Duration) {
    metrics::histogram!(OBJECT_COMMIT_WAIT, BINDING => b(binding), GATE => gate).record(waited);
}

/// An edge forwarded an object call in `took`, ending with `outcome`.
pub fn forward(binding: &Arc<str>, outcome: &'static str, took: Duration) {
    metrics::histogram!(FORWARD_DURATION, BINDING => b(binding), OUTCOME => outcome).record(took);
}

/// An edge tries another node for a call: `reason` is `not_owner`,
/// `unreachable` or `idempotent`.
/// A peer's Raft message refused before openraft saw it.
pub fn raft_rejected(reason: &'static str) {
    metrics::counter!(RAFT_REJECTED, REASON => reason).increment(1);
}

/// A gRPC call refused for the caller's role.
pub fn rpc_denied(service: &'static str, role: &'static str) {
    metrics::counter!(RPC_DENIED, SERVICE => service, ROLE => role).increment(1);
}

pub fn forward_retry(binding: &Arc<str>, reason: &'static str) {
    metrics::counter!(FORWARD_RETRIES, BINDING => b(binding), REASON => reason).increment(1);
}

pub fn object_activated(binding: &Arc<str>) {
    metrics::counter!(OBJECT_ACTIVATIONS, BINDING => b(binding)).increment(1);
}

/// A shard whose records of deleted class `namespace` this node is
/// deleting, until dropped.
pub fn migration_pending(namespace: &Arc<str>) -> Open {
    open(metrics::gauge!(MIGRATION_PENDING_SHARDS, BINDING => b(namespace)))
}

/// `n` records of deleted class `namespace` deleted.
pub fn migration_deleted(namespace: &Arc<str>, n: usize) {
    metrics::counter!(MIGRATION_DELETED, BINDING => b(namespace)).increment(n as u64);
}

/// A shard found holding nothing of deleted class `namespace`.
pub fn migration_reclaimed(namespace: &Arc<str>) {
    metrics::counter!(MIGRATION_RECLAIMED_SHARDS, BINDING => b(namespace)).increment(1);
}

/// An executor left: `reason` is `idle` or `reset`.
pub fn object_evicted(binding: &Arc<str>, reason: &'static str) {
    metrics::counter!(OBJECT_EVICTIONS, BINDING => b(binding), REASON => reason).increment(1);
}

pub fn object_overloaded(binding: &Arc<str>) {
    metrics::counter!(OBJECT_OVERLOADED, BINDING => b(binding)).increment(1);
}

pub fn objects_live(n: usize) {
    metrics::gauge!(OBJECTS_LIVE).set(n as f64);
}

pub fn objects_live_max(n: usize) {
    metrics::gauge!(OBJECTS_LIVE_MAX).set(n as f64);
}

/// A connection refused over a cap (`reason`: which).
pub fn http_connection_refused(reason: &'static str) {
    metrics::counter!(HTTP_CONNECTIONS_REFUSED, REASON => reason).increment(1);
}

/// A connection closed by a timeout (`kind`: header, idle, body).
pub fn http_connection_timed_out(kind: &'static str) {
    metrics::counter!(HTTP_CONNECTIONS_TIMED_OUT, KIND => kind).increment(1);
}

/// A request refused with 429 at the edge (`kind`: what was limited).
pub fn http_rate_limited(kind: &'static str) {
    metrics::counter!(HTTP_RATE_LIMITED, KIND => kind).increment(1);
}

/// A storage API call `op` that read or wrote `bytes` (keys and values).
pub fn storage_op(binding: &Arc<str>, op: &'static str, direction: &'static str, bytes: usize) {
    metrics::counter!(STORAGE_OPERATIONS, BINDING => b(binding), OP => op).increment(1);
    if bytes > 0 {
        metrics::counter!(STORAGE_BYTES, BINDING => b(binding), DIRECTION => direction)
            .increment(bytes as u64);
    }
}

/// What happened to an alarm: `scheduled`, `fired`, `retried` or `failed`.
pub fn alarm(binding: &Arc<str>, what: AlarmEvent) {
    let name = match what {
        AlarmEvent::Scheduled => ALARMS_SCHEDULED,
        AlarmEvent::Fired => ALARMS_FIRED,
        AlarmEvent::Retried => ALARMS_RETRIED,
        AlarmEvent::Failed => ALARMS_FAILED,
    };
    metrics::counter!(name, BINDING => b(binding)).increment(1);
}

/// See [`alarm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmEvent {
    Scheduled,
    Fired,
    Retried,
    Failed,
}

pub fn alarms_pending(n: usize) {
    metrics::gauge!(ALARMS_PENDING).set(n as f64);
}

// --- replication and storage ------------------------------------------------

/// One log entry of `writes` object writes (`bytes` in all) handed to Raft.
pub fn raft_batch(writes: usize, bytes: usize) {
    metrics::histogram!(RAFT_BATCH_WRITES).record(writes as f64);
    metrics::histogram!(RAFT_BATCH_BYTES).record(bytes as f64);
}

/// A proposal (`kind` = write or barrier) settled with `outcome` after `took`.
pub fn raft_proposal(kind: &'static str, outcome: &'static str, took: Duration) {
    metrics::counter!(RAFT_PROPOSALS, KIND => kind, OUTCOME => outcome).increment(1);
    metrics::histogram!(RAFT_COMMIT_DURATION, KIND => kind).record(took);
}

/// A snapshot of `shard` built or installed (`kind`) in `took`.
pub fn raft_snapshot(shard: u16, kind: &'static str, took: Duration) {
    metrics::counter!(RAFT_SNAPSHOTS, SHARD => shard.to_string(), KIND => kind).increment(1);
    metrics::histogram!(RAFT_SNAPSHOT_DURATION, KIND => kind).record(took);
}

/// A synced RocksDB write that took `took`.
pub fn rocksdb_sync(took: Duration) {
    metrics::histogram!(ROCKSDB_SYNC_DURATION).record(took);
}

/// RocksDB figures sampled at scrape time. `None` leaves a gauge as it was.
#[derive(Clone, Debug, Default)]
pub struct RocksDbSample {
    pub write_stopped: Option<u64>,
    pub delayed_write_rate: Option<u64>,
    pub running_compactions: Option<u64>,
    pub column_families: Vec<ColumnFamilySample>,
}

/// The per-column-family figures of a [`RocksDbSample`].
#[derive(Clone, Debug, Default)]
pub struct ColumnFamilySample {
    pub name: &'static str,
    pub pending_compaction_bytes: Option<u64>,
    pub sst_files_bytes: Option<u64>,
    pub memtable_bytes: Option<u64>,
}

pub fn rocksdb(sample: &RocksDbSample) {
    let set = |gauge: Gauge, v: Option<u64>| {
        if let Some(v) = v {
            gauge.set(v as f64);
        }
    };
    set(metrics::gauge!(ROCKSDB_WRITE_STOPPED), sample.write_stopped);
    set(
        metrics::gauge!(ROCKSDB_DELAYED_WRITE_RATE),
        sample.delayed_write_rate,
    );
    set(
        metrics::gauge!(ROCKSDB_RUNNING_COMPACTIONS),
        sample.running_compactions,
    );
    for cf in &sample.column_families {
        let name = cf.name;
        set(
            metrics::gauge!(ROCKSDB_PENDING_COMPACTION, CF => name),
            cf.pending_compaction_bytes,
        );
        set(
            metrics::gauge!(ROCKSDB_SST_FILES, CF => name),
            cf.sst_files_bytes,
        );
        set(
            metrics::gauge!(ROCKSDB_MEMTABLES, CF => name),
            cf.memtable_bytes,
        );
    }
}

/// The per-shard Raft series of one shard, resolved once.
pub struct ShardMetrics {
    is_leader: Gauge,
    term: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    apply_lag: Gauge,
    log_entries: Gauge,
    snapshot_index: Gauge,
    leader_changes: Counter,
}

/// A shard's log positions, as indexes (0: none yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPositions {
    pub last_log: u64,
    pub committed: u64,
    pub applied: u64,
    pub purged: u64,
    pub snapshot: u64,
}

impl ShardMetrics {
    pub fn new(shard: u16) -> ShardMetrics {
        let s = || shard.to_string();
        ShardMetrics {
            is_leader: metrics::gauge!(RAFT_IS_LEADER, SHARD => s()),
            term: metrics::gauge!(RAFT_TERM, SHARD => s()),
            last_log_index: metrics::gauge!(RAFT_LAST_LOG_INDEX, SHARD => s()),
            commit_index: metrics::gauge!(RAFT_COMMIT_INDEX, SHARD => s()),
            applied_index: metrics::gauge!(RAFT_APPLIED_INDEX, SHARD => s()),
            apply_lag: metrics::gauge!(RAFT_APPLY_LAG, SHARD => s()),
            log_entries: metrics::gauge!(RAFT_LOG_ENTRIES, SHARD => s()),
            snapshot_index: metrics::gauge!(RAFT_SNAPSHOT_INDEX, SHARD => s()),
            leader_changes: metrics::counter!(RAFT_LEADER_CHANGES, SHARD => s()),
        }
    }

    pub fn leadership(&self, is_leader: bool, term: u64) {
        self.is_leader.set(if is_leader { 1.0 } else { 0.0 });
        self.term.set(term as f64);
    }

    pub fn leader_changed(&self) {
        self.leader_changes.increment(1);
    }

    pub fn log(&self, p: LogPositions) {
        self.last_log_index.set(p.last_log as f64);
        self.commit_index.set(p.committed as f64);
        self.applied_index.set(p.applied as f64);
        self.apply_lag
            .set(p.committed.saturating_sub(p.applied) as f64);
        self.log_entries
            .set(p.last_log.saturating_sub(p.purged) as f64);
        self.snapshot_index.set(p.snapshot as f64);
    }
}

/// The counter of AppendEntries received for `shard`
/// (`roost_raft_appends_received_total`), to keep and increment.
pub fn raft_appends_received(shard: u16) -> Counter {
    metrics::counter!(RAFT_APPENDS_RECEIVED, SHARD => shard.to_string())
}

/// A shard this node leads went quiet (`true`) or woke (`false`).
pub fn raft_quiesced(quiet: bool) {
    let g = metrics::gauge!(RAFT_QUIESCED);
    if quiet {
        g.increment(1.0);
    } else {
        g.decrement(1.0);
    }
}

/// Whether this node leads `shard` with a quorum's acknowledgement within
/// the lease (`roost_raft_quorum_acked`).
pub fn raft_quorum_acked(shard: u16, acked: bool) {
    metrics::gauge!(RAFT_QUORUM_ACKED, SHARD => shard.to_string()).set(if acked {
        1.0
    } else {
        0.0
    });
}

/// The gRPC calls served of one `service` and `method` (the caller bounds
/// them: only paths a served service answered), resolved once.
#[derive(Debug)]
pub struct RpcHandles {
    service: metrics::SharedString,
    method: metrics::SharedString,
    duration: metrics::Histogram,
    /// By status code name, resolved as each code is first seen.
    requests: Vec<(&'static str, Counter)>,
}

pub fn rpc_handles(service: &str, method: &str) -> RpcHandles {
    let service: metrics::SharedString = service.to_owned().into();
    let method: metrics::SharedString = method.to_owned().into();
    RpcHandles {
        duration: metrics::histogram!(RPC_SERVER_DURATION, SERVICE => service.clone(), METHOD => method.clone()),
        service,
        method,
        requests: Vec::new(),
    }
}

impl RpcHandles {
    /// One call served, `code` the status code's name.
    pub fn record(&mut self, code: &'static str, took: Duration) {
        let counter = match self.requests.iter().find(|(c, _)| *c == code) {
            Some((_, counter)) => counter,
            None => {
                let counter = metrics::counter!(RPC_SERVER_REQUESTS, SERVICE => self.service.clone(), METHOD => self.method.clone(), CODE => code);
                self.requests.push((code, counter));
                &self.requests[self.requests.len() - 1].1
            }
        };
        counter.increment(1);
        self.duration.record(took.as_secs_f64());
    }
}

/// The data directory's filesystem: its size and the bytes still free.
pub fn disk(size: u64, available: u64) {
    metrics::gauge!(DISK_SIZE).set(size as f64);
    metrics::gauge!(DISK_AVAILABLE).set(available as f64);
}
