//! [`ServiceEntry`]: what the binary needs of an app service's crate, declared once in
//! that crate and registered once in the app registry. `serve`, `migrate` and `up` run a
//! service through it; no name of a service is matched anywhere else.

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

    /// Binds the service's two listeners (its port and its ops port).
    pub async fn bind(common: &CommonConfig) -> anyhow::Result<Listeners> {
        Listeners::bind(common).await
    }
}
