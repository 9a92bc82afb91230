//! The database: SQLite or PostgreSQL behind one pool, chosen by the URL scheme.
//!
//! Services write SQL that both dialects accept (`$1` placeholders, `ON CONFLICT`,
//! `RETURNING`) and keep one migration list per dialect. SQLite runs in WAL mode with
//! `synchronous=NORMAL`: a commit survives the process being killed (it is in the WAL file
//! the moment the commit returns); only an operating-system crash can lose the last commits.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration as Migration_, MigrationType, Migrator};
use sqlx::{AnyPool, Connection, Executor};

/// The SQL dialect behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn from_url(url: &str) -> Option<Dialect> {
        if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }
}

/// One migration with a stable version: the version is part of the migration, not its
/// place in a list, so a migration added between two others (or a platform migration added
/// after a service's) never renumbers one that a deployed database has applied.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Migration {
    /// A migration whose SQL both dialects accept.
    pub const fn both(version: i64, description: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            description,
            sqlite: sql,
            postgres: sql,
        }
    }

    /// A migration that only PostgreSQL needs (on SQLite it is recorded and does nothing):
    /// what exists because several processes share a PostgreSQL database.
    pub const fn postgres_only(version: i64, description: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            description,
            sqlite: "",
            postgres: sql,
        }
    }
}

/// A set of migrations: a service's own, or the platform's (outbox and inbox tables).
///
/// Versions are unique across the sets a service runs: the platform's messaging tables
/// take version 1 (what they always had) and versions from [`PLATFORM_VERSIONS`]; a
/// service numbers its own from 2 below that range.
#[derive(Debug, Clone, Copy)]
pub struct Migrations(pub &'static [Migration]);

/// The versions the platform's own migrations use after version 1.
pub const PLATFORM_VERSIONS: std::ops::RangeFrom<i64> = 1_000_000..;

fn migrator(sets: &[&Migrations], dialect: Dialect) -> anyhow::Result<Migrator> {
    let mut all: Vec<&Migration> = sets.iter().flat_map(|set| set.0.iter()).collect();
    all.sort_by_key(|m| m.version);
    if let Some(w) = all.windows(2).find(|w| w[0].version == w[1].version) {
        anyhow::bail!(
            "migrations {:?} and {:?} share version {}",
            w[0].description,
            w[1].description,
            w[0].version
        );
    }
    let migrations = all
        .into_iter()
        .map(|m| {
            let sql = match dialect {
                Dialect::Sqlite => m.sqlite,
                Dialect::Postgres => m.postgres,
            };
            Migration_::new(
                m.version,
                Cow::Borrowed(m.description),
                MigrationType::Simple,
                sqlx::SqlStr::from_static(sql),
                false,
            )
        })
        .collect();
    Ok(Migrator::with_migrations(migrations))
}

/// Connections to the service's own database.
///
/// On SQLite, writes go through one connection ([`Db::pool`]) and reads through a separate
/// pool ([`Db::reader`]): SQLite admits one writer at a time, and a second writer would wait
/// in SQLite's busy handler, which sleeps in steps of milliseconds. Queued in the pool
/// instead, a write starts the moment the previous one commits, and WAL lets the readers
/// run alongside. On PostgreSQL both are the same pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    reader: AnyPool,
    dialect: Dialect,
    /// Where it connects, for connections outside the pool ([`Db::listener`]).
    url: ConnectUrl,
}

/// A database URL, printed without its password.
#[derive(Clone)]
struct ConnectUrl(std::sync::Arc<str>);

impl std::fmt::Debug for ConnectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl Db {
    /// Connects (creating the SQLite file and its folder if needed).
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        install_default_drivers();
        let dialect = Dialect::from_url(url)
            .ok_or_else(|| anyhow::anyhow!("unsupported database URL scheme in {url:?}"))?;
        match dialect {
            Dialect::Sqlite => {
                let url = sqlite_url(url)?;
                let pool = sqlite_pool(1, 1)
                    .connect(&url)
                    .await
                    .map_err(|e| open_error(&url, e))?;
                // Readers connect on first use, after the writer has created the file.
                let reader = sqlite_pool(sqlite_readers(), 0)
                    .connect_lazy(&url)
                    .map_err(|e| open_error(&url, e))?;
                Ok(Db {
                    pool,
                    reader,
                    dialect,
                    url: ConnectUrl(url.into()),
                })
            }
            Dialect::Postgres => {
                let pool = postgres_pool()
                    .connect(url)
                    .await
                    .map_err(|e| open_error(url, e))?;
                Ok(Db {
                    reader: pool.clone(),
                    pool,
                    dialect,
                    url: ConnectUrl(url.into()),
                })
            }
        }
    }

    /// Connects to the service's database (`DATABASE_URL`) and, unless `MIGRATE_ON_START`
    /// is off, runs its migrations.
    pub async fn open(common: &crate::CommonConfig, sets: &[&Migrations]) -> anyhow::Result<Db> {
        let db = Db::connect(&common.database_url).await?;
        if common.migrate_on_start {
            db.migrate(&common.service, sets).await?;
        }
        Ok(db)
    }

    /// Runs `owner`'s migrations (PostgreSQL takes an advisory lock, so replicas starting
    /// together do not race).
    ///
    /// A database belongs to one service: the first to migrate it records its name, and
    /// another service pointed at it by mistake stops here with a message that says so,
    /// instead of failing later on a table the first one created.
    pub async fn migrate(&self, owner: &str, sets: &[&Migrations]) -> anyhow::Result<()> {
        self.claim(owner).await?;
        migrator(sets, self.dialect)?
            .run(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))
    }

    /// Records `owner` as the database's service, or fails if another one is recorded.
    async fn claim(&self, owner: &str) -> anyhow::Result<()> {
        use sqlx::Row;
        let mut attempt = 0;
        loop {
            let created = sqlx::query(
                "CREATE TABLE IF NOT EXISTS switchyard_owner (id INTEGER PRIMARY KEY, service TEXT NOT NULL)",
            )
            .execute(&self.pool)
            .await;
            match created {
                Ok(_) => break,
                // Two processes creating the table at the same moment on PostgreSQL: one
                // gets a unique violation on the catalog (or "type already exists",
                // 42710); the table exists then.
                Err(sqlx::Error::Database(e))
                    if matches!(
                        e.code().as_deref(),
                        Some("23505") | Some("42P07") | Some("42710")
                    ) && attempt < 5 =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(anyhow::anyhow!("cannot record the database's owner: {e}")),
            }
        }
        sqlx::query(
            "INSERT INTO switchyard_owner (id, service) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        let recorded: String = sqlx::query("SELECT service FROM switchyard_owner WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        if recorded != owner {
            anyhow::bail!(
                "this database belongs to the service {recorded:?}, not {owner:?}: every service needs a database of its own (set DATABASE_URL to another database)"
            );
        }
        Ok(())
    }

    /// The pool for writes (and anything that must see them at once).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for reads that may run beside a write.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A connection of its own that receives `NOTIFY`s (PostgreSQL only): a listener holds
    /// its connection for as long as it listens, so it is never one of the pool's.
    pub async fn listener(&self) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
        if self.dialect != Dialect::Postgres {
            return Err(sqlx::Error::Configuration(
                "LISTEN needs PostgreSQL".to_string().into(),
            ));
        }
        sqlx::postgres::PgListener::connect(self.url()).await
    }

    fn url(&self) -> &str {
        &self.url.0
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.pool.close().await;
    }
}

/// How many SQLite readers a service keeps: one per core, at most four. A read of a local
/// file is CPU work, so readers beyond the cores only wait for them, and each one holds
/// its own page cache and its own thread (with its allocator arena).
fn sqlite_readers() -> u32 {
    std::thread::available_parallelism()
        .map_or(2, |n| u32::try_from(n.get()).unwrap_or(4))
        .clamp(2, 4)
}

/// A pooled PostgreSQL connection is checked (a round trip to the server) before use only
/// once it has been idle this long. sqlx checks every connection as it goes back to the
/// pool, so one used a moment ago is known good; checking it again before each use put a
/// round trip on the path of every transaction, relay round and read. One that died since
/// (the server restarted, the backend was terminated) fails its statement with an I/O
/// error, which callers take as transient (the event is retried, the request answered
/// 503), and sqlx closes it as it comes back.
pub const POSTGRES_CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

fn postgres_pool() -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= POSTGRES_CHECK_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

fn sqlite_pool(max: u32, min: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(min)
        .acquire_timeout(Duration::from_secs(10))
        // A connection to a local file does not go stale as a network one can: checking it
        // before every use would add a round trip to its thread to every statement.
        .test_before_acquire(false)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                // 256 KiB of page cache per connection (SQLite's default is 2 MiB): the
                // operating system caches the file too, so a page missed here is a read from
                // memory, while each connection's cache stays in the service's heap. Under
                // the bus benchmark's 32 publishers this took about 1 MiB off the bus's heap
                // (writer and readers each fill theirs).
                conn.execute("PRAGMA cache_size = -256").await?;
                // Another process (switchyard rebuild-query) may hold the write lock.
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                Ok(())
            })
        })
}

fn open_error(url: &str, e: sqlx::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot open database {}: {e}", redact(url))
}

/// True for errors that mean "the database is not reachable right now" (retrying later can
/// work): pool exhaustion, I/O errors, and PostgreSQL's connection-exception (`08`) and
/// operator-intervention (`57`: a terminated backend, a server shutting down) classes.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}

/// True for a unique-constraint violation (PostgreSQL 23505, SQLite's UNIQUE and PRIMARY
/// KEY constraints): the database refused a second row where one may exist.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || matches!(
                    db.code().as_deref(),
                    Some("23505") | Some("2067") | Some("1555")
                )
        }
        _ => false,
    }
}

/// Makes sure the PostgreSQL server at `server_url` has a database named `database`
/// (creating it if missing, tolerating another process creating it at the same moment) and
/// returns the URL of that database: `server_url` with its path replaced by `/<database>`.
///
/// The name must be 1 to 63 characters of ASCII letters, digits and `_` (it is quoted, so
/// case is kept). The server is reached through its `postgres` maintenance database.
pub async fn ensure_postgres_database(server_url: &str, database: &str) -> anyhow::Result<String> {
    use sqlx::Connection;

    check_database_name(database)?;
    if Dialect::from_url(server_url) != Some(Dialect::Postgres) {
        anyhow::bail!("expected a postgres:// URL, got {}", redact(server_url));
    }
    let admin_url = with_database(server_url, "postgres");
    let mut conn = sqlx::postgres::PgConnection::connect(&admin_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", redact(&admin_url)))?;
    let mut attempt = 0u32;
    loop {
        let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(database)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        if exists {
            break;
        }
        match sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        )))
        .execute(&mut conn)
        .await
        {
            Ok(_) => break,
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) =>
            {
                // Created by someone else meanwhile (duplicate database, or the unique index
                // of pg_database when both creations raced).
                break;
            }
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("55006") && attempt < 20 =>
            {
                // The template database is busy with another creation: try again shortly.
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!("cannot create database {database}: {e}"));
            }
        }
    }
    conn.close().await.ok();
    Ok(with_database(server_url, database))
}

/// Drops the database `database` of the PostgreSQL server at `server_url` if it exists,
/// terminating its connections (`WITH (FORCE)`). For tests and tear-downs.
pub async fn drop_postgres_database(server_url: &str, database: &str) -> anyhow::Result<()> {
    use sqlx::Connection;

    check_database_name(database)?;
    let admin_url = with_database(server_url, "postgres");
    let mut conn = sqlx::postgres::PgConnection::connect(&admin_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", redact(&admin_url)))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| anyhow::anyhow!("cannot drop database {database}: {e}"))?;
    conn.close().await.ok();
    Ok(())
}

fn check_database_name(database: &str) -> anyhow::Result<()> {
    if database.is_empty()
        || database.len() > 63
        || !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        anyhow::bail!(
            "database name {database:?} must be 1 to 63 ASCII letters, digits or underscores"
        );
    }
    Ok(())
}

/// `url` with its path (the database name) replaced by `/<database>`, keeping the query.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

/// Adds `mode=rwc` (create if missing) and creates the parent folder.
fn sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or("");
    if !path.is_empty()
        && path != ":memory:"
        && let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    Ok(if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_by_scheme() {
        assert_eq!(Dialect::from_url("sqlite://a.db"), Some(Dialect::Sqlite));
        assert_eq!(
            Dialect::from_url("postgres://h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::from_url("mysql://h/db"), None);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u:p@h:5432", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432/", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgresql://h/old?sslmode=disable", "new_1"),
            "postgresql://h/new_1?sslmode=disable"
        );
    }

    #[test]
    fn database_names_are_checked() {
        assert!(check_database_name("sy_ab12_posts").is_ok());
        for bad in ["", "a-b", "a\"b", "x y", &"a".repeat(64)] {
            assert!(check_database_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn sqlite_file_is_created_and_migrated() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/nested/t.db", dir.path().display());
        let db = Db::connect(&url).await?;
        static M: Migrations = Migrations(&[Migration::both(
            2,
            "t",
            "CREATE TABLE t (id TEXT PRIMARY KEY)",
        )]);
        db.migrate("svc", &[&M]).await?;
        db.migrate("svc", &[&M]).await?; // idempotent
        sqlx::query("INSERT INTO t (id) VALUES ($1)")
            .bind("a")
            .execute(db.pool())
            .await?;
        db.ping().await?;
        assert!(dir.path().join("nested/t.db").exists());
        Ok(())
    }

    #[tokio::test]
    async fn a_migration_added_between_others_does_not_break_a_migrated_database()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::connect(&format!("sqlite://{}/m.db", dir.path().display())).await?;
        static PLATFORM: Migrations =
            Migrations(&[Migration::both(1, "a", "CREATE TABLE a (x TEXT)")]);
        static SERVICE_V1: Migrations =
            Migrations(&[Migration::both(3, "c", "CREATE TABLE c (x TEXT)")]);
        db.migrate("svc", &[&PLATFORM, &SERVICE_V1]).await?;
        // A later release adds a service migration below 3 and a platform one above it.
        static PLATFORM_V2: Migrations = Migrations(&[
            Migration::both(1, "a", "CREATE TABLE a (x TEXT)"),
            Migration::both(1_000_000, "d", "CREATE TABLE d (x TEXT)"),
        ]);
        static SERVICE_V2: Migrations = Migrations(&[
            Migration::both(2, "b", "CREATE TABLE b (x TEXT)"),
            Migration::both(3, "c", "CREATE TABLE c (x TEXT)"),
        ]);
        db.migrate("svc", &[&PLATFORM_V2, &SERVICE_V2]).await?;
        for table in ["a", "b", "c", "d"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(db.pool())
                .await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_second_service_on_the_same_database_is_refused_by_name() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::connect(&format!("sqlite://{}/o.db", dir.path().display())).await?;
        static M: Migrations = Migrations(&[Migration::both(2, "t", "CREATE TABLE t (x TEXT)")]);
        db.migrate("posts", &[&M]).await?;
        let err = db
            .migrate("comments", &[&M])
            .await
            .expect_err("another service");
        let text = err.to_string();
        assert!(
            text.contains("posts") && text.contains("comments"),
            "{text}"
        );
        assert!(text.contains("DATABASE_URL"), "{text}");
        Ok(())
    }

    #[test]
    fn duplicate_versions_are_refused() {
        static A: Migrations = Migrations(&[Migration::both(2, "a", "SELECT 1")]);
        static B: Migrations = Migrations(&[Migration::both(2, "b", "SELECT 1")]);
        assert!(migrator(&[&A, &B], Dialect::Sqlite).is_err());
    }
}
