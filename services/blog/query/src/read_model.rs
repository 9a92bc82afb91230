//! The read model: tables in the service's database, and the `GET /posts` JSON kept in
//! memory until the next change.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use sqlx::Row;
use switchyard_kit::Db;
use tokio::sync::{Mutex, RwLock, watch};

#[derive(Clone)]
pub(crate) struct ReadModel {
    pub db: Db,
    inner: Arc<Inner>,
}

struct Inner {
    cached: RwLock<Option<Bytes>>,
    version: AtomicU64,
    rebuilding: Mutex<()>,
    changes: watch::Sender<u64>,
}

impl ReadModel {
    pub fn new(db: Db) -> Self {
        let (changes, _) = watch::channel(0);
        ReadModel {
            db,
            inner: Arc::new(Inner {
                cached: RwLock::new(None),
                version: AtomicU64::new(0),
                rebuilding: Mutex::new(()),
                changes,
            }),
        }
    }

    /// Marks the model changed (after a commit).
    pub async fn changed(&self) {
        let version = self.inner.version.fetch_add(1, Ordering::AcqRel) + 1;
        *self.inner.cached.write().await = None;
        self.inner.changes.send_replace(version);
    }

    /// Notified after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The `GET /posts` body.
    pub async fn posts_json(&self) -> Result<Bytes, sqlx::Error> {
        if let Some(bytes) = self.inner.cached.read().await.clone() {
            return Ok(bytes);
        }
        let _one_builder = self.inner.rebuilding.lock().await;
        if let Some(bytes) = self.inner.cached.read().await.clone() {
            return Ok(bytes);
        }
        let version = self.inner.version.load(Ordering::Acquire);
        let bytes = self.build().await?;
        let mut cached = self.inner.cached.write().await;
        if self.inner.version.load(Ordering::Acquire) == version {
            *cached = Some(bytes.clone());
        }
        Ok(bytes)
    }

    async fn build(&self) -> Result<Bytes, sqlx::Error> {
        let mut conn = self.db.pool().acquire().await?;
        let post_rows = sqlx::query("SELECT id, title FROM posts ORDER BY ord")
            .fetch_all(&mut *conn)
            .await?;
        let comment_rows =
            sqlx::query("SELECT id, post_id, content, status FROM comments ORDER BY ord")
                .fetch_all(&mut *conn)
                .await?;
        let mut posts = Map::with_capacity(post_rows.len());
        for row in post_rows {
            let id: String = row.try_get(0)?;
            let title: String = row.try_get(1)?;
            posts.insert(
                id.clone(),
                json!({"id": id, "title": title, "comments": []}),
            );
        }
        for row in comment_rows {
            let post_id: String = row.try_get(1)?;
            // Comments whose post is not known yet wait in the table, invisible.
            let Some(post) = posts.get_mut(&post_id) else {
                continue;
            };
            let id: String = row.try_get(0)?;
            let content: String = row.try_get(2)?;
            let status: String = row.try_get(3)?;
            if let Some(Value::Array(list)) = post.get_mut("comments") {
                list.push(json!({"id": id, "content": content, "status": status}));
            }
        }
        Ok(Bytes::from(
            serde_json::to_vec(&Value::Object(posts)).unwrap_or_default(),
        ))
    }
}
