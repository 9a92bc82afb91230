//! The bus's settings: the common ones plus its subscribers.
//!
//! `SUBSCRIBERS` is a comma-separated list; each item is `name=url` (or a bare `url`,
//! named after its host and port), optionally followed by `;`-separated options:
//!
//! * `types=A|B`: deliver only events of these types (default: every event);
//! * `ack_wait_ms=N`: longest wait for the subscriber's answer to one delivery;
//! * `max_deliver=N`: failed deliveries (5xx answers) of one event before it is set aside.
//!
//! `switchyard up` and the manifests write it from the app registry.

use std::time::Duration;

use switchyard_kit::config::check_url;
use switchyard_kit::{BusSecret, CommonConfig, ConfigError, Env};

/// How the bus delivers to a subscriber that does not say otherwise.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_DELIVER: u32 = 20;

/// A subscriber: a name (its cursor's key), the URL events are posted to, and what it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub name: String,
    /// The full delivery URL, ending in `/events`.
    pub url: String,
    /// The event types it takes; `None` for all.
    pub types: Option<Vec<String>>,
    /// Longest wait for one delivery's answer.
    pub ack_wait: Duration,
    /// Failed deliveries (answered 5xx) of one event before it is dead-lettered. A
    /// subscriber that cannot be reached is waited for, however long: that is downtime,
    /// not a failure of the event.
    pub max_deliver: u32,
}

impl Subscriber {
    /// A subscriber of every event at `url`, with the default limits.
    pub fn new(name: impl Into<String>, url: &str) -> Self {
        let base = url.trim_end_matches('/');
        Subscriber {
            name: name.into(),
            url: if base.ends_with("/events") {
                base.to_string()
            } else {
                format!("{base}/events")
            },
            types: None,
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: DEFAULT_MAX_DELIVER,
        }
    }

    /// Only these types.
    pub fn only<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Whether it takes events of `event_type`.
    pub fn accepts(&self, event_type: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type))
    }

    /// Parses `name=url[;option=value...]` or a bare `url`. The URL is the service's base
    /// URL; `/events` is added unless it is already there.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let malformed = |reason: String| ConfigError::Malformed {
            name: "SUBSCRIBERS".into(),
            value: spec.to_string(),
            reason,
        };
        let mut parts = spec.split(';');
        let head = parts.next().unwrap_or_default();
        let (name, url) = match head.split_once('=') {
            Some((name, url)) if !name.contains("://") => (Some(name.trim()), url.trim()),
            _ => (None, head.trim()),
        };
        check_url("SUBSCRIBERS", url, &["http", "https"])?;
        let base = url.trim_end_matches('/');
        let name = match name {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => base
                .split("://")
                .nth(1)
                .unwrap_or(base)
                .trim_end_matches("/events")
                .to_string(),
        };
        let mut subscriber = Subscriber::new(name, base);
        for option in parts.map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| malformed(format!("option {option:?} is not key=value")))?;
            let number = |what: &str| {
                value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| malformed(format!("{what} must be a positive integer")))
            };
            match key.trim() {
                "types" => {
                    let types: Vec<String> = value
                        .split('|')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect();
                    if types.is_empty() {
                        return Err(malformed("types lists no type".into()));
                    }
                    subscriber.types = Some(types);
                }
                "ack_wait_ms" => subscriber.ack_wait = Duration::from_millis(number(key)?),
                "max_deliver" => {
                    subscriber.max_deliver =
                        u32::try_from(number(key)?).map_err(|e| malformed(e.to_string()))?
                }
                other => {
                    return Err(malformed(format!(
                        "unknown option {other:?} (types, ack_wait_ms, max_deliver)"
                    )));
                }
            }
        }
        Ok(subscriber)
    }

    /// The `SUBSCRIBERS` item that [`Subscriber::parse`] reads back as `self`.
    pub fn spec(&self) -> String {
        let mut out = format!("{}={}", self.name, self.url);
        if let Some(types) = &self.types {
            out.push_str(&format!(";types={}", types.join("|")));
        }
        if self.ack_wait != DEFAULT_ACK_WAIT {
            out.push_str(&format!(";ack_wait_ms={}", self.ack_wait.as_millis()));
        }
        if self.max_deliver != DEFAULT_MAX_DELIVER {
            out.push_str(&format!(";max_deliver={}", self.max_deliver));
        }
        out
    }
}

/// `EVENTS_MAX_AGE_SECONDS`: how long the bus keeps an event (0 or unset: for ever).
pub fn events_max_age(env: &Env) -> Result<Option<Duration>, ConfigError> {
    switchyard_kit::config::retention(env, "EVENTS_MAX_AGE_SECONDS")
}

/// Checks the payload of an event of a known type; the app's contract supplies it.
pub type PayloadCheck =
    fn(&switchyard_events::Envelope) -> Result<(), switchyard_events::PayloadError>;

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    pub subscribers: Vec<Subscriber>,
    /// Longest pause between delivery retries (`DELIVERY_MAX_BACKOFF_MS`, default 2 s).
    pub max_backoff: Duration,
    /// Longest time a subscriber may defer one event ("not yet", 425) before it is set
    /// aside (`DEFER_LIMIT_MS`, default 60 s).
    pub defer_limit: Duration,
    /// The app's payload checks: an event of a known type with a malformed payload is
    /// refused at the door (400) instead of being rejected by every subscriber later.
    pub payload_check: Option<PayloadCheck>,
    /// The secret publishers and readers must present, and that deliveries carry
    /// (`EVENT_BUS_SECRET`); without it anyone who reaches the port may publish.
    pub secret: Option<BusSecret>,
    /// How long the log keeps an event every subscriber has passed
    /// (`EVENTS_MAX_AGE_SECONDS`; 0 or unset keeps it forever, as the blog does: its read
    /// model is rebuilt from the log).
    pub log_max_age: Option<Duration>,
}

impl Settings {
    /// Reads the settings beside `common`; `default_subscribers` (from the app registry)
    /// apply when `SUBSCRIBERS` is unset.
    pub fn from_env(
        env: &Env,
        common: CommonConfig,
        default_subscribers: Vec<Subscriber>,
        payload_check: Option<PayloadCheck>,
    ) -> Result<Self, ConfigError> {
        let subscribers = match env.raw("SUBSCRIBERS") {
            None => default_subscribers,
            Some(_) => env
                .list_or("SUBSCRIBERS", &[])
                .iter()
                .map(|s| Subscriber::parse(s))
                .collect::<Result<Vec<_>, _>>()?,
        };
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
            defer_limit: env.millis_or("DEFER_LIMIT_MS", Duration::from_secs(60))?,
            payload_check,
            secret: BusSecret::from_env(env)?,
            log_max_age: events_max_age(env)?,
        })
    }

    /// Settings for tests: data in `data_dir`, the given subscribers.
    pub fn for_test(data_dir: &std::path::Path, subscribers: Vec<Subscriber>) -> Self {
        Settings {
            common: CommonConfig::for_data_dir(crate::SERVICE, data_dir),
            subscribers,
            max_backoff: Duration::from_millis(200),
            defer_limit: Duration::from_secs(60),
            payload_check: None,
            secret: None,
            log_max_age: None,
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
        assert_eq!(s.types, None);
        let s = Subscriber::parse("http://posts-clusterip-srv:4000/events").expect("ok");
        assert_eq!(s.name, "posts-clusterip-srv:4000");
        assert_eq!(s.url, "http://posts-clusterip-srv:4000/events");
        assert!(Subscriber::parse("ftp://x").is_err());
    }

    #[test]
    fn parses_types_and_limits_and_writes_them_back() {
        let s = Subscriber::parse(
            "orders=http://orders:3000;types=ticket:created|ticket:updated;ack_wait_ms=5000;max_deliver=3",
        )
        .expect("ok");
        assert_eq!(
            s.types.as_deref(),
            Some(&["ticket:created".to_string(), "ticket:updated".to_string()][..])
        );
        assert_eq!(s.ack_wait, Duration::from_secs(5));
        assert_eq!(s.max_deliver, 3);
        assert!(s.accepts("ticket:created") && !s.accepts("order:created"));
        assert_eq!(Subscriber::parse(&s.spec()).expect("round trip"), s);
        for bad in [
            "a=http://x;types=",
            "a=http://x;max_deliver=0",
            "a=http://x;colour=blue",
            "a=http://x;types",
        ] {
            let err = Subscriber::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("SUBSCRIBERS"), "{err}");
        }
    }

    #[test]
    fn default_subscribers_apply_when_unset() {
        let common = CommonConfig::for_data_dir("event-bus", "/tmp");
        let defaults = vec![Subscriber::new("a", "http://127.0.0.1:1")];
        let s = Settings::from_env(
            &Env::from_pairs([("DATA_DIR", "/tmp")]),
            common.clone(),
            defaults.clone(),
            None,
        )
        .expect("ok");
        assert_eq!(s.subscribers, defaults);
        let s = Settings::from_env(
            &Env::from_pairs([("SUBSCRIBERS", "b=http://127.0.0.1:2")]),
            common,
            defaults,
            None,
        )
        .expect("ok");
        assert_eq!(s.subscribers[0].name, "b");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let env = Env::from_pairs([("SUBSCRIBERS", "a=http://x:1,a=http://y:2")]);
        let err = Settings::from_env(
            &env,
            CommonConfig::for_data_dir("event-bus", "/tmp"),
            vec![],
            None,
        )
        .expect_err("dup");
        assert!(err.to_string().contains("SUBSCRIBERS"));
    }
}
