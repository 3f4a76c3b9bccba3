//! Calls from one object to another (`calls.rs`) on a one-node runtime.

use std::sync::OnceLock;
use std::time::Duration;

use ::http::StatusCode;
use bytes::Bytes;

use super::tests::{get, key, node};
use super::*;
use crate::id::ObjectId;
use crate::storage::{Db, keys};

/// The database the callee checks the caller's write in (one test at a
/// time uses it).
static DB: OnceLock<Db> = OnceLock::new();

/// `GET /send?n=N` stores `sent = N`, then calls `CALLEE/c`'s `record`
/// with N and answers with what the callee said.
struct Caller;

impl DurableObject for Caller {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Caller)
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> Result<Response> {
        let n = query_param(&req, "n").unwrap_or_default();
        ctx.storage().put("sent", n.clone())?;
        let callee = ctx.stub("CALLEE", ObjectId::from_name("CALLEE", "c"))?;
        let answer = ctx.call(&callee, "record", Bytes::from(n)).await??;
        // Written after the call: its own batch, committed with the reply.
        ctx.storage().put("after", Bytes::from_static(b"1"))?;
        Ok(text(
            StatusCode::OK,
            String::from_utf8_lossy(&answer).into_owned(),
        ))
    }
}

/// `record(n)`: answers whether the caller's `sent = n` was committed and
/// applied when the call arrived, and stores `got = n`.
struct Callee;

impl DurableObject for Callee {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Callee)
    }

    async fn fetch(&mut self, _ctx: &mut Context, _req: Request) -> Result<Response> {
        Ok(text(StatusCode::NOT_FOUND, "no routes"))
    }

    async fn call(&mut self, ctx: &mut Context, method: String, payload: Bytes) -> CallResult {
        if method != "record" {
            return Err(HandlerError::bad_request("unknown_method", method));
        }
        let caller = key("CALLER", "a");
        let sent = DB
            .get()
            .and_then(|db| {
                db.get_state(&keys::data_key(caller.id.shard(2), &caller, "sent"))
                    .ok()
            })
            .flatten();
        ctx.storage().put("got", payload.clone())?;
        let seen = if sent.as_deref() == Some(&payload[..]) {
            "committed"
        } else {
            "not committed"
        };
        Ok(Bytes::from(seen))
    }
}

/// An outgoing call is an output: the write the caller made before it is
/// committed (and applied) before the callee runs; the caller's writes
/// after the call land too; the callee's write is its own.
#[tokio::test]
async fn a_call_leaves_only_after_the_callers_writes_are_committed() {
    let node = node(
        Bindings::new()
            .bind::<Caller>("CALLER")
            .bind::<Callee>("CALLEE"),
        RuntimeOptions::default(),
    )
    .await;
    let _ = DB.set(node.db.clone());
    for n in ["1", "2", "3"] {
        let out = node
            .runtime
            .fetch(key("CALLER", "a"), get(&format!("/send?n={n}")))
            .await
            .expect("fetch");
        assert_eq!(out.response.status(), StatusCode::OK);
        assert_eq!(&out.response.body()[..], b"committed", "call {n}");
    }
    let a = key("CALLER", "a");
    let c = key("CALLEE", "c");
    let state = |k: &crate::id::ObjectKey, name: &str| {
        node.db
            .get_state(&keys::data_key(k.id.shard(2), k, name))
            .expect("read")
    };
    assert_eq!(state(&a, "after").as_deref(), Some(&b"1"[..]));
    assert_eq!(state(&c, "got").as_deref(), Some(&b"3"[..]));
    node.stop().await;
}

/// `GET /` calls `PEER/<other>`'s `back`, which calls this object again:
/// a cycle.
struct Cycler;

impl DurableObject for Cycler {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Cycler)
    }

    async fn fetch(&mut self, ctx: &mut Context, _req: Request) -> Result<Response> {
        let peer = ctx.stub("PEER", ObjectId::from_name("PEER", "b"))?;
        let answer = ctx.call(&peer, "back", Bytes::new()).await??;
        Ok(text(
            StatusCode::OK,
            String::from_utf8_lossy(&answer).into_owned(),
        ))
    }

    async fn call(&mut self, _ctx: &mut Context, _method: String, _payload: Bytes) -> CallResult {
        Ok(Bytes::from_static(b"hello"))
    }
}

struct Peer;

impl DurableObject for Peer {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Peer)
    }

    async fn fetch(&mut self, _ctx: &mut Context, _req: Request) -> Result<Response> {
        Ok(text(StatusCode::NOT_FOUND, "no routes"))
    }

    async fn call(&mut self, ctx: &mut Context, _method: String, _payload: Bytes) -> CallResult {
        let back = ctx.stub("CYCLER", ObjectId::from_name("CYCLER", "a"))?;
        ctx.call(&back, "hello", Bytes::new()).await?
    }
}

/// A call cycle cannot be served (each object runs one event at a time);
/// it ends by the call deadline with a clear 504, and both objects serve
/// the next requests.
#[tokio::test]
async fn a_call_cycle_ends_by_the_deadline_with_a_clear_error() {
    let opts = RuntimeOptions {
        call_timeout: Duration::from_millis(300),
        ..RuntimeOptions::default()
    };
    let node = node(
        Bindings::new()
            .bind::<Cycler>("CYCLER")
            .bind::<Peer>("PEER"),
        opts,
    )
    .await;
    let out = node
        .runtime
        .fetch(key("CYCLER", "a"), get("/"))
        .await
        .expect("fetch");
    assert_eq!(out.response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = serde_json::from_slice(out.response.body()).expect("json body");
    // (A 5xx keeps its message in the node's log, which names the likely
    // cause: a call cycle.)
    assert_eq!(body["error"], "call_timeout", "{body}");
    // The queued call from PEER ran after; both objects still answer.
    let again = node
        .runtime
        .call(key("CYCLER", "a"), "hello".into(), Bytes::new())
        .await
        .expect("call");
    assert_eq!(again.expect("hello").as_ref(), b"hello");
    node.stop().await;
}

/// Answers with its env's var `GREETING` and whether secret `TOKEN` is set.
struct Configured;

impl DurableObject for Configured {
    async fn new(_: &mut Context) -> Result<Self> {
        Ok(Configured)
    }

    async fn fetch(&mut self, ctx: &mut Context, _req: Request) -> Result<Response> {
        let env = ctx.env();
        let greeting = env.var("GREETING").unwrap_or("none").to_owned();
        let token = if env.secret("TOKEN") == Some("s3cret") {
            "token ok"
        } else {
            "no token"
        };
        Ok(text(StatusCode::OK, format!("{greeting}; {token}")))
    }
}

/// Objects read the app's vars and secrets from their env.
#[tokio::test]
async fn an_object_reads_the_apps_vars_and_secrets() {
    let vars = Vars::from_pairs(
        [
            ("ROOST_VAR_GREETING", "hello"),
            ("ROOST_SECRET_TOKEN", "s3cret"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let opts = RuntimeOptions {
        vars: Some(std::sync::Arc::new(vars)),
        ..RuntimeOptions::default()
    };
    let node = node(Bindings::new().bind::<Configured>("CONF"), opts).await;
    let out = node
        .runtime
        .fetch(key("CONF", "a"), get("/"))
        .await
        .expect("fetch");
    assert_eq!(&out.response.body()[..], b"hello; token ok");
    node.stop().await;
}
