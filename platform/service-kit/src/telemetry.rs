//! Tracing set up once per process: human-readable on a terminal, JSON with `LOG_FORMAT=json`.

use std::sync::Once;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::LogFormat;

static INIT: Once = Once::new();

/// The filter when `RUST_LOG` is unset or empty.
const DEFAULT_DIRECTIVES: &str = "info,sqlx=warn,hyper=warn,reqwest=warn";

/// Installs the global subscriber (once; later calls do nothing). The filter comes from
/// `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    INIT.call_once(|| {
        let directives = std::env::var("RUST_LOG")
            .ok()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_DIRECTIVES.to_string());
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let output = match format {
            LogFormat::Json => fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed(),
            LogFormat::Pretty => fmt::layer()
                .compact()
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .boxed(),
        };
        let targets = targets(&directives);
        let env_filter = targets
            .is_none()
            .then(|| EnvFilter::builder().parse_lossy(&directives));
        // Another subscriber may already be installed (tests): keep it.
        let _ = tracing_subscriber::registry()
            .with(targets)
            .with(env_filter)
            .with(output)
            .try_init();
    });
}

/// The filter for `directives` (`RUST_LOG` syntax) when they are a plain `target=level`
/// list, the usual case: [`Targets`], which decides once per call site. Otherwise (a
/// directive on spans or fields, `[...]`) [`EnvFilter`] is used, which tracks every span in
/// locks shared by all threads, taken again at each enter and exit: with a span per request
/// that cost more than the request's own work on a small answer.
///
/// Either filters the whole subscriber. As the output layer's own (per-layer) filter,
/// `Targets` let events of call sites it had enabled go missing at random under the NATS
/// client's and PostgreSQL driver's load (`up`'s test
/// `every_step_log_line_reaches_up_s_output`).
fn targets(directives: &str) -> Option<Targets> {
    if directives.contains('[') {
        return None;
    }
    directives.parse::<Targets>().ok()
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
