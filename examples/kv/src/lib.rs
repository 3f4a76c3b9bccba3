//! An example Durable Object class written against Roost's public API only,
//! the way a user would in their own crate: `KvStore` exposes the whole
//! storage API (and sockets and alarms) over HTTP, and `KvWorker` routes
//! `/kv/:name/...` to the object named `:name`.
//!
//! Requests: `POST /kv/:name` with a JSON body `{"op": ..., ...}` (see
//! [`Op`]); `GET /kv/:name/ws?tags=a,b&attach=text` upgrades to a WebSocket.
//!
//! A second class, [`Journal`] (bound as `LOG`), shows one object calling
//! another: the `put_and_log` op stores a key, then appends `key=value` to
//! the `LOG` object it names with the journal's typed RPC method
//! [`Append`]; `read_log` reads a journal with a fetch of its HTTP handler
//! from inside the object (`GET /log/:name` lists the entries from the
//! edge).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use roost::object::rpc::{self, Method};
use roost::object::{
    AlarmInfo, Bindings, CallResult, Context, DurableObject, Env, HandlerError, ListOptions,
    Message, Request, Response, Result, Storage, WebSocket, Worker, is_websocket_upgrade, json,
    query_param,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json as j};

/// The binding this example serves its class under.
pub const BINDING: &str = "KV";
/// The binding of the journal class the `KV` objects call.
pub const LOG_BINDING: &str = "LOG";

/// Registers the example's classes.
pub fn bindings() -> Bindings {
    Bindings::new()
        .bind::<KvStore>(BINDING)
        .bind::<Journal>(LOG_BINDING)
}

/// One storage operation, as sent in a request body.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Get {
        key: String,
    },
    GetMany {
        keys: Vec<String>,
    },
    Put {
        key: String,
        value: String,
    },
    PutMany {
        entries: Vec<(String, String)>,
    },
    Delete {
        key: String,
    },
    DeleteMany {
        keys: Vec<String>,
    },
    List(ListArgs),
    DeleteAll,
    /// Runs `ops` in a transaction, then rolls it back if `fail`.
    Txn {
        ops: Vec<Op>,
        #[serde(default)]
        fail: bool,
    },
    SetAlarm {
        at_ms: u64,
    },
    GetAlarm,
    DeleteAlarm,
    /// The alarm handler fails this many times before it succeeds.
    FailAlarms {
        times: u32,
    },
    /// Which in-memory instance answers (changes after eviction).
    Instance,
    /// Reads `key` as a number, yields to the runtime, writes it back + 1:
    /// only correct if no other event of the object runs in between.
    SlowIncrement {
        key: String,
    },
    SetAutoResponse {
        request: String,
        response: String,
    },
    /// Stores `key`, then appends `key=value` to the `LOG` object named
    /// `log` (a call to another object: it leaves once the put is
    /// committed); answers with the entry's number in that log.
    PutAndLog {
        key: String,
        value: String,
        log: String,
    },
    /// The configured var `name` (`ROOST_VAR_<name>`) and the length of the
    /// secret `name` (`ROOST_SECRET_<name>`; never the secret itself).
    Config {
        name: String,
    },
    /// The entries of the `LOG` object named `log`, read with a fetch from
    /// this object (another object's HTTP handler, reached from inside one).
    ReadLog {
        log: String,
    },
}

/// The journal's typed RPC method: appends an entry, answers its number.
pub struct Append;

impl Method for Append {
    const NAME: &'static str = "append";
    type Request = String;
    type Response = u64;
}

#[derive(Debug, Default, Deserialize)]
pub struct ListArgs {
    pub start: Option<String>,
    pub start_after: Option<String>,
    pub end: Option<String>,
    pub prefix: Option<String>,
    #[serde(default)]
    pub reverse: bool,
    pub limit: Option<usize>,
}

/// What the socket's attachment holds.
#[derive(Debug, Serialize, Deserialize)]
struct Attachment {
    attach: String,
}

/// The example class.
pub struct KvStore {
    /// Random per activation: tells instances apart across evictions.
    instance: u64,
    /// Alarm runs seen by this instance (in memory on purpose).
    alarm_attempts: u32,
}

fn text_of(b: Bytes) -> Value {
    Value::String(String::from_utf8_lossy(&b).into_owned())
}

fn run(s: &mut Storage, op: Op) -> Result<Value> {
    Ok(match op {
        Op::Get { key } => j!({ "value": s.get(&key)?.map(text_of) }),
        Op::GetMany { keys } => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let found = s.get_many(&keys)?;
            let map: serde_json::Map<String, Value> =
                found.into_iter().map(|(k, v)| (k, text_of(v))).collect();
            j!({ "values": map })
        }
        Op::Put { key, value } => {
            s.put(&key, value)?;
            j!({ "ok": true })
        }
        Op::PutMany { entries } => {
            s.put_many(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, Bytes::from(v)))
                    .collect(),
            )?;
            j!({ "ok": true })
        }
        Op::Delete { key } => j!({ "deleted": s.delete(&key)? }),
        Op::DeleteMany { keys } => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            j!({ "deleted": s.delete_many(&keys)? })
        }
        Op::List(a) => {
            let opts = ListOptions {
                start: a.start,
                start_after: a.start_after,
                end: a.end,
                prefix: a.prefix,
                reverse: a.reverse,
                limit: a.limit,
            };
            let entries: Vec<Value> = s
                .list(&opts)?
                .into_iter()
                .map(|(k, v)| j!([k, text_of(v)]))
                .collect();
            j!({ "entries": entries })
        }
        Op::DeleteAll => {
            s.delete_all()?;
            j!({ "ok": true })
        }
        Op::Txn { ops, fail } => s.transaction(|s| {
            let mut results = Vec::new();
            for op in ops {
                results.push(run(s, op)?);
            }
            if fail {
                return Err(HandlerError::new(
                    StatusCode::CONFLICT,
                    "transaction_aborted",
                    "rolled back on request",
                ));
            }
            Ok(j!({ "results": results }))
        })?,
        Op::SetAlarm { at_ms } => {
            s.set_alarm(at_ms)?;
            j!({ "ok": true })
        }
        Op::GetAlarm => j!({ "at_ms": s.get_alarm()? }),
        Op::DeleteAlarm => {
            s.delete_alarm()?;
            j!({ "ok": true })
        }
        Op::FailAlarms { times } => {
            s.put_json("alarm:fail_times", &times)?;
            j!({ "ok": true })
        }
        Op::Instance
        | Op::SlowIncrement { .. }
        | Op::SetAutoResponse { .. }
        | Op::PutAndLog { .. }
        | Op::Config { .. }
        | Op::ReadLog { .. } => {
            return Err(HandlerError::bad_request(
                "not_a_storage_op",
                "this op cannot run inside a transaction",
            ));
        }
    })
}

impl DurableObject for KvStore {
    async fn new(_ctx: &mut Context) -> Result<Self> {
        Ok(KvStore {
            instance: rand::random(),
            alarm_attempts: 0,
        })
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> Result<Response> {
        if is_websocket_upgrade(&req) {
            let tags = query_param(&req, "tags").unwrap_or_default();
            let tags: Vec<&str> = tags.split(',').filter(|t| !t.is_empty()).collect();
            let ws = ctx.accept_websocket(&tags)?;
            let attach = query_param(&req, "attach").unwrap_or_default();
            ws.serialize_attachment(&Attachment { attach })?;
            return Ok(ws.accepted());
        }
        let op: Op = serde_json::from_slice(req.body())
            .map_err(|e| HandlerError::bad_request("invalid_op", e))?;
        let result = match op {
            Op::Instance => j!({ "instance": self.instance.to_string() }),
            Op::SlowIncrement { key } => {
                let n: i64 = ctx.storage().get_json(&key)?.unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(2)).await;
                ctx.storage().put_json(&key, &(n + 1))?;
                j!({ "value": n + 1 })
            }
            Op::SetAutoResponse { request, response } => {
                ctx.set_websocket_auto_response(Some((request, response)));
                j!({ "ok": true })
            }
            Op::PutAndLog { key, value, log } => {
                ctx.storage().put(&key, value.clone())?;
                let journal = ctx.env().namespace(LOG_BINDING)?.get_by_name(&log);
                let n = ctx
                    .rpc::<Append>(&journal, &format!("{key}={value}"))
                    .await?;
                j!({ "logged": n })
            }
            Op::Config { name } => {
                let env = ctx.env();
                j!({ "var": env.var(&name), "secret_len": env.secret(&name).map(str::len) })
            }
            Op::ReadLog { log } => {
                let journal = ctx.env().namespace(LOG_BINDING)?.get_by_name(&log);
                let mut read = Request::new(Bytes::new());
                *read.uri_mut() = http::Uri::from_static("/");
                let resp = ctx.fetch(&journal, read).await?;
                let body: Value = serde_json::from_slice(resp.body())
                    .map_err(|e| HandlerError::internal(format!("the journal's answer: {e}")))?;
                j!({ "status": resp.status().as_u16(), "entries": body["entries"] })
            }
            op => run(ctx.storage(), op)?,
        };
        Ok(json(StatusCode::OK, &result))
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> Result<()> {
        let Message::Text(text) = msg else {
            ws.send("binary ignored");
            return Ok(());
        };
        if text == "whoami" {
            let attachment: Option<Attachment> = ws.deserialize_attachment()?;
            ws.send_json(&j!({
                "instance": self.instance.to_string(),
                "attach": attachment.map(|a| a.attach),
                "tags": ws.tags(),
            }))?;
        } else if let Some(tag) = text.strip_prefix("count:") {
            let n = ctx.websockets(Some(tag)).len();
            ws.send(n.to_string());
        } else if let Some(body) = text.strip_prefix("broadcast:") {
            for peer in ctx.websockets(None) {
                peer.send(body);
            }
        } else if let Some(key) = text.strip_prefix("put:") {
            ctx.storage().put(key, "from-socket")?;
            ws.send(format!("stored {key}"));
        } else if text == "close" {
            ws.close(4000, "asked to close");
        } else {
            ws.send(format!("echo:{text}"));
        }
        Ok(())
    }

    async fn websocket_close(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        code: u16,
        _reason: String,
    ) -> Result<()> {
        let attachment: Option<Attachment> = ws.deserialize_attachment()?;
        let who = attachment.map(|a| a.attach).unwrap_or_default();
        ctx.storage().put_json(&format!("closed:{who}"), &code)?;
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut Context, info: AlarmInfo) -> Result<()> {
        self.alarm_attempts += 1;
        let fail_times: u32 = ctx.storage().get_json("alarm:fail_times")?.unwrap_or(0);
        if self.alarm_attempts <= fail_times {
            return Err(HandlerError::internal("failing on purpose"));
        }
        let fired: u64 = ctx.storage().get_json("alarm:fired")?.unwrap_or(0);
        ctx.storage().put_json("alarm:fired", &(fired + 1))?;
        ctx.storage()
            .put_json("alarm:last_retry_count", &info.retry_count)?;
        ctx.storage()
            .put_json("alarm:last_scheduled_ms", &info.scheduled_ms)?;
        Ok(())
    }
}

/// An append-only journal: `append(entry)` stores the entry as the next
/// `e:<n>` and answers `n`; `GET /` lists the entries in order.
pub struct Journal;

impl DurableObject for Journal {
    async fn new(_ctx: &mut Context) -> Result<Self> {
        Ok(Journal)
    }

    async fn fetch(&mut self, ctx: &mut Context, _req: Request) -> Result<Response> {
        let entries: Vec<Value> = ctx
            .storage()
            .list(&ListOptions {
                prefix: Some("e:".into()),
                ..ListOptions::default()
            })?
            .into_iter()
            .map(|(_, v)| text_of(v))
            .collect();
        Ok(json(StatusCode::OK, &j!({ "entries": entries })))
    }

    async fn call(&mut self, ctx: &mut Context, method: String, payload: Bytes) -> CallResult {
        if method != Append::NAME {
            return Err(rpc::unknown_method(&method));
        }
        let entry = rpc::decode::<Append>(&payload)?;
        let n: u64 = ctx.storage().get_json("count")?.unwrap_or(0) + 1;
        ctx.storage().put(&format!("e:{n:012}"), entry)?;
        ctx.storage().put_json("count", &n)?;
        rpc::reply::<Append>(&n)
    }
}

/// Routes `/kv/:name[/...]` to the `KV` object named `:name`, and
/// `/log/:name` to the `LOG` object named `:name`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvWorker;

impl Worker for KvWorker {
    async fn fetch(&self, req: Request, env: &Env) -> Response {
        let path = req.uri().path().to_owned();
        if let Some(name) = path.strip_prefix("/log/") {
            let stub = match env.namespace(LOG_BINDING) {
                Ok(ns) => ns.get(ns.id_from_name(name)),
                Err(e) => return e.to_response(),
            };
            return stub.fetch(req).await.unwrap_or_else(|e| e.to_response());
        }
        let Some(rest) = path.strip_prefix("/kv/") else {
            return roost::object::error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                "try /kv/:name",
            );
        };
        let name = rest.split('/').next().unwrap_or_default();
        if name.is_empty() {
            return roost::object::error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                "missing object name",
            );
        }
        let ns = match env.namespace(BINDING) {
            Ok(ns) => ns,
            Err(e) => return e.to_response(),
        };
        let stub = ns.get(ns.id_from_name(name));
        match stub.fetch(req).await {
            Ok(resp) => resp,
            Err(e) => e.to_response(),
        }
    }
}
