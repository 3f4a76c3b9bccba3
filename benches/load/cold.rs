//! Cold activation: the first request to an object after it was evicted,
//! for objects holding about 1 KiB, 100 KiB and 1 MiB of state.
//!
//! The seed app offers no way to put 1 MiB in one object with one request
//! (a counter holds one number; a storage value is at most 128 KiB), so the
//! state is a chat room's history: `n` messages of equal size, sent over
//! the room's WebSocket. Two first requests are timed, each after its own
//! eviction: `GET /room/:id/` (the room activates — its constructor reads
//! the newest message key — and answers 400 "Expected WebSocket": the
//! activation alone), and `GET /room/:id/history`, which answers the newest
//! 100 messages: every size here keeps at most 100 messages, so that
//! request reads the whole state. Eviction is the
//! server's own idle eviction (`objects.idle_timeout_ms`, set short through
//! `ROOST_OBJECTS_IDLE_TIMEOUT_MS` for a `roost dev` started by this
//! scenario), confirmed by the `roost_objects_live` gauge reaching 0 before
//! any object is read. RocksDB's own caches stay as they are (warm): this
//! measures activating an object, not reading a cold disk.
//!
//! Owns: filling, waiting for eviction, the timed reads. It never prints.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::report::{Figures, micros, sorted};

/// Messages the room's `GET /history` returns at most.
const HISTORY: usize = 100;
/// Stored bytes of a message beyond its text (JSON field names, id, name,
/// timestamp), roughly.
const OVERHEAD: usize = 90;
const EVICT_DEADLINE: Duration = Duration::from_secs(120);

pub struct ColdPlan {
    pub base: String,
    pub admin: String,
    pub run_id: String,
    /// Objects per size.
    pub objects: usize,
    pub sizes: Vec<usize>,
}

pub fn size_label(bytes: usize) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{}MiB", bytes / 1024 / 1024)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

/// (messages, text length) whose stored size is about `bytes`.
fn shape(bytes: usize) -> (usize, usize) {
    let per = 1024 + OVERHEAD;
    let n = (bytes / per).clamp(1, HISTORY);
    (n, (bytes / n).saturating_sub(OVERHEAD).max(1))
}

pub async fn run(http: &reqwest::Client, plan: &ColdPlan, target: &str) -> Vec<Figures> {
    let mut out = Vec::new();
    for &size in &plan.sizes {
        let mut fig = Figures::new(format!("cold-{}", size_label(size)), target);
        if let Err(e) = one_size(http, plan, size, &mut fig).await {
            fig.fail(e);
        }
        out.push(fig);
    }
    out
}

fn room_url(base: &str, run_id: &str, size: usize, i: usize) -> String {
    format!("{base}/room/cold-{run_id}-{size}-{i}")
}

async fn one_size(
    http: &reqwest::Client,
    plan: &ColdPlan,
    size: usize,
    fig: &mut Figures,
) -> Result<(), String> {
    let (n, text_len) = shape(size);
    let text = "x".repeat(text_len);
    for i in 0..plan.objects {
        let url = room_url(&plan.base, &plan.run_id, size, i).replacen("http", "ws", 1);
        fill(&format!("{url}/ws?name=filler"), n, &text).await?;
    }
    let evict_from = Instant::now();
    wait_evicted(http, &plan.admin).await?;
    let evict_wait = evict_from.elapsed();
    let mut activate = Vec::new();
    for i in 0..plan.objects {
        let url = format!("{}/", room_url(&plan.base, &plan.run_id, size, i));
        let start = Instant::now();
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let _ = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        activate.push(micros(start.elapsed()));
        if status != reqwest::StatusCode::BAD_REQUEST {
            return Err(format!(
                "GET {url}: HTTP {status}, expected 400 Expected WebSocket"
            ));
        }
    }
    wait_evicted(http, &plan.admin).await?;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut body_bytes = 0usize;
    for i in 0..plan.objects {
        let url = format!("{}/history", room_url(&plan.base, &plan.run_id, size, i));
        let (t, len, count) = timed_get(http, &url).await?;
        if count != n {
            return Err(format!("{url}: {count} messages, expected {n}"));
        }
        body_bytes = len;
        cold.push(micros(t));
        let (t, _, _) = timed_get(http, &url).await?;
        warm.push(micros(t));
    }
    fig.set("objects", plan.objects as f64)
        .set("state_bytes", size as f64)
        .set("messages", n as f64)
        .set("history_body_bytes", body_bytes as f64)
        .latencies("activate_", &sorted(activate))
        .latencies("cold_", &sorted(cold))
        .latencies("warm_", &sorted(warm))
        .set("evict_wait_s", evict_wait.as_secs_f64());
    fig.notes.push(format!(
        "state = {n} chat messages of {text_len} characters; activate = first request \
         GET /room/:id/ (400, reads only the newest key); cold = first request GET \
         /room/:id/history, which reads all of them; each after an eviction confirmed by \
         roost_objects_live = 0"
    ));
    Ok(())
}

/// Sends `n` messages on a fresh socket, each after the previous one's
/// echo (so all are stored), then closes the socket.
async fn fill(url: &str, n: usize, text: &str) -> Result<(), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let frame = serde_json::json!({ "type": "message", "text": text }).to_string();
    for _ in 0..n {
        ws.send(Message::Text(frame.clone().into()))
            .await
            .map_err(|e| format!("{url}: send: {e}"))?;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .map_err(|_| format!("{url}: no echo within 30 s"))?;
            match msg {
                Some(Ok(Message::Text(t))) if t.contains(r#""type":"message""#) => break,
                Some(Ok(Message::Text(t))) if t.contains(r#""type":"error""#) => {
                    return Err(format!("{url}: {t}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("{url}: {e}")),
                None => return Err(format!("{url}: closed while filling")),
            }
        }
    }
    let _ = ws.close(None).await;
    // Read until the server's close, so the close event has run.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {}
    Ok(())
}

async fn wait_evicted(http: &reqwest::Client, admin: &str) -> Result<(), String> {
    let deadline = Instant::now() + EVICT_DEADLINE;
    loop {
        let live = crate::sys::gauge_sum(http, admin, "roost_objects_live").await?;
        if live == 0.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{live} objects still live {EVICT_DEADLINE:?} after filling"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET `url`: (latency, body bytes, array length).
async fn timed_get(http: &reqwest::Client, url: &str) -> Result<(Duration, usize, usize), String> {
    let start = Instant::now();
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    let t = start.elapsed();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let items: Vec<serde_json::Value> =
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: bad body: {e}"))?;
    Ok((t, body.len(), items.len()))
}
