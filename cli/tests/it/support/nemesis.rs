//! Disturbing the shared PostgreSQL server: dropping connections. (NATS is disturbed on a
//! server of the test's own: [`super::nats_server`].)

use sqlx::Connection;

use super::backend;

/// Terminates every connection to the databases matching `pattern` (a `LIKE` pattern);
/// returns how many were terminated.
pub async fn drop_postgres_connections(pattern: &str) -> i64 {
    let url = switchyard_kit::db::with_database(&backend::postgres_url(), "postgres");
    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
        return 0;
    };
    let terminated: Result<(i64,), _> = sqlx::query_as(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname LIKE $1 AND pid <> pg_backend_pid()",
    )
    .bind(pattern)
    .fetch_one(&mut conn)
    .await;
    let _ = conn.close().await;
    terminated.map(|t| t.0).unwrap_or(0)
}
