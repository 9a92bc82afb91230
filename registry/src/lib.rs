//! The app registry: each app declares itself once, here.
//!
//! An [`App`] lists its services and, for each, what every other part of Switchyard needs to
//! know about it: the port it listens on in the cluster and under `switchyard up`, its
//! Kubernetes names, whether it has a database, which event types it consumes and under
//! which consumer group, and how its consumer behaves. The app adds its Ingress, the host
//! the local gateway routes, its JetStream stream and subject prefix.
//!
//! `switchyard serve` and `migrate` resolve service names here; `switchyard up <app>` builds
//! its processes from it; the event bus's default subscribers, the gateway's backends, the
//! Kubernetes cross-reference check, the image build list and the test harness all read it,
//! so nothing about an app is written out twice. Adding an app is an entry in [`APPS`] plus
//! its crates.

pub mod asyncapi;
mod blog;
mod ticketing;

use std::time::Duration;

use switchyard_events::{Envelope, EventDoc, PayloadError};

pub use blog::BLOG;
pub use ticketing::TICKETING;

/// The variable of the secret an app's HTTP bus and the services that use it share; in the
/// cluster, the Secret `event-bus-secret`.
pub const BUS_SECRET: &str = "EVENT_BUS_SECRET";

/// The most processes of one service `switchyard up` runs (`--replicas`).
pub const MAX_REPLICAS: u8 = 4;

/// Replica k of a service under `switchyard up` listens on its local ports plus
/// `REPLICA_STRIDE × (k − 1)`: every app's local ports, with all their replicas', are
/// distinct (tested below).
pub const REPLICA_STRIDE: u16 = 20;

/// The local port of replica `k` (from 1) of a service whose first replica listens on
/// `port`, if it is a port.
pub fn replica_port(port: u16, k: u8) -> Option<u16> {
    port.checked_add(REPLICA_STRIDE.checked_mul(u16::from(k.checked_sub(1)?))?)
}

/// Every app, in the order `switchyard --help` lists them.
pub static APPS: &[&App] = &[&BLOG, &TICKETING];

/// An app: services that talk through events, behind one Ingress.
#[derive(Debug)]
pub struct App {
    /// `blog`: the name `switchyard up` takes.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Its processes, in start order within each wave.
    pub services: &'static [Service],
    /// Its Ingress.
    pub ingress: IngressSpec,
    /// The JetStream stream of its events (`BUS_STREAM`).
    pub stream: &'static str,
    /// The subject prefix of its events (`BUS_SUBJECT_PREFIX`).
    pub subject_prefix: &'static str,
    /// How long its bus keeps an event, in seconds (`EVENTS_MAX_AGE_SECONDS`; 0: for ever).
    /// Shorter than the services' `RETENTION_DAYS` (30), so no event the bus can still
    /// deliver finds its inbox record gone.
    pub events_max_age_seconds: u64,
    /// The checks of its event payloads: the event bus rejects a known type with a
    /// malformed payload at the door instead of letting every subscriber reject it later.
    pub check_payload: fn(&Envelope) -> Result<(), PayloadError>,
    /// Every event of its contract, with its payload schema (its AsyncAPI document's
    /// messages; see [`asyncapi`]).
    pub events: fn() -> Vec<EventDoc>,
    /// Requests and the Kubernetes Service that must answer them through the Ingress.
    pub routes: &'static [(&'static str, &'static str, u16)],
    /// Secrets of the app's services that check sessions (`JWT_KEY`; see
    /// [`Service::sessions`]): `switchyard up` uses the one in the environment, or
    /// generates one once and keeps it in the data directory (it does the same for
    /// [`BUS_SECRET`], which the services that use the bus get). No other service gets them.
    pub secrets: &'static [&'static str],
    /// Settings `switchyard up` gives every service on one machine where `up`'s own
    /// environment does not set them (plain HTTP: the session cookie cannot be `secure`
    /// there).
    pub local_env: &'static [(&'static str, &'static str)],
}

/// What kind of process a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The HTTP event bus (platform; one per app in the embedded setup).
    EventBus,
    /// A service of the app (its own crate in `services/<app>/`).
    App,
    /// The local gateway (platform), applying the app's Ingress on one machine.
    Gateway,
    /// The console (platform): the app's map, live event log, journeys, traces and
    /// consumers; the OTLP receiver of the services' spans under `up`.
    Console,
}

/// Which events a service consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumes {
    /// None: the bus does not deliver to it.
    Nothing,
    /// Every event (the bus's contract for a subscriber that lists no types).
    Everything,
    /// Only these types.
    Only(&'static [&'static str]),
}

impl Consumes {
    /// The types, or `None` for everything (and for nothing).
    pub fn types(&self) -> Option<&'static [&'static str]> {
        match self {
            Consumes::Only(types) => Some(types),
            _ => None,
        }
    }

    /// Whether an event of `event_type` is for this service.
    pub fn accepts(&self, event_type: &str) -> bool {
        match self {
            Consumes::Nothing => false,
            Consumes::Everything => true,
            Consumes::Only(types) => types.contains(&event_type),
        }
    }
}

/// How a service's consumer behaves (each can be overridden by the environment:
/// `CONSUMER_ACK_WAIT_MS`, `CONSUMER_MAX_DELIVER`, `CONSUMER_CONCURRENCY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerDefaults {
    /// How long a delivered event may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
    /// Failed deliveries of one event before it is dead-lettered (deferrals do not count).
    pub max_deliver: u32,
    /// Events handled at the same time by one replica (NATS; the HTTP bus delivers one at a
    /// time per subscriber, in log order).
    pub concurrency: usize,
}

impl ConsumerDefaults {
    /// The platform's defaults.
    pub const STANDARD: ConsumerDefaults = ConsumerDefaults {
        ack_wait: Duration::from_secs(10),
        max_deliver: 20,
        concurrency: 4,
    };
}

/// A Kubernetes Service beside the main one (the blog's NodePort `posts-srv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraK8sService {
    pub name: &'static str,
    /// `NodePort`, `ClusterIP`, ...
    pub kind: &'static str,
}

/// One process of an app.
#[derive(Debug)]
pub struct Service {
    /// `posts`; unique within its app.
    pub name: &'static str,
    pub kind: Kind,
    /// One line for `--help`.
    pub about: &'static str,
    /// The port it listens on in the cluster (container port = Service port).
    pub contract_port: u16,
    /// The port it listens on under `switchyard up` (and `serve` without `PORT`).
    pub local_port: u16,
    /// The port of its operational endpoints (`/healthz`, `/readyz`, `/metrics`) under
    /// `up` and `serve` without `OPS_PORT`; never routed by the Ingress.
    pub local_ops_port: u16,
    /// Kubernetes Deployment, if it is deployed.
    pub deployment: Option<&'static str>,
    /// Kubernetes ClusterIP Service, if it has one.
    pub k8s_service: Option<&'static str>,
    /// Other Kubernetes Services selecting its pods.
    pub extra_k8s_services: &'static [ExtraK8sService],
    /// Whether it owns a database.
    pub database: bool,
    /// The event types it publishes (on NATS it may publish these subjects only).
    pub produces: &'static [&'static str],
    /// Whether it issues or checks sessions: only then does it get the app's secrets
    /// (`JWT_KEY`).
    pub sessions: bool,
    /// Which events it consumes: for a service of an app, the `CONSUMES` its crate declares
    /// by event type next to its handler.
    pub consumes: Consumes,
    /// Its consumer group (one per service, shared by its replicas), when it consumes.
    pub consumer_group: Option<&'static str>,
    /// Its consumer's defaults.
    pub consumer: ConsumerDefaults,
    /// Start wave under `up`: every process of a wave is ready before the next starts.
    pub wave: u8,
    /// How the binary runs it: for a service of an app, the entry its crate declares
    /// (its name, migrations and start); `None` for the platform's event bus and gateway,
    /// which are built from the app's registry entry.
    pub entry: Option<&'static switchyard_bus_client::ServiceEntry>,
}

/// The app's Ingress, as shipped in `infra/`.
#[derive(Debug)]
pub struct IngressSpec {
    /// Path of the manifest from the repository's root.
    pub file: &'static str,
    /// Its text (compiled in: the local gateway routes by it).
    pub yaml: &'static str,
    /// `metadata.name`.
    pub name: &'static str,
    /// The host whose rules apply.
    pub host: &'static str,
    /// `spec.ingressClassName`.
    pub class: &'static str,
    /// The paths in order: (path, pathType, Service, port).
    pub paths: &'static [(&'static str, &'static str, &'static str, u16)],
}

impl Service {
    /// This service run through `entry`: its name and whether it has a database are the
    /// entry's.
    pub const fn run_by(self, entry: &'static switchyard_bus_client::ServiceEntry) -> Service {
        Service {
            name: entry.name,
            database: entry.has_database(),
            entry: Some(entry),
            ..self
        }
    }

    /// Whether it publishes or consumes events: it then holds the app's bus secret
    /// (`EVENT_BUS_SECRET`) or NATS user. The event bus itself holds the secret too.
    pub fn uses_the_bus(&self) -> bool {
        self.kind == Kind::EventBus
            || (self.kind == Kind::App
                && (!self.produces.is_empty() || self.consumes != Consumes::Nothing))
    }
}

impl App {
    /// The service named `name` in this app.
    pub fn service(&'static self, name: &str) -> Option<&'static Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The services of one kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Service> {
        self.services.iter().filter(move |s| s.kind == kind)
    }

    /// The services that are deployed to Kubernetes (they have a Deployment).
    pub fn deployed(&self) -> impl Iterator<Item = &Service> {
        self.services.iter().filter(|s| s.deployment.is_some())
    }

    /// The app's services that publish or consume events (not the bus itself), and its
    /// console, which reads them: each has its NATS user.
    pub fn bus_users(&self) -> impl Iterator<Item = &Service> {
        self.services
            .iter()
            .filter(|s| (s.kind == Kind::App && s.uses_the_bus()) || s.kind == Kind::Console)
    }

    /// The services the HTTP event bus delivers to.
    pub fn subscribers(&self) -> impl Iterator<Item = &Service> {
        self.services
            .iter()
            .filter(|s| s.kind == Kind::App && s.consumes != Consumes::Nothing)
    }
}

/// The app named `name`.
pub fn app(name: &str) -> Option<&'static App> {
    APPS.iter().copied().find(|a| a.name == name)
}

/// The names of every app.
pub fn app_names() -> Vec<&'static str> {
    APPS.iter().map(|a| a.name).collect()
}

/// A service and the app it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    pub app: &'static App,
    pub service: &'static Service,
}

impl Resolved {
    /// `blog/posts`.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.app.name, self.service.name)
    }
}

/// Why a service name does not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    Unknown {
        name: String,
        known: Vec<String>,
    },
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::Unknown { name, known } => write!(
                f,
                "unknown service {name:?}; the services are: {}",
                known.join(", ")
            ),
            ResolveError::Ambiguous { name, candidates } => write!(
                f,
                "service name {name:?} is in more than one app: say which, one of {}",
                candidates.join(", ")
            ),
        }
    }
}

impl std::error::Error for ResolveError {}

/// Resolves `app/service`, or a bare `service` that exactly one app has.
pub fn resolve(name: &str) -> Result<Resolved, ResolveError> {
    let name = name.trim();
    let matches: Vec<Resolved> = match name.split_once('/') {
        Some((app_name, service)) => app(app_name)
            .and_then(|app| {
                app.services
                    .iter()
                    .find(|s| s.name == service)
                    .map(|service| Resolved { app, service })
            })
            .into_iter()
            .collect(),
        None => APPS
            .iter()
            .flat_map(|app| {
                app.services
                    .iter()
                    .filter(|s| s.name == name)
                    .map(move |service| Resolved { app, service })
            })
            .collect(),
    };
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(ResolveError::Unknown {
            name: name.to_string(),
            known: display_names(),
        }),
        many => Err(ResolveError::Ambiguous {
            name: name.to_string(),
            candidates: many.iter().map(Resolved::qualified).collect(),
        }),
    }
}

/// Every service as `serve` accepts it: bare when its name is unique, `app/name` otherwise.
pub fn display_names() -> Vec<String> {
    all().map(|r| display_name(&r)).collect()
}

/// The name `--help` shows for `r`: bare when unique across apps, qualified otherwise.
pub fn display_name(r: &Resolved) -> String {
    let shared = all().filter(|o| o.service.name == r.service.name).count() > 1;
    if shared {
        r.qualified()
    } else {
        r.service.name.to_string()
    }
}

/// Every service of every app.
pub fn all() -> impl Iterator<Item = Resolved> {
    APPS.iter().flat_map(|app| {
        app.services
            .iter()
            .map(move |service| Resolved { app, service })
    })
}

/// The `--help` text listing the services by app.
pub fn help_text() -> String {
    let mut out = String::new();
    for app in APPS {
        out.push_str(&format!(
            "{} ({}; switchyard up {}):\n",
            app.name, app.about, app.name
        ));
        for service in app.services {
            let r = Resolved { app, service };
            out.push_str(&format!(
                "  {:<22} {} (port {})\n",
                display_name(&r),
                service.about,
                service.local_port
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_bare_and_qualified() {
        let r = resolve("posts").expect("posts");
        assert_eq!(r.app.name, "blog");
        assert_eq!(r.qualified(), "blog/posts");
        assert_eq!(resolve("blog/query").expect("query").service.name, "query");
        assert!(matches!(resolve("nope"), Err(ResolveError::Unknown { .. })));
        assert!(matches!(
            resolve("other/posts"),
            Err(ResolveError::Unknown { .. })
        ));
    }

    #[test]
    fn a_shared_name_must_be_qualified() {
        // Every app has its own event bus and gateway process; when two apps share a
        // name, the bare name is refused and --help shows the qualified ones.
        for r in all() {
            let sharing = all().filter(|o| o.service.name == r.service.name).count();
            let resolved = resolve(r.service.name);
            if sharing > 1 {
                assert!(matches!(resolved, Err(ResolveError::Ambiguous { .. })));
                assert_eq!(display_name(&r), r.qualified());
            } else {
                assert!(resolved.is_ok());
            }
            assert_eq!(
                resolve(&r.qualified()).expect("qualified").service.name,
                r.service.name
            );
        }
    }

    #[test]
    fn every_app_is_consistent() {
        for app in APPS {
            let mut names: Vec<_> = app.services.iter().map(|s| s.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "{}: duplicate service names", app.name);
            let mut local: Vec<u16> = app
                .services
                .iter()
                .flat_map(|s| [s.local_port, s.local_ops_port])
                .collect();
            local.sort_unstable();
            let before = local.len();
            local.dedup();
            assert_eq!(before, local.len(), "{}: two local ports clash", app.name);
            for s in app.services {
                assert_eq!(
                    s.consumer_group.is_some(),
                    s.consumes != Consumes::Nothing,
                    "{}/{}: a consumer needs a group, and only a consumer",
                    app.name,
                    s.name
                );
                assert!(
                    s.k8s_service.is_none() || s.deployment.is_some(),
                    "{}/{}: a Service without a Deployment",
                    app.name,
                    s.name
                );
                // Every service of an app runs through the entry its crate declares;
                // the platform's own are built from the app.
                assert_eq!(
                    s.entry.is_some(),
                    s.kind == Kind::App,
                    "{}/{}: an app service needs its crate's entry, and only one",
                    app.name,
                    s.name
                );
                if let Some(entry) = s.entry {
                    assert_eq!((entry.name, entry.has_database()), (s.name, s.database));
                }
            }
            for (_, _, service, port) in app.ingress.paths {
                assert!(
                    app.services
                        .iter()
                        .any(|s| s.k8s_service == Some(service) && s.contract_port == *port),
                    "{}: Ingress backend {service}:{port} is not a service of the app",
                    app.name
                );
            }
        }
    }

    #[test]
    fn local_ports_of_different_apps_do_not_clash() {
        let mut ports: Vec<u16> = all()
            .flat_map(|r| [r.service.local_port, r.service.local_ops_port])
            .collect();
        ports.sort_unstable();
        let before = ports.len();
        ports.dedup();
        assert_eq!(before, ports.len(), "two apps share a local port");
    }

    #[test]
    fn no_two_replicas_of_any_apps_share_a_local_port() {
        let mut ports: Vec<u16> = all()
            .flat_map(|r| {
                let replicas = if r.service.kind == Kind::App {
                    MAX_REPLICAS
                } else {
                    1
                };
                (1..=replicas).flat_map(move |k| {
                    [r.service.local_port, r.service.local_ops_port]
                        .map(|p| replica_port(p, k).expect("a port"))
                })
            })
            .collect();
        ports.sort_unstable();
        let before = ports.len();
        ports.dedup();
        assert_eq!(before, ports.len(), "two replicas share a local port");
        assert_eq!(replica_port(4000, 1), Some(4000));
        assert_eq!(replica_port(4000, 3), Some(4040));
        assert_eq!(replica_port(65_530, 2), None);
        assert_eq!(replica_port(4000, 0), None);
    }

    #[test]
    fn help_lists_every_service_by_app() {
        let help = help_text();
        for r in all() {
            assert!(help.contains(&display_name(&r)), "{help}");
        }
        assert!(help.contains("blog ("), "{help}");
    }

    #[test]
    fn every_event_has_one_producer_and_every_consumed_type_a_producer() {
        for app in APPS {
            let producers = |t: &str| {
                app.services
                    .iter()
                    .filter(|s| s.produces.contains(&t))
                    .count()
            };
            for s in app.services {
                for t in s.produces {
                    assert_eq!(
                        producers(t),
                        1,
                        "{}: {t} has more than one producer",
                        app.name
                    );
                    assert!(
                        (app.check_payload)(&Envelope::new(*t, serde_json::json!({}))).is_err(),
                        "{}: {t} is not a type of the app's contract",
                        app.name
                    );
                }
                if let Consumes::Only(types) = s.consumes {
                    for t in types {
                        assert_eq!(
                            producers(t),
                            1,
                            "{}/{}: consumes {t}, which no service of the app produces",
                            app.name,
                            s.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn consumes_accepts_its_types() {
        assert!(Consumes::Everything.accepts("X"));
        assert!(!Consumes::Nothing.accepts("X"));
        assert!(Consumes::Only(&["A"]).accepts("A"));
        assert!(!Consumes::Only(&["A"]).accepts("B"));
    }
}
