//! PLACEHOLDER — replaced at merge by the real node (which wires storage,
//! replication, objects and the HTTP edge, with a narrated startup and an
//! ordered shutdown).
//!
//! It exists only so that `main.rs` and the CLI tests compile and run on the
//! `cli` branch. It exposes exactly the API `main.rs` relies on: `start`
//! binds `http.listen` (so `http_addr` reports the real port, also for
//! `127.0.0.1:0`) and serves nothing; `shutdown` releases the socket.

use std::net::SocketAddr;

use crate::config::Config;

/// Why the node could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bind HTTP listener on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A single-process Roost node (placeholder: holds a bound socket).
pub struct DevNode {
    listener: tokio::net::TcpListener,
    http_addr: SocketAddr,
}

impl DevNode {
    /// Binds the HTTP address; serves nothing (placeholder).
    pub async fn start(config: Config) -> Result<DevNode, Error> {
        let addr = config.http.listen;
        let bind_error = |source| Error::Bind { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?;
        let http_addr = listener.local_addr().map_err(bind_error)?;
        Ok(DevNode {
            listener,
            http_addr,
        })
    }

    /// The address the HTTP server is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops the node (placeholder: closes the socket).
    pub async fn shutdown(self) -> Result<(), Error> {
        drop(self.listener);
        Ok(())
    }
}
