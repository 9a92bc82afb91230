//! The Kubernetes part of every app's wire contract, as the app registry declares it
//! ([`switchyard_registry::APPS`]): object names, labels, containers, images, ports, the
//! extra Services (the blog's NodePort), the Ingress, the event bus's subscribers, the
//! operational port, the Secrets the services read, the NATS users, and the connections
//! the NetworkPolicies must open (and no other).
//!
//! Every app has the same two overlays ([`Overlay`]): `dev`, the embedded setup (SQLite, the
//! HTTP event bus), and `prod` (PostgreSQL, NATS JetStream, no HTTP event bus).

use serde_json::Value;
use switchyard_bus_client::nats_users::{self, ServiceUser};
use switchyard_registry::{APPS, App, Consumes, Kind, Service};

use crate::ingress::{Backend, BackendPort, Router, USE_REGEX_ANNOTATION};
use crate::manifest::{Container, Manifests, image_repository, list, name, text};
use crate::manifest::{string_map, target_port};
use crate::netpol::{self, Path, Peer};

/// The container port (named `ops`) of every service's `/healthz`, `/readyz` and
/// `/metrics` in the cluster: one port for all, never targeted by a Service.
pub const OPS_PORT: u16 = 9090;

/// The namespace of the ingress controller that the prod NetworkPolicies admit to the
/// Ingress backends (ingress-nginx's Helm chart, minikube's addon and kind's manifests).
pub const INGRESS_CONTROLLER_NAMESPACE: &str = "ingress-nginx";

/// The namespace whose pods (Prometheus) may scrape the ops ports in prod.
pub const MONITORING_NAMESPACE: &str = "monitoring";

/// The NATS Service of the prod overlays and its client port; the NATS cluster's routes
/// (each server to the others, by the headless Service's DNS names); PostgreSQL's Service.
pub const NATS_SERVICE: (&str, u16) = ("nats", 4222);
pub const NATS_ROUTES: (&str, u16) = ("nats-headless", 6222);
pub const POSTGRES_SERVICE: (&str, u16) = ("postgres", 5432);

/// The Secret holding every service's `DATABASE_URL` in prod (key = the service's name).
pub const DATABASE_SECRET: &str = "switchyard-database";
/// The HTTP bus's secret (dev), and the Secret of the NATS users' passwords (prod).
pub const BUS_SECRET: (&str, &str) = (switchyard_registry::BUS_SECRET, "event-bus-secret");
pub const NATS_USERS_SECRET: &str = "nats-users";

/// An overlay of an app: `dev` (SQLite and the HTTP event bus, one replica each) or `prod`
/// (PostgreSQL and NATS JetStream, replicas, NetworkPolicies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Overlay {
    Dev,
    Prod,
}

impl Overlay {
    pub const ALL: [Overlay; 2] = [Overlay::Dev, Overlay::Prod];

    /// The directory under `infra/k8s/<app>/overlays/`.
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

/// The Secret that holds `var`: `JWT_KEY` -> `jwt-secret`.
pub fn secret_name(var: &str) -> String {
    let first = var.split('_').next().unwrap_or(var);
    format!("{}-secret", first.to_ascii_lowercase())
}

/// One app's contract.
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    pub app: &'static App,
}

/// Every app's contract, in the registry's order.
pub fn contracts() -> Vec<Contract> {
    APPS.iter().map(|app| Contract { app }).collect()
}

/// One deployed service of an overlay: `name` is its label `app`, its container's name and
/// the service part of `SWITCHYARD_SERVICE`; `port` its container port `http`, its
/// Service's port and targetPort; `service` its ClusterIP Service in this overlay; `image`
/// its image repository; `uses_bus` whether it consumes events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContract {
    pub name: &'static str,
    pub kind: Kind,
    pub port: u16,
    pub deployment: &'static str,
    pub service: Option<String>,
    pub image: String,
    pub database: bool,
    pub uses_bus: bool,
}

impl ServiceContract {
    /// `Deployment <name> container <name>`, for messages.
    pub fn at(&self) -> String {
        format!("Deployment {} container {}", self.deployment, self.name)
    }
}

impl Contract {
    pub fn name(&self) -> &'static str {
        self.app.name
    }

    /// `switchyard/<service>` for the blog (its images came first), else
    /// `switchyard/<app>-<service>`, so that no two apps' images clash.
    pub fn image(&self, service: &str) -> String {
        match self.app.name {
            "blog" => format!("switchyard/{service}"),
            app => format!("switchyard/{app}-{service}"),
        }
    }

    /// The skaffold profile that deploys `overlay`: the blog's are `dev` and `prod` (the
    /// default config is the blog's dev), every other app's `<app>-<overlay>`.
    pub fn skaffold_profile(&self, overlay: Overlay) -> String {
        match self.app.name {
            "blog" => overlay.name().to_owned(),
            app => format!("{app}-{}", overlay.name()),
        }
    }

    /// Whether `s` is deployed in `overlay` (prod has no HTTP event bus).
    pub fn deploys(&self, overlay: Overlay, s: &Service) -> bool {
        s.deployment.is_some() && !(overlay == Overlay::Prod && s.kind == Kind::EventBus)
    }

    fn is_subscriber(s: &Service) -> bool {
        s.kind == Kind::App && s.consumes != Consumes::Nothing
    }

    /// The ClusterIP Service of `s` in `overlay`: the registry's; with the HTTP event bus, a
    /// subscriber without one gets `<name>-srv` (the bus must reach it: ticketing's
    /// expiration, which has no Service in the original).
    pub fn cluster_service(&self, overlay: Overlay, s: &Service) -> Option<String> {
        let needs_one = overlay.http_bus() && Self::is_subscriber(s);
        let own = needs_one.then(|| format!("{}-srv", s.name));
        s.k8s_service.map(str::to_owned).or(own)
    }

    /// The services deployed in `overlay`.
    pub fn services(&self, overlay: Overlay) -> Vec<ServiceContract> {
        let deployed = self
            .app
            .services
            .iter()
            .filter(|s| self.deploys(overlay, s));
        let contract = |s: &'static Service| {
            Some(ServiceContract {
                name: s.name,
                kind: s.kind,
                port: s.contract_port,
                deployment: s.deployment?,
                service: self.cluster_service(overlay, s),
                image: self.image(s.name),
                database: s.database,
                uses_bus: Self::is_subscriber(s),
            })
        };
        deployed.filter_map(contract).collect()
    }

    pub fn service(&self, overlay: Overlay, name: &str) -> Option<ServiceContract> {
        self.services(overlay).into_iter().find(|s| s.name == name)
    }

    /// The app services (not the event bus, not the console) deployed in `overlay`.
    pub fn app_services(&self, overlay: Overlay) -> Vec<ServiceContract> {
        let mut services = self.services(overlay);
        services.retain(|s| s.kind == Kind::App);
        services
    }

    /// Whether `name` (as `switchyard serve` takes it) resolves to `service` of this app.
    pub fn names_service(&self, name: &str, service: &str) -> bool {
        let resolved = switchyard_registry::resolve(name);
        resolved.is_ok_and(|r| r.app.name == self.app.name && r.service.name == service)
    }

    /// Every check of this module for `overlay` but the Ingress's and the policies'.
    pub fn check(&self, m: &Manifests, overlay: Overlay) -> Vec<String> {
        let mut problems = self.check_extra_services(m);
        self.check_absent(m, overlay, &mut problems);
        self.check_literal_secrets(m, &mut problems);
        match overlay {
            Overlay::Dev => self.check_subscribers(m, &mut problems),
            Overlay::Prod => self.check_nats_server(m, &mut problems),
        }
        for svc in self.services(overlay) {
            if let Some(service) = &svc.service {
                problems.extend(check_svc(m, service, svc.name, svc.port, "ClusterIP"));
            }
            let at = format!("Deployment {}", svc.deployment);
            let Some(w) = m.workload("Deployment", svc.deployment) else {
                problems.push(format!("{at} is missing"));
                continue;
            };
            let template = &w.object["spec"]["template"];
            let labels = [
                ("label", &w.object["metadata"]["labels"]),
                ("selector", &w.object["spec"]["selector"]["matchLabels"]),
                ("pod label", &template["metadata"]["labels"]),
            ];
            for (what, _) in labels.iter().filter(|(_, l)| l["app"] != svc.name) {
                problems.push(format!("{at}: {what} app is not {:?}", svc.name));
            }
            // Prometheus scrapes the ops port
            let port = OPS_PORT.to_string();
            for (key, want) in [("scrape", "true"), ("port", &port), ("path", "/metrics")] {
                let key = format!("prometheus.io/{key}");
                if template["metadata"]["annotations"][&key] != want {
                    problems.push(format!("{at}: pod annotation {key} is not {want:?}"));
                }
            }
            let mut containers = w.app_containers().into_iter();
            let Some(c) = containers.find(|c| c.name() == svc.name) else {
                problems.push(format!("{at}: no container named {:?}", svc.name));
                continue;
            };
            let mut found = self.check_container(m, &svc, &c);
            found.extend(self.check_bus_credentials(overlay, &svc, &c));
            problems.extend(found.into_iter().map(|p| format!("{}: {p}", svc.at())));
        }
        problems
    }

    /// A service's container: its port `http`, image, `PORT`, `SWITCHYARD_SERVICE`, the
    /// app's secrets; and its operational endpoints, on their own port `ops` =
    /// [`OPS_PORT`]: `OPS_PORT`, the probes, and no Service routing to it (so no Ingress
    /// can make it public).
    fn check_container(&self, m: &Manifests, svc: &ServiceContract, c: &Container) -> Vec<String> {
        let (env, mut found) = (m.env(c), Vec::new());
        let (port, ops) = (svc.port.to_string(), u64::from(OPS_PORT));
        if !c.ports().contains(&(Some("http"), svc.port.into())) {
            found.push(format!("no port http = {port}"));
        }
        let image = image_repository(c.image());
        if image != svc.image {
            found.push(format!("runs image {image}, not {}", svc.image));
        }
        if let Some(actual) = env.vars.get("PORT").filter(|p| **p != port) {
            found.push(format!("PORT={actual}, not {port}"));
        }
        let service = env.vars.get("SWITCHYARD_SERVICE");
        if !service.is_some_and(|s| self.names_service(s, svc.name)) {
            let want = format!("{}/{}", self.app.name, svc.name);
            found.push(format!("SWITCHYARD_SERVICE={service:?} is not {want}"));
        }
        // Every app service that checks sessions reads each of the app's secrets from its
        // key of its Secret (`JWT_KEY` -> `jwt-secret`), not optionally; no other gets them.
        let sessions = self.app.service(svc.name).is_some_and(|s| s.sessions);
        for var in self.app.secrets.iter().filter(|_| svc.kind == Kind::App) {
            let secret = secret_name(var);
            if !sessions && c.env_entry(var).is_some() {
                found.push(format!(
                    "{var} is given to a service that checks no session"
                ));
            } else if sessions && !c.reads_secret(var, &secret, var, false) {
                found.push(format!("{var} is not read from its key of Secret {secret}"));
            }
        }
        if !c.ports().contains(&(Some("ops"), ops)) {
            found.push(format!("no container port ops = {OPS_PORT}"));
        }
        if env.vars.get("OPS_PORT") != Some(&OPS_PORT.to_string()) {
            found.push(format!("OPS_PORT is not {OPS_PORT}"));
        }
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let port = &c.spec[probe]["httpGet"]["port"];
            if !c.spec[probe].is_null() && c.resolve_port(port) != Some(ops) {
                found.push(format!("{probe} is not on the ops port"));
            }
        }
        let services = m.of_kind("Service");
        for s in services.filter(|s| s["spec"]["selector"]["app"] == svc.name) {
            let mut ports = list(&s["spec"]["ports"]);
            if ports.any(|p| c.resolve_port(target_port(p)) == Some(ops)) {
                found.push(format!("Service {} routes to its ops port", name(s)));
            }
        }
        found
    }

    /// Checks the extra Services the registry declares (the blog's NodePort `posts-srv`),
    /// and that no other Service is exposed outside the cluster (NodePort, LoadBalancer).
    fn check_extra_services(&self, m: &Manifests) -> Vec<String> {
        let mut problems = Vec::new();
        let extras = self.app.services.iter().flat_map(|s| {
            let extras = s.extra_k8s_services.iter();
            extras.map(move |e| (s, e))
        });
        for (s, e) in extras.clone() {
            problems.extend(check_svc(m, e.name, s.name, s.contract_port, e.kind));
        }
        for service in m.of_kind("Service") {
            let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
            let name = name(service);
            let mut extras = extras.clone();
            let declared = extras.any(|(_, e)| e.name == name && e.kind == kind);
            if (kind == "NodePort" || kind == "LoadBalancer") && !declared {
                problems.push(format!(
                    "Service {name} is a {kind}: only the Ingress may expose {} (and the registry's extra Services)",
                    self.app.name
                ));
            }
        }
        problems
    }

    /// Checks that `overlay` deploys none of the objects it must not: the Deployment and
    /// Services of a service it does not run (prod: the event bus), and a dev-only Service
    /// (`expiration-srv`) outside dev.
    fn check_absent(&self, m: &Manifests, overlay: Overlay, problems: &mut Vec<String>) {
        for s in self.app.services {
            let Some(deployment) = s.deployment else {
                continue;
            };
            let mut unwanted = vec![("Service", format!("{}-srv", s.name))];
            unwanted.extend(s.k8s_service.map(|n| ("Service", n.to_owned())));
            // the extra Services (posts-srv) are the registry's, in every overlay
            unwanted.retain(|(_, n)| !s.extra_k8s_services.iter().any(|e| e.name == n));
            if !self.deploys(overlay, s) {
                unwanted.push(("Deployment", deployment.to_owned()));
            } else if let Some(own) = self.cluster_service(overlay, s) {
                unwanted.retain(|(_, n)| *n != own);
            }
            for (kind, name) in unwanted.iter().filter(|(k, n)| m.get(k, n).is_some()) {
                let overlay = overlay.name();
                problems.push(format!("{kind} {name} should not be deployed in {overlay}"));
            }
        }
    }

    /// Checks the Ingress object: name, class, annotation, host, paths in order with their
    /// pathTypes and backends.
    pub fn check_ingress(&self, ingress: &Value) -> Vec<String> {
        let spec = &self.app.ingress;
        let at = format!("Ingress {}", name(ingress));
        let mut problems = Vec::new();
        if ingress["kind"] != "Ingress" || name(ingress) != spec.name {
            problems.push(format!("{at}: expected Ingress {}", spec.name));
        }
        let fields = [
            ("apiVersion", &ingress["apiVersion"], "networking.k8s.io/v1"),
            (
                "ingressClassName",
                &ingress["spec"]["ingressClassName"],
                spec.class,
            ),
            (
                "use-regex",
                &ingress["metadata"]["annotations"][USE_REGEX_ANNOTATION],
                "true",
            ),
        ];
        for (what, value, want) in fields.iter().filter(|(_, v, want)| v != want) {
            problems.push(format!("{at}: {what} is {value}, not {want:?}"));
        }
        let Some(rule) = list(&ingress["spec"]["rules"]).find(|r| r["host"] == spec.host) else {
            problems.push(format!("{at}: no rule for host {}", spec.host));
            return problems;
        };
        let path = |p: &Value| {
            let backend = Backend::from_value(&p["backend"]);
            let backend = backend.map_or_else(|e| e.to_string(), |b| b.to_string());
            format!("{} {} {backend}", text(&p["path"]), text(&p["pathType"]))
        };
        let actual: Vec<String> = list(&rule["http"]["paths"]).map(path).collect();
        let expected: Vec<String> = (spec.paths.iter())
            .map(|(path, path_type, service, port)| format!("{path} {path_type} {service}:{port}"))
            .collect();
        if actual != expected {
            problems.push(format!(
                "{at}: paths of {} are {actual:?}, the contract says {expected:?}",
                spec.host
            ));
        }
        problems
    }

    /// Checks that the contract's requests reach the contract's Services.
    pub fn check_routes(&self, router: &Router) -> Vec<String> {
        let wrong = |(uri, service, port): &(&str, &str, u16)| {
            let want = format!("{service}:{port}");
            let got = router.route(uri).map(|l| l.backend.to_string());
            let got = got.unwrap_or_else(|| "nothing".to_owned());
            let host = router.host();
            (got != want).then(|| format!("{host} {uri} routes to {got}, expected {want}"))
        };
        self.app.routes.iter().filter_map(wrong).collect()
    }

    /// No container of any workload sets one of the app's secrets (`JWT_KEY`) to a literal.
    fn check_literal_secrets(&self, m: &Manifests, problems: &mut Vec<String>) {
        for w in m.workloads() {
            for c in w.containers() {
                for var in self.app.secrets.iter().filter(|v| c.literal(v)) {
                    let at = format!("{} container {}", w.id(), c.name());
                    problems.push(format!(
                        "{at}: {var} is a literal value, not from its Secret"
                    ));
                }
            }
        }
    }

    /// How a service proves to the bus that it is the app's. With the HTTP bus (dev), the
    /// bus and every service that publishes or consumes read `EVENT_BUS_SECRET` from its
    /// key of Secret `event-bus-secret`; with NATS (prod), each such service (and the
    /// console, which reads the bus) connects as its own user: `NATS_USER` = its name,
    /// `NATS_PASSWORD` from Secret `nats-users`. A service that does not use the bus gets
    /// neither, and neither is ever a literal value.
    fn check_bus_credentials(
        &self,
        overlay: Overlay,
        svc: &ServiceContract,
        c: &Container,
    ) -> Vec<String> {
        let mut found = Vec::new();
        let Some(spec) = self.app.service(svc.name) else {
            return found;
        };
        let (held, not_held, secret, key) = match overlay {
            Overlay::Dev => (
                BUS_SECRET.0,
                "NATS_PASSWORD",
                BUS_SECRET.1,
                BUS_SECRET.0.into(),
            ),
            Overlay::Prod => {
                let key = nats_users::password_variable(svc.name);
                ("NATS_PASSWORD", BUS_SECRET.0, NATS_USERS_SECRET, key)
            }
        };
        for var in [held, not_held].into_iter().filter(|v| c.literal(v)) {
            found.push(format!("{var} is a literal value, not from its Secret"));
        }
        if c.env_entry(not_held).is_some() {
            found.push(format!(
                "{not_held} is set, but this overlay's bus does not use it"
            ));
        }
        let uses = spec.uses_the_bus() || spec.kind == Kind::Console;
        if !uses && c.env_entry(held).is_some() {
            found.push(format!(
                "{held} is set, but the service does not use the bus"
            ));
        }
        // (with NATS, only the app services and the console have a user)
        let app_or_console = matches!(spec.kind, Kind::App | Kind::Console);
        if !uses || (overlay == Overlay::Prod && !app_or_console) {
            return found;
        }
        if !c.reads_secret(held, secret, &key, false) {
            found.push(format!(
                "{held} is not read from key {key} of Secret {secret} (not optional)"
            ));
        }
        let user = c.env_entry("NATS_USER").and_then(|e| e["value"].as_str());
        if overlay == Overlay::Prod && user != Some(svc.name) {
            found.push(format!("NATS_USER is {user:?}, expected {:?}", svc.name));
        }
        found
    }

    /// The event bus's `SUBSCRIBERS` in the cluster: every consuming service by name, at its
    /// ClusterIP Service in the dev overlay, with its types (the event bus's syntax).
    pub fn expected_subscribers(&self) -> Vec<String> {
        let spec = |s: &Service| {
            let host = self.cluster_service(Overlay::Dev, s)?;
            let types = match s.consumes {
                Consumes::Only(types) => format!(";types={}", types.join("|")),
                _ => String::new(),
            };
            Some(format!(
                "{}=http://{host}:{}{types}",
                s.name, s.contract_port
            ))
        };
        self.app.subscribers().filter_map(spec).collect()
    }

    /// The event bus's `SUBSCRIBERS` is the registry's.
    fn check_subscribers(&self, m: &Manifests, problems: &mut Vec<String>) {
        let bus = self.app.of_kind(Kind::EventBus).next();
        let Some((bus, deployment)) = bus.and_then(|b| Some((b.name, b.deployment?))) else {
            return;
        };
        let Some((_, c)) = m.deployment_container(deployment, bus) else {
            return; // (reported with the service)
        };
        let env = m.env(&c);
        let actual = env
            .vars
            .get("SUBSCRIBERS")
            .map(|v| v.split(',').map(str::trim));
        let actual: Vec<&str> = actual.into_iter().flatten().collect();
        let expected = self.expected_subscribers();
        if actual != expected {
            problems.push(format!(
                "Deployment {deployment}: SUBSCRIBERS is {actual:?}, the registry says {expected:?}"
            ));
        }
    }

    /// The NATS server of a prod overlay: loads the users ConfigMap (exactly what
    /// `switchyard nats-users <app>` writes) and reads each password from Secret
    /// `nats-users`.
    fn check_nats_server(&self, m: &Manifests, problems: &mut Vec<String>) {
        let at = "StatefulSet nats";
        let nats = m.workload("StatefulSet", "nats");
        let Some((c, nats)) = nats.and_then(|w| Some((w.container("nats")?, w))) else {
            return problems.push(format!("{at} or its container nats is missing"));
        };
        let user = |s: &Service| ServiceUser {
            user: s.name.to_owned(),
            durable: s.consumer_group.map(str::to_owned),
            produces: s.produces.iter().map(|t| (*t).to_owned()).collect(),
            watcher: s.kind == Kind::Console,
        };
        let users: Vec<ServiceUser> = self.app.bus_users().map(user).collect();
        let (stream, prefix) = (self.app.stream, self.app.subject_prefix);
        let expected = nats_users::server_config(stream, prefix, &users);
        let args: Vec<&str> = list(&c.spec["args"]).filter_map(Value::as_str).collect();
        let config = args
            .iter()
            .position(|a| *a == "-c")
            .and_then(|i| args.get(i + 1));
        let Some(config) = config else {
            return problems.push(format!("{at}: no -c <users configuration> argument"));
        };
        let (dir, file) = config.rsplit_once('/').unwrap_or(("", config));
        let volume = nats.volume_at(&c, dir);
        let config_map = volume.and_then(|v| m.config_map_data(text(&v["configMap"]["name"])));
        match config_map.map(|data| data.get(file) == Some(&expected)) {
            Some(true) => {}
            Some(false) => problems.push(format!(
                "{at}: {config} differs from `switchyard nats-users {}` (write it again)",
                self.app.name
            )),
            None => problems.push(format!("{at}: {config} is not mounted from a ConfigMap")),
        }
        let users = users.iter().map(|u| u.user.as_str());
        let all = std::iter::once(nats_users::OPERATOR).chain(users);
        for var in all.map(nats_users::password_variable) {
            if !c.reads_secret(&var, NATS_USERS_SECRET, &var, false) {
                let secret = NATS_USERS_SECRET;
                problems.push(format!(
                    "{at}: {var} is not read from key {var} of Secret {secret}"
                ));
            }
        }
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

    /// The backends of the app's Ingress in `m`.
    pub fn ingress_backends(&self, m: &Manifests) -> Vec<Backend> {
        let ingress = m.get("Ingress", self.app.ingress.name).into_iter();
        let rules = ingress.flat_map(|i| list(&i["spec"]["rules"]));
        let paths = rules.flat_map(|r| list(&r["http"]["paths"]));
        paths
            .filter_map(|p| Backend::from_value(&p["backend"]).ok())
            .collect()
    }

    /// The connections `overlay` needs: the edge proxy (`edge`, a peer id: the ingress
    /// controller, or the Gateway API overlay's proxy) to every one of its `backends`;
    /// Prometheus to every service's ops port; every service that uses the bus to the bus
    /// (NATS, or the HTTP event bus) and, with the HTTP bus, the bus to every subscriber;
    /// every service but the console to the console (its spans); in prod, every service
    /// with a database to PostgreSQL, and the NATS servers to each other.
    pub fn needed_paths(
        &self,
        m: &Manifests,
        overlay: Overlay,
        edge: &str,
        backends: &[Backend],
    ) -> Vec<Path> {
        let mut paths = Vec::new();
        let mut add = |from: &str, service: &str, port: u64| {
            for (to, port) in service_endpoints(m, service, port) {
                paths.push(Path::new(from, &to, port));
            }
        };
        for b in backends {
            if let BackendPort::Number(port) = b.port {
                add(edge, &b.service, port);
            }
        }
        let services = self.services(overlay);
        let bus = services.iter().find(|s| s.kind == Kind::EventBus);
        let nats = (NATS_SERVICE.0.to_owned(), NATS_SERVICE.1);
        let bus_service = bus.map_or(Some(nats), |b| Some((b.service.clone()?, b.port)));
        let console = services.iter().find(|s| s.kind == Kind::Console);
        for s in &services {
            let from = format!("Deployment/{}", s.deployment);
            if let Some((service, port)) = &bus_service
                && (s.uses_bus || s.kind == Kind::Console)
            {
                add(&from, service, u64::from(*port));
            }
            // every other service sends the console its spans
            if let Some(c) = console.filter(|_| s.kind != Kind::Console)
                && let Some(service) = &c.service
            {
                add(&from, service, c.port.into());
            }
            if s.database && !overlay.http_bus() {
                add(&from, POSTGRES_SERVICE.0, POSTGRES_SERVICE.1.into());
            }
            if let (Some(b), Some(service)) = (bus, &s.service)
                && s.uses_bus
            {
                add(
                    &format!("Deployment/{}", b.deployment),
                    service,
                    s.port.into(),
                );
            }
        }
        if !overlay.http_bus() {
            add("StatefulSet/nats", NATS_ROUTES.0, NATS_ROUTES.1.into());
        }
        let prometheus = Self::monitoring().id;
        for s in &services {
            let to = format!("Deployment/{}", s.deployment);
            paths.push(Path::new(&prometheus, &to, OPS_PORT.into()));
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// Checks the NetworkPolicies of `overlay`: prod must have them; where there are any, a
    /// default deny, no `ipBlock`, and every needed connection ([`Self::needed_paths`])
    /// open and nothing else, probed from every workload, strangers in the namespace,
    /// look-alikes in another namespace, the `edge` proxy reaching `backends` (the ingress
    /// controller, or the Gateway API overlay's proxy), Prometheus, the outside
    /// ([`netpol::probe_peers`]), and `extra_peers`.
    pub fn check_network_policies(
        &self,
        m: &Manifests,
        overlay: Overlay,
        edge: &Peer,
        backends: &[Backend],
        extra_peers: &[Peer],
    ) -> Vec<String> {
        if netpol::policies(m).next().is_none() {
            let app = self.app.name;
            let problem =
                format!("{app} prod has no NetworkPolicy: every pod is open to everything");
            return if overlay == Overlay::Prod {
                vec![problem]
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
        let mut edges = vec![edge.clone(), Self::monitoring()];
        edges.extend(extra_peers.iter().cloned());
        let open = netpol::open_paths(m, &netpol::probe_peers(m, &edges));
        let needed = self.needed_paths(m, overlay, &edge.id, backends);
        for p in needed.iter().filter(|p| !open.contains(p)) {
            problems.push(format!("needed but closed: {p}"));
        }
        for p in open.iter().filter(|p| !needed.contains(p)) {
            problems.push(format!("open but not needed: {p}"));
        }
        problems
    }
}

/// The workloads (as `Kind/name`) and container ports behind `port` of Service `service`.
pub fn service_endpoints(m: &Manifests, service: &str, port: u64) -> Vec<(String, u64)> {
    let Some(s) = m.get("Service", service) else {
        return Vec::new();
    };
    let workloads = m.selected_workloads(&string_map(&s["spec"]["selector"]));
    let mut out = Vec::new();
    for p in list(&s["spec"]["ports"]).filter(|p| p["port"] == port) {
        for w in &workloads {
            let containers = w.app_containers();
            if let Some(n) = containers
                .iter()
                .find_map(|c| c.resolve_port(target_port(p)))
            {
                out.push((w.id(), n));
            }
        }
    }
    out
}

/// Checks a Service: type, selector `app`, and port -> targetPort.
fn check_svc(m: &Manifests, name: &str, app: &str, port: u16, kind: &str) -> Vec<String> {
    let Some(s) = m.get("Service", name) else {
        return vec![format!("Service {name} is missing")];
    };
    let mut problems = Vec::new();
    let actual = s["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if actual != kind {
        problems.push(format!("Service {name} is {actual}, not {kind}"));
    }
    if s["spec"]["selector"]["app"] != app {
        problems.push(format!("Service {name}: selector app is not {app:?}"));
    }
    let target = |p: &Value| {
        let t = target_port(p);
        t.as_u64() == Some(port.into()) || t.as_str() == Some(&port.to_string())
    };
    if !list(&s["spec"]["ports"]).any(|p| p["port"] == port && target(p)) {
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

    #[test]
    fn every_app_has_its_images_profiles_and_services() {
        let names: Vec<&str> = contracts().iter().map(Contract::name).collect();
        assert_eq!(names, switchyard_registry::app_names());
        assert_eq!(BLOG_C.image("client"), "switchyard/client");
        assert_eq!(TICKETING_C.image("client"), "switchyard/ticketing-client");
        assert_eq!(BLOG_C.skaffold_profile(Overlay::Prod), "prod");
        assert_eq!(TICKETING_C.skaffold_profile(Overlay::Dev), "ticketing-dev");
        assert_eq!(secret_name("STRIPE_KEY"), "stripe-secret");
        // prod runs no event bus, and expiration has a Service in dev only
        assert!(TICKETING_C.service(Overlay::Dev, "event-bus").is_some());
        assert!(TICKETING_C.service(Overlay::Prod, "event-bus").is_none());
        let expiration = |o| TICKETING_C.service(o, "expiration").unwrap();
        assert_eq!(
            expiration(Overlay::Dev).service.as_deref(),
            Some("expiration-srv")
        );
        assert_eq!(expiration(Overlay::Prod).service, None);
        assert_eq!(
            expiration(Overlay::Prod).image,
            "switchyard/ticketing-expiration"
        );
        let subscribers = TICKETING_C.expected_subscribers();
        let expiration = "expiration=http://expiration-srv:3000;types=order:created";
        assert!(subscribers.contains(&expiration.into()), "{subscribers:?}");
    }

    #[test]
    fn checks_the_order_of_the_ingress_paths_and_the_regexes() {
        let ingress = crate::parse_yaml_documents(BLOG.ingress.yaml)
            .unwrap()
            .remove(0);
        assert_eq!(BLOG_C.check_ingress(&ingress), Vec::<String>::new());
        let other = TICKETING_C.check_ingress(&ingress).join("\n");
        assert!(
            other.contains("expected Ingress ingress-service"),
            "{other}"
        );
        let mut swapped = ingress.clone();
        let paths = swapped["spec"]["rules"][0]["http"]["paths"]
            .as_array_mut()
            .unwrap();
        paths.swap(0, 1);
        assert_eq!(BLOG_C.check_ingress(&swapped).len(), 1);
        let mut plain = ingress;
        plain["metadata"]["annotations"][USE_REGEX_ANNOTATION] = "false".into();
        // without regexes "/posts/abc123/comments" goes to query and "/app.js" nowhere
        let router = Router::new([&plain], BLOG.ingress.host).unwrap();
        let problems = BLOG_C.check_routes(&router).join("\n");
        assert!(problems.contains("/posts/abc123/comments"), "{problems}");
        assert!(problems.contains("/app.js"), "{problems}");
    }
}
