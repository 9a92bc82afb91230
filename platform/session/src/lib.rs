//! Signed-in users, for any service.
//!
//! The session is the cookie `session` (the original's older name `express:sess` is read
//! too), whose value is `base64(JSON {"jwt": "<token>"})`, unsigned, as the original's
//! cookie-session wrote it. The token is an HS256 JWT of `{id, email, iat}` signed with
//! `JWT_KEY`; the tokens issued here also carry `exp` (`JWT_TTL_SECONDS`), and a token
//! without one, as the original issued them, is accepted unless `JWT_REQUIRE_EXP` is set.
//! A missing, malformed, expired or wrongly signed token means "signed out", never an error.
//!
//! * [`Sessions`]: the keys and the cookie settings, read once at start (`JWT_KEY` is
//!   required: a service refuses to start without it, naming it);
//! * [`CurrentUser`]: the extractor every route can take (`Option` of the user);
//! * [`RequireUser`]: the guard of routes that need a user (401 `Not authorized`).
//!
//! Both find the [`Sessions`] in the router's state ([`HasSessions`]), not in a request
//! extension: a layer that inserts one boxes every route once more, and the extension is
//! allocated again for every request.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use switchyard_kit::{ApiError, ConfigError, Env};

/// The cookie's name.
pub const COOKIE: &str = "session";
/// The name older versions of the original used.
pub const LEGACY_COOKIE: &str = "express:sess";
/// Default lifetime of the tokens issued here.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The shortest `JWT_KEY` accepted: an HS256 key shorter than this is guessable.
pub const MIN_KEY_LEN: usize = 32;

/// A signed-in user: the token's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub id: String,
    pub email: String,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

impl Claims {
    /// The contract's `currentUser`: `{id, email, iat}`, borrowed from the claims and
    /// serialised straight from them (it is the most frequent answer of a signed-in client).
    pub fn current_user(&self) -> SessionUser<'_> {
        SessionUser {
            id: &self.id,
            email: &self.email,
            iat: self.iat,
        }
    }
}

/// See [`Claims::current_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SessionUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub iat: u64,
}

/// Session settings from the environment.
#[derive(Clone)]
pub struct SessionConfig {
    /// `JWT_KEY` (required).
    pub key: Vec<u8>,
    /// `JWT_TTL_SECONDS` (default one day): `exp` of the tokens issued.
    pub ttl: Duration,
    /// `JWT_REQUIRE_EXP` (default false): refuse tokens without `exp`.
    pub require_exp: bool,
    /// `COOKIE_SECURE` (default true): the cookie's `secure` attribute. Turn it off for
    /// plain-HTTP local use (`switchyard up` does).
    pub secure: bool,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("key", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("require_exp", &self.require_exp)
            .field("secure", &self.secure)
            .finish()
    }
}

impl SessionConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let key: String = env.required("JWT_KEY", "the key that signs session tokens")?;
        if key.len() < MIN_KEY_LEN {
            return Err(ConfigError::Malformed {
                name: "JWT_KEY".into(),
                value: "<redacted>".into(),
                reason: format!("must be at least {MIN_KEY_LEN} bytes"),
            });
        }
        let ttl_secs: u64 = env.parse_or("JWT_TTL_SECONDS", DEFAULT_TTL.as_secs())?;
        if ttl_secs == 0 {
            return Err(ConfigError::Malformed {
                name: "JWT_TTL_SECONDS".into(),
                value: "0".into(),
                reason: "must be greater than 0".into(),
            });
        }
        Ok(SessionConfig {
            key: key.into_bytes(),
            ttl: Duration::from_secs(ttl_secs),
            require_exp: env.parse_or("JWT_REQUIRE_EXP", false)?,
            secure: env.parse_or("COOKIE_SECURE", true)?,
        })
    }

    /// Settings for tests: `key`, a one-day TTL, `exp` optional, not `secure`.
    pub fn for_key(key: &str) -> Self {
        SessionConfig {
            key: key.as_bytes().to_vec(),
            ttl: DEFAULT_TTL,
            require_exp: false,
            secure: false,
        }
    }
}

/// Why a session could not be issued.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the session token: {0}")]
pub struct SignError(String);

/// The keys and cookie settings of a service; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    config: SessionConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    verified: VerifiedCookies,
}

/// How many verified cookies [`VerifiedCookies`] keeps.
const VERIFIED_CAPACITY: usize = 1024;

/// Cookies whose token was verified, with its claims: a signed-in reader sends the same
/// cookie on every request, and checking its HS256 signature again each time (base64, HMAC,
/// JSON) cost more than the rest of a small read. Only tokens that passed the full check
/// get in, keyed by the exact cookie value, so an entry can only be found by sending that
/// same value; expiry is checked again on every use, with the same leeway. Bounded: when
/// full it is emptied and refills from the requests that follow.
///
/// The claims are shared (`Arc`), not copied per request; the keys are hashed with foldhash
/// rather than SipHash: only cookies that passed the signature check get in, so a client
/// cannot choose keys to collide.
#[derive(Default)]
struct VerifiedCookies {
    entries: std::sync::RwLock<
        std::collections::HashMap<Box<str>, Arc<Claims>, foldhash::fast::RandomState>,
    >,
}

impl VerifiedCookies {
    fn get(&self, cookie: &str) -> Option<Arc<Claims>> {
        self.entries.read().ok()?.get(cookie).cloned()
    }

    fn insert(&self, cookie: &str, claims: Arc<Claims>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= VERIFIED_CAPACITY {
                entries.clear();
            }
            entries.insert(cookie.into(), claims);
        }
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(config: SessionConfig) -> Result<Self, SignError> {
        if config.key.len() < MIN_KEY_LEN {
            return Err(SignError(format!(
                "the key must be at least {MIN_KEY_LEN} bytes (an HS256 key shorter than its hash is guessable)"
            )));
        }
        let encoding =
            EncodingKey::from_secret(&config.key).map_err(|e| SignError(e.to_string()))?;
        let decoding =
            DecodingKey::from_secret(&config.key).map_err(|e| SignError(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::HS256);
        // The original's tokens have no exp: validate it when present, require it only
        // when configured to.
        validation.required_spec_claims = if config.require_exp {
            ["exp".to_string()].into_iter().collect()
        } else {
            Default::default()
        };
        validation.validate_exp = true;
        validation.leeway = 5;
        Ok(Sessions {
            inner: Arc::new(Inner {
                config,
                encoding,
                decoding,
                validation,
                verified: VerifiedCookies::default(),
            }),
        })
    }

    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// A token for `id` / `email`, issued now, expiring after the TTL.
    pub fn issue(&self, id: &str, email: &str) -> Result<(String, Claims), SignError> {
        let iat = now_secs();
        let claims = Claims {
            id: id.to_string(),
            email: email.to_string(),
            iat,
            exp: Some(iat.saturating_add(self.inner.config.ttl.as_secs())),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.inner.encoding,
        )
        .map_err(|e| SignError(e.to_string()))?;
        Ok((token, claims))
    }

    /// The claims of `token`, if it is well formed, signed with our key and not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &self.inner.validation)
            .map(|data| data.claims)
            .ok()
            .filter(|c| !c.id.is_empty())
    }

    /// The signed-in user of a request's headers, if any.
    pub fn user_of(&self, headers: &HeaderMap) -> Option<Arc<Claims>> {
        let value = session_cookie(headers)?;
        if let Some(claims) = self.inner.verified.get(value) {
            return self.unexpired(claims);
        }
        let token = token_of_cookie_value(value)?;
        let claims = Arc::new(self.verify(&token)?);
        self.inner.verified.insert(value, claims.clone());
        Some(claims)
    }

    /// `claims` if they have not expired since they were verified (`exp` with the same
    /// leeway as the full check; a token without `exp` got in only if that is allowed).
    fn unexpired(&self, claims: Arc<Claims>) -> Option<Arc<Claims>> {
        let leeway = self.inner.validation.leeway;
        match claims.exp {
            Some(exp) if exp < now_secs().saturating_sub(leeway) => None,
            _ => Some(claims),
        }
    }

    /// The `Set-Cookie` that signs in with `token`.
    pub fn set_cookie(&self, token: &str) -> HeaderValue {
        let value = STANDARD.encode(serde_json::json!({ "jwt": token }).to_string());
        let secure = if self.inner.config.secure {
            "; secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; path=/; samesite=lax; httponly{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("session=; path=/"))
    }

    /// The `Set-Cookie` that signs out, as the original sent it.
    pub fn clear_cookie(&self) -> HeaderValue {
        HeaderValue::from_static(
            "session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly",
        )
    }
}

/// A router state that holds the [`Sessions`], for [`CurrentUser`] and [`RequireUser`].
pub trait HasSessions {
    fn sessions(&self) -> &Sessions;
}

impl HasSessions for Sessions {
    fn sessions(&self) -> &Sessions {
        self
    }
}

impl<T: HasSessions> HasSessions for Arc<T> {
    fn sessions(&self) -> &Sessions {
        (**self).sessions()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The value of the `session` cookie (or its legacy name) in `Cookie` headers.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    let mut legacy = None;
    for header in headers.get_all(header::COOKIE) {
        let Ok(text) = header.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            if name == COOKIE && !value.is_empty() {
                return Some(value);
            }
            if name == LEGACY_COOKIE && !value.is_empty() {
                legacy = Some(value);
            }
        }
    }
    legacy
}

/// The token inside a cookie value: base64 (standard or URL-safe, padded or not, maybe
/// percent-encoded) of `{"jwt": "..."}`.
fn token_of_cookie_value(value: &str) -> Option<String> {
    let value = value.replace("%3D", "=").replace("%3d", "=");
    let trimmed = value.trim_end_matches('=');
    let bytes = [STANDARD, URL_SAFE]
        .iter()
        .find_map(|engine| engine.decode(&value).ok())
        .or_else(|| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(trimmed)
                .ok()
        })
        .or_else(|| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(trimmed)
                .ok()
        })?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    json.get("jwt")?.as_str().map(str::to_string)
}

/// The signed-in user, if any: never rejects a request.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Option<Arc<Claims>>);

impl<S: HasSessions + Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(CurrentUser(state.sessions().user_of(&parts.headers)))
    }
}

/// A signed-in user, or 401 `Not authorized`.
#[derive(Debug, Clone)]
pub struct RequireUser(pub Arc<Claims>);

impl<S: HasSessions + Send + Sync> FromRequestParts<S> for RequireUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match state.sessions().user_of(&parts.headers) {
            Some(user) => Ok(RequireUser(user)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(SessionConfig::for_key(
            "asdfasdf-asdfasdf-asdfasdf-asdfasdf",
        ))
        .expect("keys")
    }

    fn cookie_headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn an_issued_session_round_trips_through_its_cookie() {
        let s = sessions();
        let (token, claims) = s.issue("abc", "a@b.c").expect("issue");
        assert!(claims.exp.is_some());
        let set = s.set_cookie(&token);
        let text = set.to_str().expect("ascii");
        assert!(text.starts_with("session="), "{text}");
        assert!(
            text.contains("path=/") && text.contains("httponly") && text.contains("samesite=lax")
        );
        let cookie = text.split(';').next().expect("pair");
        let user = s.user_of(&cookie_headers(cookie)).expect("signed in");
        assert_eq!(*user, claims);
        assert_eq!(
            serde_json::to_value(user.current_user()).expect("serialises"),
            serde_json::json!({"id": "abc", "email": "a@b.c", "iat": claims.iat})
        );
    }

    #[test]
    fn a_cookie_built_as_the_original_tests_build_it_is_accepted() {
        // jwt.sign({id, email}, 'asdfasdf'): HS256, iat, no exp.
        #[derive(Serialize)]
        struct Original<'a> {
            id: &'a str,
            email: &'a str,
            iat: u64,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Original {
                id: "5f1b2c",
                email: "test@test.com",
                iat: now_secs(),
            },
            &EncodingKey::from_secret(b"asdfasdf-asdfasdf-asdfasdf-asdfasdf").expect("key"),
        )
        .expect("token");
        // Buffer.from(JSON.stringify({jwt})).toString('base64'), in `session=...`.
        let value = STANDARD.encode(format!("{{\"jwt\":\"{token}\"}}"));
        let user = sessions()
            .user_of(&cookie_headers(&format!("other=1; session={value}")))
            .expect("accepted");
        assert_eq!(user.email, "test@test.com");
        assert_eq!(user.exp, None);
        // The older cookie name too.
        assert!(
            sessions()
                .user_of(&cookie_headers(&format!("express:sess={value}")))
                .is_some()
        );
        // Unless exp is required.
        let mut strict = SessionConfig::for_key("asdfasdf-asdfasdf-asdfasdf-asdfasdf");
        strict.require_exp = true;
        let strict = Sessions::new(strict).expect("keys");
        assert!(
            strict
                .user_of(&cookie_headers(&format!("session={value}")))
                .is_none()
        );
    }

    #[test]
    fn a_key_shorter_than_its_hash_is_refused() {
        let short = "0123456789abcdef0123456789abcde";
        assert!(Sessions::new(SessionConfig::for_key(short)).is_err());
        let err =
            SessionConfig::from_env(&Env::from_pairs([("JWT_KEY", short)])).expect_err("31 bytes");
        assert!(err.to_string().contains("JWT_KEY"), "{err}");
        let long = "0123456789abcdef0123456789abcdef";
        assert!(Sessions::new(SessionConfig::for_key(long)).is_ok());
    }

    #[test]
    fn bad_tokens_mean_signed_out() {
        let s = sessions();
        let other = Sessions::new(SessionConfig::for_key("another key, thirty-two bytes long"))
            .expect("keys");
        let (foreign, _) = other.issue("x", "x@y.z").expect("issue");
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                id: "x".into(),
                email: "x@y.z".into(),
                iat: 1,
                exp: Some(2),
            },
            &EncodingKey::from_secret(b"asdfasdf-asdfasdf-asdfasdf-asdfasdf").expect("key"),
        )
        .expect("token");
        for value in [
            STANDARD.encode(format!("{{\"jwt\":\"{foreign}\"}}")),
            STANDARD.encode(format!("{{\"jwt\":\"{expired}\"}}")),
            STANDARD.encode("{\"jwt\":\"not.a.token\"}"),
            STANDARD.encode("not json"),
            "%%%".to_string(),
            String::new(),
        ] {
            assert!(
                s.user_of(&cookie_headers(&format!("session={value}")))
                    .is_none(),
                "{value}"
            );
        }
        assert!(s.user_of(&HeaderMap::new()).is_none());
    }

    #[test]
    fn a_verified_cookie_is_kept_and_its_expiry_still_applies() {
        let s = sessions();
        let (token, claims) = s.issue("abc", "a@b.c").expect("issue");
        let set = s.set_cookie(&token);
        let cookie = set
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair");
        let value = cookie.trim_start_matches("session=");
        assert_eq!(s.user_of(&cookie_headers(cookie)).as_deref(), Some(&claims));
        let kept = s.inner.verified.get(value).expect("kept");
        assert_eq!(*kept, claims);
        // Served from the kept entry (the same claims, not a copy) while it has not expired...
        let served = s.user_of(&cookie_headers(cookie)).expect("signed in");
        assert!(Arc::ptr_eq(&served, &kept));
        // ...and refused once its exp (plus the leeway) has passed, kept or not.
        let mut expired = claims;
        expired.exp = Some(now_secs() - s.inner.validation.leeway - 1);
        s.inner.verified.insert(value, Arc::new(expired));
        assert_eq!(s.user_of(&cookie_headers(cookie)), None);
    }

    #[test]
    fn only_verified_cookies_are_kept_and_the_store_is_bounded() {
        let s = sessions();
        let other = Sessions::new(SessionConfig::for_key("another key, thirty-two bytes long"))
            .expect("keys");
        let (foreign, _) = other.issue("x", "x@y.z").expect("issue");
        let value = STANDARD.encode(format!("{{\"jwt\":\"{foreign}\"}}"));
        assert!(
            s.user_of(&cookie_headers(&format!("session={value}")))
                .is_none()
        );
        assert!(s.inner.verified.get(&value).is_none());
        let (_, claims) = s.issue("abc", "a@b.c").expect("issue");
        for n in 0..VERIFIED_CAPACITY + 10 {
            s.inner
                .verified
                .insert(&format!("cookie-{n}"), Arc::new(claims.clone()));
        }
        let kept = s.inner.verified.entries.read().expect("lock").len();
        assert!(kept <= VERIFIED_CAPACITY, "{kept} entries kept");
    }

    #[test]
    fn jwt_key_is_required_and_checked() {
        let err = SessionConfig::from_env(&Env::from_pairs::<[(&str, &str); 0], &str, &str>([]))
            .expect_err("missing");
        assert!(err.to_string().contains("JWT_KEY"), "{err}");
        let err =
            SessionConfig::from_env(&Env::from_pairs([("JWT_KEY", "short")])).expect_err("short");
        assert!(err.to_string().contains("JWT_KEY"), "{err}");
        let ok = SessionConfig::from_env(&Env::from_pairs([
            ("JWT_KEY", "a long enough key of thirty-two bytes"),
            ("COOKIE_SECURE", "false"),
        ]))
        .expect("ok");
        assert!(!ok.secure);
        assert!(
            !format!("{ok:?}").contains("long enough"),
            "the key is never printed"
        );
    }

    #[test]
    fn the_cookie_is_secure_unless_turned_off() {
        let mut c = SessionConfig::for_key("asdfasdf-asdfasdf-asdfasdf-asdfasdf");
        c.secure = true;
        let s = Sessions::new(c).expect("keys");
        assert!(
            s.set_cookie("t")
                .to_str()
                .expect("ascii")
                .ends_with("; secure")
        );
        assert_eq!(
            s.clear_cookie().to_str().expect("ascii"),
            "session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly"
        );
    }
}
