//! HTTP requests in, worker responses out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tracing::Instrument as _;

use super::{Shared, client_ip, websocket};
use crate::object::{self, ClientIp, Route, UpgradeLink, Worker, error_response};
use crate::telemetry::{metrics, traces};

/// Most of an oversized body read and discarded before the 413.
const DRAIN_BYTES: usize = 16 << 20;
/// Longest time spent discarding an oversized body before the 413.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) fn router<W: Worker>(shared: Arc<Shared<W>>) -> Router {
    Router::new().fallback(handle::<W>).with_state(shared)
}

/// One request, inside its server span (continuing the client's
/// `traceparent`), counted and timed by the route the worker named.
async fn handle<W: Worker>(
    State(shared): State<Arc<Shared<W>>>,
    peer: ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let started = Instant::now();
    let method = req.method().clone();
    let span = traces::http_server_span(&method, req.uri().path(), req.headers());
    let in_flight = metrics::http_in_flight();
    let resp = respond(shared, peer, req).instrument(span.clone()).await;
    drop(in_flight);
    let route = resp.extensions().get::<Route>().map(|r| r.0);
    let status = resp.status().as_u16();
    traces::record_http_response(&span, &method, route, status);
    let route = route.unwrap_or(metrics::OTHER_ROUTE);
    metrics::http_request(route, &method, status, started.elapsed());
    resp
}

async fn respond<W: Worker>(
    shared: Arc<Shared<W>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (mut parts, body) = req.into_parts();
    let upgrade = if wants_websocket(&parts.headers) {
        match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(up) => Some(up),
            Err(rejection) => {
                return rejection_response(rejection.status(), &rejection.body_text());
            }
        }
    } else {
        None
    };
    let ip = client_ip::client_ip(
        &parts.headers,
        peer,
        shared.opts.trusted_proxy_header.as_ref(),
        &shared.opts.trusted_proxies,
    );
    if upgrade.is_some() && !shared.upgrades.allow(ip, Instant::now()) {
        metrics::http_rate_limited("websocket_upgrade");
        return into_axum(error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!(
                "too many WebSocket upgrades from your address (at most {} a minute)",
                shared.opts.max_upgrades_per_ip_per_minute
            ),
        ));
    }
    let body = if upgrade.is_some() {
        Bytes::new()
    } else {
        match read_body(&shared, &parts.headers, body).await {
            Ok(body) => body,
            Err(resp) => return resp,
        }
    };
    let mut builder = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers.clone();
    }
    let mut worker_req = match builder.body(body) {
        Ok(r) => r,
        Err(e) => return rejection_response(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    worker_req.extensions_mut().insert(ClientIp(ip));

    let mut resp = shared.worker.fetch(worker_req, &shared.env).await;
    let link = resp
        .extensions_mut()
        .remove::<UpgradeLink>()
        .and_then(|l| l.take());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let route = resp.extensions().get::<Route>().copied();
        return match (upgrade, link) {
            (Some(up), Some(link)) => {
                let mut switched = websocket::upgrade(shared, up, link);
                if let Some(route) = route {
                    switched.extensions_mut().insert(route);
                }
                switched
            }
            _ => {
                tracing::error!("worker answered 101 without an accepted WebSocket");
                into_axum(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                ))
            }
        };
    }
    if let Some(link) = link {
        // Accepted but not returned as a 101: the client never connects.
        let _ = shared
            .client
            .socket_closed(&link.object, link.socket, 1006, "not upgraded".into());
    }
    into_axum(resp)
}

/// The whole request body, within the size limit and the read time; else
/// the response to send (413, 408 or 400).
async fn read_body<W: Worker>(
    shared: &Shared<W>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, axum::response::Response> {
    let limit = shared.opts.max_request_body_bytes;
    let mut body = body.into_data_stream();
    if content_length(headers).is_some_and(|n| n > limit) {
        return Err(too_large_after_draining(body, limit).await);
    }
    let deadline = shared.opts.body_read_timeout;
    let read = async {
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                return Err(rejection_response(
                    StatusCode::BAD_REQUEST,
                    "the request body broke off",
                ));
            };
            if buf.len() + chunk.len() > limit {
                return Err(too_large_after_draining(body, limit).await);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result,
        Err(_) => {
            metrics::http_connection_timed_out("body");
            let mut resp = into_axum(error_response(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &format!("the request body took longer than {deadline:?} to arrive"),
            ));
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(resp)
        }
    }
}

fn into_axum(resp: object::Response) -> axum::response::Response {
    resp.map(Body::from)
}

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A 413 for a body over `limit`, sent after reading and discarding what
/// the client sends of it (up to [`DRAIN_BYTES`], for up to
/// [`DRAIN_TIME`]): answering while the client is still writing makes the
/// kernel reset the connection, and the client would see that instead of
/// the 413. The connection closes after the answer.
async fn too_large_after_draining(
    mut body: BodyDataStream,
    limit: usize,
) -> axum::response::Response {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut drained = 0usize;
        while let Some(Ok(chunk)) = body.next().await {
            drained += chunk.len();
            if drained > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
    let mut resp = too_large(limit);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn too_large(limit: usize) -> axum::response::Response {
    into_axum(error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("request body exceeds {limit} bytes"),
    ))
}

fn rejection_response(status: StatusCode, message: &str) -> axum::response::Response {
    into_axum(error_response(status, "bad_request", message))
}
