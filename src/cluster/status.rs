//! The cluster's status for operators (`roost cluster status`, a node's
//! `/admin/cluster`): every node's own report (`Cluster.Status`: its
//! directory, version and Raft groups), put together into one picture —
//! nodes, each shard's leader, term, log positions and lag, draining nodes
//! — with warnings for what needs an operator: a shard without a leader
//! backed by a quorum, a node that does not answer, a replica behind.
//!
//! [`local`] reads this node's groups; [`gather`] asks every node; the
//! verdict ([`summarize`]) is pure. Read-only.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::ServerState;
use serde::Serialize;

use super::catchup::MAX_LAG;
use super::control::Control;
use super::directory::NodeState;
use super::service;
use crate::ring::NodeId;
use crate::rpc::pb;
use crate::rpc::tls::Tls;

/// How long one node may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// This node's report: its directory and every Raft group it is in.
pub async fn local(control: &Control, shards: u16) -> pb::NodeStatus {
    let me = control.node_id();
    let dir = control.directory().borrow().clone();
    let mut replicas = Vec::new();
    for (i, group) in control.groups().into_iter().enumerate() {
        let raft = group.raft().clone();
        let commit = raft
            .with_raft_state(|st| st.committed.map(|l| l.index))
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
            ServerState::Learner => "learner",
            ServerState::Follower if learners.contains(&me) => "learner",
            ServerState::Follower => "follower",
        };
        let members = match (&m.replication, m.state) {
            (Some(progress), ServerState::Leader) => progress
                .iter()
                .filter(|(node, _)| **node != me)
                .map(|(node, log)| pb::MemberProgress {
                    node: *node,
                    matched_index: log.map(|l| l.index),
                })
                .collect(),
            _ => Vec::new(),
        };
        replicas.push(pb::ReplicaStatus {
            // The metadata group comes first (`Control::groups`).
            shard: (i > 0).then(|| u32::from(group.id())),
            role: role.to_owned(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: commit,
            apply_index: m.last_applied.map_or(0, |l| l.index),
            voters,
            learners,
            quorum_acked: group.is_leader(),
            members,
        });
    }
    pb::NodeStatus {
        id: me,
        addr: dir.addr(me).unwrap_or_default().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        shards: u32::from(shards),
        replication: control.replication() as u32,
        nodes: dir
            .nodes
            .values()
            .map(|n| pb::NodeInfo {
                id: n.id,
                addr: n.addr.clone(),
                draining: n.state == NodeState::Draining,
            })
            .collect(),
        replicas,
        format_version: crate::storage::keys::FORMAT_VERSION,
    }
}

/// Asks the first of `seeds` that answers for its directory, then every
/// node in it (concurrently) for its report, and sums them up.
pub async fn gather(seeds: &[String], tls: &Tls) -> Result<ClusterStatus, String> {
    let mut first = None;
    let mut last_error = "no seeds".to_owned();
    for seed in seeds {
        match ask(seed, tls).await {
            Ok(status) => {
                first = Some(status);
                break;
            }
            Err(e) => last_error = format!("{seed}: {e}"),
        }
    }
    let first = first.ok_or(last_error)?;
    let asks = first.nodes.iter().map(|n| {
        let (n, tls) = (n.clone(), tls.clone());
        let known = (n.id == first.id).then(|| first.clone());
        async move {
            let answer = match known {
                Some(s) => Ok(s),
                None => ask(&n.addr, &tls).await,
            };
            (n, answer)
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    Ok(summarize(&first, answers))
}

async fn ask(addr: &str, tls: &Tls) -> Result<pb::NodeStatus, String> {
    let call = async {
        let mut client = service::connect(addr, tls)
            .await
            .map_err(|e| e.to_string())?;
        client
            .status(pb::StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| s.message().to_owned())
    };
    tokio::time::timeout(ASK_TIMEOUT, call)
        .await
        .map_err(|_| "no answer".to_owned())?
}

/// The cluster as its nodes report it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClusterStatus {
    pub shards: u32,
    pub replication: u32,
    pub nodes: Vec<NodeView>,
    /// The metadata group (the directory's Raft group).
    pub metadata: GroupView,
    pub groups: Vec<GroupView>,
    /// Ids of the nodes being drained.
    pub draining: Vec<NodeId>,
    /// What needs an operator's attention; empty when all is well.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeView {
    pub id: NodeId,
    pub addr: String,
    /// "active" or "draining" (the directory's word).
    pub state: &'static str,
    /// Whether it answered.
    pub reachable: bool,
    pub version: Option<String>,
    /// Object shards it leads with a quorum's acknowledgement.
    pub leads: usize,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GroupView {
    /// The object shard; `None` for the metadata group.
    pub shard: Option<u32>,
    /// The node leading it with a quorum's acknowledgement, if any answered.
    pub leader: Option<NodeId>,
    pub term: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// The leader's commit and apply index (the highest reported, without one).
    pub commit_index: u64,
    pub apply_index: u64,
    /// Each replica: its role and how far it is behind the leader's log.
    pub replicas: Vec<ReplicaView>,
    /// The largest lag of a member, in log entries (by the leader's count).
    pub lag: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReplicaView {
    pub node: NodeId,
    pub role: String,
    pub apply_index: u64,
    /// Entries it lacks of the leader's log; `None` without a leader's report.
    pub lag: Option<u64>,
}

/// Puts the reports together. `first` is the node whose directory lists
/// the nodes; `answers` pairs each listed node with its report or error.
pub fn summarize(
    first: &pb::NodeStatus,
    answers: Vec<(pb::NodeInfo, Result<pb::NodeStatus, String>)>,
) -> ClusterStatus {
    let mut warnings = Vec::new();
    let mut nodes = Vec::new();
    let mut reports: BTreeMap<NodeId, &pb::NodeStatus> = BTreeMap::new();
    for (info, answer) in &answers {
        let leads = answer.as_ref().map_or(0, |s| {
            s.replicas
                .iter()
                .filter(|r| r.shard.is_some() && r.quorum_acked)
                .count()
        });
        if let Err(e) = answer {
            warnings.push(format!(
                "node {} ({}) does not answer: {e}",
                info.id, info.addr
            ));
        }
        nodes.push(NodeView {
            id: info.id,
            addr: info.addr.clone(),
            state: if info.draining { "draining" } else { "active" },
            reachable: answer.is_ok(),
            version: answer.as_ref().ok().map(|s| s.version.clone()),
            leads,
            error: answer.as_ref().err().cloned(),
        });
        if let Ok(s) = answer {
            reports.insert(info.id, s);
            if s.shards != first.shards || s.replication != first.replication {
                warnings.push(format!(
                    "node {} runs with {} shards and replication {}, node {} with {} and {}",
                    info.id, s.shards, s.replication, first.id, first.shards, first.replication
                ));
            }
        }
    }
    let mut versions: Vec<&str> = nodes.iter().filter_map(|n| n.version.as_deref()).collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.len() > 1 {
        warnings.push(format!(
            "nodes run different versions: {}",
            versions.join(", ")
        ));
    }
    let draining: Vec<NodeId> = nodes
        .iter()
        .filter(|n| n.state == "draining")
        .map(|n| n.id)
        .collect();
    let metadata = group(None, &reports, &mut warnings);
    let groups = (0..first.shards)
        .map(|s| group(Some(s), &reports, &mut warnings))
        .collect();
    ClusterStatus {
        shards: first.shards,
        replication: first.replication,
        nodes,
        metadata,
        groups,
        draining,
        warnings,
    }
}

/// One group from every node's report of it.
fn group(
    shard: Option<u32>,
    reports: &BTreeMap<NodeId, &pb::NodeStatus>,
    warnings: &mut Vec<String>,
) -> GroupView {
    let name = shard.map_or_else(|| "the metadata group".to_owned(), |s| format!("shard {s}"));
    let replicas: Vec<(NodeId, &pb::ReplicaStatus)> = reports
        .iter()
        .filter_map(|(id, s)| {
            s.replicas
                .iter()
                .find(|r| r.shard == shard)
                .filter(|r| r.voters.contains(id) || r.learners.contains(id))
                .map(|r| (*id, r))
        })
        .collect();
    for (id, r) in &replicas {
        if r.role == "leader" && !r.quorum_acked {
            warnings.push(format!(
                "node {id} leads {name} in term {} without a quorum's acknowledgement",
                r.term
            ));
        }
    }
    let leader = replicas
        .iter()
        .filter(|(_, r)| r.role == "leader" && r.quorum_acked)
        .max_by_key(|(_, r)| r.term)
        .map(|(id, r)| (*id, *r));
    let Some((leader_id, lead)) = leader else {
        warnings.push(format!("{name} has no leader backed by a quorum"));
        let best = replicas
            .iter()
            .max_by_key(|(_, r)| (r.term, r.commit_index));
        return GroupView {
            shard,
            leader: None,
            term: best.map_or(0, |(_, r)| r.term),
            voters: best.map(|(_, r)| r.voters.clone()).unwrap_or_default(),
            learners: best.map(|(_, r)| r.learners.clone()).unwrap_or_default(),
            commit_index: best.map_or(0, |(_, r)| r.commit_index),
            apply_index: best.map_or(0, |(_, r)| r.apply_index),
            replicas: replicas
                .iter()
                .map(|(id, r)| ReplicaView {
                    node: *id,
                    role: r.role.clone(),
                    apply_index: r.apply_index,
                    lag: None,
                })
                .collect(),
            lag: 0,
        };
    };
    let lag_of = |node: NodeId| -> Option<u64> {
        if node == leader_id {
            return Some(0);
        }
        let m = lead.members.iter().find(|m| m.node == node)?;
        Some(
            lead.last_log_index
                .saturating_sub(m.matched_index.unwrap_or(0)),
        )
    };
    let mut views = Vec::new();
    let mut max_lag = 0;
    for node in lead.voters.iter().chain(&lead.learners) {
        let lag = lag_of(*node);
        if let Some(l) = lag {
            max_lag = max_lag.max(l);
            if l > MAX_LAG {
                warnings.push(format!("node {node} is {l} entries behind on {name}"));
            }
        }
        let reported = replicas.iter().find(|(id, _)| id == node).map(|(_, r)| *r);
        views.push(ReplicaView {
            node: *node,
            role: reported.map_or_else(|| "unknown".to_owned(), |r| r.role.clone()),
            apply_index: reported.map_or(0, |r| r.apply_index),
            lag,
        });
    }
    let answering_voters = lead
        .voters
        .iter()
        .filter(|v| replicas.iter().any(|(id, _)| id == *v))
        .count();
    if answering_voters * 2 <= lead.voters.len() {
        warnings.push(format!(
            "{name}: only {answering_voters} of its {} voters answer, no quorum beyond the leader's last acknowledgement",
            lead.voters.len()
        ));
    }
    GroupView {
        shard,
        leader: Some(leader_id),
        term: lead.term,
        voters: lead.voters.clone(),
        learners: lead.learners.clone(),
        commit_index: lead.commit_index,
        apply_index: lead.apply_index,
        replicas: views,
        lag: max_lag,
    }
}

impl ClusterStatus {
    /// The status as text tables: nodes, groups, warnings.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let ids = |v: &[NodeId]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
            }
        };
        let _ = writeln!(
            out,
            "{} shards, replication {}\n\n{:<5} {:<28} {:<9} {:<10} {:<9} {:>5}",
            self.shards,
            self.replication,
            "NODE",
            "ADDRESS",
            "STATE",
            "REACHABLE",
            "VERSION",
            "LEADS"
        );
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "{:<5} {:<28} {:<9} {:<10} {:<9} {:>5}",
                n.id,
                n.addr,
                n.state,
                if n.reachable { "yes" } else { "no" },
                n.version.as_deref().unwrap_or("-"),
                n.leads
            );
        }
        let _ = writeln!(
            out,
            "\n{:<6} {:<6} {:>5} {:<10} {:<9} {:>8} {:>8} {:>6}",
            "SHARD", "LEADER", "TERM", "VOTERS", "LEARNERS", "COMMIT", "APPLIED", "LAG"
        );
        for g in std::iter::once(&self.metadata).chain(&self.groups) {
            let _ = writeln!(
                out,
                "{:<6} {:<6} {:>5} {:<10} {:<9} {:>8} {:>8} {:>6}",
                g.shard.map_or_else(|| "meta".to_owned(), |s| s.to_string()),
                g.leader.map_or_else(|| "-".to_owned(), |l| l.to_string()),
                g.term,
                ids(&g.voters),
                ids(&g.learners),
                g.commit_index,
                g.apply_index,
                g.lag
            );
        }
        if !self.draining.is_empty() {
            let _ = writeln!(out, "\ndraining: {}", ids(&self.draining));
        }
        if self.warnings.is_empty() {
            let _ = writeln!(out, "\nno warnings");
        } else {
            let _ = writeln!(out, "\nWARNINGS");
            for w in &self.warnings {
                let _ = writeln!(out, "- {w}");
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
