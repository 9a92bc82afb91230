//! The ticketing app's auth service (port 3000 in the cluster).
//!
//! * `POST /api/users/signup` `{email, password}` → 201 `{id, email}` and the session
//!   cookie; 400 listing every failing field, or "Email in use";
//! * `POST /api/users/signin` → 200 `{id, email}` and the cookie; 400 "Invalid credentials";
//!   429 after too many failures for one email or one client address;
//! * `POST /api/users/signout` → 200 `{}`, the cookie cleared;
//! * `GET /api/users/currentuser` → 200 `{"currentUser": {id, email, iat}}` or `null`.
//!
//! Users live in the service's own database; passwords are argon2id hashes. Auth publishes
//! and consumes no event, so it needs no bus.

mod password;
mod routes;
mod throttle;

use std::sync::Arc;

use switchyard_kit::server::Listeners;
use switchyard_kit::{
    CommonConfig, ConfigError, Db, Env, HttpStack, Metrics, Migration, Migrations, Shutdown,
};
use switchyard_session::{SessionConfig, Sessions};

pub use password::{PasswordParams, Passwords};
pub use throttle::ThrottleConfig;

/// The service's tables.
pub static MIGRATIONS: Migrations = Migrations(&[
    Migration {
        version: 2,
        description: "users and sign-in failures",
        sqlite: include_str!("../migrations/sqlite.sql"),
        postgres: include_str!("../migrations/postgres.sql"),
    },
    Migration {
        version: 3,
        description: "sign-in and sign-up budgets",
        sqlite: include_str!("../migrations/budgets.sql"),
        postgres: include_str!("../migrations/budgets.sql"),
    },
]);

/// The service's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    pub session: SessionConfig,
    pub password: PasswordParams,
    pub throttle: ThrottleConfig,
}

impl Settings {
    /// Reads the settings beside `common` (`JWT_KEY` is required).
    pub fn from_env(env: &Env, common: CommonConfig) -> Result<Self, ConfigError> {
        Ok(Settings {
            common,
            session: SessionConfig::from_env(env)?,
            password: PasswordParams::from_env(env)?,
            throttle: ThrottleConfig::from_env(env)?,
        })
    }
}

#[derive(Clone)]
pub(crate) struct AuthState {
    pub db: Db,
    pub sessions: Sessions,
    pub passwords: Passwords,
    pub throttle: ThrottleConfig,
}

impl switchyard_session::HasSessions for AuthState {
    fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

/// Runs the service on `listeners` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let common = &settings.common;
    let db = Db::open(common, &[&MIGRATIONS]).await?;
    let metrics = Metrics::new(&common.service);
    let state = AuthState {
        db: db.clone(),
        sessions: Sessions::new(settings.session.clone())?,
        passwords: Passwords::new(settings.password)
            .await?
            .with_metrics(metrics.clone()),
        throttle: settings.throttle,
    };
    tracing::info!(
        memory_kib = settings.password.memory_kib,
        iterations = settings.password.iterations,
        parallelism = settings.password.parallelism,
        "argon2id parameters"
    );
    let stack = HttpStack::new(common, metrics).ready_when(Arc::new(db.clone()));
    let (routes, doc) = routes::router(state).split_for_parts();
    let doc = switchyard_kit::openapi::document(&common.service, doc);
    let result = switchyard_kit::serve(
        listeners,
        stack.wrap(routes),
        stack.ops_router_with(&shutdown, switchyard_kit::openapi::route(&doc)),
        shutdown,
        common.shutdown_grace,
    )
    .await;
    db.close().await;
    result
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "auth",
    migrations: &[&MIGRATIONS],
    run: |start| start.run(launch),
};

impl switchyard_bus_client::StartSettings for Settings {
    fn from_start(start: &switchyard_bus_client::Start) -> Result<Self, ConfigError> {
        Settings::from_env(&start.env, start.common.clone())
    }
}
