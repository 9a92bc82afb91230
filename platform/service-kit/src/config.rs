//! Typed configuration from environment variables (12-factor).
//!
//! Every variable has a name, a parser and usually a default. A variable that is missing
//! (when required) or malformed stops the service at start with a message naming it.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A configuration error naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name} is required{hint}")]
    Missing { name: String, hint: String },
    #[error("environment variable {name}={value:?} is malformed: {reason}")]
    Malformed {
        name: String,
        value: String,
        reason: String,
    },
}

/// A source of variables: the process environment, or a map (tests, `up`).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: Option<HashMap<String, String>>,
    /// Values used where a variable is unset (an app's defaults, from the registry).
    defaults: HashMap<String, String>,
    /// Values that win over the variables (a command's own options).
    overrides: HashMap<String, String>,
}

impl Env {
    /// Reads from the process environment.
    pub fn process() -> Self {
        Env::default()
    }

    /// This environment, with `defaults` for the variables it does not set.
    pub fn with_defaults<I, K, V>(&self, defaults: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut env = self.clone();
        for (k, v) in defaults {
            env.defaults.entry(k.into()).or_insert_with(|| v.into());
        }
        env
    }

    /// This environment, with `overrides` winning over what it sets.
    pub fn with_overrides<I, K, V>(&self, overrides: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut env = self.clone();
        for (k, v) in overrides {
            env.overrides.insert(k.into(), v.into());
        }
        env
    }

    /// Reads from the given pairs only.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: Some(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
            defaults: HashMap::new(),
            overrides: HashMap::new(),
        }
    }

    /// The raw value, if set and not empty.
    pub fn raw(&self, name: &str) -> Option<String> {
        if let Some(value) = self.overrides.get(name) {
            return Some(value.clone());
        }
        let value = match &self.vars {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        value
            .filter(|v| !v.trim().is_empty())
            .or_else(|| self.defaults.get(name).cloned())
    }

    /// A parsed value, or the default when unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(value) => parse(name, &value),
        }
    }

    /// A parsed value that must be set.
    pub fn required<T>(&self, name: &str, hint: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(name) {
            None => Err(ConfigError::Missing {
                name: name.to_string(),
                hint: if hint.is_empty() {
                    String::new()
                } else {
                    format!(" ({hint})")
                },
            }),
            Some(value) => parse(name, &value),
        }
    }

    /// A duration given in milliseconds.
    pub fn millis_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        self.parse_or::<u64>(name, default_ms)
            .map(Duration::from_millis)
    }

    /// A comma-separated list; empty items are dropped.
    pub fn list_or(&self, name: &str, default: &[&str]) -> Vec<String> {
        match self.raw(name) {
            None => default.iter().map(|s| s.to_string()).collect(),
            Some(value) => value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

fn parse<T>(name: &str, value: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Malformed {
            name: name.to_string(),
            value: value.to_string(),
            reason: e.to_string(),
        })
}

/// The longest retention a setting may name: 100 years (a NATS stream's max age is
/// nanoseconds in an `i64`, which holds about 292 years).
pub const MAX_RETENTION_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// A retention in seconds from `name`: 0 or unset keeps for ever (`None`); more than
/// [`MAX_RETENTION_SECONDS`] is refused, naming the variable.
pub fn retention(env: &Env, name: &str) -> Result<Option<Duration>, ConfigError> {
    match env.parse_or::<u64>(name, 0)? {
        0 => Ok(None),
        secs if secs <= MAX_RETENTION_SECONDS => Ok(Some(Duration::from_secs(secs))),
        secs => Err(ConfigError::Malformed {
            name: name.to_string(),
            value: secs.to_string(),
            reason: format!(
                "at most {MAX_RETENTION_SECONDS} seconds (100 years); 0 keeps for ever"
            ),
        }),
    }
}

/// Checks that a URL has one of the given schemes and a non-empty rest.
pub fn check_url(name: &str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let ok = schemes.iter().any(|scheme| {
        value
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Malformed {
            name: name.to_string(),
            value: value.to_string(),
            reason: format!(
                "expected a URL starting with {}",
                schemes.join("://, ") + "://"
            ),
        })
    }
}

/// `value` is a comma-separated list of URLs, each as [`check_url`] wants it (`--nats` and
/// `EVENT_BUS_URL` name several servers of one NATS cluster this way).
pub fn check_url_list(name: &str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    value
        .split(',')
        .try_for_each(|url| check_url(name, url.trim(), schemes))
        .map_err(|_| ConfigError::Malformed {
            name: name.to_string(),
            value: value.to_string(),
            reason: format!(
                "expected one URL, or several separated by commas, starting with {}",
                schemes.join("://, ") + "://"
            ),
        })
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" | "text" | "human" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (use pretty or json)")),
        }
    }
}

/// Settings shared by every service.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// Service name (`posts`, `event-bus`, ...).
    pub service: String,
    /// Bind address (`HOST`, default 0.0.0.0).
    pub host: String,
    /// Port of the service's API (`PORT`, default the service's port in the app registry).
    pub port: u16,
    /// Port of the operational endpoints `/healthz`, `/readyz`, `/metrics` (`OPS_PORT`),
    /// on the same address; never routed by an Ingress.
    pub ops_port: u16,
    /// Data directory (`DATA_DIR`, default `./data`).
    pub data_dir: PathBuf,
    /// Database URL (`DATABASE_URL`, default `sqlite://<DATA_DIR>/<service>.db`).
    pub database_url: String,
    /// Run migrations at start (`MIGRATE_ON_START`, default true).
    pub migrate_on_start: bool,
    /// Largest accepted request body (`BODY_LIMIT_BYTES`, default 64 KiB).
    pub body_limit: usize,
    /// Longest time a request may take (`REQUEST_TIMEOUT_MS`, default 10 s).
    pub request_timeout: Duration,
    /// Longest drain on shutdown (`SHUTDOWN_GRACE_MS`, default 10 s).
    pub shutdown_grace: Duration,
}

impl CommonConfig {
    /// Reads the common settings for `service`, whose ports are `default_port` and
    /// `default_ops_port` unless `PORT` and `OPS_PORT` say otherwise.
    pub fn from_env(
        env: &Env,
        service: &str,
        default_port: u16,
        default_ops_port: u16,
    ) -> Result<Self, ConfigError> {
        let data_dir: PathBuf = env.parse_or("DATA_DIR", PathBuf::from("data"))?;
        let database_url = match env.raw("DATABASE_URL") {
            Some(url) => {
                check_url("DATABASE_URL", &url, &["sqlite", "postgres", "postgresql"])?;
                url
            }
            None => default_sqlite_url(&data_dir, service),
        };
        Ok(CommonConfig {
            service: service.to_string(),
            host: env.parse_or("HOST", "0.0.0.0".to_string())?,
            port: env.parse_or("PORT", default_port)?,
            ops_port: env.parse_or("OPS_PORT", default_ops_port)?,
            data_dir,
            database_url,
            migrate_on_start: env.parse_or("MIGRATE_ON_START", true)?,
            body_limit: env.parse_or("BODY_LIMIT_BYTES", 64 * 1024)?,
            request_timeout: env.millis_or("REQUEST_TIMEOUT_MS", Duration::from_secs(10))?,
            shutdown_grace: env.millis_or("SHUTDOWN_GRACE_MS", Duration::from_secs(10))?,
        })
    }

    /// Settings for tests and embedding: a SQLite file in `data_dir`, ports 0.
    pub fn for_data_dir(service: &str, data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        CommonConfig {
            service: service.to_string(),
            host: "127.0.0.1".to_string(),
            port: 0,
            ops_port: 0,
            database_url: default_sqlite_url(&data_dir, service),
            data_dir,
            migrate_on_start: true,
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// `host:port` to bind.
    pub fn bind_addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `host:ops_port` to bind.
    pub fn ops_bind_addr(&self) -> String {
        format!("{}:{}", self.host, self.ops_port)
    }
}

/// `sqlite://<dir>/<service>.db`.
pub fn default_sqlite_url(data_dir: &std::path::Path, service: &str) -> String {
    format!("sqlite://{}/{service}.db", data_dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset() {
        let cfg = CommonConfig::from_env(
            &Env::from_pairs([("DATA_DIR", "/tmp/x")]),
            "posts",
            4000,
            14000,
        )
        .expect("config");
        assert_eq!((cfg.port, cfg.ops_port), (4000, 14000));
        assert_eq!(cfg.database_url, "sqlite:///tmp/x/posts.db");
        assert!(cfg.migrate_on_start);
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let err =
            CommonConfig::from_env(&Env::from_pairs([("PORT", "forty")]), "posts", 4000, 14000)
                .expect_err("bad port");
        assert!(err.to_string().contains("PORT"), "{err}");
        let err = CommonConfig::from_env(
            &Env::from_pairs([("DATABASE_URL", "mysql://x")]),
            "posts",
            4000,
            14000,
        )
        .expect_err("bad url");
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn required_names_the_variable() {
        let err = Env::from_pairs::<[(&str, &str); 0], &str, &str>([])
            .required::<String>("EVENT_BUS_URL", "e.g. http://127.0.0.1:4005")
            .expect_err("missing");
        assert!(err.to_string().contains("EVENT_BUS_URL"));
    }

    #[test]
    fn defaults_fill_only_unset_variables() {
        let env = Env::from_pairs([("A", "set")]).with_defaults([("A", "x"), ("B", "y")]);
        assert_eq!(env.raw("A").as_deref(), Some("set"));
        assert_eq!(env.raw("B").as_deref(), Some("y"));
        assert_eq!(env.raw("C"), None);
    }

    #[test]
    fn lists_split_on_commas() {
        let env = Env::from_pairs([("L", " a, ,b ")]);
        assert_eq!(env.list_or("L", &[]), vec!["a", "b"]);
        assert_eq!(env.list_or("M", &["x"]), vec!["x"]);
    }

    #[test]
    fn a_retention_is_bounded_and_named_when_too_long() {
        let env = Env::from_pairs([("KEEP", "3600")]);
        assert_eq!(
            retention(&env, "KEEP").expect("an hour"),
            Some(Duration::from_secs(3600))
        );
        let forever = Env::from_pairs([("KEEP", "0")]);
        assert_eq!(retention(&forever, "KEEP").expect("for ever"), None);
        let huge = Env::from_pairs([("KEEP", u64::MAX.to_string())]);
        let e = retention(&huge, "KEEP").expect_err("too long").to_string();
        assert!(e.contains("KEEP"), "{e}");
    }
}
