//! A chat session across the death of its room's owner (SIGKILL): the edge
//! keeps the client's socket open and re-attaches it to the room's new
//! owner, the client goes on chatting on the same socket, and no
//! acknowledged message is missing from the history.

#[path = "cluster/procs.rs"]
mod procs;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use roost::id::ObjectId;
use roost::rpc::pb;
use roost::rpc::pb::cluster_client::ClusterClient;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SHARDS: u16 = 8;
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn leaders(nodes: &[String]) -> Vec<(u32, u64, usize)> {
    let mut out = Vec::new();
    for addr in nodes {
        let Ok(mut c) = ClusterClient::connect(format!("http://{addr}")).await else {
            continue;
        };
        let Ok(resp) = c.watch(pb::WatchRequest {}).await else {
            continue;
        };
        let mut stream = resp.into_inner();
        if let Ok(Ok(Some(view))) =
            tokio::time::timeout(Duration::from_secs(2), stream.message()).await
        {
            out.extend(
                view.leaders
                    .into_iter()
                    .filter(|l| !l.voters.is_empty())
                    .map(|l| (l.shard, l.node, l.voters.len())),
            );
        }
    }
    out
}

async fn converged(nodes: &[String]) -> Vec<(u32, u64, usize)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = leaders(nodes).await;
        if l.len() == usize::from(SHARDS) && l.iter().all(|(_, _, v)| *v == 3) {
            return l;
        }
        assert!(Instant::now() < deadline, "cluster converges: {l:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next data or close frame.
async fn next(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("valid frame");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("JSON"),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Connects to the room, retrying while the cluster fails over; returns
/// the socket and the history it was greeted with.
async fn join(edge: &str, name: &str) -> (Ws, Vec<String>) {
    let url = format!(
        "{}/room/failover?name={name}",
        edge.replace("http://", "ws://")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await
            && let Message::Text(t) = next(&mut ws).await
        {
            let h: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if h["type"] == "history" {
                let texts = h["messages"]
                    .as_array()
                    .expect("messages")
                    .iter()
                    .filter_map(|m| m["text"].as_str().map(str::to_owned))
                    .collect();
                return (ws, texts);
            }
        }
        assert!(Instant::now() < deadline, "the room is reachable again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_survives_the_death_of_its_owner() {
    let root = tempfile::tempdir().expect("temp dir");
    let n1 = procs::node(root.path(), 1, "127.0.0.1:0", &[], SHARDS);
    let seeds = vec![n1.addr.clone()];
    let n2 = procs::node(root.path(), 2, "127.0.0.1:0", &seeds, SHARDS);
    let n3 = procs::node(root.path(), 3, "127.0.0.1:0", &seeds, SHARDS);
    let addrs = vec![n1.addr.clone(), n2.addr.clone(), n3.addr.clone()];
    converged(&addrs).await;
    let edge = procs::edge(&addrs);

    let (mut alice, history) = join(&edge.addr, "Alice").await;
    assert!(history.is_empty());
    assert_eq!(next_json(&mut alice).await["type"], "join");
    let mut acked = Vec::new();
    for i in 0..5 {
        let text = format!("before-{i}");
        alice
            .send(Message::Text(
                json!({"type": "message", "text": text}).to_string().into(),
            ))
            .await
            .expect("send");
        // The echo leaves the room only after the message is committed.
        let echo = next_json(&mut alice).await;
        assert_eq!(echo["text"], text.as_str());
        acked.push(text);
    }

    // Kill the room's owner.
    let shard = ObjectId::from_name("CHAT_ROOM", "failover").shard(SHARDS);
    let owner = leaders(&addrs)
        .await
        .into_iter()
        .find(|(s, _, _)| *s == u32::from(shard))
        .map(|(_, n, _)| n)
        .expect("the room's shard has a leader");
    let mut procs = vec![(1u64, n1), (2, n2), (3, n3)];
    let at = procs
        .iter()
        .position(|(id, _)| *id == owner)
        .expect("owner process");
    let (_, victim) = procs.remove(at);
    victim.kill9();

    // The socket stays open: the edge re-attaches it to the new owner, and
    // the client's next message goes round the room as before (the edge may
    // hold it while the shard elects a leader).
    alice
        .send(Message::Text(
            json!({"type": "message", "text": "after"})
                .to_string()
                .into(),
        ))
        .await
        .expect("send");
    let echo = loop {
        match next(&mut alice).await {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                if v["type"] == "message" {
                    break v;
                }
            }
            other => panic!("the socket stays open, got {other:?}"),
        }
    };
    assert_eq!(echo["text"], "after");

    // A newcomer's history has every acknowledged message.
    let (_bob, history) = join(&edge.addr, "Bob").await;
    for text in acked.iter().map(String::as_str).chain(["after"]) {
        assert!(
            history.iter().any(|h| h == text),
            "{text} missing from {history:?}"
        );
    }
    drop(edge);
    drop(procs);
}
