//! Test support: an in-process event bus (SQLite in a temporary directory) and the tickets
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
use switchyard_kit::{CommonConfig, Shutdown};
use switchyard_session::{SessionConfig, Sessions};
use tokio::task::JoinHandle;

/// The key sessions are signed with in these tests.
pub const KEY: &str = "test-key-123";
/// Default deadline for conditions.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// What the tickets service consumes.
pub const CONSUMES: [&str; 2] = ["order:created", "order:cancelled"];

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
    /// A PostgreSQL database for the tickets service (default: SQLite in the data dir).
    pub database_url: Option<String>,
    /// Replicas of the tickets service on that database (default 1); the bus delivers to
    /// the first.
    pub replicas: usize,
}

/// The event bus and the tickets service, subscribed to it.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub bus: Running,
    pub tickets: Vec<Running>,
    pub http: reqwest::Client,
    pub sessions: Sessions,
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
        let mut bus_settings = switchyard_event_bus::Settings::for_test(
            &dir.path().join("bus"),
            vec![Subscriber::new("tickets", &format!("http://{first}")).only(CONSUMES)],
        );
        // The app's contract checks payloads at the door, as in production.
        bus_settings.payload_check = Some(switchyard_ticketing_contract::check_payload);
        let bus = Running::start(bus_listeners, move |l, s| {
            switchyard_event_bus::launch(bus_settings, l, s)
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let mut tickets = Vec::new();
        for (i, listeners) in service_listeners.into_iter().enumerate() {
            let mut common =
                CommonConfig::for_data_dir("tickets", dir.path().join(format!("t{i}")));
            if let Some(url) = &options.database_url {
                common.database_url = url.clone();
            }
            let settings = switchyard_tickets::Settings {
                service: ServiceSettings {
                    common,
                    bus: BusConfig::http(bus_url.clone()),
                    consumer: Some(ConsumerSettings::new("tickets-service").only(CONSUMES)),
                },
                session: SessionConfig::for_key(KEY),
            };
            let running = Running::start(listeners, move |l, s| {
                switchyard_tickets::launch(settings, l, s)
            });
            if i == 0 {
                // The first replica migrates the database before the others start
                // (replicas migrating one PostgreSQL database at the same moment is the
                // platform's concern, not what these tests are about).
                wait_ready(&http, &running).await;
            }
            tickets.push(running);
        }
        for running in tickets.iter().chain([&bus]) {
            wait_ready(&http, running).await;
        }
        Stack {
            dir,
            bus,
            tickets,
            http,
            sessions: Sessions::new(SessionConfig::for_key(KEY)).expect("sessions"),
        }
    }

    pub async fn stop(self) {
        for t in self.tickets {
            t.stop().await.expect("tickets stopped cleanly");
        }
        self.bus.stop().await.expect("bus stopped cleanly");
    }

    /// The first tickets replica's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.tickets[0].url())
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

    pub async fn put(&self, path: &str, cookie: Option<&str>, body: &Value) -> Answer {
        self.send(reqwest::Method::PUT, &self.url(path), cookie, Some(body))
            .await
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

    /// Publishes `{"type", "data"}` (with `id` when given) on the bus.
    pub async fn publish(&self, id: Option<&str>, event_type: &str, data: Value) {
        let mut event = json!({"type": event_type, "data": data});
        if let Some(id) = id {
            event["id"] = json!(id);
        }
        let a = self
            .send(
                reqwest::Method::POST,
                &format!("{}/events", self.bus.url()),
                None,
                Some(&event),
            )
            .await;
        assert_eq!(a.status, 200, "the bus refused {event}: {:?}", a.body);
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

    /// Waits until `GET /api/tickets/:id` satisfies `check`; returns the ticket.
    pub async fn wait_ticket(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait(what, || async {
            let a = self.get(&format!("/api/tickets/{id}"), None).await;
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
