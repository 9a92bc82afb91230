//! The whole blog in this process: the four services, each on its own port with its own
//! database, and the bus, wired over real networking.
//!
//! * [`Backend::Embedded`]: SQLite files in a temporary folder and the HTTP event bus
//!   (started here too);
//! * [`Backend::Production`]: one PostgreSQL database per service and a NATS JetStream stream
//!   and subject prefix of this test's own (see [`Resources`]); no HTTP event bus.

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchyard_bus_client::bus::Bus;
use switchyard_bus_client::{BusConfig, ConsumerSettings, ServiceSettings};
use switchyard_event_bus::Subscriber;
use switchyard_kit::CommonConfig;
use switchyard_kit::server::Listeners;
use switchyard_registry::BLOG;
use tokio::sync::OnceCell;

use super::backend::{Backend, Resources};
use super::{Running, listeners, start};

/// The blog's services that own a database and talk to the bus (from the registry's
/// order).
pub const SERVICES: [&str; 4] = ["posts", "comments", "query", "moderation"];

pub struct Blog {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub bus: Option<Running>,
    pub posts: Option<Running>,
    pub comments: Option<Running>,
    pub query: Option<Running>,
    pub moderation: Option<Running>,
    /// Extra instances started with [`Blog::add_replica`]: (service, instance).
    pub replicas: Vec<(String, Running)>,
    /// The production backend's databases, stream and prefix.
    pub resources: Option<Resources>,
    /// Database URL per service (production).
    databases: Vec<(String, String)>,
    /// A bus client to read the log with.
    reader: OnceCell<Bus>,
}

#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The HTTP event bus (0 with the production backend).
    pub bus: u16,
    pub posts: u16,
    pub comments: u16,
    pub query: u16,
    pub moderation: u16,
}

fn port_of(l: &tokio::net::TcpListener) -> u16 {
    l.local_addr().expect("addr").port()
}

impl Blog {
    /// Starts everything on the embedded backend.
    pub async fn start() -> Blog {
        Blog::start_on(Backend::Embedded).await
    }

    /// Starts everything on `backend`.
    pub async fn start_on(backend: Backend) -> Blog {
        Blog::start_with(backend, None).await
    }

    /// Starts everything on the production backend with `resources` (a NATS server of the
    /// test's own).
    pub async fn start_on_resources(resources: Resources) -> Blog {
        Blog::start_with(Backend::Production, Some(resources)).await
    }

    async fn start_with(backend: Backend, resources: Option<Resources>) -> Blog {
        let dir = tempfile::tempdir().expect("tempdir");
        let lb = match backend {
            Backend::Embedded => Some(listeners(0).await),
            Backend::Production => None,
        };
        let (lp, lc, lq, lm) = (
            listeners(0).await,
            listeners(0).await,
            listeners(0).await,
            listeners(0).await,
        );
        let ports = Ports {
            bus: lb.as_ref().map_or(0, |l: &Listeners| port_of(&l.public)),
            posts: port_of(&lp.public),
            comments: port_of(&lc.public),
            query: port_of(&lq.public),
            moderation: port_of(&lm.public),
        };
        let mut blog = Blog {
            backend,
            dir,
            ports,
            bus: None,
            posts: None,
            comments: None,
            query: None,
            moderation: None,
            replicas: Vec::new(),
            resources: None,
            databases: Vec::new(),
            reader: OnceCell::new(),
        };
        if backend == Backend::Production {
            let resources = resources.unwrap_or_default();
            for service in SERVICES {
                let url = resources.database(service).await;
                blog.databases.push((service.to_string(), url));
            }
            blog.resources = Some(resources);
        }
        if let Some(lb) = lb {
            blog.bus = Some(blog.launch_bus(lb));
        }
        blog.posts = Some(blog.launch("posts", lp));
        blog.comments = Some(blog.launch("comments", lc));
        blog.query = Some(blog.launch("query", lq));
        blog.moderation = Some(blog.launch("moderation", lm));
        blog
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The services answering HTTP: the four, plus the event bus on the embedded backend.
    pub fn http_services(&self) -> Vec<&'static str> {
        let mut services = vec!["posts", "comments", "query", "moderation"];
        if self.backend == Backend::Embedded {
            services.push("event-bus");
        }
        services
    }

    pub fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.port(service))
    }

    /// Where the running instance of `service` answers `/healthz`, `/readyz`, `/metrics`.
    pub fn ops_url(&self, service: &str) -> String {
        let running = match service {
            "event-bus" => &self.bus,
            "posts" => &self.posts,
            "comments" => &self.comments,
            "query" => &self.query,
            "moderation" => &self.moderation,
            other => panic!("unknown service {other}"),
        };
        running
            .as_ref()
            .unwrap_or_else(|| panic!("{service} is not running"))
            .ops_url()
    }

    pub fn port(&self, service: &str) -> u16 {
        match service {
            "event-bus" => {
                assert!(
                    self.backend == Backend::Embedded,
                    "there is no HTTP event bus on the {} backend",
                    self.backend.name()
                );
                self.ports.bus
            }
            "posts" => self.ports.posts,
            "comments" => self.ports.comments,
            "query" => self.ports.query,
            "moderation" => self.ports.moderation,
            other => panic!("unknown service {other}"),
        }
    }

    /// The bus the services are configured with.
    pub fn bus_config(&self) -> BusConfig {
        match &self.resources {
            Some(r) => r.bus_config(),
            None => BusConfig::http(self.url("event-bus")),
        }
    }

    /// The bus settings as environment variables (for the `switchyard` binary).
    pub fn bus_env(&self) -> Vec<(&'static str, String)> {
        let bus = self.bus_config();
        let mut env = vec![("EVENT_BUS_URL", bus.url.clone())];
        if bus.is_nats() {
            env.push(("BUS_STREAM", bus.stream.clone()));
            env.push(("BUS_SUBJECT_PREFIX", bus.subject_prefix.clone()));
        }
        env
    }

    /// Hands `event` to `service`'s consumer once, whatever its id: on the embedded backend
    /// by posting it to the service's `POST /events` (as the bus does), with NATS by
    /// publishing it without a message id (so a repeat is stored again and reaches the
    /// consumer's inbox) and waiting until the service has handled one more event.
    pub async fn deliver(&self, service: &str, event: &Value) {
        let client = super::http::Client::default();
        match &self.resources {
            None => {
                let a = client
                    .post_json(&format!("{}/events", self.url(service)), event)
                    .await;
                assert_eq!(
                    (a.status, a.json()),
                    (200, serde_json::json!({})),
                    "{service}"
                );
            }
            Some(resources) => {
                let metrics = format!("{}/metrics", self.ops_url(service));
                let handled = |text: String| -> f64 {
                    text.lines()
                        .filter(|l| l.starts_with("switchyard_events_consumed_total{"))
                        .filter(|l| !l.contains("\"failed\"") && !l.contains("\"deferred\""))
                        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                        .sum()
                };
                let before =
                    handled(String::from_utf8_lossy(&client.get(&metrics).await.body).into_owned());
                let bus = switchyard_bus_client::NatsBus::connect(
                    &resources.nats,
                    &resources.stream,
                    &resources.prefix,
                )
                .await
                .expect("NATS");
                let event_type = event["type"].as_str().expect("type");
                bus.publish_raw(
                    bus.subject_for(event_type),
                    None,
                    bytes::Bytes::from(serde_json::to_vec(event).expect("json")),
                    &[],
                )
                .await
                .expect("published");
                super::eventually(&format!("{service} to handle the event"), || async {
                    let now = handled(
                        String::from_utf8_lossy(&client.try_get(&metrics).await?.body).into_owned(),
                    );
                    (now > before).then_some(())
                })
                .await;
            }
        }
    }

    /// The database URL of `service`.
    pub fn database_url(&self, service: &str) -> String {
        match self.databases.iter().find(|(s, _)| s == service) {
            Some((_, url)) => url.clone(),
            None => switchyard_kit::config::default_sqlite_url(&self.data_dir(), service),
        }
    }

    /// The whole bus log, oldest first, as JSON (read through [`Bus::page`], so it works on
    /// both backends).
    pub async fn events(&self) -> Vec<Value> {
        let bus = self
            .reader
            .get_or_init(|| async { self.bus_config().connect().await.expect("bus client") })
            .await;
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

    /// Waits until every service (replicas included) answers `/readyz` with 200.
    pub async fn wait_ready(&self) {
        let client = super::http::Client::default();
        let mut urls: Vec<String> = self
            .http_services()
            .iter()
            .map(|s| self.ops_url(s))
            .collect();
        urls.extend(self.replicas.iter().map(|(_, r)| r.ops_url()));
        for url in urls {
            super::eventually(&format!("{url}/readyz to answer 200"), || async {
                let a = client.try_get(&format!("{url}/readyz")).await?;
                (a.status == 200).then_some(())
            })
            .await;
        }
    }

    fn common(&self, dir: &Path, service: &str) -> CommonConfig {
        let mut c = CommonConfig::for_data_dir(service, dir.join("data"));
        c.shutdown_grace = std::time::Duration::from_secs(5);
        c.database_url = self.database_url(service);
        c
    }

    fn launch_bus(&self, l: Listeners) -> Running {
        // The subscribers as the registry declares them (their types and limits), at the
        // ports this test gave the services.
        let subscribers = BLOG
            .subscribers()
            .map(|s| {
                let mut sub = Subscriber::new(s.name, &self.url(s.name));
                if let Some(types) = s.consumes.types() {
                    sub = sub.only(types.iter().copied());
                }
                sub
            })
            .collect();
        let mut settings = switchyard_event_bus::Settings::for_test(&self.data_dir(), subscribers);
        settings.payload_check = Some(BLOG.check_payload);
        start(l, move |l, s| switchyard_event_bus::launch(settings, l, s))
    }

    /// The settings the registry gives `service`, on this test's database and bus.
    fn settings(&self, service: &str) -> ServiceSettings {
        let spec = BLOG
            .service(service)
            .unwrap_or_else(|| panic!("unknown service {service}"));
        let consumer = spec.consumer_group.map(|group| {
            let c = ConsumerSettings::new(group);
            match spec.consumes.types() {
                Some(types) => c.only(types.iter().copied()),
                None => c,
            }
        });
        ServiceSettings {
            common: self.common(self.dir.path(), service),
            bus: self.bus_config(),
            consumer,
            retention: Default::default(),
        }
    }

    /// Starts one instance of `service` on `l` (the same database and bus as the others).
    pub fn launch(&self, service: &str, l: Listeners) -> Running {
        let s = self.settings(service);
        match service {
            "posts" => start(l, move |l, sd| switchyard_posts::launch(s, l, sd)),
            "comments" => start(l, move |l, sd| switchyard_comments::launch(s, l, sd)),
            "query" => start(l, move |l, sd| switchyard_query::launch(s, l, sd)),
            "moderation" => {
                let s = switchyard_moderation::Settings {
                    service: s,
                    rule: switchyard_moderation::Rule::default(),
                };
                start(l, move |l, sd| switchyard_moderation::launch(s, l, sd))
            }
            other => panic!("unknown service {other}"),
        }
    }

    /// Starts one more instance of `service` on a new port, sharing its database and its
    /// consumer group (production backend); returns its base URL.
    pub async fn add_replica(&mut self, service: &str) -> String {
        assert!(
            self.backend == Backend::Production,
            "replicas share a PostgreSQL database: production backend only"
        );
        let running = self.launch(service, listeners(0).await);
        let url = running.url();
        self.replicas.push((service.to_string(), running));
        url
    }

    /// The ops URLs of `service`: the first instance's, then its replicas'.
    pub fn all_ops_urls(&self, service: &str) -> Vec<String> {
        let mut urls = vec![self.ops_url(service)];
        urls.extend(
            self.replicas
                .iter()
                .filter(|(s, _)| s == service)
                .map(|(_, r)| r.ops_url()),
        );
        urls
    }

    fn slot(&mut self, service: &str) -> &mut Option<Running> {
        match service {
            "event-bus" => &mut self.bus,
            "posts" => &mut self.posts,
            "comments" => &mut self.comments,
            "query" => &mut self.query,
            "moderation" => &mut self.moderation,
            other => panic!("unknown service {other}"),
        }
    }

    /// Graceful stop of one service.
    pub async fn stop(&mut self, service: &str) {
        if let Some(r) = self.slot(service).take() {
            r.stop().await.expect("service stopped cleanly");
        }
    }

    /// Abrupt stop of one service (its task is dropped mid-flight).
    pub async fn kill(&mut self, service: &str) {
        if let Some(r) = self.slot(service).take() {
            r.kill().await;
        }
    }

    /// Starts a stopped service again on its port, with its data.
    pub async fn restart(&mut self, service: &str) {
        let l = listeners(self.port(service)).await;
        let running = if service == "event-bus" {
            self.launch_bus(l)
        } else {
            self.launch(service, l)
        };
        *self.slot(service) = Some(running);
    }

    /// Stops everything gracefully, then drops the production databases and streams.
    pub async fn shutdown(mut self) {
        for (service, replica) in std::mem::take(&mut self.replicas) {
            replica
                .stop()
                .await
                .unwrap_or_else(|e| panic!("{service} replica stopped cleanly: {e}"));
        }
        for s in ["posts", "comments", "query", "moderation", "event-bus"] {
            self.stop(s).await;
        }
        if let Some(resources) = self.resources.as_mut() {
            resources.cleanup().await;
        }
    }
}
