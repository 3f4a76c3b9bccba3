//! Ten cycles of SIGKILL of the node leading the most shards, then its
//! restart on the same address and data dir, under a steady load of
//! increments and reads; the recorded history must check out.

use std::time::Duration;

use crate::harness::{SHARDS, busiest_leader, wait_agreed, wait_converged};
use crate::load::Load;
use crate::procs;

const CYCLES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sigkill_cycles_of_the_busiest_leader_keep_the_history_consistent() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = procs::cluster(root.path(), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_converged(&addrs, 3, Duration::from_secs(90)).await;
    let edge = procs::edge(&addrs);

    let load = Load::start(&edge.addr, "k", 8, 24);
    load.wait_acked(200, Duration::from_secs(60)).await;

    let mut failovers = Vec::new();
    for cycle in 1..=CYCLES {
        let victim = busiest_leader(&addrs).await;
        let proc = nodes.remove(&victim).expect("victim is running");
        let addr = proc.addr.clone();
        let killed_at = load.history.now();
        proc.kill9();
        let took = load
            .wait_all_writable(killed_at, Duration::from_secs(60))
            .await;
        eprintln!(
            "cycle {cycle}: SIGKILL of node {victim}; every counter writable again after {took:?}"
        );
        failovers.push(took);

        nodes.insert(victim, procs::node(root.path(), victim, &addr, &[], SHARDS));
        wait_agreed(&addrs, 3, Duration::from_secs(90)).await;
    }
    failovers.sort();
    eprintln!(
        "failover over {CYCLES} cycles: min {:?}, median {:?}, max {:?}",
        failovers[0],
        failovers[CYCLES / 2],
        failovers[CYCLES - 1]
    );
    load.finish_and_check().await;
    drop(edge);
    drop(nodes);
}
