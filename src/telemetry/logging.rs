//! Logs: a `tracing` subscriber writing to stderr, as text or JSON lines.
//!
//! stdout stays free for what a command prints (`roost config`'s TOML, the
//! `serving` line of `roost dev`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::Error;
use crate::config::{LogConfig, LogFormat};

/// Installs the process-wide subscriber with logs only (no traces): the
/// filter is `RUST_LOG` when it is set and not empty, else `config.filter`.
/// Fails if called twice. See [`super::init`] for logs and traces.
pub fn init_logging(config: &LogConfig) -> Result<(), Error> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(layer(config)?)
        .try_init()
        .map_err(|e| Error::Install(e.to_string()))
}

/// The log layer: text or JSON lines on stderr, with its own filter, so
/// that another layer (traces) can see spans the logs leave out.
pub(super) fn layer<S>(config: &LogConfig) -> Result<Box<dyn Layer<S> + Send + Sync>, Error>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = choose_filter(config, rust_log.as_deref())?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    Ok(match config.format {
        LogFormat::Text => fmt
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt.json().with_ansi(false).with_filter(filter).boxed(),
    })
}

/// The filter from `RUST_LOG` if given and not empty, else from the config.
fn choose_filter(config: &LogConfig, rust_log: Option<&str>) -> Result<EnvFilter, Error> {
    let (source_name, directives) = match rust_log {
        Some(value) if !value.trim().is_empty() => ("RUST_LOG", value),
        _ => ("log.filter", config.filter.as_str()),
    };
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| Error::Filter {
            source_name,
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(filter: &str) -> LogConfig {
        LogConfig {
            filter: filter.to_owned(),
            ..LogConfig::default()
        }
    }

    #[test]
    fn rust_log_replaces_the_configured_filter() {
        let filter = choose_filter(&config("info"), Some("roost=trace")).unwrap();
        assert_eq!(filter.to_string(), "roost=trace");
    }

    #[test]
    fn configured_filter_applies_without_rust_log() {
        for rust_log in [None, Some(""), Some("  ")] {
            let filter = choose_filter(&config("warn,roost=debug"), rust_log).unwrap();
            assert!(filter.to_string().contains("roost=debug"), "{filter}");
        }
    }

    #[test]
    fn bad_filters_name_their_source() {
        let err = choose_filter(&config("info"), Some("roost=loud")).unwrap_err();
        assert!(err.to_string().starts_with("RUST_LOG "), "{err}");
        let err = choose_filter(&config("roost=loud"), None).unwrap_err();
        assert!(err.to_string().starts_with("log.filter "), "{err}");
    }
}
