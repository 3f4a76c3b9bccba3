//! The lab: a test-only object class, and the node process that serves it.
//!
//! The built-in app has no route that writes several keys in one event or
//! sets an alarm, so with `NEMESIS_APP=lab` (what `make nemesis` uses) the
//! nodes are this test binary re-executed as a node (`lab_node_process`):
//! the same `ClusterNode` as `roost node`, serving the built-in classes
//! plus `LAB`. Clients reach `LAB` through the edges' gRPC object API
//! (`roost.v1.Objects/Fetch`), which forwards any namespace. The edges stay
//! `roost edge` processes.
//!
//! `LAB` objects (no cached state: every event reads storage):
//! - `GET /` → `{"value": seq, "balances": [b0, b1, b2, b3], "by": w,
//!   "at": x}`.
//! - `POST /transfer?from=i&to=j` moves 1 from account `i` to `j` and adds
//!   1 to `seq`: three keys in one event. `seq` makes the object a counter
//!   the linearizability checker can hold it to; every answer's balances
//!   must sum to [`TOTAL`] (the transaction is atomic). It answers `{"value",
//!   "balances", "by": x, "read": w}`.
//!
//!   For diagnosis, each transfer also stores who made it (`by`): the
//!   executor `n<node>/p<pid>/x<n>` (the n-th `LAB` instance that process
//!   built); `read` is the writer of the state it read and `at` the
//!   executor that answered a read. A violation's bodies name the
//!   executors involved.
//! - `POST /alarm?at=ms` sets the object's alarm and stores `due`.
//! - `GET /alarm` → `{"due": ms|null, "fired": [ms, ...]}`: when the alarm
//!   handler ran (node wall clock; the nodes share the test's host clock).

use http::{Method, StatusCode};
use roost::object::{
    self, AlarmInfo, Context, DurableObject, ListOptions, Request, Response, now_ms, query_param,
};
use serde_json::json;

/// Accounts per object, each starting at [`START`].
pub const ACCOUNTS: usize = 4;
const START: i64 = 100;
/// What the balances of every answer must sum to.
pub const TOTAL: i64 = START * ACCOUNTS as i64;

pub struct Lab {
    /// This executor, as `n<node>/p<pid>/x<n>`.
    me: String,
}

fn executor_name() -> String {
    static BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let spec = std::env::var(NODE_ENV).unwrap_or_default();
    let node = spec.split(';').next().unwrap_or("?");
    format!("n{node}/p{}/x{n}", std::process::id())
}

fn balances(ctx: &mut Context) -> object::Result<Vec<i64>> {
    (0..ACCOUNTS)
        .map(|i| {
            Ok(ctx
                .storage()
                .get_json::<i64>(&format!("acct:{i}"))?
                .unwrap_or(START))
        })
        .collect()
}

fn index(req: &Request, name: &str) -> Option<usize> {
    query_param(req, name)?
        .parse::<usize>()
        .ok()
        .filter(|i| *i < ACCOUNTS)
}

impl DurableObject for Lab {
    async fn new(_ctx: &mut Context) -> object::Result<Self> {
        Ok(Lab {
            me: executor_name(),
        })
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> object::Result<Response> {
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/") => {
                let seq = ctx.storage().get_json::<i64>("seq")?.unwrap_or(0);
                let b = balances(ctx)?;
                let by = ctx.storage().get_json::<String>("by")?;
                Ok(object::json(
                    StatusCode::OK,
                    &json!({"value": seq, "balances": b, "by": by, "at": self.me}),
                ))
            }
            (Method::POST, "/transfer") => {
                let (Some(from), Some(to)) = (index(&req, "from"), index(&req, "to")) else {
                    return Err(object::HandlerError::bad_request(
                        "invalid_transfer",
                        "from and to are account numbers",
                    ));
                };
                let mut b = balances(ctx)?;
                b[from] -= 1;
                b[to] += 1;
                let seq = ctx.storage().get_json::<i64>("seq")?.unwrap_or(0) + 1;
                let read = ctx.storage().get_json::<String>("by")?;
                ctx.storage().put_json(&format!("acct:{from}"), &b[from])?;
                ctx.storage().put_json(&format!("acct:{to}"), &b[to])?;
                ctx.storage().put_json("seq", &seq)?;
                ctx.storage().put_json("by", &self.me)?;
                Ok(object::json(
                    StatusCode::OK,
                    &json!({"value": seq, "balances": b, "by": self.me, "read": read}),
                ))
            }
            (Method::POST, "/alarm") => {
                let Some(at) = query_param(&req, "at").and_then(|a| a.parse::<u64>().ok()) else {
                    return Err(object::HandlerError::bad_request("invalid_at", "at is ms"));
                };
                ctx.storage().set_alarm(at)?;
                ctx.storage().put_json("due", &at)?;
                Ok(object::json(StatusCode::OK, &json!({"due": at})))
            }
            (Method::GET, "/alarm") => {
                let due = ctx.storage().get_json::<u64>("due")?;
                let fired: Vec<u64> = ctx
                    .storage()
                    .list_json::<u64>(&ListOptions {
                        prefix: Some("fired:".into()),
                        ..ListOptions::default()
                    })?
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                Ok(object::json(
                    StatusCode::OK,
                    &json!({"due": due, "fired": fired}),
                ))
            }
            _ => Err(object::HandlerError::bad_request(
                "no_route",
                "no such lab route",
            )),
        }
    }

    async fn alarm(&mut self, ctx: &mut Context, info: AlarmInfo) -> object::Result<()> {
        let now = now_ms();
        let key = format!("fired:{now:016}:{}", info.retry_count);
        ctx.storage().put_json(&key, &now)?;
        Ok(())
    }
}

/// What the test passes a node process, in `NEMESIS_LAB_NODE`:
/// `id;listen;data_dir;shards;join,join`.
pub const NODE_ENV: &str = "NEMESIS_LAB_NODE";

/// Runs a cluster node serving the built-in classes and `LAB` until
/// SIGTERM, if this process was started as one (else returns at once).
pub fn serve_if_asked() {
    let Ok(spec) = std::env::var(NODE_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(';').collect();
    assert_eq!(parts.len(), 5, "{NODE_ENV}={spec:?}");
    let id: u64 = parts[0].parse().expect("node id");
    let listen: std::net::SocketAddr = parts[1].parse().expect("listen address");
    let shards: u16 = parts[3].parse().expect("shards");
    let join: Vec<String> = parts[4]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        use roost::config::{Config, Overrides};
        let flags = Overrides {
            grpc_listen: Some(listen),
            admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
            data_dir: Some(parts[2].into()),
            shards: Some(shards),
            ..Overrides::default()
        };
        let mut config = Config::build(None, flags).expect("configuration");
        config.node.id = id;
        let _telemetry = roost::telemetry::init(&config.log).ok();
        let args = roost::node::cluster::ClusterArgs {
            grpc_listen: config.grpc.listen,
            advertise: None,
            seeds: join,
            replication: 3,
        };
        let bindings = roost::app::bindings().bind::<Lab>("LAB");
        let node = roost::node::cluster::ClusterNode::start_with(config, args, bindings)
            .await
            .expect("start node");
        println!("roost node: grpc on {}", node.grpc_addr());
        println!("roost node: admin on http://{}", node.admin_addr());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        term.recv().await;
        let _ = node.shutdown().await;
    });
    std::process::exit(0);
}
