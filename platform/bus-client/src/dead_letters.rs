//! A service's dead letters, wherever they are, for `switchyard dead-letters <service>`:
//!
//! * the outbox's: events the bus refused that earlier versions set aside
//!   (`outbox_dead_letters`; replayed into the outbox, which publishes them in order
//!   after what is pending), and events the relay is retrying because the bus refuses
//!   them now (shown, not replayable: they are still pending);
//! * the consumer's: events this service's consumer set aside, kept by the bus (the HTTP
//!   bus's `dead_letters`, read and replayed through its ops listener; NATS's dead-letter
//!   stream, replayed onto the event's subject for this consumer only).
//!
//! Ids say where a dead letter is: `outbox:<seq>`, `retrying:<seq>`, `consumer:<id>`. A
//! replay is idempotent: a dead letter replayed is gone from the list (replaying it again
//! finds nothing), and the consumer's inbox ignores an event it has applied.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use switchyard_kit::Db;

use crate::bus::Bus;

/// Where a dead letter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// Set aside by the outbox (replayable).
    Outbox,
    /// Pending in the outbox, refused by the bus at the last try (the relay retries it).
    Retrying,
    /// Set aside by the service's consumer, at the bus (replayable).
    Consumer,
}

impl Place {
    fn prefix(self) -> &'static str {
        match self {
            Place::Outbox => "outbox",
            Place::Retrying => "retrying",
            Place::Consumer => "consumer",
        }
    }
}

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// `outbox:<seq>`, `retrying:<seq>` or `consumer:<id>`.
    pub id: String,
    pub place: Place,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    #[serde(rename = "eventId")]
    pub event_id: Option<String>,
    pub reason: String,
    /// When it was set aside (or last refused), as the store keeps it.
    pub at: String,
    /// The event itself (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
}

/// A service's dead letters: its database (the outbox) and its consumer at the bus.
pub struct DeadLetters {
    /// The service's database, if it has one.
    pub db: Option<Db>,
    pub bus: Bus,
    /// The service's subscriber name on the HTTP bus and its durable on NATS, if it
    /// consumes.
    pub consumer: Option<ConsumerNames>,
    /// The HTTP bus's ops listener (`http://host:port`).
    pub bus_ops: Option<String>,
}

/// The names a service's consumer has on each bus.
#[derive(Debug, Clone)]
pub struct ConsumerNames {
    /// Its subscriber name on the HTTP bus (the service's name).
    pub subscriber: String,
    /// Its durable consumer on NATS (its consumer group).
    pub durable: String,
}

/// Most consumer dead letters listed.
const LIST_LIMIT: usize = 10_000;

impl DeadLetters {
    /// Every dead letter, the outbox's first.
    pub async fn list(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        if let Some(db) = &self.db {
            out.extend(outbox_letters(db, None).await?);
        }
        out.extend(self.consumer_letters(None).await?);
        Ok(out)
    }

    /// The dead letter `id`, with its event.
    pub async fn show(&self, id: &str) -> anyhow::Result<Option<DeadLetter>> {
        let (place, n) = parse_id(id)?;
        match place {
            Place::Outbox | Place::Retrying => {
                let Some(db) = &self.db else { return Ok(None) };
                Ok(outbox_letters(db, Some((place, n)))
                    .await?
                    .into_iter()
                    .next())
            }
            Place::Consumer => Ok(self.consumer_letters(Some(n)).await?.into_iter().next()),
        }
    }

    /// Replays `id`; false if there is no such dead letter (replayed already).
    pub async fn replay(&self, id: &str) -> anyhow::Result<bool> {
        let (place, n) = parse_id(id)?;
        match place {
            Place::Retrying => anyhow::bail!(
                "{id} is still in the outbox: the relay retries it until the bus takes it (see its reason)"
            ),
            Place::Outbox => {
                let db = self
                    .db
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("this service has no database"))?;
                replay_outbox(db, n).await
            }
            Place::Consumer => self.replay_consumer(n).await,
        }
    }

    /// Replays every replayable dead letter; returns how many were replayed.
    pub async fn replay_all(&self) -> anyhow::Result<usize> {
        let mut replayed = 0;
        for letter in self.list().await? {
            if letter.place != Place::Retrying && self.replay(&letter.id).await? {
                replayed += 1;
            }
        }
        Ok(replayed)
    }

    fn consumer(&self) -> Option<&ConsumerNames> {
        self.consumer.as_ref()
    }

    async fn consumer_letters(&self, only: Option<u64>) -> anyhow::Result<Vec<DeadLetter>> {
        let Some(names) = self.consumer() else {
            return Ok(Vec::new());
        };
        match &self.bus {
            Bus::Nats(nats) => {
                let letters = match only {
                    Some(id) => nats
                        .dead_letter_by_id(&names.durable, id)
                        .await?
                        .into_iter()
                        .collect(),
                    None => nats.dead_letters(&names.durable, LIST_LIMIT).await?,
                };
                Ok(letters
                    .into_iter()
                    .map(|d| DeadLetter {
                        id: format!("consumer:{}", d.id),
                        place: Place::Consumer,
                        event_type: d.event_type,
                        event_id: d.event_id,
                        reason: d.reason,
                        at: d.at,
                        event: only
                            .is_some()
                            .then(|| serde_json::from_slice(&d.payload).ok())
                            .flatten(),
                    })
                    .collect())
            }
            Bus::Http(_) => {
                let ops = self.bus_ops()?;
                let client = client()?;
                let entries: Vec<Value> = match only {
                    Some(seq) => {
                        let url = format!("{ops}/dead-letters/{}/{seq}", names.subscriber);
                        let response = client.get(&url).send().await?;
                        if response.status() == reqwest::StatusCode::NOT_FOUND {
                            return Ok(Vec::new());
                        }
                        vec![checked(response, &url).await?]
                    }
                    None => {
                        let url = format!("{ops}/dead-letters?subscriber={}", names.subscriber);
                        let response = client.get(&url).send().await?;
                        serde_json::from_value(checked(response, &url).await?)?
                    }
                };
                Ok(entries
                    .into_iter()
                    .map(|e| DeadLetter {
                        id: format!("consumer:{}", e["seq"]),
                        place: Place::Consumer,
                        event_type: e["type"].as_str().map(str::to_string),
                        event_id: e["id"].as_str().map(str::to_string),
                        reason: format!(
                            "{} ({})",
                            e["reason"].as_str().unwrap_or_default(),
                            e["status"]
                        ),
                        at: millis_text(e["at"].as_i64().unwrap_or_default()),
                        event: e.get("event").cloned().filter(|v| !v.is_null()),
                    })
                    .collect())
            }
        }
    }

    async fn replay_consumer(&self, id: u64) -> anyhow::Result<bool> {
        let names = self
            .consumer()
            .ok_or_else(|| anyhow::anyhow!("this service consumes no events"))?;
        match &self.bus {
            Bus::Nats(nats) => nats.replay_dead_letter(&names.durable, id).await,
            Bus::Http(_) => {
                let url = format!(
                    "{}/dead-letters/{}/{id}/replay",
                    self.bus_ops()?,
                    names.subscriber
                );
                let response = client()?.post(&url).send().await?;
                if response.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(false);
                }
                checked(response, &url).await?;
                Ok(true)
            }
        }
    }

    fn bus_ops(&self) -> anyhow::Result<&str> {
        self.bus_ops.as_deref().ok_or_else(|| {
            anyhow::anyhow!("the HTTP bus's ops address is not known (EVENT_BUS_OPS_URL)")
        })
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn checked(response: reqwest::Response, url: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

fn parse_id(id: &str) -> anyhow::Result<(Place, u64)> {
    let bad = || {
        anyhow::anyhow!("{id:?} is not a dead letter id (outbox:<n>, retrying:<n> or consumer:<n>)")
    };
    let (prefix, n) = id.split_once(':').ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    let place = [Place::Outbox, Place::Retrying, Place::Consumer]
        .into_iter()
        .find(|p| p.prefix() == prefix)
        .ok_or_else(bad)?;
    Ok((place, n))
}

fn millis_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The outbox's dead letters and refused rows (or the one `only` names).
async fn outbox_letters(db: &Db, only: Option<(Place, u64)>) -> anyhow::Result<Vec<DeadLetter>> {
    let n = |p: Place| match only {
        None => Some(-1),
        Some((place, n)) if place == p => i64::try_from(n).ok(),
        Some(_) => None,
    };
    let mut out = Vec::new();
    if let Some(seq) = n(Place::Outbox) {
        let rows = sqlx::query(
            "SELECT seq, event_id, event_type, body, status, reason, at FROM outbox_dead_letters WHERE ($1 < 0 OR seq = $1) ORDER BY seq",
        )
        .bind(seq)
        .fetch_all(db.reader())
        .await?;
        for row in rows {
            let body: String = row.try_get("body")?;
            out.push(DeadLetter {
                id: format!("outbox:{}", row.try_get::<i64, _>("seq")?),
                place: Place::Outbox,
                event_id: Some(row.try_get("event_id")?),
                event_type: Some(row.try_get("event_type")?),
                reason: format!(
                    "refused by the bus ({}): {}",
                    row.try_get::<i32, _>("status")?,
                    row.try_get::<String, _>("reason")?
                ),
                at: millis_text(row.try_get("at")?),
                event: only.and_then(|_| serde_json::from_str(&body).ok()),
            });
        }
    }
    if let Some(seq) = n(Place::Retrying) {
        let rows = sqlx::query(
            "SELECT seq, event_id, event_type, body, attempts, last_error, last_attempt_at FROM outbox WHERE attempts > 0 AND ($1 < 0 OR seq = $1) ORDER BY seq",
        )
        .bind(seq)
        .fetch_all(db.reader())
        .await?;
        for row in rows {
            let body: String = row.try_get("body")?;
            out.push(DeadLetter {
                id: format!("retrying:{}", row.try_get::<i64, _>("seq")?),
                place: Place::Retrying,
                event_id: Some(row.try_get("event_id")?),
                event_type: Some(row.try_get("event_type")?),
                reason: format!(
                    "{} tries so far, last: {}",
                    row.try_get::<i32, _>("attempts")?,
                    row.try_get::<Option<String>, _>("last_error")?
                        .unwrap_or_default()
                ),
                at: millis_text(
                    row.try_get::<Option<i64>, _>("last_attempt_at")?
                        .unwrap_or_default(),
                ),
                event: only.and_then(|_| serde_json::from_str(&body).ok()),
            });
        }
    }
    Ok(out)
}

/// Moves the outbox dead letter `seq` back into the outbox (the relay finds it at its next
/// look at the table, within a second), in one transaction.
async fn replay_outbox(db: &Db, seq: u64) -> anyhow::Result<bool> {
    let seq = i64::try_from(seq)?;
    let mut tx = db.pool().begin().await?;
    let moved = sqlx::query(
        "INSERT INTO outbox (event_id, event_type, body, created_at) SELECT event_id, event_type, body, $2 FROM outbox_dead_letters WHERE seq = $1 ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(seq)
    .bind(switchyard_kit::clock::unix_millis())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let deleted = sqlx::query("DELETE FROM outbox_dead_letters WHERE seq = $1")
        .bind(seq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if moved > 0 {
        tracing::info!(seq, "outbox dead letter replayed");
    }
    Ok(deleted > 0)
}
