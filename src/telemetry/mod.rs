//! Telemetry: what the node reports about itself.
//!
//! Owns: the process-wide `tracing` subscriber ([`init`]): logs as text or
//! JSON lines ([`logging`]) and, when an OTLP endpoint is configured,
//! OpenTelemetry traces ([`traces`]); every Prometheus metric's name, labels
//! and help ([`metrics`]); the busiest-objects sketch ([`hot`]); and the
//! admin HTTP server that serves `/metrics` and `/admin/hot-objects`
//! ([`admin`]).
//!
//! `metrics`, `hot` and `traces` are leaves that every layer may use: they
//! import nothing from the crate but `config`. Never does: decide *what* to
//! log (each module logs where it handles an error), read configuration
//! other than what it is handed and the standard `OTEL_*` variables, or
//! reach into the layers (the node hands the admin server what to show).

pub mod admin;
pub mod hot;
mod logging;
pub mod metrics;
pub mod traces;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use logging::init_logging;
pub use traces::TraceOptions;

use crate::config::LogConfig;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{source_name} is not a valid log filter: {message}")]
    Filter {
        /// Where the filter came from: `RUST_LOG` or `log.filter`.
        source_name: &'static str,
        message: String,
    },
    #[error("install the log subscriber: {0}")]
    Install(String),
    #[error("set up the OTLP trace exporter: {0}")]
    Traces(String),
}

/// The installed subscriber's trace exporter, if any: flush it at exit.
#[must_use = "call shutdown() at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn traces_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks this thread while the export runs on the runtime.
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = stopped {
            tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
        }
    }
}

/// Installs the process-wide subscriber: logs as configured, and traces if
/// the environment names an OTLP endpoint ([`TraceOptions::from_env`]).
/// Must run inside a Tokio runtime. Fails if a subscriber is installed.
pub fn init(config: &LogConfig) -> Result<Telemetry, Error> {
    init_with(config, TraceOptions::from_env())
}

/// [`init`] with the trace options given.
pub fn init_with(
    config: &LogConfig,
    trace_options: Option<TraceOptions>,
) -> Result<Telemetry, Error> {
    let provider = trace_options.as_ref().map(traces::provider).transpose()?;
    traces::set_exporting(provider.is_some());
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("roost"))
            .with_filter(filter_fn(|meta| {
                if meta.is_span() {
                    meta.target() == traces::TARGET
                } else {
                    meta.target().starts_with("roost") && *meta.level() <= Level::INFO
                }
            }))
    });
    tracing_subscriber::registry()
        .with(logging::layer(config)?)
        .with(otel)
        .try_init()
        .map_err(|e| Error::Install(e.to_string()))?;
    if let Some(options) = &trace_options {
        tracing::info!(service = %options.service_name, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}
