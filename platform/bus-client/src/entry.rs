//! [`ServiceEntry`]: what the binary needs of an app service's crate, declared once in
//! that crate and registered once in the app registry. `serve`, `migrate` and `up` run a
//! service through it; no name of a service is matched anywhere else.

use std::future::Future;

use futures_util::future::BoxFuture;
use switchyard_kit::server::Listeners;
use switchyard_kit::{CommonConfig, ConfigError, Env, Migrations, Shutdown};

use crate::{ConsumerSettings, ServiceSettings};

/// One app service, as its crate declares it.
pub struct ServiceEntry {
    /// Its name in its app (`tickets`).
    pub name: &'static str,
    /// Its migration sets in the order they apply (the platform's messaging tables first
    /// for a service on the bus); empty when it owns no database.
    pub migrations: &'static [&'static Migrations],
    /// Reads its settings from the environment, binds its listeners and runs it until
    /// shutdown; a missing or malformed setting stops it before anything is opened.
    pub run: fn(Start) -> BoxFuture<'static, anyhow::Result<()>>,
}

impl ServiceEntry {
    /// Whether it owns a database.
    pub const fn has_database(&self) -> bool {
        !self.migrations.is_empty()
    }
}

impl std::fmt::Debug for ServiceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceEntry")
            .field("name", &self.name)
            .field("migrations", &self.migrations.len())
            .finish_non_exhaustive()
    }
}

/// What [`ServiceEntry::run`] starts from.
pub struct Start {
    /// The environment, with the app's bus defaults filled in.
    pub env: Env,
    /// Its common settings, the registry's ports as defaults.
    pub common: CommonConfig,
    /// Its consumer settings from the registry, when it consumes.
    pub consumer: Option<ConsumerSettings>,
    pub shutdown: Shutdown,
}

impl Start {
    /// The settings of a service on the bus.
    pub fn service_settings(&self) -> Result<ServiceSettings, ConfigError> {
        ServiceSettings::from_env(&self.env, self.common.clone(), self.consumer.clone())
    }

    /// Reads the service's settings, binds its listeners and runs `launch` on them until
    /// shutdown: what a [`ServiceEntry::run`] does (`run: |start| start.run(launch)`).
    pub fn run<S, F, Fut>(self, launch: F) -> BoxFuture<'static, anyhow::Result<()>>
    where
        S: StartSettings,
        F: FnOnce(S, Listeners, Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Box::pin(async move {
            let settings = S::from_start(&self)?;
            let listeners = Listeners::bind(&self.common).await?;
            launch(settings, listeners, self.shutdown).await
        })
    }
}

/// The settings a service's `launch` takes, read at its start.
pub trait StartSettings: Sized + Send + 'static {
    /// Reads them from the environment (a missing or malformed variable is named); their
    /// common part is [`Start::common`], whose ports are bound.
    fn from_start(start: &Start) -> Result<Self, ConfigError>;
}

/// A service with nothing of its own to read and no bus (the web clients).
impl StartSettings for CommonConfig {
    fn from_start(start: &Start) -> Result<Self, ConfigError> {
        Ok(start.common.clone())
    }
}

/// A service on the bus with nothing else to read.
impl StartSettings for ServiceSettings {
    fn from_start(start: &Start) -> Result<Self, ConfigError> {
        start.service_settings()
    }
}
