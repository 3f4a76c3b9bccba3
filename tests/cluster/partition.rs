//! A network partition: the node leading the most shards is cut off from
//! its peers (not from clients) under load through the edge. While cut off
//! it must acknowledge nothing, and the two other nodes must elect new
//! leaders and keep serving; once the cut heals the cluster comes back
//! together and the whole recorded history must check out.
//!
//! Topology (`netns.rs` builds it; needs root and iproute2):
//!
//! ```text
//!   root namespace: this test and its clients, `roost edge` on 127.0.0.1
//!         │ bridge roostp<pid>b, 10.213.X.1/24
//!    ┌────┴───────────────┬───────────────────┐
//!   veth                 veth                veth
//!   netns roostp<pid>n1  netns …n2           netns …n3
//!   node 1, 10.213.X.11  node 2, 10.213.X.12 node 3, 10.213.X.13
//! ```
//!
//! Cutting node k off adds blackhole routes between its namespace and each
//! peer's, both ways; the root namespace still reaches it, so the test
//! sends increments and reads straight to it over gRPC (`direct.rs`); they
//! join the load's history with everything else before it is checked.
//!
//! The edge takes its view (who leads what) from one node at a time, and
//! joins through the node to be cut off, so that is the one it watches:
//! the cut-off node goes on naming itself leader of the shards it led, and
//! the edge's calls for those shards hang until the client gives up, for as
//! long as the cut lasts. So the majority's service is asserted with writes
//! sent straight to its leaders, and through the edge only for the counters
//! of the other shards; what the edge did with the cut-off node's counters
//! is logged, not asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::direct::{self, Direct, shard_of};
use crate::harness::{
    SHARDS, busiest_leader, groups, view_of, wait_agreed, wait_balanced, wait_converged,
};
use crate::history::{Kind, Op, Outcome, Recorder};
use crate::load::Load;
use crate::netns::Net;
use crate::procs;

/// The load's counters: `p-0 .. p-{COUNTERS}`.
const PREFIX: &str = "p";
const COUNTERS: usize = 24;
/// How long a direct call to the cut-off node may hang before it counts
/// as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_acknowledges_nothing_and_the_majority_serves() {
    let _turn = crate::harness::one_at_a_time().await;
    // Declared first, so dropped last: after every process in it.
    let mut net = Net::new(3);
    let root = tempfile::tempdir().expect("temp dir");
    let start = |id: u64, join: &[String]| {
        let listen = format!("{}:0", net.ip(id));
        procs::node_wrapped(&net.exec_prefix(id), root.path(), id, &listen, join, SHARDS)
    };
    let first = start(1, &[]);
    let seeds = vec![first.addr.clone()];
    let nodes = [first, start(2, &seeds), start(3, &seeds)];
    let addrs: Vec<String> = nodes.iter().map(|p| p.addr.clone()).collect();
    // The node to cut off: the busiest leader once every shard is led by
    // its preferred leader (no transfer still to come, and some shards stay
    // with the majority's leaders across the cut).
    wait_converged(&addrs, 3, Duration::from_secs(90)).await;
    wait_balanced(&addrs, 3, Duration::from_secs(90)).await;
    let victim = busiest_leader(&addrs).await;
    let victim_addr = addrs[usize::try_from(victim - 1).expect("small id")].clone();
    let majority: Vec<String> = addrs
        .iter()
        .filter(|a| **a != victim_addr)
        .cloned()
        .collect();
    // The edge joins through it first, so it takes its view from the node
    // about to be cut off: the worst case for the edge.
    let join: Vec<String> = std::iter::once(victim_addr.clone())
        .chain(majority.iter().cloned())
        .collect();
    let edge = procs::edge(&join);
    let load = Load::start(&edge.addr, PREFIX, 8, COUNTERS);
    load.wait_acked(200, Duration::from_secs(60)).await;

    let before = led_by(&addrs, victim, None).await;
    net.isolate(victim);
    // What it claims now it claims until the cut heals: it hears no one.
    let claimed = led_by(&[], victim, Some(&victim_addr)).await;
    eprintln!(
        "node {victim} ({victim_addr}) cut off from its peers; it led shards {before:?}, claims {claimed:?}"
    );
    assert!(
        !claimed.is_empty(),
        "the cut-off node leads no shard (leadership moved just before the cut)"
    );
    let of =
        |shards: &[u32], c: &usize| shards.contains(&shard_of(&format!("{PREFIX}-{c}"), SHARDS));
    // Its counters; and those certainly led by the majority across the cut.
    let stuck: Vec<usize> = (0..COUNTERS).filter(|c| of(&claimed, c)).collect();
    let free: Vec<usize> = (0..COUNTERS)
        .filter(|c| !of(&claimed, c) && !of(&before, c))
        .collect();

    // (a) Straight to the cut-off node, until the majority has served: no
    // increment may be acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let probes = direct::probe(
        &victim_addr,
        &load.history,
        PREFIX,
        &stuck,
        4,
        PROBE_TIMEOUT,
        &stop,
    );

    // (b) The majority leads every shard and takes writes of every counter
    // sent straight to its leaders; through the edge, every counter of the
    // other shards takes a write started after the election.
    let elected = wait_for_majority_leaders(&majority, victim).await;
    let elected_at = load.history.now();
    eprintln!("the majority leads every shard {elected:?} after the cut");
    let mut direct_ops = majority_writes(&load.history, &addrs, &majority, 3).await;
    let acks = direct_ops
        .iter()
        .filter(|o| o.outcome != Outcome::Unknown)
        .count();
    eprintln!("the majority acknowledged {acks} increments sent straight to its leaders");
    // Generous: each load client also has counters of the cut-off node's
    // shards, and if the edge sends those there, each call waits out the
    // client's 15 s timeout before the client moves on to the next.
    let took = load
        .wait_writable(elected_at, &free, Duration::from_secs(120))
        .await;
    eprintln!(
        "through the edge, the {} counters of the other shards written {took:?} after the election",
        free.len()
    );
    // The cut-off node's counters through the edge: served only if the
    // edge follows a majority node's view (logged, not asserted).
    let edge_ops: Vec<Op> = load
        .history
        .ops()
        .into_iter()
        .filter(|o| o.start >= elected_at && stuck.contains(&o.counter))
        .collect();
    let edge_acks = edge_ops
        .iter()
        .filter(|o| o.outcome != Outcome::Unknown)
        .count();
    eprintln!(
        "through the edge since the election, on the cut-off node's {} counters: {edge_acks} of {} operations answered",
        stuck.len(),
        edge_ops.len()
    );
    let claims = led_by(&[], victim, Some(&victim_addr)).await;
    eprintln!("the cut-off node still names itself leader of shards {claims:?}");

    stop.store(true, Ordering::Relaxed);
    let mut probed: Vec<Op> = Vec::new();
    for p in probes {
        probed.extend(p.await.expect("probe task"));
    }
    report_and_check_probes(&probed, stuck.len());
    // Into the history only now, so that what the edge served was measured
    // on the edge's operations alone.
    direct_ops.extend(probed);
    for op in direct_ops {
        load.history.push(op);
    }

    // Heal; the cluster comes back together and serves every counter.
    let healed_at = load.history.now();
    net.heal();
    wait_agreed(&addrs, 3, Duration::from_secs(90)).await;
    let took = load
        .wait_all_writable(healed_at, Duration::from_secs(60))
        .await;
    eprintln!("healed: cluster agreed, every counter written {took:?} after the heal");

    // The history holds the edge's operations and the direct ones (reads
    // the cut-off node answered, if any, included): the checker holds them
    // to linearizability, and the final values to the acknowledged counts.
    load.finish_and_check().await;
    drop(edge);
    drop(nodes);
}

/// Shards whose leader is `node`: by the groups' own reports, or (with
/// `claims`) also by `node`'s view, which names it leader even where it
/// cannot tell voters.
async fn led_by(addrs: &[String], node: u64, claims: Option<&str>) -> Vec<u32> {
    let mut out: Vec<u32> = groups(addrs)
        .await
        .into_iter()
        .filter(|(_, g)| g.leader == node)
        .map(|(s, _)| s)
        .collect();
    if let Some(view) = match claims {
        Some(addr) => view_of(addr).await,
        None => None,
    } {
        out.extend(
            view.leaders
                .iter()
                .filter(|l| l.node == node)
                .map(|l| l.shard),
        );
    }
    out
}

/// Asserts the cut-off node acknowledged no increment, and logs what it did.
fn report_and_check_probes(ops: &[Op], counters: usize) {
    let acked: Vec<&Op> = ops
        .iter()
        .filter(|o| o.kind == Kind::Incr && o.outcome != Outcome::Unknown)
        .collect();
    let reads = ops
        .iter()
        .filter(|o| o.kind == Kind::Read && o.outcome != Outcome::Unknown)
        .count();
    let hung = ops
        .iter()
        .filter(|o| Duration::from_micros(o.end - o.start) >= PROBE_TIMEOUT)
        .count();
    eprintln!(
        "cut-off node: {} direct operations on {counters} counters ({hung} hung until the \
         {PROBE_TIMEOUT:?} timeout, the rest failed), {} increments acknowledged, {reads} reads answered",
        ops.len(),
        acked.len()
    );
    assert!(
        counters == 0 || ops.len() >= 4,
        "direct operations were sent"
    );
    assert!(
        acked.is_empty(),
        "the cut-off node acknowledged increments: {acked:?}"
    );
}

/// Waits until the nodes at `majority` lead every shard between them (none
/// led by `cut`); returns how long that took.
async fn wait_for_majority_leaders(majority: &[String], cut: u64) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        let g = groups(majority).await;
        if g.len() == usize::from(SHARDS) && g.values().all(|x| x.leader != cut) {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the majority did not elect leaders for every shard: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `rounds` times, every counter takes an increment sent straight to its
/// shard's leader on the majority side, all within a deadline; returns
/// every operation tried, timed on `clock`.
async fn majority_writes(
    clock: &Recorder,
    addrs: &[String],
    majority: &[String],
    rounds: usize,
) -> Vec<Op> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ops = Vec::new();
    for counter in (0..rounds).flat_map(|_| 0..COUNTERS) {
        let shard = shard_of(&format!("{PREFIX}-{counter}"), SHARDS);
        loop {
            let leader = groups(majority).await.get(&shard).map(|g| g.leader);
            let addr = leader.and_then(|l| addrs.get(usize::try_from(l).ok()?.checked_sub(1)?));
            if let Some(addr) = addr.filter(|a| majority.contains(a)) {
                let op = Direct::new(addr)
                    .op(clock, PREFIX, counter, Kind::Incr, PROBE_TIMEOUT * 5)
                    .await;
                ops.push(op);
                if op.outcome != Outcome::Unknown {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "counter {counter} (shard {shard}) takes no write on the majority side"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    ops
}
