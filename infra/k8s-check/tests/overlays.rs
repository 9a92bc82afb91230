//! Cross-reference checks of the rendered overlays (`target/k8s/<overlay>.yaml`,
//! rendered here with `kubectl kustomize` when missing or stale) against each
//! other, `skaffold.yaml` and the wire contract.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;
use switchyard_k8s_check::contract::{self, INGRESS_HOST, INGRESS_NAME, SERVICES};
use switchyard_k8s_check::ingress::Router;
use switchyard_k8s_check::manifest::Workload;
use switchyard_k8s_check::skaffold::Skaffold;
use switchyard_k8s_check::{Manifests, checks, parse_yaml_documents, render};

struct Overlay {
    name: &'static str,
    /// The skaffold profile that deploys it.
    profile: &'static str,
    /// Contract services this overlay does not deploy.
    absent: &'static [&'static str],
}

const DEV: Overlay = Overlay {
    name: "dev",
    profile: "dev",
    absent: &[],
};
const PROD: Overlay = Overlay {
    name: "prod",
    profile: "prod",
    absent: &["event-bus"],
};
const OVERLAYS: [&Overlay; 2] = [&DEV, &PROD];

/// Services with a database (all but client).
/// The services with a database, from the registry.
fn with_database() -> Vec<&'static str> {
    contract::APP
        .services
        .iter()
        .filter(|s| s.database)
        .map(|s| s.name)
        .collect()
}
/// Services scaled out in production.
const STATELESS: [&str; 5] = ["posts", "comments", "query", "moderation", "client"];

fn rendered(overlay: &str) -> &'static str {
    static DEV_TEXT: OnceLock<String> = OnceLock::new();
    static PROD_TEXT: OnceLock<String> = OnceLock::new();
    let cell = match overlay {
        "dev" => &DEV_TEXT,
        "prod" => &PROD_TEXT,
        other => panic!("unknown overlay {other}"),
    };
    cell.get_or_init(|| {
        render::rendered_overlay(&render::repo_root(), overlay)
            .unwrap_or_else(|e| panic!("cannot render overlay {overlay}: {e}"))
    })
}

fn manifests(overlay: &str) -> &'static Manifests {
    static DEV_M: OnceLock<Manifests> = OnceLock::new();
    static PROD_M: OnceLock<Manifests> = OnceLock::new();
    let cell = if overlay == "dev" { &DEV_M } else { &PROD_M };
    cell.get_or_init(|| {
        Manifests::parse(rendered(overlay))
            .unwrap_or_else(|e| panic!("target/k8s/{overlay}.yaml: {e}"))
    })
}

fn skaffold() -> Skaffold {
    let path = render::repo_root().join("skaffold.yaml");
    Skaffold::parse(&fs::read_to_string(&path).unwrap()).unwrap()
}

fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

fn deployment<'a>(m: &'a Manifests, app: &str) -> Workload<'a> {
    let svc = contract::service(app).unwrap();
    m.workload("Deployment", svc.deployment)
        .unwrap_or_else(|| panic!("Deployment {} missing", svc.deployment))
}

fn app_env(m: &Manifests, app: &str) -> switchyard_k8s_check::manifest::Env {
    let d = deployment(m, app);
    let c = d.container(app).unwrap();
    m.env(&c)
}

fn cross_references(overlay: &Overlay) -> Vec<String> {
    let m = manifests(overlay.name);
    let mut problems = checks::all(m);

    let artifacts: BTreeSet<String> = skaffold()
        .artifacts(Some(overlay.profile))
        .unwrap()
        .into_iter()
        .map(|a| a.image)
        .collect();
    problems.extend(checks::images_built(m, &artifacts));

    for svc in SERVICES.iter() {
        if overlay.absent.contains(&svc.app) {
            problems.extend(contract::check_absent(m, svc));
        } else {
            problems.extend(contract::check_service(m, svc));
        }
    }
    problems.extend(contract::check_node_port(m));
    problems.extend(contract::check_ops(m));
    if !overlay.absent.contains(&"event-bus") {
        problems.extend(contract::check_subscribers(m));
    }
    match m.get("Ingress", INGRESS_NAME) {
        Some(ingress) => problems.extend(contract::check_ingress(ingress)),
        None => problems.push(format!("Ingress {INGRESS_NAME} is missing")),
    }
    match Router::new(m.of_kind("Ingress"), INGRESS_HOST) {
        Ok(router) => problems.extend(contract::check_routes(&router)),
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

#[test]
fn dev_overlay_cross_references() {
    assert_no_problems("overlay dev", cross_references(&DEV));
}

#[test]
fn prod_overlay_cross_references() {
    assert_no_problems("overlay prod", cross_references(&PROD));
}

#[test]
fn ingress_routes_the_contract_requests() {
    let base_file = render::repo_root().join("infra/k8s/base/ingress-srv.yaml");
    let base = parse_yaml_documents(&fs::read_to_string(&base_file).unwrap()).unwrap();
    let mut tables: Vec<(String, Vec<&Value>)> = vec![(
        "infra/k8s/base/ingress-srv.yaml".into(),
        base.iter().collect(),
    )];
    for o in OVERLAYS {
        tables.push((
            format!("overlay {}", o.name),
            manifests(o.name).of_kind("Ingress").collect(),
        ));
    }
    let cases = [
        ("/posts/create", "posts-clusterip-srv:4000"),
        ("/posts", "query-srv:4002"),
        ("/posts/stream", "query-srv:4002"),
        ("/posts/abc123/comments", "comments-srv:4001"),
        ("/", "client-srv:3000"),
        ("/app.js", "client-srv:3000"),
    ];
    for (source, ingresses) in tables {
        let router = Router::new(ingresses, INGRESS_HOST).unwrap();
        assert!(router.uses_regex(), "{source}: paths are not regexes");
        let order: Vec<&str> = router.locations().iter().map(|l| l.path.as_str()).collect();
        assert_eq!(
            order,
            ["/posts/?(.*)/comments", "/posts/create", "/posts", "/?(.*)"],
            "{source}: nginx location order"
        );
        for (uri, want) in cases {
            let got = router.route(uri).map(|l| l.backend.to_string());
            assert_eq!(got.as_deref(), Some(want), "{source}: {INGRESS_HOST}{uri}");
        }
    }
}

#[test]
fn base_ingress_file_is_one_document_and_deployed_unchanged() {
    let path = render::repo_root().join("infra/k8s/base/ingress-srv.yaml");
    let docs = parse_yaml_documents(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        docs.len(),
        1,
        "{} must hold exactly one document",
        path.display()
    );
    assert_no_problems(
        "infra/k8s/base/ingress-srv.yaml",
        contract::check_ingress(&docs[0]),
    );
    for o in OVERLAYS {
        let deployed = manifests(o.name).get("Ingress", INGRESS_NAME).unwrap();
        assert_eq!(
            deployed["spec"], docs[0]["spec"],
            "overlay {} changes the Ingress spec",
            o.name
        );
        assert_eq!(
            deployed["metadata"]["annotations"], docs[0]["metadata"]["annotations"],
            "overlay {} changes the Ingress annotations",
            o.name
        );
    }
}

#[test]
fn skaffold_builds_every_service_from_the_dockerfile() {
    let s = skaffold();
    let version = s.api_version();
    let beta: u32 = version
        .strip_prefix("skaffold/v4beta")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("apiVersion {version} is not skaffold/v4betaN"));
    assert!(
        beta >= 13,
        "apiVersion {version} is older than skaffold/v4beta13"
    );
    assert_eq!(
        s.raw()["build"]["local"]["push"],
        false,
        "build.local.push must be false"
    );
    assert_eq!(s.profile_names(), ["dev", "prod"]);

    let root = render::repo_root();
    let artifacts = s.artifacts(None).unwrap();
    let images: Vec<&str> = artifacts.iter().map(|a| a.image.as_str()).collect();
    let expected: Vec<String> = SERVICES
        .iter()
        .map(|svc| format!("switchyard/{}", svc.app))
        .collect();
    assert_eq!(
        images.iter().copied().collect::<BTreeSet<_>>(),
        expected.iter().map(String::as_str).collect()
    );
    assert_eq!(images.len(), expected.len(), "one artifact per image");
    for a in &artifacts {
        assert_eq!(a.context, ".", "{}: context", a.image);
        assert!(
            root.join(&a.context).join(&a.dockerfile).is_file(),
            "{}: no {}",
            a.image,
            a.dockerfile
        );
        let service = a.image.trim_start_matches("switchyard/");
        assert!(
            a.build_args
                .get("SERVICE")
                .is_some_and(|s| contract::names_service(s, service)),
            "{}: buildArgs.SERVICE",
            a.image
        );
    }

    assert_eq!(
        s.kustomize_paths(None).unwrap(),
        ["infra/k8s/overlays/dev"],
        "default manifests"
    );
    for o in OVERLAYS {
        let paths = s.kustomize_paths(Some(o.profile)).unwrap();
        assert_eq!(
            paths,
            [format!("infra/k8s/overlays/{}", o.name)],
            "profile {}",
            o.profile
        );
        assert!(root.join(&paths[0]).join("kustomization.yaml").is_file());
    }
}

#[test]
fn dev_overlay_is_the_embedded_setup() {
    let m = manifests("dev");
    for svc in SERVICES.iter() {
        let d = deployment(m, svc.app);
        assert_eq!(
            d.replicas(),
            Some(1),
            "{}: one replica in dev",
            svc.deployment
        );
        let env = app_env(m, svc.app);
        assert_eq!(
            env.vars.get("LOG_FORMAT").map(String::as_str),
            Some("json"),
            "{}",
            svc.app
        );
        assert!(env.vars.contains_key("RUST_LOG"), "{}: RUST_LOG", svc.app);
        assert_eq!(
            env.vars.get("PORT"),
            Some(&svc.port.to_string()),
            "{}",
            svc.app
        );
    }
    for app in with_database() {
        let d = deployment(m, app);
        let env = app_env(m, app);
        let data_dir = env.vars.get("DATA_DIR").cloned().unwrap_or_default();
        assert!(
            data_dir.starts_with('/'),
            "{app}: DATA_DIR {data_dir:?} must be absolute"
        );
        let c = d.container(app).unwrap();
        let mount = c.spec["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["mountPath"].as_str() == Some(data_dir.as_str()))
            .unwrap_or_else(|| panic!("{app}: nothing mounted at DATA_DIR {data_dir}"));
        let volume = d.pod_spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let claim = volume["persistentVolumeClaim"]["claimName"].as_str();
        assert_eq!(
            claim,
            Some(format!("{app}-data").as_str()),
            "{app}: DATA_DIR on a PVC"
        );
        assert!(
            volume["emptyDir"].is_null(),
            "{app}: data volume is both PVC and emptyDir"
        );
        assert_eq!(
            d.object["spec"]["strategy"]["type"], "Recreate",
            "{app}: one SQLite owner at a time"
        );
        if let Some(url) = env.vars.get("DATABASE_URL") {
            assert!(
                url.starts_with("sqlite:"),
                "{app}: DATABASE_URL {url} in dev"
            );
        }
        assert_ne!(
            env.vars.get("MIGRATE_ON_START").map(String::as_str),
            Some("false"),
            "{app}"
        );
    }
    for app in ["posts", "comments", "query", "moderation"] {
        let env = app_env(m, app);
        assert_eq!(
            env.vars.get("EVENT_BUS_URL").map(String::as_str),
            Some("http://event-bus-srv:4005"),
            "{app}"
        );
    }
    let bus = app_env(m, "event-bus");
    assert_eq!(
        bus.vars.get("SUBSCRIBERS").cloned(),
        Some(contract::expected_subscribers().join(","))
    );
    let moderation = app_env(m, "moderation");
    assert_eq!(
        moderation.vars.get("BLOCKED_WORDS").map(String::as_str),
        Some("orange")
    );
}

#[test]
fn prod_overlay_uses_postgres_nats_and_replicas() {
    let m = manifests("prod");
    let text = rendered("prod");
    assert!(
        !text.contains("event-bus"),
        "prod must not deploy or reference the HTTP event bus"
    );

    for app in STATELESS {
        let d = deployment(m, app);
        let replicas = d.replicas().unwrap_or(1);
        assert!(replicas >= 2, "{app}: {replicas} replica(s) in prod");
        let pdb = m
            .of_kind("PodDisruptionBudget")
            .find(|p| p["spec"]["selector"]["matchLabels"]["app"].as_str() == Some(app))
            .unwrap_or_else(|| panic!("{app}: no PodDisruptionBudget"));
        if let Some(min) = pdb["spec"]["minAvailable"].as_u64() {
            assert!(
                min < replicas,
                "{app}: minAvailable {min} blocks every disruption"
            );
        }
    }

    let postgres = m
        .workload("StatefulSet", "postgres")
        .expect("StatefulSet postgres");
    assert_eq!(postgres.object["spec"]["serviceName"], "postgres");
    assert_eq!(
        m.get("Service", "postgres").unwrap()["spec"]["clusterIP"],
        "None",
        "headless"
    );
    assert!(
        postgres.object["spec"]["volumeClaimTemplates"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "postgres: volumeClaimTemplates"
    );
    let pg = postgres.container("postgres").unwrap();
    let pg_env = m.env(&pg);
    let (pg_user, pg_password) = (
        &pg_env.vars["POSTGRES_USER"],
        &pg_env.vars["POSTGRES_PASSWORD"],
    );
    assert!(
        pg_env.sources["POSTGRES_PASSWORD"].starts_with("secret "),
        "password from a Secret"
    );
    let init_dir = pg.spec["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["mountPath"] == "/docker-entrypoint-initdb.d")
        .expect("init scripts mounted at /docker-entrypoint-initdb.d");
    let init_volume = postgres.pod_spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == init_dir["name"])
        .unwrap();
    let init_sql: String = m
        .config_map_data(init_volume["configMap"]["name"].as_str().unwrap())
        .unwrap()
        .into_values()
        .collect();
    for db in ["posts", "comments", "query", "moderation", "eventbus"] {
        let create = Regex::new(&format!(r"(?i)CREATE DATABASE {db}\b")).unwrap();
        assert!(
            create.is_match(&init_sql),
            "init script does not create database {db}"
        );
    }

    let url_re =
        Regex::new(r"^postgres(?:ql)?://([^:@/]+):([^@/]*)@([^:/]+)(?::(\d+))?/([A-Za-z0-9_]+)$")
            .unwrap();
    for app in ["posts", "comments", "query", "moderation"] {
        let d = deployment(m, app);
        let env = app_env(m, app);
        assert_eq!(
            env.vars.get("EVENT_BUS_URL").map(String::as_str),
            Some("nats://nats:4222"),
            "{app}"
        );
        assert_eq!(
            env.vars.get("MIGRATE_ON_START").map(String::as_str),
            Some("false"),
            "{app}"
        );
        let url = env
            .vars
            .get("DATABASE_URL")
            .unwrap_or_else(|| panic!("{app}: no DATABASE_URL"));
        assert!(
            env.sources["DATABASE_URL"].starts_with("secret "),
            "{app}: DATABASE_URL not from a Secret"
        );
        let caps = url_re.captures(url).unwrap_or_else(|| {
            panic!("{app}: DATABASE_URL is not postgres://user:password@host/db")
        });
        assert_eq!(&caps[1], pg_user.as_str(), "{app}: database user");
        assert_eq!(&caps[2], pg_password.as_str(), "{app}: database password");
        assert_eq!(&caps[3], "postgres", "{app}: database host");
        assert_eq!(&caps[5], app, "{app}: one database per service");

        let migrate = d
            .containers()
            .into_iter()
            .find(|c| c.init && c.command_line() == ["migrate", app])
            .unwrap_or_else(|| panic!("{app}: no init container running `migrate {app}`"));
        assert_eq!(
            migrate.image(),
            d.container(app).unwrap().image(),
            "{app}: migrate image"
        );
        assert_eq!(
            m.env(&migrate).vars.get("DATABASE_URL"),
            Some(url),
            "{app}: migrate DATABASE_URL"
        );
        let strategy = &d.object["spec"]["strategy"];
        assert_eq!(
            strategy["rollingUpdate"]["maxUnavailable"], 0,
            "{app}: rolling update"
        );
    }

    let nats = m.workload("StatefulSet", "nats").expect("StatefulSet nats");
    let nats_c = nats.container("nats").unwrap();
    assert!(
        nats_c.command_line().contains(&"-js"),
        "nats runs with JetStream (-js)"
    );
    assert!(
        nats.object["spec"]["volumeClaimTemplates"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "nats: persistent JetStream storage"
    );
    let nats_srv = m.get("Service", "nats").expect("Service nats");
    assert!(
        nats_srv["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == 4222),
        "Service nats port 4222"
    );
}
