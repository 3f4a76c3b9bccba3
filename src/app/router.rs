//! `SeedApp`: the seed's Hono router (plus the peer's `GET /api/ping`), as a
//! Roost [`Worker`].
//!
//! Routes, in the seed's registration order (Hono semantics: a trailing `/*`
//! also matches the bare prefix, `:param` is one non-empty segment and is
//! percent-decoded, HEAD is routed as GET and its body dropped, and a path
//! with no route for the method is 404):
//!
//! - `ALL /room/:roomId` and `/room/:roomId/*` → the rate-limit middleware
//!   (as for `/api/*`, counted apart, `limits.chat_requests_per_minute`;
//!   not in the seed), then `CHAT_ROOM` named `roomId`,
//!   with the `/room/:roomId` prefix removed from the path; query, method,
//!   headers (`Upgrade`!) and body kept.
//! - `GET /api/*` → the rate-limit middleware (100 requests a minute per
//!   client IP, from [`ClientIp`], an IPv6 /64 counting as one client;
//!   `"unknown"` if the edge set none), then
//!   `GET /api/ping` → `{"ok":true}`; other `/api` paths are 404.
//! - `GET /counter/:name` → `COUNTER` named `name`, request as is.
//! - `POST /counter/:name/:action` → `COUNTER` with a bare `POST /{action}`
//!   (query kept, headers and body not, as in the seed).
//! - anything else → 404 `{"error":"not_found",...}`.

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::json;

use super::rate_limiter::bucket_name;
use crate::object::{
    self, ClientIp, Env, HandlerError, Request, Response, Route, Worker, error_response,
};

/// Requests a client IP may make to `/api/*` per window.
const API_LIMIT: u64 = 100;
const API_WINDOW_MS: u64 = 60_000;
const REMAINING_HEADER: &str = "x-ratelimit-remaining";

/// The seed's router. It keeps no state: which client IP to trust is the
/// edge's decision, carried in the [`ClientIp`] request extension.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeedApp;

impl Worker for SeedApp {
    async fn fetch(&self, req: Request, env: &Env) -> Response {
        let head = req.method() == Method::HEAD;
        let mut response = route(req, env).await;
        if head {
            *response.body_mut() = Bytes::new();
        }
        response
    }
}

async fn route(req: Request, env: &Env) -> Response {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(&path).split('/').collect();
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    // Each route's template labels the edge's metrics and trace span.
    let (route, result) = match segments.as_slice() {
        ["room", room, ..] if !room.is_empty() => {
            ("/room/:roomId/*", chat_room(req, env, room).await)
        }
        ["api", "ping"] if get => ("/api/ping", api(req, env).await),
        ["api", ..] if get => ("/api/*", api(req, env).await),
        ["counter", name] if get && !name.is_empty() => {
            ("/counter/:name", counter_get(req, env, name).await)
        }
        ["counter", name, action]
            if method == Method::POST && !name.is_empty() && !action.is_empty() =>
        {
            (
                "/counter/:name/:action",
                counter_post(req, env, name, action).await,
            )
        }
        _ => return not_found(&method, &path),
    };
    let mut response = result.unwrap_or_else(Fail::into_response);
    response.extensions_mut().insert(Route(route));
    response
}

/// Why a route ends early.
enum Fail {
    /// Calling an object failed (unknown binding, shard unavailable, ...).
    Object(object::Error),
    /// A bug on our side; the detail goes to the log, not to the client.
    Internal(String),
}

impl From<object::Error> for Fail {
    fn from(e: object::Error) -> Self {
        Fail::Object(e)
    }
}

impl Fail {
    fn into_response(self) -> Response {
        match self {
            Fail::Object(e) => e.to_response(),
            Fail::Internal(detail) => {
                let err = HandlerError::internal(detail);
                tracing::error!(error = %err, "seed router failed");
                err.to_response()
            }
        }
    }
}

type Routed = Result<Response, Fail>;

async fn chat_room(req: Request, env: &Env, raw_room: &str) -> Routed {
    let per_minute = super::options().chat_requests_per_minute;
    if per_minute > 0
        && let Err(limited) = rate_limit(&req, env, "room:", per_minute).await?
    {
        return Ok(limited);
    }
    let stub = stub(env, "CHAT_ROOM", raw_room)?;
    // Strip the raw segment, so an encoded id still leaves the right path.
    let rest = req
        .uri()
        .path()
        .get("/room/".len() + raw_room.len()..)
        .unwrap_or("");
    let path = if rest.is_empty() { "/" } else { rest };
    let uri = with_path(req.uri(), path)?;
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    Ok(stub.fetch(Request::from_parts(parts, body)).await?)
}

#[derive(Deserialize)]
struct LimiterVerdict {
    allowed: bool,
    remaining: u64,
}

/// The rate-limit middleware, then the `/api` routes behind it.
async fn api(req: Request, env: &Env) -> Routed {
    let remaining = match rate_limit(&req, env, "", API_LIMIT).await? {
        Ok(remaining) => remaining,
        Err(limited) => return Ok(limited),
    };
    let mut response = if req.uri().path() == "/api/ping" {
        object::json(StatusCode::OK, &json!({ "ok": true }))
    } else {
        not_found(req.method(), req.uri().path())
    };
    response
        .headers_mut()
        .insert(REMAINING_HEADER, HeaderValue::from(remaining));
    Ok(response)
}

/// The rate-limit middleware: the requests the client has left in the
/// window, or the 429 to answer. Each `scope` counts apart (`/api/*` has
/// the seed's limiter names, the client address; rooms prefix `room:`).
async fn rate_limit(
    req: &Request,
    env: &Env,
    scope: &str,
    limit: u64,
) -> Result<Result<u64, Response>, Fail> {
    let client = req
        .extensions()
        .get::<ClientIp>()
        .map_or_else(|| "unknown".to_owned(), |ip| bucket_name(ip.0));
    let ip = format!("{scope}{client}");
    let limiter = stub(env, "RATE_LIMITER", &ip)?;
    // A POST: the check records the request, so an edge must not repeat
    // it when its outcome is unknown (it repeats only GET, HEAD, OPTIONS).
    let check = http::Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://limiter/?limit={limit}&window={API_WINDOW_MS}"
        ))
        .body(Bytes::new())
        .map_err(|e| Fail::Internal(format!("build limiter request: {e}")))?;
    let answer = limiter.fetch(check).await?;
    let verdict: LimiterVerdict = serde_json::from_slice(answer.body()).map_err(|e| {
        Fail::Internal(format!(
            "rate limiter answered {} with an unexpected body: {e}",
            answer.status()
        ))
    })?;
    if !verdict.allowed {
        return Ok(Err(object::json(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({ "error": "Rate limited" }),
        )));
    }
    Ok(Ok(verdict.remaining))
}

async fn counter_get(req: Request, env: &Env, raw_name: &str) -> Routed {
    let stub = stub(env, "COUNTER", raw_name)?;
    let (mut parts, body) = req.into_parts();
    // HEAD is routed as GET; the counter answers GET.
    parts.method = Method::GET;
    Ok(stub.fetch(Request::from_parts(parts, body)).await?)
}

async fn counter_post(req: Request, env: &Env, raw_name: &str, raw_action: &str) -> Routed {
    let stub = stub(env, "COUNTER", raw_name)?;
    let uri = with_path(req.uri(), &format!("/{raw_action}"))?;
    let forward = http::Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(Bytes::new())
        .map_err(|e| Fail::Internal(format!("build counter request: {e}")))?;
    Ok(stub.fetch(forward).await?)
}

/// The stub of the object named `raw_name` (a path segment, decoded here)
/// in namespace `binding`.
fn stub(env: &Env, binding: &str, raw_name: &str) -> Result<object::Stub, Fail> {
    let namespace = env.namespace(binding)?;
    Ok(namespace.get(namespace.id_from_name(&decode_segment(raw_name))))
}

/// `uri` with its path replaced and its query kept.
fn with_path(uri: &Uri, path: &str) -> Result<Uri, Fail> {
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|e| Fail::Internal(format!("rewrite path: {e}")))?,
    );
    Uri::from_parts(parts).map_err(|e| Fail::Internal(format!("rewrite uri: {e}")))
}

/// Percent-decodes a path segment (`+` stays `+`). Like Hono, a segment
/// that does not decode to UTF-8 is used as it is.
fn decode_segment(raw: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match pair {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| raw.to_owned())
}

fn not_found(method: &Method, path: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route for {method} {path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_like_hono_params() {
        assert_eq!(decode_segment("a%20b"), "a b");
        assert_eq!(decode_segment("a+b"), "a+b");
        assert_eq!(decode_segment("%2Fx"), "/x");
        assert_eq!(decode_segment("100%"), "100%");
        assert_eq!(decode_segment("%zz"), "%zz");
        assert_eq!(decode_segment("%C3%A9"), "é");
        assert_eq!(decode_segment("%FF"), "%FF", "invalid UTF-8 stays raw");
    }

    /// Percent-encodes every byte but the unreserved ones.
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(crate::rpc::test_cases(512))]

        #[test]
        fn encoded_segments_decode_to_what_was_encoded(s in proptest::prelude::any::<String>()) {
            proptest::prop_assert_eq!(decode_segment(&encode(&s)), s);
        }

        #[test]
        fn decoding_never_panics_and_keeps_plain_text(s in proptest::prelude::any::<String>()) {
            let decoded = decode_segment(&s);
            if !s.contains('%') {
                proptest::prop_assert_eq!(decoded, s);
            }
        }

        #[test]
        fn strict_ints_are_exactly_signed_digits(s in "[+-]?[0-9]{0,21}|[ -~]{0,8}") {
            use crate::app::{IntError, parse_strict_int};
            let digits = s.strip_prefix(['+', '-']).unwrap_or(&s);
            let well_formed = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            match parse_strict_int(&s) {
                Ok(v) => {
                    proptest::prop_assert!(well_formed);
                    proptest::prop_assert_eq!(s.parse::<i64>().ok(), Some(v));
                }
                Err(IntError::OutOfRange) => {
                    proptest::prop_assert!(well_formed && s.parse::<i64>().is_err());
                }
                Err(IntError::Malformed) => proptest::prop_assert!(!well_formed),
            }
        }

        #[test]
        fn query_params_decode_form_encoding(
            name in "[a-z]{1,8}",
            value in proptest::prelude::any::<String>(),
            noise in "[a-z]{0,4}",
        ) {
            // Form encoding: a space is `+`, everything else reserved is %XX.
            let encoded: String = encode(&value).replace("%20", "+");
            let uri = format!("http://h/p?{noise}x=1&{name}={encoded}&{name}=second");
            let req: crate::object::Request = http::Request::builder()
                .uri(uri)
                .body(Bytes::new())
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            // The first occurrence wins.
            let expected = if name == format!("{noise}x") { "1".to_owned() } else { value };
            proptest::prop_assert_eq!(crate::object::query_param(&req, &name), Some(expected));
        }
    }

    #[test]
    fn path_rewrite_keeps_query_and_authority() {
        let uri: Uri = "http://h:1/room/x/history?a=1".parse().expect("uri");
        let out = with_path(&uri, "/history").ok().expect("rewrite");
        assert_eq!(out.to_string(), "http://h:1/history?a=1");
        let uri: Uri = "/counter/x/increment".parse().expect("uri");
        assert_eq!(
            with_path(&uri, "/increment").ok().expect("rewrite"),
            "/increment"
        );
    }
}
