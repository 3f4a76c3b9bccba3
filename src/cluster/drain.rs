//! Scale-in from outside the cluster (`roost node drain`): mark a node
//! draining through the metadata leader, watch the shard groups' leaders
//! until none of them has the node as a member, then forget the node.
//!
//! Only calls the `Cluster` service. It never changes a group itself: the
//! control loop of each shard's leader moves the replicas (replacement
//! first, see `plan`), and the node's successors take its leaderships.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::service::{self, on_meta_leader};
use crate::id::ShardId;
use crate::ring::NodeId;
use crate::rpc::pb;
use crate::rpc::tls::Tls;

/// How often the drain looks at the shard groups.
const POLL: Duration = Duration::from_millis(500);
/// How long one node may take to answer with its view.
const VIEW_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a drain did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mark node {node} {state}: {message}")]
    SetState {
        node: NodeId,
        state: &'static str,
        message: String,
    },
    #[error("node {node} is not drained after {waited:?}: {progress}")]
    Timeout {
        node: NodeId,
        waited: Duration,
        progress: Progress,
    },
    #[error("remove node {node} from the directory: {message}")]
    Remove { node: NodeId, message: String },
}

/// What a drain asks for.
#[derive(Clone, Debug)]
pub struct DrainOptions {
    /// Nodes to reach the cluster through (any of them; the draining node
    /// itself is fine too, it redirects to the metadata leader).
    pub seeds: Vec<String>,
    pub node: NodeId,
    /// How long to wait for the replicas to move (marking the node
    /// draining may take up to 10 s more when the metadata group is busy
    /// electing a leader).
    pub timeout: Duration,
    /// Forget the node once it holds no replicas.
    pub remove: bool,
    /// Plain or mutual TLS, as the cluster's gRPC expects.
    pub tls: Tls,
}

/// How far a drain has come, from the shard leaders' reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Shards whose group still has the node as a voter or a learner.
    pub holding: Vec<ShardId>,
    /// Shards no answering node reports the members of (no known leader,
    /// or a leader that did not answer, such as the draining node itself).
    pub unknown: Vec<ShardId>,
    /// Nodes that answered with a view (the draining node never does).
    pub answered: usize,
}

impl Progress {
    /// The node is in no shard group, as every shard's leader reports.
    pub fn done(&self) -> bool {
        self.holding.is_empty() && self.unknown.is_empty() && self.answered > 0
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.answered == 0 {
            return write!(f, "no node answers with a cluster view");
        }
        if self.holding.is_empty() && self.unknown.is_empty() {
            return write!(f, "in no shard group");
        }
        write!(
            f,
            "still in {} shard groups {:?}",
            self.holding.len(),
            self.holding
        )?;
        if !self.unknown.is_empty() {
            write!(
                f,
                "; no answer yet from the leaders of shards {:?}",
                self.unknown
            )?;
        }
        Ok(())
    }
}

/// Drains `opts.node`: marks it draining, waits until no shard group has
/// it as a member (calling `report` whenever that changes), then removes
/// it from the directory unless told not to.
pub async fn drain(opts: &DrainOptions, mut report: impl FnMut(&Progress)) -> Result<(), Error> {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    // Learn every node's address while the seeds still answer: once it
    // drains, the node serves no view, and it may be the only seed given.
    let mut seeds: BTreeSet<String> = opts.seeds.iter().cloned().collect();
    for seed in &opts.seeds {
        if let Some(view) = view_of(seed, &opts.tls).await {
            seeds.extend(
                view.nodes
                    .iter()
                    .filter(|n| n.id != opts.node)
                    .map(|n| n.addr.clone()),
            );
            break;
        }
    }
    let seeds: Vec<String> = seeds.into_iter().collect();
    let set_state_timeout = opts.timeout.max(Duration::from_secs(10));
    set_state(&seeds, opts.node, true, set_state_timeout, &opts.tls).await?;
    let mut last: Option<Progress> = None;
    loop {
        let progress = progress(&seeds, opts.node, &opts.tls).await;
        if last.as_ref() != Some(&progress) {
            report(&progress);
        }
        if progress.done() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                node: opts.node,
                waited: started.elapsed(),
                progress,
            });
        }
        last = Some(progress);
        tokio::time::sleep(POLL).await;
    }
    if opts.remove {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(10));
        let node = opts.node;
        on_meta_leader(&seeds, left, &opts.tls, |mut client| async move {
            client.remove(pb::RemoveRequest { node }).await.map(|_| ())
        })
        .await
        .map_err(|message| Error::Remove { node, message })?;
    }
    Ok(())
}

/// Marks `node` draining, or active again, through the metadata leader.
pub async fn set_state(
    seeds: &[String],
    node: NodeId,
    draining: bool,
    timeout: Duration,
    tls: &Tls,
) -> Result<(), Error> {
    on_meta_leader(seeds, timeout, tls, |mut client| async move {
        client
            .set_state(pb::SetStateRequest { node, draining })
            .await
            .map(|_| ())
    })
    .await
    .map_err(|message| Error::SetState {
        node,
        state: if draining { "draining" } else { "active" },
        message,
    })
}

/// The first view `addr` answers with, if it answers in time.
async fn view_of(addr: &str, tls: &Tls) -> Option<pb::ClusterView> {
    let first = async {
        let mut client = service::connect(addr, tls).await.ok()?;
        let mut stream = client.watch(pb::WatchRequest {}).await.ok()?.into_inner();
        stream.message().await.ok()?
    };
    tokio::time::timeout(VIEW_TIMEOUT, first).await.ok()?
}

/// Asks every node the seeds know of (but `node`) for its view, and sums
/// up what the shard leaders among them report about `node`.
async fn progress(seeds: &[String], node: NodeId, tls: &Tls) -> Progress {
    let mut addrs: BTreeSet<String> = seeds.iter().cloned().collect();
    let mut views: BTreeMap<String, pb::ClusterView> = BTreeMap::new();
    let mut silent: BTreeSet<String> = BTreeSet::new();
    // The seeds first; then the nodes their views list.
    while let Some(addr) = addrs
        .iter()
        .find(|a| !views.contains_key(*a) && !silent.contains(*a))
        .cloned()
    {
        match view_of(&addr, tls).await {
            Some(view) => {
                for n in &view.nodes {
                    if n.id != node {
                        addrs.insert(n.addr.clone());
                    }
                }
                views.insert(addr, view);
            }
            None => {
                silent.insert(addr);
            }
        }
    }
    summarize(node, views.values())
}

/// What the leaders' reports in `views` say about `node`.
fn summarize<'a>(node: NodeId, views: impl Iterator<Item = &'a pb::ClusterView>) -> Progress {
    let mut shards = 0u32;
    let mut answered = 0usize;
    let mut reported: BTreeSet<u32> = BTreeSet::new();
    let mut holding: BTreeSet<u32> = BTreeSet::new();
    for view in views {
        answered += 1;
        shards = shards.max(view.shards);
        // A leader reports its group's members; others leave them empty.
        for l in view.leaders.iter().filter(|l| !l.voters.is_empty()) {
            reported.insert(l.shard);
            if l.node == node || l.voters.contains(&node) || l.learners.contains(&node) {
                holding.insert(l.shard);
            }
        }
    }
    let to_shard = |s: u32| ShardId::try_from(s).unwrap_or(ShardId::MAX);
    Progress {
        holding: holding.into_iter().map(to_shard).collect(),
        unknown: (0..shards)
            .filter(|s| !reported.contains(s))
            .map(to_shard)
            .collect(),
        answered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(shard: u32, node: NodeId, voters: &[NodeId], learners: &[NodeId]) -> pb::ShardLeader {
        pb::ShardLeader {
            shard,
            node,
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        }
    }

    fn view(leaders: Vec<pb::ShardLeader>) -> pb::ClusterView {
        pb::ClusterView {
            nodes: Vec::new(),
            shards: 3,
            replication: 3,
            leaders,
        }
    }

    #[test]
    fn a_node_in_any_group_is_not_drained() {
        let views = [
            view(vec![leader(0, 1, &[1, 2, 3], &[])]),
            view(vec![
                leader(1, 2, &[1, 2, 3], &[4]),
                // A follower's hint carries no members and proves nothing.
                leader(2, 4, &[], &[]),
            ]),
        ];
        let p = summarize(4, views.iter());
        assert_eq!(p.holding, vec![1]);
        assert_eq!(p.unknown, vec![2]);
        assert!(!p.done());
    }

    #[test]
    fn drained_when_every_leader_reports_groups_without_it() {
        let views = [view(vec![
            leader(0, 1, &[1, 2, 3], &[]),
            leader(1, 2, &[1, 2, 3], &[]),
            leader(2, 3, &[1, 2, 3], &[]),
        ])];
        assert!(summarize(4, views.iter()).done());
        assert!(!summarize(4, [].iter()).done(), "nobody answered");
    }
}
