//! `GET /posts` and `POST /posts/create`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sqlx::Row;
use switchyard_blog_contract::{BlogEvent, PostCreated, PostId};
use switchyard_bus_client::ServiceState;
use switchyard_kit::openapi::ErrorBody;
use switchyard_kit::{ApiError, RequestId, ValidJson};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use switchyard_blog_contract::http::{NewPost, Post};

pub(crate) fn router(state: ServiceState) -> OpenApiRouter {
    OpenApiRouter::new()
        // `POST /posts` is how the course created posts before the Ingress existed; kept so
        // such clients work unchanged against the service itself.
        .routes(routes!(list, create_before_ingress))
        .routes(routes!(create))
        .with_state(state)
}

/// Every post, by id.
#[utoipa::path(get, path = "/posts", tag = "posts",
    responses((status = 200, description = "Every post, keyed by id", body = HashMap<String, Post>)))]
async fn list(State(state): State<ServiceState>) -> Result<Response, ApiError> {
    let rows = sqlx::query("SELECT id, title FROM posts ORDER BY ord")
        .fetch_all(state.db.reader())
        .await?;
    let mut posts = indexmap::IndexMap::with_capacity(rows.len());
    for row in rows {
        let post = Post {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
        };
        posts.insert(post.id.clone(), post);
    }
    Ok(axum::Json(posts).into_response())
}

/// Creates a post (the path the course's Ingress routes to posts).
#[utoipa::path(post, path = "/posts/create", tag = "posts", request_body = NewPost,
    responses(
        (status = 201, description = "The post", body = Post),
        (status = 400, description = "No title, or one that is blank or too long", body = ErrorBody),
    ))]
async fn create(
    State(state): State<ServiceState>,
    request_id: RequestId,
    ValidJson(NewPost { title }): ValidJson<NewPost>,
) -> Result<Response, ApiError> {
    let title = title.into_string();
    let id = PostId::generate();
    let event = BlogEvent::from(PostCreated {
        id: id.clone(),
        title: title.clone(),
    })
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
    Ok((StatusCode::CREATED, axum::Json(Post { id, title })).into_response())
}

/// Creates a post, as `POST /posts/create` does (the course's path before the Ingress).
#[utoipa::path(post, path = "/posts", tag = "posts", request_body = NewPost,
    responses(
        (status = 201, description = "The post", body = Post),
        (status = 400, description = "No title, or one that is blank or too long", body = ErrorBody),
    ))]
async fn create_before_ingress(
    state: State<ServiceState>,
    request_id: RequestId,
    body: ValidJson<NewPost>,
) -> Result<Response, ApiError> {
    create(state, request_id, body).await
}
