//! The bus's settings: the common ones plus its subscribers.

use std::time::Duration;

use switchyard_kit::config::check_url;
use switchyard_kit::{CommonConfig, ConfigError, Env};

/// The blog's subscribers in the embedded setup.
pub const DEFAULT_SUBSCRIBERS: &[&str] = &[
    "posts=http://127.0.0.1:4000",
    "comments=http://127.0.0.1:4001",
    "query=http://127.0.0.1:4002",
    "moderation=http://127.0.0.1:4003",
];

/// A subscriber: a name (its cursor's key) and the URL events are posted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub name: String,
    /// The full delivery URL, ending in `/events`.
    pub url: String,
}

impl Subscriber {
    /// Parses `name=url` or a bare `url` (named after its host and port). The URL is the
    /// service's base URL; `/events` is added unless it is already there.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let (name, url) = match spec.split_once('=') {
            Some((name, url)) if !name.contains("://") => (Some(name.trim()), url.trim()),
            _ => (None, spec.trim()),
        };
        check_url("SUBSCRIBERS", url, &["http", "https"])?;
        let base = url.trim_end_matches('/');
        let url = if base.ends_with("/events") {
            base.to_string()
        } else {
            format!("{base}/events")
        };
        let name = match name {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => base
                .split("://")
                .nth(1)
                .unwrap_or(base)
                .trim_end_matches("/events")
                .to_string(),
        };
        Ok(Subscriber { name, url })
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    pub subscribers: Vec<Subscriber>,
    /// Longest pause between delivery retries (`DELIVERY_MAX_BACKOFF_MS`, default 2 s).
    pub max_backoff: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, crate::SERVICE, crate::DEFAULT_PORT)?;
        let subscribers = env
            .list_or("SUBSCRIBERS", DEFAULT_SUBSCRIBERS)
            .iter()
            .map(|s| Subscriber::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = subscribers.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Malformed {
                name: "SUBSCRIBERS".into(),
                value: env.raw("SUBSCRIBERS").unwrap_or_default(),
                reason: format!("subscriber name {:?} appears twice", w[0]),
            });
        }
        Ok(Settings {
            common,
            subscribers,
            max_backoff: env.millis_or("DELIVERY_MAX_BACKOFF_MS", Duration::from_secs(2))?,
        })
    }

    /// Settings for tests: data in `data_dir`, the given subscribers.
    pub fn for_test(data_dir: &std::path::Path, subscribers: Vec<Subscriber>) -> Self {
        Settings {
            common: CommonConfig::for_data_dir(crate::SERVICE, data_dir),
            subscribers,
            max_backoff: Duration::from_millis(200),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_bare_subscribers() {
        let s = Subscriber::parse("query=http://query-srv:4002").expect("ok");
        assert_eq!(s.name, "query");
        assert_eq!(s.url, "http://query-srv:4002/events");
        let s = Subscriber::parse("http://posts-clusterip-srv:4000/events").expect("ok");
        assert_eq!(s.name, "posts-clusterip-srv:4000");
        assert_eq!(s.url, "http://posts-clusterip-srv:4000/events");
        assert!(Subscriber::parse("ftp://x").is_err());
    }

    #[test]
    fn default_subscribers_are_the_blog_services() {
        let s = Settings::from_env(&Env::from_pairs([("DATA_DIR", "/tmp")])).expect("ok");
        let names: Vec<_> = s.subscribers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["posts", "comments", "query", "moderation"]);
    }

    #[test]
    fn duplicate_names_are_refused() {
        let env = Env::from_pairs([("SUBSCRIBERS", "a=http://x:1,a=http://y:2")]);
        let err = Settings::from_env(&env).expect_err("dup");
        assert!(err.to_string().contains("SUBSCRIBERS"));
    }
}
