//! Fault injection under load, on both backends: concurrent clients write posts and
//! comments through the gateway while a nemesis SIGKILLs services and the bus (one at a
//! time, then several at once) and SIGTERMs each service; on PostgreSQL + NATS it also
//! restarts the NATS server and drops every PostgreSQL connection. `up` restarts what dies.
//! A checker then compares the read model with every acknowledged write: acknowledged,
//! present, lost, duplicated, still pending, wrong status.
//!
//! Short by default (CI). The long version: `FAULT_SECS=300 FAULT_CLIENTS=64 cargo test
//! --release -p switchyard --test fault_injection -- --nocapture`.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::backend::{Backend, Resources};
use support::nemesis::{NatsGuard, drop_postgres_connections, restart_nats, stop_nats};
use support::process;
use support::up::{Up, free_offset};

per_backend!(nothing_acknowledged_is_lost_or_duplicated_whatever_is_killed);

/// What the nemesis does at one step.
#[derive(Debug, Clone)]
enum Fault {
    Signal(Vec<&'static str>, &'static str),
    RestartNats,
    DropPostgresConnections,
}

#[derive(Default)]
struct Acked {
    posts: Vec<String>,
    /// comment id → (post id, content)
    comments: HashMap<String, (String, String)>,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_for(content: &str) -> &'static str {
    if content.contains("orange") {
        "rejected"
    } else {
        "approved"
    }
}

async fn client_loop(base: String, me: u64, until: Instant, acked: Arc<Mutex<Acked>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let title = format!("post {me}-{n}");
        let Ok(r) = http
            .post(format!("{base}/posts/create"))
            .json(&json!({"title": title}))
            .send()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if r.status() != 201 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let Ok(post) = r.json::<Value>().await else {
            continue;
        };
        let Some(post_id) = post["id"].as_str().map(String::from) else {
            continue;
        };
        acked.lock().expect("lock").posts.push(post_id.clone());
        for k in 0..3 {
            let content = if (me + n + k).is_multiple_of(3) {
                format!("orange {me}-{n}-{k}")
            } else {
                format!("fine {me}-{n}-{k}")
            };
            let Ok(r) = http
                .post(format!("{base}/posts/{post_id}/comments"))
                .json(&json!({"content": content}))
                .send()
                .await
            else {
                continue;
            };
            if r.status() != 201 {
                continue;
            }
            let Ok(list) = r.json::<Value>().await else {
                continue;
            };
            // Acknowledged: the answer lists the new comment (last).
            if let Some(c) = list
                .as_array()
                .and_then(|a| a.iter().rev().find(|c| c["content"] == content.as_str()))
                && let Some(id) = c["id"].as_str()
            {
                acked
                    .lock()
                    .expect("lock")
                    .comments
                    .insert(id.to_string(), (post_id.clone(), content.clone()));
            }
        }
    }
}

/// The pid of `service` under `up`, waiting while `up` restarts it.
async fn wait_for_pid(up: &Up, service: &str) -> u32 {
    support::eventually(&format!("{service} to be running"), || async {
        up.service_pid(service)
    })
    .await
}

/// Waits until `service` runs as a process other than `old` (it died and `up` restarted
/// it): proof that the signal took effect.
async fn wait_for_replacement(up: &Up, service: &str, old: u32) {
    support::eventually(&format!("{service} (pid {old}) to be replaced"), || async {
        up.service_pid(service).filter(|pid| *pid != old)
    })
    .await;
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

async fn nothing_acknowledged_is_lost_or_duplicated_whatever_is_killed(backend: Backend) {
    let secs = env_or("FAULT_SECS", 12);
    let clients = env_or("FAULT_CLIENTS", 16);
    let dir = tempfile::tempdir().expect("tmp");
    let mut resources = Resources::new();
    let _nats_guard = NatsGuard;
    let extra = match backend {
        Backend::Embedded => Vec::new(),
        Backend::Production => {
            for service in ["posts", "comments", "query", "moderation"] {
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
    };
    let up = Up::start_with(dir.path(), free_offset(), process::free_port(), &extra);
    let base = up.url();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let until = Instant::now() + Duration::from_secs(secs);
    let load: Vec<_> = (0..clients)
        .map(|me| tokio::spawn(client_loop(base.clone(), me, until, acked.clone())))
        .collect();

    // The nemesis: kill one at a time, then several at once, then SIGTERM each; on the
    // production backend also restart NATS and drop the PostgreSQL connections.
    let bus: &[&'static str] = match backend {
        Backend::Embedded => &["event-bus"],
        Backend::Production => &[],
    };
    let mut plan: Vec<Fault> = ["posts", "comments", "query", "moderation", "gateway"]
        .iter()
        .chain(bus)
        .map(|s| Fault::Signal(vec![*s], "-KILL"))
        .collect();
    plan.push(Fault::Signal(
        [&["comments", "moderation"][..], bus].concat(),
        "-KILL",
    ));
    plan.push(Fault::Signal(
        [&["posts", "query", "gateway"][..], bus].concat(),
        "-KILL",
    ));
    if backend == Backend::Production {
        plan.push(Fault::RestartNats);
        plan.push(Fault::DropPostgresConnections);
    }
    plan.extend(
        ["posts", "comments", "query", "moderation"]
            .iter()
            .chain(bus)
            .map(|s| Fault::Signal(vec![*s], "-TERM")),
    );
    if backend == Backend::Production {
        plan.push(Fault::DropPostgresConnections);
    }
    let pause = Duration::from_millis((secs * 1000 / (plan.len() as u64 + 1)).max(300));
    // Every planned fault is carried out and its effect seen (a signalled process is
    // replaced by a new one), so the checker below cannot pass with a nemesis that did
    // nothing.
    let planned_signals: usize = plan
        .iter()
        .map(|f| match f {
            Fault::Signal(targets, _) => targets.len(),
            _ => 0,
        })
        .sum();
    let planned_terms: usize = plan
        .iter()
        .map(|f| match f {
            Fault::Signal(targets, "-TERM") => targets.len(),
            _ => 0,
        })
        .sum();
    let planned_others = plan.len()
        - plan
            .iter()
            .filter(|f| matches!(f, Fault::Signal(..)))
            .count();
    let (mut signalled, mut terms, mut others) = (0usize, 0usize, 0usize);
    for fault in &plan {
        tokio::time::sleep(pause).await;
        match fault {
            Fault::Signal(targets, sig) => {
                let mut hit = Vec::new();
                for t in targets {
                    let pid = wait_for_pid(&up, t).await;
                    signal(pid, sig);
                    hit.push((*t, pid));
                }
                for (t, old) in hit {
                    wait_for_replacement(&up, t, old).await;
                    signalled += 1;
                    if *sig == "-TERM" {
                        terms += 1;
                    }
                }
            }
            Fault::RestartNats => {
                stop_nats().await;
                restart_nats().await;
                others += 1;
            }
            Fault::DropPostgresConnections => {
                let dropped = drop_postgres_connections(&resources.database_pattern()).await;
                eprintln!("nemesis: dropped {dropped} PostgreSQL connections");
                assert!(dropped > 0, "the nemesis dropped no PostgreSQL connection");
                others += 1;
            }
        }
    }
    assert_eq!(
        (signalled, terms, others),
        (planned_signals, planned_terms, planned_others),
        "the nemesis did not carry out its plan"
    );
    let actions = signalled + others;
    for l in load {
        l.await.expect("client");
    }
    let (posts, comments) = {
        let a = acked.lock().expect("lock");
        (a.posts.clone(), a.comments.clone())
    };
    assert!(
        !posts.is_empty() && !comments.is_empty(),
        "the load acknowledged nothing"
    );

    // Convergence: every acknowledged write present with the rule's status, none pending.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut lost, mut duplicated, mut pending, mut wrong, mut present);
    loop {
        (lost, duplicated, pending, wrong, present) = (0usize, 0usize, 0usize, 0usize, 0usize);
        let read: Option<Value> = match http.get(format!("{base}/posts")).send().await {
            Ok(r) if r.status() == 200 => r.json().await.ok(),
            _ => None,
        };
        if let Some(read) = read {
            let mut by_content: HashMap<String, usize> = HashMap::new();
            let mut by_id: HashMap<String, (String, String, String)> = HashMap::new();
            for (post_id, post) in read.as_object().into_iter().flatten() {
                for c in post["comments"].as_array().into_iter().flatten() {
                    let content = c["content"].as_str().unwrap_or("").to_string();
                    *by_content.entry(content.clone()).or_default() += 1;
                    let id = c["id"].as_str().unwrap_or("").to_string();
                    if by_id
                        .insert(
                            id,
                            (
                                post_id.clone(),
                                content,
                                c["status"].as_str().unwrap_or("").to_string(),
                            ),
                        )
                        .is_some()
                    {
                        duplicated += 1;
                    }
                }
            }
            duplicated += by_content.values().filter(|n| **n > 1).count();
            lost += posts
                .iter()
                .filter(|p| read.get(p.as_str()).is_none())
                .count();
            for (id, (post_id, content)) in &comments {
                match by_id.get(id) {
                    None => lost += 1,
                    Some((p, c, status)) => {
                        present += 1;
                        if status == "pending" {
                            pending += 1;
                        } else if p != post_id || c != content || status != status_for(content) {
                            wrong += 1;
                        }
                    }
                }
            }
            if lost + duplicated + pending + wrong == 0 {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lines = up.lines();
    let graceful_exits = lines
        .iter()
        .filter(|l| l.contains("exited (exit status: 0)"))
        .count();
    println!(
        "\n{} backend:\n| acknowledged posts | acknowledged comments | present | lost | duplicated | pending | wrong status | nemesis actions | exits 0 after SIGTERM |\n|---|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {lost} | {duplicated} | {pending} | {wrong} | {actions} | {graceful_exits} |",
        backend.name(),
        posts.len(),
        comments.len(),
        present
    );
    drop(up);
    resources.cleanup().await;
    assert_eq!(
        (lost, duplicated, pending, wrong),
        (0, 0, 0, 0),
        "lost, duplicated, pending, wrong"
    );
    // Every service given SIGTERM exited 0 (drained) before up restarted it.
    assert!(
        graceful_exits >= terms,
        "SIGTERM exits: {graceful_exits}\n{}",
        lines
            .iter()
            .filter(|l| l.contains("exited"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains("exited (exit status: 1)")),
        "a service failed:\n{}",
        lines
            .iter()
            .filter(|l| l.contains("exited"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
