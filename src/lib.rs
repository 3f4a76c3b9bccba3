//! Roost: Cloudflare-style Durable Objects, self-hosted, replicated by Raft
//! on RocksDB.
//!
//! The map, bottom-up (a module never imports from one above it):
//!
//! - [`id`]: object ids, namespaces and the shard an id maps to. Pure.
//! - [`storage`]: the node's RocksDB, the typed keyspace, and how an
//!   object's mutations become RocksDB writes. Knows nothing of Raft.
//! - [`replication`]: one openraft group per shard over that RocksDB; the
//!   group-commit proposer; read barriers; leadership.
//! - [`object`]: the Durable Object SDK and runtime: executors with input
//!   and output gates, the storage API, sockets, alarms, the registry, and
//!   the worker-side stubs.
//! - [`rpc`]: gRPC: Raft traffic between nodes (by shard over one channel
//!   per peer), the public object API served over a node's runtime, and the
//!   client that reaches objects on another node; generated code stays in it.
//! - [`edge`]: axum HTTP and WebSocket front door with its limits (timeouts,
//!   connection caps, upgrade rate, trusted proxies), also serving the admin
//!   listener; no state.
//! - [`app`]: the built-in app (the seed's ChatRoom, RateLimiter, Counter
//!   and router).
//! - [`config`], [`telemetry`], [`node`]: layered configuration; logs,
//!   traces and metrics (`telemetry::metrics` names every metric, and any
//!   layer may record through it); and the wiring that starts and stops a
//!   node, with its admin server.
//! - [`cli`]: the command line (`dev`, `node`, `edge`, operator commands)
//!   for any [`cli::App`]; the `roost` binary is it with the built-in app.
//!
//! The invariants every change must keep are in ARCHITECTURE.md.

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod id;
pub mod node;
pub mod object;
pub mod replication;
pub mod ring;
pub mod rpc;
pub mod storage;
pub mod telemetry;
