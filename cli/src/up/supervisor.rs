//! Starting, watching and stopping the processes of a plan.

use std::io::IsTerminal;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use switchyard_kit::Backoff;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::plan::{Plan, ProcSpec};
use super::table::{Row, render};

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A process that ran this long is healthy again: its next crash restarts it at once.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

type Status = Arc<Mutex<Vec<Row>>>;

pub async fn run(plan: Plan, ready_timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let stop = CancellationToken::new();
    spawn_signal_listener(stop.clone());
    let status: Status = Arc::new(Mutex::new(
        plan.procs
            .iter()
            .map(|p| Row {
                service: p.label(),
                address: plan.url(p.port),
                ready: false,
                restarts: 0,
            })
            .collect(),
    ));
    let colors = std::io::stdout().is_terminal();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let mut tasks = Vec::new();
    let waves: std::collections::BTreeSet<u8> = plan.procs.iter().map(|p| p.wave).collect();
    for wave in waves {
        let members: Vec<(usize, &ProcSpec)> = plan
            .procs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.wave == wave)
            .collect();
        for (index, spec) in &members {
            let keeper = Keeper {
                exe: exe.clone(),
                spec: (*spec).clone(),
                index: *index,
                status: status.clone(),
                stop: stop.clone(),
                color: colors.then_some(COLORS[*index % COLORS.len()]),
            };
            tasks.push(tokio::spawn(keeper.run()));
        }
        for (index, spec) in &members {
            let url = spec.ready_url.clone();
            let deadline = Instant::now() + ready_timeout;
            loop {
                if stop.is_cancelled() {
                    break;
                }
                if matches!(http.get(&url).send().await, Ok(r) if r.status().is_success()) {
                    set(&status, *index, |r| r.ready = true);
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!(
                        "up: {} is not ready after {ready_timeout:?}; still waiting (see its log lines)",
                        spec.label()
                    );
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
    }
    if !stop.is_cancelled() {
        let rows = status.lock().map(|r| r.clone()).unwrap_or_default();
        println!("\n{}", render(&rows));
        println!(
            "The {} is up in {:.2?}: open {}  (data in {}; Ctrl-C stops everything)\n",
            plan.app.name,
            started.elapsed(),
            plan.url(plan.gateway_port),
            plan.data_dir.display()
        );
        if let Some(console) = plan.procs.iter().find(|p| p.name == "console") {
            println!(
                "Its console (the map, the live events and their journeys, traces, consumers): {}\n",
                plan.url(console.port)
            );
        }
        if let Some(gateway) = plan.procs.iter().find(|p| p.name == "gateway") {
            println!(
                "Its events, as AsyncAPI 3: {}/asyncapi.json  (each service's API: /openapi.json on its ops port)\n",
                plan.url(gateway.ops_port)
            );
        }
    }
    stop.cancelled().await;
    println!("up: stopping every service");
    for task in tasks {
        let _ = task.await;
    }
    let rows = status.lock().map(|r| r.clone()).unwrap_or_default();
    println!("{}", render(&rows));
    Ok(())
}

const COLORS: [&str; 7] = ["36", "32", "33", "35", "34", "31", "96"];

fn set(status: &Status, index: usize, f: impl FnOnce(&mut Row)) {
    if let Ok(mut rows) = status.lock()
        && let Some(row) = rows.get_mut(index)
    {
        f(row);
    }
}

fn spawn_signal_listener(stop: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("up: cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    stop.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
}

/// Keeps one process running, like a Deployment with one replica.
struct Keeper {
    exe: std::path::PathBuf,
    spec: ProcSpec,
    index: usize,
    status: Status,
    stop: CancellationToken,
    color: Option<&'static str>,
}

impl Keeper {
    fn prefix(&self) -> String {
        let name = format!("{:>10} |", self.spec.label());
        match self.color {
            Some(c) => format!("\x1b[{c}m{name}\x1b[0m"),
            None => name,
        }
    }

    async fn run(self) {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            let started = Instant::now();
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(e) => {
                    eprintln!("{} cannot start: {e}", self.prefix());
                    if !backoff.wait(&self.stop).await {
                        return;
                    }
                    continue;
                }
            };
            tokio::select! {
                status = child.wait() => {
                    set(&self.status, self.index, |r| r.ready = false);
                    if self.stop.is_cancelled() {
                        return;
                    }
                    if started.elapsed() > STABLE_AFTER {
                        backoff.reset();
                    }
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    eprintln!("{} exited ({status}); restarting in about {:?}", self.prefix(), backoff.current());
                    set(&self.status, self.index, |r| r.restarts += 1);
                    if !backoff.wait(&self.stop).await {
                        return;
                    }
                    self.mark_ready_when_ready();
                }
                _ = self.stop.cancelled() => {
                    self.terminate(&mut child).await;
                    set(&self.status, self.index, |r| r.ready = false);
                    return;
                }
            }
        }
    }

    /// After a restart, flips the status back to ready once `/readyz` answers.
    fn mark_ready_when_ready(&self) {
        let (status, index, url, stop) = (
            self.status.clone(),
            self.index,
            self.spec.ready_url.clone(),
            self.stop.clone(),
        );
        tokio::spawn(async move {
            let Ok(http) = reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()
            else {
                return;
            };
            for _ in 0..600 {
                if stop.is_cancelled() {
                    return;
                }
                if matches!(http.get(&url).send().await, Ok(r) if r.status().is_success()) {
                    set(&status, index, |r| r.ready = true);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["serve", self.spec.serve.as_str()])
            .envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal reaches `up` only, which then
            // stops the services in order.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, self.prefix()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, self.prefix()));
        }
        Ok(child)
    }

    async fn terminate(&self, child: &mut Child) {
        if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => eprintln!("{} stopped: {status}", self.prefix()),
            Ok(Err(e)) => eprintln!("{} stop failed: {e}", self.prefix()),
            Err(_) => {
                eprintln!(
                    "{} did not stop within {STOP_GRACE:?}; killing it",
                    self.prefix()
                );
                let _ = child.kill().await;
            }
        }
    }
}

async fn forward_lines(stream: impl AsyncRead + Unpin, prefix: String) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{prefix} {line}");
    }
}
