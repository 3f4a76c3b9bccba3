//! The executor's pure core: the output gate's release rule ([`Gate`]) and
//! the executor's tie to a Raft term ([`Life`]).
//!
//! No I/O, no tokio, no clock. The releaser task (`outbox.rs`) and the
//! executor (`executor.rs`) drive these with what Raft reports; the tests
//! below script commits, failures, leadership loss and regain, one test per
//! invariant (named in ARCHITECTURE.md).

use std::collections::VecDeque;

/// How a batch's commit (or read barrier) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Committed by a quorum and applied (or the barrier confirmed
    /// leadership).
    Done,
    /// Failed with its outcome unknown: its writes may still commit.
    Unknown,
    /// Certainly never took effect: its writes were refused before Raft
    /// saw them, or dropped from the log by a new leader (replication's
    /// `NotLeader`), or its barrier found another leader. Leadership moved.
    NotRun,
}

/// What the gate does with a batch of outputs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Release<O> {
    /// Its commit (or read barrier) is done and nothing before it failed.
    Deliver(O),
    /// It or an earlier batch failed: its outputs must never leave.
    Fail(O),
    /// Its outputs must never leave either, and the event certainly had no
    /// effect (its own commit is [`Settled::NotRun`]): its caller may run
    /// it again on the new leader. Whatever earlier batch failed, this one
    /// changed nothing and told nobody anything.
    Retry(O),
}

struct Waiting<O> {
    id: u64,
    /// The sequence number of the batch's writes, if it wrote.
    seq: Option<u64>,
    /// How its commit or barrier ended, once it did.
    settled: Option<Settled>,
    outputs: O,
}

/// The output gate of one executor: batches leave in the order they were
/// handed over, each once what it waits for is done — and none after a
/// failure. A failed commit's outcome is unknown, and later events ran on
/// the cached state that includes its writes, so everything they built
/// (reads included: a read-only event's barrier proves leadership, not
/// that an earlier write committed) is failed too; the executor resets.
pub(crate) struct Gate<O> {
    waiting: VecDeque<Waiting<O>>,
    next_id: u64,
    /// A commit failed (or could not be proposed): nothing more leaves.
    poisoned: bool,
    /// The highest write sequence number known committed and applied.
    committed: u64,
}

impl<O> Default for Gate<O> {
    fn default() -> Self {
        Gate {
            waiting: VecDeque::new(),
            next_id: 0,
            poisoned: false,
            committed: 0,
        }
    }
}

impl<O> Gate<O> {
    /// Hands over a batch that waits for a commit (`seq`: its writes) or a
    /// read barrier (`None`). Returns its id for [`settle`](Self::settle).
    pub fn push(&mut self, seq: Option<u64>, outputs: O) -> u64 {
        self.next_id += 1;
        self.waiting.push_back(Waiting {
            id: self.next_id,
            seq,
            settled: None,
            outputs,
        });
        self.next_id
    }

    /// Records how batch `id`'s commit or barrier ended, and returns what
    /// may leave now, in order.
    pub fn settle(&mut self, id: u64, how: Settled) -> Vec<Release<O>> {
        if let Some(w) = self.waiting.iter_mut().find(|w| w.id == id) {
            w.settled = Some(how);
        }
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|w| w.settled.is_some()) {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            if w.settled != Some(Settled::Done) {
                self.poisoned = true;
            }
            if w.settled == Some(Settled::NotRun) {
                out.push(Release::Retry(w.outputs));
            } else if self.poisoned {
                out.push(Release::Fail(w.outputs));
            } else {
                if let Some(seq) = w.seq {
                    self.committed = self.committed.max(seq);
                }
                out.push(Release::Deliver(w.outputs));
            }
        }
        out
    }

    /// A write could not even be proposed: the cache is ahead of storage.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The highest write sequence number known committed and applied.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Batches handed over and not yet released.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.waiting.len()
    }
}

/// Whether an executor may run an event now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Run,
    /// The term it was created in ended: the event never ran, the caller
    /// may retry on the current leader. The executor stops.
    NotOwner,
    /// A commit failed: the cached state is ahead of storage. The event
    /// never ran; the executor stops and a fresh one replaces it.
    Reset,
    /// The leader lease of the executor's epoch is not held at this moment,
    /// but the epoch has not ended (a lapse the leadership watch has not
    /// published, and may never: a round may renew the lease first). The
    /// event must wait: it runs if the lease comes back in the same epoch
    /// (no other node can have led in between, the term being the same),
    /// and never if the epoch ends. Not sticky.
    Lapsed,
}

/// An executor's tie to the Raft term in which it was activated — more
/// precisely to the leadership epoch (`replication::pipeline::epoch_term`:
/// the term, and how often the lease was regained in it), so a lapse of the
/// lease within one term ends it too.
///
/// An executor serves one term: its cache is only right for the log of
/// that term (a later term may have dropped its uncommitted writes), so
/// once the shard's leadership is lost — even if it is regained at once,
/// which is a new term — it runs nothing more, and its writes and barriers
/// carry the term so the proposer refuses them after it ended.
#[derive(Debug)]
pub(crate) struct Life {
    term: u64,
    /// The activation fence (an empty entry of this term) was applied.
    ready: bool,
    /// Stopped for good, and why.
    stopped: Option<Admit>,
}

impl Life {
    pub fn new(term: u64) -> Life {
        Life {
            term,
            ready: false,
            stopped: None,
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// The activation fence ended: the object may read storage once it was
    /// applied; if it failed the executor is reset.
    pub fn fenced(&mut self, applied: bool) {
        if applied {
            self.ready = true;
        } else {
            self.stopped.get_or_insert(Admit::Reset);
        }
    }

    /// Whether the next event may run, given the epoch in which this node
    /// now leads the shard with its lease held (`leading`), the epoch the
    /// leadership watch shows (`watched`), and whether the gate is
    /// poisoned.
    pub fn admit(&mut self, leading: Option<u64>, watched: Option<u64>, poisoned: bool) -> Admit {
        let healthy = !poisoned && self.ready && self.stopped.is_none();
        if healthy && leading.is_none() && watched == Some(self.term) {
            return Admit::Lapsed;
        }
        if leading != Some(self.term) {
            self.stopped.get_or_insert(Admit::NotOwner);
        }
        if poisoned || !self.ready {
            self.stopped.get_or_insert(Admit::Reset);
        }
        self.stopped.unwrap_or(Admit::Run)
    }

    /// Whether the executor must stop because `leading` is not its term.
    pub fn term_ended(&mut self, leading: Option<u64>) -> bool {
        if leading != Some(self.term) {
            self.stopped.get_or_insert(Admit::NotOwner);
            return true;
        }
        false
    }
}

/// Which leadership epoch a shard's registry of executors serves: the
/// rule that keeps one executor per object and epoch.
///
/// Both a dispatch (which reads the epoch with the lease, then takes the
/// shard's lock) and the runtime's leadership watcher (a task that runs
/// when it gets to it) see epochs change. Whichever sees a newer epoch
/// first moves the registry to it, under the shard's lock, dropping every
/// executor of the older one (they stop by themselves: their epoch never
/// comes back). A later sight of the same epoch changes nothing — so a
/// watcher that runs late never drops an executor a dispatch already made
/// for the current epoch, which would then run beside its successor
/// (both fenced, both reading the same state) — and a dispatch that read
/// an epoch the registry has already left is refused (`NotOwner`, it never
/// ran) instead of making an executor for it. Epochs only grow
/// (`replication::pipeline::next_epoch`).
#[derive(Debug, Default)]
pub(crate) struct Tenure {
    /// The epoch served now (`None`: not leading).
    current: Option<u64>,
    /// The newest epoch ever served.
    newest: Option<u64>,
}

/// What a registry does when an epoch is seen ([`Tenure::observe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// It serves this epoch already: keep its executors.
    Same,
    /// It moved to this epoch (or to none): every executor registered
    /// belongs to an ended epoch and must go.
    Moved,
    /// The epoch was read before the registry moved past it: refuse
    /// (`NotOwner`), make nothing.
    Stale,
}

impl Tenure {
    /// `leading` was seen (by a dispatch: always `Some`; by the watcher:
    /// the watch's value).
    pub fn observe(&mut self, leading: Option<u64>) -> Step {
        match leading {
            None if self.current.is_none() => Step::Same,
            None => {
                self.current = None;
                Step::Moved
            }
            Some(e) if self.newest.is_none_or(|n| e > n) => {
                self.current = Some(e);
                self.newest = Some(e);
                Step::Moved
            }
            Some(e) if self.current == Some(e) => Step::Same,
            Some(_) => Step::Stale,
        }
    }

    /// The epoch served now.
    #[cfg(test)]
    pub fn current(&self) -> Option<u64> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(r: &[Release<&'static str>]) -> Vec<&'static str> {
        r.iter()
            .filter_map(|r| match r {
                Release::Deliver(o) => Some(*o),
                Release::Fail(_) | Release::Retry(_) => None,
            })
            .collect()
    }

    /// Output gate: batches leave in order, each only once its own commit
    /// (or barrier) is done and every earlier one left.
    #[test]
    fn outputs_leave_in_order_once_their_commit_is_done() {
        let mut g = Gate::default();
        let a = g.push(Some(1), "a");
        let b = g.push(None, "b");
        let c = g.push(Some(2), "c");
        assert!(g.settle(c, Settled::Done).is_empty(), "c waits for a and b");
        assert!(g.settle(b, Settled::Done).is_empty(), "b waits for a");
        assert_eq!(g.committed(), 0);
        let out = g.settle(a, Settled::Done);
        assert_eq!(delivered(&out), vec!["a", "b", "c"]);
        assert_eq!(g.committed(), 2);
        assert_eq!(g.in_flight(), 0);
    }

    /// Defect 1: a read that ran after a write whose commit failed must not
    /// answer, even though its own read barrier succeeded (the barrier
    /// proves leadership, not that the earlier write committed): the value
    /// it read may never have existed.
    #[test]
    fn a_read_after_a_failed_write_is_never_released() {
        let mut g = Gate::default();
        let write = g.push(Some(1), "increment");
        let read = g.push(None, "read");
        let later = g.push(Some(2), "later write");
        assert!(g.settle(read, Settled::Done).is_empty());
        let out = g.settle(write, Settled::Unknown);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], Release::Fail("increment")));
        assert!(
            matches!(out[1], Release::Fail("read")),
            "the read built on the failed write was released: {out:?}"
        );
        assert!(g.is_poisoned());
        assert_eq!(
            g.settle(later, Settled::Done),
            vec![Release::Fail("later write")]
        );
        assert_eq!(g.committed(), 0);
    }

    /// A planned leadership move: the event whose write was refused because
    /// the term ended certainly had no effect, so its caller may retry it
    /// (on the new leader) instead of being told its outcome is unknown; a
    /// later batch that did commit is still withheld, not retried.
    #[test]
    fn a_batch_that_never_ran_is_retried_and_still_poisons() {
        let mut g = Gate::default();
        let refused = g.push(Some(1), "refused write");
        let read = g.push(None, "read after it");
        let committed = g.push(Some(2), "committed write");
        assert!(g.settle(read, Settled::NotRun).is_empty());
        assert!(g.settle(committed, Settled::Done).is_empty());
        let out = g.settle(refused, Settled::NotRun);
        assert_eq!(
            out,
            vec![
                Release::Retry("refused write"),
                Release::Retry("read after it"),
                Release::Fail("committed write"),
            ]
        );
        assert!(g.is_poisoned(), "the cache is ahead of storage: reset");
        assert_eq!(g.committed(), 0);
        // After an unknown outcome, a batch that never ran is still retried.
        let mut g = Gate::default();
        let unknown = g.push(Some(1), "unknown");
        let refused = g.push(Some(2), "refused");
        assert!(g.settle(refused, Settled::NotRun).is_empty());
        assert_eq!(
            g.settle(unknown, Settled::Unknown),
            vec![Release::Fail("unknown"), Release::Retry("refused")]
        );
    }

    /// A write that could not even be proposed poisons the gate too.
    #[test]
    fn nothing_leaves_after_a_proposal_failed() {
        let mut g = Gate::default();
        g.poison();
        let read = g.push(None, "read");
        assert_eq!(g.settle(read, Settled::Done), vec![Release::Fail("read")]);
    }

    /// Defect 4: an executor runs only in the term it was activated in;
    /// leadership lost and regained is a new term and stops it for good.
    #[test]
    fn an_executor_runs_only_in_its_own_term() {
        let mut life = Life::new(5);
        life.fenced(true);
        assert_eq!(life.admit(Some(5), Some(5), false), Admit::Run);
        assert!(!life.term_ended(Some(5)));
        assert_eq!(
            life.admit(Some(6), Some(6), false),
            Admit::NotOwner,
            "lost and regained leadership: a new term"
        );
        assert_eq!(
            life.admit(Some(5), Some(5), false),
            Admit::NotOwner,
            "stopped for good"
        );
        let mut life = Life::new(5);
        life.fenced(true);
        assert!(life.term_ended(None));
        assert_eq!(life.admit(Some(5), Some(5), false), Admit::NotOwner);
    }

    /// A lapse of the lease the leadership watch has not published (it may
    /// be renewed before the watch looks again) holds the event back
    /// without ending the executor; once the watch shows another epoch, or
    /// none, the executor stops for good.
    #[test]
    fn a_lease_lapse_within_the_epoch_holds_events_back_without_ending_it() {
        let mut life = Life::new(5);
        life.fenced(true);
        assert_eq!(life.admit(None, Some(5), false), Admit::Lapsed);
        assert_eq!(life.admit(None, Some(5), false), Admit::Lapsed);
        assert_eq!(
            life.admit(Some(5), Some(5), false),
            Admit::Run,
            "the lease came back in the same epoch"
        );
        assert_eq!(life.admit(None, None, false), Admit::NotOwner);
        assert_eq!(
            life.admit(Some(5), Some(5), false),
            Admit::NotOwner,
            "the epoch ended: stopped for good"
        );
        let mut life = Life::new(5);
        life.fenced(true);
        assert_eq!(life.admit(None, Some(6), false), Admit::NotOwner);
    }

    /// Session 6's values acknowledged twice: a dispatch saw a new epoch
    /// and made an executor for it before the runtime's leadership watcher
    /// ran; the watcher, seeing the epoch change late, dropped every
    /// executor of the shard — that one too, which went on running the
    /// events in its mailbox in the current epoch — and the next dispatch
    /// made a second executor of the same object and epoch. Both fenced,
    /// both read the same state, both committed. A registry moves to an
    /// epoch once, whoever sees it first; a late or stale sight changes
    /// nothing.
    #[test]
    fn a_registry_moves_to_each_epoch_once_whoever_sees_it_first() {
        let (a, b, c) = (5 << 16, (5 << 16) + 1, 6 << 16);
        let mut t = Tenure::default();
        assert_eq!(t.observe(None), Step::Same, "not leading, nothing to drop");
        assert_eq!(t.observe(Some(a)), Step::Moved);
        assert_eq!(t.observe(Some(a)), Step::Same);
        // The lease lapsed and was regained (epoch b): a dispatch sees b
        // first and makes an executor of b ...
        assert_eq!(t.observe(Some(b)), Step::Moved, "a's executors go");
        // ... then the watcher gets to it: b's executor stays.
        assert_eq!(t.observe(Some(b)), Step::Same);
        assert_eq!(t.current(), Some(b));
        // A dispatch that read a before the move makes nothing.
        assert_eq!(t.observe(Some(a)), Step::Stale);
        // The watcher sees the lease lapse: b's executors go; a dispatch
        // that read b before that is refused.
        assert_eq!(t.observe(None), Step::Moved);
        assert_eq!(t.observe(Some(b)), Step::Stale);
        assert_eq!(t.current(), None);
        assert_eq!(t.observe(Some(c)), Step::Moved);
        assert_eq!(t.observe(Some(c)), Step::Same);
    }

    /// Defect 2: an executor reads nothing before its activation fence is
    /// applied; if the fence fails it is reset.
    #[test]
    fn an_executor_runs_nothing_before_its_fence_is_applied() {
        let mut life = Life::new(2);
        life.fenced(false);
        assert_eq!(life.admit(Some(2), Some(2), false), Admit::Reset);
        let mut life = Life::new(2);
        life.fenced(true);
        assert_eq!(
            life.admit(Some(2), Some(2), true),
            Admit::Reset,
            "a poisoned gate resets"
        );
    }
}
