//! The HTTP and WebSocket front door.
//!
//! Owns: accepting client connections (axum), turning each request into an
//! [`object::Request`] for the worker (body limit, client IP), and bridging
//! an accepted WebSocket between the client and its object
//! (`websocket.rs`). Holds no state and no storage: every decision about
//! data is the object's, reached through an [`ObjectClient`].

mod http;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderName;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::object::{Env, ObjectClient, Worker};

/// How the edge treats clients.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// Believe this header for the client IP (set only behind a proxy you
    /// trust); otherwise the socket peer's address is used.
    pub trusted_proxy_header: Option<HeaderName>,
    /// Largest request body accepted; larger ones get 413.
    pub max_request_body_bytes: usize,
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
            max_request_body_bytes: 1 << 20,
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
        namespaces: Vec<Arc<str>>,
        opts: EdgeOptions,
    ) -> std::io::Result<Edge> {
        let addr = listener.local_addr()?;
        let sockets_closing = CancellationToken::new();
        let sockets = TaskTracker::new();
        let shared = Arc::new(Shared {
            worker,
            env: Env::new(client.clone(), namespaces),
            client,
            opts,
            sockets_closing: sockets_closing.clone(),
            sockets: sockets.clone(),
        });
        let app: Router = http::router(shared);
        let stop_accepting = CancellationToken::new();
        let stop = stop_accepting.clone();
        let server = tokio::spawn(async move {
            // No Nagle: a small frame must not wait for the client's
            // delayed ACK of the previous one (~40 ms).
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY");
                }
            });
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        });
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
