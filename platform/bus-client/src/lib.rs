//! How services talk to the event bus.
//!
//! * [`bus`]: the bus a service is configured with (`EVENT_BUS_URL`) and the publisher
//!   interface behind which the backends sit;
//! * [`http_bus`]: the HTTP event bus client (publish, page through the log, health);
//! * [`nats_bus`]: the NATS JetStream backend (stream, durable consumers, dead letters);
//! * [`nats_users`]: NATS users and permissions for an app's services;
//! * [`outbox`]: events committed in the same transaction as the state change they come
//!   from, then relayed to the bus with retry;
//! * `handoff`: on SQLite, a committed change's outbox rows handed to the relay in memory,
//!   so that it publishes them without reading them back;
//! * [`inbox`]: consumers record each processed event id in the transaction of its effect,
//!   so a redelivered event changes nothing;
//! * [`consumer`]: the `POST /events` endpoint that feeds a service's event handler;
//! * [`consumer_settings`]: a service's consumer group, types and limits;
//! * [`dead_letters`]: a service's dead letters, in its outbox and at the bus: listed, shown,
//!   replayed;
//! * [`retention`]: records of finished work (the inbox, tombstones) deleted after a while;
//! * [`service`]: the service builder every event-driven service starts from.

pub mod bus;
pub mod consumer;
pub mod consumer_settings;
pub mod dead_letters;
pub mod entry;
mod handoff;
pub mod http_bus;
pub mod inbox;
pub mod nats_bus;
mod nats_deferrals;
pub mod nats_users;
pub mod outbox;
pub mod read_cache;
pub mod retention;
pub mod service;

pub use bus::{BusConfig, Publisher};
pub use consumer::{EventHandler, HandleError, Handled};
pub use consumer_settings::ConsumerSettings;
pub use entry::{ServiceEntry, Start, StartSettings};
pub use nats_bus::NatsBus;
pub use outbox::{Change, Outbox};
pub use read_cache::ReadCache;
pub use service::{Service, ServiceSettings, ServiceState};
