//! Tracing set up once per process: human-readable on a terminal, JSON with `LOG_FORMAT=json`.

use std::sync::Once;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

static INIT: Once = Once::new();

/// Installs the global subscriber (once; later calls do nothing). The filter comes from
/// `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    INIT.call_once(|| {
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        let result = match format {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .try_init(),
            LogFormat::Pretty => builder.compact().try_init(),
        };
        // Another subscriber may already be installed (tests): keep it.
        let _ = result;
    });
}

/// The log format from `LOG_FORMAT` (pretty when unset).
pub fn format_from_env(env: &crate::Env) -> Result<LogFormat, crate::ConfigError> {
    env.parse_or("LOG_FORMAT", LogFormat::Pretty)
}

/// Logs for tests: set `TEST_LOG=1` to see them.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init(LogFormat::Pretty);
    }
}
