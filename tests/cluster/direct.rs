//! Counter operations sent straight to one node over the public gRPC
//! object API (`roost.v1.Objects/Fetch`), bypassing the edge, timed on a
//! [`Recorder`]'s clock like the load's own (the caller decides when to
//! add them to its history): an answer other than 200 with a value, an
//! error or a timeout is an unknown outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use roost::id::ObjectId;
use roost::rpc::pb::objects_client::ObjectsClient;
use roost::rpc::pb::{self, object_ref};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::history::{Kind, Op, Outcome, Recorder};

/// The shard of counter `name` in a cluster of `shards` shards.
pub fn shard_of(name: &str, shards: u16) -> u32 {
    u32::from(ObjectId::from_name("COUNTER", name).shard(shards))
}

/// A client of one node's object API. Cheap to clone.
#[derive(Clone)]
pub struct Direct {
    client: ObjectsClient<Channel>,
}

impl Direct {
    /// A client of the node at `addr` (host:port); connects on first use.
    pub fn new(addr: &str) -> Direct {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a node address")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        Direct {
            client: ObjectsClient::new(channel),
        }
    }

    /// Increments (`Kind::Incr`) or reads counter `{prefix}-{counter}`,
    /// giving up after `timeout`, timed on `clock`.
    pub async fn op(
        &self,
        clock: &Recorder,
        prefix: &str,
        counter: usize,
        kind: Kind,
        timeout: Duration,
    ) -> Op {
        let (method, path) = match kind {
            Kind::Incr => ("POST", "/increment"),
            Kind::Read => ("GET", "/"),
        };
        let req = pb::FetchRequest {
            object: Some(pb::ObjectRef {
                namespace: "COUNTER".into(),
                target: Some(object_ref::Target::Name(format!("{prefix}-{counter}"))),
                id_name: None,
            }),
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            client_ip: String::new(),
        };
        let mut client = self.client.clone();
        let start = clock.now();
        let answer = tokio::time::timeout(timeout, client.fetch(req)).await;
        let outcome = match answer {
            Ok(Ok(resp)) if resp.get_ref().status == 200 => {
                serde_json::from_slice::<serde_json::Value>(&resp.get_ref().body)
                    .ok()
                    .and_then(|v| v["value"].as_i64())
                    .map_or(Outcome::Unknown, Outcome::Ok)
            }
            _ => Outcome::Unknown,
        };
        Op {
            counter,
            kind,
            start,
            end: clock.now(),
            outcome,
        }
    }
}

/// `tasks` tasks sending increments and reads (alternately) of `counters`
/// to the node at `addr`, one at a time each, until `stop` is set; each
/// task returns the operations it sent, timed on `clock`.
pub fn probe(
    addr: &str,
    clock: &Recorder,
    prefix: &str,
    counters: &[usize],
    tasks: usize,
    timeout: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<Vec<Op>>> {
    (0..tasks)
        .map(|t| {
            let direct = Direct::new(addr);
            let (clock, stop) = (clock.clone(), stop.clone());
            let (prefix, counters) = (prefix.to_owned(), counters.to_vec());
            tokio::spawn(async move {
                let mut ops = Vec::new();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) && !counters.is_empty() {
                    let kind = if k % 2 == 0 { Kind::Incr } else { Kind::Read };
                    let counter = counters[(t + k) % counters.len()];
                    ops.push(direct.op(&clock, &prefix, counter, kind, timeout).await);
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ops
            })
        })
        .collect()
}
