//! Password hashing: argon2id, parameters from the environment.
//!
//! Hashing is deliberately slow and memory-hard (19 MiB a hash by default), so it runs on
//! a few threads of its own (`ARGON2_THREADS`, default 1), never on the threads that serve
//! requests: requests beyond them wait their turn. That bounds the service's memory: each
//! hash takes `ARGON2_MEMORY_KIB`, and the allocator keeps what a thread used for that
//! thread, so hashing on the blocking pool's many threads grew the process by 19 MiB per
//! thread that ever hashed (over 200 MiB under 8 concurrent signups). Verifying against an
//! unknown email uses a dummy hash made at start with the same parameters: "no such user"
//! and "wrong password" then take the same time, and the timing says nothing about which
//! emails have accounts.

use std::sync::{Arc, Mutex, PoisonError};

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
    /// `ARGON2_THREADS` (default 1): hashes computed at once, each on a thread of its own.
    pub threads: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        PasswordParams {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            threads: 1,
        }
    }
}

impl PasswordParams {
    /// The cheapest parameters argon2 accepts: for tests only.
    pub const FOR_TESTS: PasswordParams = PasswordParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
        threads: 2,
    };

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = PasswordParams::default();
        let p = PasswordParams {
            memory_kib: env.parse_or("ARGON2_MEMORY_KIB", d.memory_kib)?,
            iterations: env.parse_or("ARGON2_ITERATIONS", d.iterations)?,
            parallelism: env.parse_or("ARGON2_PARALLELISM", d.parallelism)?,
            threads: env.parse_or("ARGON2_THREADS", d.threads)?,
        };
        if p.threads == 0 || p.threads > 64 {
            return Err(ConfigError::Malformed {
                name: "ARGON2_THREADS".into(),
                value: p.threads.to_string(),
                reason: "must be between 1 and 64".into(),
            });
        }
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
    workers: Workers,
}

impl Passwords {
    /// Starts the hashing threads and makes the dummy hash.
    pub async fn new(params: PasswordParams) -> anyhow::Result<Self> {
        let workers = Workers::start(params.threads)?;
        let dummy = workers
            .run(move || hash_with(params, "a password nobody has"))
            .await??;
        Ok(Passwords {
            params,
            dummy: Arc::new(dummy),
            workers,
        })
    }

    pub fn params(&self) -> PasswordParams {
        self.params
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let params = self.params;
        self.workers
            .run(move || hash_with(params, &password))
            .await?
    }

    /// Whether `password` matches `stored`; with `None` (no such user), verifies against
    /// the dummy hash and answers false, in the same time.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.as_ref().clone());
        let matched = self
            .workers
            .run(move || {
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

fn hash_with(params: PasswordParams, password: &str) -> anyhow::Result<String> {
    let argon2 = params.argon2().map_err(anyhow::Error::msg)?;
    argon2
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads: jobs queue in a channel, each thread takes the next when free.
/// They end when the last [`Passwords`] is dropped.
#[derive(Clone)]
struct Workers {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Workers {
    fn start(threads: u32) -> anyhow::Result<Self> {
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        // One thread waits for the next job; the others wait their turn.
                        let job = queue
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .blocking_recv();
                        match job {
                            // A job that panics loses its answer (its caller gets an
                            // error), not the thread.
                            Some(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            None => return,
                        }
                    }
                })
                .map_err(|e| anyhow::anyhow!("cannot start a hashing thread: {e}"))?;
        }
        Ok(Workers { jobs })
    }

    /// Runs `work` on a hashing thread and waits for its result.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(work());
            }))
            .map_err(|_| anyhow::anyhow!("the hashing threads are gone"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("a hashing job failed"))
    }
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
