//! What the cluster tests observe: the views nodes serve over
//! `Cluster.Watch`, waiting for shard groups to converge, and JSON answers
//! from the edge. Every wait has a deadline; a node that does not answer
//! (killed, or paused with SIGSTOP) is skipped after a short timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use roost::rpc::pb;
use roost::rpc::pb::cluster_client::ClusterClient;
use serde_json::Value;

/// Shards of every test cluster.
pub const SHARDS: u16 = 8;

/// The first view `addr` answers with, if it answers within 2 s.
pub async fn view_of(addr: &str) -> Option<pb::ClusterView> {
    let first = async {
        let mut client = ClusterClient::connect(format!("http://{addr}"))
            .await
            .ok()?;
        let mut stream = client.watch(pb::WatchRequest {}).await.ok()?.into_inner();
        stream.message().await.ok()?
    };
    tokio::time::timeout(Duration::from_secs(2), first)
        .await
        .ok()?
}

/// What one shard's leader says about its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub leader: u64,
    pub voters: Vec<u64>,
}

/// For each shard, the leader and voters its leader reports.
pub async fn groups(nodes: &[String]) -> BTreeMap<u32, Group> {
    let mut out = BTreeMap::new();
    for addr in nodes {
        if let Some(view) = view_of(addr).await {
            for l in view.leaders {
                if !l.voters.is_empty() {
                    out.insert(
                        l.shard,
                        Group {
                            leader: l.node,
                            voters: l.voters,
                        },
                    );
                }
            }
        }
    }
    out
}

/// Waits until every shard has a leader with `voters` voters.
pub async fn wait_converged(
    nodes: &[String],
    voters: usize,
    timeout: Duration,
) -> BTreeMap<u32, Group> {
    let deadline = Instant::now() + timeout;
    loop {
        let g = groups(nodes).await;
        if g.len() == usize::from(SHARDS) && g.values().all(|x| x.voters.len() == voters) {
            return g;
        }
        assert!(Instant::now() < deadline, "cluster did not converge: {g:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every shard has a leader with `voters` voters, every node
/// of `nodes` answers, every voter of each shard names that same leader,
/// and no node names another one: the whole cluster is back in one piece.
/// (A node that left a shard's group no longer hears from its leader, so
/// it may name none, but a stale name would misroute edges.)
pub async fn wait_agreed(
    nodes: &[String],
    voters: usize,
    timeout: Duration,
) -> BTreeMap<u32, Group> {
    let deadline = Instant::now() + timeout;
    loop {
        let g = groups(nodes).await;
        let mut views = BTreeMap::new();
        for addr in nodes {
            if let Some(view) = view_of(addr).await {
                views.insert(addr.clone(), view);
            }
        }
        let addr_of: BTreeMap<u64, String> = views
            .values()
            .flat_map(|v| v.nodes.iter().map(|n| (n.id, n.addr.clone())))
            .collect();
        let names = |node: u64, shard: u32| {
            addr_of
                .get(&node)
                .and_then(|a| views.get(a))
                .and_then(|v| v.leaders.iter().find(|l| l.shard == shard))
                .map(|l| l.node)
        };
        let agreed = views.len() == nodes.len()
            && g.len() == usize::from(SHARDS)
            && g.iter().all(|(shard, x)| {
                x.voters.len() == voters
                    && x.voters.iter().all(|v| names(*v, *shard) == Some(x.leader))
                    && views.values().all(|v| {
                        v.leaders
                            .iter()
                            .all(|l| l.shard != *shard || l.node == x.leader)
                    })
            });
        if agreed {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not come back together: {g:?}, {} of {} nodes answer",
            views.len(),
            nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node leading the most shards.
pub async fn busiest_leader(nodes: &[String]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut led: BTreeMap<u64, usize> = BTreeMap::new();
        for g in groups(nodes).await.values() {
            *led.entry(g.leader).or_default() += 1;
        }
        if let Some((id, _)) = led.iter().max_by_key(|(_, n)| **n) {
            return *id;
        }
        assert!(Instant::now() < deadline, "no shard has a leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Cluster tests take turns: each starts several processes, and the
/// machine running them may have only two cores.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// Waits until the cluster has agreed ([`wait_agreed`]) and every shard is
/// led by its preferred leader (the first of its replicas on the ring), so
/// no planned leadership transfer is still to come.
pub async fn wait_balanced(nodes: &[String], voters: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let g = wait_agreed(nodes, voters, timeout).await;
        let ids: std::collections::BTreeSet<u64> = match view_of(&nodes[0]).await {
            Some(v) => v
                .nodes
                .iter()
                .filter(|n| !n.draining)
                .map(|n| n.id)
                .collect(),
            None => Default::default(),
        };
        let placement = roost::ring::Placement::compute(&ids, SHARDS, voters);
        let balanced = !ids.is_empty()
            && g.iter().all(|(shard, x)| {
                u16::try_from(*shard)
                    .ok()
                    .and_then(|s| placement.preferred_leader(s))
                    == Some(x.leader)
            });
        if balanced {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shards are not led by their preferred leaders: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
