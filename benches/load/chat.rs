//! Chat fan-out: R rooms × M WebSocket members, every member a sender.
//!
//! Owns: the members' sockets, pacing (each sender keeps up to `window`
//! messages whose own echo it has not seen yet), broadcast latency (sender's
//! send → receipt at each other member), and the checks: every member of a
//! room saw the same message ids in the same order, and every message sent
//! reached every member. It uses only the seed's public contract
//! (`/room/:id/...` upgrade, `{"type":"message","text":...}` frames, the
//! `{"type":"message",id,name,text,timestamp}` broadcast), so it runs
//! unchanged against the seed on workerd. It never prints.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::report::{Figures, micros, sorted};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the members may take to receive what was sent, after the end.
const DRAIN: Duration = Duration::from_secs(15);
/// How long a sender waits for its own echo before giving up.
const ECHO_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ChatPlan {
    /// `http://host:port` (turned into `ws://`).
    pub base: String,
    pub run_id: String,
    pub rooms: usize,
    pub members: usize,
    pub window: usize,
    pub duration: Duration,
}

#[derive(Deserialize)]
struct Frame {
    r#type: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    text: String,
}

/// What one member saw.
struct Log {
    ids: Vec<String>,
    /// Latencies of messages from other members, µs.
    latencies_us: Vec<u32>,
    last_receipt: Instant,
    error: Option<String>,
}

/// Opens a member's socket and waits for its history frame (after which
/// the room broadcasts to it).
async fn join(url: String) -> Result<Ws, String> {
    let connect = async {
        // Without TCP_NODELAY a frame can wait ~40 ms for a delayed ACK.
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
            .await
            .map_err(|e| format!("connect {url}: {}", crate::sockets::describe(&e)))?;
        while let Some(msg) = ws.next().await {
            let msg = msg.map_err(|e| format!("{url}: {e}"))?;
            if let Message::Text(t) = msg
                && let Ok(f) = serde_json::from_str::<Frame>(&t)
                && f.r#type == "history"
            {
                return Ok(ws);
            }
        }
        Err(format!("{url}: closed before the history frame"))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("{url}: no history frame within {CONNECT_TIMEOUT:?}"))?
}

pub async fn run(plan: &ChatPlan, target: &str) -> Figures {
    let mut fig = Figures::new("chat", target);
    fig.set("rooms", plan.rooms as f64)
        .set("members", plan.members as f64)
        .set("window", plan.window as f64);
    match run_inner(plan, &mut fig).await {
        Ok(()) => {}
        Err(e) => fig.fail(e),
    }
    fig
}

async fn run_inner(plan: &ChatPlan, fig: &mut Figures) -> Result<(), String> {
    let ws_base = plan.base.replacen("http", "ws", 1);
    let mut joins = JoinSet::new();
    let limit = Arc::new(Semaphore::new(64));
    for room in 0..plan.rooms {
        for m in 0..plan.members {
            let url = format!("{ws_base}/room/chat-{}-{room}/ws?name=m{m}", plan.run_id);
            let limit = limit.clone();
            joins.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (room, m, join(url).await)
            });
        }
    }
    let mut sockets: Vec<Vec<Option<Ws>>> = (0..plan.rooms)
        .map(|_| (0..plan.members).map(|_| None).collect())
        .collect();
    while let Some(j) = joins.join_next().await {
        let (room, m, ws) = j.map_err(|e| format!("join task: {e}"))?;
        sockets[room][m] = Some(ws?);
    }

    let t0 = Instant::now();
    let end = t0 + plan.duration;
    let (done_tx, done_rx) = watch::channel(false);
    let expected: Arc<Vec<AtomicU64>> =
        Arc::new((0..plan.rooms).map(|_| AtomicU64::new(u64::MAX)).collect());
    let mut readers = JoinSet::new();
    let mut senders = JoinSet::new();
    for (room, members) in sockets.into_iter().enumerate() {
        for (m, ws) in members.into_iter().enumerate() {
            let Some(ws) = ws else {
                return Err("a member socket is missing".into());
            };
            let (sink, stream) = ws.split();
            let window = Arc::new(Semaphore::new(plan.window));
            let me = format!("m{m}");
            readers.spawn(read_member(
                stream,
                me,
                window.clone(),
                t0,
                done_rx.clone(),
                expected.clone(),
                room,
            ));
            senders.spawn(send_member(sink, window, t0, end, room, m));
        }
    }
    let mut sent = vec![0u64; plan.rooms];
    let mut send_errors = Vec::new();
    while let Some(j) = senders.join_next().await {
        match j {
            Ok((room, n, err)) => {
                sent[room] += n;
                if let Some(e) = err {
                    send_errors.push(e);
                }
            }
            Err(e) => send_errors.push(format!("sender task: {e}")),
        }
    }
    for (room, n) in sent.iter().enumerate() {
        expected[room].store(*n, Ordering::SeqCst);
    }
    let _ = done_tx.send(true);
    let mut logs: Vec<Vec<(usize, Log)>> = (0..plan.rooms).map(|_| Vec::new()).collect();
    while let Some(j) = readers.join_next().await {
        let (room, log) = j.map_err(|e| format!("reader task: {e}"))?;
        logs[room].push((0, log));
    }

    let total_sent: u64 = sent.iter().sum();
    let mut deliveries = 0u64;
    let mut missing = 0u64;
    let mut order_bad = 0usize;
    let mut last = t0;
    let mut latencies = Vec::new();
    let mut problems = send_errors;
    for (room, members) in logs.iter_mut().enumerate() {
        let want = sent[room];
        let reference = members
            .first()
            .map(|(_, l)| l.ids.clone())
            .unwrap_or_default();
        for (_, log) in members.iter_mut() {
            deliveries += log.ids.len() as u64;
            missing += want.saturating_sub(log.ids.len() as u64);
            if log.ids != reference {
                order_bad += 1;
            }
            last = last.max(log.last_receipt);
            latencies.append(&mut log.latencies_us);
            if let Some(e) = log.error.take() {
                problems.push(e);
            }
        }
    }
    let elapsed = last.duration_since(t0).as_secs_f64().max(1e-9);
    let latencies = sorted(latencies);
    fig.set("sent", total_sent as f64)
        .set("deliveries", deliveries as f64)
        .set("window_s", elapsed)
        .set("messages_per_s", total_sent as f64 / elapsed)
        .set("deliveries_per_s", deliveries as f64 / elapsed)
        .latencies("", &latencies)
        .set("missing", missing as f64)
        .set("order_mismatches", order_bad as f64);
    fig.notes.push(
        "deliveries count every broadcast frame received, the sender's own echo included; \
         latency is send → receipt at each other member"
            .into(),
    );
    if total_sent == 0 {
        fig.fail("no message was sent");
    }
    if missing > 0 {
        fig.fail(format!("{missing} deliveries missing"));
    }
    if order_bad > 0 {
        fig.fail(format!(
            "{order_bad} members saw another order than their room's first member"
        ));
    }
    problems.dedup();
    if let Some(p) = problems.first() {
        fig.fail(format!("{} errors, e.g. {p}", problems.len()));
    }
    Ok(())
}

/// Sends `{"type":"message","text":"<room>:<member>:<seq>:<µs since t0>"}`
/// until `end`, with at most `window` unechoed. Returns (room, sent, error).
async fn send_member(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    window: Arc<Semaphore>,
    t0: Instant,
    end: Instant,
    room: usize,
    m: usize,
) -> (usize, u64, Option<String>) {
    let mut seq = 0u64;
    loop {
        if Instant::now() >= end {
            return (room, seq, None);
        }
        match tokio::time::timeout(ECHO_TIMEOUT, window.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            _ => {
                return (
                    room,
                    seq,
                    Some(format!(
                        "room {room} member {m}: no echo within {ECHO_TIMEOUT:?}"
                    )),
                );
            }
        }
        let us = t0.elapsed().as_micros();
        let text = format!(r#"{{"type":"message","text":"{room}:{m}:{seq}:{us}"}}"#);
        if let Err(e) = sink.send(Message::Text(text.into())).await {
            return (
                room,
                seq,
                Some(format!("room {room} member {m}: send: {e}")),
            );
        }
        seq += 1;
    }
}

async fn read_member(
    mut stream: futures_util::stream::SplitStream<Ws>,
    me: String,
    window: Arc<Semaphore>,
    t0: Instant,
    mut done: watch::Receiver<bool>,
    expected: Arc<Vec<AtomicU64>>,
    room: usize,
) -> (usize, Log) {
    let mut log = Log {
        ids: Vec::new(),
        latencies_us: Vec::new(),
        last_receipt: t0,
        error: None,
    };
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let want = expected[room].load(Ordering::SeqCst);
        if log.ids.len() as u64 >= want {
            break;
        }
        if want != u64::MAX && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + DRAIN);
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => { log.error = Some(format!("room {room} {me}: {e}")); break; }
                    None => { log.error = Some(format!("room {room} {me}: socket closed")); break; }
                };
                let Ok(f) = serde_json::from_str::<Frame>(&text) else { continue };
                if f.r#type != "message" { continue; }
                let now = Instant::now();
                log.last_receipt = now;
                if f.name == me {
                    window.add_permits(1);
                } else if let Some(sent_us) = f.text.rsplit(':').next().and_then(|s| s.parse::<u64>().ok()) {
                    let at = now.duration_since(t0);
                    log.latencies_us.push(micros(at.saturating_sub(Duration::from_micros(sent_us))));
                }
                log.ids.push(f.id);
            }
            _ = done.changed() => {}
            _ = sleep => break,
        }
    }
    (room, log)
}
