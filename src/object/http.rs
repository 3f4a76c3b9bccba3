//! Requests, responses and handler errors as objects and workers see them.
//!
//! Bodies are fully buffered [`Bytes`]: requests are size-limited at the
//! edge, so there is no streaming to get wrong.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

pub type Request = http::Request<Bytes>;
pub type Response = http::Response<Bytes>;

/// The client's IP address, set by the edge on every request it receives:
/// the socket peer, or the trusted proxy header when one is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The route a worker matched, as a template (`/counter/:name`), set on its
/// response. The edge labels its metrics and names its server span
/// (`http.route`) with it; without one the route is `other`. A template,
/// never the raw path: the set of values must stay small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route(pub &'static str);

/// A JSON response with `status`.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => with_type(status, "application/json", bytes.into()),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("serialize response: {e}"),
        ),
    }
}

/// A plain-text response with `status`.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    with_type(
        status,
        "text/plain; charset=UTF-8",
        Bytes::from(body.into()),
    )
}

/// The stable error body every Roost component uses:
/// `{"error": code, "message": message}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        message: &'a str,
    }
    let bytes = serde_json::to_vec(&Body {
        error: code,
        message,
    })
    .unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    with_type(status, "application/json", bytes.into())
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// An error a handler returns. For `fetch` it becomes a response with its
/// status and the stable JSON error body; the event's writes are discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
}

impl HandlerError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl fmt::Display,
    ) -> Self {
        HandlerError {
            status,
            code: code.into(),
            message: message.to_string(),
        }
    }

    /// 400 with a machine-readable `code`.
    pub fn bad_request(code: impl Into<Cow<'static, str>>, message: impl fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500; the message is logged, and only a generic text reaches the client.
    pub fn internal(message: impl fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The response the client sees. 5xx details stay in the log.
    pub fn to_response(&self) -> Response {
        if self.status.is_server_error() {
            error_response(self.status, &self.code, "internal error")
        } else {
            error_response(self.status, &self.code, &self.message)
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for HandlerError {}

/// Whether `req` asks for a WebSocket upgrade.
pub fn is_websocket_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The value of query parameter `name` in `req`'s URI, percent-decoded.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    form_pairs(query).find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space).
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'+' => Some((b' ', 1)),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => Some((hi << 4 | lo, 3)),
                _ => None,
            },
            _ => None,
        };
        let (byte, used) = decoded.unwrap_or((bytes[i], 1));
        out.push(byte);
        i += used;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request {
        http::Request::builder()
            .uri(uri)
            .body(Bytes::new())
            .expect("valid test request")
    }

    #[test]
    fn query_params_decode() {
        let r = req("/x?name=Al%20ice&amount=5&flag&plus=a+b&bad=%zz&end=%4");
        assert_eq!(query_param(&r, "name").as_deref(), Some("Al ice"));
        assert_eq!(query_param(&r, "amount").as_deref(), Some("5"));
        assert_eq!(query_param(&r, "flag").as_deref(), Some(""));
        assert_eq!(query_param(&r, "plus").as_deref(), Some("a b"));
        assert_eq!(query_param(&r, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(&r, "end").as_deref(), Some("%4"));
        assert_eq!(query_param(&r, "missing"), None);
    }

    #[test]
    fn server_errors_are_masked() {
        let e = HandlerError::internal("disk on fire");
        let body = e.to_response().into_body();
        assert!(!String::from_utf8_lossy(&body).contains("disk"));
        let e = HandlerError::bad_request("invalid_amount", "amount must be an integer");
        let body = e.to_response().into_body();
        assert!(String::from_utf8_lossy(&body).contains("amount must be an integer"));
    }
}
