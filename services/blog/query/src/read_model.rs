//! The read model: tables in the service's database, and the `GET /posts` JSON kept in
//! memory until the next change.
//!
//! On PostgreSQL several replicas may share the tables: every change bumps the
//! `model_version` row in its transaction, and each replica polls that row and drops its
//! cached JSON when another replica changed the model.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use sqlx::Row;
use switchyard_kit::{Db, Dialect, Shutdown};
use tokio::sync::{Mutex, RwLock, watch};

#[derive(Clone)]
pub(crate) struct ReadModel {
    pub db: Db,
    inner: Arc<Inner>,
}

/// How often a replica looks for changes made by the others (PostgreSQL only).
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

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

    /// The `GET /posts` body, from memory while nothing changed. On PostgreSQL, changes made
    /// by other replicas sharing the tables reach this cache through [`ReadModel::spawn_watch`]
    /// (within its polling interval), so a read never needs a database round trip.
    pub async fn posts_json(&self) -> Result<Bytes, sqlx::Error> {
        if let Some(bytes) = self.cached().await {
            return Ok(bytes);
        }
        let _one_builder = self.inner.rebuilding.lock().await;
        if let Some(bytes) = self.cached().await {
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

    async fn cached(&self) -> Option<Bytes> {
        self.inner.cached.read().await.clone()
    }

    /// The version of the shared tables (PostgreSQL), `None` on SQLite.
    async fn shared_version(&self) -> Result<Option<i64>, sqlx::Error> {
        if self.db.dialect() != Dialect::Postgres {
            return Ok(None);
        }
        sqlx::query("SELECT version FROM model_version WHERE id = 1")
            .fetch_one(self.db.pool())
            .await?
            .try_get(0)
            .map(Some)
    }

    /// On PostgreSQL, watches the shared version so that changes applied by other replicas
    /// reach this replica's stream subscribers.
    pub fn spawn_watch(&self, shutdown: &Shutdown) {
        if self.db.dialect() != Dialect::Postgres {
            return;
        }
        let model = self.clone();
        let stop = shutdown.background_token();
        shutdown.spawn("read-model-watch", async move {
            let mut seen = None;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                    _ = stop.cancelled() => return,
                }
                match model.shared_version().await {
                    Ok(current) if current != seen => {
                        if seen.is_some() {
                            model.changed().await;
                        }
                        seen = current;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "read model version check failed"),
                }
            }
        });
    }

    async fn build(&self) -> Result<Bytes, sqlx::Error> {
        let mut conn = self.db.reader().acquire().await?;
        let post_rows =
            sqlx::query("SELECT id, title FROM posts ORDER BY (log_seq IS NULL), log_seq, ord")
                .fetch_all(&mut *conn)
                .await?;
        let comment_rows =
            sqlx::query(
                "SELECT id, post_id, content, status FROM comments ORDER BY (log_seq IS NULL), log_seq, ord",
            )
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
