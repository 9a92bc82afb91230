//! Tracing set up once per process: human-readable on a terminal, JSON with `LOG_FORMAT=json`.

use std::sync::Once;

use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
        // Another subscriber may already be installed (tests): keep it.
        let _ = tracing_subscriber::registry()
            .with(output.with_filter(filter(&directives)))
            .try_init();
    });
}

/// The filter for `directives` (`RUST_LOG` syntax). Plain `target=level` lists, the usual
/// case, get [`Targets`]: it decides once per call site. [`EnvFilter`] is used only when a
/// directive filters on spans or fields (`[...]`), because it tracks every span in locks
/// shared by all threads, taken again at each enter and exit: with a span per request that
/// cost more than the request's own work on a small answer.
fn filter<S>(directives: &str) -> Box<dyn tracing_subscriber::layer::Filter<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if !directives.contains('[')
        && let Ok(targets) = directives.parse::<Targets>()
    {
        return Box::new(targets);
    }
    Box::new(EnvFilter::builder().parse_lossy(directives))
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
