//! Class migrations on a cluster: three `ClusterNode`s and an `EdgeNode` in
//! this process, talking real gRPC on loopback ports, restarted (data
//! directories and ports kept) between steps.
//!
//! 1. `SHELF` objects are written (values and an alarm each) through the
//!    edge's gRPC object API.
//! 2. Every process restarts with `renamed_classes = ["SHELF=BOOKCASE"]`:
//!    each object answers by name under `BOOKCASE` with its values, its
//!    alarm fires there, and `SHELF` is NOT_FOUND.
//! 3. Every process restarts with `BOOKCASE` deleted: the shards' leaders
//!    reclaim it (waited on through `roost_migration_*` metrics).
//! 4. Every process restarts with `SHELF` bound afresh (no migrations): its
//!    objects are empty and no alarm fires; `KEEP` objects never changed.

mod grpc_common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use grpc_common::{by_name, fetch, json_body};
use http::StatusCode;
use roost::cluster::status::gather;
use roost::config::Config;
use roost::node::cluster::{ClusterArgs, ClusterNode};
use roost::node::edge::EdgeNode;
use roost::object::{
    self, AlarmInfo, Bindings, Context, DurableObject, ListOptions, Request, Response, now_ms,
    query_param,
};
use roost::rpc::pb::objects_client::ObjectsClient;
use roost::rpc::tls::Tls;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

const SHARDS: u16 = 4;
const OBJECTS: usize = 16;
const VALUES: usize = 5;
const WAIT: Duration = Duration::from_secs(90);

/// `POST /fill?n=&alarm_in_ms=` stores `n` values and sets an alarm that
/// records it fired; `GET /` answers what it holds.
struct Shelf;

impl DurableObject for Shelf {
    async fn new(_: &mut Context) -> object::Result<Self> {
        Ok(Shelf)
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> object::Result<Response> {
        let param = |name| query_param(&req, name).and_then(|v| v.parse::<u64>().ok());
        let id = ctx.id();
        if req.uri().path() == "/fill" {
            for i in 0..param("n").unwrap_or(0) {
                ctx.storage().put(&format!("v-{i}"), format!("{id}:{i}"))?;
            }
            if let Some(after) = param("alarm_in_ms") {
                ctx.storage().set_alarm(now_ms() + after)?;
            }
        }
        let values = ctx.storage().list(&ListOptions {
            prefix: Some("v-".into()),
            ..ListOptions::default()
        })?;
        let intact = values
            .iter()
            .enumerate()
            .all(|(i, (_, v))| v[..] == *format!("{id}:{i}").as_bytes());
        let state = json!({
            "values": values.len(),
            "intact": intact,
            "alarm": ctx.storage().get_alarm()?.is_some(),
            "fired": ctx.storage().get("fired")?.is_some(),
            "name": ctx.name(),
        });
        Ok(object::json(StatusCode::OK, &state))
    }

    async fn alarm(&mut self, ctx: &mut Context, _: AlarmInfo) -> object::Result<()> {
        ctx.storage().put("fired", "yes")?;
        Ok(())
    }
}

/// The classes and migrations of one step.
#[derive(Clone, Copy)]
enum Step {
    Original,
    Renamed,
    Deleted,
    Rebound,
}

impl Step {
    fn bindings(self) -> Bindings {
        let bindings = Bindings::new().bind::<Shelf>("KEEP");
        match self {
            Step::Original | Step::Rebound => bindings.bind::<Shelf>("SHELF"),
            Step::Renamed => bindings.bind::<Shelf>("BOOKCASE"),
            Step::Deleted => bindings,
        }
    }

    /// The migrations, in the config (as an operator declares them).
    fn configure(self, config: &mut Config) {
        let o = &mut config.objects;
        match self {
            Step::Original | Step::Rebound => {}
            Step::Renamed => o.renamed_classes = vec!["SHELF=BOOKCASE".into()],
            Step::Deleted => {
                o.renamed_classes = vec!["SHELF=BOOKCASE".into()];
                o.deleted_classes = vec!["BOOKCASE".into()];
            }
        }
    }
}

fn config(dir: &Path, id: u64, step: Step) -> Config {
    let mut config = Config::default();
    config.node.id = id;
    config.node.shards = SHARDS;
    config.node.data_dir = dir.join(format!("node-{id}"));
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.grpc.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    step.configure(&mut config);
    config
}

struct Cluster {
    nodes: Vec<ClusterNode>,
    /// Each node's gRPC address, kept across restarts.
    addrs: Vec<SocketAddr>,
    edge: EdgeNode,
}

impl Cluster {
    async fn start(dir: &Path) -> Cluster {
        let mut nodes = Vec::new();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for id in 1..=3 {
            let seeds = addrs
                .first()
                .map(|a| vec![a.to_string()])
                .unwrap_or_default();
            let node = start_node(
                dir,
                id,
                Step::Original,
                "127.0.0.1:0".parse().expect("addr"),
                seeds,
            )
            .await;
            addrs.push(node.grpc_addr());
            nodes.push(node);
        }
        let edge = start_edge(dir, &addrs, Step::Original).await;
        let cluster = Cluster { nodes, addrs, edge };
        cluster.converged().await;
        cluster
    }

    /// Stops every process and starts them again for `step`, on the same
    /// data directories and gRPC ports.
    async fn restart(self, dir: &Path, step: Step) -> Cluster {
        let Cluster { nodes, addrs, edge } = self;
        edge.shutdown().await;
        for node in nodes {
            node.shutdown().await.expect("node stops");
        }
        let seeds = vec![addrs[0].to_string()];
        let starts = addrs.iter().enumerate().map(|(i, addr)| {
            let seeds = if i == 0 { Vec::new() } else { seeds.clone() };
            start_node(dir, i as u64 + 1, step, *addr, seeds)
        });
        let nodes = futures_util::future::join_all(starts).await;
        let edge = start_edge(dir, &addrs, step).await;
        let cluster = Cluster { nodes, addrs, edge };
        cluster.converged().await;
        cluster
    }

    /// Waits until every shard has a leader and three voters.
    async fn converged(&self) {
        let seeds: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(status) = gather(&seeds, &Tls::plain()).await
                && status.groups.len() == usize::from(SHARDS)
                && status
                    .groups
                    .iter()
                    .all(|g| g.leader.is_some() && g.voters.len() == 3)
            {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster converged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn grpc(&self) -> ObjectsClient<Channel> {
        ObjectsClient::connect(format!("http://{}", self.edge.grpc_addr()))
            .await
            .expect("the edge's gRPC connects")
    }

    async fn shutdown(self) {
        self.edge.shutdown().await;
        for node in self.nodes {
            node.shutdown().await.expect("node stops");
        }
    }
}

async fn start_node(
    dir: &Path,
    id: u64,
    step: Step,
    grpc_listen: SocketAddr,
    seeds: Vec<String>,
) -> ClusterNode {
    let args = ClusterArgs {
        grpc_listen,
        advertise: None,
        seeds,
        replication: 3,
    };
    ClusterNode::start_with(config(dir, id, step), args, step.bindings())
        .await
        .expect("node starts")
}

async fn start_edge(dir: &Path, nodes: &[SocketAddr], step: Step) -> EdgeNode {
    let config = config(dir, 100, step);
    let seeds = nodes.iter().map(ToString::to_string).collect();
    let migrations = config.objects.migrations().expect("valid migrations");
    let namespaces = step
        .bindings()
        .with_migrations(&migrations)
        .namespaces()
        .expect("valid bindings");
    EdgeNode::start_with(config, seeds, roost::app::SeedApp, namespaces)
        .await
        .expect("edge starts")
}

/// `method path` on object `name` of `namespace` through the edge,
/// retried while the cluster is settling (UNAVAILABLE, or not yet led).
async fn send(
    grpc: &mut ObjectsClient<Channel>,
    namespace: &str,
    name: &str,
    method: &str,
    path: &str,
) -> Result<Value, tonic::Status> {
    let deadline = Instant::now() + WAIT;
    loop {
        match grpc
            .fetch(fetch(by_name(namespace, name), method, path))
            .await
        {
            Ok(resp) => return Ok(json_body(&resp.into_inner())),
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::FailedPrecondition | Code::DeadlineExceeded
                ) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status),
        }
    }
}

/// `GET /` of object `name` of `namespace` (see [`send`]).
async fn read(
    grpc: &mut ObjectsClient<Channel>,
    namespace: &str,
    name: &str,
) -> Result<Value, tonic::Status> {
    send(grpc, namespace, name, "GET", "/").await
}

fn names(prefix: &str) -> Vec<String> {
    (0..OBJECTS).map(|i| format!("{prefix}-{i}")).collect()
}

/// The sum over this process's nodes of a migration counter for `ns`.
fn metric(name: &str, ns: &str) -> f64 {
    let text = roost::telemetry::metrics::install().render();
    let series = format!("{name}{{binding=\"{ns}\"}} ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&series))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_keeps_objects_and_alarms_and_a_delete_reclaims_them_on_a_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::start(dir.path()).await;
    let mut grpc = cluster.grpc().await;
    let fill = format!("/fill?n={VALUES}&alarm_in_ms=8000");
    for name in names("s") {
        let state = send(&mut grpc, "SHELF", &name, "POST", &fill)
            .await
            .expect("fill");
        assert_eq!(state["values"], VALUES, "{name}: {state}");
    }
    for name in names("k") {
        send(
            &mut grpc,
            "KEEP",
            &name,
            "POST",
            &format!("/fill?n={VALUES}"),
        )
        .await
        .expect("fill");
    }

    // Renamed: every value and alarm is there under the new name.
    let cluster = cluster.restart(dir.path(), Step::Renamed).await;
    let mut grpc = cluster.grpc().await;
    for name in names("s") {
        let state = read(&mut grpc, "BOOKCASE", &name).await.expect("read");
        assert_eq!(
            (&state["values"], &state["intact"], &state["name"]),
            (&json!(VALUES), &json!(true), &json!(name)),
            "{name}: {state}"
        );
        assert!(
            state["alarm"] == true || state["fired"] == true,
            "{name} kept its alarm: {state}"
        );
    }
    let deadline = Instant::now() + WAIT;
    for name in names("s") {
        while read(&mut grpc, "BOOKCASE", &name).await.expect("read")["fired"] != true {
            assert!(Instant::now() < deadline, "the alarm of {name} fired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let err = read(&mut grpc, "SHELF", "s-0")
        .await
        .expect_err("the old name is not served");
    assert_eq!(err.code(), Code::NotFound);

    // Deleted: the shards' leaders reclaim it (values, alarms, `fired`).
    let records = (OBJECTS * (VALUES + 1)) as f64;
    let cluster = cluster.restart(dir.path(), Step::Deleted).await;
    let deadline = Instant::now() + WAIT;
    while metric("roost_migration_deleted_records_total", "SHELF") < records {
        assert!(
            Instant::now() < deadline,
            "reclaimed: {} of {records} records deleted",
            metric("roost_migration_deleted_records_total", "SHELF")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut grpc = cluster.grpc().await;
    let err = read(&mut grpc, "BOOKCASE", "s-0")
        .await
        .expect_err("a deleted class is not served");
    assert_eq!(err.code(), Code::NotFound);

    // Bound afresh under its first name: nothing is left.
    let cluster = cluster.restart(dir.path(), Step::Rebound).await;
    let mut grpc = cluster.grpc().await;
    for name in names("s") {
        let state = read(&mut grpc, "SHELF", &name).await.expect("read");
        assert_eq!(
            (&state["values"], &state["alarm"], &state["fired"]),
            (&json!(0), &json!(false), &json!(false)),
            "{name}: {state}"
        );
    }
    for name in names("k") {
        let state = read(&mut grpc, "KEEP", &name).await.expect("read");
        assert_eq!(
            (&state["values"], &state["intact"]),
            (&json!(VALUES), &json!(true)),
            "{name}: {state}"
        );
    }
    cluster.shutdown().await;
}
