//! Bridges a client's WebSocket to its object's socket.
//!
//! Client frames go to the object client; frames the object released go to
//! the client. The edge also keeps the connection honest: it pings on a
//! heartbeat and treats a silent client as gone (1006 to the object),
//! refuses oversized messages with 1009, answers close frames, and closes
//! every socket with 1001 when the node shuts down.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::Shared;
use crate::object::{Message, ServerFrame, SocketLink, Worker};
use crate::telemetry::metrics;

/// Bytes read from a client's socket at a time. tungstenite zero-fills its
/// whole read buffer before each read, so every open socket keeps all of
/// it resident: 1 KiB instead of 4 KiB saves 3 KiB per idle socket. A
/// larger message is still read whole (its header reserves room for it),
/// in reads of at most this many bytes.
const READ_BUFFER: usize = 1024;
/// Bytes of frames gathered before they are written to a client's socket
/// (a batch of queued frames goes out in one write).
const WRITE_BUFFER: usize = 16 * 1024;
/// Most frames written to a client's socket in one batch.
const MAX_BATCH: usize = 64;

/// Completes the upgrade and spawns the bridge.
pub(super) fn upgrade<W: Worker>(
    shared: Arc<Shared<W>>,
    up: WebSocketUpgrade,
    link: SocketLink,
) -> Response {
    let limit = shared.opts.max_message_bytes;
    let client = shared.client.clone();
    let (object, socket) = (link.object.clone(), link.socket);
    let tracker = shared.sockets.clone();
    // Small buffers: an idle socket then costs a few KiB instead of the
    // 2 × 128 KiB tungstenite reserves by default (the write buffer only
    // grows as a batch needs it); a large message is read in more, smaller
    // reads.
    up.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_failed_upgrade(move |e| {
            tracing::debug!(error = %e, "websocket upgrade failed");
            let _ = client.socket_closed(&object, socket, 1006, "upgrade failed".into());
        })
        .on_upgrade(move |ws| tracker.track_future(bridge(shared, ws, link)))
}

/// How a bridged socket ended, and so what the object is told.
enum End {
    /// The client sent a close frame, or vanished (1006).
    Client(u16, String),
    /// A message over the size limit.
    TooBig,
    /// No answer to heartbeats, or a send timed out.
    Dead,
    /// The node is shutting down.
    Shutdown,
    /// The object closed it, or dropped it; it already knows.
    Object,
}

async fn bridge<W: Worker>(shared: Arc<Shared<W>>, ws: WebSocket, mut link: SocketLink) {
    let opts = &shared.opts;
    let client = &shared.client;
    let (object, socket) = (link.object.clone(), link.socket);
    let binding = object.namespace.clone();
    let _open = metrics::websocket_open(&binding);
    let (mut tx, mut rx) = ws.split();
    let mut heartbeat = tokio::time::interval(opts.heartbeat_interval);
    heartbeat.tick().await;
    let mut last_seen = Instant::now();

    let end = loop {
        let out: Option<WsMessage> = tokio::select! {
            frame = link.outgoing.recv() => match frame {
                Some(ServerFrame::Message { message, .. }) => Some(outgoing(&binding, message)),
                Some(ServerFrame::Close { code, reason }) => {
                    let _ = send(&mut tx, close(code, &reason), opts.heartbeat_timeout).await;
                    break End::Object;
                }
                // State for re-attaching; the client never sees it.
                Some(ServerFrame::Attachment(_)) => None,
                // Only a client that cannot re-attach hands this on (a
                // cluster's router re-attaches the socket itself).
                Some(ServerFrame::Moved { .. }) => {
                    let _ = send(&mut tx, owner_lost(), opts.heartbeat_timeout).await;
                    break End::Object;
                }
                None => {
                    // Dropped by the object: the client did not keep up,
                    // or the object was reset.
                    let _ = send(&mut tx, close(1013, "try again later"), opts.heartbeat_timeout).await;
                    break End::Object;
                }
            },
            msg = rx.next() => {
                last_seen = Instant::now();
                let forward = match msg {
                    Some(Ok(WsMessage::Text(t))) => Message::Text(t.as_str().to_owned()),
                    Some(Ok(WsMessage::Binary(b))) => Message::Binary(b),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (f.code, f.reason.as_str().to_owned()))
                            .unwrap_or((1005, String::new()));
                        break End::Client(code, reason);
                    }
                    Some(Err(e)) if is_too_big(&e) => {
                        let _ = send(&mut tx, close(1009, "message too big"), opts.heartbeat_timeout).await;
                        break End::TooBig;
                    }
                    Some(Err(_)) | None => break End::Client(1006, String::new()),
                };
                let size = match &forward {
                    Message::Text(t) => t.len(),
                    Message::Binary(b) => b.len(),
                };
                metrics::websocket_frame(&binding, "in", size);
                if let Err(e) = client.socket_message(&object, socket, forward) {
                    tracing::warn!(%object, error = %e, "cannot deliver socket message");
                    let _ = send(&mut tx, close(1011, "object unavailable"), opts.heartbeat_timeout).await;
                    break End::Client(1006, "object unavailable".into());
                }
                None
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > opts.heartbeat_interval + opts.heartbeat_timeout {
                    break End::Dead;
                }
                Some(WsMessage::Ping(Default::default()))
            }
            _ = shared.sockets_closing.cancelled() => {
                let _ = send(&mut tx, close(1001, "server shutting down"), opts.heartbeat_timeout).await;
                break End::Shutdown;
            }
        };
        let Some(msg) = out else { continue };
        // Frames the object queued meanwhile go out with this one, in one
        // write: a busy room's members get its broadcasts in batches.
        let mut batch = vec![msg];
        let mut ended = None;
        while batch.len() < MAX_BATCH {
            match link.outgoing.try_recv() {
                Ok(ServerFrame::Message { message, .. }) => batch.push(outgoing(&binding, message)),
                Ok(ServerFrame::Close { code, reason }) => {
                    ended = Some(close(code, &reason));
                    break;
                }
                Ok(ServerFrame::Attachment(_)) => {}
                Ok(ServerFrame::Moved { .. }) => {
                    ended = Some(owner_lost());
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    ended = Some(close(1013, "try again later"));
                    break;
                }
            }
        }
        if !send_all(&mut tx, batch, opts.heartbeat_timeout).await {
            break End::Dead;
        }
        if let Some(close) = ended {
            let _ = send(&mut tx, close, opts.heartbeat_timeout).await;
            break End::Object;
        }
    };

    metrics::websocket_closed(&binding, end.label());
    let told = match end {
        End::Client(code, reason) => client.socket_closed(&object, socket, code, reason),
        End::TooBig => client
            .socket_error(&object, socket, "message too big".into())
            .and_then(|()| client.socket_closed(&object, socket, 1009, "message too big".into())),
        End::Dead => client.socket_closed(&object, socket, 1006, "heartbeat timeout".into()),
        End::Shutdown => client.socket_closed(&object, socket, 1001, "server shutting down".into()),
        End::Object => Ok(()),
    };
    if let Err(e) = told {
        tracing::debug!(%object, error = %e, "cannot tell object its socket closed");
    }
    // Flush our close frame (or the reply to the client's) and end.
    let _ = tokio::time::timeout(opts.heartbeat_timeout, tx.close()).await;
}

impl End {
    /// The `end` label of `roost_websocket_closes_total`.
    fn label(&self) -> &'static str {
        match self {
            End::Client(..) => "client",
            End::TooBig => "too_big",
            End::Dead => "dead",
            End::Shutdown => "shutdown",
            End::Object => "object",
        }
    }
}

/// The close for a socket whose owner changed and that could not be
/// re-attached: come back, as to a restarting service.
fn owner_lost() -> WsMessage {
    close(1012, "owner lost; reconnect")
}

fn close(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Sends with a deadline; `false` if the client is gone or too slow.
/// A frame from the object, counted, as the client gets it.
fn outgoing(binding: &Arc<str>, m: Message) -> WsMessage {
    match m {
        Message::Text(t) => {
            metrics::websocket_frame(binding, "out", t.len());
            WsMessage::Text(t.into())
        }
        Message::Binary(b) => {
            metrics::websocket_frame(binding, "out", b.len());
            WsMessage::Binary(b)
        }
    }
}

/// Writes `msgs` and flushes once, within `deadline`.
async fn send_all(
    tx: &mut futures_util::stream::SplitSink<WebSocket, WsMessage>,
    msgs: Vec<WsMessage>,
    deadline: std::time::Duration,
) -> bool {
    let write = async {
        for m in msgs {
            tx.feed(m).await?;
        }
        tx.flush().await
    };
    matches!(tokio::time::timeout(deadline, write).await, Ok(Ok(())))
}

async fn send(
    tx: &mut futures_util::stream::SplitSink<WebSocket, WsMessage>,
    msg: WsMessage,
    deadline: std::time::Duration,
) -> bool {
    matches!(
        tokio::time::timeout(deadline, tx.send(msg)).await,
        Ok(Ok(()))
    )
}

fn is_too_big(e: &axum::Error) -> bool {
    matches!(
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}
