//! The app's map, built from the registry by the binary: who sends and who receives what.

use serde::Serialize;

/// An app's services and the events between them.
#[derive(Debug, Clone, Serialize)]
pub struct AppMap {
    pub app: String,
    pub services: Vec<MapService>,
}

/// One service on the map.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MapService {
    pub name: String,
    pub about: String,
    /// The event types it publishes.
    pub sends: Vec<String>,
    /// The event types it consumes (`*` for every one).
    pub receives: Vec<String>,
    /// Its subscriber name on the HTTP bus, when it consumes.
    pub subscriber: Option<String>,
    /// Its durable consumer on NATS, when it consumes.
    pub durable: Option<String>,
}

impl AppMap {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&MapService> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The services that consume `event_type`.
    pub fn receivers_of(&self, event_type: &str) -> Vec<&MapService> {
        self.services
            .iter()
            .filter(|s| s.receives.iter().any(|t| t == event_type || t == "*"))
            .collect()
    }
}
