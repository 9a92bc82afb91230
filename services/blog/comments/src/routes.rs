//! `GET /posts/:id/comments` and `POST /posts/:id/comments`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};
use switchyard_blog_contract::{BlogEvent, CommentStatus, MAX_CONTENT_LEN, MAX_REF_LEN};
use switchyard_bus_client::ServiceState;
use switchyard_events::ids;
use switchyard_kit::error::fields;
use switchyard_kit::{ApiError, JsonBody, RequestId};

pub(crate) fn router(state: ServiceState) -> Router {
    Router::new()
        .route("/posts/{id}/comments", get(list).post(create))
        .with_state(state)
}

fn check_post_id(id: &str) -> Result<(), ApiError> {
    if id.trim().is_empty() || id.chars().count() > MAX_REF_LEN {
        return Err(ApiError::field(
            "id",
            format!("post id must be 1 to {MAX_REF_LEN} characters"),
        ));
    }
    Ok(())
}

async fn list(
    State(state): State<ServiceState>,
    Path(post_id): Path<String>,
) -> Result<Response, ApiError> {
    check_post_id(&post_id)?;
    let mut conn = state.db.reader().acquire().await?;
    Ok(axum::Json(comments_of(&mut conn, &post_id).await?).into_response())
}

async fn create(
    State(state): State<ServiceState>,
    Path(post_id): Path<String>,
    request_id: RequestId,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    check_post_id(&post_id)?;
    let content = fields::text(&body, "content", MAX_CONTENT_LEN)?;
    let id = ids::entity_id();
    let event = BlogEvent::CommentCreated {
        id: id.clone(),
        post_id: post_id.clone(),
        content: content.clone(),
        status: CommentStatus::Pending,
    }
    .into_envelope(Some(request_id.0));
    let mut tx = state.outbox.begin().await?;
    sqlx::query("INSERT INTO comments (id, post_id, content, status) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(&post_id)
        .bind(&content)
        .bind(CommentStatus::Pending.as_str())
        .execute(&mut *tx)
        .await?;
    tx.publish(&event).await?;
    let comments = comments_of(&mut tx, &post_id).await?;
    tx.commit().await?;
    tracing::info!(comment_id = %id, %post_id, "comment created");
    Ok((StatusCode::CREATED, axum::Json(comments)).into_response())
}

async fn comments_of(conn: &mut AnyConnection, post_id: &str) -> Result<Value, sqlx::Error> {
    let rows =
        sqlx::query("SELECT id, content, status FROM comments WHERE post_id = $1 ORDER BY ord")
            .bind(post_id)
            .fetch_all(conn)
            .await?;
    let mut list = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get(0)?;
        let content: String = row.try_get(1)?;
        let status: String = row.try_get(2)?;
        list.push(json!({"id": id, "content": content, "status": status}));
    }
    Ok(Value::Array(list))
}
