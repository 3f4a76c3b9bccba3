//! The `Cluster` gRPC service (join — refused when the cluster-wide
//! settings differ —, watch, elect, set-state, remove, progress, status,
//! backup: `backup.rs`) and
//! the client calls nodes and edges make to it (`drain.rs` has the
//! operator's drain).

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::control::{Control, Error, ShardStatus};
use super::directory::{Directory, NodeRecord, NodeState};
use crate::id::ShardId;
use crate::rpc::pb;
use crate::rpc::pb::cluster_client::ClusterClient;
use crate::rpc::tls::Tls;
use crate::storage::Db;

/// Metadata key carrying the metadata leader's address on a redirect.
pub const META_LEADER: &str = "roost-meta-leader";
/// The message of the redirect a node that is not the metadata leader
/// answers with.
const NOT_LEADER: &str = "not the metadata leader";
/// How often a watch stream repeats the view with fresh leader hints.
const REFRESH: Duration = Duration::from_secs(1);

/// Serves the `Cluster` service over a node's control plane.
pub struct ClusterService {
    control: Control,
    shards: u16,
    /// The node's database, read by `Backup`.
    db: Db,
    /// Cancelled when the node starts shutting down: `Watch` streams end
    /// (`UNAVAILABLE`), so edges and nodes watch another node rather than
    /// this one's view, which stops changing.
    closing: CancellationToken,
}

impl ClusterService {
    pub fn new(
        control: Control,
        shards: u16,
        db: Db,
        closing: CancellationToken,
    ) -> pb::cluster_server::ClusterServer<Self> {
        pb::cluster_server::ClusterServer::new(ClusterService {
            control,
            shards,
            db,
            closing,
        })
    }
}

fn to_status(e: Error) -> Status {
    match e {
        Error::NotLeader { leader } => {
            let mut status = Status::failed_precondition(NOT_LEADER);
            if let Some(addr) = leader.and_then(|a| a.parse().ok()) {
                status.metadata_mut().insert(META_LEADER, addr);
            }
            status
        }
        Error::UnknownNode(_) => Status::not_found(e.to_string()),
        Error::Refused(_) => Status::failed_precondition(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

fn record_of(info: pb::NodeInfo) -> Result<NodeRecord, Status> {
    if info.id == 0 || info.addr.is_empty() {
        return Err(Status::invalid_argument(
            "a node needs an id ≥ 1 and an address",
        ));
    }
    Ok(NodeRecord {
        id: info.id,
        addr: info.addr,
        state: if info.draining {
            NodeState::Draining
        } else {
            NodeState::Active
        },
    })
}

/// The wire form of the cluster view.
pub fn view(
    dir: &Directory,
    shards: u16,
    replication: usize,
    leaders: &[ShardStatus],
) -> pb::ClusterView {
    pb::ClusterView {
        nodes: dir
            .nodes
            .values()
            .map(|n| pb::NodeInfo {
                id: n.id,
                addr: n.addr.clone(),
                draining: n.state == NodeState::Draining,
            })
            .collect(),
        shards: u32::from(shards),
        replication: replication as u32,
        leaders: leaders
            .iter()
            .map(|s| pb::ShardLeader {
                shard: u32::from(s.shard),
                node: s.leader,
                voters: s.voters.clone(),
                learners: s.learners.clone(),
            })
            .collect(),
    }
}

type ViewStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterView, Status>> + Send>>;
type BackupStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let req = req.into_inner();
        let node = req
            .node
            .ok_or_else(|| Status::invalid_argument("missing node"))?;
        let ours = settings(self.shards, self.control.replication());
        if let Some(why) = settings_mismatch(&ours, &req.settings.unwrap_or_default()) {
            tracing::warn!(node_id = node.id, addr = %node.addr, %why, "join refused");
            return Err(Status::failed_precondition(format!(
                "node {} cannot join: {why}",
                node.id
            )));
        }
        let record = record_of(node)?;
        tracing::info!(node_id = record.id, addr = %record.addr, "node asks to join");
        self.control.admit(record).await.map_err(to_status)?;
        Ok(Response::new(pb::JoinReply {}))
    }

    type WatchStream = ViewStream;

    async fn watch(
        &self,
        _req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // A draining or removed node leaves the metadata group sooner or
        // later, and nothing tells it when: its directory may be stale, so
        // it serves no view (edges and nodes ask another node).
        let me = self.control.node_id();
        if !self.control.directory().borrow().is_active(me) {
            return Err(Status::unavailable(format!(
                "node {me} is not an active member of the cluster"
            )));
        }
        let (tx, rx) = mpsc::channel(4);
        let control = self.control.clone();
        let shards = self.shards;
        let closing = self.closing.clone();
        tokio::spawn(async move {
            let mut dir = control.directory();
            loop {
                let current = dir.borrow_and_update().clone();
                if closing.is_cancelled() {
                    let _ = tx
                        .send(Err(Status::unavailable(format!(
                            "node {me} is shutting down"
                        ))))
                        .await;
                    return;
                }
                if !current.is_active(me) {
                    // Draining now: the watcher goes to another node.
                    let _ = tx
                        .send(Err(Status::unavailable(format!(
                            "node {me} is no longer an active member of the cluster"
                        ))))
                        .await;
                    return;
                }
                let v = view(&current, shards, control.replication(), &control.leaders());
                if tx.send(Ok(v)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = dir.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(REFRESH) => {}
                    _ = closing.cancelled() => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn elect(
        &self,
        req: Request<pb::ElectRequest>,
    ) -> Result<Response<pb::ElectReply>, Status> {
        let shard = ShardId::try_from(req.into_inner().shard)
            .map_err(|_| Status::invalid_argument("shard out of range"))?;
        self.control.elect(shard).await.map_err(to_status)?;
        Ok(Response::new(pb::ElectReply {}))
    }

    async fn set_state(
        &self,
        req: Request<pb::SetStateRequest>,
    ) -> Result<Response<pb::SetStateReply>, Status> {
        let req = req.into_inner();
        let state = if req.draining {
            NodeState::Draining
        } else {
            NodeState::Active
        };
        self.control
            .set_state(req.node, state)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SetStateReply {}))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveReply>, Status> {
        let node = req.into_inner().node;
        self.control.remove(node).await.map_err(to_status)?;
        Ok(Response::new(pb::RemoveReply {}))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(
            super::status::local(&self.control, self.shards).await,
        ))
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let shard = ShardId::try_from(req.into_inner().shard)
            .ok()
            .filter(|s| *s < self.shards)
            .ok_or_else(|| Status::invalid_argument("shard out of range"))?;
        let chunks = super::backup::serve(&self.control, &self.db, shard).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn progress(
        &self,
        req: Request<pb::ProgressRequest>,
    ) -> Result<Response<pb::ProgressReply>, Status> {
        let node = req.into_inner().node;
        let shards = self
            .control
            .progress_of(node)
            .into_iter()
            .map(|p| pb::ShardProgress {
                shard: u32::from(p.shard),
                leader_last_index: p.leader_last_index,
                matched_index: p.matched_index,
            })
            .collect();
        Ok(Response::new(pb::ProgressReply { shards }))
    }
}

/// The cluster-wide settings of a node started with `shards` shards and
/// `replication` replicas, on this build's storage format.
pub fn settings(shards: u16, replication: usize) -> pb::ClusterSettings {
    pb::ClusterSettings {
        shards: u32::from(shards),
        replication: u32::try_from(replication).unwrap_or(u32::MAX),
        format_version: crate::storage::keys::FORMAT_VERSION,
    }
}

/// Why a node with settings `theirs` may not join a cluster with `ours`
/// (a field of 0 was not sent: a node older than this check).
pub fn settings_mismatch(
    ours: &pb::ClusterSettings,
    theirs: &pb::ClusterSettings,
) -> Option<String> {
    let mut why = Vec::new();
    let mut compare = |what: &str, flag: &str, ours: u32, theirs: u32| {
        if theirs != 0 && theirs != ours {
            why.push(format!(
                "it has {what} {theirs}, the cluster {ours} ({flag})"
            ));
        }
    };
    compare(
        "shards",
        "--shards / node.shards",
        ours.shards,
        theirs.shards,
    );
    compare(
        "replication",
        "--replication",
        ours.replication,
        theirs.replication,
    );
    compare(
        "storage format version",
        "a different roost release",
        ours.format_version,
        theirs.format_version,
    );
    (!why.is_empty()).then(|| why.join("; "))
}

/// A client to a node's `Cluster` service at `addr` (host:port), over
/// `tls` (plain or mutual TLS).
pub async fn connect(addr: &str, tls: &Tls) -> Result<ClusterClient<Channel>, crate::rpc::Error> {
    let endpoint = tls
        .endpoint(addr)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| crate::rpc::Error::connect(addr, &e))?;
    Ok(ClusterClient::new(channel))
}

/// Joins the cluster through `seeds` (over `tls`), following redirects to
/// the metadata leader, until admitted or `deadline` passes.
pub async fn join(
    seeds: &[String],
    me: &NodeRecord,
    settings: pb::ClusterSettings,
    deadline: Duration,
    tls: &Tls,
) -> Result<(), String> {
    let req = pb::JoinRequest {
        node: Some(pb::NodeInfo {
            id: me.id,
            addr: me.addr.clone(),
            draining: false,
        }),
        settings: Some(settings),
    };
    on_meta_leader(seeds, deadline, tls, |mut client| {
        let req = req.clone();
        async move { client.join(req).await.map(|_| ()) }
    })
    .await
}

/// Whether a refusal is final: retrying the same call elsewhere cannot
/// change the answer.
fn is_final(status: &Status) -> bool {
    match status.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => true,
        tonic::Code::FailedPrecondition => status.message() != NOT_LEADER,
        _ => false,
    }
}

/// Runs `call` on the metadata leader, found through `seeds` (over `tls`)
/// and the redirects nodes answer with, until it succeeds, is refused for
/// good (not found, invalid, or a precondition the leader itself refused),
/// or `deadline` passes; the error is the last answer.
pub async fn on_meta_leader<T, F, Fut>(
    seeds: &[String],
    deadline: Duration,
    tls: &Tls,
    mut call: F,
) -> Result<T, String>
where
    F: FnMut(ClusterClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let until = tokio::time::Instant::now() + deadline;
    let mut candidates: Vec<String> = seeds.to_vec();
    let mut tried: BTreeSet<String> = BTreeSet::new();
    let mut last_error = String::from("no seeds");
    while tokio::time::Instant::now() < until {
        let Some(addr) = candidates.first().cloned() else {
            candidates = seeds.to_vec();
            tried.clear();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        candidates.remove(0);
        tried.insert(addr.clone());
        match connect(&addr, tls).await {
            Ok(client) => match call(client).await {
                Ok(v) => return Ok(v),
                Err(status) => {
                    last_error = format!("{addr}: {}", status.message());
                    if is_final(&status) {
                        return Err(last_error);
                    }
                    if let Some(leader) = status
                        .metadata()
                        .get(META_LEADER)
                        .and_then(|v| v.to_str().ok())
                        .filter(|l| !tried.contains(*l))
                    {
                        candidates.insert(0, leader.to_owned());
                    }
                }
            },
            Err(e) => last_error = format!("{addr}: {e}"),
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_with_other_cluster_settings_is_refused() {
        let ours = settings(64, 3);
        assert_eq!(settings_mismatch(&ours, &settings(64, 3)), None);
        // Not sent (an older node): nothing to compare.
        assert_eq!(
            settings_mismatch(&ours, &pb::ClusterSettings::default()),
            None
        );
        let why = settings_mismatch(&ours, &settings(32, 5)).expect("refused");
        assert!(why.contains("shards 32, the cluster 64"), "{why}");
        assert!(why.contains("replication 5, the cluster 3"), "{why}");
        let other_format = pb::ClusterSettings {
            format_version: 99,
            ..settings(64, 3)
        };
        let why = settings_mismatch(&ours, &other_format).expect("refused");
        assert!(why.contains("storage format version 99"), "{why}");
    }
}
