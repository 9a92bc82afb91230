//! The sign-in limit: after `SIGNIN_MAX_FAILURES` failed sign-ins for one email, or from one
//! client address, within `SIGNIN_WINDOW_SECONDS`, further sign-ins answer 429 until the
//! window has passed. Failures are rows in the service's own database, so every replica
//! sees them and a restart forgets nothing.

use std::time::Duration;

use sqlx::Row;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::{ConfigError, Db, Env};

/// The limit's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// `SIGNIN_MAX_FAILURES` (default 5).
    pub max_failures: i64,
    /// `SIGNIN_WINDOW_SECONDS` (default 900).
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures: 5,
            window: Duration::from_secs(900),
        }
    }
}

impl ThrottleConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = ThrottleConfig::default();
        let max_failures: i64 = env.parse_or("SIGNIN_MAX_FAILURES", d.max_failures)?;
        if max_failures < 1 {
            return Err(ConfigError::Malformed {
                name: "SIGNIN_MAX_FAILURES".into(),
                value: max_failures.to_string(),
                reason: "must be at least 1".into(),
            });
        }
        let secs: u64 = env.parse_or("SIGNIN_WINDOW_SECONDS", d.window.as_secs())?;
        Ok(ThrottleConfig {
            max_failures,
            window: Duration::from_secs(secs.max(1)),
        })
    }
}

/// The keys a sign-in is counted under.
pub fn keys(email: &str, client: &str) -> [String; 2] {
    [format!("email:{email}"), format!("client:{client}")]
}

/// Whether any of `keys` has reached the limit.
pub async fn limited(
    db: &Db,
    config: &ThrottleConfig,
    keys: &[String],
) -> Result<bool, sqlx::Error> {
    let since = unix_millis() - i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX);
    for key in keys {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM signin_failures WHERE key = $1 AND at > $2")
            .bind(key)
            .bind(since)
            .fetch_one(db.reader())
            .await?
            .try_get(0)?;
        if n >= config.max_failures {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Records a failed sign-in under `keys` (and forgets failures older than the window).
pub async fn record_failure(
    db: &Db,
    config: &ThrottleConfig,
    keys: &[String],
) -> Result<(), sqlx::Error> {
    let now = unix_millis();
    let mut tx = db.pool().begin().await?;
    for key in keys {
        sqlx::query("INSERT INTO signin_failures (key, at) VALUES ($1, $2)")
            .bind(key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    let expired = now - i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM signin_failures WHERE at <= $1")
        .bind(expired)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Forgets the failures of `email` after a successful sign-in.
pub async fn clear_email(db: &Db, email_key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM signin_failures WHERE key = $1")
        .bind(email_key)
        .execute(db.pool())
        .await
        .map(|_| ())
}
