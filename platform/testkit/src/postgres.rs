//! A PostgreSQL database for one test, on the server at `SWITCHYARD_TEST_POSTGRES_URL`
//! (default postgres://postgres@127.0.0.1:5432): skipped with a message when no server
//! answers, a failure under `CI=true` ([`switchyard_kit::testing::skip_or_fail`]).

use std::time::Duration;

/// How long the server has to answer before the test is skipped.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

/// The server the tests' databases are made on: `SWITCHYARD_TEST_POSTGRES_URL`, default
/// postgres://postgres@127.0.0.1:5432.
pub fn server_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh database for this test, named after `purpose` (ASCII letters, digits and `_`),
/// or `None` when no server is usable: skipped with a message, a failure under `CI=true`.
pub async fn database_or_skip(purpose: &str) -> Option<TestDatabase> {
    assert!(
        purpose
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "a database purpose is ASCII letters, digits and _: {purpose:?}"
    );
    let server = server_url();
    let name = format!("sy_{purpose}_{}", switchyard_events::ids::entity_id());
    match tokio::time::timeout(
        CONNECT_DEADLINE,
        switchyard_kit::db::ensure_postgres_database(&server, &name),
    )
    .await
    {
        Ok(Ok(url)) => Some(TestDatabase { url, server, name }),
        Ok(Err(e)) => {
            switchyard_kit::testing::skip_or_fail(&format!(
                "PostgreSQL not usable at {server}: {e}"
            ));
            None
        }
        Err(_) => {
            switchyard_kit::testing::skip_or_fail(&format!("PostgreSQL not reachable at {server}"));
            None
        }
    }
}

/// A test's database: dropped, with its connections, when this is dropped (also when the
/// test panics), on a runtime of its own.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's URL.
    pub url: String,
    server: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let cleaner = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                && let Err(e) =
                    rt.block_on(switchyard_kit::db::drop_postgres_database(&server, &name))
            {
                eprintln!("warning: could not drop database {name}: {e}");
            }
        });
        let _ = cleaner.join();
    }
}
