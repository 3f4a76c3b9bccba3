//! The actor runtime: Durable Objects on top of the replicated shards.
//!
//! Owns: the object SDK ([`DurableObject`], [`Context`], [`Storage`],
//! [`WebSocket`]), one executor per live object (`executor`), the output
//! gate (`outbox`), the layered storage view (`view`), sockets that outlive
//! executors (`socket`), the alarm scheduler (`alarms`), the registry that
//! activates and evicts objects (`runtime`), class migrations (renamed
//! classes' storage identities, deleted classes reclaimed: `migrations`,
//! `runtime/reclaim.rs`), and the worker-side API for reaching objects
//! ([`Worker`], [`Env`], [`Stub`], [`ObjectClient`]).
//!
//! Never: speaks HTTP or gRPC on a socket (that is the edge and rpc), or
//! writes RocksDB directly (every write goes through a shard's Raft log).

mod alarms;
mod budget;
mod calls;
#[cfg(test)]
mod calls_tests;
mod class;
mod client;
mod context;
mod executor;
mod gate;
mod http;
mod journal;
pub mod migrations;
#[cfg(test)]
mod migrations_tests;
mod outbox;
mod replay;
pub mod rpc;
mod runtime;
mod socket;
#[cfg(test)]
mod sockets_tests;
mod storage;
#[cfg(test)]
mod tests;
mod vars;
mod view;
mod worker;

pub use alarms::{FIRST_BACKOFF, MAX_RETRIES, now_ms};
pub use class::{AlarmInfo, DurableObject, Result};
pub use client::{CallResult, FetchOutcome, ObjectClient};
pub use context::Context;
pub use http::{
    ClientIp, HandlerError, Request, Response, Route, error_response, is_websocket_upgrade, json,
    query_param, text,
};
pub use journal::JOURNAL_ENV;
pub use migrations::{Migrations, Namespaces};
pub(crate) use runtime::WeakRuntime;
pub use runtime::{Bindings, Runtime, RuntimeOptions};
pub use socket::{
    FrameReceiver, FrameSender, Message, Registration, ServerFrame, SocketId, SocketLink, StableId,
    WebSocket, frame_channel,
};
pub use storage::{Limits, ListOptions, Storage, StorageError};
pub use vars::{SECRET_PREFIX, VAR_PREFIX, Vars};
pub use worker::{Env, Namespace, Stub, UpgradeLink, Worker};

use crate::id::ShardId;

/// Errors from calling an object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no object class is bound to `{0}`")]
    UnknownNamespace(String),
    #[error("invalid binding name `{0}` (1..=255 bytes)")]
    InvalidBinding(String),
    /// The class migrations conflict with the bound classes.
    #[error("class migrations: {0}")]
    Migration(#[from] migrations::Error),
    #[error("this node does not lead shard {shard}")]
    NotOwner { shard: ShardId },
    #[error("the object is overloaded: too many queued events")]
    Overloaded,
    #[error("commit failed: {0}")]
    Commit(#[source] crate::replication::Error),
    #[error("the object was reset before it could answer")]
    Reset,
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The node that runs the object could not be reached or answered with
    /// something this node cannot name more precisely (a remote client).
    #[error("the object's node is unavailable: {0}")]
    Unavailable(String),
    /// No connection to the object's node could be made, so the call was
    /// certainly never sent: trying another node cannot run it twice.
    #[error("the object's node could not be reached: {0}")]
    Unreachable(String),
    /// A call from one object to another got no answer in time; objects
    /// run one event at a time, so a call cycle ends this way (`calls.rs`).
    #[error(
        "the call to {object} got no answer within {after:?} (a call cycle — A calls B, which calls A — cannot be served: each object runs one event at a time)"
    )]
    CallTimeout {
        object: String,
        after: std::time::Duration,
    },
}

impl Error {
    /// The HTTP status a caller should see for this error.
    pub fn status(&self) -> ::http::StatusCode {
        use ::http::StatusCode;
        match self {
            Error::UnknownNamespace(_) | Error::InvalidBinding(_) | Error::Migration(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Error::NotOwner { .. }
            | Error::Overloaded
            | Error::Commit(_)
            | Error::Reset
            | Error::ShuttingDown
            | Error::Unavailable(_)
            | Error::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::CallTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownNamespace(_) => "unknown_namespace",
            Error::InvalidBinding(_) => "invalid_binding",
            Error::Migration(_) => "invalid_migration",
            Error::NotOwner { .. } => "not_owner",
            Error::Overloaded => "overloaded",
            Error::Commit(_) => "commit_failed",
            Error::Reset => "object_reset",
            Error::ShuttingDown => "shutting_down",
            Error::Unavailable(_) => "unavailable",
            Error::Unreachable(_) => "unreachable",
            Error::CallTimeout { .. } => "call_timeout",
        }
    }

    /// The response a client sees: the stable JSON error body.
    pub fn to_response(&self) -> Response {
        error_response(self.status(), self.code(), &self.to_string())
    }
}
