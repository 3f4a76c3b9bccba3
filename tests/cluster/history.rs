//! A recorded history of counter operations and a checker for it.
//!
//! Each operation is an increment (by one) or a read of one counter, with
//! the times it started and ended (microseconds since the history's epoch)
//! and its outcome: the value the cluster acknowledged, or unknown (an
//! error or a timeout: the increment may or may not have happened). The
//! checker is pure; it never looks at the cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Incr,
    Read,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The cluster answered with this value.
    Ok(i64),
    /// No answer we can trust (error, timeout): the operation may or may
    /// not have taken effect.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub counter: usize,
    pub kind: Kind,
    /// Microseconds since the epoch when the request was sent.
    pub start: u64,
    /// Microseconds since the epoch when the answer (or error) came back.
    pub end: u64,
    pub outcome: Outcome,
}

/// Operations recorded by concurrent clients. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    epoch: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            epoch: Instant::now(),
            ops: Arc::default(),
        }
    }

    /// Microseconds since the epoch.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn push(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    /// Every operation recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }
}

/// Checks `ops` and, per counter, the value read after all load stopped
/// (`finals`). Returns every violation found (empty: the history is
/// consistent with a linearizable counter).
pub fn check(ops: &[Op], finals: &BTreeMap<usize, i64>) -> Vec<String> {
    let mut by_counter: BTreeMap<usize, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_counter.entry(op.counter).or_default().push(*op);
    }
    let mut errors = Vec::new();
    for (counter, ops) in &by_counter {
        check_counter(*counter, ops, finals.get(counter).copied(), &mut errors);
    }
    for counter in finals.keys() {
        if !by_counter.contains_key(counter) {
            check_counter(*counter, &[], finals.get(counter).copied(), &mut errors);
        }
    }
    errors
}

fn check_counter(counter: usize, ops: &[Op], fin: Option<i64>, errors: &mut Vec<String>) {
    let incrs: Vec<&Op> = ops.iter().filter(|o| o.kind == Kind::Incr).collect();
    let acked: Vec<(&Op, i64)> = incrs
        .iter()
        .filter_map(|o| match o.outcome {
            Outcome::Ok(v) => Some((*o, v)),
            Outcome::Unknown => None,
        })
        .collect();

    // Every acknowledged value is unique.
    let mut seen: BTreeMap<i64, &Op> = BTreeMap::new();
    for (op, v) in &acked {
        if let Some(other) = seen.insert(*v, op) {
            errors.push(format!(
                "counter {counter}: value {v} acknowledged twice ({other:?} and {op:?})"
            ));
        }
    }

    // The largest value acknowledged by an increment that ended before `t`.
    let max_acked_before = |t: u64| {
        acked
            .iter()
            .filter(|(o, _)| o.end < t)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0)
    };
    // How many increments (any outcome) started before `t`.
    let started_before = |t: u64| incrs.iter().filter(|o| o.start < t).count() as i64;

    // Real-time order: an increment sees every increment acknowledged
    // before it started, and counts no more than were started before it
    // ended.
    for (op, v) in &acked {
        let floor = max_acked_before(op.start);
        if *v <= floor {
            errors.push(format!(
                "counter {counter}: increment {op:?} got {v}, but {floor} was acknowledged before it started"
            ));
        }
        let ceiling = started_before(op.end);
        if *v > ceiling {
            errors.push(format!(
                "counter {counter}: increment {op:?} got {v}, but only {ceiling} increments had started"
            ));
        }
    }

    // Reads are within bounds.
    for op in ops.iter().filter(|o| o.kind == Kind::Read) {
        let Outcome::Ok(v) = op.outcome else { continue };
        let floor = max_acked_before(op.start);
        let ceiling = started_before(op.end);
        if v < floor || v > ceiling {
            errors.push(format!(
                "counter {counter}: read {op:?} returned {v}, outside [{floor}, {ceiling}]"
            ));
        }
    }

    // The final value counts every acknowledged increment and no more than
    // were attempted.
    if let Some(fin) = fin {
        let max = acked.iter().map(|(_, v)| *v).max().unwrap_or(0);
        let attempts = incrs.len() as i64;
        if fin < max || fin < acked.len() as i64 || fin > attempts {
            errors.push(format!(
                "counter {counter}: final value {fin}, but max acknowledged {max}, {} acknowledged, {attempts} attempted",
                acked.len()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(counter: usize, start: u64, end: u64, v: Option<i64>) -> Op {
        Op {
            counter,
            kind: Kind::Incr,
            start,
            end,
            outcome: v.map_or(Outcome::Unknown, Outcome::Ok),
        }
    }

    fn read(counter: usize, start: u64, end: u64, v: i64) -> Op {
        Op {
            counter,
            kind: Kind::Read,
            start,
            end,
            outcome: Outcome::Ok(v),
        }
    }

    fn finals(pairs: &[(usize, i64)]) -> BTreeMap<usize, i64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_sequential_history_passes() {
        let ops = [
            incr(0, 0, 10, Some(1)),
            incr(0, 11, 20, Some(2)),
            read(0, 21, 25, 2),
            incr(1, 0, 5, Some(1)),
        ];
        assert_eq!(
            check(&ops, &finals(&[(0, 2), (1, 1)])),
            Vec::<String>::new()
        );
    }

    #[test]
    fn concurrent_increments_may_take_either_order() {
        let ops = [incr(0, 0, 10, Some(2)), incr(0, 1, 9, Some(1))];
        assert!(check(&ops, &finals(&[(0, 2)])).is_empty());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_count() {
        let ops = [
            incr(0, 0, 10, None),
            incr(0, 11, 20, Some(2)),
            incr(0, 21, 30, None),
        ];
        assert!(check(&ops, &finals(&[(0, 2)])).is_empty());
        assert!(check(&ops, &finals(&[(0, 3)])).is_empty());
        assert_eq!(
            check(&ops, &finals(&[(0, 4)])).len(),
            1,
            "more than attempted"
        );
        assert_eq!(check(&ops, &finals(&[(0, 1)])).len(), 1, "lost an ack");
    }

    #[test]
    fn a_duplicate_value_is_caught() {
        let ops = [incr(0, 0, 10, Some(1)), incr(0, 2, 12, Some(1))];
        let errors = check(&ops, &finals(&[]));
        assert!(errors.iter().any(|e| e.contains("twice")), "{errors:?}");
    }

    #[test]
    fn a_real_time_inversion_is_caught() {
        // B started after A was acknowledged but got a smaller value.
        let ops = [
            incr(0, 0, 10, Some(2)),
            incr(0, 11, 20, Some(1)),
            incr(0, 0, 30, None),
        ];
        let errors = check(&ops, &finals(&[]));
        assert!(
            errors.iter().any(|e| e.contains("before it started")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_value_beyond_the_attempts_is_caught() {
        let ops = [incr(0, 0, 10, Some(2))];
        let errors = check(&ops, &finals(&[]));
        assert!(
            errors.iter().any(|e| e.contains("had started")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_stale_read_is_caught() {
        let ops = [
            incr(0, 0, 10, Some(1)),
            incr(0, 11, 20, Some(2)),
            read(0, 21, 30, 1),
        ];
        let errors = check(&ops, &finals(&[]));
        assert!(errors.iter().any(|e| e.contains("outside")), "{errors:?}");
    }

    #[test]
    fn a_read_from_the_future_is_caught() {
        let ops = [incr(0, 0, 10, Some(1)), read(0, 11, 12, 2)];
        assert_eq!(check(&ops, &finals(&[])).len(), 1);
    }

    #[test]
    fn a_read_concurrent_with_an_increment_may_see_it_or_not() {
        let ops = [incr(0, 0, 10, Some(1)), read(0, 5, 6, 0), read(0, 5, 6, 1)];
        assert!(check(&ops, &finals(&[(0, 1)])).is_empty());
    }

    #[test]
    fn a_lost_acknowledged_increment_is_caught() {
        let ops = [incr(0, 0, 10, Some(1)), incr(0, 11, 20, Some(2))];
        let errors = check(&ops, &finals(&[(0, 1)]));
        assert!(
            errors.iter().any(|e| e.contains("final value")),
            "{errors:?}"
        );
    }
}
