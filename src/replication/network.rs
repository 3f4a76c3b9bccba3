//! How a shard's Raft reaches its peers: openraft's network traits over a
//! small [`Transport`] that the cluster layer implements (gRPC, later).
//!
//! Owns only the adaptation; never opens sockets itself. The one transport
//! here, [`NoPeers`], is for single-voter groups (`roost dev`): such a group
//! never sends an RPC, and if it ever tried (a misconfigured membership) every
//! call fails as `Unreachable`, which openraft retries with backoff.

use std::future::Future;
use std::sync::Arc;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use super::types::{NodeId, TypeConfig};
use crate::id::ShardId;

/// The RPC error of openraft's calls, for a given remote error type.
pub type RpcError<E = openraft::error::Infallible> =
    RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// One shard's view of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub shard: ShardId,
    pub id: NodeId,
    pub node: BasicNode,
}

/// Sends a shard's Raft RPCs to a peer node. The receiving side hands them
/// to that node's `Raft` of the same shard (`ShardHandle::raft`).
pub trait Transport: Send + Sync + 'static {
    fn append_entries(
        &self,
        peer: &Peer,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<Output = Result<AppendEntriesResponse<NodeId>, RpcError>> + Send;

    fn vote(
        &self,
        peer: &Peer,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> impl Future<Output = Result<VoteResponse<NodeId>, RpcError>> + Send;

    fn install_snapshot(
        &self,
        peer: &Peer,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> impl Future<
        Output = Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>>,
    > + Send;

    /// The node-level liveness ping of peer `target` at `node`, from `me`
    /// (`liveness.rs`): its answer, or `Err` if it did not answer within
    /// `timeout`.
    fn ping(
        &self,
        me: NodeId,
        target: NodeId,
        node: &BasicNode,
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<super::liveness::Pong, String>> + Send;
}

/// The transport of a node that has no peers: every call is `Unreachable`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPeers;

#[derive(Debug, thiserror::Error)]
#[error("no transport to node {0}: this node runs single-voter groups only")]
struct NoTransport(NodeId);

fn unreachable<E: std::error::Error>(peer: &Peer) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&NoTransport(peer.id)))
}

impl Transport for NoPeers {
    async fn append_entries(
        &self,
        peer: &Peer,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        Err(unreachable(peer))
    }

    async fn vote(
        &self,
        peer: &Peer,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        Err(unreachable(peer))
    }

    async fn install_snapshot(
        &self,
        peer: &Peer,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        Err(unreachable(peer))
    }

    async fn ping(
        &self,
        _me: NodeId,
        target: NodeId,
        _node: &BasicNode,
        _timeout: std::time::Duration,
    ) -> Result<super::liveness::Pong, String> {
        Err(NoTransport(target).to_string())
    }
}

/// openraft's network factory for one shard.
pub struct NetworkFactory<T> {
    shard: ShardId,
    transport: Arc<T>,
}

impl<T> NetworkFactory<T> {
    pub fn new(shard: ShardId, transport: Arc<T>) -> Self {
        NetworkFactory { shard, transport }
    }
}

/// openraft's client of one peer, for one shard.
pub struct PeerClient<T> {
    peer: Peer,
    transport: Arc<T>,
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for NetworkFactory<T> {
    type Network = PeerClient<T>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient<T> {
        PeerClient {
            peer: Peer {
                shard: self.shard,
                id: target,
                node: node.clone(),
            },
            transport: self.transport.clone(),
        }
    }
}

impl<T: Transport> RaftNetwork<TypeConfig> for PeerClient<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        self.transport.append_entries(&self.peer, rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.transport
            .install_snapshot(&self.peer, rpc, option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        self.transport.vote(&self.peer, rpc, option).await
    }
}
