//! The Kubernetes part of every app's wire contract, as the app registry declares it
//! ([`switchyard_registry::APPS`]): object names, labels, container names, images, ports,
//! the extra Services (the blog's NodePort), the Ingress, the event bus's subscribers, the
//! operational port, the Secrets the services read, and the connections the NetworkPolicies
//! must open (and no other).
//!
//! Every app has the same two overlays ([`Overlay`]): `dev`, the embedded setup (SQLite, the
//! HTTP event bus), and `prod` (PostgreSQL, NATS JetStream, no HTTP event bus).

use serde_json::Value;
use switchyard_registry::{APPS, App, Consumes, Kind, Service};

use crate::ingress::{Backend, BackendPort, Router, USE_REGEX_ANNOTATION};
use crate::manifest::{self, Manifests, string_map};
use crate::netpol::{self, Path, Peer};

/// The container port (named `ops`) of every service's `/healthz`, `/readyz` and
/// `/metrics` in the cluster: one port for all, never targeted by a Service.
pub const OPS_PORT: u16 = 9090;

/// The namespace of the ingress controller that the prod NetworkPolicies admit to the
/// Ingress backends (ingress-nginx's Helm chart, minikube's addon and kind's manifests).
pub const INGRESS_CONTROLLER_NAMESPACE: &str = "ingress-nginx";

/// The namespace whose pods (Prometheus) may scrape the ops ports in prod.
pub const MONITORING_NAMESPACE: &str = "monitoring";

/// The NATS Service of the prod overlays, and its client port.
pub const NATS_SERVICE: (&str, u16) = ("nats", 4222);
/// The NATS cluster's routes: each server of the StatefulSet to the others, by the
/// headless Service's DNS names.
pub const NATS_ROUTES: (&str, u16) = ("nats-headless", 6222);

/// The PostgreSQL Service of the prod overlays, and its port.
pub const POSTGRES_SERVICE: (&str, u16) = ("postgres", 5432);

/// The Secret holding every service's `DATABASE_URL` in prod (key = the service's name).
pub const DATABASE_SECRET: &str = "switchyard-database";

/// An overlay of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Overlay {
    /// SQLite and the HTTP event bus, one replica each.
    Dev,
    /// PostgreSQL and NATS JetStream, replicas, NetworkPolicies.
    Prod,
}

impl Overlay {
    /// Both, in the order of [`crate::render::OVERLAYS`].
    pub const ALL: [Overlay; 2] = [Overlay::Dev, Overlay::Prod];

    /// `dev`, `prod`: the directory under `infra/k8s/<app>/overlays/`.
    pub fn name(self) -> &'static str {
        match self {
            Overlay::Dev => "dev",
            Overlay::Prod => "prod",
        }
    }

    /// Whether the services talk through the HTTP event bus (else NATS).
    pub fn http_bus(self) -> bool {
        self == Overlay::Dev
    }
}

/// One app's contract.
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    /// The app, from the registry.
    pub app: &'static App,
}

/// Every app's contract, in the registry's order.
pub fn contracts() -> Vec<Contract> {
    APPS.iter().map(|app| Contract { app }).collect()
}

/// One deployed service of an overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContract {
    /// Label `app`, container name, the service part of `SWITCHYARD_SERVICE`.
    pub name: &'static str,
    /// Event bus or app service.
    pub kind: Kind,
    /// Container port (named `http`) = Service port = targetPort.
    pub port: u16,
    /// Deployment name.
    pub deployment: &'static str,
    /// Its ClusterIP Service in this overlay, if it has one.
    pub service: Option<String>,
    /// Image repository (without tag).
    pub image: String,
    /// Whether it owns a database.
    pub database: bool,
    /// Whether it consumes events (and so talks to the bus).
    pub uses_bus: bool,
}

/// The Secret that holds `var` (`JWT_KEY` -> `jwt-secret`): the original's naming.
/// The variable of the HTTP bus's secret, and its Secret.
pub const BUS_SECRET_VAR: &str = switchyard_registry::BUS_SECRET;
pub const BUS_SECRET_NAME: &str = "event-bus-secret";
/// The Secret of the NATS users' passwords.
pub const NATS_USERS_SECRET: &str = "nats-users";

pub fn secret_name(var: &str) -> String {
    let first = var.split('_').next().unwrap_or(var);
    format!("{}-secret", first.to_ascii_lowercase())
}

impl Contract {
    /// The app's name.
    pub fn name(&self) -> &'static str {
        self.app.name
    }

    /// The image of a service: `switchyard/<service>` for the blog (its images came first),
    /// `switchyard/<app>-<service>` for every other app, so that no two apps' images clash
    /// (both have a client and an event bus).
    pub fn image(&self, service: &str) -> String {
        if self.app.name == "blog" {
            format!("switchyard/{service}")
        } else {
            format!("switchyard/{}-{service}", self.app.name)
        }
    }

    /// The skaffold profile that deploys `overlay`: the blog's are `dev` and `prod` (the
    /// default config is the blog's dev), every other app's `<app>-<overlay>`.
    pub fn skaffold_profile(&self, overlay: Overlay) -> String {
        if self.app.name == "blog" {
            overlay.name().to_owned()
        } else {
            format!("{}-{}", self.app.name, overlay.name())
        }
    }

    /// Whether `s` is deployed in `overlay` (prod has no HTTP event bus).
    pub fn deploys(&self, overlay: Overlay, s: &Service) -> bool {
        s.deployment.is_some() && !(overlay == Overlay::Prod && s.kind == Kind::EventBus)
    }

    /// Whether `s` is one of the services the event bus delivers to.
    fn is_subscriber(&self, s: &Service) -> bool {
        s.kind == Kind::App && s.consumes != Consumes::Nothing
    }

    /// The ClusterIP Service of `s` in `overlay`: the registry's; in an overlay with the
    /// HTTP event bus, a subscriber without one gets `<name>-srv` (the bus must reach it:
    /// ticketing's expiration, which has no Service in the original).
    pub fn cluster_service(&self, overlay: Overlay, s: &Service) -> Option<String> {
        match s.k8s_service {
            Some(name) => Some(name.to_owned()),
            None if overlay.http_bus() && self.is_subscriber(s) => Some(format!("{}-srv", s.name)),
            None => None,
        }
    }

    fn contract_of(&self, overlay: Overlay, s: &'static Service) -> Option<ServiceContract> {
        Some(ServiceContract {
            name: s.name,
            kind: s.kind,
            port: s.contract_port,
            deployment: s.deployment?,
            service: self.cluster_service(overlay, s),
            image: self.image(s.name),
            database: s.database,
            uses_bus: self.is_subscriber(s),
        })
    }

    /// The services deployed in `overlay`.
    pub fn services(&self, overlay: Overlay) -> Vec<ServiceContract> {
        self.app
            .services
            .iter()
            .filter(|s| self.deploys(overlay, s))
            .filter_map(|s| self.contract_of(overlay, s))
            .collect()
    }

    /// The deployed service `name` of `overlay`.
    pub fn service(&self, overlay: Overlay, name: &str) -> Option<ServiceContract> {
        self.services(overlay).into_iter().find(|s| s.name == name)
    }

    /// The app services (not the event bus) deployed in `overlay`.
    pub fn app_services(&self, overlay: Overlay) -> Vec<ServiceContract> {
        self.services(overlay)
            .into_iter()
            .filter(|s| s.kind == Kind::App)
            .collect()
    }

    /// Whether `name` (as `switchyard serve` takes it) resolves, in the registry, to
    /// `service` of this app.
    pub fn names_service(&self, name: &str, service: &str) -> bool {
        switchyard_registry::resolve(name)
            .is_ok_and(|r| r.app.name == self.app.name && r.service.name == service)
    }

    /// The event bus's `SUBSCRIBERS` in the cluster: every consuming service by name, at its
    /// ClusterIP Service in the dev overlay, with its types (the event bus reads the same
    /// syntax).
    pub fn expected_subscribers(&self) -> Vec<String> {
        self.app
            .subscribers()
            .filter_map(|s| {
                let host = self.cluster_service(Overlay::Dev, s)?;
                let mut spec = format!("{}=http://{host}:{}", s.name, s.contract_port);
                if let Consumes::Only(types) = s.consumes {
                    spec.push_str(&format!(";types={}", types.join("|")));
                }
                Some(spec)
            })
            .collect()
    }

    /// Checks the event bus's `SUBSCRIBERS` against the registry.
    pub fn check_subscribers(&self, m: &Manifests) -> Vec<String> {
        let Some(bus) = self.app.of_kind(Kind::EventBus).next() else {
            return Vec::new();
        };
        let Some(deployment) = bus.deployment else {
            return Vec::new();
        };
        let Some(w) = m.workload("Deployment", deployment) else {
            return vec![format!("Deployment {deployment} is missing")];
        };
        let Some(c) = w
            .app_containers()
            .into_iter()
            .find(|c| c.name() == bus.name)
        else {
            return vec![format!(
                "Deployment {deployment}: no container {}",
                bus.name
            )];
        };
        let env = m.env(&c);
        let actual: Vec<String> = env
            .vars
            .get("SUBSCRIBERS")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        let expected = self.expected_subscribers();
        if actual == expected {
            Vec::new()
        } else {
            vec![format!(
                "Deployment {deployment}: SUBSCRIBERS is {actual:?}, the registry says {expected:?}"
            )]
        }
    }

    /// Checks the operational endpoints of every deployed service: a container port named
    /// `ops` ([`OPS_PORT`]), `OPS_PORT` set to it, the probes on it, the scrape annotations
    /// naming it, and no Service routing to it (so no Ingress can make it public).
    pub fn check_ops(&self, m: &Manifests, overlay: Overlay) -> Vec<String> {
        let mut problems = Vec::new();
        for svc in self.services(overlay) {
            let Some(w) = m.workload("Deployment", svc.deployment) else {
                continue;
            };
            let Some(c) = w
                .app_containers()
                .into_iter()
                .find(|c| c.name() == svc.name)
            else {
                continue;
            };
            let at = format!("Deployment {} container {}", svc.deployment, svc.name);
            if !c
                .ports()
                .iter()
                .any(|(name, p)| *name == Some("ops") && *p == u64::from(OPS_PORT))
            {
                problems.push(format!("{at}: no container port ops = {OPS_PORT}"));
            }
            if m.env(&c).vars.get("OPS_PORT") != Some(&OPS_PORT.to_string()) {
                problems.push(format!("{at}: OPS_PORT is not {OPS_PORT}"));
            }
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                let port = &c.spec[probe]["httpGet"]["port"];
                if !c.spec[probe].is_null() && c.resolve_port(port) != Some(u64::from(OPS_PORT)) {
                    problems.push(format!("{at}: {probe} is not on the ops port"));
                }
            }
            let annotations = string_map(&w.object["spec"]["template"]["metadata"]["annotations"]);
            for (key, want) in [
                ("prometheus.io/scrape", "true".to_string()),
                ("prometheus.io/port", OPS_PORT.to_string()),
                ("prometheus.io/path", "/metrics".to_string()),
            ] {
                if annotations.get(key) != Some(&want) {
                    problems.push(format!("{at}: pod annotation {key} is not {want:?}"));
                }
            }
            for service in m.of_kind("Service") {
                if string_map(&service["spec"]["selector"])
                    .get("app")
                    .map(String::as_str)
                    != Some(svc.name)
                {
                    continue;
                }
                for port in service["spec"]["ports"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    let target = if port["targetPort"].is_null() {
                        &port["port"]
                    } else {
                        &port["targetPort"]
                    };
                    if c.resolve_port(target) == Some(u64::from(OPS_PORT)) {
                        problems.push(format!(
                            "Service {} routes to {}'s ops port",
                            manifest::name(service),
                            svc.name
                        ));
                    }
                }
            }
        }
        problems
    }

    /// Checks the Deployment and the ClusterIP Service (if it has one) of a service.
    pub fn check_service(&self, m: &Manifests, svc: &ServiceContract) -> Vec<String> {
        let mut problems = Vec::new();
        let app_labels = |v: &Value| string_map(v).get("app").cloned();
        let name = svc.name;
        match m.workload("Deployment", svc.deployment) {
            None => problems.push(format!("Deployment {} is missing", svc.deployment)),
            Some(w) => {
                let d = w.object;
                if app_labels(&d["metadata"]["labels"]).as_deref() != Some(name) {
                    problems.push(format!(
                        "Deployment {}: label app is not {name:?}",
                        svc.deployment
                    ));
                }
                let selector = string_map(&d["spec"]["selector"]["matchLabels"]);
                if selector.get("app").map(String::as_str) != Some(name) {
                    problems.push(format!(
                        "Deployment {}: selector app is not {name:?}",
                        svc.deployment
                    ));
                }
                if w.pod_labels.get("app").map(String::as_str) != Some(name) {
                    problems.push(format!(
                        "Deployment {}: pod label app is not {name:?}",
                        svc.deployment
                    ));
                }
                match w.app_containers().into_iter().find(|c| c.name() == name) {
                    None => problems.push(format!(
                        "Deployment {}: no container named {name:?}",
                        svc.deployment
                    )),
                    Some(c) => {
                        if !c
                            .ports()
                            .iter()
                            .any(|(n, p)| *n == Some("http") && *p == u64::from(svc.port))
                        {
                            problems.push(format!(
                                "Deployment {}: container {name} has no port http = {}",
                                svc.deployment, svc.port
                            ));
                        }
                        let image = manifest::image_repository(c.image());
                        if image != svc.image {
                            problems.push(format!(
                                "Deployment {}: container {name} runs image {image}, not {}",
                                svc.deployment, svc.image
                            ));
                        }
                        let env = m.env(&c);
                        if let Some(port) = env.vars.get("PORT")
                            && port != &svc.port.to_string()
                        {
                            problems.push(format!(
                                "Deployment {}: PORT={port}, not {}",
                                svc.deployment, svc.port
                            ));
                        }
                        match env.vars.get("SWITCHYARD_SERVICE") {
                            Some(s) if self.names_service(s, name) => {}
                            other => problems.push(format!(
                                "Deployment {}: SWITCHYARD_SERVICE={other:?} is not {}/{name} in the registry",
                                svc.deployment, self.app.name
                            )),
                        }
                    }
                }
            }
        }
        if let Some(service) = &svc.service {
            problems.extend(check_port_service(m, service, name, svc.port, "ClusterIP"));
        }
        problems
    }

    /// Checks the extra Services the registry declares (the blog's NodePort `posts-srv`),
    /// and that no other Service is exposed outside the cluster (NodePort, LoadBalancer).
    pub fn check_extra_services(&self, m: &Manifests) -> Vec<String> {
        let mut problems: Vec<String> = self
            .app
            .services
            .iter()
            .flat_map(|s| {
                s.extra_k8s_services.iter().flat_map(move |extra| {
                    check_port_service(m, extra.name, s.name, s.contract_port, extra.kind)
                })
            })
            .collect();
        for service in m.of_kind("Service") {
            let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if kind != "NodePort" && kind != "LoadBalancer" {
                continue;
            }
            let name = manifest::name(service);
            let declared = self
                .app
                .services
                .iter()
                .flat_map(|s| s.extra_k8s_services)
                .any(|e| e.name == name && e.kind == kind);
            if !declared {
                problems.push(format!(
                    "Service {name} is a {kind}: only the Ingress may expose {} (and the registry's extra Services)",
                    self.app.name
                ));
            }
        }
        problems
    }

    /// Checks that `overlay` deploys none of the objects it must not: the Deployment and
    /// Service of a service it does not run (prod: the event bus), and a dev-only Service
    /// (`expiration-srv`) outside dev.
    pub fn check_absent(&self, m: &Manifests, overlay: Overlay) -> Vec<String> {
        let mut problems = Vec::new();
        for s in self.app.services {
            let Some(deployment) = s.deployment else {
                continue;
            };
            let mut services: Vec<String> = s.k8s_service.map(str::to_owned).into_iter().collect();
            services.push(format!("{}-srv", s.name));
            // the extra Services (posts-srv) are the registry's, in every overlay
            services.retain(|n| !s.extra_k8s_services.iter().any(|e| e.name == n));
            if !self.deploys(overlay, s) {
                if m.get("Deployment", deployment).is_some() {
                    problems.push(format!(
                        "Deployment {deployment} should not be deployed in {}",
                        overlay.name()
                    ));
                }
            } else if let Some(own) = self.cluster_service(overlay, s) {
                services.retain(|n| *n != own);
            }
            for name in services {
                if m.get("Service", &name).is_some() {
                    problems.push(format!(
                        "Service {name} should not be deployed in {}",
                        overlay.name()
                    ));
                }
            }
        }
        problems
    }

    /// Checks the Ingress object: name, class, annotation, host, paths in order with
    /// their pathTypes and backends.
    pub fn check_ingress(&self, ingress: &Value) -> Vec<String> {
        let spec = &self.app.ingress;
        let mut problems = Vec::new();
        let name = manifest::name(ingress);
        if manifest::kind(ingress) != "Ingress" || name != spec.name {
            problems.push(format!(
                "expected Ingress {}, got {}",
                spec.name,
                manifest::id(ingress)
            ));
        }
        if ingress["apiVersion"].as_str() != Some("networking.k8s.io/v1") {
            problems.push(format!(
                "Ingress {name}: apiVersion is not networking.k8s.io/v1"
            ));
        }
        if ingress["spec"]["ingressClassName"].as_str() != Some(spec.class) {
            problems.push(format!(
                "Ingress {name}: ingressClassName is not {}",
                spec.class
            ));
        }
        if ingress["metadata"]["annotations"][USE_REGEX_ANNOTATION].as_str() != Some("true") {
            problems.push(format!(
                "Ingress {name}: annotation {USE_REGEX_ANNOTATION} is not \"true\""
            ));
        }
        let rules = ingress["spec"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(rule) = rules.iter().find(|r| r["host"].as_str() == Some(spec.host)) else {
            problems.push(format!("Ingress {name}: no rule for host {}", spec.host));
            return problems;
        };
        let paths = rule["http"]["paths"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let actual: Vec<(String, String, String)> = paths
            .iter()
            .map(|p| {
                let backend = Backend::from_value(&p["backend"])
                    .map_or_else(|e| e.to_string(), |b| b.to_string());
                (
                    p["path"].as_str().unwrap_or("").to_owned(),
                    p["pathType"].as_str().unwrap_or("").to_owned(),
                    backend,
                )
            })
            .collect();
        let expected: Vec<(String, String, String)> = spec
            .paths
            .iter()
            .map(|(path, path_type, service, port)| {
                let backend = Backend {
                    service: (*service).to_owned(),
                    port: BackendPort::Number(u64::from(*port)),
                };
                (
                    (*path).to_owned(),
                    (*path_type).to_owned(),
                    backend.to_string(),
                )
            })
            .collect();
        if actual != expected {
            problems.push(format!(
                "Ingress {name}: paths of {} are {actual:?}, the contract says {expected:?}",
                spec.host
            ));
        }
        problems
    }

    /// Checks that the contract's requests reach the contract's Services.
    pub fn check_routes(&self, router: &Router) -> Vec<String> {
        self.app
            .routes
            .iter()
            .filter_map(|(uri, service, port)| {
                let want = format!("{service}:{port}");
                let got = router.route(uri).map(|l| l.backend.to_string());
                (got.as_deref() != Some(want.as_str())).then(|| {
                    format!(
                        "{} {uri} routes to {}, expected {want}",
                        router.host(),
                        got.unwrap_or_else(|| "nothing".to_owned())
                    )
                })
            })
            .collect()
    }

    /// Checks that every app service of `overlay` that checks sessions reads each of the
    /// app's secrets (`JWT_KEY`) from its Secret ([`secret_name`]), by key, not optionally;
    /// that no other service gets them; and that no container sets one to a literal value.
    pub fn check_secrets(&self, m: &Manifests, overlay: Overlay) -> Vec<String> {
        let mut problems = Vec::new();
        for w in m.workloads() {
            for c in w.containers() {
                for var in c.spec["env"].as_array().into_iter().flatten() {
                    let name = var["name"].as_str().unwrap_or("");
                    if self.app.secrets.contains(&name) && !var["value"].is_null() {
                        problems.push(format!(
                            "{} container {}: {name} is a literal value, not from its Secret",
                            w.id(),
                            c.name()
                        ));
                    }
                }
            }
        }
        for svc in self.app_services(overlay) {
            let Some(w) = m.workload("Deployment", svc.deployment) else {
                continue;
            };
            let Some(c) = w.container(svc.name) else {
                continue;
            };
            let sessions = self.app.service(svc.name).is_some_and(|s| s.sessions);
            for var in self.app.secrets {
                let secret = secret_name(var);
                let entry = c.spec["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["name"].as_str() == Some(var));
                if !sessions {
                    if entry.is_some() {
                        problems.push(format!(
                            "Deployment {} container {}: {var} is given to a service that checks no session",
                            svc.deployment, svc.name
                        ));
                    }
                    continue;
                }
                let ok = entry
                    .map(|e| &e["valueFrom"]["secretKeyRef"])
                    .is_some_and(|r| {
                        r["name"].as_str() == Some(secret.as_str())
                            && r["key"].as_str() == Some(var)
                            && r["optional"].as_bool() != Some(true)
                    });
                if !ok {
                    problems.push(format!(
                        "Deployment {} container {}: {var} is not read from key {var} of Secret {secret} (not optional)",
                        svc.deployment, svc.name
                    ));
                }
            }
        }
        problems
    }

    /// Checks how the services prove to the bus that they are the app's. With the HTTP
    /// bus (dev), the bus and every service that publishes or consumes read
    /// `EVENT_BUS_SECRET` from key `EVENT_BUS_SECRET` of Secret `event-bus-secret`; with
    /// NATS (prod), each such service connects as its own user (`NATS_USER` = its name,
    /// `NATS_PASSWORD` from Secret `nats-users`), the NATS server reads every password
    /// from that Secret and loads the users from a ConfigMap equal to what
    /// `switchyard nats-users <app>` writes. A service that does not use the bus gets
    /// neither, and none is ever a literal value.
    pub fn check_bus_credentials(&self, m: &Manifests, overlay: Overlay) -> Vec<String> {
        let mut problems = Vec::new();
        let from_secret = |env: &[Value], var: &str, secret: &str, key: &str| {
            env.iter()
                .find(|e| e["name"].as_str() == Some(var))
                .is_some_and(|e| {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    r["name"].as_str() == Some(secret)
                        && r["key"].as_str() == Some(key)
                        && r["optional"].as_bool() != Some(true)
                })
        };
        let (holds, not_held) = if overlay.http_bus() {
            (vec![BUS_SECRET_VAR], vec!["NATS_PASSWORD"])
        } else {
            (vec!["NATS_PASSWORD"], vec![BUS_SECRET_VAR])
        };
        for svc in self.services(overlay) {
            let Some(spec) = self.app.service(svc.name) else {
                continue;
            };
            let Some(w) = m.workload("Deployment", svc.deployment) else {
                continue;
            };
            let Some(c) = w.container(svc.name) else {
                continue;
            };
            let env: Vec<Value> = c.spec["env"].as_array().cloned().unwrap_or_default();
            // The console reads the bus as its own user (or with the HTTP bus's secret).
            let uses = spec.uses_the_bus() || spec.kind == Kind::Console;
            let id = format!("Deployment {} container {}", svc.deployment, svc.name);
            for var in holds.iter().chain(&not_held) {
                if env
                    .iter()
                    .any(|e| e["name"].as_str() == Some(var) && !e["value"].is_null())
                {
                    problems.push(format!(
                        "{id}: {var} is a literal value, not from its Secret"
                    ));
                }
            }
            for var in &not_held {
                if env.iter().any(|e| e["name"].as_str() == Some(var)) {
                    problems.push(format!(
                        "{id}: {var} is set, but this overlay's bus does not use it"
                    ));
                }
            }
            if !uses {
                for var in &holds {
                    if env.iter().any(|e| e["name"].as_str() == Some(var)) {
                        problems.push(format!(
                            "{id}: {var} is set, but the service does not use the bus"
                        ));
                    }
                }
                continue;
            }
            if overlay.http_bus() {
                if !from_secret(&env, BUS_SECRET_VAR, BUS_SECRET_NAME, BUS_SECRET_VAR) {
                    problems.push(format!(
                        "{id}: {BUS_SECRET_VAR} is not read from key {BUS_SECRET_VAR} of Secret {BUS_SECRET_NAME} (not optional)"
                    ));
                }
            } else if matches!(spec.kind, Kind::App | Kind::Console) {
                let user = env
                    .iter()
                    .find(|e| e["name"].as_str() == Some("NATS_USER"))
                    .and_then(|e| e["value"].as_str());
                if user != Some(svc.name) {
                    problems.push(format!(
                        "{id}: NATS_USER is {user:?}, expected {:?}",
                        svc.name
                    ));
                }
                let key = switchyard_bus_client::nats_users::password_variable(svc.name);
                if !from_secret(&env, "NATS_PASSWORD", NATS_USERS_SECRET, &key) {
                    problems.push(format!(
                        "{id}: NATS_PASSWORD is not read from key {key} of Secret {NATS_USERS_SECRET} (not optional)"
                    ));
                }
            }
        }
        if !overlay.http_bus() {
            problems.extend(self.check_nats_server_users(m));
        }
        problems
    }

    /// The NATS server of a production overlay: loads the users ConfigMap (exactly what
    /// `switchyard nats-users` writes for the app) and reads each password from Secret
    /// `nats-users`.
    fn check_nats_server_users(&self, m: &Manifests) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(nats) = m.workload("StatefulSet", "nats") else {
            return vec!["StatefulSet nats is missing".to_owned()];
        };
        let Some(c) = nats.container("nats") else {
            return vec!["StatefulSet nats has no container nats".to_owned()];
        };
        let users: Vec<_> = self
            .app
            .bus_users()
            .map(|s| switchyard_bus_client::nats_users::ServiceUser {
                user: s.name.to_owned(),
                durable: s.consumer_group.map(str::to_owned),
                produces: s.produces.iter().map(|t| (*t).to_owned()).collect(),
                watcher: s.kind == Kind::Console,
            })
            .collect();
        let expected = switchyard_bus_client::nats_users::server_config(
            self.app.stream,
            self.app.subject_prefix,
            &users,
        );
        let args: Vec<&str> = c.spec["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let config_path = args
            .iter()
            .position(|a| *a == "-c")
            .and_then(|i| args.get(i + 1).copied());
        let Some(config_path) = config_path else {
            return vec!["StatefulSet nats: no -c <users configuration> argument".to_owned()];
        };
        let (dir, file) = config_path.rsplit_once('/').unwrap_or(("", config_path));
        let mount = c.spec["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["mountPath"].as_str() == Some(dir));
        let config_map = mount.and_then(|v| {
            let volume = nats.pod_spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|vol| vol["name"] == v["name"])?;
            volume["configMap"]["name"].as_str()
        });
        match config_map.and_then(|name| m.config_map_data(name)) {
            Some(data) if data.get(file) == Some(&expected) => {}
            Some(_) => problems.push(format!(
                "StatefulSet nats: {config_path} differs from `switchyard nats-users {}` (write it again)",
                self.app.name
            )),
            None => problems.push(format!(
                "StatefulSet nats: {config_path} is not mounted from a ConfigMap of the overlay"
            )),
        }
        let env: Vec<Value> = c.spec["env"].as_array().cloned().unwrap_or_default();
        for user in std::iter::once(switchyard_bus_client::nats_users::OPERATOR)
            .chain(users.iter().map(|u| u.user.as_str()))
        {
            let var = switchyard_bus_client::nats_users::password_variable(user);
            let ok = env.iter().any(|e| {
                e["name"].as_str() == Some(var.as_str())
                    && e["valueFrom"]["secretKeyRef"]["name"].as_str() == Some(NATS_USERS_SECRET)
                    && e["valueFrom"]["secretKeyRef"]["key"].as_str() == Some(var.as_str())
            });
            if !ok {
                problems.push(format!(
                    "StatefulSet nats: {var} is not read from key {var} of Secret {NATS_USERS_SECRET}"
                ));
            }
        }
        problems
    }

    /// The ingress controller, as the NetworkPolicy checks see it: a pod of
    /// [`INGRESS_CONTROLLER_NAMESPACE`] with ingress-nginx's labels.
    pub fn ingress_controller() -> Peer {
        Peer::in_namespace(
            format!("the ingress controller (namespace {INGRESS_CONTROLLER_NAMESPACE})"),
            INGRESS_CONTROLLER_NAMESPACE,
            netpol::labels(&[
                ("app.kubernetes.io/name", "ingress-nginx"),
                ("app.kubernetes.io/component", "controller"),
            ]),
        )
    }

    /// Prometheus, as the NetworkPolicy checks see it.
    pub fn monitoring() -> Peer {
        Peer::in_namespace(
            format!("Prometheus (namespace {MONITORING_NAMESPACE})"),
            MONITORING_NAMESPACE,
            netpol::labels(&[("app.kubernetes.io/name", "prometheus")]),
        )
    }

    /// The connections `overlay` needs: the ingress controller to every backend of the
    /// app's Ingress; Prometheus to every service's ops port; every service that uses the
    /// bus to the bus (NATS, or the HTTP event bus) and, with the HTTP bus, the bus to every
    /// subscriber; in prod, every service with a database to PostgreSQL.
    pub fn needed_paths(&self, m: &Manifests, overlay: Overlay) -> Vec<Path> {
        let backends = self.ingress_backends(m);
        self.needed_paths_via(m, overlay, &Self::ingress_controller().id, &backends)
    }

    /// The backends of the app's Ingress in `m`.
    pub fn ingress_backends(&self, m: &Manifests) -> Vec<Backend> {
        let mut backends = Vec::new();
        if let Some(ingress) = m.get("Ingress", self.app.ingress.name) {
            for rule in ingress["spec"]["rules"].as_array().into_iter().flatten() {
                for p in rule["http"]["paths"].as_array().into_iter().flatten() {
                    if let Ok(b) = Backend::from_value(&p["backend"]) {
                        backends.push(b);
                    }
                }
            }
        }
        backends
    }

    /// [`Self::needed_paths`] with another edge proxy than the ingress controller (`edge`,
    /// a peer id) reaching other backends (the Gateway API overlay's HTTPRoute backends).
    pub fn needed_paths_via(
        &self,
        m: &Manifests,
        overlay: Overlay,
        edge: &str,
        backends: &[Backend],
    ) -> Vec<Path> {
        let mut paths = Vec::new();
        let mut add = |from: &str, service: &str, port: u64| {
            for (to, port) in service_endpoints(m, service, port) {
                paths.push(Path {
                    from: from.to_owned(),
                    to,
                    port,
                });
            }
        };
        for b in backends {
            if let BackendPort::Number(port) = b.port {
                add(edge, &b.service, port);
            }
        }
        let services = self.services(overlay);
        let workload_of = |name: &str| {
            services
                .iter()
                .find(|s| s.name == name)
                .map(|s| format!("Deployment/{}", s.deployment))
        };
        let bus = self
            .app
            .of_kind(Kind::EventBus)
            .find(|b| self.deploys(overlay, b));
        let bus_service = match bus {
            Some(b) if overlay.http_bus() => b
                .k8s_service
                .map(|s| (s.to_owned(), u64::from(b.contract_port))),
            _ => Some((NATS_SERVICE.0.to_owned(), u64::from(NATS_SERVICE.1))),
        };
        let console = services.iter().find(|s| s.kind == Kind::Console);
        for s in &services {
            let Some(from) = workload_of(s.name) else {
                continue;
            };
            if (s.uses_bus || s.kind == Kind::Console)
                && let Some((service, port)) = &bus_service
            {
                add(&from, service, *port);
            }
            // Every other service sends the console its spans.
            if let Some(c) = console
                && s.kind != Kind::Console
                && let Some(service) = &c.service
            {
                add(&from, service, u64::from(c.port));
            }
            if s.database && !overlay.http_bus() {
                add(&from, POSTGRES_SERVICE.0, u64::from(POSTGRES_SERVICE.1));
            }
        }
        if !overlay.http_bus() {
            add("StatefulSet/nats", NATS_ROUTES.0, u64::from(NATS_ROUTES.1));
        }
        if overlay.http_bus()
            && let Some(from) = bus.and_then(|b| workload_of(b.name))
        {
            for s in services.iter().filter(|s| s.uses_bus) {
                if let Some(service) = &s.service {
                    add(&from, service, u64::from(s.port));
                }
            }
        }
        let monitoring = Self::monitoring().id;
        for s in &services {
            paths.push(Path {
                from: monitoring.clone(),
                to: format!("Deployment/{}", s.deployment),
                port: u64::from(OPS_PORT),
            });
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// Checks the NetworkPolicies of `overlay`: prod must have them; where there are any,
    /// every needed connection ([`Self::needed_paths`]) must be open and nothing else,
    /// probed from every workload, strangers in the namespace, look-alikes in another
    /// namespace, the ingress controller, Prometheus and the outside
    /// ([`netpol::probe_peers`]); and no rule may admit an `ipBlock`.
    pub fn check_network_policies(&self, m: &Manifests, overlay: Overlay) -> Vec<String> {
        let backends = self.ingress_backends(m);
        self.check_network_policies_via(m, overlay, &Self::ingress_controller(), &backends, &[])
    }

    /// [`Self::check_network_policies`] with another edge proxy than the ingress
    /// controller (`edge`) reaching `backends`, probed also from `extra_peers`.
    pub fn check_network_policies_via(
        &self,
        m: &Manifests,
        overlay: Overlay,
        edge: &Peer,
        backends: &[Backend],
        extra_peers: &[Peer],
    ) -> Vec<String> {
        let count = netpol::policies(m).count();
        if count == 0 {
            return if overlay == Overlay::Prod {
                vec![format!(
                    "{} prod has no NetworkPolicy: every pod is open to everything",
                    self.app.name
                )]
            } else {
                Vec::new()
            };
        }
        let mut problems = netpol::ip_block_peers(m);
        if !netpol::denies_ingress_by_default(m) {
            problems.push(
                "no default-deny policy (podSelector {}, Ingress, no rules): a pod no policy selects is open to everything"
                    .to_owned(),
            );
        }
        let mut peers = netpol::probe_peers(m, edge, &Self::monitoring());
        peers.extend(extra_peers.iter().cloned());
        let open = netpol::open_paths(m, &peers);
        let needed = self.needed_paths_via(m, overlay, &edge.id, backends);
        for p in &needed {
            if !open.contains(p) {
                problems.push(format!("needed but closed: {p}"));
            }
        }
        for p in &open {
            if !needed.contains(p) {
                problems.push(format!("open but not needed: {p}"));
            }
        }
        problems
    }
}

/// The workloads (as `Kind/name`) and container ports behind `port` of Service `service`.
pub fn service_endpoints(m: &Manifests, service: &str, port: u64) -> Vec<(String, u64)> {
    let Some(s) = m.get("Service", service) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in s["spec"]["ports"].as_array().into_iter().flatten() {
        if p["port"].as_u64() != Some(port) {
            continue;
        }
        let target = if p["targetPort"].is_null() {
            &p["port"]
        } else {
            &p["targetPort"]
        };
        for w in m.selected_workloads(&string_map(&s["spec"]["selector"])) {
            if let Some(n) = w
                .app_containers()
                .iter()
                .find_map(|c| c.resolve_port(target))
            {
                out.push((w.id(), n));
            }
        }
    }
    out
}

/// Checks a Service: type, selector `app`, and port -> targetPort.
fn check_port_service(
    m: &Manifests,
    name: &str,
    app: &str,
    port: u16,
    service_type: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(s) = m.get("Service", name) else {
        return vec![format!("Service {name} is missing")];
    };
    let actual_type = s["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if actual_type != service_type {
        problems.push(format!(
            "Service {name} is {actual_type}, not {service_type}"
        ));
    }
    if string_map(&s["spec"]["selector"])
        .get("app")
        .map(String::as_str)
        != Some(app)
    {
        problems.push(format!("Service {name}: selector app is not {app:?}"));
    }
    let ports = s["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let found = ports.iter().any(|p| {
        p["port"].as_u64() == Some(u64::from(port))
            && (p["targetPort"].is_null()
                || p["targetPort"].as_u64() == Some(u64::from(port))
                || p["targetPort"].as_str() == Some(&port.to_string()))
    });
    if !found {
        problems.push(format!(
            "Service {name}: no port {port} -> targetPort {port}"
        ));
    }
    problems
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use switchyard_registry::{BLOG, TICKETING};

    use super::*;

    const BLOG_C: Contract = Contract { app: &BLOG };
    const TICKETING_C: Contract = Contract { app: &TICKETING };

    const GOOD: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ingress-srv
  annotations: {nginx.ingress.kubernetes.io/use-regex: "true"}
spec:
  ingressClassName: nginx
  rules:
    - host: posts.com
      http:
        paths:
          - {path: /posts/create, pathType: Prefix, backend: {service: {name: posts-clusterip-srv, port: {number: 4000}}}}
          - {path: /posts, pathType: Prefix, backend: {service: {name: query-srv, port: {number: 4002}}}}
          - {path: "/posts/?(.*)/comments", pathType: ImplementationSpecific, backend: {service: {name: comments-srv, port: {number: 4001}}}}
          - {path: "/?(.*)", pathType: ImplementationSpecific, backend: {service: {name: client-srv, port: {number: 3000}}}}
"#;

    fn parse(text: &str) -> Value {
        crate::parse_yaml_documents(text).unwrap().remove(0)
    }

    #[test]
    fn every_app_has_a_contract() {
        let names: Vec<&str> = contracts().iter().map(Contract::name).collect();
        assert_eq!(names, switchyard_registry::app_names());
    }

    #[test]
    fn images_and_profiles_are_per_app() {
        assert_eq!(BLOG_C.image("client"), "switchyard/client");
        assert_eq!(TICKETING_C.image("client"), "switchyard/ticketing-client");
        assert_eq!(BLOG_C.skaffold_profile(Overlay::Prod), "prod");
        assert_eq!(TICKETING_C.skaffold_profile(Overlay::Dev), "ticketing-dev");
        assert_eq!(secret_name("JWT_KEY"), "jwt-secret");
        assert_eq!(secret_name("STRIPE_KEY"), "stripe-secret");
    }

    #[test]
    fn prod_runs_no_event_bus_and_expiration_has_a_service_in_dev_only() {
        let dev: Vec<&str> = TICKETING_C
            .services(Overlay::Dev)
            .iter()
            .map(|s| s.name)
            .collect();
        assert!(dev.contains(&"event-bus"));
        assert!(
            !TICKETING_C
                .services(Overlay::Prod)
                .iter()
                .any(|s| s.name == "event-bus")
        );
        let dev_expiration = TICKETING_C.service(Overlay::Dev, "expiration").unwrap();
        assert_eq!(dev_expiration.service.as_deref(), Some("expiration-srv"));
        let prod_expiration = TICKETING_C.service(Overlay::Prod, "expiration").unwrap();
        assert_eq!(prod_expiration.service, None);
        assert_eq!(prod_expiration.image, "switchyard/ticketing-expiration");
        let subscribers = TICKETING_C.expected_subscribers();
        assert!(
            subscribers
                .contains(&"expiration=http://expiration-srv:3000;types=order:created".into()),
            "{subscribers:?}"
        );
    }

    #[test]
    fn accepts_the_contract_ingress() {
        let ingress = parse(GOOD);
        assert_eq!(BLOG_C.check_ingress(&ingress), Vec::<String>::new());
        let router = Router::new([&ingress], BLOG.ingress.host).unwrap();
        assert_eq!(BLOG_C.check_routes(&router), Vec::<String>::new());
        // the other app's contract refuses it
        assert!(!TICKETING_C.check_ingress(&ingress).is_empty());
    }

    #[test]
    fn rejects_reordered_paths_and_missing_annotation() {
        let swapped = GOOD
            .replace("- {path: /posts/create", "- {path: /TMP")
            .replace(
                "- {path: /posts, pathType: Prefix",
                "- {path: /posts/create, pathType: Prefix",
            )
            .replace("- {path: /TMP", "- {path: /posts");
        let problems = BLOG_C.check_ingress(&parse(&swapped));
        assert_eq!(problems.len(), 1, "{problems:?}");
        let plain = GOOD.replace("\"true\"", "\"false\"");
        let ingress = parse(&plain);
        assert_eq!(BLOG_C.check_ingress(&ingress).len(), 1);
        // without regexes "/posts/abc123/comments" goes to query and "/app.js" nowhere
        let router = Router::new([&ingress], BLOG.ingress.host).unwrap();
        let problems = BLOG_C.check_routes(&router);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("/posts/abc123/comments")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("/app.js")),
            "{problems:?}"
        );
    }

    const QUERY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: query-depl, labels: {app: query}}
spec:
  selector: {matchLabels: {app: query}}
  template:
    metadata:
      labels: {app: query}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9090", prometheus.io/path: /metrics}
    spec:
      containers:
        - name: query
          image: switchyard/query
          ports: [{name: http, containerPort: 4002}, {name: ops, containerPort: 9090}]
          env: [{name: PORT, value: "4002"}, {name: OPS_PORT, value: "9090"}, {name: SWITCHYARD_SERVICE, value: blog/query}]
          livenessProbe: {httpGet: {path: /healthz, port: ops}}
          readinessProbe: {httpGet: {path: /readyz, port: ops}}
---
apiVersion: v1
kind: Service
metadata: {name: query-srv}
spec:
  selector: {app: query}
  ports: [{port: 4002, targetPort: 4002}]
"#;

    #[test]
    fn checks_service_names_labels_and_ports() {
        let m = Manifests::parse(QUERY).unwrap();
        let query = BLOG_C.service(Overlay::Dev, "query").unwrap();
        assert_eq!(BLOG_C.check_service(&m, &query), Vec::<String>::new());
        assert_eq!(BLOG_C.check_absent(&m, Overlay::Prod), Vec::<String>::new());
        let wrong = Manifests::parse(
            &QUERY
                .replace("value: \"4002\"", "value: \"4000\"")
                .replace("name: query\n", "name: q\n"),
        )
        .unwrap();
        let problems = BLOG_C.check_service(&wrong, &query);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("no container named"));
        assert!(BLOG_C.check_extra_services(&m)[0].contains("posts-srv is missing"));
        let other_app = Manifests::parse(&QUERY.replace("blog/query", "ticketing/auth")).unwrap();
        assert!(BLOG_C.check_service(&other_app, &query)[0].contains("SWITCHYARD_SERVICE"));
        let exposed = Manifests::parse(&format!("{QUERY}  type: LoadBalancer\n")).unwrap();
        assert!(
            BLOG_C
                .check_extra_services(&exposed)
                .iter()
                .any(|p| p.contains("query-srv is a LoadBalancer")),
        );
    }

    #[test]
    fn dev_only_services_must_not_reach_prod() {
        let m = Manifests::parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: expiration-srv}\n\
             spec: {selector: {app: expiration}, ports: [{port: 3000}]}\n",
        )
        .unwrap();
        assert_eq!(
            TICKETING_C.check_absent(&m, Overlay::Dev),
            Vec::<String>::new()
        );
        assert_eq!(TICKETING_C.check_absent(&m, Overlay::Prod).len(), 1);
    }

    #[test]
    fn ops_endpoints_must_be_on_their_own_port_and_never_routed() {
        let good = QUERY.replace("targetPort: 4002", "targetPort: http");
        let m = Manifests::parse(&good).unwrap();
        assert_eq!(BLOG_C.check_ops(&m, Overlay::Dev), Vec::<String>::new());
        let routed =
            Manifests::parse(&good.replace("targetPort: http", "targetPort: ops")).unwrap();
        assert!(BLOG_C.check_ops(&routed, Overlay::Dev)[0].contains("routes to query's ops port"));
        let probed =
            Manifests::parse(&good.replace("/readyz, port: ops", "/readyz, port: http")).unwrap();
        assert!(BLOG_C.check_ops(&probed, Overlay::Dev)[0].contains("readinessProbe"));
        let unannotated = Manifests::parse(&good.replace(
            "prometheus.io/port: \"9090\"",
            "prometheus.io/port: \"4002\"",
        ))
        .unwrap();
        assert!(BLOG_C.check_ops(&unannotated, Overlay::Dev)[0].contains("prometheus.io/port"));
    }

    #[test]
    fn secrets_come_from_their_secret() {
        let auth = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: auth-depl}
spec:
  selector: {matchLabels: {app: auth}}
  template:
    metadata: {labels: {app: auth}}
    spec:
      containers:
        - name: auth
          image: switchyard/ticketing-auth
          env: [{name: JWT_KEY, valueFrom: {secretKeyRef: {name: jwt-secret, key: JWT_KEY}}}]
"#;
        let m = Manifests::parse(auth).unwrap();
        let problems = TICKETING_C.check_secrets(&m, Overlay::Prod);
        // only auth is in these manifests; the other services are not checked here
        assert!(
            !problems.iter().any(|p| p.contains("auth-depl")),
            "{problems:?}"
        );
        let literal = Manifests::parse(&auth.replace(
            "valueFrom: {secretKeyRef: {name: jwt-secret, key: JWT_KEY}}",
            "value: hunter2hunter2",
        ))
        .unwrap();
        let problems = TICKETING_C.check_secrets(&literal, Overlay::Prod);
        assert!(
            problems.iter().any(|p| p.contains("literal")),
            "{problems:?}"
        );
        let optional =
            Manifests::parse(&auth.replace("key: JWT_KEY}", "key: JWT_KEY, optional: true}"))
                .unwrap();
        assert!(
            TICKETING_C
                .check_secrets(&optional, Overlay::Prod)
                .iter()
                .any(|p| p.contains("auth-depl"))
        );
    }
}
