//! One object never runs on two nodes at once, checked from outside (pure).
//!
//! Every node appends a line to the activation journal for each event its
//! executors admit (`ROOST_ACTIVATION_JOURNAL`, `src/object/journal.rs`):
//! the `CLOCK_MONOTONIC` time its leadership check began, the node, the
//! process, the Raft term and leadership epoch the executor serves, the
//! executor's generation and the object. An activation is one `(process,
//! epoch, generation)`.
//!
//! The rules, per object: one node at most runs it in a Raft term (one
//! leader per term); and, ordered by term and then by when they began, each
//! activation's last admitted event comes before the next one's first —
//! otherwise an executor ran an event after its successor had begun, and
//! the object ran in two places at once. Within a term, activations of
//! one node follow each other: executors evicted and re-created, the lease
//! regained (a new epoch), or the node restarted after SIGKILL, which may
//! resume the leadership of its last term without an election (openraft
//! 0.9 does; the new process numbers its epochs afresh, so epochs order
//! activations only within a process, and time orders them within a term).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub at: u64,
    pub node: u64,
    pub pid: u32,
    pub term: u64,
    pub epoch: u64,
    pub generation: u64,
    pub object: String,
}

/// Parses journal lines; returns the records and how many lines did not
/// parse.
pub fn parse(text: &str) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.splitn(7, ' ');
        let parsed = (|| {
            Some(Record {
                at: f.next()?.parse().ok()?,
                node: f.next()?.parse().ok()?,
                pid: f.next()?.parse().ok()?,
                term: f.next()?.parse().ok()?,
                epoch: f.next()?.parse().ok()?,
                generation: f.next()?.parse().ok()?,
                object: f.next()?.to_owned(),
            })
        })();
        match parsed {
            Some(r) => records.push(r),
            None => bad += 1,
        }
    }
    (records, bad)
}

#[derive(Debug, Default)]
pub struct Report {
    pub events: usize,
    pub activations: usize,
    pub objects: usize,
    pub processes: usize,
    pub violations: Vec<String>,
}

/// One executor's run: its node and term, and its first and last
/// admission.
#[derive(Clone, Copy)]
struct Span {
    node: u64,
    term: u64,
    first: u64,
    last: u64,
}

/// Checks the rules over every object's activations.
pub fn check(records: &[Record]) -> Report {
    // object → (pid, epoch, generation) → its span.
    let mut by_object: BTreeMap<&str, BTreeMap<(u32, u64, u64), Span>> = BTreeMap::new();
    let mut pids = BTreeSet::new();
    for r in records {
        pids.insert(r.pid);
        by_object
            .entry(&r.object)
            .or_default()
            .entry((r.pid, r.epoch, r.generation))
            .and_modify(|s| {
                s.first = s.first.min(r.at);
                s.last = s.last.max(r.at);
            })
            .or_insert(Span {
                node: r.node,
                term: r.term,
                first: r.at,
                last: r.at,
            });
    }
    let mut report = Report {
        events: records.len(),
        objects: by_object.len(),
        processes: pids.len(),
        ..Report::default()
    };
    for (object, activations) in &by_object {
        report.activations += activations.len();
        let mut order: Vec<(&(u32, u64, u64), &Span)> = activations.iter().collect();
        order.sort_by_key(|(_, s)| (s.term, s.first));
        // The predecessor whose last admission is the latest so far.
        let mut latest: Option<(&(u32, u64, u64), &Span)> = None;
        for pair in order.windows(2) {
            let ((_, a), (_, b)) = (pair[0], pair[1]);
            if a.term == b.term && a.node != b.node {
                report.violations.push(format!(
                    "object {object}: nodes {} and {} both ran it in Raft term {}",
                    a.node, b.node, a.term
                ));
            }
        }
        for (id, span) in order {
            if let Some((prev, p)) = latest
                && p.last >= span.first
            {
                report.violations.push(format!(
                    "object {object}: overlapping activations: node {} (process {}, term {}, executor {}) admitted an event {:.1} ms after node {} (process {}, term {}, executor {}) began",
                    p.node,
                    prev.0,
                    p.term,
                    prev.2,
                    (p.last - span.first) as f64 / 1e6,
                    span.node,
                    id.0,
                    span.term,
                    id.2
                ));
            }
            if latest.is_none_or(|(_, s)| span.last > s.last) {
                latest = Some((id, span));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An admission by node `node` (process `node` too) in `term`.
    fn rec(at: u64, node: u32, term: u64, generation: u64, object: &str) -> Record {
        Record {
            at,
            node: u64::from(node),
            pid: node,
            term,
            epoch: term << 16,
            generation,
            object: object.to_owned(),
        }
    }

    #[test]
    fn journal_lines_parse() {
        let (r, bad) = parse("10 2 7 5 327680 1 COUNTER/ab cd\nnot a line\n\n");
        assert_eq!(bad, 1);
        let mut want = rec(10, 2, 5, 1, "COUNTER/ab cd");
        want.pid = 7;
        assert_eq!(r, vec![want]);
    }

    #[test]
    fn successive_activations_pass() {
        let r = check(&[
            rec(10, 1, 4, 1, "o"),
            rec(20, 1, 4, 1, "o"),
            rec(30, 1, 4, 2, "o"), // evicted and re-created, same term
            rec(40, 2, 5, 1, "o"), // failover: the next term elsewhere
            rec(15, 2, 5, 1, "p"), // another object, independent
        ]);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(
            (r.events, r.activations, r.objects, r.processes),
            (5, 4, 2, 2)
        );
    }

    #[test]
    fn a_restarted_node_resuming_its_term_passes() {
        // Node 1 led in term 4, was SIGKILLed, and its new process resumed
        // term 4 (epochs numbered afresh: the new one's is lower).
        let mut old = rec(10, 1, 4, 3, "o");
        old.epoch = (4 << 16) + 2;
        let mut new = rec(50, 1, 4, 1, "o");
        new.pid = 99;
        let r = check(&[old, new]);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }

    #[test]
    fn an_old_leader_running_after_its_successor_began_is_caught() {
        let r = check(&[
            rec(10, 1, 4, 1, "o"),
            rec(40, 2, 5, 1, "o"),
            rec(50, 1, 4, 1, "o"), // the old term's executor ran on
        ]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("overlapping"));
    }

    #[test]
    fn an_old_executor_of_the_same_node_is_caught() {
        let mut regained = rec(20, 1, 4, 2, "o"); // lease regained: new executor
        regained.epoch += 1;
        let r = check(&[
            rec(10, 1, 4, 1, "o"),
            regained,
            rec(30, 1, 4, 1, "o"), // the old one ran on beside it
        ]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    }

    #[test]
    fn two_nodes_in_one_term_are_caught() {
        let r = check(&[rec(10, 1, 4, 1, "o"), rec(20, 2, 4, 1, "o")]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("both ran it"));
    }

    #[test]
    fn an_overlap_hidden_behind_a_short_activation_is_caught() {
        // A (term 1) runs long; B (term 2) is short and ends before A's
        // last event; C (term 3) starts after B but before A's last.
        let r = check(&[
            rec(10, 1, 1, 1, "o"),
            rec(100, 1, 1, 1, "o"),
            rec(20, 2, 2, 1, "o"),
            rec(30, 2, 2, 1, "o"),
            rec(50, 3, 3, 1, "o"),
        ]);
        assert_eq!(r.violations.len(), 2, "{:?}", r.violations);
    }
}
