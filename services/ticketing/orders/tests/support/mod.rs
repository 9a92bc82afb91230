//! Test support: an in-process event bus (SQLite in a temporary directory) and the orders
//! service subscribed to it, over real HTTP on 127.0.0.1; sessions built as the auth
//! service builds them; waiting on conditions with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_bus_client::{BusConfig, ConsumerSettings, ServiceSettings};
use switchyard_event_bus::Subscriber;
use switchyard_kit::server::Listeners;
use switchyard_kit::{CommonConfig, Db, Env, Shutdown};
use switchyard_session::{SessionConfig, Sessions};
use tokio::task::JoinHandle;

/// The key sessions are signed with in these tests.
pub const KEY: &str = "test-key-123";
/// Default deadline for conditions.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// What the orders service consumes.
pub const CONSUMES: [&str; 4] = [
    "ticket:created",
    "ticket:updated",
    "expiration:complete",
    "payment:created",
];

/// A service running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn start<F, Fut>(listeners: Listeners, launch: F) -> Running
    where
        F: FnOnce(Listeners, Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        switchyard_kit::telemetry::init_for_tests();
        let addr = listeners.public.local_addr().expect("addr");
        let ops_addr = listeners.ops.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let service = launch(listeners, shutdown.clone());
        let task = tokio::spawn(async move {
            let result = service.await;
            // Shown with the test's output when it fails (a service that stopped at start
            // is otherwise only a readiness timeout).
            if let Err(e) = &result {
                eprintln!("a service stopped with an error: {e:#}");
            }
            result
        });
        Running {
            addr,
            ops_addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.task.await?
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl Answer {
    /// Asserts the contract's error body with `status`, whose first error has `message`
    /// (and `field`, when given).
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str, field: Option<&str>) {
        assert_eq!(self.status, status, "{:?}", self.body);
        self.assert_json_error();
        let first = &self.body["errors"][0];
        assert_eq!(first["message"], message, "{:?}", self.body);
        match field {
            Some(field) => assert_eq!(first["field"], field, "{:?}", self.body),
            None => assert!(first.get("field").is_none(), "{:?}", self.body),
        }
    }

    /// Asserts a 4xx with the contract's JSON error body, whatever the message.
    #[track_caller]
    pub fn assert_json_error(&self) {
        assert!(
            (400..500).contains(&self.status),
            "status {}: {:?}",
            self.status,
            self.body
        );
        assert!(
            self.content_type.starts_with("application/json"),
            "content type {:?}",
            self.content_type
        );
        let errors = self.body["errors"].as_array().expect("errors array");
        assert!(!errors.is_empty(), "{:?}", self.body);
        for e in errors {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{:?}",
                self.body
            );
        }
    }

    /// The fields of the errors, in order.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

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

/// The event bus and the orders service, subscribed to it.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub bus: Running,
    pub orders: Vec<Running>,
    pub http: reqwest::Client,
    pub sessions: Sessions,
    /// The orders service's database, to look at its replica of tickets.
    pub db: Db,
    extra_buses: Vec<Running>,
}

/// A bus in `dir` that delivers to the orders service at `service`.
fn start_bus(dir: &std::path::Path, listeners: Listeners, service: SocketAddr) -> Running {
    let mut settings = switchyard_event_bus::Settings::for_test(
        dir,
        vec![Subscriber::new("orders", &format!("http://{service}")).only(CONSUMES)],
    );
    // The app's contract checks payloads at the door, as in production.
    settings.payload_check = Some(switchyard_ticketing_contract::check_payload);
    Running::start(listeners, move |l, s| {
        switchyard_event_bus::launch(settings, l, s)
    })
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let replicas = options.replicas.max(1);
        let mut service_listeners = Vec::new();
        for _ in 0..replicas {
            service_listeners.push(Listeners::local().await.expect("listeners"));
        }
        let first = service_listeners[0].public.local_addr().expect("addr");
        let bus_listeners = Listeners::local().await.expect("listeners");
        let bus_url = format!(
            "http://{}",
            bus_listeners.public.local_addr().expect("addr")
        );
        let bus = start_bus(&dir.path().join("bus"), bus_listeners, first);
        let mut env = vec![("JWT_KEY", KEY)];
        env.extend(options.env.iter().copied());
        let env = Env::from_pairs(env);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let mut orders = Vec::new();
        let mut database_url = None;
        for (i, listeners) in service_listeners.into_iter().enumerate() {
            let mut common = CommonConfig::for_data_dir("orders", dir.path().join(format!("o{i}")));
            if let Some(url) = &options.database_url {
                common.database_url = url.clone();
            }
            database_url.get_or_insert_with(|| common.database_url.clone());
            let service = ServiceSettings {
                common,
                bus: BusConfig::http(bus_url.clone()),
                consumer: Some(ConsumerSettings::new("orders-service").only(CONSUMES)),
            };
            let mut settings =
                switchyard_orders::Settings::from_env(&env, service).expect("settings");
            settings.session = SessionConfig::for_key(KEY);
            let running = Running::start(listeners, move |l, s| {
                switchyard_orders::launch(settings, l, s)
            });
            if i == 0 {
                // The first replica migrates the database before the others start
                // (replicas migrating one PostgreSQL database at the same moment is the
                // platform's concern, not what these tests are about).
                wait_ready(&http, &running).await;
            }
            orders.push(running);
        }
        for running in orders.iter().chain([&bus]) {
            wait_ready(&http, running).await;
        }
        let db = Db::connect(&database_url.expect("a database"))
            .await
            .expect("the orders database");
        Stack {
            dir,
            bus,
            orders,
            http,
            sessions: Sessions::new(SessionConfig::for_key(KEY)).expect("sessions"),
            db,
            extra_buses: Vec::new(),
        }
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
        let listeners = Listeners::local().await.expect("listeners");
        let url = format!("http://{}", listeners.public.local_addr().expect("addr"));
        let n = self.extra_buses.len();
        let bus = start_bus(
            &self.dir.path().join(format!("bus-extra-{n}")),
            listeners,
            self.orders[0].addr,
        );
        self.extra_buses.push(bus);
        url
    }

    /// The first orders replica's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.orders[0].url())
    }

    /// The `Cookie` header of a session for user `id`, built as auth's `Set-Cookie` is.
    pub fn cookie(&self, id: &str) -> String {
        let (token, _) = self
            .sessions
            .issue(id, &format!("{id}@test.com"))
            .expect("token");
        let set = self.sessions.set_cookie(&token);
        set.to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("name=value")
            .to_string()
    }

    /// Sends a request to `url` with an optional cookie and an optional JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        cookie: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.http.request(method, url);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.expect("request")).await
    }

    /// Sends raw bytes with a content type (for malformed bodies).
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        url: &str,
        cookie: Option<&str>,
        content_type: Option<&str>,
        body: &'static [u8],
    ) -> Answer {
        let mut request = self.http.request(method, url).body(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        read(request.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        self.send(reqwest::Method::GET, &self.url(path), cookie, None)
            .await
    }

    pub async fn post(&self, path: &str, cookie: Option<&str>, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, &self.url(path), cookie, Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, cookie: Option<&str>) -> Answer {
        self.send(reqwest::Method::DELETE, &self.url(path), cookie, None)
            .await
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

    /// Publishes `{"type", "data"}` (with `id` when given) on the bus at `bus_url`.
    pub async fn publish_to(&self, bus_url: &str, id: Option<&str>, event_type: &str, data: Value) {
        let mut event = json!({"type": event_type, "data": data});
        if let Some(id) = id {
            event["id"] = json!(id);
        }
        let a = self
            .send(
                reqwest::Method::POST,
                &format!("{bus_url}/events"),
                None,
                Some(&event),
            )
            .await;
        assert_eq!(a.status, 200, "the bus refused {event}: {:?}", a.body);
    }

    /// Publishes on the main bus.
    pub async fn publish(&self, id: Option<&str>, event_type: &str, data: Value) {
        self.publish_to(&self.bus.url(), id, event_type, data).await
    }

    /// Posts `event` straight to the first replica's `POST /events`, as the bus delivers
    /// (and redelivers) it.
    pub async fn deliver(&self, event: Value) -> Answer {
        self.send(
            reqwest::Method::POST,
            &self.url("/events"),
            None,
            Some(&event),
        )
        .await
    }

    /// How many events the first replica has handled with `outcome` (`applied`,
    /// `duplicate`, `deferred`, ...), from its metrics.
    pub async fn consumed(&self, outcome: &str) -> u64 {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.orders[0].ops_addr))
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
        wait(
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

    /// The bus's log, oldest first.
    pub async fn log(&self) -> Vec<Value> {
        let a = self
            .send(
                reqwest::Method::GET,
                &format!("{}/events", self.bus.url()),
                None,
                None,
            )
            .await;
        assert_eq!(a.status, 200);
        a.body.as_array().cloned().unwrap_or_default()
    }

    /// The events of `event_type` in the bus's log.
    pub async fn events(&self, event_type: &str) -> Vec<Value> {
        self.log()
            .await
            .into_iter()
            .filter(|e| e["type"] == event_type)
            .collect()
    }

    /// Waits until the bus's log holds `count` events of `event_type`; returns them.
    pub async fn wait_events(&self, event_type: &str, count: usize) -> Vec<Value> {
        wait(
            &format!("{count} {event_type} events on the bus"),
            || async {
                let events = self.events(event_type).await;
                (events.len() >= count).then_some(events)
            },
        )
        .await
    }

    /// Waits until `GET /api/orders/:id` (as `cookie`'s user) satisfies `check`.
    pub async fn wait_order(
        &self,
        cookie: &str,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait(what, || async {
            let a = self.get(&format!("/api/orders/{id}"), Some(cookie)).await;
            (a.status == 200 && check(&a.body)).then_some(a.body)
        })
        .await
    }
}

/// Waits until the `/readyz` of `running` answers 200.
async fn wait_ready(http: &reqwest::Client, running: &Running) {
    let url = format!("http://{}/readyz", running.ops_addr);
    wait("the service to be ready", || async {
        let r = http.get(&url).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

async fn read(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "status {status}: not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// Waits until `check` gives `Some`, failing the test after [`DEADLINE`].
pub async fn wait<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match switchyard_kit::wait::until(what, DEADLINE, check).await {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// A fresh PostgreSQL database for this test (dropped by [`drop_postgres`]), or `None`
/// (skipped with a message; a failure under `CI=true`) when no server answers at
/// `SWITCHYARD_TEST_POSTGRES_URL` (default postgres://postgres@127.0.0.1:5432).
pub async fn postgres_or_skip(name: &str) -> Option<(String, String)> {
    let server = std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let database = format!(
        "{name}_{}",
        &switchyard_ticketing_contract::object_id()[..12]
    );
    match tokio::time::timeout(
        Duration::from_secs(5),
        switchyard_kit::db::ensure_postgres_database(&server, &database),
    )
    .await
    {
        Ok(Ok(url)) => Some((server, url)),
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

/// Drops the database named by `url` on `server`.
pub async fn drop_postgres(server: &str, url: &str) {
    let database = url
        .rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .expect("database name");
    switchyard_kit::db::drop_postgres_database(server, database)
        .await
        .expect("drop database");
}
