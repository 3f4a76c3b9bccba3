//! What a run did, in numbers: operations by outcome, faults by kind, and
//! the worst unavailability per fault kind. Pure: computed from the
//! history and the nemesis's log.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::checker::{Kind, Op, Outcome};

/// One injected fault, timed on the history's clock (µs).
#[derive(Clone, Debug)]
pub struct Injected {
    pub kind: &'static str,
    pub what: String,
    pub start: u64,
    /// When it was healed (for faults with a hold) or done.
    pub healed: u64,
    /// How long the cluster took to agree again after the heal.
    pub recovery: Option<Duration>,
}

/// How long after `start` every one of `objects` objects had an
/// acknowledged increment that was sent at or after `start`; `None` if
/// some object had none before the history ends.
pub fn unavailable_after(ops: &[Op], objects: usize, start: u64) -> Option<Duration> {
    let mut first: BTreeMap<usize, u64> = BTreeMap::new();
    for o in ops {
        if o.kind == Kind::Incr && o.start >= start && matches!(o.outcome, Outcome::Ok(_)) {
            let e = first.entry(o.object).or_insert(o.end);
            *e = (*e).min(o.end);
        }
    }
    (first.len() == objects).then(|| {
        let last = first.values().copied().max().unwrap_or(start);
        Duration::from_micros(last.saturating_sub(start))
    })
}

/// What a run found, for [`render`].
pub struct Run<'a> {
    pub seed: u64,
    pub ran: Duration,
    pub ops: &'a [Op],
    pub objects: usize,
    pub faults: &'a [Injected],
    pub violations: &'a [String],
    pub stalls: &'a [String],
    pub lost: usize,
    pub duplicates: usize,
}

/// The summary printed at the end of a run.
pub fn render(run: &Run<'_>) -> String {
    let Run {
        seed,
        ran,
        ops,
        objects,
        faults,
        violations,
        stalls,
        lost,
        duplicates,
    } = *run;
    let mut s = String::new();
    let count = |k: Kind, f: fn(&Outcome) -> bool| {
        ops.iter().filter(|o| o.kind == k && f(&o.outcome)).count()
    };
    let _ = writeln!(s, "=== nemesis summary (seed {seed}, ran {ran:.0?}) ===");
    for (name, k) in [("increments", Kind::Incr), ("reads", Kind::Read)] {
        let _ = writeln!(
            s,
            "{name:>10}: {} ok, {} failed, {} unknown",
            count(k, |o| matches!(o, Outcome::Ok(_))),
            count(k, |o| matches!(o, Outcome::Failed)),
            count(k, |o| matches!(o, Outcome::Unknown)),
        );
    }
    let _ = writeln!(s, "{:>10}: {}", "total ops", ops.len());
    let mut by_kind: BTreeMap<&str, (usize, Option<Duration>, bool)> = BTreeMap::new();
    for f in faults {
        let worst = unavailable_after(ops, objects, f.start);
        let e = by_kind
            .entry(f.kind)
            .or_insert((0, Some(Duration::ZERO), false));
        e.0 += 1;
        match worst {
            Some(d) => e.1 = e.1.map(|w| w.max(d)),
            None => e.2 = true,
        }
    }
    let _ = writeln!(
        s,
        "faults injected: {} (worst unavailability = from the fault until every object took a write again)",
        faults.len()
    );
    for (kind, (n, worst, never)) in &by_kind {
        let worst = match (worst, never) {
            (_, true) => "some object never wrote again before the run ended".to_owned(),
            (Some(d), false) => format!("{d:.1?}"),
            (None, false) => "-".to_owned(),
        };
        let _ = writeln!(s, "  {kind:>10}: {n:>3}, worst unavailability {worst}");
    }
    let _ = writeln!(s, "lost acknowledged writes: {lost}");
    let _ = writeln!(
        s,
        "values acknowledged twice (the outside sign of two executors at once): {duplicates}"
    );
    let _ = writeln!(
        s,
        "stalls (no recovery within the deadline; reported, not failed): {}",
        stalls.len()
    );
    for v in stalls.iter().take(20) {
        let _ = writeln!(s, "  - {v}");
    }
    let _ = writeln!(s, "violations: {}", violations.len());
    for v in violations.iter().take(20) {
        let _ = writeln!(s, "  - {v}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(object: usize, start: u64, end: u64, ok: bool) -> Op {
        Op {
            object,
            kind: Kind::Incr,
            start,
            end,
            outcome: if ok { Outcome::Ok(1) } else { Outcome::Unknown },
            client: 0,
            edge: 0,
            status: String::new(),
        }
    }

    #[test]
    fn unavailability_is_until_the_last_object_writes_again() {
        let ops = [
            incr(0, 5, 8, true),
            incr(0, 10, 20, false),
            incr(0, 21, 30, true),
            incr(1, 12, 14, true),
        ];
        assert_eq!(
            unavailable_after(&ops, 2, 10),
            Some(Duration::from_micros(20))
        );
        assert_eq!(unavailable_after(&ops, 3, 10), None);
    }
}
