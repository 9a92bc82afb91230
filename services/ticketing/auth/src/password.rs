//! Password hashing: argon2id, parameters from the environment.
//!
//! Hashing is deliberately slow, so it runs on the blocking pool, never on the threads that
//! serve requests. Verifying against an unknown email uses a dummy hash made at start with
//! the same parameters: "no such user" and "wrong password" then take the same time, and
//! the timing says nothing about which emails have accounts.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use switchyard_kit::{ConfigError, Env};

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// `ARGON2_MEMORY_KIB` (default 19456, OWASP's minimum for argon2id).
    pub memory_kib: u32,
    /// `ARGON2_ITERATIONS` (default 2).
    pub iterations: u32,
    /// `ARGON2_PARALLELISM` (default 1).
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        PasswordParams {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordParams {
    /// The cheapest parameters argon2 accepts: for tests only.
    pub const FOR_TESTS: PasswordParams = PasswordParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = PasswordParams::default();
        let p = PasswordParams {
            memory_kib: env.parse_or("ARGON2_MEMORY_KIB", d.memory_kib)?,
            iterations: env.parse_or("ARGON2_ITERATIONS", d.iterations)?,
            parallelism: env.parse_or("ARGON2_PARALLELISM", d.parallelism)?,
        };
        p.argon2().map_err(|reason| ConfigError::Malformed {
            name: "ARGON2_MEMORY_KIB".into(),
            value: format!(
                "{} (ARGON2_ITERATIONS={}, ARGON2_PARALLELISM={})",
                p.memory_kib, p.iterations, p.parallelism
            ),
            reason,
        })?;
        Ok(p)
    }

    fn argon2(&self) -> Result<Argon2<'static>, String> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| e.to_string())?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Passwords {
    params: PasswordParams,
    dummy: Arc<String>,
}

impl Passwords {
    /// Prepares the hasher and its dummy hash.
    pub async fn new(params: PasswordParams) -> anyhow::Result<Self> {
        let dummy = hash_with(params, "a password nobody has".to_string()).await?;
        Ok(Passwords {
            params,
            dummy: Arc::new(dummy),
        })
    }

    pub fn params(&self) -> PasswordParams {
        self.params
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        hash_with(self.params, password).await
    }

    /// Whether `password` matches `stored`; with `None` (no such user), verifies against
    /// the dummy hash and answers false, in the same time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.as_ref().clone());
        let matched = tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            // The parameters come from the stored hash: raising them later keeps old
            // hashes valid.
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
        .unwrap_or(false);
        known && matched
    }
}

async fn hash_with(params: PasswordParams, password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let argon2 = params.argon2().map_err(anyhow::Error::msg)?;
        argon2
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the hashing task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_the_dummy_never_matches() -> anyhow::Result<()> {
        let p = Passwords::new(PasswordParams::FOR_TESTS).await?;
        let h = p.hash("secret".into()).await?;
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert_ne!(h, p.hash("secret".into()).await?, "salted");
        assert!(p.verify("secret".into(), Some(h.clone())).await);
        assert!(!p.verify("wrong".into(), Some(h)).await);
        assert!(!p.verify("a password nobody has".into(), None).await);
        assert!(!p.verify("x".into(), Some("garbage".into())).await);
        Ok(())
    }

    #[test]
    fn bad_parameters_name_the_variable() {
        let err = PasswordParams::from_env(&Env::from_pairs([("ARGON2_MEMORY_KIB", "1")]))
            .expect_err("too little memory");
        assert!(err.to_string().contains("ARGON2_MEMORY_KIB"), "{err}");
        let err = PasswordParams::from_env(&Env::from_pairs([("ARGON2_ITERATIONS", "x")]))
            .expect_err("not a number");
        assert!(err.to_string().contains("ARGON2_ITERATIONS"), "{err}");
    }
}
