//! The HTTP and WebSocket front door.
//!
//! Owns: accepting client connections with their limits (`server.rs`:
//! header, idle and connection caps, also used by the admin listener;
//! `limits.rs`: the counters), turning each request into an
//! [`object::Request`] for the worker (body size and read time, client IP:
//! `client_ip.rs`, WebSocket upgrade rate), and bridging an accepted
//! WebSocket between the client and its object (`websocket.rs`). Holds no
//! state and no storage: every decision about data is the object's, reached
//! through an [`ObjectClient`].

pub mod client_ip;
mod http;
pub mod limits;
pub mod server;
mod websocket;

pub use client_ip::{IpBucket, TrustedProxies};
pub use server::ServerOptions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::object::{Env, ObjectClient, Worker};

/// How the edge treats clients.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// Believe this header for the client IP when the peer is one of
    /// `trusted_proxies`; otherwise the socket peer's address is used.
    pub trusted_proxy_header: Option<HeaderName>,
    /// The proxies whose `trusted_proxy_header` is believed (and which are
    /// exempt from the per-address connection cap).
    pub trusted_proxies: TrustedProxies,
    /// Largest request body accepted; larger ones get 413.
    pub max_request_body_bytes: usize,
    /// Longest time to receive a request body; slower ones get 408.
    pub body_read_timeout: Duration,
    /// WebSocket upgrades one client address may make a minute (a burst of
    /// as many); more get 429. 0: no limit.
    pub max_upgrades_per_ip_per_minute: u32,
    /// The connection limits of the listener.
    pub server: ServerOptions,
    /// Largest WebSocket message accepted; larger ones close with 1009.
    pub max_message_bytes: usize,
    /// How often the edge pings each client socket.
    pub heartbeat_interval: Duration,
    /// A socket that has not answered for this long after a ping is dead.
    pub heartbeat_timeout: Duration,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            trusted_proxy_header: None,
            trusted_proxies: TrustedProxies::default(),
            max_request_body_bytes: 1 << 20,
            body_read_timeout: Duration::from_secs(30),
            max_upgrades_per_ip_per_minute: 120,
            server: ServerOptions::default(),
            max_message_bytes: 1 << 20,
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(10),
        }
    }
}

/// Shared by every request handler of one edge.
struct Shared<W> {
    worker: W,
    env: Env,
    client: Arc<dyn ObjectClient>,
    opts: EdgeOptions,
    /// Cancelled to close every client socket with 1001.
    sockets_closing: CancellationToken,
    /// The tasks bridging client sockets; waited for at shutdown.
    sockets: TaskTracker,
    /// WebSocket upgrades per client address.
    upgrades: limits::RateLimit,
}

/// A running edge: its address and how to stop it.
pub struct Edge {
    addr: SocketAddr,
    stop_accepting: CancellationToken,
    sockets_closing: CancellationToken,
    sockets: TaskTracker,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Edge {
    /// Serves `worker` on `listener`, reaching objects through `client`.
    pub fn start<W: Worker>(
        listener: TcpListener,
        worker: W,
        client: Arc<dyn ObjectClient>,
        namespaces: impl Into<crate::object::Namespaces>,
        opts: EdgeOptions,
    ) -> std::io::Result<Edge> {
        let addr = listener.local_addr()?;
        let sockets_closing = CancellationToken::new();
        let sockets = TaskTracker::new();
        let server_opts = opts.server.clone();
        let shared = Arc::new(Shared {
            worker,
            env: Env::new(client.clone(), namespaces),
            client,
            upgrades: limits::RateLimit::new(
                opts.max_upgrades_per_ip_per_minute,
                std::time::Instant::now(),
            ),
            opts,
            sockets_closing: sockets_closing.clone(),
            sockets: sockets.clone(),
        });
        let app: Router = http::router(shared);
        let stop_accepting = CancellationToken::new();
        let server = tokio::spawn(server::serve(
            listener,
            app,
            server_opts,
            stop_accepting.clone(),
        ));
        Ok(Edge {
            addr,
            stop_accepting,
            sockets_closing,
            sockets,
            server,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes client sockets with 1001, and waits (up to
    /// `grace`) for in-flight requests and sockets to finish.
    pub async fn shutdown(self, grace: Duration) {
        self.stop_accepting.cancel();
        self.sockets_closing.cancel();
        self.sockets.close();
        let wait = async {
            self.sockets.wait().await;
            let _ = self.server.await;
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(?grace, "edge did not drain in time");
        }
    }
}
