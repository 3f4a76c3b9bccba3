//! A WebSocket test client over tokio-tungstenite.
//!
//! tokio-tungstenite answers pings only while the stream is polled: a
//! [`Ws`] is polled only inside its own calls, so a test that stops calling
//! it looks like a dead client to the server's heartbeat.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roost::node::DevNode;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one frame.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// What the client saw next, pings and pongs aside.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame with this code (1005 if it had none).
    Close(u16),
    /// The stream ended (or failed) without a close frame.
    Ended,
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connects to `/kv/NAME/ws?QUERY` on `node`.
    pub async fn connect(node: &DevNode, name: &str, query: &str) -> Ws {
        let url = format!("ws://{}/kv/{name}/ws?{query}", node.http_addr());
        let (stream, resp) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        assert_eq!(resp.status().as_u16(), 101);
        Ws { stream }
    }

    pub async fn send(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("message is sent");
    }

    /// The next frame that is not a ping or pong.
    pub async fn next(&mut self) -> Got {
        let read = async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(t))) => return Got::Text(t.as_str().to_owned()),
                    Some(Ok(Message::Binary(b))) => return Got::Binary(b.to_vec()),
                    Some(Ok(Message::Close(frame))) => {
                        return Got::Close(frame.map_or(1005, |f| u16::from(f.code)));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Got::Ended,
                }
            }
        };
        tokio::time::timeout(FRAME_DEADLINE, read)
            .await
            .expect("a frame arrives in time")
    }

    /// The next frame, which must be a text message.
    pub async fn text(&mut self) -> String {
        match self.next().await {
            Got::Text(t) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Sends `text` and returns the text reply.
    pub async fn ask(&mut self, text: &str) -> String {
        self.send(text).await;
        self.text().await
    }

    /// Sends `text` and parses the reply as JSON.
    pub async fn ask_json(&mut self, text: &str) -> Value {
        let reply = self.ask(text).await;
        serde_json::from_str(&reply).expect("reply is JSON")
    }

    /// Starts the close handshake with `code`.
    pub async fn close(&mut self, code: u16, reason: &str) {
        self.stream
            .close(Some(CloseFrame {
                code: code.into(),
                reason: reason.into(),
            }))
            .await
            .expect("close frame is sent");
    }
}

/// A client polled continuously by a background task (so it answers the
/// server's pings): texts to send go in, frames seen come out.
pub struct Pumped {
    pub send: tokio::sync::mpsc::UnboundedSender<String>,
    pub seen: tokio::sync::mpsc::UnboundedReceiver<Got>,
}

impl Pumped {
    pub fn start(mut ws: Ws) -> Pumped {
        let (send, mut outgoing) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    text = outgoing.recv() => match text {
                        Some(text) => {
                            if ws.stream.send(Message::text(text)).await.is_err() {
                                let _ = seen_tx.send(Got::Ended);
                                return;
                            }
                        }
                        None => return,
                    },
                    msg = ws.stream.next() => {
                        let got = match msg {
                            Some(Ok(Message::Text(t))) => Got::Text(t.as_str().to_owned()),
                            Some(Ok(Message::Binary(b))) => Got::Binary(b.to_vec()),
                            Some(Ok(Message::Close(f))) => {
                                Got::Close(f.map_or(1005, |f| u16::from(f.code)))
                            }
                            Some(Ok(_)) => continue,
                            Some(Err(_)) | None => Got::Ended,
                        };
                        let done = !matches!(got, Got::Text(_) | Got::Binary(_));
                        let _ = seen_tx.send(got);
                        if done {
                            return;
                        }
                    }
                }
            }
        });
        Pumped { send, seen }
    }

    /// Sends `text` and returns the next frame seen.
    pub async fn ask(&mut self, text: &str) -> Got {
        self.send.send(text.to_owned()).expect("pump is running");
        tokio::time::timeout(FRAME_DEADLINE, self.seen.recv())
            .await
            .expect("a frame arrives in time")
            .expect("pump is running")
    }
}
