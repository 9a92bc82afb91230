//! Test support: an in-process event bus (SQLite in a temporary directory) and the orders
//! service subscribed to it, over real HTTP on 127.0.0.1, with sessions built as the auth
//! service builds them. What any service's tests need is in `switchyard_testkit`.
#![allow(dead_code)]

use std::ops::Deref;
use std::path::Path;

use serde_json::{Value, json};
use switchyard_bus_client::{BusConfig, ConsumerSettings, ServiceSettings};
use switchyard_kit::{Db, Env};
use switchyard_session::SessionConfig;
use switchyard_testkit::{Client, Replicas, bus};

pub use switchyard_testkit::{Answer, Running, eventually, postgres};

/// The key sessions are signed with in these tests.
pub const KEY: &str = "test-key-123-test-key-123-test-key-123";
/// What the orders service consumes.
pub const CONSUMES: [&str; 4] = [
    "ticket:created",
    "ticket:updated",
    "payment:created",
    "payment:expired",
];

/// How to start a [`Stack`].
#[derive(Default)]
pub struct Options {
    /// A PostgreSQL database for the orders service (default: SQLite in the data dir).
    pub database_url: Option<String>,
    /// Replicas of the orders service on that database (default 1); the bus delivers to
    /// the first.
    pub replicas: usize,
    /// Environment variables for `Settings::from_env` besides `JWT_KEY`.
    pub env: Vec<(&'static str, &'static str)>,
}

/// The event bus and the orders service, subscribed to it. Derefs to the [`Client`] of
/// the first replica and the bus: requests, cookies, publishing, the bus's log.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub bus: Running,
    pub orders: Vec<Running>,
    /// The orders service's database, to look at its replica of tickets.
    pub db: Db,
    client: Client,
    extra_buses: Vec<Running>,
}

impl Deref for Stack {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A bus in `dir` that delivers to the orders service at `service_url`.
async fn start_bus(dir: &Path, service_url: &str) -> Running {
    bus::start(
        dir,
        vec![bus::subscriber("orders", service_url, &CONSUMES)],
        Some(switchyard_ticketing_contract::check_payload),
    )
    .await
}

impl Stack {
    pub async fn start_with(options: Options) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let replicas = Replicas::bind(options.replicas).await;
        let bus = start_bus(&dir.path().join("bus"), &replicas.first_url()).await;
        let mut env = vec![("JWT_KEY", KEY)];
        env.extend(options.env.iter().copied());
        let env = Env::from_pairs(env);
        let client = Client::new(replicas.first_url(), bus.url(), KEY);
        let mut database_url = None;
        let orders = replicas
            .start(&client.http, |i, listeners| {
                let common =
                    Replicas::config("orders", dir.path(), i, options.database_url.as_deref());
                database_url.get_or_insert_with(|| common.database_url.clone());
                let service = ServiceSettings {
                    common,
                    bus: BusConfig::http(bus.url()),
                    consumer: Some(ConsumerSettings::new("orders-service").only(CONSUMES)),
                    retention: Default::default(),
                };
                let mut settings =
                    switchyard_orders::Settings::from_env(&env, service).expect("settings");
                settings.session = SessionConfig::for_key(KEY);
                Running::start(listeners, move |l, s| {
                    switchyard_orders::launch(settings, l, s)
                })
            })
            .await;
        bus.wait_ready(&client.http).await;
        let db = Db::connect(&database_url.expect("a database"))
            .await
            .expect("the orders database");
        Stack {
            dir,
            bus,
            orders,
            db,
            client,
            extra_buses: Vec::new(),
        }
    }

    pub async fn start() -> Stack {
        Stack::start_with(Options::default()).await
    }

    pub async fn stop(self) {
        for o in self.orders {
            o.stop().await.expect("orders stopped cleanly");
        }
        for b in self.extra_buses {
            b.stop().await.expect("bus stopped cleanly");
        }
        self.bus.stop().await.expect("bus stopped cleanly");
        self.db.close().await;
    }

    /// Starts another bus delivering to the first replica, as a second path by which
    /// events reach it (events it holds can overtake those of the first bus); returns its
    /// URL.
    pub async fn second_bus(&mut self) -> String {
        let n = self.extra_buses.len();
        let bus = start_bus(
            &self.dir.path().join(format!("bus-extra-{n}")),
            &self.orders[0].url(),
        )
        .await;
        let url = bus.url();
        self.extra_buses.push(bus);
        url
    }

    /// `POST /api/orders` for `ticket_id` as `cookie`'s user.
    pub async fn order(&self, cookie: &str, ticket_id: &str) -> Answer {
        self.post("/api/orders", Some(cookie), &json!({"ticketId": ticket_id}))
            .await
    }

    /// Creates an order that must succeed; returns it.
    pub async fn create_order(&self, cookie: &str, ticket_id: &str) -> Value {
        let a = self.order(cookie, ticket_id).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body
    }

    /// How many events the first replica has handled with `outcome` (`applied`,
    /// `duplicate`, `deferred`, ...), from its metrics.
    pub async fn consumed(&self, outcome: &str) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.orders[0].ops_url()))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let label = format!("outcome=\"{outcome}\"");
        text.lines()
            .filter(|l| l.starts_with("switchyard_events_consumed_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The replica of ticket `id`: `(title, price, version)`.
    pub async fn replica(&self, id: &str) -> Option<(String, f64, i64)> {
        use sqlx::Row;
        let row = sqlx::query("SELECT title, price, version FROM tickets WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.reader())
            .await
            .expect("read the replica")?;
        Some((
            row.try_get(0).expect("title"),
            row.try_get(1).expect("price"),
            row.try_get(2).expect("version"),
        ))
    }

    /// Waits until the replica of ticket `id` is at `version`; returns it.
    pub async fn wait_replica(&self, id: &str, version: i64) -> (String, f64, i64) {
        eventually(
            &format!("ticket {id} replicated at version {version}"),
            || async { self.replica(id).await.filter(|r| r.2 == version) },
        )
        .await
    }

    /// Publishes `ticket:created` for a new ticket and waits for its replica; returns its id.
    pub async fn ticket(&self, title: &str, price: f64) -> String {
        let id = switchyard_ticketing_contract::object_id();
        self.publish(
            None,
            "ticket:created",
            json!({"id": id, "version": 0, "title": title, "price": price, "userId": "seller"}),
        )
        .await;
        self.wait_replica(&id, 0).await;
        id
    }

    /// Waits until `GET /api/orders/:id` (as `cookie`'s user) satisfies `check`.
    pub async fn wait_order(
        &self,
        cookie: &str,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(what, || async {
            let a = self.get(&format!("/api/orders/{id}"), Some(cookie)).await;
            (a.status == 200 && check(&a.body)).then_some(a.body)
        })
        .await
    }
}
