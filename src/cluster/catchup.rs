//! Whether this node's replicas have caught up with their groups, for its
//! `/readyz`: every shard the ring places here has this node as a voter
//! (not a learner still copying the log), a known leader, and — by that
//! leader's own count — at most [`MAX_LAG`] log entries still to receive.
//! A shard this node's Raft names itself leader of counts only while a
//! quorum acknowledges it (the lease `ShardHandle::is_leader` keeps): after
//! a whole-cluster crash, openraft 0.9 restores a node that led before as
//! leader at once, alone, and that must not make it ready.
//! Asks the leaders (`Cluster.Progress`) once a second; changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::control::{Control, Membership};
use super::service;
use crate::id::ShardId;
use crate::ring::NodeId;
use crate::rpc::pb;
use crate::rpc::tls::Tls;

/// Log entries a replica may still be missing and count as caught up: a
/// healthy follower under load trails its leader by the entries in flight.
pub const MAX_LAG: u64 = 100;
/// How often the leaders are asked.
const EVERY: Duration = Duration::from_secs(1);
/// How long one leader may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks this node's replicas once a second until `stop`; the receiver
/// holds the last verdict (`Err` says which shards are behind and why).
pub fn spawn(
    control: Control,
    tls: Tls,
    stop: CancellationToken,
) -> watch::Receiver<Result<(), String>> {
    let (tx, rx) = watch::channel(Err("replicas not checked yet".to_owned()));
    tokio::spawn(async move {
        let mut unconfirmed = BTreeSet::new();
        let mut ready_once = false;
        let mut clients = Clients::default();
        loop {
            let verdict = check(&control, &tls, &mut clients, &mut unconfirmed, ready_once).await;
            ready_once |= verdict.is_ok();
            let _previous = tx.send_replace(verdict);
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
    rx
}

/// One check of every shard the ring places on this node. `unconfirmed`
/// carries the shards this node's Raft led without a quorum's
/// acknowledgement from one check to the next: only a shard still so a
/// check later counts as behind (a newly elected leader has no
/// acknowledgement for its first few milliseconds; a leader alone after a
/// crash never gets one). That grace is only for a node that was ready
/// before: until then (`ready_once` false) such a shard counts as behind at
/// once, so a node restarted alone is never ready on its first check.
async fn check(
    control: &Control,
    tls: &Tls,
    clients: &mut Clients,
    unconfirmed: &mut BTreeSet<ShardId>,
    ready_once: bool,
) -> Result<(), String> {
    let me = control.node_id();
    // Until this node's copy of the directory lists it, the ring places
    // nothing here, and "nothing to catch up" would be a false yes.
    if !control.directory().borrow().is_active(me) {
        return Err(format!("node {me} is not an active member yet"));
    }
    let members: BTreeMap<ShardId, Membership> = control
        .memberships()
        .into_iter()
        .map(|m| (m.shard, m))
        .collect();
    let placed = control.placed_here();
    let confirmed: BTreeSet<ShardId> = control.led_shards().into_iter().map(|(s, _)| s).collect();
    let before = std::mem::take(unconfirmed);
    let mut behind: Vec<String> = Vec::new();
    let mut ask: BTreeMap<NodeId, Vec<ShardId>> = BTreeMap::new();
    for shard in &placed {
        match members.get(shard) {
            None => behind.push(format!("shard {shard}: no replica here yet")),
            Some(m) if !m.voter => behind.push(format!("shard {shard}: still a learner")),
            Some(Membership { leader: None, .. }) => {
                behind.push(format!("shard {shard}: no known leader"));
            }
            Some(Membership {
                leader: Some(leader),
                ..
            }) => {
                if *leader != me {
                    ask.entry(*leader).or_default().push(*shard);
                } else if !confirmed.contains(shard) {
                    unconfirmed.insert(*shard);
                    if before.contains(shard) || !ready_once {
                        behind.push(format!(
                            "shard {shard}: leads it without a quorum's acknowledgement"
                        ));
                    }
                }
            }
        }
    }
    let directory = control.directory().borrow().clone();
    clients.0.retain(|addr, _| {
        ask.keys()
            .any(|l| directory.addr(*l) == Some(addr.as_str()))
    });
    for (leader, shards) in ask {
        let reply = match directory.addr(leader) {
            Some(addr) => progress(addr, tls, me, clients).await,
            None => Err(format!("leader {leader} is not in the directory")),
        };
        for shard in shards {
            if let Err(why) = lag_verdict(shard, leader, &reply) {
                behind.push(why);
            }
        }
    }
    if behind.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = behind.iter().take(3).map(String::as_str).collect();
    Err(format!(
        "{} of the {} shards placed here have not caught up ({}{})",
        behind.len(),
        placed.len(),
        shown.join("; "),
        if behind.len() > shown.len() {
            "; …"
        } else {
            ""
        }
    ))
}

/// Whether `shard`'s replica here is caught up by `leader`'s answer.
fn lag_verdict(
    shard: ShardId,
    leader: NodeId,
    reply: &Result<pb::ProgressReply, String>,
) -> Result<(), String> {
    let reply = reply
        .as_ref()
        .map_err(|e| format!("shard {shard}: leader {leader}: {e}"))?;
    let p = reply
        .shards
        .iter()
        .find(|p| p.shard == u32::from(shard))
        .ok_or_else(|| format!("shard {shard}: node {leader} no longer leads it"))?;
    let matched = p
        .matched_index
        .ok_or_else(|| format!("shard {shard}: holds nothing yet"))?;
    let lag = p.leader_last_index.saturating_sub(matched);
    if lag > MAX_LAG {
        return Err(format!("shard {shard}: {lag} entries behind"));
    }
    Ok(())
}

/// The leaders' `Cluster` clients by address, kept from one check to the
/// next for the leaders still asked: connecting for every question was a
/// TLS handshake per leader a second on every node (benches/profile.md).
/// A client whose question fails is dropped, so the next check connects
/// anew.
#[derive(Default)]
struct Clients(HashMap<String, pb::cluster_client::ClusterClient<Channel>>);

async fn progress(
    addr: &str,
    tls: &Tls,
    me: NodeId,
    clients: &mut Clients,
) -> Result<pb::ProgressReply, String> {
    let ask = async {
        let mut client = match clients.0.get(addr) {
            Some(client) => client.clone(),
            None => {
                let client = service::connect(addr, tls)
                    .await
                    .map_err(|e| e.to_string())?;
                clients.0.insert(addr.to_owned(), client.clone());
                client
            }
        };
        client
            .progress(pb::ProgressRequest { node: me })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| s.message().to_owned())
    };
    let reply = tokio::time::timeout(ASK_TIMEOUT, ask)
        .await
        .map_err(|_| "no answer".to_owned())
        .and_then(|reply| reply);
    if reply.is_err() {
        clients.0.remove(addr);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(last: u64, matched: Option<u64>) -> Result<pb::ProgressReply, String> {
        Ok(pb::ProgressReply {
            shards: vec![pb::ShardProgress {
                shard: 3,
                leader_last_index: last,
                matched_index: matched,
            }],
        })
    }

    #[test]
    fn a_replica_is_caught_up_within_the_lag() {
        assert_eq!(lag_verdict(3, 1, &reply(500, Some(500))), Ok(()));
        assert_eq!(lag_verdict(3, 1, &reply(500, Some(400))), Ok(()));
        let far = lag_verdict(3, 1, &reply(500, Some(399))).expect_err("101 behind");
        assert!(far.contains("101 entries behind"), "{far}");
        assert!(lag_verdict(3, 1, &reply(500, None)).is_err());
        assert!(
            lag_verdict(4, 1, &reply(500, Some(500))).is_err(),
            "not led"
        );
        assert!(lag_verdict(3, 1, &Err("no answer".into())).is_err());
    }
}
