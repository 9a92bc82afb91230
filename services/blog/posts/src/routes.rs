//! `GET /posts` and `POST /posts/create`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use sqlx::Row;
use switchyard_blog_contract::{BlogEvent, MAX_TITLE_LEN};
use switchyard_bus_client::ServiceState;
use switchyard_events::ids;
use switchyard_kit::error::fields;
use switchyard_kit::{ApiError, JsonBody, RequestId};

pub(crate) fn router(state: ServiceState) -> Router {
    Router::new()
        // `POST /posts` is how the course created posts before the Ingress existed; kept so
        // such clients work unchanged against the service itself.
        .route("/posts", get(list).post(create))
        .route("/posts/create", post(create))
        .with_state(state)
}

async fn list(State(state): State<ServiceState>) -> Result<Response, ApiError> {
    let rows = sqlx::query("SELECT id, title FROM posts ORDER BY ord")
        .fetch_all(state.db.reader())
        .await?;
    let mut posts = Map::new();
    for row in rows {
        let id: String = row.try_get(0)?;
        let title: String = row.try_get(1)?;
        posts.insert(id.clone(), json!({"id": id, "title": title}));
    }
    Ok(axum::Json(Value::Object(posts)).into_response())
}

async fn create(
    State(state): State<ServiceState>,
    request_id: RequestId,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let title = fields::text(&body, "title", MAX_TITLE_LEN)?;
    let id = ids::entity_id();
    let event = BlogEvent::PostCreated {
        id: id.clone(),
        title: title.clone(),
    }
    .into_envelope(Some(request_id.0));
    let mut tx = state.outbox.begin().await?;
    sqlx::query("INSERT INTO posts (id, title) VALUES ($1, $2)")
        .bind(&id)
        .bind(&title)
        .execute(&mut *tx)
        .await?;
    tx.publish(&event).await?;
    tx.commit().await?;
    tracing::info!(post_id = %id, "post created");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "title": title})),
    )
        .into_response())
}
