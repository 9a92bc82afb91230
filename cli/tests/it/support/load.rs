//! Load for the scale-out and failure suites: creating posts and comments with retries on
//! transient answers, recording the ground truth, and comparing read models and the bus log
//! with it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use super::http::Client;

/// The moderation rule: `orange` is rejected.
pub fn expected_status(content: &str) -> &'static str {
    if content.contains("orange") {
        "rejected"
    } else {
        "approved"
    }
}

/// What the clients were told (201 answers).
#[derive(Debug, Default, Clone)]
pub struct Truth {
    /// Post id → title.
    pub posts: BTreeMap<String, String>,
    /// Comment id → (post id, content).
    pub comments: BTreeMap<String, (String, String)>,
}

impl Truth {
    pub fn merge(&mut self, other: Truth) {
        self.posts.extend(other.posts);
        self.comments.extend(other.comments);
    }
}

/// POSTs `body` to `url` until it answers 201 (a 5xx or a connection error is retried:
/// the service may be between database connections), within `deadline`.
pub async fn post_until_created(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    deadline: Duration,
) -> Value {
    let until = std::time::Instant::now() + deadline;
    let mut last = String::new();
    while std::time::Instant::now() < until {
        match client.post(url).json(body).send().await {
            Ok(r) if r.status().as_u16() == 201 => {
                return r.json().await.expect("201 with JSON");
            }
            Ok(r) if r.status().is_server_error() => {
                last = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
            }
            Ok(r) => panic!(
                "POST {url} answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("POST {url} never answered 201 within {deadline:?}; last: {last}");
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Creates a post through `posts` (a base URL); records it.
pub async fn create_post(
    client: &reqwest::Client,
    posts: &str,
    title: &str,
    truth: &mut Truth,
) -> String {
    let v = post_until_created(
        client,
        &format!("{posts}/posts/create"),
        &json!({ "title": title }),
        Duration::from_secs(60),
    )
    .await;
    let id = v["id"].as_str().expect("post id").to_string();
    truth.posts.insert(id.clone(), title.to_string());
    id
}

/// Adds a comment through `comments` (a base URL); records it (the new one is the last of
/// the returned list).
pub async fn create_comment(
    client: &reqwest::Client,
    comments: &str,
    post: &str,
    content: &str,
    truth: &mut Truth,
) -> String {
    let v = post_until_created(
        client,
        &format!("{comments}/posts/{post}/comments"),
        &json!({ "content": content }),
        Duration::from_secs(60),
    )
    .await;
    let list = v.as_array().expect("comment list");
    let mine = list
        .iter()
        .rev()
        .find(|c| c["content"] == content)
        .expect("the new comment in the list");
    let id = mine["id"].as_str().expect("comment id").to_string();
    truth
        .comments
        .insert(id.clone(), (post.to_string(), content.to_string()));
    id
}

/// `GET <query>/posts`, when it answers 200.
pub async fn read_model(client: &Client, query: &str) -> Option<Value> {
    let a = client.try_get(&format!("{query}/posts")).await?;
    (a.status == 200).then(|| a.json())
}

/// Checks a read model against the truth: the same posts with their titles, every comment
/// once under its post with the rule's status (none pending), nothing else.
pub fn matches_truth(read: &Value, truth: &Truth) -> Result<(), String> {
    let map = read.as_object().ok_or("not an object")?;
    if map.len() != truth.posts.len() {
        return Err(format!(
            "{} posts, expected {}",
            map.len(),
            truth.posts.len()
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (id, post) in map {
        let title = truth.posts.get(id).ok_or(format!("unknown post {id}"))?;
        if post["title"] != title.as_str() || post["id"] != id.as_str() {
            return Err(format!("post {id} is {post}"));
        }
        for c in post["comments"].as_array().ok_or("comments not an array")? {
            let cid = c["id"].as_str().ok_or("comment without id")?;
            *seen.entry(cid.to_string()).or_default() += 1;
            let (post_id, content) = truth
                .comments
                .get(cid)
                .ok_or(format!("unknown comment {c}"))?;
            if post_id != id || c["content"] != content.as_str() {
                return Err(format!("comment {c} misplaced or altered"));
            }
            if c["status"] != expected_status(content) {
                return Err(format!("comment {c} has the wrong status"));
            }
        }
    }
    if let Some((id, n)) = seen.iter().find(|(_, n)| **n > 1) {
        return Err(format!("comment {id} listed {n} times"));
    }
    if seen.len() != truth.comments.len() {
        return Err(format!(
            "{} comments, expected {}",
            seen.len(),
            truth.comments.len()
        ));
    }
    Ok(())
}

/// How many events of `event_type` the log holds per `data.id`.
pub fn count_by_id(events: &[Value], event_type: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in events.iter().filter(|e| e["type"] == event_type) {
        if let Some(id) = e["data"]["id"].as_str() {
            *counts.entry(id.to_string()).or_default() += 1;
        }
    }
    counts
}

/// Checks the bus log: one `PostCreated` per post, and one `CommentCreated`,
/// `CommentModerated` and `CommentUpdated` per comment, nothing else.
pub fn log_is_exactly_once(events: &[Value], truth: &Truth) -> Result<(), String> {
    let ids: Vec<Option<&str>> = events.iter().map(|e| e["id"].as_str()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != ids.len() {
        return Err("an event id appears twice in the log".to_string());
    }
    let posts = count_by_id(events, "PostCreated");
    if posts.len() != truth.posts.len() || posts.values().any(|n| *n != 1) {
        return Err(format!(
            "PostCreated: {} distinct (expected {}), counts {:?}",
            posts.len(),
            truth.posts.len(),
            posts.values().filter(|n| **n != 1).collect::<Vec<_>>()
        ));
    }
    for t in ["CommentCreated", "CommentModerated", "CommentUpdated"] {
        let counts = count_by_id(events, t);
        if counts.len() != truth.comments.len() {
            return Err(format!(
                "{t}: {} comments (expected {})",
                counts.len(),
                truth.comments.len()
            ));
        }
        if let Some((id, n)) = counts.iter().find(|(_, n)| **n != 1) {
            return Err(format!("{t} for comment {id}: {n} events"));
        }
        if let Some(id) = counts.keys().find(|id| !truth.comments.contains_key(*id)) {
            return Err(format!("{t} for an unknown comment {id}"));
        }
    }
    Ok(())
}

/// The value of a Prometheus counter summed over the series whose labels contain all of
/// `labels` (`name="value"` strings).
pub fn counter_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
