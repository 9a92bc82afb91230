//! [`OnBus`]: one service of an app over real HTTP on 127.0.0.1, with the event bus in
//! this process delivering what it consumes: what a service's own suite starts.

use switchyard_bus_client::{BusConfig, ConsumerSettings, ServiceSettings};
use switchyard_event_bus::PayloadCheck;
use switchyard_kit::server::Listeners;

use crate::{Client, Replicas, Running, bus};

/// The session key of a [`Client`] for services that check no session.
const NO_SESSIONS: &str = "no-sessions-no-sessions-no-sessions-";

/// The event bus (SQLite in a temporary directory, checking payloads with the app's
/// contract) and one service, subscribed to the types it consumes.
pub struct OnBus {
    _dir: tempfile::TempDir,
    pub bus: Running,
    pub service: Running,
    /// Requests to the service, publishing to the bus, reading its log.
    pub client: Client,
}

impl OnBus {
    /// Starts the bus and the service `name` (its database `database_url` when given,
    /// else SQLite), subscribed to `consumes` when it consumes: `launch` starts it from
    /// its bus settings on its listeners.
    pub async fn start(
        name: &str,
        consumes: Option<&[&str]>,
        payload_check: Option<PayloadCheck>,
        database_url: Option<&str>,
        launch: impl FnOnce(ServiceSettings, Listeners) -> Running,
    ) -> OnBus {
        let dir = tempfile::tempdir().expect("tempdir");
        let listeners = Listeners::local().await.expect("listeners");
        let url = format!("http://{}", listeners.public.local_addr().expect("addr"));
        let subscribers = consumes
            .map(|types| vec![bus::subscriber(name, &url, types)])
            .unwrap_or_default();
        let bus = bus::start(&dir.path().join("bus"), subscribers, payload_check).await;
        let client = Client::new(url, bus.url(), NO_SESSIONS);
        let settings = ServiceSettings {
            common: Replicas::config(name, dir.path(), 0, database_url),
            bus: BusConfig::http(bus.url()),
            consumer: consumes.map(|types| ConsumerSettings::new(name).only(types.iter().copied())),
            retention: Default::default(),
        };
        let service = launch(settings, listeners);
        service.wait_ready(&client.http).await;
        bus.wait_ready(&client.http).await;
        OnBus {
            _dir: dir,
            bus,
            service,
            client,
        }
    }

    pub async fn stop(self) {
        self.service
            .stop()
            .await
            .expect("the service stopped cleanly");
        self.bus.stop().await.expect("the bus stopped cleanly");
    }
}
