//! The ticketing app in this process: each service on its own ports with its own database,
//! and the bus, wired over real networking, on either backend (see [`super::backend`]).
//! Which services a test starts is its choice; they are configured as the app registry
//! declares them (consumer groups, consumed types, the event bus's subscribers).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use switchyard_bus_client::{BusConfig, ConsumerSettings, ServiceSettings};
use switchyard_event_bus::Subscriber;
use switchyard_kit::CommonConfig;
use switchyard_kit::server::Listeners;
use switchyard_registry::{Consumes, TICKETING};
use switchyard_session::{SessionConfig, Sessions};

use super::backend::{Backend, Resources};
use super::{Running, listeners, start};

/// The key the tests sign sessions with (as the original's tests use `asdfasdf`).
pub const JWT_KEY: &str = "asdfasdf-asdfasdf-asdfasdf-asdfasdf";
/// The secret the HTTP bus and the services share in these tests (the blog's run
/// without one, as the course's services do).
pub const BUS_SECRET: &str = "ticketing-tests-bus-secret-0123456789abcdef";

/// The bus's secret for the embedded backend.
pub fn bus_secret() -> switchyard_kit::BusSecret {
    switchyard_kit::BusSecret::new(BUS_SECRET).expect("a valid secret")
}

/// How a [`Ticketing`] is started besides its services.
pub struct Options {
    pub expiration_window: Duration,
    /// How long an event may stay deferred (the bus's on the embedded backend, each
    /// consumer's on NATS).
    pub defer_limit: Duration,
    /// Production resources of the test's own (a NATS server, users); default: the
    /// machine's servers.
    pub resources: Option<Resources>,
    /// Auth's password hashing (default: the cheapest, for speed).
    pub password: switchyard_auth::PasswordParams,
    /// Payments' provider settings (default: the test provider, the defaults).
    pub payments: switchyard_payments::provider::ProviderConfig,
    /// Auth's limits (default: the service's, behind one trusted proxy as under `up`, and
    /// room for every sign-up a test makes from 127.0.0.1).
    pub throttle: switchyard_auth::ThrottleConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            expiration_window: Duration::from_secs(900),
            defer_limit: switchyard_bus_client::consumer_settings::DEFAULT_DEFER_LIMIT,
            resources: None,
            password: switchyard_auth::PasswordParams::FOR_TESTS,
            payments: switchyard_payments::provider::ProviderConfig::test(),
            throttle: switchyard_auth::ThrottleConfig {
                trusted_hops: 1,
                client_attempts: 5,
                signups_per_client: 100_000,
                ..Default::default()
            },
        }
    }
}

pub struct Ticketing {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub resources: Option<Resources>,
    /// Public port of every service started (kept across restarts).
    ports: HashMap<&'static str, u16>,
    running: HashMap<&'static str, Running>,
    databases: HashMap<&'static str, String>,
    /// Settings a test changes before starting a service (environment-style overrides).
    pub expiration_window: Duration,
    pub defer_limit: Duration,
    password: switchyard_auth::PasswordParams,
    throttle: switchyard_auth::ThrottleConfig,
    payments: switchyard_payments::provider::ProviderConfig,
}

fn spec(name: &str) -> &'static switchyard_registry::Service {
    TICKETING
        .service(name)
        .unwrap_or_else(|| panic!("{name} is not a ticketing service"))
}

impl Ticketing {
    /// Starts the bus (embedded backend) and `services`.
    pub async fn start_on(backend: Backend, services: &[&'static str]) -> Ticketing {
        Ticketing::start_with(backend, services, Duration::from_secs(900)).await
    }

    /// Like [`Ticketing::start_on`], with orders' expiration window.
    pub async fn start_with(
        backend: Backend,
        services: &[&'static str],
        expiration_window: Duration,
    ) -> Ticketing {
        Ticketing::start_opts(
            backend,
            services,
            Options {
                expiration_window,
                ..Options::default()
            },
        )
        .await
    }

    /// Starts the bus (embedded backend) and `services`, as `options` say.
    pub async fn start_opts(
        backend: Backend,
        services: &[&'static str],
        options: Options,
    ) -> Ticketing {
        let Options {
            expiration_window,
            defer_limit,
            resources,
            password,
            throttle,
            payments,
        } = options;
        let mut t = Ticketing {
            backend,
            dir: tempfile::tempdir().expect("tempdir"),
            resources: None,
            ports: HashMap::new(),
            running: HashMap::new(),
            databases: HashMap::new(),
            expiration_window,
            defer_limit,
            password,
            throttle,
            payments,
        };
        // Ports first: the bus must know where its subscribers listen.
        let mut bound = Vec::new();
        for name in services {
            let l = listeners(0).await;
            t.ports
                .insert(name, l.public.local_addr().expect("addr").port());
            bound.push((*name, l));
        }
        if backend == Backend::Production {
            let resources = resources.unwrap_or_default();
            for name in services {
                if spec(name).database {
                    t.databases.insert(name, resources.database(name).await);
                }
            }
            t.resources = Some(resources);
        } else {
            let l = listeners(0).await;
            t.ports
                .insert("event-bus", l.public.local_addr().expect("addr").port());
            let bus = t.launch_bus(l);
            t.running.insert("event-bus", bus);
        }
        for (name, l) in bound {
            let running = t.launch(name, l);
            t.running.insert(name, running);
        }
        t.wait_ready().await;
        t
    }

    pub fn url(&self, service: &str) -> String {
        let port = self
            .ports
            .get(service)
            .unwrap_or_else(|| panic!("{service} was not started"));
        format!("http://127.0.0.1:{port}")
    }

    pub fn ops_url(&self, service: &str) -> String {
        self.running
            .get(service)
            .unwrap_or_else(|| panic!("{service} is not running"))
            .ops_url()
    }

    /// The sessions the services accept (to sign a cookie for a user).
    pub fn sessions() -> Sessions {
        Sessions::new(SessionConfig::for_key(JWT_KEY)).expect("keys")
    }

    /// A `Cookie` header value signed in as `id` / `email`.
    pub fn cookie_for(id: &str, email: &str) -> String {
        let s = Ticketing::sessions();
        let (token, _) = s.issue(id, email).expect("token");
        let set = s.set_cookie(&token);
        set.to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_string()
    }

    pub fn bus_config(&self) -> BusConfig {
        match &self.resources {
            Some(r) => r.bus_config(),
            None => BusConfig::http(self.url("event-bus")).with_secret(Some(bus_secret())),
        }
    }

    /// The database URL of `service`.
    pub fn database_url(&self, service: &'static str) -> String {
        self.common(service).database_url
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn common(&self, service: &'static str) -> CommonConfig {
        let mut c = CommonConfig::for_data_dir(service, self.data_dir());
        c.shutdown_grace = Duration::from_secs(5);
        if let Some(url) = self.databases.get(service) {
            c.database_url = url.clone();
        }
        c
    }

    fn service_settings(&self, service: &'static str) -> ServiceSettings {
        let s = spec(service);
        let consumer = s.consumer_group.map(|group| {
            let mut c = ConsumerSettings::new(group);
            c.defer_limit = self.defer_limit;
            match s.consumes.types() {
                Some(types) => c.only(types.iter().copied()),
                None => c,
            }
        });
        let bus = match &self.resources {
            Some(r) => r.bus_config_of(service),
            None => self.bus_config(),
        };
        ServiceSettings {
            common: self.common(service),
            bus,
            consumer,
            retention: Default::default(),
        }
    }

    fn launch_bus(&self, l: Listeners) -> Running {
        let subscribers = TICKETING
            .subscribers()
            .filter(|s| self.ports.contains_key(s.name))
            .map(|s| {
                let sub = Subscriber::new(s.name, &self.url(s.name));
                match s.consumes {
                    Consumes::Only(types) => sub.only(types.iter().copied()),
                    _ => sub,
                }
            })
            .collect();
        let mut settings = switchyard_event_bus::Settings::for_test(&self.data_dir(), subscribers);
        settings.payload_check = Some(TICKETING.check_payload);
        settings.secret = Some(bus_secret());
        settings.defer_limit = self.defer_limit;
        start(l, move |l, s| switchyard_event_bus::launch(settings, l, s))
    }

    /// Starts one instance of `service` on `l`.
    fn launch(&self, service: &'static str, l: Listeners) -> Running {
        let session = SessionConfig::for_key(JWT_KEY);
        match service {
            "auth" => {
                let s = switchyard_auth::Settings {
                    common: self.common(service),
                    session,
                    password: self.password,
                    throttle: self.throttle,
                };
                start(l, move |l, sd| switchyard_auth::launch(s, l, sd))
            }
            "tickets" => {
                let s = switchyard_tickets::Settings {
                    service: self.service_settings(service),
                    session,
                };
                start(l, move |l, sd| switchyard_tickets::launch(s, l, sd))
            }
            "orders" => {
                let s = switchyard_orders::Settings {
                    service: self.service_settings(service),
                    session,
                    expiration_window: self.expiration_window,
                };
                start(l, move |l, sd| switchyard_orders::launch(s, l, sd))
            }
            "expiration" => {
                let s = self.service_settings(service);
                start(l, move |l, sd| switchyard_expiration::launch(s, l, sd))
            }
            "payments" => {
                let s = switchyard_payments::Settings {
                    service: self.service_settings(service),
                    session,
                    provider: self.payments.clone(),
                };
                start(l, move |l, sd| switchyard_payments::launch(s, l, sd))
            }
            other => panic!("the ticketing harness cannot start {other}"),
        }
    }

    /// The whole bus log, oldest first, as JSON (read through the bus client, so it works
    /// on both backends).
    pub async fn events(&self) -> Vec<serde_json::Value> {
        let bus = self.bus_config().connect().await.expect("bus client");
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = bus.page(after, 500).await.expect("bus log page");
            let Some(last) = page.last().and_then(|e| e.seq) else {
                return all;
            };
            all.extend(
                page.into_iter()
                    .map(|e| serde_json::to_value(e).expect("event as JSON")),
            );
            after = last;
        }
    }

    /// Publishes `event` (an envelope as JSON) on the bus, as a producer would.
    pub async fn publish(&self, event: serde_json::Value) {
        self.publish_all(vec![event]).await;
    }

    /// Publishes `events` one after the other on one connection, as fast as the bus takes
    /// them (each with a fresh id unless it has one).
    pub async fn publish_all(&self, events: Vec<serde_json::Value>) {
        let bus = self.bus_config().connect().await.expect("bus client");
        let publisher = bus.publisher();
        for event in events {
            let mut envelope =
                switchyard_events::Envelope::from_value(event).expect("an event envelope");
            if envelope.id.is_empty() {
                envelope.id = switchyard_events::ids::event_id();
            }
            envelope.seq = None;
            publisher
                .publish(
                    &envelope.event_type,
                    &envelope.id,
                    bytes::Bytes::from(envelope.to_bytes()),
                )
                .await
                .expect("published");
        }
    }

    /// Waits until every running service answers `/readyz` with 200.
    pub async fn wait_ready(&self) {
        let client = super::http::Client::default();
        for (name, running) in &self.running {
            let url = format!("{}/readyz", running.ops_url());
            super::eventually(&format!("{name} to be ready"), || async {
                (client.try_get(&url).await?.status == 200).then_some(())
            })
            .await;
        }
    }

    /// Graceful stop of one service.
    pub async fn stop(&mut self, service: &str) {
        if let Some(r) = self.running.remove(service) {
            r.stop().await.expect("service stopped cleanly");
        }
    }

    /// Abrupt stop: the task is dropped mid-flight, as a crash.
    pub async fn kill(&mut self, service: &str) {
        if let Some(r) = self.running.remove(service) {
            r.kill().await;
        }
    }

    /// Starts a stopped service again on its port, with its data.
    pub async fn restart(&mut self, service: &'static str) {
        let port = *self.ports.get(service).expect("port");
        let l = listeners(port).await;
        let running = if service == "event-bus" {
            self.launch_bus(l)
        } else {
            self.launch(service, l)
        };
        self.running.insert(service, running);
    }

    /// Stops everything, then drops the production databases and streams.
    pub async fn shutdown(mut self) {
        let names: Vec<&'static str> = self.running.keys().copied().collect();
        for name in names.iter().filter(|n| **n != "event-bus") {
            self.stop(name).await;
        }
        self.stop("event-bus").await;
        if let Some(r) = self.resources.as_mut() {
            r.cleanup().await;
        }
    }
}
