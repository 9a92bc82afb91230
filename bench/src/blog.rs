//! Driving the blog over HTTP: populating it, waiting for the read model to settle, and
//! watching query's snapshot stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::procs::lock;

/// What was created: post ids, each with its comment ids.
pub type Created = Vec<(String, Vec<String>)>;

/// Creates `posts` posts with `comments` comments each, 8 posts at a time.
/// `posts_base` answers `POST /posts/create`, `comments_base` `POST /posts/:id/comments`
/// (both can be the gateway).
pub async fn populate(
    http: &reqwest::Client,
    posts_base: &str,
    comments_base: &str,
    posts: usize,
    comments: usize,
) -> anyhow::Result<Created> {
    let jobs = (0..posts).map(|i| async move {
        let title = format!("Post {i:03}: notes on event-driven services");
        let post: Value = http
            .post(format!("{posts_base}/posts/create"))
            .json(&json!({ "title": title }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = post["id"]
            .as_str()
            .context("POST /posts/create answered without an id")?
            .to_string();
        let mut ids = Vec::new();
        for c in 0..comments {
            let id = create_comment(
                http,
                comments_base,
                &id,
                &format!("Comment {c} on post {i:03}: a fine read, thanks"),
            )
            .await?;
            ids.push(id);
        }
        anyhow::Ok((id, ids))
    });
    let results: Vec<anyhow::Result<(String, Vec<String>)>> =
        futures_util::stream::iter(jobs).buffered(8).collect().await;
    results.into_iter().collect()
}

/// `POST /posts/:id/comments`; returns the new comment's id (the last of the answer).
pub async fn create_comment(
    http: &reqwest::Client,
    comments_base: &str,
    post_id: &str,
    content: &str,
) -> anyhow::Result<String> {
    let answer: Value = http
        .post(format!("{comments_base}/posts/{post_id}/comments"))
        .json(&json!({ "content": content }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer
        .as_array()
        .and_then(|a| a.last())
        .and_then(|c| c["id"].as_str())
        .map(str::to_string)
        .context("POST /posts/:id/comments answered without the new comment")
}

/// Polls `GET <query>/posts` until it shows `posts` posts and `comments` comments, none
/// pending; returns that body.
pub async fn wait_settled(
    http: &reqwest::Client,
    query_base: &str,
    posts: usize,
    comments: usize,
    timeout: Duration,
) -> anyhow::Result<bytes::Bytes> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(r) = http.get(format!("{query_base}/posts")).send().await
            && r.status().is_success()
            && let Ok(body) = r.bytes().await
            && let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body)
        {
            {
                let all: Vec<&Value> = map
                    .values()
                    .filter_map(|p| p["comments"].as_array())
                    .flatten()
                    .collect();
                let pending = all.iter().filter(|c| c["status"] == "pending").count();
                if map.len() == posts && all.len() == comments && pending == 0 {
                    return Ok(body);
                }
                last = format!(
                    "{} posts, {} comments, {pending} pending",
                    map.len(),
                    all.len()
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the read model did not settle within {timeout:?} (wanted {posts} posts, {comments} comments approved; saw {last})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Follows `GET <query>/posts/stream` and records, per comment id, when a snapshot first
/// showed it `approved`.
pub struct ApprovalWatch {
    pub seen: Arc<Mutex<HashMap<String, Instant>>>,
    /// When each comment first appeared at all (pending or not).
    pub visible: Arc<Mutex<HashMap<String, Instant>>>,
    pub notify: Arc<Notify>,
    pub snapshots: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ApprovalWatch {
    pub async fn start(http: &reqwest::Client, query_base: &str) -> anyhow::Result<ApprovalWatch> {
        let response = http
            .get(format!("{query_base}/posts/stream"))
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3600))
            .send()
            .await?
            .error_for_status()?;
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let visible = Arc::new(Mutex::new(HashMap::new()));
        let v = visible.clone();
        let notify = Arc::new(Notify::new());
        let snapshots = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, n, count) = (seen.clone(), notify.clone(), snapshots.clone());
        let task = tokio::spawn(async move {
            let mut stream = response.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                let at = Instant::now();
                buf.extend_from_slice(&chunk);
                while let Some(end) = find(&buf, b"\n\n") {
                    let event: Vec<u8> = buf.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&event);
                    let mut name = "";
                    let mut data = String::new();
                    for line in text.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            name = v.trim();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        }
                    }
                    if name != "snapshot" {
                        continue;
                    }
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Ok(Value::Object(posts)) = serde_json::from_str::<Value>(&data) else {
                        continue;
                    };
                    let mut seen = lock(&s);
                    let mut visible = lock(&v);
                    for c in posts
                        .values()
                        .filter_map(|p| p["comments"].as_array())
                        .flatten()
                    {
                        if let Some(id) = c["id"].as_str()
                            && !visible.contains_key(id)
                        {
                            visible.insert(id.to_string(), at);
                        }
                        if c["status"] == "approved"
                            && let Some(id) = c["id"].as_str()
                            && !seen.contains_key(id)
                        {
                            seen.insert(id.to_string(), at);
                        }
                    }
                    drop(seen);
                    drop(visible);
                    n.notify_waiters();
                }
            }
        });
        Ok(ApprovalWatch {
            seen,
            visible,
            notify,
            snapshots,
            task,
        })
    }

    /// When comment `id` was first seen approved; waits up to `timeout`.
    pub async fn approved_at(&self, id: &str, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(at) = lock(&self.seen).get(id) {
                return Some(*at);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return lock(&self.seen).get(id).copied();
            }
        }
    }
}

impl Drop for ApprovalWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
