//! The console's settings, from the environment.

use switchyard_bus_client::BusConfig;
use switchyard_kit::{CommonConfig, ConfigError, Env};

use crate::map::AppMap;

/// What the console reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    /// The app, from the registry.
    pub map: AppMap,
    /// The app's bus (`EVENT_BUS_URL` and the rest, as its services read them).
    pub bus: BusConfig,
    /// The HTTP bus's ops listener (`EVENT_BUS_OPS_URL`): its subscribers' positions,
    /// parked events and dead letters.
    pub bus_ops: Option<String>,
    /// Events kept for the log (`CONSOLE_KEEP_EVENTS`, 100 to 1,000,000; default 10,000).
    pub keep_events: usize,
    /// Spans kept for waterfalls and journeys (`CONSOLE_KEEP_SPANS`, 1,000 to 10,000,000;
    /// default 100,000).
    pub keep_spans: usize,
    /// Whether the page may replay dead letters (`CONSOLE_REPLAY`, default true). Off
    /// where the console's bus user may only read (the production overlays): a replay
    /// publishes an event, which only its producer and the operator may.
    pub replay: bool,
}

impl Settings {
    /// Reads them; `common` and `map` come from the registry.
    pub fn from_env(env: &Env, common: CommonConfig, map: AppMap) -> Result<Settings, ConfigError> {
        // It reads the bus and never makes or changes its streams.
        let bus = BusConfig::from_env(env)?.watching();
        let bus_ops = match env.raw("EVENT_BUS_OPS_URL") {
            Some(url) => {
                switchyard_kit::config::check_url("EVENT_BUS_OPS_URL", &url, &["http", "https"])?;
                Some(url.trim_end_matches('/').to_string())
            }
            None => None,
        };
        Ok(Settings {
            common,
            map,
            bus,
            bus_ops,
            keep_events: bounded(env, "CONSOLE_KEEP_EVENTS", 10_000, 100, 1_000_000)?,
            keep_spans: bounded(env, "CONSOLE_KEEP_SPANS", 100_000, 1_000, 10_000_000)?,
            replay: env.parse_or("CONSOLE_REPLAY", true)?,
        })
    }
}

fn bounded(
    env: &Env,
    name: &str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let n: usize = env.parse_or(name, default)?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(ConfigError::Malformed {
            name: name.to_string(),
            value: n.to_string(),
            reason: format!("between {min} and {max}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_named_when_broken() {
        let env = Env::from_pairs([("CONSOLE_KEEP_EVENTS", "5")]);
        let e = bounded(&env, "CONSOLE_KEEP_EVENTS", 10, 100, 1000)
            .expect_err("too few")
            .to_string();
        assert!(e.contains("CONSOLE_KEEP_EVENTS"), "{e}");
        let unset = Env::from_pairs([("X", "")]);
        assert_eq!(
            bounded(&unset, "CONSOLE_KEEP_EVENTS", 10, 1, 100).expect("default"),
            10
        );
    }
}
