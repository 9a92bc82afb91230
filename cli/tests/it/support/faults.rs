//! The nemesis of the fault-injection tests: a plan of faults carried out against the
//! processes of an `up`, each one's effect awaited, so a checker cannot pass with a nemesis
//! that did nothing.

use std::time::Duration;

use super::backend::{Backend, Resources};
use super::nats_server::NatsServer;
use super::nemesis::drop_postgres_connections;
use super::up::Up;

/// What the nemesis does at one step.
#[derive(Debug, Clone)]
pub enum Fault {
    /// A signal (`-KILL`, `-TERM`) to each of these services at once.
    Signal(Vec<&'static str>, &'static str),
    RestartNats,
    DropPostgresConnections,
}

/// The heavy tests hold this while they run (fault injection, outages, the OpenAPI fuzzing):
/// one at a time in the test binary, beside the light ones, since the machine has two cores
/// and their loads and deadlines assume one another's absence.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The usual plan for `services` of an app (`bus` is the event bus, or nothing on NATS):
/// SIGKILL each alone, then the `groups` at once, SIGTERM each (but the gateway, whose
/// clients would only see closed connections); on the production backend, a NATS restart
/// and two PostgreSQL connection drops.
pub fn plan(backend: Backend, services: &[&'static str], groups: &[&[&'static str]]) -> Vec<Fault> {
    let bus: &[&'static str] = match backend {
        Backend::Embedded => &["event-bus"],
        Backend::Production => &[],
    };
    let mut plan: Vec<Fault> = services
        .iter()
        .chain(bus)
        .map(|s| Fault::Signal(vec![*s], "-KILL"))
        .collect();
    for group in groups {
        plan.push(Fault::Signal([*group, bus].concat(), "-KILL"));
    }
    if backend == Backend::Production {
        plan.push(Fault::RestartNats);
        plan.push(Fault::DropPostgresConnections);
    }
    plan.extend(
        services
            .iter()
            .filter(|s| **s != "gateway")
            .chain(bus)
            .map(|s| Fault::Signal(vec![*s], "-TERM")),
    );
    if backend == Backend::Production {
        plan.push(Fault::DropPostgresConnections);
    }
    plan
}

/// What the nemesis did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Processes signalled and seen replaced by `up`.
    pub signalled: usize,
    /// Of those, by SIGTERM.
    pub terms: usize,
    /// NATS restarts and connection drops carried out.
    pub others: usize,
}

impl Done {
    /// What `plan` carried out in full would give.
    pub fn planned(plan: &[Fault]) -> Done {
        let mut done = Done::default();
        for fault in plan {
            match fault {
                Fault::Signal(targets, sig) => {
                    done.signalled += targets.len();
                    if *sig == "-TERM" {
                        done.terms += targets.len();
                    }
                }
                _ => done.others += 1,
            }
        }
        done
    }

    pub fn actions(&self) -> usize {
        self.signalled + self.others
    }
}

/// Carries out `plan` against `up`, one fault every `pause`; each signalled process must be
/// seen replaced by a new one, each connection drop must drop something. The NATS faults
/// SIGKILL the test's own server (`nats`) and start it again on its store.
pub async fn carry_out(
    up: &Up,
    plan: &[Fault],
    pause: Duration,
    resources: &Resources,
    mut nats: Option<&mut NatsServer>,
) -> Done {
    let mut done = Done::default();
    for fault in plan {
        tokio::time::sleep(pause).await;
        match fault {
            Fault::Signal(targets, sig) => {
                let mut hit = Vec::new();
                for t in targets {
                    let pid = wait_for_pid(up, t).await;
                    signal(pid, sig);
                    hit.push((*t, pid));
                }
                for (t, old) in hit {
                    wait_for_replacement(up, t, old).await;
                    done.signalled += 1;
                    if *sig == "-TERM" {
                        done.terms += 1;
                    }
                }
            }
            Fault::RestartNats => {
                let server = nats
                    .as_deref_mut()
                    .expect("a NATS server of the test's own to restart");
                server.kill();
                server.restart().await;
                done.others += 1;
            }
            Fault::DropPostgresConnections => {
                let dropped = drop_postgres_connections(&resources.database_pattern()).await;
                eprintln!("nemesis: dropped {dropped} PostgreSQL connections");
                assert!(dropped > 0, "the nemesis dropped no PostgreSQL connection");
                done.others += 1;
            }
        }
    }
    done
}

/// The pause between faults so that `plan` spreads over `secs`.
pub fn pause_for(plan: &[Fault], secs: u64) -> Duration {
    Duration::from_millis((secs * 1000 / (plan.len() as u64 + 1)).max(300))
}

/// The pid of `service` under `up`, waiting while `up` restarts it.
async fn wait_for_pid(up: &Up, service: &str) -> u32 {
    super::eventually(&format!("{service} to be running"), || async {
        up.service_pid(service)
    })
    .await
}

/// Waits until `service` runs as a process other than `old` (it died and `up` restarted
/// it): proof that the signal took effect.
async fn wait_for_replacement(up: &Up, service: &str, old: u32) {
    super::eventually(&format!("{service} (pid {old}) to be replaced"), || async {
        up.service_pid(service).filter(|pid| *pid != old)
    })
    .await;
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

/// `up`'s arguments for the production backend with `resources`, creating the databases
/// of `services` first.
pub async fn production_args(resources: &Resources, services: &[&str]) -> Vec<String> {
    for service in services {
        resources.database(service).await;
    }
    vec![
        "--postgres".to_string(),
        resources.postgres.clone(),
        "--database-prefix".to_string(),
        format!("sy_{}", resources.id),
        "--nats".to_string(),
        resources.nats.clone(),
        "--stream".to_string(),
        resources.stream.clone(),
        "--subject-prefix".to_string(),
        resources.prefix.clone(),
    ]
}

/// Every service SIGTERMed exited 0 (drained) before `up` restarted it, and none failed.
pub fn assert_clean_exits(up: &Up, terms: usize) {
    let lines = up.lines();
    let exits: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("exited"))
        .cloned()
        .collect();
    let graceful = exits
        .iter()
        .filter(|l| l.contains("exited (exit status: 0)"))
        .count();
    assert!(
        graceful >= terms,
        "SIGTERM exits: {graceful} of {terms}\n{}",
        exits.join("\n")
    );
    assert!(
        !exits.iter().any(|l| l.contains("exited (exit status: 1)")),
        "a service failed:\n{}",
        exits.join("\n")
    );
}

/// The number of lines of `up` saying a service exited 0 (for the report).
pub fn graceful_exits(up: &Up) -> usize {
    up.lines()
        .iter()
        .filter(|l| l.contains("exited (exit status: 0)"))
        .count()
}
