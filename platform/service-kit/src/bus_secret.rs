//! The secret an app's services and its HTTP event bus share (`EVENT_BUS_SECRET`): only
//! who holds it may publish to the bus (`POST /events`), read its log (`GET /events`), or
//! deliver to a service (a service's `POST /events`). It travels as
//! `Authorization: Bearer <secret>`.
//!
//! Without it the bus takes events from anyone, as the course's own services expect; the
//! bus and each service say so in a warning at start. `switchyard up` generates one per
//! app and keeps it in the data directory; in the cluster it is the Secret
//! `event-bus-secret`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::config::{ConfigError, Env};
use crate::error::ApiError;

/// The variable it is read from.
pub const VARIABLE: &str = "EVENT_BUS_SECRET";
/// Shortest secret accepted (bytes): a guessable one protects nothing.
pub const MIN_LEN: usize = 32;
/// Longest secret accepted (bytes).
pub const MAX_LEN: usize = 512;

/// The shared secret (never printed: `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct BusSecret {
    /// `Bearer <secret>`, as sent and expected.
    bearer: HeaderValue,
}

impl std::fmt::Debug for BusSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BusSecret(..)")
    }
}

impl BusSecret {
    /// `EVENT_BUS_SECRET`, if set: printable ASCII without spaces, 32 to 512 bytes.
    pub fn from_env(env: &Env) -> Result<Option<BusSecret>, ConfigError> {
        env.raw(VARIABLE)
            .map(|value| {
                BusSecret::new(value.trim()).map_err(|reason| ConfigError::Malformed {
                    name: VARIABLE.to_string(),
                    value: "(hidden)".to_string(),
                    reason,
                })
            })
            .transpose()
    }

    /// A secret from its text.
    pub fn new(secret: &str) -> Result<BusSecret, String> {
        if secret.len() < MIN_LEN || secret.len() > MAX_LEN {
            return Err(format!(
                "must be {MIN_LEN} to {MAX_LEN} bytes (this is {})",
                secret.len()
            ));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces".to_string());
        }
        let bearer = HeaderValue::from_str(&format!("Bearer {secret}"))
            .map_err(|_| "must be printable ASCII without spaces".to_string())?;
        Ok(BusSecret { bearer })
    }

    /// The `Authorization` header value to send.
    pub fn authorization(&self) -> HeaderValue {
        self.bearer.clone()
    }

    /// Whether a request's headers carry this secret (compared in constant time).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let mut sent = headers.get_all(header::AUTHORIZATION).iter();
        match (sent.next(), sent.next()) {
            (Some(value), None) => constant_time_eq(value.as_bytes(), self.bearer.as_bytes()),
            _ => false,
        }
    }
}

/// A router state that knows the app's bus secret, if it has one.
pub trait HasBusSecret {
    fn bus_secret(&self) -> Option<&BusSecret>;
}

/// An extractor that admits a request only if it carries the bus's secret (any request,
/// when none is configured); otherwise it answers 401 before the body is read.
#[derive(Debug, Clone, Copy)]
pub struct FromBus;

impl<S: HasBusSecret + Send + Sync> FromRequestParts<S> for FromBus {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match state.bus_secret() {
            Some(secret) if !secret.admits(&parts.headers) => {
                tracing::warn!(path = %parts.uri.path(), "refused a request without the bus's secret");
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this takes requests from the app's own services only (Authorization: Bearer <the bus's secret>)",
                ))
            }
            _ => Ok(FromBus),
        }
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn only_the_exact_bearer_is_admitted() {
        let secret = BusSecret::new(SECRET).expect("secret");
        assert!(secret.admits(&headers(&[&format!("Bearer {SECRET}")])));
        for bad in [
            vec![],
            vec!["Bearer 0123456789abcdef0123456789abcdeX"],
            vec![SECRET],
            vec!["Bearer "],
            vec!["Basic abc"],
        ] {
            assert!(!secret.admits(&headers(&bad)), "{bad:?}");
        }
        let twice = format!("Bearer {SECRET}");
        assert!(!secret.admits(&headers(&[&twice, &twice])));
    }

    #[test]
    fn short_or_odd_secrets_are_refused_naming_the_variable() {
        for bad in [
            "short",
            "0123456789abcdef 0123456789abcdef",
            "é0123456789abcdef0123456789abcdef",
        ] {
            let err =
                BusSecret::from_env(&Env::from_pairs([(VARIABLE, bad)])).expect_err("refused");
            let text = err.to_string();
            assert!(text.contains(VARIABLE) && !text.contains(bad), "{text}");
        }
        assert_eq!(
            BusSecret::from_env(&Env::from_pairs::<[(&str, &str); 0], &str, &str>([]))
                .expect("unset is fine"),
            None
        );
        assert!(
            BusSecret::from_env(&Env::from_pairs([(VARIABLE, SECRET)]))
                .expect("ok")
                .is_some()
        );
    }
}
