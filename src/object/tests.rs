//! In-process tests of the runtime with test classes: a single-node shard
//! group over a temp RocksDB, events handed straight to [`Runtime`].

use std::sync::Arc;
use std::time::Duration;

use ::http::{StatusCode, header};
use bytes::Bytes;
use tempfile::TempDir;

use super::rpc::Method as _;
use super::*;
use crate::id::{ObjectId, ObjectKey};
use crate::replication::Replicas;
use crate::storage::Db;

const WAIT: Duration = Duration::from_secs(5);
/// Shards of a test node.
pub(super) const SHARDS: u16 = 2;

pub(super) struct Node {
    _dir: TempDir,
    pub(super) db: Db,
    replicas: Arc<Replicas>,
    pub(super) runtime: Runtime,
}

pub(super) async fn node(bindings: Bindings, opts: RuntimeOptions) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).expect("open db");
    let (replicas, runtime) = serve(&db, bindings, opts).await;
    Node {
        _dir: dir,
        db,
        replicas,
        runtime,
    }
}

/// A single-node group of [`SHARDS`] shards over `db`, each led here,
/// and a runtime serving `bindings` on them.
pub(super) async fn serve(
    db: &Db,
    bindings: Bindings,
    opts: RuntimeOptions,
) -> (Arc<Replicas>, Runtime) {
    let replicas =
        Replicas::open_single_node(db.clone(), 1, "local".into(), SHARDS, Default::default())
            .await
            .expect("open replicas");
    replicas
        .wait_for_leaders(WAIT)
        .await
        .expect("every shard elects itself");
    let replicas = Arc::new(replicas);
    let runtime =
        Runtime::start(db.clone(), replicas.clone(), bindings, opts).expect("start runtime");
    (replicas, runtime)
}

impl Node {
    pub(super) async fn stop(self) {
        self.runtime.shutdown().await;
        self.replicas.shutdown().await;
    }
}

pub(super) fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, ObjectId::from_name(ns, name))
}

pub(super) fn get(path: &str) -> Request {
    let mut req = Request::new(Bytes::new());
    *req.uri_mut() = format!("http://o{path}").parse().expect("uri");
    req
}

/// Deletes `n` keys (in chunks of 100) in one event.
struct Deleter;

impl DurableObject for Deleter {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Deleter)
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> Result<Response> {
        let n: usize = query_param(&req, "n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let keys: Vec<String> = (0..n).map(|i| format!("key-{i:08}")).collect();
        for chunk in keys.chunks(100) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            ctx.storage().delete_many(&chunk)?;
        }
        Ok(text(StatusCode::OK, "deleted"))
    }
}

/// Defect 5: deletes count toward the event's write limit, so no event
/// builds a log entry larger than the limit allows (with a clear 413).
#[tokio::test]
async fn deletes_count_toward_the_event_write_limit() {
    let opts = RuntimeOptions {
        limits: Limits {
            max_event_write_bytes: 64 * 1024,
            ..Limits::default()
        },
        ..RuntimeOptions::default()
    };
    let node = node(Bindings::new().bind::<Deleter>("DELETER"), opts).await;
    let k = key("DELETER", "a");
    // 12-byte keys + 16 bytes each: 2000 fit in 64 KiB, 3000 do not.
    let ok = node.runtime.fetch(k.clone(), get("/?n=2000")).await;
    assert_eq!(ok.expect("fetch").response.status(), StatusCode::OK);
    let too_many = node.runtime.fetch(k, get("/?n=3000")).await;
    let response = too_many.expect("fetch").response;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json body");
    assert_eq!(body["error"], "write_too_large", "{body}");
    node.stop().await;
}

/// A socket class: `fail` stores attachment "v2" and closes the socket,
/// then fails; `read` answers with the attachment.
struct Sockets;

impl DurableObject for Sockets {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Sockets)
    }

    async fn fetch(&mut self, ctx: &mut Context, _req: Request) -> Result<Response> {
        let ws = ctx.accept_websocket(&[])?;
        ws.serialize_attachment("v1")?;
        Ok(ws.accepted())
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> Result<()> {
        match msg {
            Message::Text(t) if t == "fail" => {
                ws.serialize_attachment("v2")?;
                ws.close(4000, "closed by a failed event");
                ctx.storage().put("k", "v")?;
                Err(HandlerError::internal("this event fails"))
            }
            _ => {
                let seen: Option<String> = ws.deserialize_attachment()?;
                let open = ctx.websockets(None).len();
                ws.send(format!("{}:{open}", seen.unwrap_or_default()));
                Ok(())
            }
        }
    }
}

/// Defect 7: a socket's close and attachment take effect only through the
/// output gate, and not at all when the event's handler fails.
#[tokio::test]
async fn socket_changes_of_a_failed_event_are_rolled_back() {
    let node = node(
        Bindings::new().bind::<Sockets>("SOCKETS"),
        RuntimeOptions::default(),
    )
    .await;
    let k = key("SOCKETS", "a");
    let mut req = get("/");
    req.headers_mut()
        .insert(header::UPGRADE, "websocket".parse().expect("value"));
    req.headers_mut()
        .insert(header::CONNECTION, "Upgrade".parse().expect("value"));
    let outcome = node.runtime.fetch(k.clone(), req).await.expect("fetch");
    assert_eq!(outcome.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut link = outcome.socket.expect("an accepted socket");
    let send = |text: &str| {
        node.runtime
            .socket_message(&k, link.socket, Message::Text(text.into()))
            .expect("dispatch")
    };
    send("fail");
    send("read");
    let mut next = async || {
        tokio::time::timeout(WAIT, link.outgoing.recv())
            .await
            .expect("the socket is still open and answers")
            .expect("a frame")
    };
    // The committed attachment reaches the bridge first (it keeps it, to
    // re-attach the socket elsewhere); the failed event's never does.
    assert_eq!(
        next().await,
        ServerFrame::Attachment(Bytes::from_static(b"\"v1\""))
    );
    assert_eq!(
        next().await,
        ServerFrame::message(Message::Text("v1:1".into())),
        "the failed event's attachment and close were rolled back"
    );
    node.stop().await;
}

/// A socket re-attached from another owner joins the object as it was:
/// no fetch runs, the object finds it among its sockets with its tags and
/// attachment, and its messages are handled (and counted for the next move).
#[tokio::test]
async fn a_reattached_socket_is_found_with_its_tags_and_attachment() {
    let node = node(
        Bindings::new().bind::<Sockets>("SOCKETS"),
        RuntimeOptions::default(),
    )
    .await;
    let k = key("SOCKETS", "moved-here");
    let tags = vec!["room:a".to_owned()];
    let mut link = node
        .runtime
        .socket_reattach(
            &k,
            None,
            Registration {
                tags: tags.clone(),
                attachment: Some(Bytes::from_static(b"\"v9\"")),
            },
            None,
        )
        .await
        .expect("re-attach");
    assert_eq!(link.tags, tags);
    node.runtime
        .socket_message(&k, link.socket, Message::Text("read".into()))
        .expect("dispatch");
    let frame = tokio::time::timeout(WAIT, link.outgoing.recv())
        .await
        .expect("an answer")
        .expect("a frame");
    // Its attachment, and it is the object's one socket (fetch never ran).
    assert_eq!(frame, ServerFrame::message(Message::Text("v9:1".into())));
    let unknown = node
        .runtime
        .socket_reattach(&key("NOPE", "x"), None, Registration::default(), None)
        .await;
    assert!(
        matches!(unknown, Err(Error::UnknownNamespace(_))),
        "{unknown:?}"
    );
    node.stop().await;
}

/// `add(n)` of [`Totals`]: adds `n`, answers the new total.
struct Add;

impl rpc::Method for Add {
    const NAME: &'static str = "add";
    type Request = i64;
    type Response = i64;
}

/// A caller that believes `add` answers a string.
struct AddAsText;

impl rpc::Method for AddAsText {
    const NAME: &'static str = "add";
    type Request = i64;
    type Response = String;
}

/// A class with typed methods only.
struct Totals(i64);

impl DurableObject for Totals {
    async fn new(ctx: &mut Context) -> Result<Self> {
        Ok(Totals(ctx.storage().get_json("total")?.unwrap_or(0)))
    }

    async fn fetch(&mut self, _: &mut Context, _: Request) -> Result<Response> {
        Err(HandlerError::bad_request("rpc_only", "call it"))
    }

    async fn call(&mut self, ctx: &mut Context, method: String, payload: Bytes) -> Result<Bytes> {
        match method.as_str() {
            Add::NAME => {
                let n = rpc::decode::<Add>(&payload)?;
                self.0 += n;
                ctx.storage().put_json("total", &self.0)?;
                rpc::reply::<Add>(&self.0)
            }
            other => Err(rpc::unknown_method(other)),
        }
    }
}

/// Typed RPC through a stub: answers decode as the method's type, and an
/// unknown method, a request that does not decode and an answer of another
/// type are each a clear error.
#[tokio::test]
async fn typed_rpc_round_trips_and_names_each_failure() {
    let node = node(
        Bindings::new().bind::<Totals>("TOTALS"),
        RuntimeOptions::default(),
    )
    .await;
    let env = Env::new(Arc::new(node.runtime.clone()), node.runtime.namespaces());
    let ns = env.namespace("TOTALS").expect("bound");
    let stub = ns.get(ns.id_from_name("t"));
    assert_eq!(stub.rpc::<Add>(&2).await.expect("add"), 2);
    assert_eq!(stub.rpc::<Add>(&40).await.expect("add"), 42);

    struct Nope;
    impl rpc::Method for Nope {
        const NAME: &'static str = "nope";
        type Request = ();
        type Response = ();
    }
    match stub.rpc::<Nope>(&()).await {
        Err(rpc::RpcError::Handler(e)) => {
            assert_eq!(
                (e.status, e.code.as_ref()),
                (StatusCode::NOT_FOUND, "unknown_method")
            );
        }
        other => panic!("unknown method: {other:?}"),
    }
    let raw = stub
        .call("add", Bytes::from_static(b"not json"))
        .await
        .expect("the call ran");
    match raw {
        Err(e) => assert_eq!(
            (e.status, e.code.as_ref()),
            (StatusCode::BAD_REQUEST, "invalid_request")
        ),
        Ok(b) => panic!("a bad request answered {b:?}"),
    }
    match stub.rpc::<AddAsText>(&1).await {
        Err(rpc::RpcError::Decode { method, .. }) => assert_eq!(method, "add"),
        other => panic!("an answer of another type: {other:?}"),
    }
    // The failed calls changed nothing; the mistyped one did add (its
    // answer only failed to decode at the caller).
    assert_eq!(stub.rpc::<Add>(&0).await.expect("add"), 43);
    node.stop().await;
}
