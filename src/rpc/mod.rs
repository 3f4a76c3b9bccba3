//! The rpc layer: gRPC between Roost processes and for other services in
//! the cluster.
//!
//! Owns: the generated protobuf types ([`pb`], from `proto/roost/v1/`), Raft
//! traffic between nodes ([`raft`]: by shard over one channel per peer), the
//! public object API served by a node over its object runtime
//! ([`objects`]), the client that implements
//! [`crate::object::ObjectClient`] over it ([`remote`]), the one
//! translation between protobuf messages, gRPC statuses and the object
//! layer's types (`convert`), and the one place that builds gRPC servers
//! and client endpoints, plain or with mutual TLS ([`tls`]), with the role
//! check every server runs ([`auth`]); beside every server's own services,
//! gRPC health and reflection ([`introspect`]) and per-call metrics
//! ([`metered`]).
//!
//! Never: runs objects, touches storage or decides anything itself (it
//! carries messages to the layer that owns them), or lets protobuf types
//! leak into the layers below.

pub mod auth;
pub mod certs;
pub mod codec;
mod convert;
#[cfg(test)]
mod convert_props;
mod fetch_many;
pub mod introspect;
pub mod metered;
mod mux;
#[cfg(test)]
pub(crate) use convert_props::cases as test_cases;
pub mod objects;
pub mod raft;
pub mod reattach;
pub mod remote;
pub mod tls;

pub use raft::{GrpcTransport, RaftService, serve};

/// Generated protobuf types and tonic stubs of `proto/roost/v1/`.
pub mod pb {
    tonic::include_proto!("roost.v1");
}

use std::path::PathBuf;
use std::time::Duration;

/// Errors of the rpc layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gRPC server stopped with an error.
    #[error("serve gRPC: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// An endpoint URI is invalid.
    #[error("invalid gRPC endpoint `{uri}`: {source}")]
    Endpoint {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A peer's address does not make a valid URI.
    #[error("peer address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A TLS file could not be read, or holds no PEM block of its kind.
    #[error("TLS {what} {}: {message}", path.display())]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The TLS material does not make a valid server or client
    /// configuration, or an address does not fit it.
    #[error("TLS {what} configuration: {message}")]
    Tls { what: &'static str, message: String },
    /// No connection could be made to a peer.
    #[error("connect to {addr}: {message}")]
    Connect { addr: String, message: String },
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

impl Error {
    /// A failed connection to `addr`, with every cause (tonic's own message
    /// is only "transport error"; the TLS or socket error is its source).
    pub fn connect(addr: &str, error: &tonic::transport::Error) -> Error {
        Error::Connect {
            addr: addr.to_owned(),
            message: tls::chain(error),
        }
    }
}
