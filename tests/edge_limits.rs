//! The edge's limits against the real binary (`roost dev`, whose HTTP
//! listener is the edge's code): the header timeout, the per-address
//! connection cap, the WebSocket upgrade rate, the client address behind a
//! trusted proxy, and the rate limit on `/room/*`.
//!
//! Clients are told apart by their source address: Linux routes all of
//! 127.0.0.0/8 to loopback, so a socket bound to 127.0.0.2 is "another
//! client" of a server on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Roost;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from `from` (a loopback address).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

/// Sends a GET and reads the whole response (the server closes or says
/// its length): status line, headers and body as text.
async fn raw_get(stream: &mut TcpStream, path: &str, extra: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn json_body(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// A metric's value (summed over its series) from `/metrics`.
async fn metric(roost: &Roost, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", roost.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_closed_by_the_header_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start_with_env(
        dir.path(),
        &[
            ("ROOST_HTTP_HEADER_READ_TIMEOUT_MS", "1500"),
            ("ROOST_HTTP_BODY_READ_TIMEOUT_MS", "1500"),
        ],
    );

    // Three slow clients: one dribbles a request line, one the HTTP/2
    // preface, one a request line to the admin listener; each sends one
    // byte a second.
    let mut closed_after = Vec::new();
    for (to, request) in [
        (roost.addr, "GET /counter/slow HTTP/1.1\r\nHost: x\r\n\r\n"),
        (roost.addr, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        (roost.admin, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        let mut stream = TcpStream::connect(to).await.expect("connect");
        let started = Instant::now();
        let mut closed = false;
        for byte in request.bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(_)) => panic!("a response to an incomplete request"),
                Err(_) => {} // Still open: send the next byte.
            }
        }
        assert!(closed, "a connection sending a byte a second stays open");
        closed_after.push(started.elapsed());
    }
    for elapsed in &closed_after {
        assert!(
            *elapsed < Duration::from_secs(8),
            "closed only after {elapsed:?}"
        );
    }
    assert!(metric(&roost, "roost_http_connections_timed_out_total").await >= 3.0);

    // A body that trickles in gets 408 once its time is up.
    let mut stream = TcpStream::connect(roost.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /counter/slow/increment HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n1",
        )
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&resp), 408, "{resp}");
    assert_eq!(json_body(&resp)["error"], "body_timeout", "{resp}");

    // A client that sends its request at once is served.
    let resp = reqwest::get(roost.url("/counter/fast")).await.expect("get");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_connection_cap_refuses_clearly_while_others_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Long timeouts: the held connections must stay open however slow the
    // machine is.
    let roost = Roost::start_with_env(
        dir.path(),
        &[
            ("ROOST_HTTP_MAX_CONNECTIONS_PER_IP", "4"),
            ("ROOST_HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
            ("ROOST_HTTP_IDLE_TIMEOUT_MS", "60000"),
        ],
    );

    // One greedy client holds its four connections open...
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.1", roost.addr).await);
    }
    // ...so its fifth is answered 429 with a JSON body, not reset.
    let mut fifth = connect_from("127.0.0.1", roost.addr).await;
    let resp = raw_get(&mut fifth, "/counter/x", "").await;
    assert_eq!(status_of(&resp), 429, "{resp}");
    assert_eq!(json_body(&resp)["error"], "too_many_connections", "{resp}");

    // Another client is served normally, meanwhile.
    for _ in 0..3 {
        let mut other = connect_from("127.0.0.2", roost.addr).await;
        let resp = raw_get(&mut other, "/counter/x", "").await;
        assert_eq!(status_of(&resp), 200, "{resp}");
        assert_eq!(json_body(&resp)["value"], 0);
    }
    assert!(metric(&roost, "roost_http_connections_refused_total").await >= 1.0);

    // Once the greedy client lets go, it is served again.
    drop(held);
    let served = common::wait_until(Duration::from_secs(10), || async {
        let mut again = connect_from("127.0.0.1", roost.addr).await;
        status_of(&raw_get(&mut again, "/counter/x", "").await) == 200
    })
    .await;
    assert!(served, "the client is served after closing its connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start_with_env(
        dir.path(),
        &[
            ("ROOST_HTTP_TRUSTED_PROXY_HEADER", "X-Forwarded-For"),
            ("ROOST_HTTP_TRUSTED_PROXIES", r#"["127.0.0.3/32"]"#),
        ],
    );
    // An untrusted client makes up a new X-Forwarded-For for every request:
    // it is still one client, limited to 100 a minute.
    let mut statuses = Vec::new();
    for i in 0..101 {
        let mut s = connect_from("127.0.0.1", roost.addr).await;
        let spoof = format!("X-Forwarded-For: 198.51.100.{}\r\n", i % 250);
        let resp = raw_get(&mut s, "/api/ping", &spoof).await;
        statuses.push(status_of(&resp));
    }
    assert!(statuses[..100].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[100], 429);

    // Through the trusted proxy, the header names the client: a fresh one,
    // even when the client wrote its own entry in front.
    let mut s = connect_from("127.0.0.3", roost.addr).await;
    let resp = raw_get(
        &mut s,
        "/api/ping",
        "X-Forwarded-For: 127.0.0.1, 203.0.113.9\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("x-ratelimit-remaining: 99"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_rate_limited_per_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let roost = Roost::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..101 {
        let resp = client
            .get(roost.url("/room/limited/history"))
            .send()
            .await
            .expect("history");
        statuses.push(resp.status().as_u16());
    }
    assert!(statuses[..100].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[100], 429);
    // Another client is not affected.
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().expect("ip")))
        .build()
        .expect("client");
    let resp = other
        .get(roost.url("/room/limited/history"))
        .send()
        .await
        .expect("history");
    assert_eq!(resp.status(), 200);
}
