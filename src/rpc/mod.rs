//! gRPC between Roost processes and for other services in the cluster.
//!
//! Owns: the generated protobuf types ([`pb`]), the public object API
//! (`proto/roost/v1/object.proto`) served by a node over its object runtime
//! ([`objects`]), the client that implements [`crate::object::ObjectClient`]
//! over it ([`remote`]), and the one translation between protobuf messages,
//! gRPC statuses and the object layer's types (`convert`).
//!
//! Never: runs objects or touches storage itself (the object runtime does),
//! or lets protobuf types leak into the layers below.

mod convert;
pub mod objects;
pub mod remote;

/// Generated protobuf types (kept at the rpc boundary).
pub mod pb {
    tonic::include_proto!("roost.v1");
}

/// Why a gRPC server or client could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("serve gRPC: {0}")]
    Serve(#[source] tonic::transport::Error),
    #[error("invalid gRPC endpoint `{uri}`: {source}")]
    Endpoint {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
}
