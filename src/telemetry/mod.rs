//! Telemetry: what the node reports about itself.
//!
//! Owns: installing the process-wide log subscriber ([`init_logging`]).
//! OpenTelemetry traces and Prometheus metrics (with every metric name in one
//! place) will live here too; they are not built yet.
//!
//! Never does: decide *what* to log (each module logs where it handles an
//! error) or read configuration other than what it is handed.

mod logging;

pub use logging::init_logging;

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
}
