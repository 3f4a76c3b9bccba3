//! A tower layer on every gRPC server that counts calls by service, method
//! and status code, and times them (`roost_rpc_server_*`).
//!
//! The code is the `grpc-status` of a trailers-only answer (how tonic
//! answers every error a handler returns, and an unknown path), else of the
//! trailers at the end of the response body; a body dropped before its
//! trailers (the client went away) counts as CANCELLED. The service and
//! method labels come from the path only for calls a service answered: an
//! UNIMPLEMENTED answer is labelled `unknown`, so a client cannot grow the
//! label set.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::Frame;
use tonic::body::Body;

use crate::telemetry::metrics;

/// Wraps a server's routes in [`Metered`]. Make it after the metrics
/// recorder is installed: it keeps the handles it resolves.
#[derive(Clone, Debug, Default)]
pub struct MetricsLayer {
    handles: Handles,
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            handles: self.handles.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
    handles: Handles,
}

/// The metric handles of each path served, resolved once: a call then
/// records without building label sets or looking them up (it did ~6
/// allocations and two registry lookups per call). Keyed by the request
/// path, only of calls a service answered (others share
/// [`UNKNOWN_PATH`]), so the map is as bounded as the labels.
#[derive(Clone, Debug, Default)]
struct Handles(Arc<Mutex<HashMap<String, metrics::RpcHandles>>>);

/// The key of every call labelled `unknown`.
const UNKNOWN_PATH: &str = "/unknown/unknown";

impl Handles {
    fn record(&self, path: &str, code: i32, took: Duration) {
        let path = if code == tonic::Code::Unimplemented as i32 || split_path(path).is_none() {
            UNKNOWN_PATH
        } else {
            path
        };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(path) {
            let (service, method) = split_path(path).unwrap_or(("unknown", "unknown"));
            map.insert(path.to_owned(), metrics::rpc_handles(service, method));
        }
        if let Some(handles) = map.get_mut(path) {
            handles.record(code_name(code), took);
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        // A `PathAndQuery` shares the request's bytes: no copy.
        let path = req.uri().path_and_query().cloned();
        let handles = self.handles.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let resp = call.await?;
            let call = Call {
                path,
                started,
                handles,
            };
            if let Some(code) = status_code(resp.headers()) {
                call.done(code);
                return Ok(resp);
            }
            let (parts, body) = resp.into_parts();
            let body = Body::new(Recorded {
                inner: body,
                call: Some(call),
            });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A call whose end is still to be recorded.
struct Call {
    path: Option<http::uri::PathAndQuery>,
    started: Instant,
    handles: Handles,
}

impl Call {
    fn done(self, code: i32) {
        let path = self.path.as_ref().map_or("", |p| p.path());
        self.handles.record(path, code, self.started.elapsed());
    }
}

/// The body of an answer whose status comes in its trailers.
struct Recorded {
    inner: Body,
    call: Option<Call>,
}

impl http_body::Body for Recorded {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = self.call.take()
                {
                    call.done(status_code(trailers).unwrap_or(0));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.done(tonic::Code::Internal as i32);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.done(0);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.done(tonic::Code::Cancelled as i32);
        }
    }
}

fn status_code(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            Some((service, method))
        }
        _ => None,
    }
}

/// The canonical name of a gRPC status code.
pub(super) fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_codes_become_bounded_labels() {
        assert_eq!(
            split_path("/roost.v1.Objects/Fetch"),
            Some(("roost.v1.Objects", "Fetch"))
        );
        assert_eq!(split_path("/nonsense"), None);
        assert_eq!(split_path(UNKNOWN_PATH), Some(("unknown", "unknown")));
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(14), "UNAVAILABLE");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
        assert_eq!(code_name(-1), "UNKNOWN");
    }
}
