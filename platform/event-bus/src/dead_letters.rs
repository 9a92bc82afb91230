//! The bus's dead letters and parked events, on its ops listener (never on the public
//! port): what `switchyard dead-letters <service>` reads and replays.
//!
//! * `GET /dead-letters[?subscriber=NAME]`: every dead letter, oldest first;
//! * `GET /dead-letters/{subscriber}/{seq}`: one, with its event;
//! * `POST /dead-letters/{subscriber}/{seq}/replay`: delivers it again (it is parked, and
//!   its loop delivers it beside the stream); replaying one already replayed finds nothing
//!   (404) and changes nothing, and the subscriber's inbox ignores an event it applied;
//! * `POST /dead-letters/{subscriber}/replay`: every dead letter of that subscriber;
//! * `GET /parked`: the events waiting to be delivered again, by subscriber;
//! * `GET /subscribers`: each subscriber's position in the log, how far behind its head
//!   it is, and how many of its events are parked and set aside (the console reads it).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use switchyard_kit::ApiError;
use switchyard_kit::clock::unix_millis;

use crate::delivery::Replays;
use crate::log::EventLog;

#[derive(Clone)]
struct DeadLetters {
    log: EventLog,
    replays: Replays,
}

/// The routes above.
pub fn router(log: EventLog, replays: Replays) -> Router {
    Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/{subscriber}/replay", post(replay_all))
        .route("/dead-letters/{subscriber}/{seq}", get(show))
        .route("/dead-letters/{subscriber}/{seq}/replay", post(replay_one))
        .route("/parked", get(parked))
        .route("/subscribers", get(subscribers))
        .with_state(DeadLetters { log, replays })
}

#[derive(Deserialize)]
struct ListParams {
    subscriber: Option<String>,
}

const SELECT: &str = "SELECT d.subscriber AS subscriber, d.seq AS seq, d.status AS status, \
     d.reason AS reason, d.at AS at, e.event_type AS event_type, e.body AS body \
     FROM dead_letters d LEFT JOIN events e ON e.seq = d.seq";

fn entry(row: &sqlx::any::AnyRow, with_event: bool) -> Result<Value, sqlx::Error> {
    let body: Option<String> = row.try_get("body")?;
    let event: Option<Value> = body.as_deref().and_then(|b| serde_json::from_str(b).ok());
    let mut entry = json!({
        "subscriber": row.try_get::<String, _>("subscriber")?,
        "seq": row.try_get::<i64, _>("seq")?,
        "status": row.try_get::<i32, _>("status")?,
        "reason": row.try_get::<String, _>("reason")?,
        "at": row.try_get::<i64, _>("at")?,
        "type": row.try_get::<Option<String>, _>("event_type")?,
        "id": event.as_ref().and_then(|e| e.get("id")).cloned().unwrap_or(Value::Null),
    });
    if with_event {
        entry["event"] = event.unwrap_or(Value::Null);
    }
    Ok(entry)
}

async fn list(
    State(state): State<DeadLetters>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let rows = match &params.subscriber {
        Some(name) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SELECT} WHERE d.subscriber = $1 ORDER BY d.seq"
            )))
            .bind(name)
            .fetch_all(state.log.db().reader())
            .await
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SELECT} ORDER BY d.subscriber, d.seq"
            )))
            .fetch_all(state.log.db().reader())
            .await
        }
    }
    .map_err(ApiError::internal)?;
    let entries = rows
        .iter()
        .map(|r| entry(r, false))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(axum::Json(entries).into_response())
}

async fn show(
    State(state): State<DeadLetters>,
    Path((subscriber, seq)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE d.subscriber = $1 AND d.seq = $2"
    )))
    .bind(&subscriber)
    .bind(seq)
    .fetch_optional(state.log.db().reader())
    .await
    .map_err(ApiError::internal)?
    .ok_or_else(|| ApiError::not_found(format!("{subscriber} has no dead letter {seq}")))?;
    Ok(axum::Json(entry(&row, true).map_err(ApiError::internal)?).into_response())
}

async fn replay_one(
    State(state): State<DeadLetters>,
    Path((subscriber, seq)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let replayed = replay(&state, &subscriber, Some(seq)).await?;
    if replayed.is_empty() {
        return Err(ApiError::not_found(format!(
            "{subscriber} has no dead letter {seq} (replayed already?)"
        )));
    }
    Ok(axum::Json(json!({ "replayed": replayed })).into_response())
}

async fn replay_all(
    State(state): State<DeadLetters>,
    Path(subscriber): Path<String>,
) -> Result<Response, ApiError> {
    let replayed = replay(&state, &subscriber, None).await?;
    Ok(axum::Json(json!({ "replayed": replayed })).into_response())
}

/// Moves `subscriber`'s dead letter `seq` (or all of them) to `parked`, in one
/// transaction, and hands them to its loop; returns the `seq`s moved.
async fn replay(
    state: &DeadLetters,
    subscriber: &str,
    seq: Option<i64>,
) -> Result<Vec<i64>, ApiError> {
    if !state.replays.knows(subscriber) {
        return Err(ApiError::not_found(format!(
            "{subscriber} is not a subscriber of this bus"
        )));
    }
    let mut tx = state
        .log
        .db()
        .pool()
        .begin()
        .await
        .map_err(ApiError::from)?;
    let rows = sqlx::query(
        "SELECT seq FROM dead_letters WHERE subscriber = $1 AND ($2 < 0 OR seq = $2) ORDER BY seq",
    )
    .bind(subscriber)
    .bind(seq.unwrap_or(-1))
    .fetch_all(&mut *tx)
    .await
    .map_err(ApiError::from)?;
    let seqs: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(ApiError::internal)?;
    let now = unix_millis();
    for s in &seqs {
        sqlx::query(
            "INSERT INTO parked (subscriber, seq, since) VALUES ($1, $2, $3) ON CONFLICT (subscriber, seq) DO NOTHING",
        )
        .bind(subscriber)
        .bind(*s)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        sqlx::query("DELETE FROM dead_letters WHERE subscriber = $1 AND seq = $2")
            .bind(subscriber)
            .bind(*s)
            .execute(&mut *tx)
            .await
            .map_err(ApiError::from)?;
    }
    tx.commit().await.map_err(ApiError::from)?;
    if !seqs.is_empty() {
        tracing::info!(%subscriber, count = seqs.len(), "dead letters replayed");
        state.replays.hand_back(subscriber, &seqs);
    }
    Ok(seqs)
}

async fn parked(State(state): State<DeadLetters>) -> Result<Response, ApiError> {
    let rows = sqlx::query(
        "SELECT p.subscriber, p.seq, p.since, e.event_type FROM parked p LEFT JOIN events e ON e.seq = p.seq ORDER BY p.subscriber, p.seq",
    )
    .fetch_all(state.log.db().reader())
    .await
    .map_err(ApiError::internal)?;
    let entries = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "subscriber": r.try_get::<String, _>(0)?,
                "seq": r.try_get::<i64, _>(1)?,
                "since": r.try_get::<i64, _>(2)?,
                "type": r.try_get::<Option<String>, _>(3)?,
            }))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(ApiError::internal)?;
    Ok(axum::Json(entries).into_response())
}

async fn subscribers(State(state): State<DeadLetters>) -> Result<Response, ApiError> {
    let head = state.log.head();
    let mut counts = std::collections::HashMap::<(String, &str), i64>::new();
    for (table, what) in [("parked", "parked"), ("dead_letters", "deadLetters")] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT subscriber, COUNT(*) AS n FROM {table} GROUP BY subscriber"
        )))
        .fetch_all(state.log.db().reader())
        .await
        .map_err(ApiError::internal)?;
        for row in rows {
            let name: String = row.try_get("subscriber").map_err(ApiError::internal)?;
            let n: i64 = row.try_get("n").map_err(ApiError::internal)?;
            counts.insert((name, what), n);
        }
    }
    let entries: Vec<Value> = state
        .replays
        .positions()
        .into_iter()
        .map(|(name, position)| {
            let count = |what| counts.get(&(name.clone(), what)).copied().unwrap_or(0);
            json!({
                "subscriber": name,
                "position": position,
                "head": head,
                "behind": (head - position).max(0),
                "parked": count("parked"),
                "deadLetters": count("deadLetters"),
            })
        })
        .collect();
    Ok(axum::Json(entries).into_response())
}
