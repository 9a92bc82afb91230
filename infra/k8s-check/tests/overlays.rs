//! Cross-reference checks of every app's overlays, rendered with `kubectl kustomize`,
//! against each other, `skaffold.yaml`, `infra/README.md` and each app's contract in the
//! registry; and, for every check, an overlay broken so that it fails ([`BREAKAGES`]).
//! `prod-gateway` (prod with a Gateway and HTTPRoutes instead of the Ingress) is checked
//! like prod.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::Value;
use switchyard_k8s_check::contract::{self, Contract, DATABASE_SECRET, NATS_SERVICE, Overlay};
use switchyard_k8s_check::gateway::{self, GATEWAY_OVERLAY};
use switchyard_k8s_check::ingress::Router;
use switchyard_k8s_check::manifest::{Container, Manifests, Map, Workload, id, kind, list, name};
use switchyard_k8s_check::manifest::{as_text, text};
use switchyard_k8s_check::netpol::{self, Path};
use switchyard_k8s_check::secrets::{self, Created};
use switchyard_k8s_check::skaffold::Skaffold;
use switchyard_k8s_check::{Report, checks, parse_yaml_documents, render};
use switchyard_registry::Kind;

const OVERLAYS: [&str; 3] = ["dev", "prod", GATEWAY_OVERLAY];

/// The environment and Deployment of the services, a row each: overlay; services (`all`, `app`:
/// the app services, `subscribers`: those the bus delivers to, `db`: those with a database,
/// or `<app>/<service>`); variable (or a JSON pointer into the Deployment); value: `{bus}`
/// (the HTTP event bus's URL), `{stream}`, `{prefix}` (the app's NATS stream and subject
/// prefix); `set`: any value; `!x`: unset or not `x`; `x*`: unset or `x...`.
const SERVICES: &str = "
    dev   all          /spec/replicas      1
    # one SQLite owner at a time; zero-downtime rollouts in prod
    dev   db           /spec/strategy/type  Recreate
    prod  app          /spec/strategy/rollingUpdate/maxUnavailable  0
    dev   all          LOG_FORMAT          json
    dev   all          RUST_LOG            set
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

fn read(path: &str) -> String {
    let path = render::repo_root().join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rendered(app: &str, overlay: &str) -> &'static str {
    static CACHE: LazyLock<Mutex<BTreeMap<String, &'static str>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(format!("{app}-{overlay}")).or_insert_with(|| {
        let text = render::rendered_overlay(app, overlay);
        let text = text.unwrap_or_else(|e| panic!("cannot render {app}/{overlay}: {e}"));
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

/// Every problem of `yaml`, overlay `name` of app `c` as rendered.
fn problems(c: Contract, name: &str, yaml: &str) -> Vec<String> {
    let overlay = Overlay::of(name);
    let rendered = Manifests::parse(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut r = Report::default();
    // as the cluster will see it: in prod, with the Secrets the README creates
    let mut objects = rendered.objects().to_vec();
    if overlay == Overlay::Prod {
        r.at = "prod renders".into();
        for s in rendered.of_kind("Secret") {
            r.check(true, format!("{}: prod creates no Secret", id(s)));
        }
        let (readme, namespace) = (readme_secrets(c), format!("-n {}", c.name()));
        let undocumented = secrets::check_documented(&rendered, &readme, &namespace);
        r.problems.extend(undocumented);
        let readme = readme.iter();
        objects.extend(readme.map(|(n, data)| secrets::placeholder_secret(n, data)));
    }
    let m = &Manifests::from_values(objects);
    r.problems.extend(checks::all(m));
    let profile = c.skaffold_profile(overlay);
    let artifacts = skaffold().artifacts(Some(&profile)).unwrap();
    let images = artifacts.iter().map(|a| text(&a["image"]).to_owned());
    let images = images.collect();
    r.problems.extend(checks::images_built(m, &images));
    r.problems.extend(c.check(m, overlay));
    services(c, overlay, m, &mut r);
    match overlay {
        Overlay::Dev => dev_setup(c, m, &mut r),
        Overlay::Prod => prod_setup(c, m, yaml, &mut r),
    }
    edge(c, name, m, &mut r);
    r.problems
}

/// Each service of the overlay: [`SERVICES`], [`KEYED_SECRETS`]; in dev, SQLite on a volume
/// claim; in prod, replicas that a PodDisruptionBudget keeps some of.
fn services(c: Contract, overlay: Overlay, m: &Manifests, r: &mut Report) {
    let services = c.services(overlay);
    let bus = services.iter().find(|s| s.kind == Kind::EventBus);
    let bus = bus.and_then(|b| Some((b.service.as_ref()?, b.contract_port)));
    let bus = bus.map(|(host, port)| format!("http://{host}:{port}"));
    let values = [
        ("{bus}", bus.unwrap_or_default()),
        ("{stream}", c.app.stream.to_owned()),
        ("{prefix}", c.app.subject_prefix.to_owned()),
    ];
    for svc in &services {
        let Some((d, container)) = m.container("Deployment", svc.deployment, svc.name) else {
            continue; // (reported by the contract's checks)
        };
        let (env, qualified) = (m.env(&container), format!("{}/{}", c.name(), svc.name));
        r.at = format!("{}:", svc.name);
        for row in rows(SERVICES).filter(|row| row[0] == overlay.name()) {
            let [_, who, var, want] = row[..] else {
                panic!("not a SERVICES row: {row:?}");
            };
            let applies = match who {
                "all" => true,
                "app" => svc.kind == Kind::App,
                "subscribers" => svc.subscriber,
                "db" => svc.database,
                _ => who == qualified,
            };
            let fill = |w: String, (k, v): &(&str, String)| w.replace(k, v);
            let want = values.iter().fold(want.to_owned(), fill);
            let field = d.object.pointer(var).map(as_text);
            let actual = field.or_else(|| env.get(var).cloned());
            let actual = actual.as_deref();
            let ok = match (want.strip_prefix('!'), want.strip_suffix('*')) {
                (Some(not), _) => actual != Some(not),
                (_, Some(prefix)) => actual.is_none_or(|a| a.starts_with(prefix)),
                _ if want == "set" => actual.is_some(),
                _ => actual == Some(want.as_str()),
            };
            let what = format!("{var} is {actual:?}, expected {want}");
            r.check(applies && !ok, what);
        }
        match overlay {
            Overlay::Dev if svc.database => data_dir(svc.name, &d, &container, &env, r),
            Overlay::Prod if svc.kind == Kind::App => {
                let replicas = d.object["spec"]["replicas"].as_u64().unwrap_or(1);
                let selects = |p: &&Value| p["spec"]["selector"]["matchLabels"]["app"] == svc.name;
                let pdb = m.of_kind("PodDisruptionBudget").find(selects);
                let min = pdb.and_then(|p| p["spec"]["minAvailable"].as_u64());
                r.check(replicas < 2, format!("{replicas} replica(s)"));
                r.check(pdb.is_none(), "no PodDisruptionBudget");
                let blocks = min.is_some_and(|min| min >= replicas);
                r.check(blocks, "minAvailable blocks every disruption");
            }
            _ => {}
        }
        r.at = svc.at();
        for row in rows(KEYED_SECRETS).filter(|row| row[0] == qualified) {
            let [_, var, secret, required_in] = row[..] else {
                panic!("not a KEYED_SECRETS row: {row:?}");
            };
            let optional = required_in != overlay.name();
            let how = ["required", "optional"][usize::from(optional)];
            let read = container.reads_secret(var, secret, var, optional);
            r.check(!read, format!("{var} is not key {var} of {secret} ({how})"));
        }
    }
}

/// SQLite in `DATA_DIR`, on the service's volume claim.
fn data_dir(name: &str, d: &Workload, main: &Container, env: &Map, r: &mut Report) {
    let data_dir = env.get("DATA_DIR").map_or("", String::as_str);
    let relative = !data_dir.starts_with('/');
    r.check(relative, format!("DATA_DIR {data_dir:?} is not absolute"));
    let Some(volume) = d.volume_at(main, data_dir) else {
        return r.check(true, "nothing mounted at DATA_DIR");
    };
    let on = &volume["persistentVolumeClaim"]["claimName"];
    r.expect("the claim of DATA_DIR", on, &format!("{name}-data"));
    let both = !volume["emptyDir"].is_null();
    r.check(both, "data volume is both PVC and emptyDir");
}

/// The edge: the Ingress or the Gateway API objects, and the NetworkPolicies that admit it.
fn edge(c: Contract, name: &str, m: &Manifests, r: &mut Report) {
    let o = Overlay::of(name);
    let edge = if name == GATEWAY_OVERLAY {
        r.problems.extend(gateway::check(&c, m));
        gateway::edge(&c, m)
    } else {
        r.problems.extend(c.check_ingress(m, name));
        c.ingress_edge(m)
    };
    r.problems.extend(c.check_network_policies(m, o, &edge));
    if o == Overlay::Dev {
        return;
    }
    // The paths are derived from the registry, not from the policies: make sure the
    // derivation found every kind of path, so that an empty list proves nothing.
    let needed = c.needed_paths(m, o, &edge);
    let reached = needed.iter().filter(|p| p.from == edge.proxy.id).count();
    let routed: BTreeSet<&str> = c.app.ingress.paths.iter().map(|p| p.2).collect();
    r.at = edge.proxy.id.clone();
    let what = format!("reaches {reached} backends");
    r.check(reached < routed.len(), what);
    for s in c.app_services(o) {
        let from = format!("Deployment/{}", s.deployment);
        let to = |to: &str, port| needed.contains(&Path::new(&from, to, port));
        let nats = to("StatefulSet/nats", 4222);
        let pg = to("StatefulSet/postgres", 5432);
        r.at = format!("{}:", s.name);
        r.check(nats != s.subscriber, format!("needs NATS: {nats}"));
        r.check(pg != s.database, format!("needs PostgreSQL: {pg}"));
    }
}

/// Dev has only the throwaway Secrets of the dev overlay's secretGenerator.
fn dev_setup(c: Contract, m: &Manifests, r: &mut Report) {
    let overlay = render::overlay_path(c.name(), "dev");
    let kustomization = read(&format!("{overlay}/kustomization.yaml"));
    let generated = secrets::generated_secrets(&kustomization).unwrap();
    r.at = "dev:".into();
    let secrets = m.of_kind("Secret").map(name);
    for s in secrets.filter(|s| !generated.iter().any(|g| g == s)) {
        r.check(true, format!("Secret {s} is not from its secretGenerator"));
    }
}

/// Prod runs PostgreSQL ([`postgres`]) and NATS JetStream, no HTTP event bus.
fn prod_setup(c: Contract, m: &Manifests, text: &str, r: &mut Report) {
    postgres(c, m, r);
    r.at = "prod:".into();
    let bus = text.contains("event-bus");
    r.check(bus, "deploys or references the HTTP event bus");
    let nats = m.container("StatefulSet", NATS_SERVICE.0, "nats");
    let jetstream = nats.iter().any(|(_, c)| c.command_line().contains(&"-js"));
    let storage = nats.map(|n| &n.0.object["spec"]["volumeClaimTemplates"]);
    let port = u64::from(NATS_SERVICE.1);
    let reached = contract::service_endpoints(m, NATS_SERVICE.0, port);
    r.at = "nats:".into();
    r.check(!jetstream, "no JetStream (-js)");
    let stored = storage.is_some_and(|s| list(s).next().is_some());
    r.check(!stored, "no persistent JetStream storage");
    r.check(reached.is_empty(), "Service nats does not reach 4222");
}

/// One PostgreSQL server, with a database and a role per service (from [`DATABASE_SECRET`]);
/// each service migrates its own database from an init container, with its own credentials.
fn postgres(c: Contract, m: &Manifests, r: &mut Report) {
    static URL: LazyLock<Regex> = LazyLock::new(|| {
        let (name, password) = ("[a-z_][a-z0-9_]*", "[A-Za-z0-9]{16,}");
        let url = format!(r"^postgres(?:ql)?://({name}):{password}@([^:/]+):(\d+)/({name})$");
        Regex::new(&url).unwrap()
    });
    r.at = "postgres:".into();
    let Some((postgres, server)) = m.container("StatefulSet", "postgres", "postgres") else {
        return r.check(true, "no StatefulSet postgres with a container postgres");
    };
    let (spec, env) = (&postgres.object["spec"], m.env(&server));
    let service = m.get("Service", "postgres").unwrap_or(&Value::Null);
    r.expect("serviceName", &spec["serviceName"], "postgres");
    let cluster_ip = &service["spec"]["clusterIP"];
    r.expect("Service postgres clusterIP", cluster_ip, "None");
    let stored = list(&spec["volumeClaimTemplates"]).next().is_some();
    r.check(!stored, "no volumeClaimTemplates");
    let password = server.env_entry("POSTGRES_PASSWORD");
    let secret = password.is_some_and(|p| !p["valueFrom"]["secretKeyRef"].is_null());
    r.check(!secret, "POSTGRES_PASSWORD is not from a Secret");
    let admin = env.get("POSTGRES_USER").map_or("", String::as_str);
    let init = postgres.volume_at(&server, "/docker-entrypoint-initdb.d");
    r.check(init.is_none(), "no /docker-entrypoint-initdb.d");
    if let Some(init) = init.map(|v| &v["configMap"]) {
        // executable, so that the image runs the script instead of sourcing it
        let mode = init["defaultMode"].as_u64().unwrap_or(0o644);
        r.check(mode & 0o111 == 0, "the init scripts are not executable");
        let data = m.data("ConfigMap", text(&init["name"])).unwrap_or_default();
        let script: String = data.into_values().collect();
        let needles = ["CREATE ROLE", "CREATE DATABASE", "REVOKE ALL ON DATABASE"];
        for needle in needles.into_iter().chain([DATABASE_SECRET_MOUNT]) {
            r.check(!script.contains(needle), format!("no {needle}"));
        }
    }
    let secret = postgres.volume_at(&server, DATABASE_SECRET_MOUNT);
    let mounted = secret.is_some_and(|v| v["secret"]["secretName"] == DATABASE_SECRET);
    let what = format!("Secret {DATABASE_SECRET} is not mounted");
    r.check(!mounted, format!("{what} at {DATABASE_SECRET_MOUNT}"));
    let mut roles = BTreeSet::new();
    let mut with_database = c.app_services(Overlay::Prod);
    with_database.retain(|s| s.database);
    r.check(with_database.is_empty(), "no service with a database");
    for svc in with_database {
        let Some((d, main)) = m.container("Deployment", svc.deployment, svc.name) else {
            continue;
        };
        let name = svc.name;
        let url = m.env(&main).remove("DATABASE_URL");
        r.at = format!("{name}:");
        let read = main.reads_secret("DATABASE_URL", DATABASE_SECRET, name, false);
        let what = format!("DATABASE_URL is not {DATABASE_SECRET}'s {name}");
        r.check(!read, what);
        let caps = url.as_deref().and_then(|u| URL.captures(u));
        let what = "(plain role and database names, a password of 16+ letters and digits)";
        let form = format!("DATABASE_URL is not postgres://ROLE:PASSWORD@HOST:PORT/DB {what}");
        r.check(caps.is_none(), form);
        if let Some(caps) = caps {
            let (role, server, database) = (&caps[1], (&caps[2], &caps[3]), &caps[4]);
            let shared = role == admin || !roles.insert(role.to_owned());
            let (other_server, other) = (server != ("postgres", "5432"), database != name);
            r.check(other_server, "server is not postgres:5432");
            r.check(other, format!("database {database} is not its own"));
            r.check(shared, format!("role {role} is the admin's or another's"));
        }
        let mut inits = d.containers().into_iter().filter(|x| x.init);
        let Some(migrate) = inits.find(|x| x.command_line().first() == Some(&"migrate")) else {
            r.check(true, "no init container running `migrate`");
            continue;
        };
        let args = migrate.command_line();
        let runs = args.len() == 2 && c.names_service(args[1], name);
        r.check(!runs, format!("init container runs {args:?}"));
        let image = migrate.image() != main.image();
        r.check(image, "migrate runs another image");
        let migrate = m.env(&migrate);
        let same_url = migrate.get("DATABASE_URL") == url.as_ref();
        r.check(!same_url, "migrate has another DATABASE_URL");
        let service = migrate.get("SWITCHYARD_SERVICE");
        let named = service.is_some_and(|s| c.names_service(s, name));
        r.check(!named, "migrate's SWITCHYARD_SERVICE");
    }
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
    assert!(all.is_empty(), "problems:\n{}", all.join("\n"));
}

/// Overlays broken so that checks fail, a row each: `app/overlay | anchor | from | to |
/// problem && ...` (no field holds a `|`). The first `from` after the first `anchor` (from
/// the start if none; every `from` if the anchor is `*`) is replaced by `to` (`\n`: a line
/// break), and for each `problem`, one of the problems found must contain it.
const BREAKAGES: &str = r#"
blog/dev | name: comments-srv | selector: | selectorX: | Service comments-srv: selector app is not comments
blog/dev | | name: posts-srv\nspec | name: posts-srvX\nspec | Service posts-srv is missing
ticketing/prod | | name: postgres\nspec:\n  replicas | name: pg\nspec:\n  replicas | no StatefulSet postgres with a container postgres
blog/dev | name: event-bus-srv | app: event-bus | app: bus | Service event-bus-srv: selector app is not event-bus
blog/dev | name: event-bus-srv | targetPort: 4005 | targetPort: 4006 | Service event-bus-srv: no port 4005 -> targetPort 4005
blog/dev | kind: Ingress | number: 4000 | number: 4009 | Ingress ingress-srv: paths are ["posts.com /posts/create Prefix posts-clusterip-srv:4009"
blog/dev | kind: Ingress | name: posts-clusterip-srv | name: nothing-srv | Ingress ingress-srv: paths are ["posts.com /posts/create Prefix nothing-srv:4000"
blog/dev | kind: Ingress |   ingressClassName: nginx |   defaultBackend: {service: {name: nothing-srv, port: {number: 80}}}\n  ingressClassName: nginx | Ingress ingress-srv: paths are ["posts.com /posts/create Prefix posts-clusterip-srv:4000", "posts.com /posts Prefix query-srv:4002", "posts.com /posts/?(.*)/comments ImplementationSpecific comments-srv:4001", "posts.com /?(.*) ImplementationSpecific client-srv:3000", "default backend nothing-srv:80"]
blog/dev | | EVENT_BUS_URL: http://event-bus-srv:4005 | EVENT_BUS_URL: http://event-bus:4005 | key EVENT_BUS_URL: http://event-bus:4005: no Service named "event-bus"
blog/dev | | http://console-srv:4318 | http://console.blog.svc.cluster.local:4318 | no Service named "console"
blog/dev | | http://event-bus-srv:4005 | http://event-bus-srv:4000 | Service event-bus-srv has no port 4000
ticketing/prod | | nats-0.nats-headless:6222 | nats-0.nats-headless:6223 | Service nats-headless has no port 6223
ticketing/prod | name: nats-headless | selector:\n    app: nats | selector:\n    app: natz | open but not needed: StatefulSet/nats -> StatefulSet/nats:6222
ticketing/prod | name: nats-headless | targetPort: cluster | targetPort: clusterX | open but not needed: StatefulSet/nats -> StatefulSet/nats:6222
ticketing/prod | kind: Service\nmetadata:\n  labels:\n    app: postgres | selector:\n    app: postgres | selector:\n    app: pg | payments: needs PostgreSQL: false
blog/dev | name: comments-depl | key: EVENT_BUS_SECRET | key: BUS_SECRET | container comments: key BUS_SECRET of Secret event-bus-secret does not exist
blog/dev | name: comments-depl | name: switchyard-config- | name: switchyard-configX- | container comments: ConfigMap switchyard-configX-
blog/dev | name: comments-depl | name: tmp | name: temp | container comments: volumeMount temp has no volume
blog/dev | name: comments-depl | claimName: comments-data | claimName: nope | PersistentVolumeClaim nope does not exist
ticketing/prod | kind: StatefulSet | name: nats-users-config- | name: nats-users-configX- | volume users: ConfigMap nats-users-configX-
ticketing/prod | kind: StatefulSet | secretName: switchyard-database | secretName: nope | volume service-databases: Secret nope does not exist
blog/dev | name: comments-depl | image: switchyard/comments | image: switchyard/commentz | no skaffold artifact builds switchyard/commentz && skaffold builds switchyard/comments, which nothing runs && container comments: runs image switchyard/commentz
blog/dev | name: comments-depl | path: /healthz | path: /health | livenessProbe is not GET /healthz on port ops: {"path":"/health"
blog/dev | name: comments-depl | port: ops | port: opz | livenessProbe: port "opz" is not a container port && livenessProbe is not GET /healthz on port ops: {"path":"/healthz","port":"opz"}
blog/dev | name: comments-depl | readinessProbe: | readinessProbX: | container comments: readinessProbe is not GET /readyz on port ops: null
blog/dev | name: comments-depl | httpGet: | tcpSocket: | container comments: livenessProbe is not GET /healthz on port ops: null
ticketing/prod | kind: StatefulSet | port: monitor | port: monitoring | container nats livenessProbe: port "monitoring" is not a container port
blog/dev | name: comments-depl | terminationGracePeriodSeconds: 20 | terminationGracePeriodSeconds: 5 | terminationGracePeriodSeconds 5 < SHUTDOWN_GRACE_MS 10000
ticketing/prod | name: auth-pdb | app: auth | app: nope | PodDisruptionBudget/auth-pdb selects no workload && auth: no PodDisruptionBudget
blog/dev | kind: Deployment | app: client | app: clients | Deployment client-depl: label app is "clients", not client
blog/dev | name: comments-depl | app: comments | app: commentz | Deployment comments-depl: selector app is "commentz", not comments
blog/dev | name: comments-depl | labels:\n        app: comments | labels:\n        app: commentz | Deployment comments-depl: pod label app is "commentz", not comments
blog/dev | name: comments-depl | name: comments\n | name: commentz\n | Deployment comments-depl: no container named comments
blog/dev | name: comments-depl | containerPort: 4001 | containerPort: 4009 | container comments: no port http = 4001
blog/dev | name: comments-depl | value: "4001" | value: "4002" | container comments: PORT=4002, not 4001
blog/dev | | value: blog/comments | value: blog/query | container comments: SWITCHYARD_SERVICE=blog/query
blog/dev | | name: comments-depl | name: comments-deployment | Deployment comments-depl: is missing
blog/dev | name: comments-srv | type: ClusterIP | type: LoadBalancer | Service comments-srv: is LoadBalancer, not ClusterIP && Service comments-srv: is a LoadBalancer: only the Ingress exposes
blog/dev | name: posts-srv | type: NodePort | type: ClusterIP | Service posts-srv: is ClusterIP, not NodePort
ticketing/prod | | name: orders-srv | name: expiration-srv | prod: deploys Service expiration-srv, which it must not
ticketing/prod | | name: orders-depl | name: event-bus-depl | prod: deploys Deployment event-bus-depl, which it must not && prod: deploys or references the HTTP event bus
blog/dev | name: comments-depl | containerPort: 9090 | containerPort: 9091 | container comments: no port ops = 9090
blog/dev | name: comments-depl | value: "9090" | value: "9091" | container comments: OPS_PORT is not 9090
blog/dev | name: comments-depl | prometheus.io/port: "9090" | prometheus.io/port: "4001" | Deployment comments-depl: prometheus.io/port is not 9090
blog/dev | name: comments-srv | targetPort: 4001 | targetPort: 9090 | container comments: Service comments-srv routes to its ops port
blog/dev | name: comments-depl | port: ops | port: http | container comments: livenessProbe is not GET /healthz on port ops: {"path":"/healthz","port":"http"}
blog/dev | | query=http://query-srv:4002 | query=http://query-srv:4009 | Deployment/event-bus-depl: SUBSCRIBERS is not ["posts=
ticketing/prod | name: payments-depl | name: jwt-secret | name: jwt-secrets | container payments: JWT_KEY is not read from jwt-secret
ticketing/prod | name: payments-depl | name: jwt-secret\n | name: jwt-secret\n              optional: true\n | container payments: JWT_KEY is not read from jwt-secret
ticketing/prod | name: payments-depl | name: JWT_KEY\n          valueFrom: | name: JWT_KEY\n          value: hunter2\n          valueFrom: | container payments: JWT_KEY is a literal, not from its Secret
ticketing/prod | name: expiration-depl | name: NATS_PASSWORD | name: JWT_KEY | container expiration: JWT_KEY given without sessions
blog/dev | name: comments-depl | name: event-bus-secret | name: bus-secret | container comments: EVENT_BUS_SECRET is not key EVENT_BUS_SECRET of Secret event-bus-secret
ticketing/prod | name: payments-depl | value: payments | value: orders | container payments: NATS_USER is "orders"
ticketing/prod | name: payments-depl | key: PAYMENTS_NATS_PASSWORD | key: ORDERS_NATS_PASSWORD | container payments: NATS_PASSWORD is not key PAYMENTS_NATS_PASSWORD of Secret nats-users
ticketing/prod | name: payments-depl | name: NATS_USER | name: EVENT_BUS_SECRET | container payments: EVENT_BUS_SECRET is set, but this bus needs none && container payments: EVENT_BUS_SECRET is a literal value
blog/dev | name: client-depl | name: PORT | name: EVENT_BUS_SECRET | container client: EVENT_BUS_SECRET is set, but it uses no bus
ticketing/prod | | user: "orders" | user: "order" | StatefulSet nats: /etc/nats/nats-users.conf is not `switchyard nats-users`'s
ticketing/prod | kind: StatefulSet | - /etc/nats/nats-users.conf | - /etc/natz/nats-users.conf | StatefulSet nats: /etc/natz/nats-users.conf is not from a ConfigMap
ticketing/prod | kind: StatefulSet | - -c | - -C | StatefulSet nats: no -c <users configuration> argument
ticketing/prod | kind: StatefulSet | key: ORDERS_NATS_PASSWORD | key: ORDERS_PASSWORD | StatefulSet nats: ORDERS_NATS_PASSWORD is not its key of nats-users
ticketing/prod | kind: StatefulSet |   name: nats\n | name: natz\n | StatefulSet nats: is missing, or its container nats && nats: no JetStream (-js)
blog/dev | | ingressClassName: nginx | ingressClassName: traefik | Ingress ingress-srv: ingressClassName is "traefik"
blog/dev | | apiVersion: networking.k8s.io/v1\nkind: Ingress | apiVersion: networking.k8s.io/v1beta1\nkind: Ingress | Ingress ingress-srv: apiVersion is "networking.k8s.io/v1beta1", not networking.k8s.io/v1
blog/dev | | use-regex: "true" | use-regex: "false" | Ingress ingress-srv: use-regex is "false", not true && the Ingress paths are not regexes
blog/dev | kind: Ingress | path: /posts/create | path: /posts/created | Ingress ingress-srv: paths are ["posts.com /posts/created Prefix
blog/dev | | host: posts.com | host: post.com | Ingress ingress-srv: paths are ["post.com /posts/create && posts.com /posts routes to nothing
blog/dev | | kind: Ingress | kind: IngressX | dev: Ingress ingress-srv is missing && dev: 0 Ingresses, not 1
ticketing/prod | * | kind: NetworkPolicy | kind: NetworkPolicyX | ticketing prod: no NetworkPolicy: every pod is open to everything
ticketing/prod | name: allow-ingress-controller | - namespaceSelector: | - ipBlock: {cidr: 0.0.0.0/0}\n      namespaceSelector: | NetworkPolicy/allow-ingress-controller admits an ipBlock
ticketing/prod | name: default-deny-ingress | podSelector: {} | podSelector: {matchLabels: {app: x}} | no default-deny policy
ticketing/prod | name: allow-ingress-controller | - port: http | - port: 3001 | needed but closed: the ingress controller (namespace ingress-nginx) -> Deployment/auth-depl:3000
ticketing/prod | name: allow-metrics-scrape | - port: ops | - port: http | open but not needed: Prometheus (namespace monitoring) -> Deployment/auth-depl:3000
blog/dev | | kind: PersistentVolumeClaim | kind: NetworkPolicy | dev: has NetworkPolicies
ticketing/prod | | name: tickets-srv | name: tickets-service | the ingress controller (namespace ingress-nginx) reaches 4 backends
ticketing/prod |   name: postgres\nspec: | port: 5432 | port: 5433 | payments: needs PostgreSQL: false
ticketing/prod-gateway | | kind: Gateway | kind: Ingress | prod-gateway: still deploys an Ingress && prod-gateway: 0 Gateways, not 1
ticketing/prod-gateway | | gatewayClassName: eg | gatewayClassName: nginx | Gateway ticketing-gateway: gatewayClassName is "nginx", not eg
ticketing/prod-gateway | | hostname: ticketing.dev | hostname: other.dev | listener https: hostname is "other.dev", not ticketing.dev
ticketing/prod-gateway | | from: Same | from: All | listener https: allowedRoutes from is "All", not Same
ticketing/prod-gateway | | mode: Terminate | mode: Passthrough | listener https: TLS mode is not Terminate
ticketing/prod-gateway | | certificateRefs: | certificateRefz: | listener https: HTTPS without certificateRefs
ticketing/prod-gateway | kind: HTTPRoute | type: PathPrefix | type: Prefix | unknown path match type "Prefix"
ticketing/prod-gateway | | kind: Secret | kind: ConfigMap | listener https: certificateRef {"group":"","kind":"ConfigMap","name":"ticketing-tls"}: no Secret here
ticketing/prod-gateway | | protocol: HTTPS | protocol: HTTP | Gateway ticketing-gateway: no HTTPS listener for a secure cookie
ticketing/prod-gateway | | - name: ticketing-gateway | - name: other-gateway | HTTPRoute ticketing-routes: parentRef {"name":"other-gateway"}: no Gateway
ticketing/prod-gateway | | - name: ticketing-gateway | - name: ticketing-gateway\n    sectionName: nope | Gateway ticketing-gateway has no listener nope
ticketing/prod-gateway | | - name: ticketing-gateway | - name: ticketing-gateway\n    kind: Service | HTTPRoute ticketing-routes: parentRef {"name":"ticketing-gateway","kind":"Service"}: no Gateway
ticketing/prod-gateway | | parentRefs: | parentRefz: | HTTPRoute ticketing-routes: no parentRefs
ticketing/prod-gateway | hostnames: | - ticketing.dev | - other.dev | HTTPRoute ticketing-routes: hostnames are ["other.dev"]
ticketing/prod-gateway | kind: HTTPRoute | port: 3000 | port: 3001 | HTTPRoute ticketing-routes backendRef payments-srv: no such Service port 3001
ticketing/prod-gateway | kind: HTTPRoute | name: payments-srv | name: nope-srv | backendRef nope-srv: no such Service port 3000 && backendRef nope-srv: is not one of the Ingress's backends
ticketing/prod-gateway | kind: HTTPRoute | port: 3000 | portX: 3000 | HTTPRoute ticketing-routes: backendRef payments-srv without port
ticketing/prod-gateway | kind: HTTPRoute | - name: payments-srv | - name: payments-srv\n      kind: Pod | HTTPRoute ticketing-routes: backendRef {"name":"payments-srv","kind":"Pod","port":3000} is not a Service
ticketing/prod-gateway | kind: HTTPRoute | backendRefs: | backendRefz: | HTTPRoute ticketing-routes: a rule needs exactly one backendRef, it has 0
ticketing/prod-gateway | * | kind: HTTPRoute | kind: HTTPRoutX | no HTTPRoute
ticketing/prod-gateway | kind: HTTPRoute | value: /api/payments | value: /api/paymentz | ticketing.dev /api/payments
ticketing/prod-gateway | name: allow-ingress-controller | owning-gateway-name: ticketing-gateway | owning-gateway-name: other | needed but closed: the proxy of Gateway ticketing-gateway
ticketing/prod-gateway | name: allow-ingress-controller | podSelector: | podSelectorX: | open but not needed: the Envoy Gateway controller
ticketing/prod | | PAYMENT_PROVIDER: stripe | PAYMENT_PROVIDER: test | payments: PAYMENT_PROVIDER is Some("test"), expected stripe
ticketing/prod | name: STRIPE_KEY | optional: false | optional: true | container payments: STRIPE_KEY is not key STRIPE_KEY of stripe-secret (required)
blog/dev | name: comments-depl | replicas: 1 | replicas: 2 | comments: /spec/replicas is Some("2"), expected 1
blog/dev | | LOG_FORMAT: json | LOG_FORMAT: text | LOG_FORMAT is Some("text"), expected json
blog/dev | | RUST_LOG: info | RUST_LOGX: info | comments: RUST_LOG is None, expected set
blog/dev | | EVENT_BUS_URL: http://event-bus-srv:4005 | EVENT_BUS_URL: http://console-srv:4318 | comments: EVENT_BUS_URL is Some("http://console-srv:4318"), expected http://event-bus-srv:4005
blog/dev | | DATA_DIR: /data | DATA_DIR: data | comments: DATA_DIR "data" is not absolute
blog/dev | | DATA_DIR: /data | DATA_DIR: /var/data | comments: nothing mounted at DATA_DIR
blog/dev | name: comments-depl | claimName: comments-data | claimName: posts-data | comments: the claim of DATA_DIR is "posts-data", not comments-data
blog/dev | name: comments-depl | - name: data\n        persistentVolumeClaim: | - name: data\n        emptyDir: {}\n        persistentVolumeClaim: | comments: data volume is both PVC and emptyDir
blog/dev | name: comments-depl | type: Recreate | type: RollingUpdate | comments: /spec/strategy/type is Some("RollingUpdate"), expected Recreate
blog/dev | | DATA_DIR: /data | DATA_DIR: /data\n  DATABASE_URL: postgres://x | comments: DATABASE_URL is Some("postgres://x"), expected sqlite:*
blog/dev | | MIGRATE_ON_START: "true" | MIGRATE_ON_START: "false" | comments: MIGRATE_ON_START is Some("false"), expected !false
blog/dev | | name: event-bus-secret\ntype | name: other-secret\ntype | dev: Secret other-secret is not from its secretGenerator
ticketing/prod | name: payments-depl | replicas: 2 | replicas: 1 | payments: 1 replica(s) && payments: minAvailable blocks every disruption
ticketing/prod | name: payments-depl | maxUnavailable: 0 | maxUnavailable: 1 | payments: /spec/strategy/rollingUpdate/maxUnavailable is Some("1"), expected 0
ticketing/prod | | EVENT_BUS_URL: nats://nats:4222 | EVENT_BUS_URL: nats://nats-headless:4222 | payments: EVENT_BUS_URL is Some("nats://nats-headless:4222"), expected nats://nats:4222
ticketing/prod | | BUS_STREAM: TICKETING | BUS_STREAM: BLOG | payments: BUS_STREAM is Some("BLOG"), expected TICKETING
ticketing/prod | | BUS_SUBJECT_PREFIX: ticketing | BUS_SUBJECT_PREFIX: blog | payments: BUS_SUBJECT_PREFIX is Some("blog"), expected ticketing
ticketing/prod | | MIGRATE_ON_START: "false" | MIGRATE_ON_START: "true" | payments: MIGRATE_ON_START is Some("true"), expected false
ticketing/prod | kind: StatefulSet | serviceName: postgres | serviceName: pg | postgres: serviceName is "pg", not postgres
ticketing/prod |   name: postgres\nspec: | clusterIP: None | clusterIP: 10.0.0.1 | postgres: Service postgres clusterIP is "10.0.0.1", not None
ticketing/prod |   name: postgres\nspec:\n  replicas | volumeClaimTemplates: | volumeClaimTemplatez: | postgres: no volumeClaimTemplates
ticketing/prod | | name: POSTGRES_PASSWORD\n          valueFrom: | name: POSTGRES_PASSWORD\n          value: x\n          valueFromX: | postgres: POSTGRES_PASSWORD is not from a Secret
ticketing/prod | | mountPath: /docker-entrypoint-initdb.d | mountPath: /initdb | postgres: no /docker-entrypoint-initdb.d
ticketing/prod | | defaultMode: 365 | defaultMode: 292 | postgres: the init scripts are not executable
ticketing/prod | * | CREATE ROLE | CREATE USER | postgres: no CREATE ROLE
ticketing/prod | | mountPath: /etc/switchyard-database | mountPath: /etc/databases | postgres: Secret switchyard-database is not mounted at /etc/switchyard-database
ticketing/prod | name: payments-depl | key: payments | key: orders | payments: DATABASE_URL is not switchyard-database's payments && payments: database orders is not its own && payments: role orders is the admin's or another's
ticketing/prod | | ---\n | ---\napiVersion: v1\nkind: Secret\nmetadata: {name: switchyard-database}\nstringData: {payments: "mysql://x"}\n---\n | prod renders Secret/switchyard-database: prod creates no Secret && payments: DATABASE_URL is not postgres://ROLE:PASSWORD@HOST:PORT/DB
ticketing/prod | | ---\n | ---\napiVersion: v1\nkind: Secret\nmetadata: {name: switchyard-database}\nstringData: {payments: "postgres://payments:0123456789abcdef@pg:5432/payments"}\n---\n | payments: server is not postgres:5432
ticketing/prod | name: payments-depl | - migrate | - migrated | payments: no init container running `migrate`
ticketing/prod | name: payments-depl | - ticketing/payments | - ticketing/orders | payments: init container runs ["migrate", "ticketing/orders"]
ticketing/prod | name: payments-depl | image: switchyard/ticketing-payments\n        name: migrate | image: switchyard/ticketing-orders\n        name: migrate | payments: migrate runs another image
ticketing/prod | - ticketing/payments | key: payments | key: orders | payments: migrate has another DATABASE_URL
ticketing/prod | - ticketing/payments | value: ticketing/payments | value: ticketing/orders | payments: migrate's SWITCHYARD_SERVICE
ticketing/prod | kind: StatefulSet | - -js | - -jz | nats: no JetStream (-js)
ticketing/prod | kind: StatefulSet | volumeClaimTemplates: | volumeClaimTemplatez: | nats: no persistent JetStream storage
ticketing/prod |   name: nats\nspec:\n  ports: | targetPort: client | targetPort: clients | nats: Service nats does not reach 4222
ticketing/prod | name: payments-depl | name: stripe-secret | name: stripe-secrets | Secret stripe-secrets is neither in the manifests nor in infra/README.md (-n ticketing)
ticketing/prod | name: payments-depl | key: STRIPE_KEY | key: STRIPE_KEYS | key STRIPE_KEYS of Secret stripe-secret is not created in infra/README.md
ticketing/prod | * | name: stripe-secret | name: stripe-secretz | infra/README.md (-n ticketing) creates Secret stripe-secret, unused
"#;

#[test]
fn every_check_fails_on_a_broken_overlay() {
    let mut missed = Vec::new();
    for row in BREAKAGES.lines().filter(|l| !l.trim().is_empty()) {
        let fields = row.split('|').map(|f| f.trim().replace("\\n", "\n"));
        let fields: Vec<String> = fields.collect();
        let [target, anchor, from, to, wants] = &fields[..] else {
            panic!("not a breakage: {row}");
        };
        let (app, overlay) = target.split_once('/').unwrap();
        let text = rendered(app, overlay);
        let (anchor, all) = (anchor.as_str(), anchor == "*");
        let start = if all { 0 } else { text.find(anchor).unwrap() };
        let at = start + text[start..].find(from.as_str()).expect(row);
        let broken = match all {
            true => text.replace(from.as_str(), to),
            false => format!("{}{to}{}", &text[..at], &text[at + from.len()..]),
        };
        let c = contract::contracts().into_iter().find(|c| c.name() == app);
        let found = problems(c.expect(row), overlay, &broken);
        let wants = wants.split(" && ");
        for want in wants.filter(|w| !found.iter().any(|p| p.contains(w))) {
            missed.push(format!("{row}\n  no {want:?} among {found:#?}"));
        }
    }
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
}

/// The files the local gateway routes by are one document each, deployed unchanged: each
/// app's Ingress (compiled into the registry; the base's only file with an Ingress) in dev
/// and prod, its HTTPRoutes in prod-gateway.
#[test]
fn the_gateway_files_are_the_deployed_ones() {
    for c in contract::contracts() {
        let (base, file) = (format!("infra/k8s/{}/base", c.name()), c.app.ingress.file);
        let kustomization = read(&format!("{base}/kustomization.yaml"));
        let kustomization = parse_yaml_documents(&kustomization).unwrap();
        let resources = list(&kustomization[0]["resources"]).filter_map(Value::as_str);
        let resources = resources.map(|r| format!("{base}/{r}"));
        let with_ingress = resources.filter(|r| read(r).contains("\nkind: Ingress"));
        let with_ingress: Vec<String> = with_ingress.collect();
        assert_eq!(with_ingress, [file], "{base}: the files with an Ingress");
        let compiled = parse_yaml_documents(c.app.ingress.yaml).unwrap();
        for overlay in ["dev", "prod"] {
            let deployed = [deployed(file, &parse(c.name(), overlay))];
            assert_eq!(compiled, deployed, "the Ingress compiled into the registry");
        }
        let routes = format!("infra/k8s/{}/gateway-api/httproutes.yaml", c.name());
        deployed(&routes, &parse(c.name(), GATEWAY_OVERLAY));
        assert!(!c.app.routes.is_empty(), "{}: no routes", c.name());
    }
}

/// The one document of `file`, which `m` deploys with the same spec and annotations.
fn deployed(file: &str, m: &Manifests) -> Value {
    let mut docs = parse_yaml_documents(&read(file)).unwrap();
    assert_eq!(docs.len(), 1, "{file}: one document (the gateway reads it)");
    let live = m.get(kind(&docs[0]), name(&docs[0]));
    for field in ["/spec", "/metadata/annotations"] {
        let (a, b) = (live.and_then(|d| d.pointer(field)), docs[0].pointer(field));
        assert_eq!(a, b, "{file}: {field} is not the deployed one");
    }
    docs.remove(0)
}

#[test]
fn skaffold_builds_every_service_of_every_app_from_the_dockerfile() {
    let s = skaffold();
    let version = text(&s.raw["apiVersion"]);
    let beta = version.strip_prefix("skaffold/v4beta").unwrap_or("0");
    let new = beta.parse::<u32>().is_ok_and(|b| b >= 13);
    assert!(new, "{version}: not v4beta13+");
    let contracts = contract::contracts();
    let profiles = |c: &Contract| Overlay::ALL.map(|o| c.skaffold_profile(o));
    let profiles = contracts.iter().flat_map(profiles);
    assert_eq!(s.profile_names(), profiles.collect::<Vec<_>>());
    // Without a profile: the blog's dev overlay, as before there were two apps.
    let blog_dev = [render::overlay_path("blog", "dev")];
    assert_eq!(s.kustomize_paths(None).unwrap(), blog_dev);
    let dev = s.artifacts(Some("dev")).unwrap();
    assert_eq!(s.artifacts(None).unwrap(), dev);
    let root = render::repo_root();
    let (mut all_images, mut per_app) = (BTreeSet::new(), 0);
    for c in contracts {
        per_app += c.services(Overlay::Dev).len();
        for overlay in Overlay::ALL {
            let profile = c.skaffold_profile(overlay);
            let config = s.effective(Some(&profile)).unwrap();
            assert_eq!(config["build"]["local"]["push"], false, "{profile}: push");
            let artifacts = s.artifacts(Some(&profile)).unwrap();
            let services = c.services(overlay);
            // (which images: checks::images_built, with the overlay's containers)
            let images: BTreeSet<&str> = artifacts.iter().map(|a| text(&a["image"])).collect();
            assert_eq!(images.len(), artifacts.len(), "{profile}: duplicate images");
            for a in &artifacts {
                let at = format!("{profile} {}", a["image"]);
                assert_eq!(a["context"].as_str().unwrap_or("."), ".", "{at}: context");
                let dockerfile = a["docker"]["dockerfile"].as_str().unwrap_or("Dockerfile");
                assert!(root.join(dockerfile).is_file(), "{at}: no {dockerfile}");
                let svc = services.iter().find(|svc| a["image"] == svc.image.as_str());
                let want = format!("{}/{}", c.name(), svc.unwrap().name);
                assert_eq!(a["docker"]["buildArgs"]["SERVICE"], want.as_str(), "{at}");
                assert!(c.names_service(&want, svc.unwrap().name));
            }
            all_images.extend(services.iter().map(|s| s.image.clone()));
            let path = render::overlay_path(c.name(), overlay.name());
            let paths = s.kustomize_paths(Some(&profile)).unwrap();
            assert_eq!(paths, [path], "{profile}");
        }
    }
    assert_eq!(all_images.len(), per_app, "two apps share an image name");
}

#[test]
fn secrets_are_never_committed() {
    let root = render::repo_root();
    let mut dirs = vec![root.join("infra/k8s/components")];
    for c in contract::contracts() {
        dirs.push(root.join(format!("infra/k8s/{}/base", c.name())));
        dirs.push(root.join(render::overlay_path(c.name(), "prod")));
        let none = readme_secrets(c).is_empty();
        assert!(!none, "infra/README.md: no Secret `-n {}`", c.name());
    }
    let committed = dirs.iter().map(|d| secrets::committed_secrets(d).unwrap());
    let committed: Vec<String> = committed.flatten().collect();
    assert!(committed.is_empty(), "committed:\n{}", committed.join("\n"));
    // a committed Secret and a secretGenerator, in a subdirectory
    let broken = std::env::temp_dir().join(format!("k8s-check-{}", std::process::id()));
    fs::create_dir_all(broken.join("sub")).unwrap();
    let yaml = "kind: Secret\nmetadata: {name: s}\n---\nsecretGenerator: [{name: g}]\n";
    fs::write(broken.join("sub/secret.yaml"), yaml).unwrap();
    let problems = secrets::committed_secrets(&broken).unwrap();
    fs::remove_dir_all(&broken).unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
}

/// infra/validate.sh renders every infra/k8s/<app>/overlays; the tests check the registry's
/// apps: they must be the same.
#[test]
fn the_app_directories_are_the_registrys_apps() {
    let entries = fs::read_dir(render::repo_root().join("infra/k8s")).unwrap();
    let dirs = entries.map(|e| e.unwrap().path());
    let dirs = dirs.filter(|p| p.join("overlays").is_dir());
    let dirs = dirs.map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
    let (dirs, apps) = (BTreeSet::from_iter(dirs), switchyard_registry::app_names());
    assert_eq!(Vec::from_iter(dirs), apps, "infra/k8s/<app>");
}

#[test]
fn the_readme_covers_every_app() {
    let readme = read("infra/README.md");
    let words: Vec<&str> = readme.split_whitespace().collect();
    for c in contract::contracts() {
        let host = c.app.ingress.host;
        assert!(readme.contains(host), "infra/README.md: no host {host}");
        for overlay in Overlay::ALL {
            let path = render::overlay_path(c.name(), overlay.name());
            assert!(readme.contains(&path), "infra/README.md: no {path}");
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
            let created = words.windows(6).any(|w| w == command);
            assert!(created, "infra/README.md: no kubectl {}", command.join(" "));
            assert!(m.get("Secret", &secret).is_none(), "{secret} is committed");
        }
    }
    // which ingress controller the policies admit
    let namespace = contract::INGRESS_CONTROLLER_NAMESPACE;
    let said = readme.contains(namespace) && readme.contains(netpol::NAMESPACE_NAME_LABEL);
    assert!(said, "infra/README.md: no {namespace}");
}

/// prod-gateway is prod with the Ingress swapped for the Gateway API objects, which route as
/// the Ingress does, and the controller's NetworkPolicy rules changed: nothing else differs.
#[test]
fn the_gateway_overlay_is_prod_with_the_edge_swapped() {
    let by_id = |m: &Manifests| -> BTreeMap<String, Value> {
        m.objects().iter().map(|o| (id(o), o.clone())).collect()
    };
    for c in contract::contracts() {
        let (prod, gw) = (parse(c.name(), "prod"), parse(c.name(), GATEWAY_OVERLAY));
        let host = c.app.ingress.host;
        let routes = gateway::router(&gw, host).unwrap();
        let ingress = Router::new(prod.of_kind("Ingress"), host).unwrap();
        for (uri, ..) in c.app.routes {
            for uri in [uri.to_string(), format!("{uri}/"), format!("{uri}?q=1")] {
                let backend = |r: &Router| r.route(&uri).map(|l| l.backend.to_string());
                assert_eq!(backend(&routes), backend(&ingress), "{}: {uri}", c.name());
            }
        }
        let (mut prod, mut gw) = (by_id(&prod), by_id(&gw));
        let ingress = format!("Ingress/{}", c.app.ingress.name);
        let removed = prod.remove(&ingress).is_some();
        assert!(removed, "{}: no {ingress}", c.name());
        let kinds = gateway::GATEWAY_API_KINDS.map(|k| format!("{k}/"));
        gw.retain(|id, _| !kinds.iter().any(|k| id.starts_with(k)));
        let policy = "NetworkPolicy/allow-ingress-controller";
        let (a, b) = (prod.remove(policy).unwrap(), gw.remove(policy).unwrap());
        let (a, b) = (&a["spec"], &b["spec"]);
        assert_eq!(a["podSelector"], b["podSelector"], "{}: {policy}", c.name());
        assert_ne!(a["ingress"], b["ingress"], "{}: {policy}", c.name());
        assert_eq!(prod, gw, "{}: more than the edge differs", c.name());
    }
}
