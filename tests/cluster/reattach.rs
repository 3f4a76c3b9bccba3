//! WebSockets survive their owner's change: chat sockets in a few rooms
//! send steadily through one edge while every node in turn gets SIGTERM,
//! comes back and turns ready (as `helm upgrade` does), while a room's
//! leader is drained, and while one is SIGKILLed. The edge keeps each
//! client's socket open and re-attaches it to its room's new owner: no
//! client is disconnected, and (for the planned moves) every message a
//! client sends comes back to it (the room's broadcast) exactly once and in
//! order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::harness::{SHARDS, wait_converged};
use crate::procs;

const ROOMS: usize = 4;
const PER_ROOM: usize = 2;
/// Pause between one client's messages.
const EVERY: Duration = Duration::from_millis(40);

/// What one chat client saw.
#[derive(Default)]
struct Seen {
    /// Its own messages' numbers, as the room broadcast them back.
    echoes: Vec<u64>,
    /// When each echo came.
    at: Vec<Instant>,
    /// Messages it sent.
    sent: u64,
    /// Messages of the other members it got.
    others: u64,
    /// How its socket ended, if it did.
    closed: Option<String>,
}

struct Client {
    name: String,
    seen: Arc<Mutex<Seen>>,
}

impl Client {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Joins `room` as `name` and sends numbered messages every [`EVERY`]
/// until `stop`, recording what comes back.
async fn client(edge: &str, room: &str, name: String, stop: CancellationToken) -> Client {
    let url = format!(
        "{}/room/{room}?name={name}",
        edge.replace("http://", "ws://")
    );
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect through the edge");
    let (mut tx, mut rx) = ws.split();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let prefix = format!("{name}:");
    let reader = seen.clone();
    tokio::spawn(async move {
        let end = loop {
            match rx.next().await {
                Some(Ok(Message::Text(t))) => {
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        continue;
                    };
                    if v["type"] != "message" {
                        continue;
                    }
                    let text = v["text"].as_str().unwrap_or_default();
                    let mut seen = reader.lock().unwrap_or_else(|p| p.into_inner());
                    match text.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
                        Some(n) => {
                            seen.echoes.push(n);
                            seen.at.push(Instant::now());
                        }
                        None => seen.others += 1,
                    }
                }
                Some(Ok(Message::Close(frame))) => break format!("close {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("error {e}"),
                None => break "ended".to_owned(),
            }
        };
        reader.lock().unwrap_or_else(|p| p.into_inner()).closed = Some(end);
    });
    let writer = seen.clone();
    let me = name.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        for i in 0u64.. {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let text = json!({"type": "message", "text": format!("{me}:{i}")}).to_string();
            if tx.send(Message::Text(text.into())).await.is_err() {
                break;
            }
            writer.lock().unwrap_or_else(|p| p.into_inner()).sent = i + 1;
        }
        // Keep the socket open (the reader checks what is still coming).
        std::future::pending::<()>().await;
    });
    Client { name, seen }
}

/// Waits until `ok` holds for every client.
async fn wait_all(clients: &[Client], timeout: Duration, what: &str, ok: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if clients.iter().all(|c| ok(&c.seen())) {
            return;
        }
        let report: Vec<String> = clients
            .iter()
            .map(|c| {
                let s = c.seen();
                format!(
                    "{}: sent {} echoed {} closed {:?}",
                    c.name,
                    s.sent,
                    s.echoes.len(),
                    s.closed
                )
            })
            .collect();
        assert!(Instant::now() < deadline, "{what}: {report:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`ROOMS`] rooms named `{prefix}-{r}` with [`PER_ROOM`] clients each,
/// chatting until `stop`; returns once each client's messages come back.
async fn start_rooms(edge: &str, prefix: &str, stop: &CancellationToken) -> Vec<Client> {
    let mut clients = Vec::new();
    for r in 0..ROOMS {
        for c in 0..PER_ROOM {
            let name = format!("{prefix}{r}c{c}");
            clients.push(client(edge, &format!("{prefix}-{r}"), name, stop.clone()).await);
        }
    }
    wait_all(&clients, Duration::from_secs(60), "chatting", |s| {
        s.echoes.len() >= 10
    })
    .await;
    clients
}

/// Waits until ten more of every client's messages have come back.
async fn wait_progress(clients: &[Client], what: &str) {
    let marks: Vec<usize> = clients.iter().map(|c| c.seen().echoes.len()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (c, mark) in clients.iter().zip(marks) {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_all(std::slice::from_ref(c), left, what, |s| {
            s.echoes.len() >= mark + 10
        })
        .await;
    }
}

/// The node leading the shard of chat room `room`, once one does (the
/// shard may be between leaders when asked).
async fn leader_of_room(addrs: &[String], room: &str) -> u64 {
    let shard = roost::id::ObjectId::from_name("CHAT_ROOM", room).shard(SHARDS);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = crate::harness::groups(addrs)
            .await
            .get(&u32::from(shard))
            .map(|g| g.leader);
        if let Some(leader) = leader {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "the room's shard has a leader within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the clients saw once they stopped sending.
struct Tally {
    sent: u64,
    /// Room-mates' messages delivered.
    others: u64,
    /// The longest pause between one client's echoes.
    longest: Duration,
}

/// Stops the clients and checks that none was disconnected and that every
/// message came back to its sender exactly once, in order.
async fn stop_and_check_every_echo(clients: &[Client], stop: &CancellationToken) -> Tally {
    stop.cancel();
    wait_all(clients, Duration::from_secs(60), "every echo", |s| {
        s.closed.is_some() || s.echoes.len() as u64 >= s.sent
    })
    .await;
    let mut tally = Tally {
        sent: 0,
        others: 0,
        longest: Duration::ZERO,
    };
    for c in clients {
        let s = c.seen();
        assert_eq!(s.closed, None, "{} was disconnected", c.name);
        let expected: Vec<u64> = (0..s.sent).collect();
        assert_eq!(
            s.echoes, expected,
            "{}'s messages came back exactly once, in order",
            c.name
        );
        tally.longest =
            s.at.windows(2)
                .map(|w| w[1] - w[0])
                .fold(tally.longest, Duration::max);
        tally.sent += s.sent;
        tally.others += s.others;
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sockets_stay_open_through_a_rolling_restart() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = procs::cluster(root.path(), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_converged(&addrs, 3, Duration::from_secs(120)).await;
    let edge = procs::edge(&addrs);
    let stop = CancellationToken::new();
    let clients = start_rooms(&edge.addr, "r", &stop).await;

    let ids: Vec<u64> = nodes.keys().copied().collect();
    let mut restarts = BTreeMap::new();
    for id in ids {
        let proc = nodes.remove(&id).expect("node process");
        let (back, stopped) = crate::restart::sigterm_and_restart(root.path(), id, proc).await;
        nodes.insert(id, back);
        restarts.insert(id, stopped);
        wait_progress(&clients, "chatting after a restart").await;
    }
    wait_converged(&addrs, 3, Duration::from_secs(60)).await;

    let t = stop_and_check_every_echo(&clients, &stop).await;
    eprintln!(
        "rolling restart with {} sockets: {} messages, each echoed once in order; \
         0 disconnects; {} of {} broadcasts from room-mates arrived; \
         longest gap between a client's echoes {:.2} s; SIGTERM to exit per node {restarts:?}",
        clients.len(),
        t.sent,
        t.others,
        t.sent * (PER_ROOM as u64 - 1),
        t.longest.as_secs_f64(),
    );
    drop(edge);
    drop(nodes);
}

/// SIGKILL of the node leading a room's shard while the rooms chat: the
/// edge re-attaches the sockets once the shards elect new leaders. Messages
/// in flight to the dead node are not sent again (whether they ran is
/// unknown), so some may never come back; none comes back twice or out of
/// order, and every socket stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sockets_stay_open_when_a_leader_is_killed() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = procs::cluster(root.path(), 3, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_converged(&addrs, 3, Duration::from_secs(120)).await;
    let edge = procs::edge(&addrs);
    let stop = CancellationToken::new();
    let clients = start_rooms(&edge.addr, "k", &stop).await;

    let victim = leader_of_room(&addrs, "k-0").await;
    let proc = nodes.remove(&victim).expect("victim process");
    let addr = proc.addr.clone();
    tokio::task::spawn_blocking(move || proc.kill9())
        .await
        .expect("kill task");
    wait_progress(&clients, "chatting after the kill").await;
    let root_dir = root.path().to_owned();
    let back =
        tokio::task::spawn_blocking(move || procs::node(&root_dir, victim, &addr, &[], SHARDS))
            .await
            .expect("restart task");
    crate::restart::wait_ready(&back.admin, Duration::from_secs(120))
        .await
        .unwrap_or_else(|last| panic!("node {victim} is not ready again: {last}"));
    nodes.insert(victim, back);

    stop.cancel();
    wait_all(&clients, Duration::from_secs(60), "the last echo", |s| {
        s.closed.is_some() || s.echoes.last().is_some_and(|n| n + 1 >= s.sent)
    })
    .await;
    let (mut sent, mut unechoed, mut disconnects) = (0, 0, 0);
    for c in &clients {
        let s = c.seen();
        disconnects += usize::from(s.closed.is_some());
        assert!(
            s.echoes.windows(2).all(|w| w[0] < w[1]),
            "{}'s messages came back at most once, in order: {:?}",
            c.name,
            s.echoes
        );
        sent += s.sent;
        unechoed += s.sent - s.echoes.len() as u64;
    }
    eprintln!(
        "SIGKILL of node {victim} with {} sockets: {disconnects} disconnects; \
         {sent} messages sent, {unechoed} never echoed (in flight to the killed node: \
         lost, or committed without their broadcast)",
        clients.len()
    );
    assert_eq!(disconnects, 0, "sockets stay open through a SIGKILL");
    drop(edge);
    drop(nodes);
}

/// `roost node drain` of the node leading a chat room's shard, as an
/// operator scales in: its leaderships move while it keeps running, and
/// the sockets follow them with no disconnect, every message echoed once
/// and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sockets_stay_open_through_a_drain() {
    let _turn = crate::harness::one_at_a_time().await;
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = procs::cluster(root.path(), 4, SHARDS);
    let addrs: Vec<String> = nodes.values().map(|p| p.addr.clone()).collect();
    wait_converged(&addrs, 3, Duration::from_secs(120)).await;
    let ring: BTreeSet<u64> = nodes.keys().copied().collect();
    crate::scale_in::wait_placed(&addrs, &ring, Duration::from_secs(120)).await;
    let edge = procs::edge(&addrs);
    let stop = CancellationToken::new();
    let clients = start_rooms(&edge.addr, "d", &stop).await;

    let victim = leader_of_room(&addrs, "d-0").await;
    let victim_addr = nodes.get(&victim).expect("victim process").addr.clone();
    let drain_args: Vec<String> = vec![
        "node".into(),
        "drain".into(),
        "--join".into(),
        victim_addr,
        "--id".into(),
        victim.to_string(),
        "--timeout".into(),
        "180".into(),
    ];
    let out = tokio::task::spawn_blocking(move || procs::run(&drain_args))
        .await
        .expect("drain command ran");
    assert!(
        out.status.success(),
        "roost node drain failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_progress(&clients, "chatting after the drain").await;

    let t = stop_and_check_every_echo(&clients, &stop).await;
    eprintln!(
        "drain of node {victim} with {} sockets: {} messages, each echoed once in order; \
         0 disconnects; {} of {} broadcasts from room-mates arrived; \
         longest gap between a client's echoes {:.2} s",
        clients.len(),
        t.sent,
        t.others,
        t.sent * (PER_ROOM as u64 - 1),
        t.longest.as_secs_f64(),
    );
    drop(edge);
    drop(nodes);
}
