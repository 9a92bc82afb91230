//! Cross-reference checks of every app's rendered overlays (`target/k8s/<app>-<overlay>.yaml`,
//! rendered here with `kubectl kustomize` when missing or stale) against each other,
//! `skaffold.yaml`, `infra/README.md` and each app's contract in the registry; and, for
//! every check, an overlay broken so that it fails ([`BREAKAGES`]).
//!
//! `prod-gateway` is prod with the Ingress swapped for a Gateway and HTTPRoutes
//! (`infra/k8s/<app>/gateway-api`): checked like prod, its routing table equal to the
//! Ingress's, its NetworkPolicies admitting the gateway's proxies instead of ingress-nginx.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::Value;
use switchyard_k8s_check::contract::{self, Contract, DATABASE_SECRET, NATS_SERVICE, Overlay};
use switchyard_k8s_check::gateway::{self, GATEWAY_OVERLAY};
use switchyard_k8s_check::ingress::Router;
use switchyard_k8s_check::manifest::{Manifests, id, list, name};
use switchyard_k8s_check::secrets::{self, Created};
use switchyard_k8s_check::skaffold::Skaffold;
use switchyard_k8s_check::{checks, netpol, parse_yaml_documents, render};
use switchyard_registry::Kind;

const OVERLAYS: [&str; 3] = ["dev", "prod", GATEWAY_OVERLAY];

/// The environment of the services, a row each: overlay, services, variable, value. The
/// services: `all`, `app` (the app services), `subscribers` (those the bus delivers to),
/// `db` (those with a database), or `<app>/<service>`. The value: `{port}` (the service's),
/// `{bus}` (the HTTP event bus's URL), `{stream}` and `{prefix}` (the app's NATS stream
/// and subject prefix); `set`: any value; `!x`: unset or not `x`; `x*`: unset or `x...`.
const ENV: &str = "
    dev   all          LOG_FORMAT          json
    dev   all          RUST_LOG            set
    dev   all          PORT                {port}
    dev   subscribers  EVENT_BUS_URL       {bus}
    dev   db           DATABASE_URL        sqlite:*
    dev   db           MIGRATE_ON_START    !false
    prod  app          MIGRATE_ON_START    false
    prod  subscribers  EVENT_BUS_URL       nats://nats:4222
    prod  subscribers  BUS_STREAM          {stream}
    prod  subscribers  BUS_SUBJECT_PREFIX  {prefix}
    # Payments names its provider (it refuses to start otherwise): Stripe in prod, the test
    # provider in dev. Prod refuses session tokens without `exp`. Auth sits behind a proxy.
    prod  ticketing/payments  PAYMENT_PROVIDER    stripe
    dev   ticketing/payments  PAYMENT_PROVIDER    test
    prod  ticketing/auth      JWT_REQUIRE_EXP     true
    prod  ticketing/tickets   JWT_REQUIRE_EXP     true
    prod  ticketing/orders    JWT_REQUIRE_EXP     true
    prod  ticketing/payments  JWT_REQUIRE_EXP     true
    prod  ticketing/auth      TRUSTED_PROXY_HOPS  1
    dev   ticketing/auth      TRUSTED_PROXY_HOPS  1
    # The blog's contract has moderation block \"orange\".
    dev   blog/moderation     BLOCKED_WORDS       orange
";

/// Secrets a service reads from a Secret by key: service, variable, Secret, and the overlay
/// that requires it (every other reads it optionally). Prod charges with Stripe: payments
/// refuses to start without its key.
const KEYED_SECRETS: &str = "
    ticketing/payments  STRIPE_KEY              stripe-secret  prod
    ticketing/client    STRIPE_PUBLISHABLE_KEY  stripe-secret  none
";

/// Where the prod PostgreSQL's init script reads the services' DATABASE_URLs.
const DATABASE_SECRET_MOUNT: &str = "/etc/switchyard-database";

fn contract(app: &str) -> Contract {
    let found = contract::contracts().into_iter().find(|c| c.name() == app);
    found.unwrap_or_else(|| panic!("no app {app}"))
}

fn read(path: &str) -> String {
    let path = render::repo_root().join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rendered(app: &str, overlay: &str) -> &'static str {
    static CACHE: LazyLock<Mutex<BTreeMap<String, &'static str>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(format!("{app}-{overlay}")).or_insert_with(|| {
        let text = render::rendered_overlay(&render::repo_root(), app, overlay);
        let path = render::overlay_path(app, overlay);
        let text = text.unwrap_or_else(|e| panic!("cannot render {path}: {e}"));
        Box::leak(text.into_boxed_str())
    })
}

fn parse(app: &str, overlay: &str) -> Manifests {
    Manifests::parse(rendered(app, overlay)).unwrap()
}

/// The Secrets infra/README.md creates in the app's namespace (`-n <app>`).
fn readme_secrets(c: Contract) -> Created {
    let mut all = secrets::readme_secrets(&read("infra/README.md"));
    all.remove(c.name()).unwrap_or_default()
}

fn skaffold() -> Skaffold {
    Skaffold::parse(&read("skaffold.yaml")).unwrap()
}

/// The rows of a table, split into words (no comments, no blank lines).
fn rows(table: &str) -> impl Iterator<Item = Vec<&str>> {
    let lines = table.lines().map(str::trim);
    let rows = lines.filter(|l| !l.is_empty() && !l.starts_with('#'));
    rows.map(|l| l.split_whitespace().collect())
}

fn fail_on(what: &str, problems: &[String]) {
    let list = problems.join("\n  - ");
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {list}",
        problems.len()
    );
}

/// Every problem of `text`, overlay `name` of app `c` as rendered.
fn problems(c: Contract, name: &str, text: &str) -> Vec<String> {
    let overlay = if name == "dev" {
        Overlay::Dev
    } else {
        Overlay::Prod
    };
    let rendered = Manifests::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut problems = Vec::new();
    // as the cluster will see it: in prod, with the Secrets the README creates
    let mut objects = rendered.objects().to_vec();
    if overlay == Overlay::Prod {
        for s in rendered.of_kind("Secret") {
            problems.push(format!("prod renders {}: prod creates no Secret", id(s)));
        }
        let readme = readme_secrets(c);
        let what = format!("-n {}", c.name());
        problems.extend(secrets::check_documented(&rendered, &readme, &what));
        let placeholders = readme
            .iter()
            .map(|(n, data)| secrets::placeholder_secret(n, data));
        objects.extend(placeholders);
    }
    let m = &Manifests::from_values(objects);
    problems.extend(checks::all(m));
    let profile = c.skaffold_profile(overlay);
    let artifacts = skaffold().artifacts(Some(&profile)).unwrap();
    let images = artifacts.into_iter().map(|a| a.image).collect();
    problems.extend(checks::images_built(m, &images));
    problems.extend(c.check(m, overlay));
    problems.extend(env(c, overlay, m));
    problems.extend(match overlay {
        Overlay::Dev => dev_setup(c, m),
        Overlay::Prod => prod_setup(c, m, text),
    });
    problems.extend(edge(c, name, overlay, m));
    problems
}

/// [`ENV`] and [`KEYED_SECRETS`].
fn env(c: Contract, overlay: Overlay, m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    let services = c.services(overlay);
    let bus = services.iter().find(|s| s.kind == Kind::EventBus);
    let bus = bus.map(|b| format!("http://{}:{}", b.service.as_deref().unwrap_or("?"), b.port));
    for svc in &services {
        let Some((_, container)) = m.deployment_container(svc.deployment, svc.name) else {
            continue; // (reported by the contract's checks)
        };
        let env = m.env(&container);
        let qualified = format!("{}/{}", c.name(), svc.name);
        for row in rows(ENV).filter(|r| r[0] == overlay.name()) {
            let [_, who, var, want] = row[..] else {
                panic!("not an ENV row: {row:?}");
            };
            let applies = match who {
                "all" => true,
                "app" => svc.kind == Kind::App,
                "subscribers" => svc.uses_bus,
                "db" => svc.database,
                _ => who == qualified,
            };
            let want = want
                .replace("{port}", &svc.port.to_string())
                .replace("{bus}", bus.as_deref().unwrap_or("?"))
                .replace("{stream}", c.app.stream)
                .replace("{prefix}", c.app.subject_prefix);
            let actual = env.vars.get(var).map(String::as_str);
            let ok = match (want.strip_prefix('!'), want.strip_suffix('*')) {
                (Some(not), _) => actual != Some(not),
                (_, Some(prefix)) => actual.is_none_or(|a| a.starts_with(prefix)),
                _ if want == "set" => actual.is_some(),
                _ => actual == Some(want.as_str()),
            };
            if applies && !ok {
                problems.push(format!(
                    "{}: {var} is {actual:?}, expected {want}",
                    svc.name
                ));
            }
        }
        for row in rows(KEYED_SECRETS).filter(|r| r[0] == qualified) {
            let [_, var, secret, required_in] = row[..] else {
                panic!("not a KEYED_SECRETS row: {row:?}");
            };
            let optional = required_in != overlay.name();
            if !container.reads_secret(var, secret, var, optional) {
                let how = if optional { "optional" } else { "required" };
                let at = svc.at();
                problems.push(format!(
                    "{at}: {var} is not read from key {var} of Secret {secret} ({how})"
                ));
            }
        }
    }
    problems
}

/// The edge: the Ingress or the Gateway API objects, and the NetworkPolicies that admit it.
fn edge(c: Contract, name: &str, overlay: Overlay, m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    let (proxy, backends, others) = if name == GATEWAY_OVERLAY {
        problems.extend(gateway::check(&c, m));
        let gateway = m
            .of_kind("Gateway")
            .next()
            .map_or("", |gw| gw["metadata"]["name"].as_str().unwrap_or(""));
        let others = gateway::other_edge_peers(gateway);
        (
            gateway::gateway_proxy(gateway),
            gateway::http_route_backends(m),
            others,
        )
    } else {
        let ingress = c.app.ingress.name;
        match m.get("Ingress", ingress) {
            Some(ingress) => problems.extend(c.check_ingress(ingress)),
            None => problems.push(format!("Ingress {ingress} is missing")),
        }
        let ingresses = m.of_kind("Ingress").count();
        if ingresses != 1 {
            problems.push(format!("{ingresses} Ingress objects, expected 1"));
        }
        let router = Router::new(m.of_kind("Ingress"), c.app.ingress.host).unwrap();
        if !router.uses_regex() {
            problems.push("the Ingress paths are not regexes".to_owned());
        }
        problems.extend(c.check_routes(&router));
        (
            Contract::ingress_controller(),
            c.ingress_backends(m),
            Vec::new(),
        )
    };
    problems.extend(c.check_network_policies(m, overlay, &proxy, &backends, &others));
    if overlay == Overlay::Dev {
        if netpol::policies(m).next().is_some() {
            let why = "infra/README.md says it has none (update both)";
            problems.push(format!("dev has NetworkPolicies: {why}"));
        }
        return problems;
    }
    // The paths are derived from the registry, not from the policies: make sure the
    // derivation found every kind of path, so that an empty list proves nothing.
    let needed = c.needed_paths(m, overlay, &proxy.id, &backends);
    let reached = needed.iter().filter(|p| p.from == proxy.id).count();
    let routed: BTreeSet<&str> = c.app.ingress.paths.iter().map(|p| p.2).collect();
    if reached < routed.len() {
        let (proxy, routed) = (&proxy.id, routed.len());
        problems.push(format!(
            "{proxy} needs {reached} path(s) for {routed} backend(s)"
        ));
    }
    for s in c.app_services(overlay) {
        let from = format!("Deployment/{}", s.deployment);
        let to = |to: &str, port| {
            needed
                .iter()
                .any(|p| (&p.from, &*p.to, p.port) == (&from, to, port))
        };
        let (nats, postgres) = (
            to("StatefulSet/nats", 4222),
            to("StatefulSet/postgres", 5432),
        );
        if nats != s.uses_bus || postgres != s.database {
            problems.push(format!(
                "{}: needs NATS {nats} / PostgreSQL {postgres}, uses the bus {} / has a database {}",
                s.name, s.uses_bus, s.database
            ));
        }
    }
    problems
}

/// Dev is the embedded setup: one replica, SQLite on a volume claim, and only the
/// throwaway Secrets of the dev overlay's secretGenerator.
fn dev_setup(c: Contract, m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for svc in c.services(Overlay::Dev) {
        let Some((d, main)) = m.deployment_container(svc.deployment, svc.name) else {
            continue; // (reported by the contract's checks)
        };
        let (name, spec) = (svc.name, &d.object["spec"]);
        if spec["replicas"] != 1 {
            problems.push(format!("{}: not one replica", svc.deployment));
        }
        if !svc.database {
            continue;
        }
        let data_dir = m
            .env(&main)
            .vars
            .get("DATA_DIR")
            .cloned()
            .unwrap_or_default();
        let claim = format!("{name}-data");
        match d.volume_at(&main, &data_dir) {
            _ if !data_dir.starts_with('/') => {
                problems.push(format!("{name}: DATA_DIR {data_dir:?} is not absolute"))
            }
            None => problems.push(format!("{name}: nothing mounted at DATA_DIR")),
            Some(v) if v["persistentVolumeClaim"]["claimName"] != claim => {
                problems.push(format!("{name}: DATA_DIR is not on PVC {claim}"))
            }
            Some(v) if !v["emptyDir"].is_null() => {
                problems.push(format!("{name}: data volume is both PVC and emptyDir"))
            }
            Some(_) => {}
        }
        if spec["strategy"]["type"] != "Recreate" {
            problems.push(format!("{name}: not Recreate (one SQLite owner at a time)"));
        }
    }
    let overlay = render::overlay_path(c.name(), "dev");
    let kustomization = read(&format!("{overlay}/kustomization.yaml"));
    let generated = secrets::generated_secrets(&kustomization).unwrap();
    for s in m
        .of_kind("Secret")
        .map(name)
        .filter(|s| !generated.iter().any(|g| g == s))
    {
        problems.push(format!(
            "Secret {s} is not made by the dev overlay's secretGenerator"
        ));
    }
    problems
}

/// Prod runs PostgreSQL ([`postgres`]) and NATS JetStream, no HTTP event bus, and replicas
/// of every service, rolled out without downtime.
fn prod_setup(c: Contract, m: &Manifests, text: &str) -> Vec<String> {
    let mut problems = postgres(c, m);
    if text.contains("event-bus") {
        problems.push("prod deploys or references the HTTP event bus".into());
    }
    for svc in c.app_services(Overlay::Prod) {
        let Some(d) = m.workload("Deployment", svc.deployment) else {
            continue; // (reported by the contract's checks)
        };
        let (name, spec) = (svc.name, &d.object["spec"]);
        let replicas = spec["replicas"].as_u64().unwrap_or(1);
        if replicas < 2 {
            problems.push(format!("{}: {replicas} replica(s)", svc.deployment));
        }
        let mut pdbs = m.of_kind("PodDisruptionBudget");
        let pdb = pdbs.find(|p| p["spec"]["selector"]["matchLabels"]["app"] == name);
        match pdb.map(|p| p["spec"]["minAvailable"].as_u64()) {
            None => problems.push(format!("{name}: no PodDisruptionBudget")),
            Some(Some(min)) if min >= replicas => {
                problems.push(format!("{name}: minAvailable blocks every disruption"))
            }
            Some(_) => {}
        }
        if spec["strategy"]["rollingUpdate"]["maxUnavailable"] != 0 {
            problems.push(format!("{name}: not a zero-downtime rolling update"));
        }
    }
    let nats = m.workload("StatefulSet", NATS_SERVICE.0);
    let container = nats.as_ref().and_then(|n| n.container("nats"));
    if !container.is_some_and(|n| n.command_line().contains(&"-js")) {
        problems.push("nats does not run with JetStream (-js)".into());
    }
    let storage = nats.map(|n| &n.object["spec"]["volumeClaimTemplates"]);
    if storage.is_none_or(|s| list(s).next().is_none()) {
        problems.push("nats: no persistent JetStream storage".into());
    }
    let port = u64::from(NATS_SERVICE.1);
    if contract::service_endpoints(m, NATS_SERVICE.0, port).is_empty() {
        problems.push("Service nats does not reach NATS on 4222".into());
    }
    problems
}

/// One PostgreSQL server, initialised with a database and a role per service from the
/// Secret [`DATABASE_SECRET`]; each service migrates its own database from an init
/// container, with its own credentials.
fn postgres(c: Contract, m: &Manifests) -> Vec<String> {
    let url_re = r"^postgres(?:ql)?://([a-z_][a-z0-9_]*):([A-Za-z0-9]{16,})@([^:/]+):(\d+)/([a-z_][a-z0-9_]*)$";
    let url_re = Regex::new(url_re).unwrap();
    let mut problems = Vec::new();
    let pg = m.workload("StatefulSet", "postgres");
    let Some((server, postgres)) = pg.and_then(|w| Some((w.container("postgres")?, w))) else {
        return vec!["no StatefulSet postgres with a container postgres".into()];
    };
    let spec = &postgres.object["spec"];
    if spec["serviceName"] != "postgres" {
        problems.push("postgres: serviceName is not postgres".into());
    }
    let service = m.get("Service", "postgres");
    if service.is_none_or(|s| s["spec"]["clusterIP"] != "None") {
        problems.push("Service postgres is missing or not headless".into());
    }
    if list(&spec["volumeClaimTemplates"]).next().is_none() {
        problems.push("postgres: no volumeClaimTemplates".into());
    }
    let pg_env = m.env(&server);
    let password = pg_env.sources.get("POSTGRES_PASSWORD");
    if !password.is_some_and(|s| s.starts_with("secret ")) {
        problems.push("postgres: POSTGRES_PASSWORD is not from a Secret".into());
    }
    let admin = pg_env
        .vars
        .get("POSTGRES_USER")
        .cloned()
        .unwrap_or_default();
    match postgres.volume_at(&server, "/docker-entrypoint-initdb.d") {
        None => problems.push("postgres: no init scripts at /docker-entrypoint-initdb.d".into()),
        Some(v) => {
            // executable, so that the image runs the script instead of sourcing it
            let mode = v["configMap"]["defaultMode"].as_u64();
            if mode.is_none_or(|mode| mode & 0o111 == 0) {
                problems.push("postgres: the init scripts are not executable".into());
            }
            let data = v["configMap"]["name"]
                .as_str()
                .and_then(|n| m.config_map_data(n));
            let script: String = data.unwrap_or_default().into_values().collect();
            let needles = ["CREATE ROLE", "CREATE DATABASE", "REVOKE ALL ON DATABASE"];
            for needle in needles.into_iter().chain([DATABASE_SECRET_MOUNT]) {
                if !script.contains(needle) {
                    problems.push(format!("postgres init script: no {needle}"));
                }
            }
        }
    }
    let secret = postgres.volume_at(&server, DATABASE_SECRET_MOUNT);
    if !secret.is_some_and(|v| v["secret"]["secretName"] == DATABASE_SECRET) {
        let (secret, at) = (DATABASE_SECRET, DATABASE_SECRET_MOUNT);
        problems.push(format!("postgres: Secret {secret} is not mounted at {at}"));
    }
    let mut roles = BTreeSet::new();
    let mut with_database = c.app_services(Overlay::Prod);
    with_database.retain(|s| s.database);
    if with_database.is_empty() {
        problems.push("no service with a database".into());
    }
    for svc in with_database {
        let Some((d, main)) = m.deployment_container(svc.deployment, svc.name) else {
            continue;
        };
        let name = svc.name;
        let url = m.env(&main).vars.get("DATABASE_URL").cloned();
        if !main.reads_secret("DATABASE_URL", DATABASE_SECRET, name, false) {
            let secret = DATABASE_SECRET;
            problems.push(format!(
                "{name}: DATABASE_URL is not key {name} of Secret {secret}"
            ));
        }
        match url.as_deref().and_then(|u| url_re.captures(u)) {
            None => problems.push(format!(
                "{name}: the README's DATABASE_URL is not postgres://ROLE:PASSWORD@HOST:PORT/DB (a plain role and database name, a password of 16+ letters and digits)"
            )),
            Some(caps) => {
                if (&caps[3], &caps[4]) != ("postgres", "5432") {
                    problems.push(format!("{name}: database server is not postgres:5432"));
                }
                if &caps[5] != name {
                    problems.push(format!("{name}: database {} is not its own", &caps[5]));
                }
                if caps[1] == admin || !roles.insert(caps[1].to_owned()) {
                    problems.push(format!(
                        "{name}: role {} is the admin's or another service's: each service its own credentials",
                        &caps[1]
                    ));
                }
            }
        }
        let containers = d.containers();
        let mut inits = containers.iter().filter(|x| x.init);
        let Some(migrate) = inits.find(|x| x.command_line().first() == Some(&"migrate")) else {
            problems.push(format!("{name}: no init container running `migrate`"));
            continue;
        };
        let args = migrate.command_line();
        if args.len() != 2 || !c.names_service(args[1], name) {
            problems.push(format!("{name}: init container runs {args:?}"));
        }
        if migrate.image() != main.image() {
            problems.push(format!("{name}: migrate runs another image"));
        }
        let migrate = m.env(migrate).vars;
        if migrate.get("DATABASE_URL") != url.as_ref() {
            problems.push(format!("{name}: migrate has another DATABASE_URL"));
        }
        let service = migrate.get("SWITCHYARD_SERVICE");
        if !service.is_some_and(|s| c.names_service(s, name)) {
            problems.push(format!("{name}: migrate's SWITCHYARD_SERVICE"));
        }
    }
    problems
}

#[test]
fn every_overlay_passes_every_check() {
    let mut all = Vec::new();
    for c in contract::contracts() {
        for overlay in OVERLAYS {
            let found = problems(c, overlay, rendered(c.name(), overlay));
            all.extend(found.iter().map(|p| format!("{}/{overlay}: {p}", c.name())));
        }
    }
    fail_on("every overlay", &all);
}

/// Overlays broken so that checks fail, a row each: `app/overlay | anchor | from | to |
/// problem && ...` (no field holds a `|`). The first `from` after the first `anchor` (from
/// the start if none; every `from` if the anchor is `*`) is replaced by `to` (`\n`: a line
/// break), and for each `problem`, one of the problems found must contain it.
const BREAKAGES: &str = r#"
blog/dev | | name: comments-srv | name: client-srv | Service/client-srv appears 2 times
blog/dev | name: comments-srv | selector: | selectorX: | Service/comments-srv has no selector
blog/dev | | name: posts-srv\nspec | name: posts-srvX\nspec | Service posts-srv is missing
blog/dev | name: comments-depl | - configMapRef: | - configMapRefX: | envFrom entry without configMapRef/secretRef
ticketing/prod | | name: postgres\nspec:\n  replicas | name: pg\nspec:\n  replicas | no StatefulSet postgres with a container postgres
blog/dev | name: event-bus-srv | app: event-bus | app: bus | selects {"app": "bus"}: no workload has these pod labels && Service event-bus-srv: selector app is not "event-bus"
blog/dev | name: event-bus-srv | targetPort: 4005 | targetPort: 4006 | port 4005 -> targetPort 4006: not a container port of Deployment/event-bus-depl && Service event-bus-srv: no port 4005 -> targetPort 4005
blog/dev | kind: Ingress | number: 4000 | number: 4009 | backend posts-clusterip-srv:4009: Service posts-clusterip-srv has no port 4009
blog/dev | kind: Ingress | name: posts-clusterip-srv | name: nothing-srv | Service nothing-srv does not exist
blog/dev | | EVENT_BUS_URL: http://event-bus-srv:4005 | EVENT_BUS_URL: http://event-bus:4005 | key EVENT_BUS_URL: http://event-bus:4005: no Service named "event-bus"
blog/dev | | http://console-srv:4318 | http://console.blog.svc.cluster.local:4318 | no Service named "console"
blog/dev | | http://event-bus-srv:4005 | http://event-bus-srv:4000 | Service event-bus-srv has no port 4000
ticketing/prod | | nats-0.nats-headless:6222 | nats-0.nats-headless:6223 | Service nats-headless has no port 6223
blog/dev | name: comments-depl | key: EVENT_BUS_SECRET | key: BUS_SECRET | references missing key "BUS_SECRET" of secret event-bus-secret
blog/dev | name: comments-depl | name: switchyard-config- | name: switchyard-configX- | envFrom references missing configMap switchyard-configX-
blog/dev | name: comments-depl | name: tmp | name: temp | container comments: volumeMount temp has no volume
blog/dev | name: comments-depl | claimName: comments-data | claimName: nope | PersistentVolumeClaim nope does not exist
ticketing/prod | kind: StatefulSet | name: nats-users-config- | name: nats-users-configX- | volume users: ConfigMap nats-users-configX-
ticketing/prod | kind: StatefulSet | secretName: switchyard-database | secretName: nope | volume service-databases: Secret nope does not exist
blog/dev | name: comments-depl | image: switchyard/comments | image: switchyard/commentz | image switchyard/commentz is not built by any skaffold artifact && skaffold builds switchyard/comments, but nothing in these manifests runs it && runs image switchyard/commentz, not switchyard/comments
blog/dev | name: comments-depl | path: /healthz | path: /health | livenessProbe: path /health is not one of ["/healthz"]
blog/dev | name: comments-depl | port: ops | port: opz | livenessProbe: port "opz" is not a container port && livenessProbe is not on the ops port
blog/dev | name: comments-depl | readinessProbe: | readinessProbX: | container comments: no readinessProbe
blog/dev | name: comments-depl | httpGet: | tcpSocket: | livenessProbe: must be an httpGet probe
ticketing/prod | kind: StatefulSet | port: monitor | port: monitoring | container nats livenessProbe: port "monitoring" is not a container port
blog/dev | name: comments-depl | terminationGracePeriodSeconds: 20 | terminationGracePeriodSeconds: 5 | terminationGracePeriodSeconds 5 does not cover SHUTDOWN_GRACE_MS 10000
ticketing/prod | name: auth-pdb | app: auth | app: nope | PodDisruptionBudget/auth-pdb selects no workload && auth: no PodDisruptionBudget
blog/dev | kind: Deployment | app: client | app: clients | Deployment client-depl: label app is not "client"
blog/dev | name: comments-depl | app: comments | app: commentz | Deployment comments-depl: selector app is not "comments"
blog/dev | name: comments-depl | labels:\n        app: comments | labels:\n        app: commentz | Deployment comments-depl: pod label app is not "comments"
blog/dev | name: comments-depl | name: comments\n | name: commentz\n | Deployment comments-depl: no container named "comments"
blog/dev | name: comments-depl | containerPort: 4001 | containerPort: 4009 | container comments: no port http = 4001
blog/dev | name: comments-depl | value: "4001" | value: "4002" | container comments: PORT=4002, not 4001 && comments: PORT is Some("4002"), expected 4001
blog/dev | | value: blog/comments | value: blog/query | SWITCHYARD_SERVICE=Some("blog/query") is not blog/comments
blog/dev | | name: comments-depl | name: comments-deployment | Deployment comments-depl is missing
blog/dev | name: comments-srv | type: ClusterIP | type: LoadBalancer | Service comments-srv is LoadBalancer, not ClusterIP && Service comments-srv is a LoadBalancer: only the Ingress may expose blog
blog/dev | name: posts-srv | type: NodePort | type: ClusterIP | Service posts-srv is ClusterIP, not NodePort
ticketing/prod | | name: orders-srv | name: expiration-srv | Service expiration-srv should not be deployed in prod
ticketing/prod | | name: orders-depl | name: event-bus-depl | Deployment event-bus-depl should not be deployed in prod && prod deploys or references the HTTP event bus
blog/dev | name: comments-depl | containerPort: 9090 | containerPort: 9091 | container comments: no container port ops = 9090
blog/dev | name: comments-depl | value: "9090" | value: "9091" | container comments: OPS_PORT is not 9090
blog/dev | name: comments-depl | prometheus.io/port: "9090" | prometheus.io/port: "4001" | Deployment comments-depl: pod annotation prometheus.io/port is not "9090"
blog/dev | name: comments-srv | targetPort: 4001 | targetPort: 9090 | container comments: Service comments-srv routes to its ops port
blog/dev | name: comments-depl | port: ops | port: http | container comments: livenessProbe is not on the ops port
blog/dev | | query=http://query-srv:4002 | query=http://query-srv:4009 | Deployment event-bus-depl: SUBSCRIBERS is
ticketing/prod | name: payments-depl | name: jwt-secret | name: jwt-secrets | container payments: JWT_KEY is not read from its key of Secret jwt-secret
ticketing/prod | name: payments-depl | name: jwt-secret\n | name: jwt-secret\n              optional: true\n | container payments: JWT_KEY is not read from its key of Secret jwt-secret
ticketing/prod | name: payments-depl | name: JWT_KEY\n          valueFrom: | name: JWT_KEY\n          value: hunter2\n          valueFrom: | container payments: JWT_KEY is a literal value
ticketing/prod | name: expiration-depl | name: NATS_PASSWORD | name: JWT_KEY | container expiration: JWT_KEY is given to a service that checks no session
blog/dev | name: comments-depl | name: event-bus-secret | name: bus-secret | container comments: EVENT_BUS_SECRET is not read from key EVENT_BUS_SECRET of Secret event-bus-secret
ticketing/prod | name: payments-depl | value: payments | value: orders | container payments: NATS_USER is Some("orders"), expected "payments"
ticketing/prod | name: payments-depl | key: PAYMENTS_NATS_PASSWORD | key: ORDERS_NATS_PASSWORD | container payments: NATS_PASSWORD is not read from key PAYMENTS_NATS_PASSWORD of Secret nats-users
ticketing/prod | name: payments-depl | name: NATS_USER | name: EVENT_BUS_SECRET | EVENT_BUS_SECRET is set, but this overlay's bus does not use it && container payments: EVENT_BUS_SECRET is a literal value
blog/dev | name: client-depl | name: PORT | name: EVENT_BUS_SECRET | container client: EVENT_BUS_SECRET is set, but the service does not use the bus
ticketing/prod | | user: "orders" | user: "order" | StatefulSet nats: /etc/nats/nats-users.conf differs from `switchyard nats-users ticketing`
ticketing/prod | kind: StatefulSet | - /etc/nats/nats-users.conf | - /etc/natz/nats-users.conf | StatefulSet nats: /etc/natz/nats-users.conf is not mounted from a ConfigMap
ticketing/prod | kind: StatefulSet | - -c | - -C | StatefulSet nats: no -c <users configuration> argument
ticketing/prod | kind: StatefulSet | key: ORDERS_NATS_PASSWORD | key: ORDERS_PASSWORD | StatefulSet nats: ORDERS_NATS_PASSWORD is not read from key ORDERS_NATS_PASSWORD of Secret nats-users
ticketing/prod | kind: StatefulSet |   name: nats\n | name: natz\n | StatefulSet nats or its container nats is missing && nats does not run with JetStream (-js)
blog/dev | | ingressClassName: nginx | ingressClassName: traefik | Ingress ingress-srv: ingressClassName is "traefik", not "nginx"
blog/dev | | use-regex: "true" | use-regex: "false" | use-regex is "false", not "true" && the Ingress paths are not regexes
blog/dev | kind: Ingress | path: /posts/create | path: /posts/created | Ingress ingress-srv: paths of posts.com are
blog/dev | | host: posts.com | host: post.com | Ingress ingress-srv: no rule for host posts.com && posts.com /posts routes to nothing
blog/dev | | kind: Ingress | kind: IngressX | Ingress ingress-srv is missing && 0 Ingress objects, expected 1
ticketing/prod | * | kind: NetworkPolicy | kind: NetworkPolicyX | ticketing prod has no NetworkPolicy: every pod is open to everything
ticketing/prod | name: allow-ingress-controller | - namespaceSelector: | - ipBlock: {cidr: 0.0.0.0/0}\n      namespaceSelector: | NetworkPolicy/allow-ingress-controller admits an ipBlock
ticketing/prod | name: default-deny-ingress | podSelector: {} | podSelector: {matchLabels: {app: x}} | no default-deny policy
ticketing/prod | name: allow-ingress-controller | - port: http | - port: 3001 | needed but closed: the ingress controller (namespace ingress-nginx) -> Deployment/auth-depl:3000
ticketing/prod | name: allow-metrics-scrape | - port: ops | - port: http | open but not needed: Prometheus (namespace monitoring) -> Deployment/auth-depl:3000
blog/dev | | kind: PersistentVolumeClaim | kind: NetworkPolicy | dev has NetworkPolicies
ticketing/prod | | name: tickets-srv | name: tickets-service | the ingress controller (namespace ingress-nginx) needs 4 path(s) for 5 backend(s)
ticketing/prod |   name: postgres\nspec: | port: 5432 | port: 5433 | payments: needs NATS true / PostgreSQL false
ticketing/prod-gateway | | kind: Gateway | kind: Ingress | the Gateway API overlay still deploys an Ingress && 0 Gateway objects, expected 1
ticketing/prod-gateway | | gatewayClassName: eg | gatewayClassName: nginx | Gateway ticketing-gateway: gatewayClassName is not eg
ticketing/prod-gateway | * | apiVersion: gateway.networking.k8s.io/v1 | apiVersion: gateway.networking.k8s.io/v1beta1 | Gateway ticketing-gateway: apiVersion is not && HTTPRoute ticketing-routes: apiVersion is not
ticketing/prod-gateway | | hostname: ticketing.dev | hostname: other.dev | listener https: hostname is "other.dev", the registry's host is ticketing.dev
ticketing/prod-gateway | | from: Same | from: All | listener https: routes of other namespaces may attach
ticketing/prod-gateway | | mode: Terminate | mode: Passthrough | listener https: TLS mode is not Terminate
ticketing/prod-gateway | | certificateRefs: | certificateRefz: | listener https: HTTPS without certificateRefs
ticketing/prod-gateway | | listeners: | listenerz: | Gateway ticketing-gateway: no listener
ticketing/prod-gateway | kind: HTTPRoute | type: PathPrefix | type: Prefix | unknown path match type "Prefix"
ticketing/prod-gateway | | kind: Secret | kind: ConfigMap | is not a Secret of the namespace
ticketing/prod-gateway | | protocol: HTTPS | protocol: HTTP | ticketing keeps its users signed in with a secure cookie, and there is no HTTPS listener
ticketing/prod-gateway | | - name: ticketing-gateway | - name: other-gateway | HTTPRoute ticketing-routes: parentRef Gateway other-gateway does not exist
ticketing/prod-gateway | | - name: ticketing-gateway | - name: ticketing-gateway\n    sectionName: nope | Gateway ticketing-gateway has no listener nope
ticketing/prod-gateway | | - name: ticketing-gateway | - name: ticketing-gateway\n    kind: Service | is not a Gateway of the namespace
ticketing/prod-gateway | | parentRefs: | parentRefz: | HTTPRoute ticketing-routes: no parentRefs
ticketing/prod-gateway | hostnames: | - ticketing.dev | - other.dev | HTTPRoute ticketing-routes: hostnames are ["other.dev"], the registry's host is ticketing.dev
ticketing/prod-gateway | kind: HTTPRoute | port: 3000 | port: 3001 | backendRef payments-srv:3001: Service payments-srv has no port 3001
ticketing/prod-gateway | kind: HTTPRoute | name: payments-srv | name: nope-srv | Service nope-srv does not exist && backendRef nope-srv is not a public Service of ticketing
ticketing/prod-gateway | kind: HTTPRoute | port: 3000 | portX: 3000 | backendRef payments-srv has no port
ticketing/prod-gateway | kind: HTTPRoute | - name: payments-srv | - name: payments-srv\n      kind: Pod | is not a Service of the namespace
ticketing/prod-gateway | kind: HTTPRoute | backendRefs: | backendRefz: | HTTPRoute ticketing-routes: a rule without backendRefs
ticketing/prod-gateway | * | kind: HTTPRoute | kind: HTTPRoutX | no HTTPRoute
ticketing/prod-gateway | kind: HTTPRoute | value: /api/payments | value: /api/paymentz | ticketing.dev /api/payments
ticketing/prod-gateway | name: allow-ingress-controller | owning-gateway-name: ticketing-gateway | owning-gateway-name: other | needed but closed: the proxy of Gateway ticketing-gateway
ticketing/prod-gateway | name: allow-ingress-controller | podSelector: | podSelectorX: | open but not needed: the Envoy Gateway controller
ticketing/prod | | PAYMENT_PROVIDER: stripe | PAYMENT_PROVIDER: test | payments: PAYMENT_PROVIDER is Some("test"), expected stripe
ticketing/prod | name: STRIPE_KEY | optional: false | optional: true | STRIPE_KEY is not read from key STRIPE_KEY of Secret stripe-secret (required)
blog/dev | name: comments-depl | replicas: 1 | replicas: 2 | comments-depl: not one replica
blog/dev | | LOG_FORMAT: json | LOG_FORMAT: text | LOG_FORMAT is Some("text"), expected json
blog/dev | | RUST_LOG: info | RUST_LOGX: info | comments: RUST_LOG is None, expected set
blog/dev | | EVENT_BUS_URL: http://event-bus-srv:4005 | EVENT_BUS_URL: http://console-srv:4318 | comments: EVENT_BUS_URL is Some("http://console-srv:4318"), expected http://event-bus-srv:4005
blog/dev | | DATA_DIR: /data | DATA_DIR: data | comments: DATA_DIR "data" is not absolute
blog/dev | | DATA_DIR: /data | DATA_DIR: /var/data | comments: nothing mounted at DATA_DIR
blog/dev | name: comments-depl | claimName: comments-data | claimName: posts-data | comments: DATA_DIR is not on PVC comments-data
blog/dev | name: comments-depl | - name: data\n        persistentVolumeClaim: | - name: data\n        emptyDir: {}\n        persistentVolumeClaim: | comments: data volume is both PVC and emptyDir
blog/dev | name: comments-depl | type: Recreate | type: RollingUpdate | comments: not Recreate
blog/dev | | DATA_DIR: /data | DATA_DIR: /data\n  DATABASE_URL: postgres://x | comments: DATABASE_URL is Some("postgres://x"), expected sqlite:*
blog/dev | | MIGRATE_ON_START: "true" | MIGRATE_ON_START: "false" | comments: MIGRATE_ON_START is Some("false"), expected !false
blog/dev | | name: event-bus-secret\ntype | name: other-secret\ntype | Secret other-secret is not made by the dev overlay's secretGenerator
ticketing/prod | name: payments-depl | replicas: 2 | replicas: 1 | payments-depl: 1 replica(s) && payments: minAvailable blocks every disruption
ticketing/prod | name: payments-depl | maxUnavailable: 0 | maxUnavailable: 1 | payments: not a zero-downtime rolling update
ticketing/prod | | EVENT_BUS_URL: nats://nats:4222 | EVENT_BUS_URL: nats://nats-headless:4222 | payments: EVENT_BUS_URL is Some("nats://nats-headless:4222"), expected nats://nats:4222
ticketing/prod | | BUS_STREAM: TICKETING | BUS_STREAM: BLOG | payments: BUS_STREAM is Some("BLOG"), expected TICKETING
ticketing/prod | | BUS_SUBJECT_PREFIX: ticketing | BUS_SUBJECT_PREFIX: blog | payments: BUS_SUBJECT_PREFIX is Some("blog"), expected ticketing
ticketing/prod | | MIGRATE_ON_START: "false" | MIGRATE_ON_START: "true" | payments: MIGRATE_ON_START is Some("true"), expected false
ticketing/prod | kind: StatefulSet | serviceName: postgres | serviceName: pg | postgres: serviceName is not postgres
ticketing/prod |   name: postgres\nspec: | clusterIP: None | clusterIP: 10.0.0.1 | Service postgres is missing or not headless
ticketing/prod |   name: postgres\nspec:\n  replicas | volumeClaimTemplates: | volumeClaimTemplatez: | postgres: no volumeClaimTemplates
ticketing/prod | | name: POSTGRES_PASSWORD\n          valueFrom: | name: POSTGRES_PASSWORD\n          value: x\n          valueFromX: | postgres: POSTGRES_PASSWORD is not from a Secret
ticketing/prod | | mountPath: /docker-entrypoint-initdb.d | mountPath: /initdb | postgres: no init scripts at /docker-entrypoint-initdb.d
ticketing/prod | | defaultMode: 365 | defaultMode: 292 | postgres: the init scripts are not executable
ticketing/prod | * | CREATE ROLE | CREATE USER | postgres init script: no CREATE ROLE
ticketing/prod | | mountPath: /etc/switchyard-database | mountPath: /etc/databases | postgres: Secret switchyard-database is not mounted at /etc/switchyard-database
ticketing/prod | name: payments-depl | key: payments | key: orders | payments: DATABASE_URL is not key payments of Secret switchyard-database && payments: database orders is not its own && payments: role orders is the admin's or another service's
ticketing/prod | | ---\n | ---\napiVersion: v1\nkind: Secret\nmetadata: {name: switchyard-database}\nstringData: {payments: "mysql://x"}\n---\n | prod renders Secret/switchyard-database: prod creates no Secret && payments: the README's DATABASE_URL is not postgres://ROLE:PASSWORD@HOST:PORT/DB
ticketing/prod | | ---\n | ---\napiVersion: v1\nkind: Secret\nmetadata: {name: switchyard-database}\nstringData: {payments: "postgres://payments:0123456789abcdef@pg:5432/payments"}\n---\n | payments: database server is not postgres:5432
ticketing/prod | name: payments-depl | - migrate | - migrated | payments: no init container running `migrate`
ticketing/prod | name: payments-depl | - ticketing/payments | - ticketing/orders | payments: init container runs ["migrate", "ticketing/orders"]
ticketing/prod | name: payments-depl | image: switchyard/ticketing-payments\n        name: migrate | image: switchyard/ticketing-orders\n        name: migrate | payments: migrate runs another image
ticketing/prod | - ticketing/payments | key: payments | key: orders | payments: migrate has another DATABASE_URL
ticketing/prod | - ticketing/payments | value: ticketing/payments | value: ticketing/orders | payments: migrate's SWITCHYARD_SERVICE
ticketing/prod | kind: StatefulSet | - -js | - -jz | nats does not run with JetStream (-js)
ticketing/prod | kind: StatefulSet | volumeClaimTemplates: | volumeClaimTemplatez: | nats: no persistent JetStream storage
ticketing/prod |   name: nats\nspec:\n  ports: | targetPort: client | targetPort: clients | Service nats does not reach NATS on 4222
ticketing/prod | name: payments-depl | name: stripe-secret | name: stripe-secrets | Secret stripe-secrets is neither in the manifests nor created in infra/README.md (-n ticketing)
ticketing/prod | name: payments-depl | key: STRIPE_KEY | key: STRIPE_KEYS | key STRIPE_KEYS of Secret stripe-secret is not created in infra/README.md
ticketing/prod | * | name: stripe-secret | name: stripe-secretz | infra/README.md creates Secret stripe-secret (-n ticketing), which nothing uses
"#;

#[test]
fn every_check_fails_on_a_broken_overlay() {
    let mut missed = Vec::new();
    for row in BREAKAGES.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<String> = row
            .split('|')
            .map(|f| f.trim().replace("\\n", "\n"))
            .collect();
        let [target, anchor, from, to, wants] = &fields[..] else {
            panic!("not a breakage: {row}");
        };
        let (app, overlay) = target.split_once('/').unwrap();
        let text = rendered(app, overlay);
        let broken = if anchor == "*" {
            assert!(text.contains(from.as_str()), "{row}: no {from:?}");
            text.replace(from.as_str(), to)
        } else {
            let start = text
                .find(anchor.as_str())
                .unwrap_or_else(|| panic!("{row}: no anchor"));
            let at = text[start..]
                .find(from.as_str())
                .unwrap_or_else(|| panic!("{row}: no from"));
            let at = start + at;
            format!("{}{to}{}", &text[..at], &text[at + from.len()..])
        };
        let found = problems(contract(app), overlay, &broken);
        for want in wants
            .split(" && ")
            .filter(|w| !found.iter().any(|p| p.contains(w)))
        {
            missed.push(format!("{row}\n  no {want:?} among {found:#?}"));
        }
    }
    assert!(
        missed.is_empty(),
        "{} missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
}

#[test]
fn the_registry_ingress_is_the_deployed_one() {
    for c in contract::contracts() {
        let base = format!("infra/k8s/{}/base", c.name());
        let kustomization = read(&format!("{base}/kustomization.yaml"));
        let kustomization = parse_yaml_documents(&kustomization).unwrap();
        let resources = list(&kustomization[0]["resources"]).filter_map(Value::as_str);
        let with_ingress = |r: &&str| {
            let docs = parse_yaml_documents(&read(&format!("{base}/{r}")));
            docs.unwrap_or_default()
                .iter()
                .any(|d| d["kind"] == "Ingress")
        };
        let files: Vec<&str> = resources.filter(with_ingress).collect();
        assert_eq!(files.len(), 1, "{base} lists {files:?} with an Ingress");
        let file = format!("{base}/{}", files[0]);
        let docs = parse_yaml_documents(&read(&file)).unwrap();
        assert_eq!(docs.len(), 1, "{file}: one document (the gateway reads it)");
        fail_on(&file, &c.check_ingress(&docs[0]));
        // The registry compiles its Ingress file into the binary (the local gateway routes
        // by it): it must be the deployed file.
        assert_eq!(c.app.ingress.file, file, "the registry's Ingress file");
        let compiled = parse_yaml_documents(c.app.ingress.yaml).unwrap();
        assert_eq!(
            compiled, docs,
            "the Ingress compiled into the registry vs {file}"
        );
        assert!(!c.app.routes.is_empty(), "{}: no routes", c.name());
        let router = Router::new(compiled.iter(), c.app.ingress.host).unwrap();
        assert!(router.uses_regex(), "{file}: paths are not regexes");
        fail_on(&file, &c.check_routes(&router));
        for overlay in ["dev", "prod"] {
            let m = parse(c.name(), overlay);
            let deployed = m.get("Ingress", c.app.ingress.name).unwrap();
            for field in ["/spec", "/metadata/annotations"] {
                let (a, b) = (deployed.pointer(field), docs[0].pointer(field));
                assert_eq!(a, b, "{}/{overlay} changes the Ingress {field}", c.name());
            }
        }
    }
}

#[test]
fn skaffold_builds_every_service_of_every_app_from_the_dockerfile() {
    let s = skaffold();
    let version = s.raw["apiVersion"].as_str().unwrap_or("");
    let beta = version.strip_prefix("skaffold/v4beta");
    let beta = beta.and_then(|n| n.parse::<u32>().ok());
    assert!(
        beta.is_some_and(|b| b >= 13),
        "apiVersion {version}: not skaffold/v4betaN, N >= 13"
    );
    let contracts = contract::contracts();
    let profiles = contracts
        .iter()
        .flat_map(|c| Overlay::ALL.map(|o| c.skaffold_profile(o)));
    assert_eq!(s.profile_names(), profiles.collect::<Vec<_>>());
    // Without a profile: the blog's dev overlay, as before there were two apps.
    let blog_dev = render::overlay_path("blog", "dev");
    assert_eq!(
        s.kustomize_paths(None).unwrap(),
        [blog_dev],
        "default manifests"
    );
    let dev = s.artifacts(Some("dev")).unwrap();
    assert_eq!(
        s.artifacts(None).unwrap(),
        dev,
        "the default build is the blog's dev"
    );
    let root = render::repo_root();
    let (mut all_images, mut per_app) = (BTreeSet::new(), 0);
    for c in contracts {
        per_app += c.services(Overlay::Dev).len();
        for overlay in Overlay::ALL {
            let profile = c.skaffold_profile(overlay);
            for config in [&s.raw, &s.effective(Some(&profile)).unwrap()] {
                assert_eq!(config["build"]["local"]["push"], false, "{profile}: push");
            }
            let artifacts = s.artifacts(Some(&profile)).unwrap();
            let images: BTreeSet<&str> = artifacts.iter().map(|a| a.image.as_str()).collect();
            let services = c.services(overlay);
            let expected: BTreeSet<&str> = services.iter().map(|s| s.image.as_str()).collect();
            assert_eq!(images, expected, "{profile}: the images");
            assert_eq!(
                artifacts.len(),
                expected.len(),
                "{profile}: one artifact per image"
            );
            for a in &artifacts {
                assert_eq!(a.context, ".", "{profile} {}: context", a.image);
                let dockerfile = root.join(&a.context).join(&a.dockerfile);
                assert!(
                    dockerfile.is_file(),
                    "{profile} {}: no {}",
                    a.image,
                    a.dockerfile
                );
                let svc = services.iter().find(|svc| svc.image == a.image).unwrap();
                let want = format!("{}/{}", c.name(), svc.name);
                let arg = a.build_args.get("SERVICE");
                assert_eq!(arg, Some(&want), "{profile} {}: buildArgs.SERVICE", a.image);
                assert!(c.names_service(&want, svc.name));
            }
            all_images.extend(expected.into_iter().map(str::to_owned));
            let path = render::overlay_path(c.name(), overlay.name());
            let paths = s.kustomize_paths(Some(&profile)).unwrap();
            assert_eq!(paths, [path.as_str()], "{profile}");
            assert!(root.join(&path).join("kustomization.yaml").is_file());
        }
    }
    assert_eq!(all_images.len(), per_app, "two apps share an image name");
}

#[test]
fn secrets_are_never_committed() {
    let root = render::repo_root();
    let mut dirs = vec![root.join("infra/k8s/components")];
    dirs.retain(|d| d.is_dir());
    for c in contract::contracts() {
        dirs.push(root.join(format!("infra/k8s/{}/base", c.name())));
        dirs.push(root.join(render::overlay_path(c.name(), "prod")));
        let none = readme_secrets(c).is_empty();
        assert!(
            !none,
            "infra/README.md creates no Secret with `-n {}`",
            c.name()
        );
    }
    let committed = dirs
        .iter()
        .flat_map(|d| secrets::committed_secrets(d).unwrap());
    fail_on("committed Secrets", &committed.collect::<Vec<_>>());
    // a committed Secret and a secretGenerator, in a subdirectory
    let broken = std::env::temp_dir().join(format!("k8s-check-{}", std::process::id()));
    fs::create_dir_all(broken.join("sub")).unwrap();
    let yaml = "kind: Secret\nmetadata: {name: s}\n---\nsecretGenerator: [{name: g}]\n";
    fs::write(broken.join("sub/secret.yaml"), yaml).unwrap();
    let problems = secrets::committed_secrets(&broken).unwrap();
    fs::remove_dir_all(&broken).unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn the_app_directories_are_the_registrys_apps() {
    // infra/validate.sh renders every infra/k8s/<app>/overlays; the tests check the
    // registry's apps: they must be the same.
    let entries = fs::read_dir(render::repo_root().join("infra/k8s")).unwrap();
    let entries = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("overlays").is_dir());
    let dirs: BTreeSet<String> = entries
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    let apps: BTreeSet<String> = switchyard_registry::app_names()
        .into_iter()
        .map(Into::into)
        .collect();
    assert_eq!(
        dirs, apps,
        "infra/k8s/<app>/overlays directories vs the registry's apps"
    );
}

#[test]
fn the_readme_covers_every_app() {
    let readme = read("infra/README.md");
    let words: Vec<&str> = readme.split_whitespace().collect();
    for c in contract::contracts() {
        let host = c.app.ingress.host;
        assert!(
            readme.contains(host),
            "infra/README.md: no hosts entry for {host}"
        );
        for overlay in Overlay::ALL {
            let path = render::overlay_path(c.name(), overlay.name());
            assert!(
                readme.contains(&path),
                "infra/README.md does not mention {path}"
            );
            let command = match c.skaffold_profile(overlay) {
                profile if profile == "dev" => "skaffold dev".to_owned(),
                profile => format!("skaffold dev -p {profile}"),
            };
            assert!(readme.contains(&command), "infra/README.md: no `{command}`");
        }
        // The TLS Secrets of the Gateways are created as the README says, never committed.
        let m = parse(c.name(), GATEWAY_OVERLAY);
        for secret in gateway::certificate_secrets(&m) {
            let command = ["-n", c.name(), "create", "secret", "tls", &secret];
            let command_line = command.join(" ");
            let created = words.windows(6).any(|w| w == command);
            assert!(
                created,
                "infra/README.md does not run kubectl {command_line} ..."
            );
            assert!(
                m.get("Secret", &secret).is_none(),
                "the TLS Secret {secret} is committed"
            );
        }
    }
    let namespace = contract::INGRESS_CONTROLLER_NAMESPACE;
    assert!(
        readme.contains(namespace) && readme.contains(netpol::NAMESPACE_NAME_LABEL),
        "infra/README.md must say which ingress controller namespace the policies admit"
    );
}

#[test]
fn http_routes_give_the_ingress_routing_table() {
    for c in contract::contracts() {
        let host = c.app.ingress.host;
        let m = parse(c.name(), GATEWAY_OVERLAY);
        let routes = gateway::router(&m, host).unwrap();
        let ingress = Router::new(parse(c.name(), "prod").of_kind("Ingress"), host).unwrap();
        for (uri, ..) in c.app.routes {
            for uri in [uri.to_string(), format!("{uri}/"), format!("{uri}?q=1")] {
                let backend = |r: &Router| r.route(&uri).map(|l| l.backend.to_string());
                assert_eq!(backend(&routes), backend(&ingress), "{}: {uri}", c.name());
            }
        }
        // the file the local gateway reads is the deployed HTTPRoute
        let path = format!("infra/k8s/{}/gateway-api/httproutes.yaml", c.name());
        let docs = parse_yaml_documents(&read(&path)).unwrap();
        assert_eq!(docs.len(), 1, "{path}: one document (the gateway reads it)");
        let deployed = m.get("HTTPRoute", name(&docs[0])).unwrap();
        assert_eq!(deployed["spec"], docs[0]["spec"], "{path}");
    }
}

/// prod-gateway is prod with the Ingress swapped for the Gateway API objects and the
/// controller's NetworkPolicy rules changed: nothing else differs.
#[test]
fn the_gateway_overlay_is_prod_with_the_edge_swapped() {
    let by_id = |m: Manifests| -> BTreeMap<String, Value> {
        m.objects().iter().map(|o| (id(o), o.clone())).collect()
    };
    for c in contract::contracts() {
        let mut prod = by_id(parse(c.name(), "prod"));
        let mut gw = by_id(parse(c.name(), GATEWAY_OVERLAY));
        let ingress = format!("Ingress/{}", c.app.ingress.name);
        assert!(
            prod.remove(&ingress).is_some(),
            "{}: prod has {ingress}",
            c.name()
        );
        let kinds = gateway::GATEWAY_API_KINDS.map(|k| format!("{k}/"));
        gw.retain(|id, _| !kinds.iter().any(|k| id.starts_with(k)));
        let policy = "NetworkPolicy/allow-ingress-controller";
        let (a, b) = (prod.remove(policy).unwrap(), gw.remove(policy).unwrap());
        let (a, b) = (&a["spec"], &b["spec"]);
        assert_eq!(a["podSelector"], b["podSelector"], "{}: {policy}", c.name());
        assert_ne!(a["ingress"], b["ingress"], "{}: {policy}", c.name());
        let ids = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(ids(&prod), ids(&gw), "{}: objects", c.name());
        for (id, object) in &prod {
            assert_eq!(object, &gw[id], "{}: {id} differs from prod", c.name());
        }
    }
}
