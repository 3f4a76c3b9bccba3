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

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::Frame;
use tonic::body::Body;

use crate::telemetry::metrics;

/// Wraps a server's routes in [`Metered`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
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
        let path = req.uri().path().to_owned();
        let call = self.inner.call(req);
        Box::pin(async move {
            let resp = call.await?;
            let call = Call { path, started };
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
    path: String,
    started: Instant,
}

impl Call {
    fn done(self, code: i32) {
        let (service, method) = if code == tonic::Code::Unimplemented as i32 {
            ("unknown".to_owned(), "unknown".to_owned())
        } else {
            split_path(&self.path)
        };
        let took: Duration = self.started.elapsed();
        metrics::rpc_served(service, method, code_name(code), took);
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
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            (service.to_owned(), method.to_owned())
        }
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

/// The canonical name of a gRPC status code.
fn code_name(code: i32) -> &'static str {
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
            ("roost.v1.Objects".to_owned(), "Fetch".to_owned())
        );
        assert_eq!(
            split_path("/nonsense"),
            ("unknown".to_owned(), "unknown".to_owned())
        );
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(14), "UNAVAILABLE");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
        assert_eq!(code_name(-1), "UNKNOWN");
    }
}
