//! Scenario 3: sustained writes. N concurrent clients create posts and comments straight on
//! the posts and comments services for a while; then the time until query's `GET /posts`
//! shows every acknowledged post and comment with its final status (convergence).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Ctx;
use crate::blog::create_comment;
use crate::prod::Resources;
use crate::query::Backend;
use crate::report::{Dist, Figure, Section, fmt_num};

const S: &str = "write";
/// Comments per post each client writes (then it starts a new post).
const COMMENTS_PER_POST: usize = 3;
/// Longest wait for the read model to converge.
const CONVERGE_LIMIT: Duration = Duration::from_secs(120);
/// Shortest pause between two polls of query's `GET /posts`.
const POLL_MIN: Duration = Duration::from_millis(50);

pub async fn run(ctx: &Ctx) -> Section {
    let mut section = Section::new(
        S,
        "3. Sustained writes (posts + comments) and convergence of the read model",
    );
    on_each_backend!(ctx, section, measure);
    ctx.skip_note(&mut section);
    section
}

/// What one client got acknowledged.
#[derive(Default)]
struct Written {
    posts: Vec<String>,
    /// comment id → the status moderation must give it.
    comments: Vec<(String, &'static str)>,
    latencies_ms: Vec<f64>,
    errors: u64,
}

async fn client(
    http: reqwest::Client,
    posts_url: String,
    comments_url: String,
    n: usize,
    stop_at: Instant,
    counter: Arc<AtomicU64>,
) -> Written {
    let mut w = Written::default();
    let mut post: Option<String> = None;
    let mut on_post = 0usize;
    while Instant::now() < stop_at {
        let i = counter.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        match &post {
            Some(id) if on_post < COMMENTS_PER_POST => {
                // Every fourth comment mentions the forbidden word: moderation rejects it.
                let (content, status) = if i.is_multiple_of(4) {
                    (
                        format!("comment {i} from client {n}: an orange"),
                        "rejected",
                    )
                } else {
                    (format!("comment {i} from client {n}: well put"), "approved")
                };
                on_post += 1;
                match create_comment(&http, &comments_url, id, &content).await {
                    Ok(cid) => {
                        w.latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                        w.comments.push((cid, status));
                    }
                    Err(_) => w.errors += 1,
                }
            }
            _ => {
                let created = async {
                    let v: Value = http
                        .post(format!("{posts_url}/posts/create"))
                        .json(&json!({ "title": format!("Post {i} by client {n}") }))
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    anyhow::Ok(v["id"].as_str().map(str::to_string))
                }
                .await;
                match created {
                    Ok(Some(id)) => {
                        w.latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                        w.posts.push(id.clone());
                        post = Some(id);
                        on_post = 0;
                    }
                    _ => w.errors += 1,
                }
            }
        }
    }
    w
}

/// What query's `GET /posts` shows of the acknowledged writes.
struct Seen {
    posts_missing: usize,
    comments_missing: usize,
    pending: usize,
    wrong_status: usize,
}

fn compare(body: &[u8], posts: &HashSet<&str>, comments: &HashMap<&str, &str>) -> Option<Seen> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let mut seen = Seen {
        posts_missing: posts.iter().filter(|p| !map.contains_key(**p)).count(),
        comments_missing: 0,
        pending: 0,
        wrong_status: 0,
    };
    let mut found = 0usize;
    for c in map
        .values()
        .filter_map(|p| p["comments"].as_array())
        .flatten()
    {
        let Some(want) = c["id"].as_str().and_then(|id| comments.get(id)) else {
            continue;
        };
        found += 1;
        match c["status"].as_str() {
            Some("pending") => seen.pending += 1,
            Some(s) if s == *want => {}
            _ => seen.wrong_status += 1,
        }
    }
    seen.comments_missing = comments.len().saturating_sub(found);
    Some(seen)
}

async fn measure(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    res: Option<&Resources>,
) -> anyhow::Result<()> {
    let p = &ctx.params;
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-write")
        .tempdir()?;
    let backend = Backend::start(ctx, dir.path(), res).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(p.writers * 2)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(p.write_secs);
    let tasks: Vec<_> = (0..p.writers)
        .map(|n| {
            tokio::spawn(client(
                http.clone(),
                backend.posts.url(),
                backend.comments.url(),
                n,
                stop_at,
                counter.clone(),
            ))
        })
        .collect();
    let mut all = Written::default();
    for t in tasks {
        if let Ok(mut w) = t.await {
            all.posts.append(&mut w.posts);
            all.comments.append(&mut w.comments);
            all.latencies_ms.append(&mut w.latencies_ms);
            all.errors += w.errors;
        }
    }
    let load_end = Instant::now();
    let load_secs = load_end.duration_since(started).as_secs_f64();

    // Convergence: every acknowledged post and comment in query, none pending.
    let posts: HashSet<&str> = all.posts.iter().map(String::as_str).collect();
    let comments: HashMap<&str, &str> =
        all.comments.iter().map(|(c, s)| (c.as_str(), *s)).collect();
    let url = format!("{}/posts", backend.query.url());
    let mut last: Option<Seen> = None;
    let mut converged = None;
    let mut polls = 0u32;
    let mut longest_gap = Duration::ZERO;
    while load_end.elapsed() < CONVERGE_LIMIT {
        polls += 1;
        let asked = Instant::now();
        if let Ok(r) = ctx
            .http
            .get(&url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            && r.status().is_success()
            && let Ok(body) = r.bytes().await
            && let Some(seen) = compare(&body, &posts, &comments)
        {
            let done = seen.posts_missing == 0 && seen.comments_missing == 0 && seen.pending == 0;
            last = Some(seen);
            if done {
                converged = Some(load_end.elapsed());
                break;
            }
        }
        // Every poll makes query build (and the bench parse) the whole read model: wait at
        // least 3× as long as that took, so polling takes at most a quarter of a core.
        let gap = POLL_MIN.max(asked.elapsed() * 3);
        longest_gap = longest_gap.max(gap + asked.elapsed());
        tokio::time::sleep(gap).await;
    }
    let writes = all.posts.len() + all.comments.len();
    let lat = Dist::new(std::mem::take(&mut all.latencies_ms));
    section.push_on(
        on,
        Figure::info(S, "acknowledged writes/s (posts + comments)", writes as f64 / load_secs, "writes/s")
            .note(format!(
                "{} clients, closed loop, straight to posts (`POST /posts/create`) and comments (`POST /posts/:id/comments`, {COMMENTS_PER_POST} per post, 1 in 4 rejected by moderation) for {load_secs:.1} s: {} posts + {} comments acknowledged (201){}",
                p.writers,
                fmt_num(all.posts.len() as f64, 0),
                fmt_num(all.comments.len() as f64, 0),
                if all.errors > 0 { format!(", {} failed", all.errors) } else { String::new() }
            )),
    );
    section.push_on(
        on,
        Figure::info(S, "write latency p50", lat.pct(50.0), "ms").note(format!(
            "p99 {:.1} ms, max {:.1} ms",
            lat.pct(99.0),
            lat.max()
        )),
    );
    section.push_on(
        on,
        Figure::info(S, "write latency p99", lat.pct(99.0), "ms"),
    );
    match converged {
        Some(t) => {
            section.push_on(
                on,
                Figure::info(S, "convergence after the load", t.as_secs_f64(), "s").note(format!(
                    "end of the load → query's GET /posts shows every acknowledged post and comment, none pending ({polls} polls of GET /posts; resolution {} ms){}",
                    longest_gap.as_millis(),
                    match &last {
                        Some(s) if s.wrong_status > 0 => format!("; {} comments with the wrong status", s.wrong_status),
                        _ => String::new(),
                    }
                )),
            );
        }
        None => {
            let why = match &last {
                Some(s) => format!(
                    "{} posts and {} comments missing, {} pending",
                    s.posts_missing, s.comments_missing, s.pending
                ),
                None => "query never answered".to_string(),
            };
            anyhow::bail!(
                "the read model did not converge within {}s of the end of the load: {why}",
                CONVERGE_LIMIT.as_secs()
            );
        }
    }
    if let Some(s) = &last {
        section.push_on(
            on,
            Figure::at_most(
                S,
                "comments with the wrong final status",
                s.wrong_status as f64,
                "count",
                0.0,
            ),
        );
    }
    drop(backend);
    Ok(())
}
