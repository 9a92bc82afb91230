//! The limits on signing in and up, per email and per client address.
//!
//! Each limit is a budget row per key (`email:<email>`, `client:<address>`,
//! `signup:<address>`) in the service's own database, so every replica shares it and a
//! restart forgets nothing. An attempt **reserves** its place in one statement before any
//! password is hashed: an upsert that counts it only while the budget allows, so however
//! many attempts arrive at once, at most the budget's worth go on to a password verdict;
//! the others answer 429 with `Retry-After`.
//!
//! * per email (`SIGNIN_MAX_FAILURES`, default 5, in `SIGNIN_WINDOW_SECONDS`, default 900):
//!   a hard limit, until the window has passed (a successful sign-in gives its own place
//!   back, and does not wipe the failures: that would hand the guesses racing it a fresh
//!   budget);
//! * per client (`SIGNIN_MAX_PER_CLIENT`, default 20, in the same window: an address may
//!   be a whole office's): past the budget the client is slowed, not locked out:
//!   one more attempt each `SIGNIN_SLOWDOWN_MS` (default 2 s) times the attempts over the
//!   budget, at most a minute apart, so a brute force crawls while a user behind the same
//!   address still gets in; a successful sign-in gives its place back;
//! * sign-ups per client (`SIGNUP_MAX_PER_CLIENT`, default 10 an hour), slowed the same way.
//!
//! Which address is the client's is the trusted proxies' to say (`TRUSTED_PROXY_HOPS`): see
//! [`client_address`].

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderMap;
use sqlx::Row;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::{ConfigError, Db, Env};

/// The limits' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// `SIGNIN_MAX_FAILURES` (default 5).
    pub max_failures: i64,
    /// `SIGNIN_WINDOW_SECONDS` (default 900).
    pub window: Duration,
    /// `SIGNIN_MAX_PER_CLIENT` (default 20): attempts from one client address in the
    /// window before it is slowed (a success gives its place back).
    pub client_attempts: i64,
    /// `SIGNIN_SLOWDOWN_MS` (default 2000): a client past its budget waits this times the
    /// attempts over it between attempts, at most [`MAX_SLOWDOWN`].
    pub slowdown: Duration,
    /// `SIGNUP_MAX_PER_CLIENT` (default 10) sign-ups per client address an hour.
    pub signups_per_client: i64,
    /// `TRUSTED_PROXY_HOPS` (default 0): how many proxies in front of the service append to
    /// `X-Forwarded-For` (`up`'s gateway, the cluster's ingress controller: 1).
    pub trusted_hops: usize,
}

/// The longest a slowed client waits between attempts.
pub const MAX_SLOWDOWN: Duration = Duration::from_secs(60);
/// The window of the sign-up limit.
pub const SIGNUP_WINDOW: Duration = Duration::from_secs(3600);

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures: 5,
            window: Duration::from_secs(900),
            client_attempts: 20,
            slowdown: Duration::from_secs(2),
            signups_per_client: 10,
            trusted_hops: 0,
        }
    }
}

impl ThrottleConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = ThrottleConfig::default();
        let at_least_one = |name: &str, n: i64| {
            if n < 1 {
                Err(ConfigError::Malformed {
                    name: name.into(),
                    value: n.to_string(),
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(n)
            }
        };
        let max_failures = at_least_one(
            "SIGNIN_MAX_FAILURES",
            env.parse_or("SIGNIN_MAX_FAILURES", d.max_failures)?,
        )?;
        let client_attempts = at_least_one(
            "SIGNIN_MAX_PER_CLIENT",
            env.parse_or("SIGNIN_MAX_PER_CLIENT", d.client_attempts)?,
        )?;
        let signups_per_client = at_least_one(
            "SIGNUP_MAX_PER_CLIENT",
            env.parse_or("SIGNUP_MAX_PER_CLIENT", d.signups_per_client)?,
        )?;
        let secs: u64 = env.parse_or("SIGNIN_WINDOW_SECONDS", d.window.as_secs())?;
        let trusted_hops: usize = env.parse_or("TRUSTED_PROXY_HOPS", d.trusted_hops)?;
        if trusted_hops > 8 {
            return Err(ConfigError::Malformed {
                name: "TRUSTED_PROXY_HOPS".into(),
                value: trusted_hops.to_string(),
                reason: "must be at most 8".into(),
            });
        }
        Ok(ThrottleConfig {
            max_failures,
            window: Duration::from_secs(secs.max(1)),
            client_attempts,
            slowdown: env.millis_or("SIGNIN_SLOWDOWN_MS", d.slowdown)?,
            signups_per_client,
            trusted_hops,
        })
    }
}

/// How a budget treats the attempts past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// None until the window has passed.
    Hard { max: i64, window: Duration },
    /// One more each `step` times the attempts over, at most [`MAX_SLOWDOWN`] apart.
    Slowing {
        max: i64,
        window: Duration,
        step: Duration,
    },
}

impl Rule {
    fn parts(self) -> (i64, Duration) {
        match self {
            Rule::Hard { max, window } | Rule::Slowing { max, window, .. } => (max, window),
        }
    }
}

/// The keys a sign-in is counted under.
pub fn signin_keys(email: &str, client: &str) -> (String, String) {
    (format!("email:{email}"), format!("client:{client}"))
}

/// The key a sign-up is counted under.
pub fn signup_key(client: &str) -> String {
    format!("signup:{client}")
}

/// The outcome of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Go on.
    Granted,
    /// Not now: try again after this long.
    Refused(Duration),
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Reserves an attempt under `key`, in one statement (so concurrent attempts cannot
/// exceed the budget): granted while the budget allows, counted then.
pub async fn reserve(db: &Db, key: &str, rule: Rule) -> Result<Reservation, sqlx::Error> {
    let now = unix_millis();
    let (max, window) = rule.parts();
    let expired = now - millis(window);
    // When a granted attempt takes the budget past `max`, the next is allowed at
    // `next_at`: the window's end (hard), or now + step × over, capped (slowing).
    let (step, cap, hard) = match rule {
        Rule::Hard { .. } => (0, 0, 1),
        Rule::Slowing { step, .. } => (millis(step), millis(MAX_SLOWDOWN), 0),
    };
    // The budget used after this attempt, and when the next may come: at once while
    // under the budget; past it, never before the window ends (hard), or after a wait of
    // `step` times the attempts over (slowing), capped.
    const NEW_USED: &str =
        "(CASE WHEN attempt_budgets.window_start <= $3 THEN 1 ELSE attempt_budgets.used + 1 END)";
    let sql = format!(
        "INSERT INTO attempt_budgets (key, window_start, used, next_at) \
         VALUES ($1, $2, 1, CASE WHEN $7 = 0 AND 1 >= $4 THEN $2 + $5 ELSE 0 END) \
         ON CONFLICT (key) DO UPDATE SET \
           used = {NEW_USED}, \
           window_start = CASE WHEN attempt_budgets.window_start <= $3 THEN $2 ELSE attempt_budgets.window_start END, \
           next_at = CASE \
             WHEN $7 = 1 OR {NEW_USED} < $4 THEN 0 \
             WHEN $5 * ({NEW_USED} - $4 + 1) > $6 THEN $2 + $6 \
             ELSE $2 + $5 * ({NEW_USED} - $4 + 1) END \
         WHERE attempt_budgets.window_start <= $3 \
           OR ($7 = 1 AND attempt_budgets.used < $4) \
           OR ($7 = 0 AND attempt_budgets.next_at <= $2) \
         RETURNING used"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .bind(now)
        .bind(expired)
        .bind(max)
        .bind(step)
        .bind(cap)
        .bind(hard)
        .fetch_optional(db.pool())
        .await?;
    if row.is_some() {
        return Ok(Reservation::Granted);
    }
    let row = sqlx::query("SELECT next_at, window_start FROM attempt_budgets WHERE key = $1")
        .bind(key)
        .fetch_optional(db.pool())
        .await?;
    let free_at = match (row, rule) {
        (Some(row), Rule::Hard { .. }) => row.try_get::<i64, _>(1)? + millis(window),
        (Some(row), Rule::Slowing { .. }) => row.try_get::<i64, _>(0)?,
        (None, _) => now,
    };
    let wait = u64::try_from(free_at.saturating_sub(now)).unwrap_or(0);
    Ok(Reservation::Refused(Duration::from_millis(wait.max(1000))))
}

/// Gives back an attempt reserved under `key` that succeeded (a client's sign-in).
pub async fn give_back(db: &Db, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE attempt_budgets SET used = CASE WHEN used > 0 THEN used - 1 ELSE 0 END WHERE key = $1",
    )
    .bind(key)
    .execute(db.pool())
    .await
    .map(|_| ())
}

/// The client's address: with `hops` trusted proxies in front, the `X-Forwarded-For` entry
/// the outermost of them appended (the `hops`-th from the right: entries further left are
/// whatever the client claimed); with none, or a header shorter than that, the peer.
pub fn client_address(headers: &HeaderMap, peer: SocketAddr, hops: usize) -> String {
    if hops == 0 {
        return peer.ip().to_string();
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    match entries.len().checked_sub(hops) {
        Some(i) => entries[i]
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|_| peer.ip().to_string()),
        None => peer.ip().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn the_client_is_the_address_the_trusted_proxy_saw() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().expect("addr");
        // No trusted proxy: the header is the client's to forge, the peer is the client.
        assert_eq!(client_address(&headers(&["1.2.3.4"]), peer, 0), "10.0.0.9");
        // One proxy (the gateway): the right-most entry, whatever the client put before it.
        assert_eq!(
            client_address(&headers(&["6.6.6.6, 7.7.7.7", "203.0.113.5"]), peer, 1),
            "203.0.113.5"
        );
        // Two: the second from the right.
        assert_eq!(
            client_address(&headers(&["6.6.6.6, 203.0.113.5, 10.0.0.2"]), peer, 2),
            "203.0.113.5"
        );
        // Too short, or not an address: the peer.
        assert_eq!(client_address(&headers(&[]), peer, 1), "10.0.0.9");
        assert_eq!(client_address(&headers(&["junk"]), peer, 1), "10.0.0.9");
    }

    async fn db() -> anyhow::Result<(tempfile::TempDir, Db)> {
        let dir = tempfile::tempdir()?;
        let db = Db::connect(&format!("sqlite://{}/a.db", dir.path().display())).await?;
        db.migrate("auth", &[&crate::MIGRATIONS]).await?;
        Ok((dir, db))
    }

    #[tokio::test]
    async fn a_hard_budget_grants_its_max_then_refuses_until_the_window_ends() -> anyhow::Result<()>
    {
        let (_dir, db) = db().await?;
        let rule = Rule::Hard {
            max: 3,
            window: Duration::from_secs(60),
        };
        for _ in 0..3 {
            assert_eq!(reserve(&db, "k", rule).await?, Reservation::Granted);
        }
        match reserve(&db, "k", rule).await? {
            Reservation::Refused(wait) => assert!(wait > Duration::from_secs(50), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        // A success gives its place back: one more.
        give_back(&db, "k").await?;
        assert_eq!(reserve(&db, "k", rule).await?, Reservation::Granted);
        assert!(matches!(
            reserve(&db, "k", rule).await?,
            Reservation::Refused(_)
        ));
        Ok(())
    }

    #[tokio::test]
    async fn a_slowing_budget_lets_one_more_through_after_a_growing_wait() -> anyhow::Result<()> {
        let (_dir, db) = db().await?;
        let rule = Rule::Slowing {
            max: 2,
            window: Duration::from_secs(60),
            step: Duration::from_millis(300),
        };
        assert_eq!(reserve(&db, "c", rule).await?, Reservation::Granted);
        // The second uses up the budget: the next must wait 300 ms.
        assert_eq!(reserve(&db, "c", rule).await?, Reservation::Granted);
        assert!(matches!(
            reserve(&db, "c", rule).await?,
            Reservation::Refused(_)
        ));
        switchyard_kit::wait::until("the slowdown to pass", Duration::from_secs(5), || async {
            (reserve(&db, "c", rule).await.ok()? == Reservation::Granted).then_some(())
        })
        .await?;
        // Now one over: the next wait is twice as long.
        let next_at: i64 =
            sqlx::query_scalar("SELECT next_at FROM attempt_budgets WHERE key = 'c'")
                .fetch_one(db.pool())
                .await?;
        let wait = next_at - unix_millis();
        assert!((300..=600).contains(&wait), "{wait}");
        assert!(matches!(
            reserve(&db, "c", rule).await?,
            Reservation::Refused(_)
        ));
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_reservations_never_exceed_the_budget() -> anyhow::Result<()> {
        let (_dir, db) = db().await?;
        let rule = Rule::Hard {
            max: 5,
            window: Duration::from_secs(60),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let db = db.clone();
            tasks.spawn(async move { reserve(&db, "e", rule).await });
        }
        let mut granted = 0;
        while let Some(r) = tasks.join_next().await {
            if r?? == Reservation::Granted {
                granted += 1;
            }
        }
        assert_eq!(granted, 5);
        Ok(())
    }
}
