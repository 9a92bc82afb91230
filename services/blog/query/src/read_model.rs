//! The read model: tables in the service's database, and the `GET /posts` JSON kept in
//! memory.
//!
//! The JSON is kept as one serialised fragment per post (`"<id>":{…}`), in log order. A
//! change names the post it touched; the next read serialises that post again from its rows
//! and joins the fragments, instead of reading and serialising every post and comment (with
//! 100 posts × 3 comments that was 1.2 ms, the largest single step between a comment and
//! its approval showing). Changes that do not say which post they touched (another replica's,
//! or more than [`MAX_DIRTY`] at once) rebuild everything from the tables.
//!
//! On PostgreSQL several replicas may share the tables: every change bumps the
//! `model_version` row in its transaction, and each replica polls that row and rebuilds when
//! a version it did not write itself appears.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use switchyard_kit::{Db, Dialect, Shutdown};
use tokio::sync::watch;

/// How often a replica looks for changes made by the others (PostgreSQL only).
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Changed posts remembered one by one; past this a full rebuild is cheaper than as many
/// one-post reads (a bulk load nobody read during, for instance).
const MAX_DIRTY: usize = 64;

#[derive(Clone)]
pub(crate) struct ReadModel {
    pub db: Db,
    inner: Arc<Inner>,
}

struct Inner {
    /// What changed since the body was last built; held for a few instructions at a time.
    state: Mutex<State>,
    /// The fragments, held by the one reader that brings them up to date (across its reads).
    fragments: tokio::sync::Mutex<Fragments>,
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// The body, while nothing changed since it was built.
    body: Option<Bytes>,
    /// Bumped by every change: a body built from an older state is not kept.
    version: u64,
    dirty: Dirty,
    /// `model_version` values this replica wrote (PostgreSQL), which its watcher skips.
    own_versions: BTreeSet<i64>,
}

/// The posts whose fragment is stale.
#[derive(Debug, Default, PartialEq, Eq)]
enum Dirty {
    #[default]
    None,
    Posts(HashSet<String>),
    All,
}

/// Where a post sits in `GET /posts`: log order, then the posts applied without a log
/// position, in the order they were applied (the tables' `ORDER BY (log_seq IS NULL),
/// log_seq, ord`).
type SortKey = (bool, i64, i64);

/// One serialised fragment per post, in `GET /posts` order.
#[derive(Default)]
struct Fragments {
    /// False until the first full build, and after a failed refresh.
    built: bool,
    ordered: BTreeMap<SortKey, Bytes>,
    keys: HashMap<String, SortKey>,
}

#[derive(Serialize)]
struct PostJson<'a> {
    id: &'a str,
    title: &'a str,
    comments: &'a [CommentJson],
}

#[derive(Serialize)]
struct CommentJson {
    id: String,
    content: String,
    status: String,
}

impl ReadModel {
    pub fn new(db: Db) -> Self {
        let (changes, _) = watch::channel(0);
        ReadModel {
            db,
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                fragments: tokio::sync::Mutex::new(Fragments::default()),
                changes,
            }),
        }
    }

    /// Marks `post_id`'s entry changed (after the change committed).
    pub fn post_changed(&self, post_id: &str) {
        self.mark(|dirty| match dirty {
            Dirty::None => *dirty = Dirty::Posts(HashSet::from([post_id.to_string()])),
            Dirty::Posts(posts) if posts.len() < MAX_DIRTY => {
                posts.insert(post_id.to_string());
            }
            Dirty::Posts(_) => *dirty = Dirty::All,
            Dirty::All => {}
        });
    }

    /// Marks the whole model changed (by another replica, or by a rebuild).
    pub fn all_changed(&self) {
        self.mark(|dirty| *dirty = Dirty::All);
    }

    fn mark(&self, change: impl FnOnce(&mut Dirty)) {
        let version = {
            let mut state = self.state();
            change(&mut state.dirty);
            state.body = None;
            state.version += 1;
            state.version
        };
        self.inner.changes.send_replace(version);
    }

    /// Records a `model_version` this replica wrote, so that its watcher does not take it
    /// for another replica's change.
    pub fn wrote_version(&self, version: i64) {
        self.state().own_versions.insert(version);
    }

    /// Notified after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few fields updated together: a panic elsewhere cannot leave it torn.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The `GET /posts` body: from memory while nothing changed; otherwise the changed posts
    /// are read again and the fragments joined.
    pub async fn posts_json(&self) -> Result<Bytes, sqlx::Error> {
        if let Some(body) = self.state().body.clone() {
            return Ok(body);
        }
        let mut fragments = self.inner.fragments.lock().await;
        let (version, dirty) = {
            let mut state = self.state();
            if let Some(body) = state.body.clone() {
                return Ok(body);
            }
            (state.version, std::mem::take(&mut state.dirty))
        };
        let refreshed = match dirty {
            Dirty::Posts(posts) if fragments.built => {
                self.refresh_posts(&mut fragments, &posts).await
            }
            Dirty::None if fragments.built => Ok(()),
            _ => self.rebuild(&mut fragments).await,
        };
        if let Err(e) = refreshed {
            // The posts taken from `dirty` may be half done: start from the tables next time.
            fragments.built = false;
            return Err(e);
        }
        let body = fragments.join();
        let mut state = self.state();
        if state.version == version {
            state.body = Some(body.clone());
        }
        Ok(body)
    }

    /// On PostgreSQL, watches the shared version so that changes applied by other replicas
    /// reach this replica's readers and stream subscribers.
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
                    Ok(current) if seen != Some(current) => {
                        if model.changed_by_others(seen, current) {
                            model.all_changed();
                        }
                        seen = Some(current);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "read model version check failed"),
                }
            }
        });
    }

    /// Whether the shared version moving from `seen` to `current` may hide another
    /// replica's change. The first reading (`seen` is `None`) may: another replica could
    /// have changed the tables between this replica's first build and that reading.
    fn changed_by_others(&self, seen: Option<i64>, current: i64) -> bool {
        seen.is_none_or(|from| !self.only_own_versions(from, current))
    }

    /// Whether every version after `from` up to `to` was written by this replica (each
    /// change adds exactly one). Forgets the versions up to `to` either way.
    fn only_own_versions(&self, from: i64, to: i64) -> bool {
        let mut state = self.state();
        let own = to > from && (from + 1..=to).all(|v| state.own_versions.contains(&v));
        state.own_versions.retain(|v| *v > to);
        own
    }

    /// The version of the shared tables (PostgreSQL).
    async fn shared_version(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT version FROM model_version WHERE id = 1")
            .fetch_one(self.db.pool())
            .await?
            .try_get(0)
    }

    /// Reads every post and comment and serialises each post's fragment.
    async fn rebuild(&self, fragments: &mut Fragments) -> Result<(), sqlx::Error> {
        let mut conn = self.db.reader().acquire().await?;
        let post_rows = sqlx::query(
            "SELECT id AS post_id, title, log_seq, ord FROM posts ORDER BY (log_seq IS NULL), log_seq, ord",
        )
        .fetch_all(&mut *conn)
        .await?;
        let comment_rows = sqlx::query(
            "SELECT id, content, status, post_id FROM comments ORDER BY (log_seq IS NULL), log_seq, ord",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut comments: HashMap<String, Vec<CommentJson>> = HashMap::new();
        for row in &comment_rows {
            // Comments whose post is not known yet wait in the table, invisible.
            let post_id: String = row.try_get("post_id")?;
            comments.entry(post_id).or_default().push(comment(row)?);
        }
        *fragments = Fragments {
            built: true,
            ..Fragments::default()
        };
        for row in &post_rows {
            let (id, title, key) = post(row)?;
            let comments = comments.get(&id).map(Vec::as_slice).unwrap_or_default();
            fragments.set(id, key, &title, comments);
        }
        Ok(())
    }

    /// Serialises the fragments of `posts` again from their rows.
    async fn refresh_posts(
        &self,
        fragments: &mut Fragments,
        posts: &HashSet<String>,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.db.reader().acquire().await?;
        for post_id in posts {
            // One statement for the post and its comments (a row per comment, or one row
            // without a comment): each statement is a round trip to the database.
            let rows = sqlx::query(
                "SELECT p.id AS post_id, p.title AS title, p.log_seq AS log_seq, p.ord AS ord, \
                 c.id AS comment_id, c.content AS content, c.status AS status \
                 FROM posts p LEFT JOIN comments c ON c.post_id = p.id WHERE p.id = $1 \
                 ORDER BY (c.log_seq IS NULL), c.log_seq, c.ord",
            )
            .bind(post_id)
            .fetch_all(&mut *conn)
            .await?;
            // A comment whose post has not arrived yet changes nothing visible.
            let Some(first) = rows.first() else { continue };
            let mut comments = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(id) = row.try_get::<Option<String>, _>("comment_id")? {
                    comments.push(CommentJson {
                        id,
                        content: row.try_get("content")?,
                        status: row.try_get("status")?,
                    });
                }
            }
            let (id, title, key) = post(first)?;
            fragments.set(id, key, &title, &comments);
        }
        Ok(())
    }
}

fn post(row: &AnyRow) -> Result<(String, String, SortKey), sqlx::Error> {
    let log_seq: Option<i64> = row.try_get("log_seq")?;
    let key = (log_seq.is_none(), log_seq.unwrap_or(0), row.try_get("ord")?);
    Ok((row.try_get("post_id")?, row.try_get("title")?, key))
}

fn comment(row: &AnyRow) -> Result<CommentJson, sqlx::Error> {
    Ok(CommentJson {
        id: row.try_get("id")?,
        content: row.try_get("content")?,
        status: row.try_get("status")?,
    })
}

impl Fragments {
    /// Sets the fragment of post `id` (a post's place never changes once it exists, but a
    /// stale key is dropped all the same).
    fn set(&mut self, id: String, key: SortKey, title: &str, comments: &[CommentJson]) {
        let mut fragment = Vec::with_capacity(64 + comments.len() * 96);
        // Serialising strings and derived structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut fragment, &id);
        fragment.push(b':');
        let _ = serde_json::to_writer(
            &mut fragment,
            &PostJson {
                id: &id,
                title,
                comments,
            },
        );
        if let Some(old) = self.keys.insert(id, key)
            && old != key
        {
            self.ordered.remove(&old);
        }
        self.ordered.insert(key, Bytes::from(fragment));
    }

    /// `{` the fragments, comma-separated, `}`.
    fn join(&self) -> Bytes {
        let size = self.ordered.values().map(|f| f.len() + 1).sum::<usize>() + 2;
        let mut body = Vec::with_capacity(size);
        body.push(b'{');
        for (i, fragment) in self.ordered.values().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(fragment);
        }
        body.push(b'}');
        Bytes::from(body)
    }
}

#[cfg(test)]
mod tests {
    use switchyard_kit::Db;

    use super::ReadModel;

    async fn model() -> (tempfile::TempDir, ReadModel) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("query.db").display());
        let db = Db::connect(&url).await.expect("connect");
        db.migrate("query", &[&crate::MIGRATIONS])
            .await
            .expect("migrate");
        (dir, ReadModel::new(db))
    }

    async fn exec(model: &ReadModel, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(model.db.pool())
            .await
            .expect(sql);
    }

    /// What a model that has seen no change builds from the tables alone.
    async fn from_scratch(model: &ReadModel) -> String {
        let fresh = ReadModel::new(model.db.clone());
        String::from_utf8(fresh.posts_json().await.expect("build").to_vec()).expect("utf-8")
    }

    async fn body(model: &ReadModel) -> String {
        String::from_utf8(model.posts_json().await.expect("read").to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn the_body_is_the_contract_json_in_log_order() {
        let (_dir, model) = model().await;
        assert_eq!(body(&model).await, "{}");
        exec(
            &model,
            "INSERT INTO posts (id, title, log_seq) VALUES ('b', 'second', 2)",
        )
        .await;
        exec(
            &model,
            "INSERT INTO posts (id, title, log_seq) VALUES ('a', 'first \"quoted\"', 1)",
        )
        .await;
        exec(
            &model,
            "INSERT INTO posts (id, title) VALUES ('c', 'no position')",
        )
        .await;
        exec(
            &model,
            "INSERT INTO comments (id, post_id, content, status, log_seq) VALUES ('k2', 'a', 'later', 'pending', 9), ('k1', 'a', 'earlier', 'approved', 3), ('k3', 'x', 'orphan', 'pending', 4)",
        )
        .await;
        model.all_changed();
        assert_eq!(
            body(&model).await,
            r#"{"a":{"id":"a","title":"first \"quoted\"","comments":[{"id":"k1","content":"earlier","status":"approved"},{"id":"k2","content":"later","status":"pending"}]},"b":{"id":"b","title":"second","comments":[]},"c":{"id":"c","title":"no position","comments":[]}}"#
        );
    }

    /// Each change is applied to the tables and announced for its post only; after every
    /// step the kept body must be what a full build from the tables gives.
    #[tokio::test]
    async fn a_post_read_again_matches_a_full_build() {
        let (_dir, model) = model().await;
        let steps: &[(&str, &str)] = &[
            (
                "p1",
                "INSERT INTO posts (id, title, log_seq) VALUES ('p1', 'one', 1)",
            ),
            (
                "p2",
                "INSERT INTO posts (id, title, log_seq) VALUES ('p2', 'two', 2)",
            ),
            (
                "p1",
                "INSERT INTO comments (id, post_id, content, status, log_seq) VALUES ('c1', 'p1', 'hi', 'pending', 3)",
            ),
            (
                "p1",
                "UPDATE comments SET status = 'approved' WHERE id = 'c1'",
            ),
            // A comment that arrives before its post stays invisible, then shows with it.
            (
                "p3",
                "INSERT INTO comments (id, post_id, content, status) VALUES ('c2', 'p3', 'early', 'rejected')",
            ),
            (
                "p3",
                "INSERT INTO posts (id, title, log_seq) VALUES ('p3', 'three', 5)",
            ),
            // An update that overtook its creation gets its place in the log later.
            (
                "p2",
                "INSERT INTO comments (id, post_id, content, status) VALUES ('c3', 'p2', 'x', 'approved')",
            ),
            (
                "p2",
                "INSERT INTO comments (id, post_id, content, status, log_seq) VALUES ('c4', 'p2', 'y', 'pending', 7)",
            ),
            ("p2", "UPDATE comments SET log_seq = 6 WHERE id = 'c3'"),
            // A post applied without a position goes after those with one.
            ("p0", "INSERT INTO posts (id, title) VALUES ('p0', 'zero')"),
        ];
        for (post, sql) in steps {
            let before = body(&model).await;
            exec(&model, sql).await;
            // Kept until announced.
            assert_eq!(body(&model).await, before, "{sql}");
            model.post_changed(post);
            assert_eq!(body(&model).await, from_scratch(&model).await, "{sql}");
        }
    }

    #[tokio::test]
    async fn many_changes_at_once_rebuild_everything() {
        let (_dir, model) = model().await;
        body(&model).await;
        for i in 0..(super::MAX_DIRTY + 10) {
            exec(
                &model,
                &format!("INSERT INTO posts (id, title, log_seq) VALUES ('p{i}', 't{i}', {i})"),
            )
            .await;
            model.post_changed(&format!("p{i}"));
        }
        assert_eq!(model.state().dirty, super::Dirty::All);
        assert_eq!(body(&model).await, from_scratch(&model).await);
    }

    #[test]
    fn own_versions_are_skipped_and_others_are_not() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (_dir, model) = rt.block_on(model());
        model.wrote_version(5);
        model.wrote_version(6);
        assert!(model.only_own_versions(4, 6));
        model.wrote_version(7);
        // 8 is another replica's.
        assert!(!model.only_own_versions(6, 8));
        assert!(model.state().own_versions.is_empty());
        // The first reading of the shared version counts as a change: one made by another
        // replica after this one's first build would otherwise never be seen.
        assert!(model.changed_by_others(None, 8));
        model.wrote_version(9);
        assert!(!model.changed_by_others(Some(8), 9));
        assert!(model.changed_by_others(Some(9), 10));
    }
}
