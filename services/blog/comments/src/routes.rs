//! `GET /posts/:id/comments` and `POST /posts/:id/comments`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sqlx::{AnyConnection, Row};
use switchyard_blog_contract::{
    BlogEvent, CommentCreated, CommentId, CommentStatus, MAX_REF_LEN, PostId,
};
use switchyard_bus_client::ServiceState;
use switchyard_kit::openapi::ErrorBody;
use switchyard_kit::{ApiError, RequestId, ValidJson};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use switchyard_blog_contract::http::{Comment, NewComment};

pub(crate) fn router(state: ServiceState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .with_state(state)
}

fn check_post_id(id: &str) -> Result<(), ApiError> {
    // PostgreSQL stores no NUL in text: no post has one in its id, on any backend.
    if id.trim().is_empty() || id.chars().count() > MAX_REF_LEN || id.contains('\0') {
        return Err(ApiError::field(
            "id",
            format!("post id must be 1 to {MAX_REF_LEN} characters, without NUL"),
        ));
    }
    Ok(())
}

/// The comments of a post, oldest first.
#[utoipa::path(get, path = "/posts/{id}/comments", tag = "comments",
    params(("id" = String, Path, description = "The post's id (1 to 128 characters)")),
    responses(
        (status = 200, description = "The post's comments (none for a post never commented)", body = Vec<Comment>),
        (status = 400, description = "A blank or too long post id", body = ErrorBody),
    ))]
async fn list(
    State(state): State<ServiceState>,
    Path(post_id): Path<String>,
) -> Result<Response, ApiError> {
    check_post_id(&post_id)?;
    let mut conn = state.db.reader().acquire().await?;
    Ok(axum::Json(comments_of(&mut conn, &post_id, None).await?).into_response())
}

/// Comments on a post: the comment starts pending until moderation decides.
#[utoipa::path(post, path = "/posts/{id}/comments", tag = "comments",
    params(("id" = String, Path, description = "The post's id (1 to 128 characters)")),
    request_body = NewComment,
    responses(
        (status = 201, description = "Every comment of the post, the new one last", body = Vec<Comment>),
        (status = 400, description = "A bad post id, or content missing, blank or too long", body = ErrorBody),
    ))]
async fn create(
    State(state): State<ServiceState>,
    Path(post_id): Path<String>,
    request_id: RequestId,
    ValidJson(NewComment { content }): ValidJson<NewComment>,
) -> Result<Response, ApiError> {
    check_post_id(&post_id)?;
    let post_id = PostId::from(post_id);
    let content = content.into_string();
    let id = CommentId::generate();
    let event = BlogEvent::from(CommentCreated {
        id: id.clone(),
        content: content.clone(),
        post_id: post_id.clone(),
        status: CommentStatus::Pending,
    })
    .into_envelope(Some(request_id.0));
    let mut tx = state.outbox.begin().await?;
    let ord: i64 = sqlx::query(
        "INSERT INTO comments (id, post_id, content, status) VALUES ($1, $2, $3, $4) RETURNING ord",
    )
    .bind(&id)
    .bind(&post_id)
    .bind(&content)
    .bind(CommentStatus::Pending.as_str())
    .fetch_one(&mut *tx)
    .await?
    .try_get("ord")?;
    tx.publish(&event).await?;
    tx.commit().await?;
    tracing::info!(comment_id = %id, %post_id, "comment created");
    // The comments before it are read after the commit, outside the write transaction, so
    // that the event leaves as soon as it is committed; the new one is listed as created.
    let mut conn = state.db.reader().acquire().await?;
    let mut comments = comments_of(&mut conn, post_id.as_str(), Some(ord)).await?;
    comments.push(Comment {
        id,
        content,
        status: CommentStatus::Pending,
    });
    Ok((StatusCode::CREATED, axum::Json(comments)).into_response())
}

/// The comments of `post_id` in the order they were made (those made before the comment
/// numbered `before`, if given).
async fn comments_of(
    conn: &mut AnyConnection,
    post_id: &str,
    before: Option<i64>,
) -> Result<Vec<Comment>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, content, status FROM comments WHERE post_id = $1 AND ord < $2 ORDER BY ord",
    )
    .bind(post_id)
    .bind(before.unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            Ok(Comment {
                id: row.try_get("id")?,
                content: row.try_get("content")?,
                status: CommentStatus::parse(&status).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown comment status {status:?}").into())
                })?,
            })
        })
        .collect()
}
