//! Test support: the in-process event bus (SQLite in a temporary directory) and the tickets
//! service subscribed to it, over real HTTP on 127.0.0.1, with sessions built as the auth
//! service builds them. What any service's tests need is in `switchyard_testkit`.
#![allow(dead_code)]

use std::ops::Deref;

use serde_json::{Value, json};
use switchyard_bus_client::{BusConfig, ConsumerSettings, ServiceSettings};
use switchyard_session::SessionConfig;
use switchyard_testkit::{Client, Replicas, bus};

pub use switchyard_testkit::{Running, eventually, postgres};

/// The key sessions are signed with in these tests.
pub const KEY: &str = "test-key-123-test-key-123-test-key-123";
/// What the tickets service consumes.
pub const CONSUMES: [&str; 2] = ["order:created", "order:cancelled"];

/// How to start a [`Stack`].
#[derive(Default)]
pub struct Options {
    /// A PostgreSQL database for the tickets service (default: SQLite in the data dir).
    pub database_url: Option<String>,
    /// Replicas of the tickets service on that database (default 1); the bus delivers to
    /// the first.
    pub replicas: usize,
}

/// The event bus and the tickets service, subscribed to it. Derefs to the [`Client`] of
/// the first replica and the bus: requests, cookies, publishing, the bus's log.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub bus: Running,
    pub tickets: Vec<Running>,
    client: Client,
}

impl Deref for Stack {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Stack {
    pub async fn start_with(options: Options) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let replicas = Replicas::bind(options.replicas).await;
        let bus = bus::start(
            &dir.path().join("bus"),
            vec![bus::subscriber("tickets", &replicas.first_url(), &CONSUMES)],
            Some(switchyard_ticketing_contract::check_payload),
        )
        .await;
        let client = Client::new(replicas.first_url(), bus.url(), KEY);
        let tickets = replicas
            .start(&client.http, |i, listeners| {
                let common =
                    Replicas::config("tickets", dir.path(), i, options.database_url.as_deref());
                let settings = switchyard_tickets::Settings {
                    service: ServiceSettings {
                        common,
                        bus: BusConfig::http(bus.url()),
                        consumer: Some(ConsumerSettings::new("tickets-service").only(CONSUMES)),
                        retention: Default::default(),
                    },
                    session: SessionConfig::for_key(KEY),
                };
                Running::start(listeners, move |l, s| {
                    switchyard_tickets::launch(settings, l, s)
                })
            })
            .await;
        bus.wait_ready(&client.http).await;
        Stack {
            dir,
            bus,
            tickets,
            client,
        }
    }

    pub async fn start() -> Stack {
        Stack::start_with(Options::default()).await
    }

    pub async fn stop(self) {
        for t in self.tickets {
            t.stop().await.expect("tickets stopped cleanly");
        }
        self.bus.stop().await.expect("bus stopped cleanly");
    }

    /// Creates a ticket as `cookie`'s user; returns it.
    pub async fn create_ticket(&self, cookie: &str, title: &str, price: f64) -> Value {
        let a = self
            .post(
                "/api/tickets",
                Some(cookie),
                &json!({"title": title, "price": price}),
            )
            .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body
    }

    /// Waits until `GET /api/tickets/:id` satisfies `check`; returns the ticket.
    pub async fn wait_ticket(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(what, || async {
            let a = self.get(&format!("/api/tickets/{id}"), None).await;
            (a.status == 200 && check(&a.body)).then_some(a.body)
        })
        .await
    }
}
