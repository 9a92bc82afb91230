//! Scenario 8: where one comment's time goes on its way to "approved".
//!
//! Runs `up blog` with the platform's trace-level step logs on (JSON), sends comments one
//! at a time, each with its own `x-request-id` (which every event it causes carries as
//! `correlationId`), and waits until query shows each approved. Then it reads the logs
//! back and places every step of every comment on one clock (the processes share the
//! machine's): the event staged in its change, the bus's append, the relay's publish
//! (the bus acknowledged), the delivery, the consumer's receipt and its handling, for the
//! three hops `CommentCreated` → moderation, `CommentModerated` → comments,
//! `CommentUpdated` → query. The table gives each step's median time since the request and
//! the median time it adds, so the slow step is the one with the large increment.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::Ctx;
use crate::prod::Resources;
use crate::report::{Dist, Figure, Section, fmt_num};
use crate::up::{Up, backend_args};

const S: &str = "hops";

/// Comments followed per backend.
const COMMENTS: usize = 60;

/// What turns the step logs on in every process of `up`.
const TRACE: &str = "warn,switchyard_bus_client=trace,switchyard_event_bus=trace";

pub async fn run(ctx: &Ctx) -> Section {
    let mut section = Section::new(
        S,
        "8. One comment's three hops, step by step (median ms since the request, and added by each step)",
    );
    on_each_backend!(ctx, section, measure);
    section.note(
        "Read from the trace-level step logs (`RUST_LOG=switchyard_bus_client=trace,switchyard_event_bus=trace`, JSON) of `up blog`, one comment at a time, each followed by its request id. \"staged\" is the event written in its change (the commit follows), \"read by the relay\" the relay's read-back of the committed row, \"posted\" the bus's handler parsing it, \"appended\" the bus's durable append, \"published\" the relay's answer from the bus, \"delivered\" the bus's answer from the subscriber (after the subscriber handled it), \"received\"/\"handled\" the consumer's own view. \"seen approved\" is the first poll of query's `GET /posts` that shows it (polled every 0.2 ms). The trace logs themselves cost a little time: the total is slightly above scenario 2's.",
    );
    ctx.skip_note(&mut section);
    section
}

fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn measure(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    res: Option<&Resources>,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-hops")
        .tempdir()?;
    let extra = backend_args(ctx, res, &switchyard_registry::BLOG).await?;
    let log = dir.path().join("up.log");
    let up = Up::start(
        ctx,
        &switchyard_registry::BLOG,
        &dir.path().join("data"),
        &log,
        &extra,
        &[("RUST_LOG", TRACE), ("LOG_FORMAT", "json")],
    )
    .await?;
    let port = |name: &str| {
        switchyard_registry::BLOG
            .service(name)
            .map(|s| s.local_port)
            .context("a blog service")
    };
    let posts = up.url(port("posts")?);
    let comments = up.url(port("comments")?);
    let query = up.url(port("query")?);
    let post: Value = ctx
        .http
        .post(format!("{posts}/posts/create"))
        .json(&json!({"title": "hops"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let post_id = post["id"].as_str().context("post id")?.to_string();
    let mut sent = Vec::with_capacity(COMMENTS);
    let tag = unix_micros(SystemTime::now());
    for i in 0..COMMENTS {
        let request_id = format!("hops-{tag}-{i}");
        let content = format!("hops {i}");
        let at = unix_micros(SystemTime::now());
        let answer = ctx
            .http
            .post(format!("{comments}/posts/{post_id}/comments"))
            .header("x-request-id", &request_id)
            .json(&json!({"content": content}))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("comment {i}: {}", answer.status());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let body: Value = ctx
                .http
                .get(format!("{query}/posts"))
                .send()
                .await?
                .json()
                .await?;
            let approved = body[&post_id]["comments"].as_array().is_some_and(|list| {
                list.iter()
                    .any(|c| c["content"] == content.as_str() && c["status"] == "approved")
            });
            if approved {
                break unix_micros(SystemTime::now());
            }
            if Instant::now() > deadline {
                bail!("comment {i} not approved within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        sent.push((request_id, at, seen));
    }
    up.stop().await;
    let text = std::fs::read_to_string(&log).context("reading up's log")?;
    let steps = timeline(&text, &sent);
    if steps.is_empty() {
        bail!(
            "no step logs found in {}: were the trace logs on?",
            log.display()
        );
    }
    let mut previous = 0.0;
    for (label, dist) in steps {
        let median = dist.pct(50.0);
        section.push_on(
            on,
            Figure::info(S, &label, median, "ms").note(format!(
                "+{} ms (p90 since the request {} ms, n = {})",
                fmt_num(median - previous, 2),
                fmt_num(dist.pct(90.0), 2),
                dist.len()
            )),
        );
        previous = median;
    }
    Ok(())
}

/// One step of one comment: its label and when (unix µs).
type Step = (String, i64);

/// Every comment's steps, as each step's time since its request (ms) across comments,
/// ordered by median.
fn timeline(log: &str, sent: &[(String, i64, i64)]) -> Vec<(String, Dist)> {
    let by_request: HashMap<&str, usize> = sent
        .iter()
        .enumerate()
        .map(|(i, (id, _, _))| (id.as_str(), i))
        .collect();
    // An event's id → (its request, its type): the "published" lines name only the id.
    let mut events: HashMap<String, (usize, String)> = HashMap::new();
    let mut steps: Vec<Vec<Step>> = vec![Vec::new(); sent.len()];
    let mut published: Vec<(String, String, i64)> = Vec::new();
    let mut read: Vec<(String, String, i64)> = Vec::new();
    for line in log.lines() {
        let Some((service, json)) = line.split_once(" | ") else {
            continue;
        };
        let service = service.trim();
        let Ok(entry) = serde_json::from_str::<Value>(json.trim()) else {
            continue;
        };
        let Some(at) = entry["timestamp"].as_str().and_then(parse_rfc3339_micros) else {
            continue;
        };
        // tracing's JSON puts the fields at the top level (flattened) or under "fields".
        let fields = if entry["fields"].is_object() {
            &entry["fields"]
        } else {
            &entry
        };
        let message = fields["message"].as_str().unwrap_or("");
        let text = |name: &str| fields[name].as_str().unwrap_or("").to_string();
        let event_type = text("event_type");
        let request = by_request.get(text("correlation_id").as_str()).copied();
        match message {
            "event staged" => {
                if let Some(r) = request {
                    events.insert(text("event_id"), (r, event_type.clone()));
                    steps[r].push((format!("{service}: {event_type} staged"), at));
                }
            }
            "event published" => published.push((service.to_string(), text("event_id"), at)),
            "event read by the relay" => {
                read.push((service.to_string(), text("event_id"), at));
            }
            "event posted" => {
                if let Some(r) = request {
                    steps[r].push((format!("bus: {event_type} posted"), at));
                }
            }
            "event appended" => {
                if let Some(r) = request {
                    steps[r].push((format!("bus: {event_type} appended"), at));
                }
            }
            "event delivered" => {
                if let Some(r) = request {
                    let to = text("subscriber");
                    steps[r].push((format!("bus: {event_type} delivered to {to}"), at));
                }
            }
            "event received" | "event handled" => {
                if let Some(r) = request {
                    let what = if message == "event received" {
                        format!("{event_type} received")
                    } else {
                        let ty = events.get(&text("event_id")).map(|(_, t)| t.clone());
                        format!("{} handled", ty.unwrap_or_default())
                    };
                    steps[r].push((format!("{service}: {what}"), at));
                }
            }
            _ => {}
        }
    }
    for (what, list) in [("published", published), ("read by the relay", read)] {
        for (service, id, at) in list {
            if let Some((r, ty)) = events.get(&id) {
                steps[*r].push((format!("{service}: {ty} {what}"), at));
            }
        }
    }
    let mut offsets: HashMap<String, Vec<f64>> = HashMap::new();
    for (i, (_, start, seen)) in sent.iter().enumerate() {
        let mut first: HashMap<String, i64> = HashMap::new();
        for (label, at) in &steps[i] {
            first
                .entry(label.clone())
                .and_modify(|t| *t = (*t).min(*at))
                .or_insert(*at);
        }
        first.insert("client: seen approved".to_string(), *seen);
        for (label, at) in first {
            offsets
                .entry(label)
                .or_default()
                .push((at - start) as f64 / 1000.0);
        }
    }
    // Steps seen for most comments only (a stray retry is not a step).
    let mut rows: Vec<(String, Dist)> = offsets
        .into_iter()
        .filter(|(_, v)| v.len() * 10 >= sent.len() * 9)
        .map(|(label, v)| (label, Dist::new(v)))
        .collect();
    rows.sort_by(|a, b| a.1.pct(50.0).total_cmp(&b.1.pct(50.0)));
    rows
}

/// `2026-12-03T14:42:47.520678Z` → unix µs (UTC only, as the services log).
fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let digits: String = frac.chars().take(6).collect();
    let micros = format!("{digits:0<6}").parse::<i64>().ok()?;
    // Days since the epoch (the civil-from-days algorithm, proleptic Gregorian).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3_600 + min * 60 + sec) * 1_000_000) + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_unix_micros() {
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00.000001Z"), Some(1));
        assert_eq!(
            parse_rfc3339_micros("2026-12-03T14:42:47.520678Z"),
            Some(1_796_308_967_520_678)
        );
        assert_eq!(
            parse_rfc3339_micros("2000-03-01T00:00:00Z"),
            Some(951_868_800_000_000)
        );
        assert_eq!(parse_rfc3339_micros("not a time"), None);
    }

    #[test]
    fn steps_are_placed_by_request_and_event() {
        let log = r#"
  comments | {"timestamp":"1970-01-01T00:00:00.001000Z","level":"TRACE","fields":{"message":"event staged","event_id":"e1","event_type":"CommentCreated","correlation_id":"r1"}}
 event-bus | {"timestamp":"1970-01-01T00:00:00.002000Z","level":"TRACE","fields":{"message":"event appended","seq":1,"event_type":"CommentCreated","correlation_id":"r1"}}
  comments | {"timestamp":"1970-01-01T00:00:00.003000Z","level":"TRACE","fields":{"message":"event published","event_id":"e1"}}
moderation | {"timestamp":"1970-01-01T00:00:00.004000Z","level":"TRACE","message":"event handled","event_id":"e1","correlation_id":"r1","outcome":"applied"}
"#;
        let rows = timeline(log, &[("r1".to_string(), 0, 5_000)]);
        let labels: Vec<(&str, f64)> = rows
            .iter()
            .map(|(l, d)| (l.as_str(), d.pct(50.0)))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("comments: CommentCreated staged", 1.0),
                ("bus: CommentCreated appended", 2.0),
                ("comments: CommentCreated published", 3.0),
                ("moderation: CommentCreated handled", 4.0),
                ("client: seen approved", 5.0),
            ]
        );
    }
}
