//! Edge → owner forwarding: an in-process edge whose object client is a
//! `RemoteClient` to a dev node's gRPC port serves the seed app over HTTP
//! and WebSockets, end to end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::wait_until;
use futures_util::{SinkExt, StreamExt};
use roost::app::{self, SeedApp};
use roost::config::Config;
use roost::edge::{Edge, EdgeOptions};
use roost::node::DevNode;
use roost::object::{
    self, Bindings, Context, DurableObject, Env, Request, Response, WebSocket, Worker,
    is_websocket_upgrade,
};
use roost::rpc::remote::{RemoteClient, RemoteOptions};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.grpc.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.admin.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.node.data_dir = dir.to_path_buf();
    config.node.shards = 4;
    config
}

/// A node, and an edge in front of it that reaches objects only over gRPC.
struct Setup {
    node: DevNode,
    edge: Edge,
    remote: RemoteClient,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// The seed app on both sides.
    async fn start() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = DevNode::start(config(dir.path()))
            .await
            .expect("node starts");
        Self::with_edge(dir, node, SeedApp, app::bindings()).await
    }

    /// An edge running `worker` in front of `node`.
    async fn with_edge<W: Worker>(
        dir: tempfile::TempDir,
        node: DevNode,
        worker: W,
        bindings: Bindings,
    ) -> Setup {
        let remote = RemoteClient::connect_lazy(node.grpc_addr(), RemoteOptions::default())
            .expect("gRPC client");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind edge");
        let namespaces: Vec<_> = bindings.names().cloned().collect();
        let edge = Edge::start(
            listener,
            worker,
            Arc::new(remote.clone()),
            namespaces,
            EdgeOptions::default(),
        )
        .expect("edge starts");
        Setup {
            node,
            edge,
            remote,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn call(&self, method: reqwest::Method, url: String) -> (u16, Value) {
        let resp = self
            .http
            .request(method, url)
            .send()
            .await
            .expect("answered");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn edge_call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let url = format!("http://{}{path}", self.edge.local_addr());
        self.call(method, url).await
    }

    async fn ws(&self, path: &str) -> Ws {
        let url = format!("ws://{}{path}", self.edge.local_addr());
        let (ws, resp) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connects");
        assert_eq!(resp.status().as_u16(), 101);
        ws
    }
}

/// The next data or close frame, within a deadline.
async fn next(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame arrives in time")
            .expect("the socket is open")
            .expect("a valid frame");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("a JSON frame"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn expect_event(ws: &mut Ws, kind: &str, name: &str) {
    let frame = next_json(ws).await;
    assert_eq!(
        (frame["type"].as_str(), frame["name"].as_str()),
        (Some(kind), Some(name)),
        "{frame}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_routes_through_a_remote_edge() {
    let s = Setup::start().await;
    use reqwest::Method;
    assert_eq!(
        s.edge_call(Method::GET, "/counter/visits").await,
        (200, json!({"value": 0}))
    );
    assert_eq!(
        s.edge_call(Method::POST, "/counter/visits/increment").await,
        (200, json!({"value": 1}))
    );
    assert_eq!(
        s.edge_call(Method::POST, "/counter/visits/increment?amount=5")
            .await,
        (200, json!({"value": 6}))
    );
    assert_eq!(
        s.edge_call(Method::POST, "/counter/visits/decrement?amount=2")
            .await,
        (200, json!({"value": 4}))
    );
    let (status, body) = s
        .edge_call(Method::POST, "/counter/visits/increment?amount=x")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_amount"))
    );
    let (status, body) = s.edge_call(Method::GET, "/nowhere").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    // The node's own edge sees the same object: the remote edge forwarded.
    let own = format!("http://{}/counter/visits", s.node.http_addr());
    assert_eq!(s.call(Method::GET, own).await, (200, json!({"value": 4})));

    s.edge.shutdown(Duration::from_secs(5)).await;
    s.node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_session_through_a_remote_edge() {
    let s = Setup::start().await;

    let mut alice = s.ws("/room/lobby?name=Alice").await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "history", "messages": []})
    );
    expect_event(&mut alice, "join", "Alice").await;

    let mut bob = s.ws("/room/lobby/websocket?name=Bob").await;
    assert_eq!(next_json(&mut bob).await["type"], "history");
    expect_event(&mut bob, "join", "Bob").await;
    expect_event(&mut alice, "join", "Bob").await;
    assert_eq!(s.remote.open_sockets(), 2);

    let hello = json!({"type": "message", "text": "hello"}).to_string();
    alice.send(Message::Text(hello.into())).await.expect("send");
    let mut seen = Vec::new();
    for ws in [&mut alice, &mut bob] {
        let frame = next_json(ws).await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_eq!(frame["name"], "Alice", "{frame}");
        assert_eq!(frame["text"], "hello", "{frame}");
        seen.push(frame);
    }
    assert_eq!(seen[0], seen[1]);

    // A bad frame gets an error on its own socket only.
    bob.send(Message::Text("not json".into()))
        .await
        .expect("send");
    let error = next_json(&mut bob).await;
    assert_eq!(
        (error["type"].as_str(), error["error"].as_str()),
        (Some("error"), Some("invalid_json"))
    );

    // Bob leaves: the room tells Alice, the client forgets his socket.
    bob.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .expect("close");
    expect_event(&mut alice, "leave", "Bob").await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.remote.open_sockets() == 1
        })
        .await,
        "Bob's stream is forgotten"
    );

    // A newcomer gets the history, through the same forwarding.
    let mut carol = s.ws("/room/lobby?name=Carol").await;
    let history = next_json(&mut carol).await;
    assert_eq!(history["type"], "history");
    assert_eq!(history["messages"][0]["text"], "hello", "{history}");
    expect_event(&mut carol, "join", "Carol").await;
    expect_event(&mut alice, "join", "Carol").await;
    let (status, body) = s
        .edge_call(reqwest::Method::GET, "/room/lobby/history")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["text"], "hello", "{body}");

    // Carol's connection vanishes without a close: the room sees her leave.
    drop(carol);
    expect_event(&mut alice, "leave", "Carol").await;

    // The node shuts down: its streams end with 1001, which the edge
    // passes on to the client.
    let node_stopped = tokio::spawn(s.node.shutdown());
    loop {
        match next(&mut alice).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1001);
                break;
            }
            Message::Text(_) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    }
    node_stopped
        .await
        .expect("shutdown task")
        .expect("clean shutdown");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.remote.open_sockets() == 0
        })
        .await,
        "every stream is forgotten"
    );
    s.edge.shutdown(Duration::from_secs(5)).await;
}

/// Echoes socket messages and records the last close it was told of.
struct Recorder;

impl DurableObject for Recorder {
    async fn new(_ctx: &mut Context) -> object::Result<Self> {
        Ok(Recorder)
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> object::Result<Response> {
        if is_websocket_upgrade(&req) {
            return Ok(ctx.accept_websocket(&[])?.accepted());
        }
        let close = ctx.storage().get_json::<(u16, String)>("close")?;
        Ok(object::json(
            http::StatusCode::OK,
            &json!({ "close": close }),
        ))
    }

    async fn websocket_message(
        &mut self,
        _ctx: &mut Context,
        ws: WebSocket,
        msg: object::Message,
    ) -> object::Result<()> {
        ws.send(msg);
        Ok(())
    }

    async fn websocket_close(
        &mut self,
        ctx: &mut Context,
        _ws: WebSocket,
        code: u16,
        reason: String,
    ) -> object::Result<()> {
        ctx.storage().put_json("close", &(code, reason))?;
        Ok(())
    }
}

/// Sends every request to the one `RECORDER` object.
struct ToRecorder;

impl Worker for ToRecorder {
    async fn fetch(&self, req: Request, env: &Env) -> Response {
        let result = match env.namespace("RECORDER") {
            Ok(ns) => ns.get(ns.id_from_name("r")).fetch(req).await,
            Err(e) => Err(e),
        };
        result.unwrap_or_else(|e| e.to_response())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_close_codes_cross_the_wire() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bindings = || Bindings::new().bind::<Recorder>("RECORDER");
    let node = DevNode::start_with(config(dir.path()), bindings(), ToRecorder)
        .await
        .expect("node starts");
    let s = Setup::with_edge(dir, node, ToRecorder, bindings()).await;
    let last_close = || async {
        let (status, body) = s.edge_call(reqwest::Method::GET, "/").await;
        assert_eq!(status, 200, "{body}");
        body["close"].clone()
    };

    let mut ws = s.ws("/").await;
    ws.send(Message::Text("hi".into())).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::Text("hi".into()));
    let binary = bytes::Bytes::from_static(&[0, 159, 146, 150, 255]);
    ws.send(Message::Binary(binary.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::Binary(binary));

    // The client's close code and reason reach the object.
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4000),
        reason: "done".into(),
    })))
    .await
    .expect("close");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            last_close().await == json!([4000, "done"])
        })
        .await,
        "the object saw the close: {}",
        last_close().await
    );

    // A client that vanishes is a 1006.
    let ws = s.ws("/").await;
    drop(ws);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            last_close().await[0] == 1006
        })
        .await,
        "the object saw the client vanish: {}",
        last_close().await
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.remote.open_sockets() == 0
        })
        .await
    );

    s.edge.shutdown(Duration::from_secs(5)).await;
    s.node.shutdown().await.expect("clean shutdown");
}
