//! The proposer's pure core: which queued requests go into the next log
//! entry, which are refused because they were made for another term, and
//! in which order outcomes reach their waiters.
//!
//! No I/O, no tokio, no clock: the proposer task (`shard.rs`) feeds it the
//! queue and the settled entries, and the unit tests below script the same
//! (one test per invariant, named in ARCHITECTURE.md).

use std::collections::BTreeMap;

use crate::storage::ObjectWrite;

/// What a shard's queue holds. `term` is the Raft term the request was made
/// for (an executor's term): it is refused unless this node still leads
/// the shard in that term when the request leaves the queue. `None` has no
/// such guard (the cluster layer's own writes).
pub(crate) enum Request<W> {
    Write {
        write: ObjectWrite,
        term: Option<u64>,
        done: W,
    },
    /// A linearizable read: resolves once leadership was confirmed after
    /// the call and everything committed before it is applied.
    Barrier { term: Option<u64>, done: W },
    /// A leader-completeness barrier: an (empty) log entry of its own,
    /// resolved once it is applied, so every entry proposed before it is
    /// decided and applied by then.
    Fence { term: Option<u64>, done: W },
}

impl<W> Request<W> {
    fn term(&self) -> Option<u64> {
        match self {
            Request::Write { term, .. }
            | Request::Barrier { term, .. }
            | Request::Fence { term, .. } => *term,
        }
    }

    pub(crate) fn into_waiter(self) -> W {
        match self {
            Request::Write { done, .. }
            | Request::Barrier { done, .. }
            | Request::Fence { done, .. } => done,
        }
    }
}

/// Bits of a leadership epoch below its Raft term.
const EPOCH_SHIFT: u32 = 16;
const REGAINS: u64 = (1 << EPOCH_SHIFT) - 1;

/// The Raft term of a leadership epoch.
///
/// An epoch names one unbroken period of this node's leadership of a
/// shard: the Raft term in the high bits and, in the low 16, how often the
/// node regained its lease within that term. Leadership lost and regained —
/// a new term, or the same term after the lease lapsed — is a new epoch,
/// which ends everything bound to the old one (executors, their requests).
pub fn epoch_term(epoch: u64) -> u64 {
    epoch >> EPOCH_SHIFT
}

/// The epoch to publish when Raft (with the lease) says this node leads in
/// `leading` (a term, or `None`), given the epoch published now and the
/// last one ever published (`last`, updated).
pub(crate) fn next_epoch(
    leading: Option<u64>,
    published: Option<u64>,
    last: &mut Option<u64>,
) -> Option<u64> {
    let term = leading?;
    if let Some(epoch) = published.filter(|e| epoch_term(*e) == term) {
        return Some(epoch);
    }
    let epoch = match *last {
        Some(e) if epoch_term(e) == term && e & REGAINS < REGAINS => e + 1,
        Some(e) if epoch_term(e) == term => e,
        _ => term << EPOCH_SHIFT,
    };
    *last = Some(epoch);
    Some(epoch)
}

/// Batching limits of a proposer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_batch_bytes: usize,
    pub max_batch_writes: usize,
    pub max_in_flight: usize,
}

/// One group commit being assembled.
pub(crate) struct Batch<W> {
    pub writes: Vec<ObjectWrite>,
    pub waiters: Vec<W>,
    /// Per waiter: whether its request was made for a leadership epoch
    /// (and so counts only if the batch lands in [`Self::term`]).
    pub guarded: Vec<bool>,
    pub bytes: usize,
    /// A fence asked for a log entry even if no write is in the batch.
    pub fence: bool,
    /// The Raft term the guarded requests were admitted for, if any. The
    /// proposer's check reads Raft's published state, which may lag
    /// RaftCore: a batch admitted in term `t` may reach Raft only after
    /// this node lost and regained leadership, and land in a later term.
    /// Its guarded writes are bound to `t` ([`ObjectWrite::bind_to_term`])
    /// and its guarded waiters told "not run" unless it landed in `t`
    /// ([`landed`]).
    pub term: Option<u64>,
}

impl<W> Default for Batch<W> {
    fn default() -> Self {
        Batch {
            writes: Vec::new(),
            waiters: Vec::new(),
            guarded: Vec::new(),
            bytes: 0,
            fence: false,
            term: None,
        }
    }
}

/// Whether a batch whose guarded requests were admitted for Raft term
/// `admitted` counts for them, given the term its log entry (or read-index
/// round) landed in (`None`: not known). Unguarded batches always count.
pub(crate) fn landed(admitted: Option<u64>, landed_in: Option<u64>) -> bool {
    match admitted {
        None => true,
        Some(t) => landed_in == Some(t),
    }
}

impl<W> Batch<W> {
    /// Whether the batch is a log entry (writes or a fence); otherwise it
    /// is a read-index round for barriers only.
    pub fn is_entry(&self) -> bool {
        self.fence || !self.writes.is_empty()
    }

    /// Adds an admitted request; a guarded one was admitted while this
    /// node led in leadership epoch `leading`.
    fn push(&mut self, request: Request<W>, leading: Option<u64>) {
        let guarded = request.term().is_some();
        if guarded {
            self.term = leading.map(epoch_term);
        }
        self.guarded.push(guarded);
        match request {
            Request::Write {
                mut write, done, ..
            } => {
                if let (true, Some(term)) = (guarded, self.term) {
                    write.bind_to_term(term);
                }
                self.bytes += write.approx_size();
                self.writes.push(write);
                self.waiters.push(done);
            }
            Request::Barrier { done, .. } => self.waiters.push(done),
            Request::Fence { done, .. } => {
                self.fence = true;
                self.waiters.push(done);
            }
        }
    }
}

/// Whether a request made for `term` may go to Raft while this node leads
/// in `leading` (`None`: it does not lead).
pub(crate) fn admits(term: Option<u64>, leading: Option<u64>) -> bool {
    match term {
        None => true,
        Some(t) => leading == Some(t),
    }
}

/// Takes `first` and whatever else `next` yields, within the limits, into
/// one batch. Requests made for a term other than `leading` are refused
/// (returned apart: they never reach Raft) and do not count toward the
/// limits.
pub(crate) fn collect<W>(
    first: Request<W>,
    mut next: impl FnMut() -> Option<Request<W>>,
    limits: Limits,
    leading: Option<u64>,
) -> (Batch<W>, Vec<W>) {
    let mut batch = Batch::default();
    let mut refused = Vec::new();
    let mut take = |request: Request<W>, batch: &mut Batch<W>| {
        if admits(request.term(), leading) {
            batch.push(request, leading);
        } else {
            refused.push(request.into_waiter());
        }
    };
    take(first, &mut batch);
    while batch.waiters.len() < limits.max_batch_writes && batch.bytes < limits.max_batch_bytes {
        match next() {
            Some(request) => take(request, &mut batch),
            None => break,
        }
    }
    (batch, refused)
}

/// Hands settled batches to their waiters in submission order, whatever
/// order Raft settles them in: a batch's outcome is delivered only after
/// every batch submitted before it was delivered.
pub(crate) struct Settler<T> {
    submitted: u64,
    delivered: u64,
    settled: BTreeMap<u64, T>,
}

impl<T> Default for Settler<T> {
    fn default() -> Self {
        Settler {
            submitted: 0,
            delivered: 0,
            settled: BTreeMap::new(),
        }
    }
}

impl<T> Settler<T> {
    /// Numbers the next submitted batch.
    pub fn submit(&mut self) -> u64 {
        self.submitted += 1;
        self.submitted
    }

    /// Batches submitted and not yet delivered.
    pub fn in_flight(&self) -> usize {
        usize::try_from(self.submitted - self.delivered).unwrap_or(usize::MAX)
    }

    /// Records that batch `id` settled with `outcome`; returns what may be
    /// delivered now, in order.
    pub fn settled(&mut self, id: u64, outcome: T) -> Vec<T> {
        self.settled.insert(id, outcome);
        let mut out = Vec::new();
        while let Some(outcome) = self.settled.remove(&(self.delivered + 1)) {
            self.delivered += 1;
            out.push(outcome);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{ObjectId, ObjectKey};
    use crate::storage::Mutation;

    const LIMITS: Limits = Limits {
        max_batch_bytes: 1 << 20,
        max_batch_writes: 100,
        max_in_flight: 4,
    };

    fn write(n: u32) -> ObjectWrite {
        ObjectWrite {
            object: ObjectKey::new("T", ObjectId::from_name("T", "o")),
            mutations: vec![Mutation::Put {
                key: format!("k{n}"),
                value: bytes::Bytes::from(vec![0u8; 10]),
            }],
        }
    }

    fn run(queue: Vec<Request<u32>>, leading: Option<u64>) -> (Batch<u32>, Vec<u32>) {
        let mut rest = queue.into_iter();
        let first = rest.next().expect("a request");
        collect(first, || rest.next(), LIMITS, leading)
    }

    /// Defect 4 (proposer side): a request an executor made in term 5 is
    /// refused once the node leads in term 6, even though it leads again,
    /// so a stale executor's write never lands after a new executor's fence.
    #[test]
    fn requests_of_an_ended_term_are_refused() {
        let (batch, refused) = run(
            vec![
                Request::Write {
                    write: write(1),
                    term: Some(5),
                    done: 1,
                },
                Request::Barrier {
                    term: Some(5),
                    done: 2,
                },
                Request::Fence {
                    term: Some(6),
                    done: 3,
                },
                Request::Write {
                    write: write(4),
                    term: Some(6),
                    done: 4,
                },
                Request::Write {
                    write: write(5),
                    term: None,
                    done: 5,
                },
            ],
            Some(6),
        );
        assert_eq!(refused, vec![1, 2]);
        assert_eq!(batch.waiters, vec![3, 4, 5]);
        assert_eq!(batch.writes.len(), 2);
        assert!(batch.fence && batch.is_entry());
        // The guarded write is bound to the term it was admitted for; the
        // cluster layer's is not.
        assert_eq!(batch.guarded, vec![true, true, false]);
        assert_eq!(batch.term, Some(epoch_term(6)));
        assert_eq!(
            batch.writes[0].mutations[0],
            Mutation::InTerm {
                term: epoch_term(6)
            }
        );
        assert!(batch.writes[1].takes_effect_in(12345));
        let (batch, refused) = run(
            vec![Request::Write {
                write: write(1),
                term: Some(6),
                done: 1,
            }],
            None,
        );
        assert_eq!(
            refused,
            vec![1],
            "a node that does not lead takes no guarded request"
        );
        assert!(batch.waiters.is_empty());
    }

    /// Issue 13 (a batch that changed terms): the proposer checks Raft's
    /// published state, which may lag RaftCore, so a batch admitted in one
    /// term may land in a later one (leadership lost and regained before
    /// Raft took it). Its guarded requests count only in their own term.
    #[test]
    fn guarded_requests_count_only_in_the_term_they_were_admitted_for() {
        let epoch = 7 << 16;
        let (batch, refused) = run(
            vec![Request::Barrier {
                term: Some(epoch),
                done: 1,
            }],
            Some(epoch),
        );
        assert!(refused.is_empty());
        assert_eq!(batch.term, Some(7));
        assert!(landed(batch.term, Some(7)));
        assert!(!landed(batch.term, Some(9)), "lost and regained meanwhile");
        assert!(!landed(batch.term, None), "a term not known does not count");
        assert!(
            landed(None, Some(9)),
            "unguarded requests count in any term"
        );
    }

    /// Defect 2: a fence is a log entry of its own even with no write in
    /// its batch (a read-index round would not wait for undecided entries).
    #[test]
    fn a_fence_alone_is_a_log_entry_and_barriers_alone_are_not() {
        let (batch, _) = run(
            vec![Request::Fence {
                term: Some(1),
                done: 1,
            }],
            Some(1),
        );
        assert!(batch.is_entry() && batch.writes.is_empty());
        let (batch, _) = run(
            vec![
                Request::Barrier {
                    term: Some(1),
                    done: 1,
                },
                Request::Barrier {
                    term: None,
                    done: 2,
                },
            ],
            Some(1),
        );
        assert!(!batch.is_entry());
        assert_eq!(batch.waiters, vec![1, 2]);
    }

    #[test]
    fn batches_respect_their_limits_in_queue_order() {
        let queue: Vec<_> = (0..150)
            .map(|n| Request::Write {
                write: write(n),
                term: None,
                done: n,
            })
            .collect();
        let mut rest = queue.into_iter();
        let first = rest.next().expect("a request");
        let (batch, _) = collect(first, || rest.next(), LIMITS, Some(1));
        assert_eq!(batch.waiters, (0..100).collect::<Vec<_>>());
        let (next, _) = collect(rest.next().expect("more"), || rest.next(), LIMITS, Some(1));
        assert_eq!(next.waiters.first(), Some(&100));
    }

    /// Defect 4: leadership lost and regained is a new epoch, whether Raft
    /// moved to a new term or only the lease lapsed within the same one.
    #[test]
    fn a_lease_regained_in_the_same_term_is_a_new_epoch() {
        let mut last = None;
        let a = next_epoch(Some(5), None, &mut last).expect("leads");
        assert_eq!(epoch_term(a), 5);
        assert_eq!(next_epoch(Some(5), Some(a), &mut last), Some(a), "unbroken");
        assert_eq!(next_epoch(None, Some(a), &mut last), None, "lease lapsed");
        let b = next_epoch(Some(5), None, &mut last).expect("regained");
        assert!(b != a && epoch_term(b) == 5);
        let c = next_epoch(Some(6), Some(b), &mut last).expect("new term");
        assert!(c != b && epoch_term(c) == 6);
    }

    /// Outcomes reach waiters in submission order: a later batch that Raft
    /// settles first (a read-index round, say) waits for the earlier ones.
    #[test]
    fn outcomes_are_delivered_in_submission_order() {
        let mut s = Settler::default();
        let (a, b, c) = (s.submit(), s.submit(), s.submit());
        assert_eq!(s.in_flight(), 3);
        assert!(s.settled(c, "c").is_empty());
        assert!(s.settled(b, "b").is_empty());
        assert_eq!(s.settled(a, "a"), vec!["a", "b", "c"]);
        assert_eq!(s.in_flight(), 0);
    }
}
