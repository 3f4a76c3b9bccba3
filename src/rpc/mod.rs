//! The rpc layer: tonic services and clients between nodes.
//!
//! Owns the protobuf envelopes ([`pb`], generated from `proto/roost/v1/`),
//! the gRPC servers and the per-peer channels. Generated code never leaks
//! past this module: the layers below see only their own traits (e.g.
//! [`replication::Transport`](crate::replication::Transport)), and callers
//! above get plain Rust types. Never decides anything itself: it carries
//! messages to the layer that owns them.

pub mod raft;

pub use raft::{GrpcTransport, RaftService, serve};

/// Generated protobuf types and tonic stubs of `proto/roost/v1/`.
pub mod pb {
    tonic::include_proto!("roost.v1");
}

use std::time::Duration;

/// Errors of the rpc layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gRPC server stopped with an error.
    #[error("serve gRPC: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// A peer's address does not make a valid URI.
    #[error("peer address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A message could not be encoded, or the peer's answer not decoded.
    #[error("{what}: {source}")]
    Codec {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    /// The peer did not answer before the call's deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The call failed with a gRPC status (from the peer, or from the
    /// channel when it could not reach the peer).
    #[error("gRPC status {}: {}", .0.code(), .0.message())]
    Status(#[source] Box<tonic::Status>),
}
