//! Tuning of every shard group of a node.

/// How every shard group of a node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationOptions {
    /// Interval between a leader's heartbeats, in milliseconds (sent by
    /// `shard::send_heartbeats`, not by openraft).
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound (exclusive) of the randomized election timeout, in milliseconds.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log below the last snapshot (for slow followers);
    /// older ones are purged.
    pub snapshot_keep_logs: u64,
    /// A group commit stops adding writes once its entry reaches this size
    /// (by `ObjectWrite::approx_size`); one larger write still goes alone.
    pub max_batch_bytes: usize,
    /// A group commit holds at most this many writes and barriers.
    pub max_batch_writes: usize,
    /// Entries a shard's proposer keeps submitted but not yet applied.
    pub max_in_flight: usize,
    /// Proposals waiting for a shard's proposer before `propose` waits too.
    pub queue_capacity: usize,
    /// A shard leader with no request for this long, its followers caught
    /// up, quiesces: no heartbeats and no openraft timers until the next
    /// request (`quiet.rs`). 0 (the default): never.
    pub quiesce_ms: u64,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        ReplicationOptions {
            heartbeat_ms: 100,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_logs_since_last: 20_000,
            snapshot_keep_logs: 1_000,
            max_batch_bytes: 4 << 20,
            max_batch_writes: 4_096,
            max_in_flight: 4,
            queue_capacity: 8_192,
            quiesce_ms: 0,
        }
    }
}

impl ReplicationOptions {
    /// openraft's configuration of one shard's group, validated.
    pub(crate) fn raft_config(
        &self,
        shard: crate::id::ShardId,
    ) -> Result<openraft::Config, super::Error> {
        if self.max_in_flight == 0 || self.max_batch_writes == 0 || self.queue_capacity == 0 {
            return Err(super::Error::Config(
                "max_in_flight, max_batch_writes and queue_capacity must be positive".into(),
            ));
        }
        let config = openraft::Config {
            cluster_name: format!("roost-shard-{shard}"),
            heartbeat_interval: self.raft_timeout_ms(),
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.snapshot_keep_logs,
            // With quiescence, the node's liveness turns each follower's
            // timer on once it knows its leader is not quiet (at start:
            // once it heard from it, or suspects it).
            enable_tick: self.quiesce_ms == 0,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| super::Error::Config(e.to_string()))
    }

    /// How long one AppendEntries (or read-index round) may take before
    /// the leader gives up on it and sends it again, in milliseconds: half
    /// the shortest election timeout, never less
    /// than a heartbeat period. (Not more: openraft checks its election
    /// timers every 1.5 × this, so a longer one slows failover.)
    ///
    /// openraft 0.9 has one knob for this and for its heartbeat period
    /// (`Config::heartbeat_interval`, which must stay below the election
    /// timeout); Roost sets it to this and sends heartbeats itself every
    /// `heartbeat_ms` (`shard::send_heartbeats`). A follower hears nothing
    /// while an entry is on its way (openraft sends one request at a time
    /// per follower), so the largest entry — one group commit plus one
    /// event's writes — must reach a follower and be fsynced well within the
    /// election timeout: raise the election timeouts for large events on
    /// slow links or disks. openraft also checks its timers every 1.5 × this.
    /// How long a shard stays idle before it quiesces, if it ever does.
    pub(crate) fn quiesce_after(&self) -> Option<std::time::Duration> {
        (self.quiesce_ms > 0).then(|| std::time::Duration::from_millis(self.quiesce_ms))
    }

    /// A peer that answered no ping for this long is suspected: followers
    /// of its quiesced shards run their election timers again.
    pub(crate) fn suspect_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(2 * self.election_timeout_max_ms)
    }

    pub(crate) fn raft_timeout_ms(&self) -> u64 {
        (self.election_timeout_min_ms / 2).max(self.heartbeat_ms)
    }
}
