//! The one translation between the object layer and the wire: protobuf
//! messages ⇄ requests, responses and socket messages; object errors and
//! handler errors ⇄ gRPC statuses.
//!
//! Everything that comes off the wire is validated here and refused with
//! INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for an oversized body); nothing
//! here panics on bad input.

use std::net::IpAddr;
use std::str::FromStr;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use super::pb;
use crate::id::{ObjectId, ObjectKey};
use crate::object::{
    self, ClientIp, HandlerError, Message, Namespaces, Request, Response, StableId,
};

/// Metadata naming the shard this node does not lead (FAILED_PRECONDITION).
pub const SHARD_METADATA: &str = "roost-shard";
/// Metadata with the stable error code (`not_owner`, `overloaded`, a
/// handler's own code, ...).
pub const ERROR_METADATA: &str = "roost-error";
/// Metadata with the HTTP status of a call handler's error.
pub const HTTP_STATUS_METADATA: &str = "roost-http-status";

/// The code of an oversized request body or call payload.
const BODY_TOO_LARGE: &str = "body_too_large";
/// Longest method name of a `Call`, in bytes.
pub(super) const MAX_CALL_METHOD_BYTES: usize = 1024;

impl From<object::Error> for Status {
    fn from(e: object::Error) -> Status {
        use object::Error as E;
        let code = match &e {
            E::UnknownNamespace(_) => Code::NotFound,
            E::InvalidBinding(_) | E::Migration(_) => Code::Internal,
            E::NotOwner { .. } => Code::FailedPrecondition,
            E::Overloaded => Code::ResourceExhausted,
            E::Commit(_) | E::Reset | E::ShuttingDown | E::Unavailable(_) | E::Unreachable(_) => {
                Code::Unavailable
            }
            E::CallTimeout { .. } => Code::DeadlineExceeded,
        };
        let mut status = Status::new(code, e.to_string());
        let meta = status.metadata_mut();
        meta.insert(ERROR_METADATA, MetadataValue::from_static(e.code()));
        if let E::NotOwner { shard } = e {
            meta.insert(SHARD_METADATA, MetadataValue::from(u32::from(shard)));
        }
        status
    }
}

/// The object error a remote node's `status` stands for. `key` is the
/// object that was called (for `UnknownNamespace`).
pub(super) fn error_from_status(status: &Status, key: &ObjectKey) -> object::Error {
    use object::Error as E;
    if never_sent(status) {
        return E::Unreachable(status.message().to_owned());
    }
    let meta = status.metadata();
    let shard = text(meta, SHARD_METADATA).and_then(|s| s.parse().ok());
    match (status.code(), text(meta, ERROR_METADATA), shard) {
        (Code::FailedPrecondition, _, Some(shard)) => E::NotOwner { shard },
        (Code::NotFound, Some("unknown_namespace"), _) => {
            E::UnknownNamespace(key.namespace.to_string())
        }
        (Code::ResourceExhausted, Some("overloaded"), _) => E::Overloaded,
        (Code::Unavailable, Some("object_reset"), _) => E::Reset,
        (Code::Unavailable, Some("shutting_down"), _) => E::ShuttingDown,
        (code, _, _) => E::Unavailable(format!("{code:?}: {}", status.message())),
    }
}

/// Whether `status` says the request was certainly never processed: this
/// process's own failure to send it — tonic's [`tonic::ConnectError`] (a
/// request that waits for a connection that never comes is never written to
/// the wire) or hyper's canceled request (queued on a connection that closed,
/// e.g. a node's GOAWAY as it shuts down, before hyper began to write it) —
/// or the node's HTTP/2 `REFUSED_STREAM` (a server refuses a stream it
/// opened after its GOAWAY, or beyond its stream limit, "prior to any
/// processing", RFC 9113 §8.7). All are in the status's source chain; a
/// status the remote node's gRPC layer sent has no source, so it never
/// qualifies.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>()
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled)
            || e.downcast_ref::<h2::Error>().is_some_and(refused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// A stream the peer reset with `REFUSED_STREAM`: never processed.
fn refused(e: &h2::Error) -> bool {
    e.is_reset() && e.is_remote() && e.reason() == Some(h2::Reason::REFUSED_STREAM)
}

/// A call handler's error as a status: the code follows the HTTP status,
/// which travels in metadata with the error code. 5xx messages stay in the
/// node's log.
pub(super) fn handler_error_to_status(e: &HandlerError) -> Status {
    let code = match e.status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        413 | 429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        s if s >= 500 => Code::Internal,
        _ => Code::FailedPrecondition,
    };
    let message = if e.status.is_server_error() {
        e.status
            .canonical_reason()
            .unwrap_or("internal error")
            .to_owned()
    } else {
        e.message.clone()
    };
    let mut status = Status::new(code, message);
    let meta = status.metadata_mut();
    meta.insert(HTTP_STATUS_METADATA, MetadataValue::from(e.status.as_u16()));
    if let Ok(value) = MetadataValue::try_from(e.code.as_ref()) {
        meta.insert(ERROR_METADATA, value);
    }
    status
}

/// The handler error `status` carries, if it is one (it has a valid
/// `roost-http-status`).
pub(super) fn handler_error_from_status(status: &Status) -> Option<HandlerError> {
    let meta = status.metadata();
    let http = text(meta, HTTP_STATUS_METADATA)?.parse::<u16>().ok()?;
    let http = StatusCode::from_u16(http).ok()?;
    let code = text(meta, ERROR_METADATA).unwrap_or("error").to_owned();
    Some(HandlerError::new(http, code, status.message()))
}

fn text<'a>(meta: &'a MetadataMap, key: &str) -> Option<&'a str> {
    meta.get(key)?.to_str().ok()
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// A socket's registration id from its 16 bytes; `None` when empty (an
/// older peer's).
pub(super) fn stable_from_pb(bytes: &[u8]) -> Result<Option<StableId>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let raw: [u8; 16] = bytes.try_into().map_err(|_| {
        Status::invalid_argument(format!(
            "a socket's stable id is 16 bytes, not {}",
            bytes.len()
        ))
    })?;
    Ok(Some(StableId::from_be_bytes(raw)))
}

/// A body or payload over `limit` bytes.
pub(super) fn check_size(what: &str, len: usize, limit: usize) -> Result<(), Status> {
    if len <= limit {
        return Ok(());
    }
    let mut status = Status::resource_exhausted(format!(
        "{what} is {len} bytes; the limit is {limit} (http.max_request_body_bytes)"
    ));
    status
        .metadata_mut()
        .insert(ERROR_METADATA, MetadataValue::from_static(BODY_TOO_LARGE));
    Err(status)
}

/// The object an [`pb::ObjectRef`] names, a name hashed under its
/// namespace's identity in `namespaces` (class migrations), carrying the
/// name the caller gave (checked against the id where the object runs).
pub(super) fn object_key(
    object: Option<pb::ObjectRef>,
    namespaces: &Namespaces,
) -> Result<ObjectKey, Status> {
    let object = object.ok_or_else(|| invalid("missing object"))?;
    if object.namespace.is_empty() {
        return Err(invalid("missing object namespace"));
    }
    match object.target {
        Some(pb::object_ref::Target::Name(name)) => {
            Ok(namespaces.key_from_name(&object.namespace, &name))
        }
        Some(pb::object_ref::Target::Id(id)) => {
            let id =
                ObjectId::parse(&id).map_err(|e| invalid(format!("invalid object id: {e}")))?;
            let key = ObjectKey::new(object.namespace, id);
            Ok(match object.id_name {
                Some(name) => key.with_name(name),
                None => key,
            })
        }
        None => Err(invalid("missing object name or id")),
    }
}

/// An object by id (what a remote client sends: the key is already
/// hashed), with the name its id was made from if the key carries it.
pub(super) fn object_ref(key: &ObjectKey) -> pb::ObjectRef {
    pb::ObjectRef {
        namespace: key.namespace.to_string(),
        target: Some(pb::object_ref::Target::Id(key.id.to_string())),
        id_name: key.name().map(|n| n.to_string()),
    }
}

/// A validated request for the object's fetch handler. The body must not
/// exceed `max_body` bytes.
pub(super) fn request_from_pb(
    req: pb::FetchRequest,
    max_body: usize,
    namespaces: &Namespaces,
) -> Result<(ObjectKey, Request), Status> {
    let key = object_key(req.object, namespaces)?;
    check_size("request body", req.body.len(), max_body)?;
    let method = if req.method.is_empty() {
        Method::GET
    } else {
        Method::from_bytes(req.method.as_bytes())
            .map_err(|_| invalid(format!("invalid HTTP method {:?}", req.method)))?
    };
    let path = if req.path.is_empty() { "/" } else { &req.path };
    if !path.starts_with('/') {
        return Err(invalid(format!("path must start with '/', got {path:?}")));
    }
    let path =
        PathAndQuery::from_str(path).map_err(|e| invalid(format!("invalid path {path:?}: {e}")))?;
    let uri = Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|e| invalid(format!("invalid path: {e}")))?;
    let mut request = Request::new(Bytes::from(req.body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for h in req.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(format!("invalid header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(&h.value)
            .map_err(|_| invalid(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }
    if !req.client_ip.is_empty() {
        let ip: IpAddr = req
            .client_ip
            .parse()
            .map_err(|_| invalid(format!("invalid client_ip {:?}", req.client_ip)))?;
        request.extensions_mut().insert(ClientIp(ip));
    }
    Ok((key, request))
}

/// `req` for `key`, as sent to the node that owns it.
pub(super) fn request_to_pb(key: &ObjectKey, req: Request) -> pb::FetchRequest {
    let client_ip = req
        .extensions()
        .get::<ClientIp>()
        .map(|ClientIp(ip)| ip.to_string())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    pb::FetchRequest {
        object: Some(object_ref(key)),
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned()),
        headers: headers_to_pb(&parts.headers),
        body: Vec::from(body),
        client_ip,
    }
}

pub(super) fn response_to_pb(resp: Response) -> pb::FetchResponse {
    let (parts, body) = resp.into_parts();
    pb::FetchResponse {
        status: u32::from(parts.status.as_u16()),
        headers: headers_to_pb(&parts.headers),
        body: Vec::from(body),
    }
}

/// A response from a remote node; a malformed one is that node's fault.
pub(super) fn response_from_pb(resp: pb::FetchResponse) -> Result<Response, object::Error> {
    let bad = |what: String| object::Error::Unavailable(format!("malformed response: {what}"));
    let status = u16::try_from(resp.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| bad(format!("status {}", resp.status)))?;
    let mut response = Response::new(Bytes::from(resp.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for h in resp.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad(format!("header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(&h.value)
            .map_err(|_| bad(format!("value of header {name}")))?;
        headers.append(name, value);
    }
    Ok(response)
}

fn headers_to_pb(headers: &http::HeaderMap) -> Vec<pb::Header> {
    headers
        .iter()
        .map(|(name, value)| pb::Header {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

/// A socket message; `seq` is its number (0 from a caller, or unnumbered).
pub(super) fn message_to_pb(msg: Message, seq: u64) -> pb::SocketMessage {
    let data = match msg {
        Message::Text(t) => pb::socket_message::Data::Text(t),
        Message::Binary(b) => pb::socket_message::Data::Binary(Vec::from(b)),
    };
    pb::SocketMessage {
        data: Some(data),
        seq,
    }
}

/// A message for the client, with its number.
pub(super) fn frame_from_pb(msg: pb::SocketMessage) -> Option<crate::object::ServerFrame> {
    let seq = msg.seq;
    Some(crate::object::ServerFrame::Message {
        message: message_from_pb(msg)?,
        seq,
    })
}

/// A socket message; `None` if it carries no data (a malformed message).
pub(super) fn message_from_pb(msg: pb::SocketMessage) -> Option<Message> {
    match msg.data? {
        pb::socket_message::Data::Text(t) => Some(Message::Text(t)),
        pb::socket_message::Data::Binary(b) => Some(Message::Binary(Bytes::from(b))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A name travels with an id (`id_name`) and comes back on the key; a
    /// name target is hashed under the namespace's identity.
    #[test]
    fn object_refs_carry_the_ids_name_and_names_hash_under_identities() {
        let plain = Namespaces::default();
        let named = ObjectKey::new("COUNTER", ObjectId::from_name("COUNTER", "a")).with_name("a");
        let wire = object_ref(&named);
        assert_eq!(wire.id_name.as_deref(), Some("a"));
        let back = object_key(Some(wire), &plain).expect("valid");
        assert_eq!(back, named);
        assert_eq!(back.name().map(|n| &**n), Some("a"));
        let unnamed = ObjectKey::new("COUNTER", ObjectId::from_name("COUNTER", "a"));
        assert_eq!(object_ref(&unnamed).id_name, None);

        let mut migrations = object::Migrations::default();
        migrations.rename("TALLY_OLD", "TALLY");
        let renamed = Namespaces::resolve([Arc::from("TALLY")], &migrations).expect("valid");
        let by_name = pb::ObjectRef {
            namespace: "TALLY".into(),
            target: Some(pb::object_ref::Target::Name("x".into())),
            id_name: None,
        };
        let key = object_key(Some(by_name), &renamed).expect("valid");
        assert_eq!(key.id, ObjectId::from_name("TALLY_OLD", "x"));
        assert_eq!(
            (&*key.namespace, key.name().map(|n| &**n)),
            ("TALLY", Some("x"))
        );
    }

    fn fetch(method: &str, path: &str, headers: Vec<pb::Header>) -> pb::FetchRequest {
        pb::FetchRequest {
            object: Some(pb::ObjectRef {
                namespace: "COUNTER".into(),
                target: Some(pb::object_ref::Target::Name("a".into())),
                id_name: None,
            }),
            method: method.into(),
            path: path.into(),
            headers,
            body: Vec::new(),
            client_ip: String::new(),
        }
    }

    #[test]
    fn requests_round_trip() {
        let key = ObjectKey::new("COUNTER", ObjectId::from_name("COUNTER", "a"));
        let mut req = http::Request::builder()
            .method("POST")
            .uri("/increment?amount=5")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(Bytes::from_static(b"body"))
            .expect("request");
        req.extensions_mut()
            .insert(ClientIp("203.0.113.9".parse().expect("ip")));
        let wire = request_to_pb(&key, req);
        let (back_key, back) = request_from_pb(wire, 4, &Namespaces::default()).expect("valid");
        assert_eq!(back_key, key);
        assert_eq!(back.method(), Method::POST);
        assert_eq!(back.uri(), "/increment?amount=5");
        let values: Vec<_> = back.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(back.body(), "body");
        assert_eq!(
            back.extensions().get::<ClientIp>().map(|c| c.0.to_string()),
            Some("203.0.113.9".to_owned())
        );
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        let header = |name: &str, value: &[u8]| pb::Header {
            name: name.into(),
            value: value.to_vec(),
        };
        let cases = [
            fetch("GE T", "/", vec![]),
            fetch("GET", "no-slash", vec![]),
            fetch("GET", "/a b", vec![]),
            fetch("GET", "/", vec![header("bad name", b"x")]),
            fetch("GET", "/", vec![header("x", b"new\nline")]),
            pb::FetchRequest {
                client_ip: "not an ip".into(),
                ..fetch("GET", "/", vec![])
            },
            pb::FetchRequest {
                object: None,
                ..fetch("GET", "/", vec![])
            },
            pb::FetchRequest {
                object: Some(pb::ObjectRef {
                    namespace: String::new(),
                    target: Some(pb::object_ref::Target::Name("a".into())),
                    id_name: None,
                }),
                ..fetch("GET", "/", vec![])
            },
            pb::FetchRequest {
                object: Some(pb::ObjectRef {
                    namespace: "COUNTER".into(),
                    target: Some(pb::object_ref::Target::Id("xyz".into())),
                    id_name: None,
                }),
                ..fetch("GET", "/", vec![])
            },
        ];
        for case in cases {
            let err =
                request_from_pb(case.clone(), 10, &Namespaces::default()).expect_err("invalid");
            assert_eq!(err.code(), Code::InvalidArgument, "{case:?}: {err:?}");
        }
        let big = pb::FetchRequest {
            body: vec![0; 11],
            ..fetch("", "", vec![])
        };
        let err = request_from_pb(big, 10, &Namespaces::default()).expect_err("too big");
        assert_eq!(err.code(), Code::ResourceExhausted);
        let (_, ok) =
            request_from_pb(fetch("", "", vec![]), 10, &Namespaces::default()).expect("defaults");
        assert_eq!((ok.method(), ok.uri().path()), (&Method::GET, "/"));
    }

    #[test]
    fn object_errors_survive_the_wire() {
        let key = ObjectKey::new("COUNTER", ObjectId::from_name("COUNTER", "a"));
        let cases = [
            (
                object::Error::NotOwner { shard: 7 },
                Code::FailedPrecondition,
            ),
            (object::Error::Overloaded, Code::ResourceExhausted),
            (object::Error::Reset, Code::Unavailable),
            (object::Error::ShuttingDown, Code::Unavailable),
            (
                object::Error::UnknownNamespace("COUNTER".into()),
                Code::NotFound,
            ),
        ];
        for (err, code) in cases {
            let wire_code = err.code();
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            let back = error_from_status(&status, &key);
            assert_eq!(back.code(), wire_code, "{back:?}");
            assert!(handler_error_from_status(&status).is_none());
        }
        let status = Status::from(object::Error::NotOwner { shard: 7 });
        assert_eq!(
            status.metadata().get(SHARD_METADATA).map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );
        let other = error_from_status(&Status::internal("boom"), &key);
        assert!(matches!(other, object::Error::Unavailable(_)), "{other:?}");
    }

    #[test]
    fn handler_errors_survive_the_wire() {
        let e = HandlerError::bad_request("invalid_amount", "amount must be an integer");
        let status = handler_error_to_status(&e);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(handler_error_from_status(&status), Some(e));

        let e = HandlerError::internal("disk on fire");
        let status = handler_error_to_status(&e);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("disk"));
        let back = handler_error_from_status(&status).expect("a handler error");
        assert_eq!((back.status, back.code.as_ref()), (e.status, "internal"));

        let e = HandlerError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "no");
        assert_eq!(handler_error_to_status(&e).code(), Code::Unimplemented);
    }
}
