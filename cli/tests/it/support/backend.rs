//! The backends a suite runs against, selected by environment variables:
//!
//! * `Embedded`: SQLite files and the HTTP event bus, everything in the test process;
//! * `Production`: PostgreSQL (`SWITCHYARD_TEST_POSTGRES_URL`, default
//!   postgres://postgres@127.0.0.1:5432) and NATS JetStream (`SWITCHYARD_TEST_NATS_URL`,
//!   default nats://127.0.0.1:4222), servers shared by every test.
//!
//! `SWITCHYARD_TEST_BACKENDS` (default `embedded,production`) lists the backends to run.
//! When a production server is unreachable the production variants print
//! "skipped: ... not reachable" and pass, except under `CI=true`, where they fail.
//!
//! Each production test gets its own [`Resources`]: one database per service named
//! `sy_<random>_<service>`, and its own stream and subject prefix, so tests never see each
//! other's data and can run in parallel. They are dropped at the end (also when the test
//! panics).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use switchyard_bus_client::{BusConfig, NatsBus};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + the HTTP event bus.
    Embedded,
    /// PostgreSQL + NATS JetStream.
    Production,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Production => "production",
        }
    }

    /// Whether tests should run on this backend now. Prints why when they are skipped;
    /// panics under `CI=true` when a production server is missing.
    pub fn enabled(self) -> bool {
        if !selected().contains(&self) {
            eprintln!(
                "skipped: the {} backend is not in SWITCHYARD_TEST_BACKENDS",
                self.name()
            );
            return false;
        }
        match self {
            Backend::Embedded => true,
            Backend::Production => match production_servers() {
                Ok(()) => true,
                Err(why) => switchyard_kit::testing::skip_or_fail(&why),
            },
        }
    }
}

/// The backends listed in `SWITCHYARD_TEST_BACKENDS`.
pub fn selected() -> Vec<Backend> {
    let raw = std::env::var("SWITCHYARD_TEST_BACKENDS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "embedded,production".to_string());
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            "embedded" => Backend::Embedded,
            "production" => Backend::Production,
            other => panic!(
                "SWITCHYARD_TEST_BACKENDS: unknown backend {other:?} (use embedded, production)"
            ),
        })
        .collect()
}

pub fn postgres_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_string())
}

pub fn nats_url() -> String {
    std::env::var("SWITCHYARD_TEST_NATS_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NATS_URL.to_string())
}

/// `host:port` of a URL such as `postgres://user@host:5432/db` (default port given).
pub fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{default_port}")
    }
}

/// Whether something accepts TCP connections at `host:port` within 2 s.
pub fn reachable(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// Checks (once per test binary) that PostgreSQL and NATS answer.
fn production_servers() -> Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let pg = postgres_url();
            if !reachable(&host_port(&pg, 5432)) {
                return Err(format!(
                    "PostgreSQL not reachable at {}",
                    switchyard_kit::db::redact(&pg)
                ));
            }
            let nats = nats_url();
            if !reachable(&host_port(&nats, 4222)) {
                return Err(format!("NATS not reachable at {nats}"));
            }
            Ok(())
        })
        .clone()
}

/// One production test's databases, stream and subject prefix.
pub struct Resources {
    /// NATS users per service (user name = service name) and their passwords, when the
    /// test's server has users.
    pub nats_users: Option<std::collections::HashMap<String, String>>,
    pub id: String,
    pub postgres: String,
    pub nats: String,
    pub stream: String,
    pub prefix: String,
    databases: Mutex<Vec<String>>,
    cleaned: bool,
}

impl Default for Resources {
    fn default() -> Self {
        Self::new()
    }
}

impl Resources {
    pub fn new() -> Self {
        Self::on_nats(nats_url())
    }

    /// Like [`Resources::new`], with the NATS server at `nats` (a test's own).
    pub fn on_nats(nats: String) -> Self {
        let id = switchyard_events::ids::entity_id();
        Resources {
            nats_users: None,
            postgres: postgres_url(),
            nats,
            stream: format!("SY_{id}"),
            prefix: format!("sy.{id}"),
            id,
            databases: Mutex::new(Vec::new()),
            cleaned: false,
        }
    }

    /// The database name of `service` for this test.
    pub fn database_name(&self, service: &str) -> String {
        format!("sy_{}_{}", self.id, service.replace('-', "_"))
    }

    /// Creates (if needed) the database of `service` and returns its URL.
    pub async fn database(&self, service: &str) -> String {
        let name = self.database_name(service);
        let url = switchyard_kit::db::ensure_postgres_database(&self.postgres, &name)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let mut databases = self.databases.lock().expect("lock");
        if !databases.contains(&name) {
            databases.push(name);
        }
        url
    }

    /// The `LIKE` pattern matching this test's databases.
    pub fn database_pattern(&self) -> String {
        format!("sy\\_{}\\_%", self.id)
    }

    /// The bus as the test reaches it (as the operator when the server has users).
    pub fn bus_config(&self) -> BusConfig {
        BusConfig::nats(&self.nats, &self.stream, &self.prefix).with_credentials(self.operator())
    }

    /// The operator's credentials, when the server has users.
    pub fn operator(&self) -> Option<switchyard_bus_client::bus::NatsCredentials> {
        let users = self.nats_users.as_ref()?;
        Some(switchyard_bus_client::bus::NatsCredentials {
            user: switchyard_bus_client::nats_users::OPERATOR.to_string(),
            password: users
                .get(switchyard_bus_client::nats_users::OPERATOR)?
                .clone(),
        })
    }

    /// The bus as `service` reaches it: as its own NATS user when the server has users.
    pub fn bus_config_of(&self, service: &str) -> BusConfig {
        let credentials = self.nats_users.as_ref().and_then(|users| {
            users
                .get(service)
                .map(|password| switchyard_bus_client::bus::NatsCredentials {
                    user: service.to_string(),
                    password: password.clone(),
                })
        });
        BusConfig::nats(&self.nats, &self.stream, &self.prefix).with_credentials(credentials)
    }

    /// Drops the databases and deletes the streams (best effort).
    pub async fn cleanup(&mut self) {
        self.cleaned = true;
        let databases = std::mem::take(&mut *self.databases.lock().expect("lock"));
        cleanup(
            self.postgres.clone(),
            databases,
            self.nats.clone(),
            self.stream.clone(),
            self.prefix.clone(),
            self.operator(),
        )
        .await;
    }
}

async fn cleanup(
    postgres: String,
    databases: Vec<String>,
    nats: String,
    stream: String,
    prefix: String,
    operator: Option<switchyard_bus_client::bus::NatsCredentials>,
) {
    // Together: each drop makes the server checkpoint, concurrent ones share it.
    let postgres = &postgres;
    let drops = databases.iter().map(|name| async move {
        if let Err(e) = switchyard_kit::db::drop_postgres_database(postgres, name).await {
            eprintln!("warning: could not drop database {name}: {e}");
        }
    });
    futures_util::future::join_all(drops).await;
    let deleted = async {
        let bus = NatsBus::connect_as(&nats, &stream, &prefix, operator.as_ref()).await?;
        bus.delete_streams().await
    };
    match tokio::time::timeout(Duration::from_secs(10), deleted).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: could not delete stream {stream}: {e}"),
        Err(_) => eprintln!("warning: could not delete stream {stream}: timed out"),
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // The test did not get to its clean-up (it panicked): clean up on a thread of our
        // own, since the test's runtime may be going away.
        let databases =
            std::mem::take(&mut *self.databases.lock().unwrap_or_else(|p| p.into_inner()));
        let (postgres, nats, stream, prefix, operator) = (
            self.postgres.clone(),
            self.nats.clone(),
            self.stream.clone(),
            self.prefix.clone(),
            self.operator(),
        );
        let cleaner = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(cleanup(postgres, databases, nats, stream, prefix, operator));
            }
        });
        let _ = cleaner.join();
    }
}

/// Declares, for each `async fn name(backend: Backend)` given, one test per backend:
/// `embedded::name` and `production::name`, each skipped (with a message) when its backend
/// is not selected or, outside CI, its servers are missing.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = $crate::support::backend::Backend::Embedded;
                    if backend.enabled() {
                        super::$name(backend).await;
                    }
                }
            )*
        }
        mod production {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = $crate::support::backend::Backend::Production;
                    if backend.enabled() {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}
