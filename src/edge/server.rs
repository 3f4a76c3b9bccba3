//! Accepting and serving HTTP connections with limits that slow or greedy
//! clients cannot get around: the edge's listener and the admin listener
//! both run here (`axum::serve` has no timer, so it can enforce none).
//!
//! Each connection is served by hyper-util's auto (HTTP/1.1 + HTTP/2)
//! builder with a timer:
//! - **headers**: a client gets `header_read_timeout` to send a request's
//!   headers (hyper's HTTP/1 timer, which also runs while a kept-alive
//!   connection waits for its next request), and a new connection must
//!   deliver its first request within it whatever the protocol (a client
//!   dribbling the HTTP/2 preface is closed too);
//! - **idle**: a connection with no request in progress for
//!   `idle_timeout` is closed gracefully (HTTP/2 gets a GOAWAY);
//! - **connections**: at most `max_connections` open, and
//!   `max_connections_per_ip` from one client address (an IPv6 /64;
//!   trusted proxies are exempt). A connection over a cap is answered, not
//!   reset: 503 `overloaded` or 429 `too_many_connections` with a JSON body
//!   and `Connection: close` (while at most [`MAX_REFUSING`] are being
//!   refused at once; past that the socket is closed unanswered).
//!
//! A WebSocket keeps its connection's slot until it closes (the slot lives
//! in the I/O object hyper hands to the upgrade). Request bodies are timed
//! by the handler that reads them (`http.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::client_ip::TrustedProxies;
use super::limits::{Connections, Refusal, Slot};

/// Most connections being refused (answered 503/429) at once.
pub const MAX_REFUSING: usize = 256;
/// How long a refused connection gets to send its request and read the
/// refusal.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// The limits of one listener.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Time to send a request's headers (and a new connection's first
    /// request; and, on HTTP/1.1, the next request of a kept-alive one).
    pub header_read_timeout: Duration,
    /// A connection with no request in progress this long is closed.
    pub idle_timeout: Duration,
    /// Open connections, overall.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// Peers exempt from the per-address cap (trusted proxies).
    pub exempt: TrustedProxies,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            exempt: TrustedProxies::default(),
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets open
/// connections finish their requests (HTTP/1 closes when idle, HTTP/2
/// gets a GOAWAY) and returns once they have. The app sees each request
/// with a [`ConnectInfo<SocketAddr>`] of its peer.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServerOptions,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let connections = Connections::new(
        opts.max_connections,
        opts.max_connections_per_ip,
        opts.exempt.clone(),
    );
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let builder = Arc::new(builder(opts.header_read_timeout));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        // No Nagle: a small frame must not wait for the client's delayed
        // ACK of the previous one (~40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        match connections.admit(peer.ip()) {
            Ok(slot) => {
                let conn = Conn {
                    tcp,
                    peer,
                    slot,
                    app: app.clone(),
                    builder: builder.clone(),
                    opts: opts.clone(),
                    stop: stop.clone(),
                };
                tracker.spawn(conn.run());
            }
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                crate::telemetry::metrics::http_connection_refused(refusal.label());
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tracker.spawn(async move {
                        refuse(tcp, refusal).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// The builder every connection of a listener is served with.
fn builder(header_read_timeout: Duration) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256);
    b
}

/// Errors of `accept` that concern one connection only; others (e.g. out
/// of file descriptors) are waited out for a moment, as axum does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One admitted connection.
struct Conn {
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    app: Router,
    builder: Arc<Builder<TokioExecutor>>,
    opts: ServerOptions,
    stop: CancellationToken,
}

impl Conn {
    async fn run(self) {
        let Conn {
            tcp,
            peer,
            slot,
            app,
            builder,
            opts,
            stop,
        } = self;
        let activity = Arc::new(Activity::default());
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let busy = activity.begin();
                req.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move {
                    let resp = app.oneshot(req).await;
                    drop(busy);
                    resp
                }
            })
        };
        let io = TokioIo::new(Slotted {
            io: tcp,
            _slot: slot,
        });
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let started = tokio::time::Instant::now();
        let mut idle_since = started;
        let tick = (opts.header_read_timeout.min(opts.idle_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(tick);
        let mut closing = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        let timed_out = e
                            .downcast_ref::<hyper::Error>()
                            .is_some_and(hyper::Error::is_timeout);
                        if timed_out {
                            // hyper's HTTP/1 header timer.
                            crate::telemetry::metrics::http_connection_timed_out("header");
                        }
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                    return;
                }
                () = stop.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = ticker.tick() => {
                    let now = tokio::time::Instant::now();
                    let (requests, in_progress) = activity.get();
                    if requests == 0 && now - started >= opts.header_read_timeout {
                        tracing::debug!(%peer, "no request within the header timeout; closing");
                        crate::telemetry::metrics::http_connection_timed_out("header");
                        return;
                    }
                    if in_progress > 0 {
                        idle_since = now;
                    } else if !closing && now - idle_since >= opts.idle_timeout {
                        tracing::debug!(%peer, "idle connection; closing");
                        crate::telemetry::metrics::http_connection_timed_out("idle");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// What a connection's requests are doing, for its watchdog.
#[derive(Default)]
struct Activity {
    /// Requests started on the connection.
    requests: AtomicUsize,
    /// Requests whose response is not yet produced.
    in_progress: AtomicUsize,
}

/// A request in progress; dropping it ends it.
struct Busy(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn get(&self) -> (usize, usize) {
        (
            self.requests.load(Ordering::Relaxed),
            self.in_progress.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers every request on a connection over a cap with the refusal,
/// then closes it; gives up after [`REFUSAL_TIME`].
async fn refuse(tcp: TcpStream, refusal: Refusal) {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIME)
        .keep_alive(false);
    b.http2().timer(TokioTimer::new());
    let service = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
        Ok::<_, Infallible>(refusal_response(refusal))
    });
    let conn = b.serve_connection(TokioIo::new(tcp), service);
    let _ = tokio::time::timeout(REFUSAL_TIME, conn).await;
}

/// The answer to a connection over a cap.
pub fn refusal_response(refusal: Refusal) -> Response<axum::body::Body> {
    let (status, code, message) = match refusal {
        Refusal::Full { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server has too many open connections; try again later".to_owned(),
        ),
        Refusal::PerIp { max } => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!("too many open connections from your address (at most {max})"),
        ),
    };
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut resp = Response::new(axum::body::Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

impl Refusal {
    /// The `reason` label of `roost_http_connections_refused_total`.
    fn label(&self) -> &'static str {
        match self {
            Refusal::Full { .. } => "max_connections",
            Refusal::PerIp { .. } => "max_connections_per_ip",
        }
    }
}

/// A connection's socket carrying its [`Slot`]: the slot is freed when
/// the socket is dropped, after an upgrade too.
struct Slotted {
    io: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(opts: ServerOptions) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/", get(|| async { "ok" }));
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, app, opts, stop.clone()));
        (addr, stop)
    }

    async fn read_all(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_answered_503_with_json() {
        let (addr, stop) = start(ServerOptions {
            max_connections: 2,
            ..ServerOptions::default()
        })
        .await;
        let _a = TcpStream::connect(addr).await.expect("a");
        let _b = TcpStream::connect(addr).await.expect("b");
        let mut c = TcpStream::connect(addr).await.expect("c");
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let resp = read_all(&mut c).await;
        assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
        assert!(resp.contains(r#""error":"overloaded""#), "{resp}");
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{resp}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed() {
        let (addr, stop) = start(ServerOptions {
            idle_timeout: Duration::from_millis(300),
            ..ServerOptions::default()
        })
        .await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // The response, then the close of the idle connection (well before
        // read_all's own 5 s deadline).
        let started = std::time::Instant::now();
        let resp = read_all(&mut s).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "closed when idle"
        );
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.ends_with("ok"), "{resp}");
        stop.cancel();
    }

    #[tokio::test]
    async fn stopping_ends_serve_once_connections_are_done() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/", get(|| async { "ok" }));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, ServerOptions::default(), stop.clone()));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0);
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "serve returns after stop");
    }
}
