//! How a service consumes: its consumer group, the event types it takes, and how its
//! consumer behaves, on either bus.
//!
//! The defaults come from the app registry (through `switchyard serve`); each can be
//! overridden by the environment, so an operator can tune one service without a release:
//!
//! | variable | meaning |
//! |---|---|
//! | `CONSUMER_ACK_WAIT_MS` | unacknowledged time before an event is delivered again |
//! | `CONSUMER_MAX_DELIVER` | failed deliveries of one event before it is dead-lettered |
//! | `CONSUMER_CONCURRENCY` | events handled at the same time by one replica (NATS) |
//! | `CONSUMER_DEFER_LIMIT_MS` | longest time an event may be deferred ("not yet") |

use std::time::Duration;

use switchyard_kit::{ConfigError, Env};

/// Default longest deferral: a predecessor that has not arrived after this long is not
/// coming (it was dead-lettered, or never published), so the event is set aside.
pub const DEFAULT_DEFER_LIMIT: Duration = Duration::from_secs(60);

/// A service's consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// The consumer group (the durable consumer's name on NATS): one per service, shared
    /// by its replicas, so each event is handled by one of them.
    pub group: String,
    /// The event types it consumes; `None` for every type.
    pub types: Option<Vec<String>>,
    /// Unacknowledged time before redelivery.
    pub ack_wait: Duration,
    /// Failed deliveries of one event before it is dead-lettered (deferrals do not count).
    pub max_deliver: u32,
    /// Events handled at the same time by one replica.
    pub concurrency: usize,
    /// Unacknowledged events per consumer, all replicas together (NATS).
    pub max_ack_pending: i64,
    /// Longest time an event may stay deferred before it is dead-lettered.
    pub defer_limit: Duration,
}

impl ConsumerSettings {
    /// The platform's defaults for the group `group`, consuming every type.
    pub fn new(group: impl Into<String>) -> Self {
        ConsumerSettings {
            group: group.into(),
            types: None,
            ack_wait: Duration::from_secs(10),
            max_deliver: 20,
            concurrency: 4,
            max_ack_pending: 256,
            defer_limit: DEFAULT_DEFER_LIMIT,
        }
    }

    /// Only these event types.
    pub fn only<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Applies the environment's overrides to `self` (the registry's defaults).
    pub fn with_env(mut self, env: &Env) -> Result<Self, ConfigError> {
        self.ack_wait = env.millis_or("CONSUMER_ACK_WAIT_MS", self.ack_wait)?;
        self.max_deliver = env.parse_or("CONSUMER_MAX_DELIVER", self.max_deliver)?;
        self.concurrency = env.parse_or("CONSUMER_CONCURRENCY", self.concurrency)?;
        self.defer_limit = env.millis_or("CONSUMER_DEFER_LIMIT_MS", self.defer_limit)?;
        let positive = |name: &str, ok: bool, value: String| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Malformed {
                    name: name.to_string(),
                    value,
                    reason: "must be greater than 0".to_string(),
                })
            }
        };
        positive(
            "CONSUMER_ACK_WAIT_MS",
            !self.ack_wait.is_zero(),
            "0".to_string(),
        )?;
        positive(
            "CONSUMER_MAX_DELIVER",
            self.max_deliver > 0,
            "0".to_string(),
        )?;
        positive(
            "CONSUMER_CONCURRENCY",
            self.concurrency > 0,
            "0".to_string(),
        )?;
        Ok(self)
    }

    /// Whether an event of `event_type` is for this consumer.
    pub fn accepts(&self, event_type: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_defaults() {
        let env = Env::from_pairs([
            ("CONSUMER_ACK_WAIT_MS", "5000"),
            ("CONSUMER_MAX_DELIVER", "7"),
            ("CONSUMER_CONCURRENCY", "1"),
            ("CONSUMER_DEFER_LIMIT_MS", "1500"),
        ]);
        let s = ConsumerSettings::new("orders")
            .only(["ticket:created"])
            .with_env(&env)
            .expect("settings");
        assert_eq!(s.ack_wait, Duration::from_secs(5));
        assert_eq!(s.max_deliver, 7);
        assert_eq!(s.concurrency, 1);
        assert_eq!(s.defer_limit, Duration::from_millis(1500));
        assert!(s.accepts("ticket:created"));
        assert!(!s.accepts("ticket:updated"));
        assert!(ConsumerSettings::new("x").accepts("anything"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("CONSUMER_MAX_DELIVER", "0"),
            ("CONSUMER_CONCURRENCY", "many"),
            ("CONSUMER_ACK_WAIT_MS", "0"),
        ] {
            let err = ConsumerSettings::new("x")
                .with_env(&Env::from_pairs([(name, value)]))
                .expect_err("bad");
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
