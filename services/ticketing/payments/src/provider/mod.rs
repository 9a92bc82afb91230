//! Payment providers: where a charge is made.
//!
//! * [`StripeProvider`]: Stripe's API (`PAYMENT_PROVIDER=stripe`, `STRIPE_KEY`);
//! * [`TestProvider`]: local, no network, Stripe's test tokens with Stripe's outcomes
//!   (`PAYMENT_PROVIDER=test`, named explicitly: `up` and the dev overlays do).
//!
//! Every charge and refund carries an idempotency key: the service derives it from the order
//! and the attempt, and sends the same key again whenever it cannot know whether an earlier
//! call went through (a timeout, a 5xx, a crash). A provider answers a repeated key with the
//! first answer, so a retried charge never charges twice.

mod stripe;
mod test_mode;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use switchyard_kit::config::check_url;
use switchyard_kit::{ConfigError, Env};

pub use stripe::{RETRIES as STRIPE_RETRIES, StripeProvider};
pub use test_mode::{SUCCEEDING_TOKENS, TestProvider};

/// Stripe's API, unless `STRIPE_API_BASE` says otherwise.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
/// Longest wait for one call to the provider, unless `STRIPE_TIMEOUT_MS` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pending charge attempt belongs to the request that made it, unless
/// `PAYMENT_ATTEMPT_GRACE_MS` says otherwise: after that, the next payment request for the
/// order takes it over (the request crashed or was cut off) and replays it.
pub const DEFAULT_ATTEMPT_GRACE: Duration = Duration::from_secs(5);

/// A charge to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// In the currency's smallest unit (cents).
    pub amount_cents: i64,
    /// ISO 4217, lower case (`usd`).
    pub currency: String,
    /// The card token the client got from the provider (`tok_visa`).
    pub source: String,
    /// The same key for every call that may repeat this charge.
    pub idempotency_key: String,
    pub description: String,
}

/// A charge made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The provider's id of the charge (`ch_...`), stored as the payment's `stripeId`.
    pub id: String,
}

/// Why a charge or refund did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    /// The card was declined: nothing was charged, another card may work. The message is
    /// the provider's, meant for the buyer.
    #[error("declined: {0}")]
    Declined(String),
    /// The request was refused as invalid (an unknown token, an amount too small): nothing
    /// was charged. The message is the provider's.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The provider could not be reached or failed, after retries: whether the charge
    /// happened is unknown, so the attempt stays open and is replayed with its key.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Makes charges and refunds.
pub trait PaymentProvider: Send + Sync {
    /// Charges `request.amount_cents`; a repeated `idempotency_key` gets the first answer.
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, Result<Charge, ChargeError>>;

    /// Refunds the whole charge `charge_id`; a repeated `idempotency_key` gets the first
    /// answer.
    fn refund<'a>(
        &'a self,
        charge_id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<(), ChargeError>>;

    /// The charge made with `idempotency_key`, if there is one. Asked before a charge
    /// whose fate is unknown (a crash, a lost answer) is replayed: a key is remembered by
    /// the provider for 24 hours only (Stripe), after which a replay would charge again.
    fn find_charge<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Charge>, ChargeError>>;
}

/// Which provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Stripe,
    Test,
}

/// The provider's settings.
#[derive(Clone)]
pub struct ProviderConfig {
    /// `PAYMENT_PROVIDER` (required): `stripe` (with `STRIPE_KEY`) or `test`.
    pub kind: ProviderKind,
    /// `STRIPE_KEY` (Secret `stripe-secret`): required for `stripe`. Never logged.
    pub stripe_key: Option<String>,
    /// `STRIPE_API_BASE` (default [`DEFAULT_API_BASE`]).
    pub api_base: String,
    /// `STRIPE_TIMEOUT_MS` (default 10 s): longest wait for one call.
    pub timeout: Duration,
    /// `PAYMENT_ATTEMPT_GRACE_MS` (default 5 s): see [`DEFAULT_ATTEMPT_GRACE`].
    pub attempt_grace: Duration,
    /// `PAYMENT_EXPIRY_MARGIN_MS` (default 2 s): a payment is refused once its order is
    /// this close to its `expiresAt` (or past it), before any charge starts.
    pub expiry_margin: Duration,
    /// `PAYMENT_MAX_ATTEMPTS` (default 5): charge attempts one order may have (declined
    /// cards included); the next payment is refused, so no order is a card-testing oracle.
    pub max_attempts: i64,
    /// `EXPIRY_SWEEP_GRACE_SECONDS` (default 60): an order still undecided this long after
    /// its `expiresAt` (its `expiration:complete` lost) is closed unpaid by payments itself.
    pub sweep_grace: Duration,
}

/// See [`ProviderConfig::expiry_margin`].
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(2);
/// See [`ProviderConfig::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: i64 = 5;
/// See [`ProviderConfig::sweep_grace`].
pub const DEFAULT_SWEEP_GRACE: Duration = Duration::from_secs(60);

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field(
                "stripe_key",
                &self.stripe_key.as_ref().map(|_| "<redacted>"),
            )
            .field("api_base", &self.api_base)
            .field("timeout", &self.timeout)
            .field("attempt_grace", &self.attempt_grace)
            .field("expiry_margin", &self.expiry_margin)
            .field("max_attempts", &self.max_attempts)
            .field("sweep_grace", &self.sweep_grace)
            .finish()
    }
}

impl ProviderConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let stripe_key = env.raw("STRIPE_KEY");
        // Named, never guessed: a production deployment whose Stripe key went missing must
        // not fall back to a provider that charges nothing.
        let kind = match env.raw("PAYMENT_PROVIDER") {
            None => {
                return Err(ConfigError::Missing {
                    name: "PAYMENT_PROVIDER".into(),
                    hint:
                        " (stripe, with STRIPE_KEY; or test: Stripe's test tokens, no real charge)"
                            .into(),
                });
            }
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "stripe" => ProviderKind::Stripe,
                "test" => ProviderKind::Test,
                _ => {
                    return Err(ConfigError::Malformed {
                        name: "PAYMENT_PROVIDER".into(),
                        value,
                        reason: "use stripe or test".into(),
                    });
                }
            },
        };
        if kind == ProviderKind::Stripe && stripe_key.is_none() {
            return Err(ConfigError::Missing {
                name: "STRIPE_KEY".into(),
                hint: " (PAYMENT_PROVIDER=stripe charges with Stripe's secret key; PAYMENT_PROVIDER=test makes no real charge)".into(),
            });
        }
        let api_base: String = env.parse_or("STRIPE_API_BASE", DEFAULT_API_BASE.to_string())?;
        check_url("STRIPE_API_BASE", &api_base, &["https", "http"])?;
        let timeout = env.millis_or("STRIPE_TIMEOUT_MS", DEFAULT_TIMEOUT)?;
        let attempt_grace = env.millis_or("PAYMENT_ATTEMPT_GRACE_MS", DEFAULT_ATTEMPT_GRACE)?;
        for (name, value) in [
            ("STRIPE_TIMEOUT_MS", timeout),
            ("PAYMENT_ATTEMPT_GRACE_MS", attempt_grace),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Malformed {
                    name: name.into(),
                    value: "0".into(),
                    reason: "must be greater than 0".into(),
                });
            }
        }
        let max_attempts: i64 = env.parse_or("PAYMENT_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)?;
        if !(1..=100).contains(&max_attempts) {
            return Err(ConfigError::Malformed {
                name: "PAYMENT_MAX_ATTEMPTS".into(),
                value: max_attempts.to_string(),
                reason: "must be from 1 to 100".into(),
            });
        }
        let sweep_secs: u64 =
            env.parse_or("EXPIRY_SWEEP_GRACE_SECONDS", DEFAULT_SWEEP_GRACE.as_secs())?;
        Ok(ProviderConfig {
            kind,
            stripe_key,
            api_base: api_base.trim_end_matches('/').to_string(),
            timeout,
            attempt_grace,
            expiry_margin: env.millis_or("PAYMENT_EXPIRY_MARGIN_MS", DEFAULT_EXPIRY_MARGIN)?,
            max_attempts,
            sweep_grace: Duration::from_secs(sweep_secs),
        })
    }

    /// The test provider with the default settings (tests, local use).
    pub fn test() -> Self {
        ProviderConfig {
            kind: ProviderKind::Test,
            stripe_key: None,
            api_base: DEFAULT_API_BASE.to_string(),
            timeout: DEFAULT_TIMEOUT,
            attempt_grace: DEFAULT_ATTEMPT_GRACE,
            expiry_margin: DEFAULT_EXPIRY_MARGIN,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            sweep_grace: DEFAULT_SWEEP_GRACE,
        }
    }

    /// Stripe at `api_base` with `key`.
    pub fn stripe(key: impl Into<String>, api_base: impl Into<String>) -> Self {
        ProviderConfig {
            kind: ProviderKind::Stripe,
            stripe_key: Some(key.into()),
            api_base: api_base.into().trim_end_matches('/').to_string(),
            ..ProviderConfig::test()
        }
    }

    /// The configured provider.
    pub fn build(&self) -> anyhow::Result<Arc<dyn PaymentProvider>> {
        match self.kind {
            ProviderKind::Test => {
                tracing::warn!(
                    "PAYMENT_PROVIDER=test: payments are simulated with Stripe's test tokens, no real charge is made"
                );
                Ok(Arc::new(TestProvider::new()))
            }
            ProviderKind::Stripe => {
                let key = self.stripe_key.as_deref().ok_or_else(|| {
                    anyhow::anyhow!("STRIPE_KEY is required with PAYMENT_PROVIDER=stripe")
                })?;
                tracing::info!(api_base = %self.api_base, timeout = ?self.timeout, "charging with Stripe");
                Ok(Arc::new(StripeProvider::new(
                    key,
                    &self.api_base,
                    self.timeout,
                )?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn the_provider_is_named_never_guessed() {
        // Neither named nor keyed, or keyed but not named: refused, naming the variable.
        for pairs in [&[][..], &[("STRIPE_KEY", "sk_test_123")][..]] {
            let err = ProviderConfig::from_env(&env(pairs)).expect_err("unnamed");
            assert!(err.to_string().contains("PAYMENT_PROVIDER"), "{err}");
        }
        let c = ProviderConfig::from_env(&env(&[("PAYMENT_PROVIDER", "test")])).expect("config");
        assert_eq!(c.kind, ProviderKind::Test);
        assert_eq!(c.api_base, DEFAULT_API_BASE);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        let c = ProviderConfig::from_env(&env(&[
            ("PAYMENT_PROVIDER", "stripe"),
            ("STRIPE_KEY", "sk_test_123"),
        ]))
        .expect("config");
        assert_eq!(c.kind, ProviderKind::Stripe);
        // Explicitly test, even with a key.
        let c = ProviderConfig::from_env(&env(&[
            ("STRIPE_KEY", "sk_test_123"),
            ("PAYMENT_PROVIDER", "test"),
        ]))
        .expect("config");
        assert_eq!(c.kind, ProviderKind::Test);
        let c = ProviderConfig::from_env(&env(&[
            ("PAYMENT_PROVIDER", "stripe"),
            ("STRIPE_KEY", "sk_test_123"),
            ("STRIPE_API_BASE", "http://127.0.0.1:12111/"),
            ("STRIPE_TIMEOUT_MS", "250"),
        ]))
        .expect("config");
        assert_eq!(c.api_base, "http://127.0.0.1:12111");
        assert_eq!(c.timeout, Duration::from_millis(250));
    }

    #[test]
    fn stripe_without_a_key_is_refused_naming_the_variable() {
        let err =
            ProviderConfig::from_env(&env(&[("PAYMENT_PROVIDER", "stripe")])).expect_err("no key");
        assert!(err.to_string().contains("STRIPE_KEY"), "{err}");
        for (name, value) in [
            ("PAYMENT_PROVIDER", "paypal"),
            ("STRIPE_API_BASE", "ftp://x"),
            ("STRIPE_TIMEOUT_MS", "0"),
            ("STRIPE_TIMEOUT_MS", "soon"),
            ("PAYMENT_ATTEMPT_GRACE_MS", "0"),
        ] {
            let err =
                ProviderConfig::from_env(&env(&[("PAYMENT_PROVIDER", "test"), (name, value)]))
                    .expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_key_is_never_printed() {
        let c = ProviderConfig::from_env(&env(&[
            ("PAYMENT_PROVIDER", "stripe"),
            ("STRIPE_KEY", "sk_live_secret"),
        ]))
        .expect("config");
        assert!(!format!("{c:?}").contains("sk_live_secret"));
        let p = StripeProvider::new("sk_live_secret", DEFAULT_API_BASE, DEFAULT_TIMEOUT)
            .expect("provider");
        assert!(!format!("{p:?}").contains("sk_live_secret"));
    }
}
