//! Checks on the Raft messages peers send, before openraft sees them.
//!
//! openraft trusts its peers: it persists any vote with a higher term (a
//! term of `u64::MAX` overflows at this node's next election), and its
//! streaming snapshot receiver seeks to whatever offset a chunk names, so a
//! chunk at a huge offset grows the receive buffer to that size. Mutual TLS
//! and roles keep strangers out; these checks keep one confused or
//! compromised peer from killing a node. A rejected message is an error to
//! its sender (openraft retries or backs off); the node keeps running.
//!
//! Pure: the caller passes this node's current term; [`Snapshots`] holds
//! only how far each shard's snapshot in progress has arrived.

use std::collections::HashMap;
use std::sync::Mutex;

/// How far above this node's current term a message's term may be. Terms
/// grow by one per election, so even a replica cut off for years, standing
/// for election every few hundred milliseconds, stays far below it; and
/// terms stay far from overflowing however many such jumps are taken.
pub const MAX_TERM_JUMP: u64 = 1 << 32;

/// No term is ever larger (≈ 9 million years of an election every second),
/// so `term + 1` never overflows.
pub const MAX_TERM: u64 = 1 << 48;

/// Default of `raft.max_snapshot_bytes`: the largest snapshot a node
/// receives (it is held in memory while it arrives).
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// A term too far ahead of this node's, or above [`MAX_TERM`].
    #[error(
        "term {term} is too far ahead of this node's term {current} \
         (at most {MAX_TERM_JUMP} ahead, never above {MAX_TERM})"
    )]
    TermTooFar { term: u64, current: u64 },
    /// A log id whose term is above the term of the vote that carries it:
    /// no leader sends entries from a later term than its own.
    #[error("{what} has term {term}, above the sender's term {vote_term}")]
    LogAboveVote {
        what: &'static str,
        term: u64,
        vote_term: u64,
    },
    /// A snapshot chunk that leaves a hole after what has arrived, or
    /// continues a snapshot that is not the one in progress.
    #[error(
        "snapshot {id}: chunk at offset {offset}, but {received} bytes of it have arrived \
         (chunks must be contiguous, a new snapshot starts at 0)"
    )]
    SnapshotGap {
        id: String,
        offset: u64,
        received: u64,
    },
    /// A snapshot larger than `raft.max_snapshot_bytes`.
    #[error(
        "snapshot {id} would exceed raft.max_snapshot_bytes ({max} bytes): chunk ends at {end}"
    )]
    SnapshotTooLarge { id: String, end: u64, max: u64 },
}

impl Rejected {
    /// The `reason` label of `roost_raft_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::TermTooFar { .. } => "term",
            Rejected::LogAboveVote { .. } => "log_term",
            Rejected::SnapshotGap { .. } => "snapshot_gap",
            Rejected::SnapshotTooLarge { .. } => "snapshot_size",
        }
    }
}

/// A message's term against this node's `current` one.
pub fn check_term(term: u64, current: u64) -> Result<(), Rejected> {
    if term > MAX_TERM || term > current.saturating_add(MAX_TERM_JUMP) {
        return Err(Rejected::TermTooFar { term, current });
    }
    Ok(())
}

/// A log id's term (`what`: which one, for the error) is at most the
/// sender's `vote_term`.
pub fn check_log_term(what: &'static str, term: u64, vote_term: u64) -> Result<(), Rejected> {
    if term > vote_term {
        return Err(Rejected::LogAboveVote {
            what,
            term,
            vote_term,
        });
    }
    Ok(())
}

/// The snapshots in progress, one per shard at most: which one, and how
/// many of its bytes have arrived (from offset 0, without holes).
#[derive(Debug)]
pub struct Snapshots {
    max_bytes: u64,
    receiving: Mutex<HashMap<u16, (String, u64)>>,
}

impl Snapshots {
    /// Accepting snapshots of at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Snapshots {
        Snapshots {
            max_bytes,
            receiving: Mutex::default(),
        }
    }

    /// Whether a chunk of `len` bytes at `offset` of snapshot `id` for
    /// `shard` may go to openraft: it starts a new snapshot (offset 0) or
    /// starts at or before the end of what has arrived of `id` (a sender
    /// that did not hear the answer sends a chunk again), and the snapshot
    /// stays within the cap. Returns where the chunk ends.
    pub fn check(&self, shard: u16, id: &str, offset: u64, len: usize) -> Result<u64, Rejected> {
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .filter(|end| *end <= self.max_bytes)
            .ok_or_else(|| Rejected::SnapshotTooLarge {
                id: id.to_owned(),
                end: offset.saturating_add(len as u64),
                max: self.max_bytes,
            })?;
        if offset == 0 {
            return Ok(end);
        }
        let receiving = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
        let received = match receiving.get(&shard) {
            Some((current, received)) if current == id => *received,
            _ => 0,
        };
        if offset > received {
            return Err(Rejected::SnapshotGap {
                id: id.to_owned(),
                offset,
                received,
            });
        }
        Ok(end)
    }

    /// openraft took the chunk of `id` that ends at `end` (as [`check`]
    /// returned it); `done`: it was the last one. (openraft restarts a
    /// snapshot only when its id changes, so a chunk at 0 sent again keeps
    /// what had arrived.)
    ///
    /// [`check`]: Snapshots::check
    pub fn accepted(&self, shard: u16, id: &str, end: u64, done: bool) {
        let mut receiving = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
        if done {
            receiving.remove(&shard);
            return;
        }
        match receiving.get_mut(&shard) {
            Some((current, received)) if current == id => {
                *received = (*received).max(end);
            }
            _ => {
                receiving.insert(shard, (id.to_owned(), end));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_may_not_jump_far_or_overflow() {
        assert_eq!(check_term(5, 4), Ok(()));
        assert_eq!(check_term(0, 0), Ok(()));
        assert_eq!(check_term(MAX_TERM_JUMP, 0), Ok(()));
        assert!(check_term(MAX_TERM_JUMP + 1, 0).is_err());
        assert!(check_term(u64::MAX, 0).is_err());
        assert!(check_term(u64::MAX, u64::MAX).is_err());
        assert!(check_term(MAX_TERM + 1, MAX_TERM).is_err());
        assert_eq!(check_term(MAX_TERM, MAX_TERM - 1), Ok(()));
        let e = check_term(u64::MAX, 3).unwrap_err();
        assert_eq!(e.reason(), "term");
        assert!(e.to_string().contains("18446744073709551615"), "{e}");
    }

    #[test]
    fn log_ids_may_not_be_ahead_of_the_vote() {
        assert_eq!(check_log_term("entry", 3, 3), Ok(()));
        assert_eq!(check_log_term("entry", 2, 3), Ok(()));
        assert_eq!(
            check_log_term("entry", 4, 3).map_err(|e| e.reason()),
            Err("log_term")
        );
    }

    #[test]
    fn snapshot_chunks_must_be_contiguous() {
        let s = Snapshots::new(100);
        // A chunk of a snapshot never started is a hole.
        assert!(matches!(
            s.check(1, "a", 10, 10),
            Err(Rejected::SnapshotGap { received: 0, .. })
        ));
        assert_eq!(s.check(1, "a", 0, 10), Ok(10));
        s.accepted(1, "a", 10, false);
        // The next chunk, and the same chunk sent again, are fine.
        assert_eq!(s.check(1, "a", 10, 10), Ok(20));
        assert_eq!(s.check(1, "a", 0, 10), Ok(10));
        s.accepted(1, "a", 20, false);
        // The first chunk sent again (its answer was lost) keeps the rest.
        s.accepted(1, "a", 10, false);
        assert_eq!(s.check(1, "a", 20, 1), Ok(21));
        // A hole after what arrived, or in another shard, is not.
        assert!(s.check(1, "a", 21, 1).is_err());
        assert!(s.check(2, "a", 10, 1).is_err());
        // Another snapshot must start at 0, and then replaces the first.
        assert!(s.check(1, "b", 10, 1).is_err());
        assert_eq!(s.check(1, "b", 0, 5), Ok(5));
        s.accepted(1, "b", 5, false);
        assert!(s.check(1, "a", 20, 1).is_err());
        assert_eq!(s.check(1, "b", 5, 5), Ok(10));
        // Done: nothing in progress any more.
        s.accepted(1, "b", 10, true);
        assert!(s.check(1, "b", 10, 1).is_err());
    }

    #[test]
    fn snapshots_are_capped() {
        let s = Snapshots::new(100);
        assert_eq!(s.check(1, "a", 0, 100), Ok(100));
        s.accepted(1, "a", 60, false);
        let e = s.check(1, "a", 60, 41).unwrap_err();
        assert_eq!(e.reason(), "snapshot_size");
        // A huge offset neither overflows nor passes.
        assert!(matches!(
            s.check(1, "a", u64::MAX, 10),
            Err(Rejected::SnapshotTooLarge { .. })
        ));
        assert!(matches!(
            s.check(1, "a", u64::MAX - 5, 0),
            Err(Rejected::SnapshotTooLarge { .. })
        ));
    }
}
