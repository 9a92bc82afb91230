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
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

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

/// A service's migrations, one list per dialect: `(description, sql)` in order.
pub struct Migrations {
    pub sqlite: &'static [(&'static str, &'static str)],
    pub postgres: &'static [(&'static str, &'static str)],
}

impl Migrations {
    fn migrator(&self, dialect: Dialect) -> Migrator {
        let list = match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        };
        let migrations = list
            .iter()
            .zip(1i64..)
            .map(|((description, sql), version)| {
                Migration::new(
                    version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
    }
}

/// A pool of connections to the service's own database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

impl Db {
    /// Connects (creating the SQLite file and its folder if needed).
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        install_default_drivers();
        let dialect = Dialect::from_url(url)
            .ok_or_else(|| anyhow::anyhow!("unsupported database URL scheme in {url:?}"))?;
        let (url, max) = match dialect {
            Dialect::Sqlite => (sqlite_url(url)?, 4),
            Dialect::Postgres => (url.to_string(), 8),
        };
        let options = AnyPoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5));
        let options = match dialect {
            Dialect::Sqlite => options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            }),
            Dialect::Postgres => options,
        };
        let pool = options
            .connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open database {}: {e}", redact(&url)))?;
        Ok(Db { pool, dialect })
    }

    /// Runs the service's migrations (PostgreSQL takes an advisory lock, so replicas
    /// starting together do not race).
    pub async fn migrate(&self, migrations: &Migrations) -> anyhow::Result<()> {
        migrations
            .migrator(self.dialect)
            .run(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// True for errors that mean "the database is not reachable right now".
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
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

    #[tokio::test]
    async fn sqlite_file_is_created_and_migrated() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/nested/t.db", dir.path().display());
        let db = Db::connect(&url).await?;
        static M: Migrations = Migrations {
            sqlite: &[("t", "CREATE TABLE t (id TEXT PRIMARY KEY)")],
            postgres: &[("t", "CREATE TABLE t (id TEXT PRIMARY KEY)")],
        };
        db.migrate(&M).await?;
        db.migrate(&M).await?; // idempotent
        sqlx::query("INSERT INTO t (id) VALUES ($1)")
            .bind("a")
            .execute(db.pool())
            .await?;
        db.ping().await?;
        assert!(dir.path().join("nested/t.db").exists());
        Ok(())
    }
}
