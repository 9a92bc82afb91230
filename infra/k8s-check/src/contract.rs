//! The Kubernetes part of every app's wire contract, as the app registry declares it, and
//! the connections the NetworkPolicies must open (and no other).

use serde_json::Value;
use switchyard_bus_client::nats_users::{self, ServiceUser};
use switchyard_registry::{APPS, App, Consumes, Kind, Service};

use crate::Report;
use crate::ingress::{Backend, BackendPort, Router, USE_REGEX_ANNOTATION};
use crate::manifest::{Container, Manifests, as_text, image_repository, list, name};
use crate::manifest::{string_map, target_port, text};
use crate::netpol::{self, Path, Peer};

/// The container port (named `ops`) of every service's `/healthz`, `/readyz` and
/// `/metrics` in the cluster: one port for all, never targeted by a Service.
pub const OPS_PORT: u16 = 9090;

/// The namespace of the ingress controller that the prod NetworkPolicies admit to the
/// Ingress backends (ingress-nginx's Helm chart, minikube's addon and kind's manifests).
pub const INGRESS_CONTROLLER_NAMESPACE: &str = "ingress-nginx";

/// The namespace whose pods (Prometheus) may scrape the ops ports in prod.
pub const MONITORING_NAMESPACE: &str = "monitoring";

/// NATS's Service and client port; its cluster routes (the headless Service); PostgreSQL's.
pub const NATS_SERVICE: (&str, u16) = ("nats", 4222);
pub const NATS_ROUTES: (&str, u16) = ("nats-headless", 6222);
pub const POSTGRES_SERVICE: (&str, u16) = ("postgres", 5432);

/// The Secret holding every service's `DATABASE_URL` in prod (key = the service's name).
pub const DATABASE_SECRET: &str = "switchyard-database";
/// The HTTP bus's secret (dev), and the Secret of the NATS users' passwords (prod).
pub const BUS_SECRET: (&str, &str) = (switchyard_registry::BUS_SECRET, "event-bus-secret");
pub const NATS_USERS_SECRET: &str = "nats-users";

/// An overlay of an app: `dev` (SQLite, the HTTP event bus) or `prod` (PostgreSQL, NATS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Overlay {
    Dev,
    Prod,
}

impl Overlay {
    pub const ALL: [Overlay; 2] = [Overlay::Dev, Overlay::Prod];

    /// The directory under `infra/k8s/<app>/overlays/`.
    pub fn name(self) -> &'static str {
        ["dev", "prod"][self as usize]
    }

    /// The overlay of directory `name`: `dev`, or a form of prod (`prod-gateway`).
    pub fn of(name: &str) -> Self {
        [Overlay::Prod, Overlay::Dev][usize::from(name == "dev")]
    }
}

/// The Secret that holds `var`: `JWT_KEY` -> `jwt-secret`.
pub fn secret_name(var: &str) -> String {
    let first = var.split('_').next().unwrap_or(var);
    format!("{}-secret", first.to_ascii_lowercase())
}

#[derive(Debug, Clone, Copy)]
pub struct Contract {
    pub app: &'static App,
}

pub fn contracts() -> Vec<Contract> {
    APPS.iter().map(|app| Contract { app }).collect()
}

/// A service deployed by an overlay (the registry's [`Service`], which it derefs to), with
/// its ClusterIP Service in this overlay.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub spec: &'static Service,
    pub deployment: &'static str,
    pub service: Option<String>,
    pub image: String,
    pub subscriber: bool,
}

impl std::ops::Deref for Deployed {
    type Target = Service;

    fn deref(&self) -> &Service {
        self.spec
    }
}

impl Deployed {
    pub fn at(&self) -> String {
        format!("Deployment {} container {}:", self.deployment, self.name)
    }
}

fn subscriber(s: &Service) -> bool {
    s.kind == Kind::App && s.consumes != Consumes::Nothing
}

/// The edge of an overlay: the proxy that reaches its `backends` (the ingress controller,
/// or the Gateway API overlay's proxy), and peers that must not (`others`).
#[derive(Debug, Clone)]
pub struct Edge {
    pub proxy: Peer,
    pub backends: Vec<Backend>,
    pub others: Vec<Peer>,
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

    /// The skaffold profile of `overlay`: the blog's are `dev` and `prod` (the default config
    /// is the blog's dev), every other app's `<app>-<overlay>`.
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

    /// The ClusterIP Service of `s` in `overlay`: the registry's; with the HTTP event bus, a
    /// subscriber without one gets `<name>-srv` (the bus must reach it: ticketing's expiration).
    pub fn cluster_service(&self, overlay: Overlay, s: &Service) -> Option<String> {
        let needs_one = overlay == Overlay::Dev && subscriber(s);
        let own = needs_one.then(|| format!("{}-srv", s.name));
        s.k8s_service.map(str::to_owned).or(own)
    }

    pub fn services(&self, overlay: Overlay) -> Vec<Deployed> {
        let deployed = self.app.services.iter().filter_map(|spec| {
            Some(Deployed {
                spec,
                deployment: spec.deployment.filter(|_| self.deploys(overlay, spec))?,
                service: self.cluster_service(overlay, spec),
                image: self.image(spec.name),
                subscriber: subscriber(spec),
            })
        });
        deployed.collect()
    }

    /// The app services (not the event bus, not the console) deployed in `overlay`.
    pub fn app_services(&self, overlay: Overlay) -> Vec<Deployed> {
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
        let mut r = Report::default();
        self.check_services(m, overlay, &mut r);
        for (at, _, c) in m.containers() {
            r.at = format!("{at}:");
            for var in self.app.secrets.iter().filter(|v| c.literal(v)) {
                r.check(true, format!("{var} is a literal, not from its Secret"));
            }
        }
        match overlay {
            Overlay::Dev => self.check_subscribers(m, &mut r),
            Overlay::Prod => self.check_nats_server(m, &mut r),
        }
        for svc in self.services(overlay) {
            self.check_deployment(m, overlay, &svc, &mut r);
        }
        r.problems
    }

    fn check_deployment(&self, m: &Manifests, overlay: Overlay, svc: &Deployed, r: &mut Report) {
        r.at = format!("Deployment {}:", svc.deployment);
        let Some(w) = m.workload("Deployment", svc.deployment) else {
            return r.check(true, "is missing");
        };
        let (spec, template) = (&w.object["spec"], &w.object["spec"]["template"]);
        let labels = [
            ("label", &w.object["metadata"]["labels"]),
            ("selector", &spec["selector"]["matchLabels"]),
            ("pod label", &template["metadata"]["labels"]),
        ];
        for (what, labels) in labels {
            r.expect(&format!("{what} app"), &labels["app"], svc.name);
        }
        let (annotations, ops) = (&template["metadata"]["annotations"], OPS_PORT.to_string());
        for (key, want) in [("scrape", "true"), ("port", &ops), ("path", "/metrics")] {
            let key = format!("prometheus.io/{key}");
            r.check(annotations[&key] != want, format!("{key} is not {want}"));
        }
        let mut containers = w.app_containers().into_iter();
        let Some(c) = containers.find(|c| c.name() == svc.name) else {
            return r.check(true, format!("no container named {}", svc.name));
        };
        r.at = svc.at();
        self.check_container(m, svc, &c, r);
        self.check_bus(overlay, svc, &c, r);
    }

    /// A service's container; its operational endpoints are on their own port `ops`, where no
    /// Service routes (so no Ingress can make it public).
    fn check_container(&self, m: &Manifests, svc: &Deployed, c: &Container, r: &mut Report) {
        let (env, ports, port) = (m.env(c), c.ports(), svc.contract_port);
        let (http, ops) = ((Some("http"), port.into()), (Some("ops"), OPS_PORT.into()));
        r.check(!ports.contains(&http), format!("no port http = {port}"));
        r.check(!ports.contains(&ops), format!("no port ops = {OPS_PORT}"));
        let image = image_repository(c.image());
        r.check(image != svc.image, format!("runs image {image}"));
        let actual = env.get("PORT").map_or("", String::as_str);
        let wrong = actual != port.to_string();
        r.check(wrong, format!("PORT={actual}, not {port}"));
        let service = env.get("SWITCHYARD_SERVICE").map_or("", String::as_str);
        let named = self.names_service(service, svc.name);
        r.check(!named, format!("SWITCHYARD_SERVICE={service}"));
        let wrong = env.get("OPS_PORT") != Some(&OPS_PORT.to_string());
        r.check(wrong, format!("OPS_PORT is not {OPS_PORT}"));
        // Every app service that checks sessions reads each of the app's secrets from its
        // key of its Secret (`JWT_KEY` -> `jwt-secret`), not optionally; no other gets them.
        for var in self.app.secrets.iter().filter(|_| svc.kind == Kind::App) {
            let secret = secret_name(var);
            let read = c.reads_secret(var, &secret, var, false);
            let given = c.env_entry(var).is_some();
            let (unread, ungiven) = (svc.sessions && !read, !svc.sessions && given);
            r.check(unread, format!("{var} is not read from {secret}"));
            r.check(ungiven, format!("{var} given without sessions"));
        }
        let ops = |p: &Value| c.resolve_port(target_port(p)) == Some(OPS_PORT.into());
        let services = m.of_kind("Service");
        let services = services.filter(|s| s["spec"]["selector"]["app"] == svc.name);
        for s in services.filter(|s| list(&s["spec"]["ports"]).any(ops)) {
            r.check(true, format!("Service {} routes to its ops port", name(s)));
        }
    }

    /// The Services of `overlay` (and the registry's extra ones), no other one exposed, and none
    /// of the objects `overlay` must not deploy (prod: the event bus, the dev-only Services).
    fn check_services(&self, m: &Manifests, overlay: Overlay, r: &mut Report) {
        let extras = self.app.services.iter().flat_map(|s| {
            let extras = s.extra_k8s_services.iter();
            extras.map(move |e| (s, e.name.to_owned(), e.kind))
        });
        let cluster = self.services(overlay).into_iter();
        let cluster = cluster.filter_map(|s| Some((s.spec, s.service?, "ClusterIP")));
        let expected: Vec<(&Service, String, &str)> = extras.chain(cluster).collect();
        for (s, name, kind) in &expected {
            r.at = format!("Service {name}");
            let Some(service) = m.get("Service", name) else {
                r.check(true, "is missing");
                continue;
            };
            r.at.push(':');
            let (spec, port) = (&service["spec"], s.contract_port);
            let actual = spec["type"].as_str().unwrap_or("ClusterIP");
            r.check(actual != *kind, format!("is {actual}, not {kind}"));
            let app = &spec["selector"]["app"];
            r.check(app != s.name, format!("selector app is not {}", s.name));
            let target = |p: &Value| as_text(target_port(p)) == port.to_string();
            let ok = list(&spec["ports"]).any(|p| p["port"] == port && target(p));
            r.check(!ok, format!("no port {port} -> targetPort {port}"));
        }
        for service in m.of_kind("Service") {
            let n = name(service);
            let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
            let declared = expected.iter().any(|e| (e.1.as_str(), e.2) == (n, kind));
            let exposed = matches!(kind, "NodePort" | "LoadBalancer") && !declared;
            r.at = format!("Service {n}:");
            r.check(exposed, format!("is a {kind}: only the Ingress exposes"));
        }
        r.at = format!("{}:", overlay.name());
        for s in self.app.services.iter().filter(|s| s.deployment.is_some()) {
            let mut unwanted = vec![("Service", format!("{}-srv", s.name))];
            unwanted.extend(s.k8s_service.map(|n| ("Service", n.to_owned())));
            // (its own Service, and the registry's extra ones, posts-srv, are wanted)
            unwanted.retain(|(_, n)| !expected.iter().any(|e| e.1 == *n));
            if !self.deploys(overlay, s) {
                unwanted.extend(s.deployment.map(|d| ("Deployment", d.to_owned())));
            }
            for (kind, name) in unwanted.iter().filter(|(k, n)| m.get(k, n).is_some()) {
                r.check(true, format!("deploys {kind} {name}, which it must not"));
            }
        }
    }

    /// The Ingress: the only one, the contract's (every rule's paths, no default backend).
    pub fn check_ingress(&self, m: &Manifests, overlay: &str) -> Vec<String> {
        let mut r = Report::default();
        let (spec, ingresses) = (&self.app.ingress, m.of_kind("Ingress").count());
        r.at = format!("{overlay}:");
        r.check(ingresses != 1, format!("{ingresses} Ingresses, not 1"));
        let Some(ingress) = m.get("Ingress", spec.name) else {
            r.check(true, format!("Ingress {} is missing", spec.name));
            return r.problems;
        };
        r.at = format!("Ingress {}:", spec.name);
        // (kubernetes-validate only warns about an apiVersion it does not know)
        r.expect("apiVersion", &ingress["apiVersion"], "networking.k8s.io/v1");
        let class = &ingress["spec"]["ingressClassName"];
        r.check(class != spec.class, format!("ingressClassName is {class}"));
        let regex = &ingress["metadata"]["annotations"][USE_REGEX_ANNOTATION];
        r.expect("use-regex", regex, "true");
        let backend = |b: &Value| {
            let backend = Backend::from_value(b);
            backend.map_or_else(|e| e.to_string(), |b| b.to_string())
        };
        let mut actual = Vec::new();
        for rule in list(&ingress["spec"]["rules"]) {
            for p in list(&rule["http"]["paths"]) {
                let (path, path_type) = (text(&p["path"]), text(&p["pathType"]));
                let (host, backend) = (text(&rule["host"]), backend(&p["backend"]));
                actual.push(format!("{host} {path} {path_type} {backend}"));
            }
        }
        let default = Some(&ingress["spec"]["defaultBackend"]).filter(|b| !b.is_null());
        actual.extend(default.map(|b| format!("default backend {}", backend(b))));
        let expected = spec.paths.iter().map(|(path, path_type, service, port)| {
            format!("{} {path} {path_type} {service}:{port}", spec.host)
        });
        let expected: Vec<String> = expected.collect();
        let what = format!("paths are {actual:?}, not {expected:?}");
        r.check(actual != expected, what);
        match Router::new(m.of_kind("Ingress"), spec.host) {
            Ok(router) => {
                r.check(!router.uses_regex(), "the Ingress paths are not regexes");
                r.problems.extend(self.check_routes(&router));
            }
            Err(e) => r.problems.push(e.to_string()),
        }
        r.problems
    }

    /// The contract's requests reach the contract's Services.
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

    /// How a service proves to the bus that it is the app's: with the HTTP bus (dev), its
    /// Secret; with NATS (prod), its own user (the console's too, which reads the bus). A
    /// service that does not use the bus gets neither, and neither is ever a literal.
    fn check_bus(&self, overlay: Overlay, svc: &Deployed, c: &Container, r: &mut Report) {
        let (prod, http, nats) = (overlay == Overlay::Prod, BUS_SECRET.0, "NATS_PASSWORD");
        let (held, not_held) = if prod { (nats, http) } else { (http, nats) };
        let (secret, key) = match prod {
            true => (NATS_USERS_SECRET, nats_users::password_variable(svc.name)),
            false => (BUS_SECRET.1, http.to_owned()),
        };
        for var in [held, not_held] {
            r.check(c.literal(var), format!("{var} is a literal value"));
        }
        let set = c.env_entry(not_held).is_some();
        r.check(set, format!("{not_held} is set, but this bus needs none"));
        let uses = svc.uses_the_bus() || svc.kind == Kind::Console;
        let set = !uses && c.env_entry(held).is_some();
        r.check(set, format!("{held} is set, but it uses no bus"));
        // (with NATS, only the app services and the console have a user)
        if !uses || (prod && !matches!(svc.kind, Kind::App | Kind::Console)) {
            return;
        }
        let read = c.reads_secret(held, secret, &key, false);
        r.check(!read, format!("{held} is not key {key} of Secret {secret}"));
        let user = c.env_entry("NATS_USER").map_or("", |e| text(&e["value"]));
        r.check(prod && user != svc.name, format!("NATS_USER is {user:?}"));
    }

    /// The event bus's `SUBSCRIBERS` in the cluster (the event bus's syntax).
    pub fn expected_subscribers(&self) -> Vec<String> {
        let spec = |s: &Service| {
            let host = self.cluster_service(Overlay::Dev, s)?;
            let types = match s.consumes {
                Consumes::Only(types) => format!(";types={}", types.join("|")),
                _ => String::new(),
            };
            let (name, port) = (s.name, s.contract_port);
            Some(format!("{name}=http://{host}:{port}{types}"))
        };
        self.app.subscribers().filter_map(spec).collect()
    }

    fn check_subscribers(&self, m: &Manifests, r: &mut Report) {
        let bus = self.app.of_kind(Kind::EventBus).next();
        let bus = bus.and_then(|b| m.container("Deployment", b.deployment?, b.name));
        let Some((w, c)) = bus else {
            return; // (reported with the service)
        };
        let env = m.env(&c);
        let entries = env.get("SUBSCRIBERS").map_or("", String::as_str).split(',');
        let actual: Vec<&str> = entries.map(str::trim).filter(|s| !s.is_empty()).collect();
        let expected = self.expected_subscribers();
        r.at = format!("{}:", w.id());
        let what = format!("SUBSCRIBERS is not {expected:?}");
        r.check(actual != expected, what);
    }

    /// The NATS server of a prod overlay: loads the users ConfigMap (exactly what
    /// `switchyard nats-users <app>` writes), each password from Secret `nats-users`.
    fn check_nats_server(&self, m: &Manifests, r: &mut Report) {
        r.at = "StatefulSet nats:".into();
        let Some((nats, c)) = m.container("StatefulSet", "nats", "nats") else {
            return r.check(true, "is missing, or its container nats");
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
        let args = c.command_line();
        let i = args.iter().position(|a| *a == "-c");
        let Some(config) = i.and_then(|i| args.get(i + 1)) else {
            return r.check(true, "no -c <users configuration> argument");
        };
        let (dir, file) = config.rsplit_once('/').unwrap_or(("", config));
        let volume = nats.volume_at(&c, dir);
        let data = volume.and_then(|v| m.data("ConfigMap", text(&v["configMap"]["name"])));
        r.check(data.is_none(), format!("{config} is not from a ConfigMap"));
        let differs = data.is_some_and(|d| d.get(file) != Some(&expected));
        let what = format!("{config} is not `switchyard nats-users`'s");
        r.check(differs, what);
        let users = users.iter().map(|u| u.user.as_str());
        let all = std::iter::once(nats_users::OPERATOR).chain(users);
        for var in all.map(nats_users::password_variable) {
            let read = c.reads_secret(&var, NATS_USERS_SECRET, &var, false);
            r.check(!read, format!("{var} is not its key of nats-users"));
        }
    }

    /// The ingress controller: a pod of its namespace with ingress-nginx's labels.
    pub fn ingress_controller() -> Peer {
        let id = format!("the ingress controller (namespace {INGRESS_CONTROLLER_NAMESPACE})");
        let pod = netpol::labels(&[
            ("app.kubernetes.io/name", "ingress-nginx"),
            ("app.kubernetes.io/component", "controller"),
        ]);
        Peer::in_namespace(id, INGRESS_CONTROLLER_NAMESPACE, pod)
    }

    pub fn monitoring() -> Peer {
        let id = format!("Prometheus (namespace {MONITORING_NAMESPACE})");
        let pod = netpol::labels(&[("app.kubernetes.io/name", "prometheus")]);
        Peer::in_namespace(id, MONITORING_NAMESPACE, pod)
    }

    pub fn ingress_edge(&self, m: &Manifests) -> Edge {
        let ingress = m.get("Ingress", self.app.ingress.name).into_iter();
        let rules = ingress.flat_map(|i| list(&i["spec"]["rules"]));
        let paths = rules.flat_map(|r| list(&r["http"]["paths"]));
        let backends = paths.filter_map(|p| Backend::from_value(&p["backend"]).ok());
        let (proxy, backends, others) = (Self::ingress_controller(), backends.collect(), vec![]);
        Edge {
            proxy,
            backends,
            others,
        }
    }

    /// The connections `overlay` needs: the edge to its backends, Prometheus to the ops ports,
    /// the bus's users to the bus (and the HTTP bus to the subscribers), every service to the
    /// console (its spans); in prod, to PostgreSQL, and the NATS servers to each other.
    pub fn needed_paths(&self, m: &Manifests, overlay: Overlay, edge: &Edge) -> Vec<Path> {
        let mut paths = Vec::new();
        let mut add = |from: &str, service: &str, port: u64| {
            let ends = service_endpoints(m, service, port).into_iter();
            paths.extend(ends.map(|(to, port)| Path::new(from, &to, port)));
        };
        for b in &edge.backends {
            if let BackendPort::Number(port) = b.port {
                add(&edge.proxy.id, &b.service, port);
            }
        }
        let (services, prod) = (self.services(overlay), overlay == Overlay::Prod);
        let bus = services.iter().find(|s| s.kind == Kind::EventBus);
        let cluster = |s: &Deployed| Some((s.service.clone()?, s.contract_port));
        let nats = (NATS_SERVICE.0.to_owned(), NATS_SERVICE.1);
        let bus_service = bus.map_or(Some(nats), cluster);
        let console = services.iter().find(|s| s.kind == Kind::Console);
        let console = console.and_then(cluster);
        for s in &services {
            let from = format!("Deployment/{}", s.deployment);
            let is_console = s.kind == Kind::Console;
            if let Some((to, port)) = bus_service.as_ref().filter(|_| s.subscriber || is_console) {
                add(&from, to, u64::from(*port));
            }
            // every other service sends the console its spans
            if let Some((to, port)) = console.as_ref().filter(|_| !is_console) {
                add(&from, to, u64::from(*port));
            }
            if s.database && prod {
                add(&from, POSTGRES_SERVICE.0, POSTGRES_SERVICE.1.into());
            }
            if let (Some(b), Some(service), true) = (bus, &s.service, s.subscriber) {
                let bus = format!("Deployment/{}", b.deployment);
                add(&bus, service, s.contract_port.into());
            }
        }
        if prod {
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

    /// The NetworkPolicies of `overlay`: prod must have them, dev none (as infra/README.md
    /// says); a default deny, no `ipBlock`, and exactly the needed connections open.
    pub fn check_network_policies(&self, m: &Manifests, o: Overlay, edge: &Edge) -> Vec<String> {
        let mut r = Report::default();
        let (none, prod) = (netpol::policies(m).next().is_none(), o == Overlay::Prod);
        r.at = format!("{} {}:", self.app.name, o.name());
        let unguarded = "no NetworkPolicy: every pod is open to everything";
        r.check(none && prod, unguarded);
        let readme = "has NetworkPolicies: infra/README.md says it has none";
        r.check(!none && !prod, readme);
        if none {
            return r.problems;
        }
        r.problems.extend(netpol::ip_block_peers(m));
        let deny = netpol::denies_ingress_by_default(m);
        r.check(!deny, "no default-deny policy (podSelector {}, Ingress)");
        let mut edges = vec![edge.proxy.clone(), Self::monitoring()];
        edges.extend(edge.others.iter().cloned());
        let open = netpol::open_paths(m, &netpol::probe_peers(m, &edges));
        let needed = self.needed_paths(m, o, edge);
        for p in needed.iter().filter(|p| !open.contains(p)) {
            r.check(true, format!("needed but closed: {p}"));
        }
        for p in open.iter().filter(|p| !needed.contains(p)) {
            r.check(true, format!("open but not needed: {p}"));
        }
        r.problems
    }
}

/// The workloads (`Kind/name`) and container ports behind `port` of Service `service`.
pub fn service_endpoints(m: &Manifests, service: &str, port: u64) -> Vec<(String, u64)> {
    let Some(s) = m.get("Service", service) else {
        return Vec::new();
    };
    let workloads = m.selected_workloads(&string_map(&s["spec"]["selector"]));
    let mut out = Vec::new();
    for p in list(&s["spec"]["ports"]).filter(|p| p["port"] == port) {
        for w in &workloads {
            let (containers, port) = (w.app_containers(), target_port(p));
            let target = containers.iter().find_map(|c| c.resolve_port(port));
            out.extend(target.map(|n| (w.id(), n)));
        }
    }
    out
}
