//! Idle WebSockets: open N chat sockets (a few per room), hold them, and
//! report the resident memory they cost at the edge and at the owners.
//!
//! One source address to one server port runs out of ephemeral ports near
//! 28,000 connections, so client sockets are bound round-robin to
//! 127.0.0.2, 127.0.0.3, ... (all of 127/8 is loopback on Linux). The
//! caller raises the open-file limit before it starts the servers, which
//! inherit it.
//!
//! Owns: the sockets and the RSS samples (/proc/PID/status VmRSS before
//! opening and once every socket got its history frame). It never prints.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::report::Figures;
use crate::sys::rss_bytes;

/// Connections per source address (under the ~28k ephemeral ports).
const PER_SOURCE: usize = 20_000;
/// Connection attempts in flight at once.
const OPENING: usize = 64;
/// Tries per socket: a refused upgrade (e.g. a 503 while the cluster is
/// busy) is retried, and counted.
const TRIES: u32 = 3;
/// The client's read buffer per socket (tungstenite's default, 128 KiB,
/// would cost the bench 6 GiB at 50,000 sockets).
const CLIENT_READ_BUFFER: usize = 4096;
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct SocketsPlan {
    pub base: String,
    pub run_id: String,
    pub sockets: usize,
    pub per_room: usize,
    /// The process serving the client connections.
    pub edge_pid: u32,
    /// The processes running the rooms (empty when the edge runs them).
    pub owner_pids: Vec<u32>,
}

fn rss_sum(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| rss_bytes(*p)).sum()
}

pub async fn run(plan: &SocketsPlan, target: &str) -> Figures {
    let mut fig = Figures::new("idle-sockets", target);
    if let Err(e) = run_inner(plan, &mut fig).await {
        fig.fail(e);
    }
    fig
}

async fn run_inner(plan: &SocketsPlan, fig: &mut Figures) -> Result<(), String> {
    let authority = plan
        .base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{}: expected an http:// URL", plan.base))?;
    let server: SocketAddr = authority
        .parse()
        .map_err(|e| format!("{authority}: not an ip:port ({e})"))?;
    let edge_before = rss_bytes(plan.edge_pid).unwrap_or(0);
    let owners_before = rss_sum(&plan.owner_pids);
    let (stop_tx, stop_rx) = watch::channel(false);
    let opening = Arc::new(Semaphore::new(OPENING));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut held = JoinSet::new();
    let started = Instant::now();
    for i in 0..plan.sockets {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8);
        let path = format!(
            "/room/idle-{}-{}/ws?name=s{i}",
            plan.run_id,
            i / plan.per_room.max(1)
        );
        let (opening, ready, mut stop) = (opening.clone(), ready_tx.clone(), stop_rx.clone());
        held.spawn(async move {
            let permit = opening.acquire_owned().await;
            let mut tries = 0;
            let opened = loop {
                tries += 1;
                let ws = tokio::time::timeout(OPEN_TIMEOUT, open(source, server, &path)).await;
                let err = match ws {
                    Ok(Ok(ws)) => break Ok(ws),
                    Ok(Err(e)) => e,
                    Err(_) => format!("{path}: not open within {OPEN_TIMEOUT:?}"),
                };
                if tries >= TRIES {
                    break Err(err);
                }
            };
            drop(permit);
            let mut ws = match opened {
                Ok(ws) => ws,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(tries - 1));
            // Hold the socket, answering pings, until told to stop.
            loop {
                tokio::select! {
                    msg = ws.next() => {
                        if !matches!(msg, Some(Ok(_))) {
                            return;
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
            let _ = ws.close(None).await;
        });
    }
    drop(ready_tx);
    let mut open_ok = 0usize;
    let mut retries = 0u32;
    let mut errors = Vec::new();
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ok(n) => {
                open_ok += 1;
                retries += n;
            }
            Err(e) => errors.push(e),
        }
        if open_ok + errors.len() == plan.sockets {
            break;
        }
    }
    let open_time = started.elapsed();
    let edge_after = rss_bytes(plan.edge_pid).unwrap_or(0);
    let owners_after = rss_sum(&plan.owner_pids);
    let _ = stop_tx.send(true);
    while held.join_next().await.is_some() {}

    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    let per = |before: u64, after: u64| {
        if open_ok == 0 {
            0.0
        } else {
            after.saturating_sub(before) as f64 / open_ok as f64 / 1024.0
        }
    };
    fig.set("sockets", open_ok as f64)
        .set("per_room", plan.per_room as f64)
        .set("open_s", open_time.as_secs_f64())
        .set("open_retries", f64::from(retries))
        .set("edge_rss_before_mib", mib(edge_before))
        .set("edge_rss_mib", mib(edge_after))
        .set("edge_kib_per_socket", per(edge_before, edge_after));
    if !plan.owner_pids.is_empty() {
        fig.set("owners_rss_before_mib", mib(owners_before))
            .set("owners_rss_mib", mib(owners_after))
            .set("owners_kib_per_socket", per(owners_before, owners_after));
    } else {
        fig.notes
            .push("edge and owner are one process: the edge figures include the owner".into());
    }
    fig.set(
        "edge_rss_at_50k_mib",
        mib(edge_before) + per(edge_before, edge_after) * 50_000.0 / 1024.0,
    );
    fig.notes.push(format!(
        "{} sockets, {} per chat room; RSS (VmRSS) sampled once every socket had its history frame",
        plan.sockets, plan.per_room
    ));
    if !errors.is_empty() {
        fig.fail(format!(
            "{} of {} sockets failed to open, e.g. {}",
            errors.len(),
            plan.sockets,
            errors[0]
        ));
    }
    Ok(())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Connects from `source` and waits for the room's history frame.
async fn open(source: Ipv4Addr, server: SocketAddr, path: &str) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let tcp = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect {server} from {source}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let url = format!("ws://{server}{path}");
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(config))
        .await
        .map_err(|e| format!("{url}: {}", describe(&e)))?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg.map_err(|e| format!("{url}: {e}"))?
            && t.contains(r#""type":"history""#)
        {
            return Ok(ws);
        }
    }
    Err(format!("{url}: closed before the history frame"))
}

/// A handshake error, with the body of an HTTP refusal (the server's reason).
pub fn describe(e: &tokio_tungstenite::tungstenite::Error) -> String {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            format!("HTTP {}: {}", resp.status(), body.trim())
        }
        e => e.to_string(),
    }
}
