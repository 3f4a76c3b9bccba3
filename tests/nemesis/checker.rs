//! The checker: pure functions over a recorded history, no cluster.
//!
//! Each object is a counter that only ever goes up by one. An increment
//! answers the value it produced; a read answers the value it saw. A
//! history of one counter is linearizable iff there are instants
//! `t(1) < t(2) < … < t(L)` (the moments the counter became 1, 2, …, L,
//! where `L` is the largest value anyone observed) such that:
//!
//! - an increment acknowledged with `v` is the one that made the counter
//!   `v`, so `t(v)` lies within that increment's interval;
//! - every value `v` not acknowledged was made by a distinct increment whose
//!   outcome is unknown (a timeout, a broken connection, a 503 that may
//!   have committed), at some instant after that increment started (an
//!   unknown increment has no end: it may take effect late, or never);
//! - a read that saw `r` happened while the counter was `r`: `t(r)` is at
//!   or before the read's end and `t(r + 1)` after its start.
//!
//! Every constraint is a lower or upper bound on one `t(v)` or the order
//! between neighbours, so the earliest schedule (each `t(v)` as early as
//! its lower bounds allow, unknown increments used in the order they
//! started) satisfies every upper bound iff some schedule does: the check
//! is exact and runs in O(n log n), with no search. Real-time order between
//! any two completed operations, reads included, is a constraint: a read of
//! 7 followed by a read of 5 fails, a read of a value no increment could
//! have produced fails, and an acknowledged increment that a later read
//! does not see fails (a lost acknowledged write).
//!
//! What a status may mean is decided in one place, [`classify`]: anything
//! not documented there is itself a violation.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Incr,
    Read,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 200 with this value.
    Ok(i64),
    /// Certainly did not take effect (the node refused it before running it).
    Failed,
    /// May or may not have taken effect (timeout, broken connection, a
    /// failed or uncertain commit).
    Unknown,
}

/// One operation as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub object: usize,
    pub kind: Kind,
    /// Microseconds since the run's epoch when the request was sent.
    pub start: u64,
    /// Microseconds since the run's epoch when the answer (or error) came.
    pub end: u64,
    pub outcome: Outcome,
    /// Which client and edge sent it, and what came back (for reports).
    pub client: usize,
    pub edge: usize,
    pub status: String,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Incr => "increment",
            Kind::Read => "read",
        };
        let outcome = match self.outcome {
            Outcome::Ok(v) => format!("= {v}"),
            Outcome::Failed => "failed".into(),
            Outcome::Unknown => "unknown".into(),
        };
        write!(
            f,
            "{kind} {outcome} [{:.3}s..{:.3}s] (client {}, edge {}, {})",
            self.start as f64 / 1e6,
            self.end as f64 / 1e6,
            self.client,
            self.edge,
            self.status
        )
    }
}

/// How an HTTP answer (or its absence) counts. `answer` is the status and
/// body, or `None` when no answer came (timeout, connection error).
/// `Err` is a violation: a status the API does not document.
pub fn classify(kind: Kind, answer: Option<(u16, &str)>) -> Result<Outcome, String> {
    let Some((status, body)) = answer else {
        return Ok(Outcome::Unknown);
    };
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match status {
        200 => json["value"]
            .as_i64()
            .map(Outcome::Ok)
            .ok_or_else(|| format!("200 without a value: {body:.200}")),
        503 => match json["error"].as_str().unwrap_or_default() {
            // Refused before running: the call certainly did nothing
            // (object::Error's codes; the edge retries only these).
            "not_owner" | "shutting_down" | "unreachable" | "overloaded" => Ok(Outcome::Failed),
            // The commit failed or its outcome is unknown.
            "commit_failed" | "object_reset" | "unavailable" => Ok(match kind {
                Kind::Incr => Outcome::Unknown,
                Kind::Read => Outcome::Failed,
            }),
            _ => Err(format!("503 with an undocumented body: {body:.200}")),
        },
        _ => Err(format!("undocumented status {status}: {body:.200}")),
    }
}

/// Time in units fine enough that any number of operations within one
/// microsecond can still be ordered: `t = micros * SCALE + k`.
const SCALE: i128 = 1 << 20;

/// The latest instant an operation may have ended: clocks are read in
/// whole microseconds, so it ended within its `end` microsecond.
fn end_of(op: &Op) -> i128 {
    i128::from(op.end) * SCALE + SCALE - 1
}

/// What bounds `t(v)` and why, for the report.
#[derive(Clone)]
struct Bound {
    at: i128,
    why: String,
}

/// Checks one object's operations; returns its violations (empty: the
/// history is linearizable). Stops at the first impossible value, since
/// everything after it is ordered relative to a broken schedule.
pub fn check_object(object: usize, ops: &[Op]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut acked: BTreeMap<i64, &Op> = BTreeMap::new();
    let mut unknown: Vec<&Op> = Vec::new();
    // Per value: the latest start a read of `v - 1` requires `t(v)` to be
    // after, and the earliest end a read of `v` requires it before.
    let mut after_read: BTreeMap<i64, (i128, &Op)> = BTreeMap::new();
    let mut before_read: BTreeMap<i64, (i128, &Op)> = BTreeMap::new();
    let mut top = 0i64;
    for op in ops {
        let at = |us: u64| i128::from(us) * SCALE;
        match (op.kind, op.outcome) {
            (Kind::Incr, Outcome::Ok(v)) => {
                if v < 1 {
                    errors.push(format!(
                        "object {object}: an increment answered {v}, below 1: {op}"
                    ));
                    continue;
                }
                if let Some(other) = acked.insert(v, op) {
                    errors.push(format!(
                        "object {object}: value {v} acknowledged twice (two executors?): {other} and {op}"
                    ));
                }
                top = top.max(v);
            }
            (Kind::Incr, Outcome::Unknown) => unknown.push(op),
            (Kind::Read, Outcome::Ok(r)) => {
                if r < 0 {
                    errors.push(format!("object {object}: a read answered {r}: {op}"));
                    continue;
                }
                // t(r + 1) > start: strictly after the read began.
                let lo = at(op.start) + 1;
                let e = after_read.entry(r + 1).or_insert((lo, op));
                if lo > e.0 {
                    *e = (lo, op);
                }
                if r >= 1 {
                    let hi = end_of(op);
                    let e = before_read.entry(r).or_insert((hi, op));
                    if hi < e.0 {
                        *e = (hi, op);
                    }
                }
                top = top.max(r);
            }
            (_, Outcome::Failed) | (Kind::Read, Outcome::Unknown) => {}
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    unknown.sort_by_key(|o| o.start);
    let mut unknown: VecDeque<&Op> = unknown.into();
    let mut prev: Option<Bound> = None;
    for v in 1..=top {
        // Lower bounds: after t(v - 1), after the increment that made v
        // started, after every read of v - 1 started.
        let mut lo = match &prev {
            Some(p) => Bound {
                at: p.at + 1,
                why: format!("after the counter became {} ({})", v - 1, p.why),
            },
            None => Bound {
                at: i128::MIN,
                why: "from the start".into(),
            },
        };
        let mut hi = Bound {
            at: i128::MAX,
            why: "unbounded".into(),
        };
        let maker = match acked.get(&v) {
            Some(op) => {
                hi = Bound {
                    at: end_of(op),
                    why: format!("by the end of the increment that answered it: {op}"),
                };
                *op
            }
            None => match unknown.pop_front() {
                Some(op) => op,
                None => {
                    let seen = ops
                        .iter()
                        .find(|o| matches!(o.outcome, Outcome::Ok(x) if x >= v))
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    errors.push(format!(
                        "object {object}: value {v} never existed: no increment left to produce it, yet {seen}"
                    ));
                    return errors;
                }
            },
        };
        let start = i128::from(maker.start) * SCALE;
        if start > lo.at {
            lo = Bound {
                at: start,
                why: format!("after the increment that made it started: {maker}"),
            };
        }
        if let Some((at, op)) = after_read.get(&v)
            && *at > lo.at
        {
            lo = Bound {
                at: *at,
                why: format!("after a read still saw {}: {op}", v - 1),
            };
        }
        if let Some((at, op)) = before_read.get(&v)
            && *at < hi.at
        {
            hi = Bound {
                at: *at,
                why: format!("by the end of a read that saw it: {op}"),
            };
        }
        if lo.at > hi.at {
            errors.push(format!(
                "object {object}: the counter must become {v} {} but {}",
                lo.why
                    .replace("after the counter became", "after it became"),
                hi.why
            ));
            return errors;
        }
        prev = Some(lo);
    }
    errors
}

/// Every violation of a whole history (all objects).
pub fn check(ops: &[Op]) -> Vec<String> {
    let mut by_object: BTreeMap<usize, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_object.entry(op.object).or_default().push(op.clone());
    }
    by_object
        .iter()
        .flat_map(|(object, ops)| check_object(*object, ops))
        .collect()
}

/// Acknowledged increments a final read (taken after every client stopped
/// and the cluster healed) does not include: for each object, the
/// acknowledged values above its final value.
pub fn lost_acks(ops: &[Op], finals: &BTreeMap<usize, i64>) -> Vec<String> {
    let mut lost = Vec::new();
    for op in ops {
        if let (Kind::Incr, Outcome::Ok(v)) = (op.kind, op.outcome)
            && let Some(fin) = finals.get(&op.object)
            && v > *fin
        {
            lost.push(format!(
                "object {}: acknowledged {v} but the final value is {fin}: {op}",
                op.object
            ));
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, start: u64, end: u64, outcome: Outcome) -> Op {
        Op {
            object: 0,
            kind,
            start,
            end,
            outcome,
            client: 0,
            edge: 0,
            status: "test".into(),
        }
    }
    fn incr(start: u64, end: u64, v: i64) -> Op {
        op(Kind::Incr, start, end, Outcome::Ok(v))
    }
    fn lost(start: u64, end: u64) -> Op {
        op(Kind::Incr, start, end, Outcome::Unknown)
    }
    fn read(start: u64, end: u64, v: i64) -> Op {
        op(Kind::Read, start, end, Outcome::Ok(v))
    }

    fn ok(ops: &[Op]) {
        let e = check_object(0, ops);
        assert!(e.is_empty(), "{e:?}");
    }
    fn fails(ops: &[Op], needle: &str) {
        let e = check_object(0, ops);
        assert!(e.iter().any(|x| x.contains(needle)), "{needle:?} in {e:?}");
    }

    #[test]
    fn a_sequential_history_passes() {
        ok(&[
            incr(0, 10, 1),
            read(11, 12, 1),
            incr(13, 20, 2),
            read(21, 25, 2),
        ]);
    }

    #[test]
    fn concurrent_increments_may_take_either_order() {
        ok(&[incr(0, 10, 2), incr(1, 9, 1), read(11, 12, 2)]);
    }

    #[test]
    fn a_read_concurrent_with_an_increment_may_see_it_or_not() {
        ok(&[
            incr(0, 10, 1),
            read(5, 6, 0),
            read(5, 6, 1),
            read(11, 12, 1),
        ]);
    }

    #[test]
    fn operations_in_the_same_microsecond_can_be_ordered() {
        ok(&[incr(5, 5, 1), incr(5, 5, 2), read(5, 5, 2), incr(5, 5, 3)]);
    }

    #[test]
    fn an_unknown_increment_may_take_effect_late_or_never() {
        // Never: the later increment got 1.
        ok(&[lost(0, 10), incr(11, 20, 1), read(21, 22, 1)]);
        // Late: it became 2 after the read of 1, long after it timed out.
        ok(&[
            lost(0, 10),
            incr(11, 20, 1),
            read(21, 22, 1),
            read(30, 31, 2),
        ]);
    }

    #[test]
    fn a_read_of_7_then_a_read_of_5_fails() {
        let mut ops: Vec<Op> = (0..7).map(|_| lost(0, 1)).collect();
        ops.push(read(10, 11, 7));
        ops.push(read(12, 13, 5));
        fails(&ops, "after a read still saw 5");
    }

    #[test]
    fn a_read_of_a_value_that_never_existed_fails() {
        // Two increments, one of them failed for sure: 2 was never reached.
        fails(
            &[
                incr(0, 10, 1),
                op(Kind::Incr, 11, 20, Outcome::Failed),
                read(21, 22, 2),
            ],
            "value 2 never existed",
        );
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        fails(
            &[incr(0, 10, 1), incr(11, 20, 2), read(21, 22, 1)],
            "after a read still saw 1",
        );
        let ops = [incr(0, 10, 1), incr(11, 20, 2)];
        assert_eq!(lost_acks(&ops, &BTreeMap::from([(0, 1)])).len(), 1);
        assert!(lost_acks(&ops, &BTreeMap::from([(0, 2)])).is_empty());
    }

    #[test]
    fn a_value_acknowledged_twice_fails() {
        fails(&[incr(0, 10, 1), incr(2, 12, 1)], "acknowledged twice");
    }

    #[test]
    fn an_increment_that_misses_an_earlier_acknowledged_one_fails() {
        // B started after A was acknowledged with 2 but got 1.
        fails(
            &[incr(0, 10, 2), incr(11, 20, 1), lost(0, 30)],
            "the counter must become 2",
        );
    }

    #[test]
    fn a_read_from_the_future_fails() {
        // Read 2 ended before the only unknown increment that could make 2
        // even started.
        fails(
            &[incr(0, 10, 1), read(11, 12, 2), lost(20, 30)],
            "the counter must become 2",
        );
    }

    #[test]
    fn the_earliest_unknown_increment_is_used_first() {
        // Two unknowns; the read of 2 needs the earlier one.
        ok(&[incr(0, 10, 1), lost(5, 6), lost(50, 60), read(20, 21, 2)]);
    }

    #[test]
    fn statuses_are_classified_or_rejected() {
        let c = |k, s, b| classify(k, Some((s, b)));
        assert_eq!(c(Kind::Incr, 200, r#"{"value":3}"#), Ok(Outcome::Ok(3)));
        assert_eq!(
            c(Kind::Incr, 503, r#"{"error":"not_owner"}"#),
            Ok(Outcome::Failed)
        );
        assert_eq!(
            c(Kind::Incr, 503, r#"{"error":"object_reset"}"#),
            Ok(Outcome::Unknown)
        );
        assert_eq!(
            c(Kind::Read, 503, r#"{"error":"object_reset"}"#),
            Ok(Outcome::Failed)
        );
        assert_eq!(classify(Kind::Incr, None), Ok(Outcome::Unknown));
        assert!(c(Kind::Incr, 500, "{}").is_err());
        assert!(c(Kind::Incr, 503, r#"{"error":"mystery"}"#).is_err());
        assert!(c(Kind::Read, 200, "{}").is_err());
    }
}
