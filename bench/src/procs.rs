//! Child processes: the real `switchyard` binary, its memory, free ports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Locks a mutex, ignoring poisoning (a panicked holder leaves plain data behind).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// True if `port` can be bound on 127.0.0.1 right now.
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn mem_of(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `switchyard serve <service>` as a child process; killed when dropped.
pub struct Service {
    pub name: String,
    pub port: u16,
    /// The port of its `/healthz`, `/readyz`, `/metrics`.
    pub ops_port: u16,
    bin: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    envs: Vec<(String, String)>,
    child: Option<Child>,
}

impl Service {
    /// Starts `bin serve <name>` on 127.0.0.1:`port` with its data in `data_dir` and its
    /// output appended to `<log_dir>/<name>.log`. Logging and database settings are the
    /// service's defaults (RUST_LOG, LOG_FORMAT and DATABASE_URL are removed).
    pub fn spawn(
        bin: &Path,
        name: &str,
        port: u16,
        data_dir: &Path,
        log_dir: &Path,
        envs: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let mut s = Service {
            name: name.to_string(),
            port,
            ops_port: free_port()?,
            bin: bin.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            log: log_dir.join(format!("{}.log", name.replace('/', "-"))),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            child: None,
        };
        s.start()?;
        Ok(s)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        // The benchmarks run the blog: its services by their qualified names.
        let serve = if self.name.contains('/') {
            self.name.clone()
        } else {
            format!("blog/{}", self.name)
        };
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", &serve])
            .env("PORT", self.port.to_string())
            .env("OPS_PORT", self.ops_port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DATA_DIR", &self.data_dir)
            .env_remove("RUST_LOG")
            .env_remove("LOG_FORMAT")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve {}", self.bin.display(), self.name))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where its operational endpoints answer.
    pub fn ops_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ops_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn mem(&self) -> Option<Mem> {
        self.pid().and_then(mem_of)
    }

    /// Waits until `/readyz` answers 2xx; fails if the process exits or `timeout` passes.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/readyz", self.ops_url());
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited during start-up ({status}); last log lines:\n{}",
                    self.name,
                    tail(&self.log, 15)
                );
            }
            if let Ok(r) = http.get(&url).timeout(Duration::from_secs(1)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {timeout:?}; last log lines:\n{}",
                    self.name,
                    tail(&self.log, 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same command again (same port, same data).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.start()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Samples the VmRSS of some processes every 100 ms and keeps each one's maximum.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<BTreeMap<String, u64>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(procs: Vec<(String, u32)>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, p) = (stop.clone(), peaks.clone());
        let task = tokio::spawn(async move {
            // Bounded: at most 30 minutes of samples.
            for _ in 0..18_000 {
                for (name, pid) in &procs {
                    if let Some(m) = mem_of(*pid) {
                        let mut peaks = lock(&p);
                        let e = peaks.entry(name.clone()).or_insert(0);
                        *e = (*e).max(m.rss_kib);
                    }
                }
                if s.load(Ordering::Acquire) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler {
            stop,
            peaks,
            task: Some(task),
        }
    }

    /// Stops sampling; the maximum VmRSS seen per process, in KiB.
    pub async fn finish(mut self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Release);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        lock(&self.peaks).clone()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The CPU time (user and system) `pid` has used, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    // proc(5): utime and stime are fields 14 and 15, in USER_HZ ticks, which the kernel's
    // ABI fixes at 100 a second; counted from the state (field 3), after the name.
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// The CPU time used so far by `pid` and each of its descendants alive now.
pub fn tree_cpu_time(pid: u32) -> Duration {
    std::iter::once(pid)
        .chain(descendants(pid))
        .filter_map(cpu_time)
        .sum()
}

/// Every descendant of `pid` (children of all its threads, recursively).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![pid];
    // Bounded walk: a process tree of the blog is small.
    while let Some(p) = stack.pop() {
        if out.len() > 256 {
            break;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if !out.contains(&c) {
                    out.push(c);
                    stack.push(c);
                }
            }
        }
    }
    out
}

/// Sends `signal` to `pid`, ignoring errors (it may be gone already).
pub fn signal(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A reference server of the bench: this binary run as `<command> --port <free port> <args>`
/// (`bare-server`, `bare-proxy`), ready once `probe` answers 2xx; killed when dropped.
pub struct Reference {
    child: tokio::process::Child,
    pub port: u16,
}

impl Reference {
    pub async fn start(
        ctx: &crate::Ctx,
        command: &str,
        args: &[&std::ffi::OsStr],
        probe: &str,
    ) -> anyhow::Result<Reference> {
        let port = free_port()?;
        let exe = std::env::current_exe().context("locating switchyard-bench")?;
        let child = tokio::process::Command::new(exe)
            .args([command, "--port", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting switchyard-bench {command}"))?;
        let reference = Reference { child, port };
        let url = reference.url(probe);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = ctx.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(reference);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "switchyard-bench {command} did not answer"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
