//! The nemesis's schedule: a pure function of the seed, the number of
//! nodes and the run's length. Every choice (which fault, which node,
//! for how long, how long to wait after) is drawn here, before the run
//! starts, and printed; the same seed replays the same schedule. (What the
//! cluster does in between, e.g. how long it takes to recover, is not
//! replayed: the nemesis waits for recovery, then keeps to the schedule.)
//!
//! Membership faults are planned against the membership they will meet:
//! the plan keeps the live node ids, so a node added by [`Fault::Add`] can
//! be a later fault's target and a drained one never is.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One fault. Node ids are the cluster's (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the node, restart it after the hold.
    Kill(u64),
    /// SIGSTOP the node, SIGCONT it after the hold.
    Pause(u64),
    /// Cut the node off from its peers, both ways; clients and edges
    /// still reach it.
    Isolate(u64),
    /// Split the nodes into these two sides (the first is the minority).
    Split(Vec<u64>, Vec<u64>),
    /// One-way: `deaf` the node hears nothing from its peers (they hear
    /// it); otherwise it is mute (it hears them, they do not hear it).
    OneWay { node: u64, deaf: bool },
    /// Drop this percentage of every node's packets to and from the other
    /// nodes and the edges (nft `numgen random`).
    Loss(u8),
    /// SIGKILL every node, restart them all after the hold.
    CrashAll,
    /// Start a new node with this id; it joins the cluster.
    Add(u64),
    /// `roost node drain` this node, then stop it.
    Drain(u64),
}

impl Fault {
    /// The fault's kind, for the summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Pause(_) => "pause",
            Fault::Isolate(_) => "isolate",
            Fault::Split(..) => "split",
            Fault::OneWay { .. } => "one-way",
            Fault::Loss(_) => "loss",
            Fault::CrashAll => "crash-all",
            Fault::Add(_) => "add",
            Fault::Drain(_) => "drain",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(n) => write!(f, "SIGKILL node {n}, restart"),
            Fault::Pause(n) => write!(f, "SIGSTOP node {n}, SIGCONT"),
            Fault::Isolate(n) => write!(f, "cut node {n} off from its peers"),
            Fault::Split(a, b) => write!(f, "split {a:?} | {b:?}"),
            Fault::OneWay { node, deaf: true } => {
                write!(f, "node {node} hears nothing from its peers")
            }
            Fault::OneWay { node, deaf: false } => {
                write!(f, "node {node}'s peers hear nothing from it")
            }
            Fault::Loss(p) => write!(f, "drop {p}% of every node's packets"),
            Fault::CrashAll => write!(f, "SIGKILL every node, restart all"),
            Fault::Add(n) => write!(f, "add node {n}"),
            Fault::Drain(n) => write!(f, "drain node {n} and stop it"),
        }
    }
}

/// A fault, how long it is held before it heals, and how long the
/// cluster then runs undisturbed (after it recovered) before the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub hold: Duration,
    pub calm: Duration,
}

/// The kinds, by weight; membership changes are slow, so rarer.
const KINDS: &[(&str, u32)] = &[
    ("kill", 4),
    ("pause", 3),
    ("isolate", 4),
    ("split", 2),
    ("one-way", 2),
    ("loss", 2),
    ("crash-all", 1),
    ("membership", 1),
];

/// Steps of the opening round (every kind once, membership twice).
pub const OPENING: usize = 9;

/// The plan for a run of about `budget` (faults, holds and calms; the
/// recovery waits come on top): `nodes` nodes to start with. It opens
/// with every kind once, in a seeded order (membership twice: an add,
/// then a drain), so even a short run meets each; then kinds by weight.
pub fn plan(seed: u64, nodes: u64, budget: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut live: Vec<u64> = (1..=nodes).collect();
    let mut next_id = nodes + 1;
    let mut steps = Vec::new();
    let mut used = Duration::ZERO;
    let mut opening: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
    opening.push("membership");
    for i in (1..opening.len()).rev() {
        opening.swap(i, rng.random_range(0..=i));
    }
    let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
    while used < budget || !opening.is_empty() {
        let kind = match opening.pop() {
            Some(k) => k,
            None => {
                let mut pick = rng.random_range(0..total);
                KINDS
                    .iter()
                    .find(|(_, w)| {
                        if pick < *w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .map_or("kill", |(k, _)| *k)
            }
        };
        let fault = fault_of(kind, &mut rng, &mut live, &mut next_id, nodes);
        let hold = Duration::from_millis(rng.random_range(1_000..=4_000));
        let calm = Duration::from_millis(rng.random_range(1_000..=3_000));
        // Adds and drains take their own time; count them as ~10 s.
        used += match fault {
            Fault::Add(_) | Fault::Drain(_) => Duration::from_secs(10),
            Fault::CrashAll => hold + calm + Duration::from_secs(5),
            _ => hold + calm,
        };
        steps.push(Step { fault, hold, calm });
    }
    steps
}

/// Draws a fault of `kind` against the `live` members.
fn fault_of(
    kind: &str,
    rng: &mut StdRng,
    live: &mut Vec<u64>,
    next_id: &mut u64,
    nodes: u64,
) -> Fault {
    let any = |rng: &mut StdRng, live: &[u64]| live[rng.random_range(0..live.len())];
    match kind {
        "kill" => Fault::Kill(any(rng, live)),
        "pause" => Fault::Pause(any(rng, live)),
        "isolate" => Fault::Isolate(any(rng, live)),
        "split" => {
            let mut shuffled = live.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.random_range(0..=i));
            }
            let minority = ((shuffled.len() - 1) / 2).max(1);
            let (a, b) = shuffled.split_at(minority);
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            Fault::Split(a, b)
        }
        "one-way" => Fault::OneWay {
            node: any(rng, live),
            deaf: rng.random_bool(0.5),
        },
        "loss" => Fault::Loss(rng.random_range(5..=30)),
        "crash-all" => Fault::CrashAll,
        _ => {
            // Grow one, then shrink one: never fewer than we started
            // with (a drain needs R = 3 active nodes left).
            if live.len() as u64 > nodes {
                let old = any(rng, live);
                live.retain(|n| *n != old);
                Fault::Drain(old)
            } else {
                live.push(*next_id);
                *next_id += 1;
                Fault::Add(*next_id - 1)
            }
        }
    }
}

/// The highest node id a plan uses (the network needs a namespace each).
pub fn max_node(nodes: u64, steps: &[Step]) -> u64 {
    steps
        .iter()
        .filter_map(|s| match s.fault {
            Fault::Add(n) => Some(n),
            _ => None,
        })
        .max()
        .unwrap_or(nodes)
        .max(nodes)
}

/// `90`, `90s`, `30m`, `1h` → a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a = plan(42, 3, Duration::from_secs(600));
        assert_eq!(a, plan(42, 3, Duration::from_secs(600)));
        assert_ne!(a, plan(43, 3, Duration::from_secs(600)));
    }

    #[test]
    fn membership_never_drops_below_the_start_and_targets_are_live() {
        for seed in 0..50 {
            let steps = plan(seed, 3, Duration::from_secs(900));
            let mut live: Vec<u64> = vec![1, 2, 3];
            for s in &steps {
                match &s.fault {
                    Fault::Add(n) => live.push(*n),
                    Fault::Drain(n) => {
                        assert!(live.contains(n));
                        live.retain(|x| x != n);
                        assert!(live.len() >= 3);
                    }
                    Fault::Kill(n)
                    | Fault::Pause(n)
                    | Fault::Isolate(n)
                    | Fault::OneWay { node: n, .. } => assert!(live.contains(n), "{s:?}"),
                    Fault::Split(a, b) => {
                        assert!(a.len() < b.len() && !a.is_empty(), "{s:?}");
                        assert_eq!(a.len() + b.len(), live.len());
                    }
                    Fault::Loss(_) | Fault::CrashAll => {}
                }
            }
        }
    }

    #[test]
    fn even_a_short_run_meets_every_kind() {
        let kinds: std::collections::BTreeSet<&str> = plan(7, 3, Duration::from_secs(1))
            .iter()
            .map(|s| s.fault.kind())
            .collect();
        assert_eq!(kinds.len(), 9, "{kinds:?}");
        assert_eq!(KINDS.len() + 1, OPENING);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("x"), None);
    }
}
