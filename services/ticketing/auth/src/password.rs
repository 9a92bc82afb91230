//! Password hashing: argon2id, parameters from the environment.
//!
//! Hashing is deliberately slow and memory-hard (19 MiB a hash by default), so it runs on
//! a few threads of its own (`ARGON2_THREADS`, default 1), never on the threads that serve
//! requests: requests beyond them wait their turn in a bounded queue (`ARGON2_QUEUE`,
//! default 64; a request finding it full is answered 503 with `Retry-After` at once), and a
//! job whose request has gone (the client gave up, the connection closed) is skipped, not
//! hashed: a crowd of abandoned sign-ins cannot delay the ones still waiting. Each thread keeps one memory area of
//! `ARGON2_MEMORY_KIB` and hashes in it every time. That bounds the service's memory:
//! letting argon2 allocate 19 MiB per hash, on the blocking pool's many threads, grew the
//! process to over 200 MiB under concurrent signups (the allocator kept the freed areas,
//! split by smaller allocations, and asked for new ones). Verifying against an
//! unknown email uses a dummy hash made at start with the same parameters: "no such user"
//! and "wrong password" then take the same time, and the timing says nothing about which
//! emails have accounts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version, password_hash};
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
    /// `ARGON2_QUEUE` (default 64): hashing jobs waiting at most; more are refused (503).
    pub queue: usize,
}

impl Default for PasswordParams {
    fn default() -> Self {
        PasswordParams {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            threads: 1,
            queue: 64,
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
        queue: 256,
    };

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = PasswordParams::default();
        let p = PasswordParams {
            memory_kib: env.parse_or("ARGON2_MEMORY_KIB", d.memory_kib)?,
            iterations: env.parse_or("ARGON2_ITERATIONS", d.iterations)?,
            parallelism: env.parse_or("ARGON2_PARALLELISM", d.parallelism)?,
            threads: env.parse_or("ARGON2_THREADS", d.threads)?,
            queue: env.parse_or("ARGON2_QUEUE", d.queue)?,
        };
        if p.queue == 0 || p.queue > 100_000 {
            return Err(ConfigError::Malformed {
                name: "ARGON2_QUEUE".into(),
                value: p.queue.to_string(),
                reason: "must be between 1 and 100000".into(),
            });
        }
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
/// Why a password could not be hashed or checked now.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The queue is full: answer 503 with `Retry-After`.
    #[error("too many passwords waiting to be checked")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

#[derive(Clone)]
pub struct Passwords {
    params: PasswordParams,
    dummy: Arc<String>,
    workers: Workers,
}

impl Passwords {
    /// Starts the hashing threads and makes the dummy hash.
    pub async fn new(params: PasswordParams) -> anyhow::Result<Self> {
        let workers = Workers::start(params)?;
        let dummy = workers
            .run(move |memory| hash_with(params, "a password nobody has", memory))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))??;
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
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params;
        Ok(self
            .workers
            .run(move |memory| hash_with(params, &password, memory))
            .await??)
    }

    /// Whether `password` matches `stored`; with `None` (no such user), verifies against
    /// the dummy hash and answers false, in the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.as_ref().clone());
        let matched = self
            .workers
            .run(move |memory| verify_with(&password, &hash, memory))
            .await?;
        Ok(known && matched)
    }

    /// The same, counting skipped jobs in `metrics` too.
    pub fn with_metrics(mut self, metrics: switchyard_kit::Metrics) -> Self {
        self.workers.metrics = Some(metrics);
        self
    }

    /// Jobs skipped because their request had gone before their turn.
    pub fn skipped(&self) -> u64 {
        self.workers.skipped.load(Ordering::Relaxed)
    }
}

/// The argon2id hash of `password` with a fresh salt, as a PHC string, computed in `memory`.
fn hash_with(
    params: PasswordParams,
    password: &str,
    memory: &mut Memory,
) -> anyhow::Result<String> {
    let argon2 = params.argon2().map_err(anyhow::Error::msg)?;
    let salt =
        password_hash::try_generate_salt().map_err(|e| anyhow::anyhow!("no random salt: {e}"))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            &mut out,
            memory.blocks(argon2.params().block_count()),
        )
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`, computed in `memory`. The
/// parameters come from the stored hash: raising them later keeps old hashes valid.
fn verify_with(password: &str, stored: &str, memory: &mut Memory) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            memory.blocks(blocks),
        )
        .is_err()
    {
        return false;
    }
    // Output compares in constant time.
    Output::new(&out).is_ok_and(|computed| &computed == expected)
}

/// One hashing thread's memory area, grown to the largest hash it has computed.
#[derive(Default)]
struct Memory(Vec<Block>);

impl Memory {
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        &mut self.0[..count]
    }
}

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// The hashing threads: jobs queue in a channel, each thread takes the next when free and
/// runs it in its own memory area (made at start for the configured parameters). They end
/// when the last [`Passwords`] is dropped.
#[derive(Clone)]
struct Workers {
    jobs: tokio::sync::mpsc::Sender<Job>,
    skipped: Arc<AtomicU64>,
    /// Where skipped jobs are counted (`switchyard_jobs_skipped_total{job="password"}`).
    metrics: Option<switchyard_kit::Metrics>,
}

impl Workers {
    fn start(params: PasswordParams) -> anyhow::Result<Self> {
        let block_count = params
            .argon2()
            .map_err(anyhow::Error::msg)?
            .params()
            .block_count();
        let (jobs, queue) = tokio::sync::mpsc::channel::<Job>(params.queue.max(1));
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..params.threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    let mut memory = Memory::default();
                    memory.blocks(block_count);
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
                                let _ =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                        job(&mut memory)
                                    }));
                            }
                            None => return,
                        }
                    }
                })
                .map_err(|e| anyhow::anyhow!("cannot start a hashing thread: {e}"))?;
        }
        Ok(Workers {
            jobs,
            skipped: Arc::new(AtomicU64::new(0)),
            metrics: None,
        })
    }

    /// Runs `work` on a hashing thread, in its memory area, and waits for its result; if
    /// the caller stops waiting before its turn (its request is gone), the work is skipped.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let skipped = self.skipped.clone();
        let metrics = self.metrics.clone();
        let job: Job = Box::new(move |memory: &mut Memory| {
            if done.is_closed() {
                skipped.fetch_add(1, Ordering::Relaxed);
                if let Some(metrics) = &metrics {
                    metrics.job_skipped("password");
                }
                return;
            }
            let _ = done.send(work(memory));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => HashError::Busy,
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                HashError::Failed(anyhow::anyhow!("the hashing threads are gone"))
            }
        })?;
        result
            .await
            .map_err(|_| HashError::Failed(anyhow::anyhow!("a hashing job failed")))
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
        assert!(p.verify("secret".into(), Some(h.clone())).await?);
        assert!(!p.verify("wrong".into(), Some(h)).await?);
        assert!(!p.verify("a password nobody has".into(), None).await?);
        assert!(!p.verify("x".into(), Some("garbage".into())).await?);
        Ok(())
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_abandoned_jobs_are_skipped() -> anyhow::Result<()> {
        let params = PasswordParams {
            threads: 1,
            queue: 2,
            ..PasswordParams::FOR_TESTS
        };
        let p = Passwords::new(params).await?;
        // The one thread is held by a job of the test's own...
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let workers = p.workers.clone();
        let holder = tokio::spawn(async move {
            workers
                .run(move |_| {
                    let _ = started.send(());
                    held.recv().is_ok()
                })
                .await
        });
        running.await?;
        // ...two callers queue behind it...
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let p = p.clone();
            waiting.push(tokio::spawn(async move { p.hash("x".into()).await }));
        }
        switchyard_kit::wait::until(
            "the queue full",
            std::time::Duration::from_secs(10),
            || async { (p.workers.jobs.capacity() == 0).then_some(()) },
        )
        .await?;
        // ...so the next is refused at once, not queued.
        assert!(matches!(p.hash("y".into()).await, Err(HashError::Busy)));
        // The two give up: their jobs are skipped when their turn comes.
        for task in waiting {
            task.abort();
            let _ = task.await;
        }
        release
            .send(())
            .map_err(|_| anyhow::anyhow!("the holder is gone"))?;
        assert!(holder.await?.map_err(|e| anyhow::anyhow!("{e}"))?);
        switchyard_kit::wait::until(
            "abandoned jobs skipped",
            std::time::Duration::from_secs(10),
            || async { (p.skipped() == 2).then_some(()) },
        )
        .await?;
        assert!(p.hash("z".into()).await.is_ok());
        Ok(())
    }

    #[test]
    fn hashes_are_standard_phc_strings_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let params = PasswordParams::FOR_TESTS;
        let mut memory = Memory::default();
        // Ours, checked by the argon2 crate's own verifier.
        let ours = hash_with(params, "secret", &mut memory).expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC");
        assert!(
            Argon2::default()
                .verify_password(b"secret", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"other", &parsed)
                .is_err()
        );
        // The argon2 crate's (as stored before), with other parameters, checked by ours:
        // the memory area grows to the stored hash's cost.
        let stronger = PasswordParams {
            memory_kib: 256,
            iterations: 2,
            ..params
        };
        let theirs = stronger
            .argon2()
            .expect("params")
            .hash_password(b"secret")
            .expect("hash")
            .to_string();
        assert!(verify_with("secret", &theirs, &mut memory));
        assert!(!verify_with("other", &theirs, &mut memory));
        assert!(!verify_with(
            "secret",
            "$argon2id$v=19$garbage",
            &mut memory
        ));
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
