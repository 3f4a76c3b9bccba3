//! Traces: OpenTelemetry spans exported over OTLP/gRPC, and the spans the
//! layers open so that one trace shows edge → handler → commit.
//!
//! Export is on only when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not
//! `true`); the exporter reads the other standard `OTEL_EXPORTER_OTLP_*`
//! variables itself. `service.name` is `OTEL_SERVICE_NAME`, else `roost`.
//! A client's W3C `traceparent` is continued by the edge's server span.
//!
//! Only spans with target [`TARGET`] are exported (plus log events at info
//! and above of the `roost` crate, as span events): long-lived spans and
//! openraft's internal ones stay in the logs. Span names and attributes
//! follow OpenTelemetry's HTTP semantic conventions for the edge; Roost's
//! own attributes are under `roost.*`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, Method};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::Error;
use super::metrics::method_label;

/// The target of every span meant for traces.
pub const TARGET: &str = "roost::trace";

/// Whether this process exports traces (set once by `telemetry::init`).
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(super) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Whether spans are exported: without an exporter, trace context is
/// neither read from nor written to requests, and the spans that only
/// traces need are debug-level (see `detail_span!`).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A span that traces need but logs do not (they carry no id a log line
/// lacks): at info level when spans are exported, else at debug, so that
/// a node logging at `info` does not build it for every call. (The
/// request's and the object event's spans stay at info: they carry the
/// request and object ids of log lines.) With the default `info` filter
/// the four spans of a write were 5% of a cluster's CPU samples on the hot
/// counter (benches/profile.md).
macro_rules! detail_span {
    ($($arg:tt)*) => {
        if exporting() {
            tracing::info_span!($($arg)*)
        } else {
            tracing::debug_span!($($arg)*)
        }
    };
}

/// Where traces go, from the standard environment variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceOptions {
    pub service_name: String,
}

impl TraceOptions {
    /// `Some` if an OTLP endpoint is configured in the environment.
    pub fn from_env() -> Option<TraceOptions> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<TraceOptions> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return None;
        }
        set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
        Some(TraceOptions {
            service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| "roost".to_owned()),
        })
    }
}

/// Builds the OTLP exporter and the tracer provider, and installs the W3C
/// trace-context propagator. Must run inside a Tokio runtime (the gRPC
/// channel's task is spawned on it).
pub(super) fn provider(options: &TraceOptions) -> Result<SdkTracerProvider, Error> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| Error::Traces(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(options.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(provider)
}

/// Reads `traceparent`/`tracestate` from request headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A request id for the logs: 16 hex digits.
struct RequestId(u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The server span of one HTTP request, continuing the client's trace if
/// its headers carry one. Named `{method}` until the route is known (see
/// [`record_http_response`]).
pub fn http_server_span(method: &Method, path: &str, headers: &HeaderMap) -> Span {
    let method = method_label(method);
    let span = tracing::info_span!(
        target: TARGET,
        "http.server",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        url.path = path,
        http.route = Empty,
        http.response.status_code = Empty,
        request_id = %RequestId(rand::random()),
    );
    if !exporting() {
        return span;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// Completes the server span: `http.route` and the `{method} {route}` name
/// when the worker named its route, the status, and an error status for 5xx.
pub fn record_http_response(span: &Span, method: &Method, route: Option<&str>, status: u16) {
    if let Some(route) = route {
        span.record("http.route", route);
        // The OpenTelemetry span has started by now, and tracing-opentelemetry
        // reads `otel.name` only before; rename it directly.
        if exporting() {
            let name = format!("{} {route}", method_label(method));
            span.context().span().update_name(name);
        }
    }
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The span of one event in an object's executor, a child of `parent` (the
/// span that was current when the event was dispatched; a root if none).
pub fn object_event_span(
    parent: &Span,
    binding: &str,
    object: &dyn fmt::Display,
    shard: u16,
    event: &'static str,
) -> Span {
    tracing::info_span!(
        target: TARGET,
        parent: parent,
        "object.event",
        otel.name = %format_args!("{binding} {event}"),
        roost.object = %object,
        roost.shard = i64::from(shard),
        roost.event = event,
    )
}

/// The span of waiting for an event's writes to commit (`gate` = `write`)
/// or for a read barrier (`read_barrier`), a child of the current span.
pub fn commit_span(shard: u16, gate: &'static str) -> Span {
    let name = match gate {
        "write" => "raft.commit",
        _ => "raft.read_barrier",
    };
    detail_span!(
        target: TARGET,
        "raft.commit",
        otel.name = name,
        otel.status_code = Empty,
        roost.shard = i64::from(shard),
        roost.gate = gate,
    )
}

/// Reads `traceparent`/`tracestate` from gRPC request metadata.
struct MetadataReader<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes `traceparent`/`tracestate` into gRPC request metadata.
struct MetadataWriter<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Carries the current span's trace context to the node a call goes to.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    if !exporting() {
        return;
    }
    let context = Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut MetadataWriter(metadata))
    });
}

/// Carries the current span's trace context in a map (a `FetchMany`
/// call's `trace_context`).
pub fn inject_current_into(map: &mut std::collections::HashMap<String, String>) {
    if !exporting() {
        return;
    }
    let context = Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, map));
}

/// The server span of one gRPC call (`rpc.*` semantic conventions),
/// continuing the caller's trace from the request metadata.
pub fn rpc_server_span(
    service: &'static str,
    method: &'static str,
    metadata: &tonic::metadata::MetadataMap,
) -> Span {
    let span = detail_span!(
        target: TARGET,
        "rpc.server",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    if !exporting() {
        return span;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataReader(metadata)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn traces_are_off_without_an_endpoint() {
        assert_eq!(TraceOptions::from_vars(vars(&[])), None);
        assert_eq!(
            TraceOptions::from_vars(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            None
        );
        assert_eq!(
            TraceOptions::from_vars(vars(&[("OTEL_SERVICE_NAME", "x")])),
            None
        );
    }

    #[test]
    fn either_endpoint_variable_turns_traces_on() {
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            let on = TraceOptions::from_vars(vars(&[(var, "http://collector:4317")]));
            assert_eq!(on.map(|o| o.service_name).as_deref(), Some("roost"));
        }
        let named = TraceOptions::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SERVICE_NAME", "roost-eu"),
        ]));
        assert_eq!(named.map(|o| o.service_name).as_deref(), Some("roost-eu"));
        let disabled = TraceOptions::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]));
        assert_eq!(disabled, None);
    }
}
