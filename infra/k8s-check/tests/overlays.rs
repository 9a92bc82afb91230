//! Cross-reference checks of every app's rendered overlays
//! (`target/k8s/<app>-<overlay>.yaml`, rendered here with `kubectl kustomize` when missing
//! or stale) against each other, `skaffold.yaml`, `infra/README.md` and each app's
//! contract in the registry (`switchyard_registry::APPS`).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::Value;
use switchyard_k8s_check::contract::{
    self, Contract, DATABASE_SECRET, NATS_SERVICE, Overlay, POSTGRES_SERVICE, contracts,
};
use switchyard_k8s_check::ingress::Router;
use switchyard_k8s_check::manifest::{Env, Workload};
use switchyard_k8s_check::secrets::{self, ReadmeSecrets};
use switchyard_k8s_check::skaffold::Skaffold;
use switchyard_k8s_check::{Manifests, checks, manifest, netpol, parse_yaml_documents, render};
use switchyard_registry::Kind;

/// Settings of one service that its app's contract requires in dev: (app, service,
/// variable, value).
const DEV_ENV: &[(&str, &str, &str, &str)] = &[("blog", "moderation", "BLOCKED_WORDS", "orange")];

/// Secrets a service reads from a Secret by key: (app, service, variable, Secret, whether
/// the prod overlay requires it). Every other overlay reads them optionally.
const OPTIONAL_SECRETS: &[(&str, &str, &str, &str, bool)] = &[
    // Prod charges with Stripe: payments refuses to start without its key.
    ("ticketing", "payments", "STRIPE_KEY", "stripe-secret", true),
    (
        "ticketing",
        "client",
        "STRIPE_PUBLISHABLE_KEY",
        "stripe-secret",
        false,
    ),
];

/// Settings a service must have in an overlay: (app, service, overlay, variable, value).
/// Payments names its provider (it refuses to start otherwise): Stripe in prod, the test
/// provider in dev. Prod refuses session tokens without `exp`. Auth sits behind one proxy.
const REQUIRED_SETTINGS: &[(&str, &str, Overlay, &str, &str)] = &[
    (
        "ticketing",
        "payments",
        Overlay::Prod,
        "PAYMENT_PROVIDER",
        "stripe",
    ),
    (
        "ticketing",
        "payments",
        Overlay::Dev,
        "PAYMENT_PROVIDER",
        "test",
    ),
    (
        "ticketing",
        "auth",
        Overlay::Prod,
        "JWT_REQUIRE_EXP",
        "true",
    ),
    (
        "ticketing",
        "tickets",
        Overlay::Prod,
        "JWT_REQUIRE_EXP",
        "true",
    ),
    (
        "ticketing",
        "orders",
        Overlay::Prod,
        "JWT_REQUIRE_EXP",
        "true",
    ),
    (
        "ticketing",
        "payments",
        Overlay::Prod,
        "JWT_REQUIRE_EXP",
        "true",
    ),
    (
        "ticketing",
        "auth",
        Overlay::Prod,
        "TRUSTED_PROXY_HOPS",
        "1",
    ),
    ("ticketing", "auth", Overlay::Dev, "TRUSTED_PROXY_HOPS", "1"),
];

/// Where the prod PostgreSQL's init script reads the services' DATABASE_URLs.
const DATABASE_SECRET_MOUNT: &str = "/etc/switchyard-database";

fn root() -> PathBuf {
    render::repo_root()
}

fn rendered(c: Contract, overlay: Overlay) -> &'static str {
    static CACHE: LazyLock<Mutex<BTreeMap<(String, Overlay), &'static str>>> =
        LazyLock::new(|| Mutex::new(BTreeMap::new()));
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let key = (c.name().to_owned(), overlay);
    if let Some(text) = cache.get(&key) {
        return text;
    }
    let text = render::rendered_overlay(&root(), c.name(), overlay.name()).unwrap_or_else(|e| {
        panic!(
            "cannot render {}: {e}",
            render::overlay_path(c.name(), overlay.name())
        )
    });
    let text: &'static str = Box::leak(text.into_boxed_str());
    cache.insert(key, text);
    text
}

/// The rendered overlay as it is.
fn manifests(c: Contract, overlay: Overlay) -> Manifests {
    Manifests::parse(rendered(c, overlay))
        .unwrap_or_else(|e| panic!("target/k8s/{}-{}.yaml: {e}", c.name(), overlay.name()))
}

/// The Secrets infra/README.md creates, by namespace.
fn readme_secrets() -> ReadmeSecrets {
    let text = fs::read_to_string(root().join("infra/README.md")).unwrap();
    secrets::readme_secrets(&text)
}

/// The Secrets the README creates in the app's namespace (`-n <app>`).
fn app_readme_secrets(c: Contract) -> BTreeMap<String, BTreeMap<String, String>> {
    readme_secrets().remove(c.name()).unwrap_or_default()
}

/// The rendered overlay as the cluster will see it: in prod, with the Secrets the README
/// creates (every Secret of prod is created with kubectl).
fn deployed(c: Contract, overlay: Overlay) -> Manifests {
    let m = manifests(c, overlay);
    if overlay != Overlay::Prod {
        return m;
    }
    let mut objects = m.objects().to_vec();
    for (name, data) in app_readme_secrets(c) {
        objects.push(secrets::placeholder_secret(&name, &data));
    }
    Manifests::from_values(objects)
}

fn skaffold() -> Skaffold {
    let path = root().join("skaffold.yaml");
    Skaffold::parse(&fs::read_to_string(&path).unwrap()).unwrap()
}

/// Runs `check` for every app and overlay, and fails with every problem found.
fn for_every_overlay(what: &str, check: impl Fn(Contract, Overlay) -> Vec<String>) {
    let mut problems = Vec::new();
    for c in contracts() {
        for overlay in Overlay::ALL {
            problems.extend(
                check(c, overlay)
                    .into_iter()
                    .map(|p| format!("{}/{}: {p}", c.name(), overlay.name())),
            );
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

fn deployment<'a>(m: &'a Manifests, c: Contract, overlay: Overlay, name: &str) -> Workload<'a> {
    let svc = c
        .service(overlay, name)
        .unwrap_or_else(|| panic!("{}: {name} is not deployed in {}", c.name(), overlay.name()));
    m.workload("Deployment", svc.deployment)
        .unwrap_or_else(|| panic!("Deployment {} missing", svc.deployment))
}

fn app_env(m: &Manifests, c: Contract, overlay: Overlay, name: &str) -> Env {
    let d = deployment(m, c, overlay, name);
    let container = d
        .container(name)
        .unwrap_or_else(|| panic!("{}: no container {name}", c.name()));
    m.env(&container)
}

fn cross_references(c: Contract, overlay: Overlay) -> Vec<String> {
    let m = &deployed(c, overlay);
    let mut problems = checks::all(m);

    match skaffold().artifacts(Some(&c.skaffold_profile(overlay))) {
        Ok(artifacts) => problems.extend(checks::images_built(
            m,
            &artifacts.into_iter().map(|a| a.image).collect(),
        )),
        Err(e) => problems.push(e.to_string()),
    }
    for svc in c.services(overlay) {
        problems.extend(c.check_service(m, &svc));
    }
    problems.extend(c.check_absent(m, overlay));
    problems.extend(c.check_extra_services(m));
    problems.extend(c.check_ops(m, overlay));
    problems.extend(c.check_secrets(m, overlay));
    problems.extend(c.check_bus_credentials(m, overlay));
    if overlay.http_bus() {
        problems.extend(c.check_subscribers(m));
    }
    let ingress_name = c.app.ingress.name;
    match m.get("Ingress", ingress_name) {
        Some(ingress) => problems.extend(c.check_ingress(ingress)),
        None => problems.push(format!("Ingress {ingress_name} is missing")),
    }
    let ingresses = m.of_kind("Ingress").count();
    if ingresses != 1 {
        problems.push(format!("{ingresses} Ingress objects, expected 1"));
    }
    match Router::new(m.of_kind("Ingress"), c.app.ingress.host) {
        Ok(router) => problems.extend(c.check_routes(&router)),
        Err(e) => problems.push(e.to_string()),
    }
    for (app, service, want_overlay, var, value) in REQUIRED_SETTINGS {
        if *app != c.name() || *want_overlay != overlay {
            continue;
        }
        let env = app_env(m, c, overlay, service);
        if env.vars.get(*var).map(String::as_str) != Some(*value) {
            problems.push(format!(
                "{service}: {var} is {:?} in {}, expected {value:?}",
                env.vars.get(*var),
                overlay.name()
            ));
        }
    }
    for (app, service, var, secret, required_in_prod) in OPTIONAL_SECRETS {
        if *app != c.name() {
            continue;
        }
        let optional = !(*required_in_prod && overlay == Overlay::Prod);
        let Some(svc) = c.service(overlay, service) else {
            continue;
        };
        let Some(w) = m.workload("Deployment", svc.deployment) else {
            continue;
        };
        let ok = w.container(service).is_some_and(|container| {
            container.spec["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    e["name"] == *var
                        && r["name"] == *secret
                        && r["key"] == *var
                        && (r["optional"] == true) == optional
                })
        });
        if !ok {
            let how = if optional { "optional" } else { "required" };
            problems.push(format!(
                "{}: {var} is not read from key {var} of Secret {secret} ({how})",
                svc.deployment
            ));
        }
    }
    problems
}

#[test]
fn every_overlay_cross_references() {
    for_every_overlay("cross references", cross_references);
}

#[test]
fn prod_network_policies_open_exactly_the_needed_paths() {
    for_every_overlay("network policies", |c, overlay| {
        let m = manifests(c, overlay);
        let mut problems = c.check_network_policies(&m, overlay);
        if overlay == Overlay::Dev && netpol::policies(&m).count() > 0 {
            problems.push(
                "dev has NetworkPolicies: infra/README.md says it has none (update both)".into(),
            );
        }
        if overlay == Overlay::Prod {
            // The paths are derived from the registry, not from the policies: make sure the
            // derivation found every kind of path, so that an empty list proves nothing.
            let needed = c.needed_paths(&m, overlay);
            let controller = Contract::ingress_controller().id;
            let routed: BTreeSet<&str> = c.app.ingress.paths.iter().map(|p| p.2).collect();
            let reached = needed.iter().filter(|p| p.from == controller).count();
            if reached < routed.len() {
                problems.push(format!(
                    "the ingress controller needs {reached} path(s) for {} backend Service(s)",
                    routed.len()
                ));
            }
            for s in c.app_services(overlay) {
                let from = format!("Deployment/{}", s.deployment);
                let to_nats = needed
                    .iter()
                    .any(|p| p.from == from && p.to == "StatefulSet/nats" && p.port == 4222);
                let to_postgres = needed
                    .iter()
                    .any(|p| p.from == from && p.to == "StatefulSet/postgres" && p.port == 5432);
                if to_nats != s.uses_bus || to_postgres != s.database {
                    problems.push(format!(
                        "{}: needs NATS {} / PostgreSQL {}, uses the bus {} / has a database {}",
                        s.name, to_nats, to_postgres, s.uses_bus, s.database
                    ));
                }
            }
        }
        problems
    });
}

/// The Ingress file of the app's base kustomization (the one deployed).
fn deployed_ingress_file(c: Contract) -> String {
    let base = render::base_dir(&root(), c.name());
    let k = fs::read_to_string(base.join("kustomization.yaml")).unwrap();
    let docs = parse_yaml_documents(&k).unwrap();
    let resources: Vec<String> = docs[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let files: Vec<String> = resources
        .into_iter()
        .filter(|r| {
            let text = fs::read_to_string(base.join(r)).unwrap_or_default();
            parse_yaml_documents(&text)
                .unwrap_or_default()
                .iter()
                .any(|d| d["kind"] == "Ingress")
        })
        .collect();
    assert_eq!(
        files.len(),
        1,
        "{}: base lists {files:?} with an Ingress",
        c.name()
    );
    format!("infra/k8s/{}/base/{}", c.name(), files[0])
}

#[test]
fn the_registry_ingress_file_is_the_deployed_one() {
    for c in contracts() {
        let deployed_file = deployed_ingress_file(c);
        let text = fs::read_to_string(root().join(&deployed_file)).unwrap();
        let docs = parse_yaml_documents(&text).unwrap();
        assert_eq!(
            docs.len(),
            1,
            "{deployed_file} must hold exactly one document (the gateway reads it)"
        );
        let problems = c.check_ingress(&docs[0]);
        assert!(problems.is_empty(), "{deployed_file}: {problems:?}");

        // The registry compiles its Ingress file into the binary (the local gateway routes
        // by it): it must be the deployed file.
        assert_eq!(
            c.app.ingress.file,
            deployed_file,
            "{}: the registry's Ingress file is not the deployed one",
            c.name()
        );
        assert_eq!(
            parse_yaml_documents(c.app.ingress.yaml).unwrap(),
            docs,
            "{}: the Ingress compiled into the registry differs from {deployed_file}",
            c.name()
        );

        for overlay in Overlay::ALL {
            let m = manifests(c, overlay);
            let deployed = m.get("Ingress", c.app.ingress.name).unwrap();
            assert_eq!(
                deployed["spec"],
                docs[0]["spec"],
                "{}/{} changes the Ingress spec",
                c.name(),
                overlay.name()
            );
            assert_eq!(
                deployed["metadata"]["annotations"],
                docs[0]["metadata"]["annotations"],
                "{}/{} changes the Ingress annotations",
                c.name(),
                overlay.name()
            );
        }
    }
}

#[test]
fn ingress_routes_the_contract_requests() {
    for c in contracts() {
        let host = c.app.ingress.host;
        let compiled = parse_yaml_documents(c.app.ingress.yaml).unwrap();
        let mut tables: Vec<(String, Vec<Value>)> =
            vec![("the registry's Ingress".into(), compiled)];
        for overlay in Overlay::ALL {
            tables.push((
                format!("{}/{}", c.name(), overlay.name()),
                manifests(c, overlay).of_kind("Ingress").cloned().collect(),
            ));
        }
        assert!(!c.app.routes.is_empty(), "{}: no routes", c.name());
        for (source, ingresses) in tables {
            let router = Router::new(ingresses.iter(), host).unwrap();
            assert!(router.uses_regex(), "{source}: paths are not regexes");
            let problems = c.check_routes(&router);
            assert!(problems.is_empty(), "{source}: {problems:?}");
        }
    }
}

#[test]
fn skaffold_builds_every_service_of_every_app_from_the_dockerfile() {
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
    let expected_profiles: Vec<String> = contracts()
        .iter()
        .flat_map(|c| Overlay::ALL.map(|o| c.skaffold_profile(o)))
        .collect();
    assert_eq!(s.profile_names(), expected_profiles);

    let root = root();
    let blog = contracts()[0];
    assert_eq!(blog.name(), "blog");
    // Without a profile: the blog's dev overlay, as before there were two apps.
    assert_eq!(
        s.kustomize_paths(None).unwrap(),
        [render::overlay_path("blog", "dev")],
        "default manifests"
    );
    assert_eq!(
        s.artifacts(None).unwrap(),
        s.artifacts(Some("dev")).unwrap(),
        "the default build is the blog's dev"
    );
    let mut all_images = BTreeSet::new();
    for c in contracts() {
        for overlay in Overlay::ALL {
            let profile = c.skaffold_profile(overlay);
            let effective = s.effective(Some(&profile)).unwrap();
            assert_eq!(
                effective["build"]["local"]["push"], false,
                "{profile}: build.local.push"
            );
            let artifacts = s.artifacts(Some(&profile)).unwrap();
            let images: Vec<&str> = artifacts.iter().map(|a| a.image.as_str()).collect();
            let expected: BTreeSet<String> = c
                .services(overlay)
                .into_iter()
                .map(|svc| svc.image)
                .collect();
            assert_eq!(
                images
                    .iter()
                    .map(|i| (*i).to_owned())
                    .collect::<BTreeSet<_>>(),
                expected,
                "{profile}: the images of {}",
                render::overlay_path(c.name(), overlay.name())
            );
            assert_eq!(
                images.len(),
                expected.len(),
                "{profile}: one artifact per image"
            );
            for a in &artifacts {
                assert_eq!(a.context, ".", "{profile} {}: context", a.image);
                assert!(
                    root.join(&a.context).join(&a.dockerfile).is_file(),
                    "{profile} {}: no {}",
                    a.image,
                    a.dockerfile
                );
                let svc = c
                    .services(overlay)
                    .into_iter()
                    .find(|svc| svc.image == a.image)
                    .unwrap();
                let want = format!("{}/{}", c.name(), svc.name);
                assert_eq!(
                    a.build_args.get("SERVICE").map(String::as_str),
                    Some(want.as_str()),
                    "{profile} {}: buildArgs.SERVICE",
                    a.image
                );
                assert!(c.names_service(&want, svc.name));
            }
            all_images.extend(expected);
            let paths = s.kustomize_paths(Some(&profile)).unwrap();
            assert_eq!(
                paths,
                [render::overlay_path(c.name(), overlay.name())],
                "profile {profile}"
            );
            assert!(root.join(&paths[0]).join("kustomization.yaml").is_file());
        }
    }
    // no two apps share an image name
    let per_app: usize = contracts()
        .iter()
        .map(|c| {
            c.services(Overlay::Dev)
                .into_iter()
                .map(|s| s.image)
                .collect::<BTreeSet<_>>()
                .len()
        })
        .sum();
    assert_eq!(all_images.len(), per_app, "two apps share an image name");
}

#[test]
fn dev_overlays_are_the_embedded_setup() {
    for_every_overlay("dev overlay", |c, overlay| {
        if overlay != Overlay::Dev {
            return Vec::new();
        }
        let mut problems = Vec::new();
        let m = manifests(c, overlay);
        let bus = c
            .services(overlay)
            .into_iter()
            .find(|s| s.kind == Kind::EventBus)
            .expect("dev runs the HTTP event bus");
        let bus_url = format!(
            "http://{}:{}",
            bus.service.as_deref().unwrap_or("?"),
            bus.port
        );
        for svc in c.services(overlay) {
            let d = deployment(&m, c, overlay, svc.name);
            if d.replicas() != Some(1) {
                problems.push(format!("{}: not one replica", svc.deployment));
            }
            let env = app_env(&m, c, overlay, svc.name);
            if env.vars.get("LOG_FORMAT").map(String::as_str) != Some("json") {
                problems.push(format!("{}: LOG_FORMAT is not json", svc.name));
            }
            if !env.vars.contains_key("RUST_LOG") {
                problems.push(format!("{}: no RUST_LOG", svc.name));
            }
            if env.vars.get("PORT") != Some(&svc.port.to_string()) {
                problems.push(format!("{}: PORT is not {}", svc.name, svc.port));
            }
            if svc.uses_bus && env.vars.get("EVENT_BUS_URL") != Some(&bus_url) {
                problems.push(format!(
                    "{}: EVENT_BUS_URL is {:?}, not {bus_url}",
                    svc.name,
                    env.vars.get("EVENT_BUS_URL")
                ));
            }
            if !svc.database {
                continue;
            }
            let data_dir = env.vars.get("DATA_DIR").cloned().unwrap_or_default();
            if !data_dir.starts_with('/') {
                problems.push(format!(
                    "{}: DATA_DIR {data_dir:?} is not absolute",
                    svc.name
                ));
                continue;
            }
            let c_spec = d.container(svc.name).unwrap();
            let mount = c_spec.spec["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["mountPath"].as_str() == Some(data_dir.as_str()));
            let volume = mount.and_then(|mount| {
                d.pod_spec["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|v| v["name"] == mount["name"])
            });
            match volume {
                None => problems.push(format!("{}: nothing mounted at DATA_DIR", svc.name)),
                Some(v) => {
                    let claim = v["persistentVolumeClaim"]["claimName"].as_str();
                    if claim != Some(format!("{}-data", svc.name).as_str()) {
                        problems.push(format!(
                            "{}: DATA_DIR is not on PVC {}-data",
                            svc.name, svc.name
                        ));
                    }
                    if !v["emptyDir"].is_null() {
                        problems.push(format!(
                            "{}: data volume is both PVC and emptyDir",
                            svc.name
                        ));
                    }
                }
            }
            if d.object["spec"]["strategy"]["type"] != "Recreate" {
                problems.push(format!(
                    "{}: not Recreate (one SQLite owner at a time)",
                    svc.name
                ));
            }
            if let Some(url) = env.vars.get("DATABASE_URL")
                && !url.starts_with("sqlite:")
            {
                problems.push(format!("{}: DATABASE_URL {url} in dev", svc.name));
            }
            if env.vars.get("MIGRATE_ON_START").map(String::as_str) == Some("false") {
                problems.push(format!("{}: MIGRATE_ON_START=false in dev", svc.name));
            }
        }
        for (app, service, var, value) in DEV_ENV {
            if *app == c.name() {
                let env = app_env(&m, c, overlay, service);
                if env.vars.get(*var).map(String::as_str) != Some(*value) {
                    problems.push(format!("{service}: {var} is not {value:?}"));
                }
            }
        }
        // Secrets in dev: generated by the dev overlay's secretGenerator (throwaway), or
        // none.
        let kustomization = fs::read_to_string(
            render::overlay_dir(&root(), c.name(), "dev").join("kustomization.yaml"),
        )
        .unwrap();
        let generated = secrets::generated_secrets(&kustomization).unwrap();
        for s in m.of_kind("Secret") {
            let name = manifest::name(s);
            if !generated.iter().any(|g| g == name) {
                problems.push(format!(
                    "Secret {name} is not made by the dev overlay's secretGenerator"
                ));
            }
        }
        if netpol::policies(&m).count() > 0 {
            problems.push("dev has NetworkPolicies".into());
        }
        problems
    });
}

#[test]
fn prod_overlays_use_postgres_nats_and_replicas() {
    let url_re = Regex::new(
        r"^postgres(?:ql)?://([a-z_][a-z0-9_]*):([A-Za-z0-9]{16,})@([^:/]+):(\d+)/([a-z_][a-z0-9_]*)$",
    )
    .unwrap();
    for_every_overlay("prod overlay", |c, overlay| {
        if overlay != Overlay::Prod {
            return Vec::new();
        }
        let mut problems = Vec::new();
        let m = &deployed(c, overlay);
        let text = rendered(c, overlay);
        if text.contains("event-bus") {
            problems.push("prod deploys or references the HTTP event bus".into());
        }

        for svc in c.app_services(overlay) {
            let d = deployment(m, c, overlay, svc.name);
            let replicas = d.replicas().unwrap_or(1);
            if replicas < 2 {
                problems.push(format!("{}: {replicas} replica(s)", svc.deployment));
            }
            match m
                .of_kind("PodDisruptionBudget")
                .find(|p| p["spec"]["selector"]["matchLabels"]["app"].as_str() == Some(svc.name))
            {
                None => problems.push(format!("{}: no PodDisruptionBudget", svc.name)),
                Some(pdb) => {
                    if pdb["spec"]["minAvailable"]
                        .as_u64()
                        .is_some_and(|min| min >= replicas)
                    {
                        problems.push(format!(
                            "{}: minAvailable blocks every disruption",
                            svc.name
                        ));
                    }
                }
            }
            if d.object["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] != 0 {
                problems.push(format!("{}: not a zero-downtime rolling update", svc.name));
            }
            let env = app_env(m, c, overlay, svc.name);
            for (var, want) in [
                (
                    "EVENT_BUS_URL",
                    format!("nats://{}:{}", NATS_SERVICE.0, NATS_SERVICE.1),
                ),
                ("BUS_STREAM", c.app.stream.to_owned()),
                ("BUS_SUBJECT_PREFIX", c.app.subject_prefix.to_owned()),
                ("MIGRATE_ON_START", "false".to_owned()),
            ] {
                if (svc.uses_bus || var == "MIGRATE_ON_START") && env.vars.get(var) != Some(&want) {
                    problems.push(format!(
                        "{}: {var} is {:?}, not {want}",
                        svc.name,
                        env.vars.get(var)
                    ));
                }
            }
        }

        // PostgreSQL: one server, a database and a role per service, from the Secret.
        let Some(postgres) = m.workload("StatefulSet", POSTGRES_SERVICE.0) else {
            problems.push("no StatefulSet postgres".into());
            return problems;
        };
        if postgres.object["spec"]["serviceName"] != POSTGRES_SERVICE.0 {
            problems.push("postgres: serviceName is not postgres".into());
        }
        if m.get("Service", POSTGRES_SERVICE.0)
            .is_none_or(|s| s["spec"]["clusterIP"] != "None")
        {
            problems.push("Service postgres is missing or not headless".into());
        }
        if postgres.object["spec"]["volumeClaimTemplates"]
            .as_array()
            .is_none_or(|t| t.is_empty())
        {
            problems.push("postgres: no volumeClaimTemplates".into());
        }
        let pg = postgres.container("postgres").unwrap();
        let pg_env = m.env(&pg);
        if !pg_env
            .sources
            .get("POSTGRES_PASSWORD")
            .is_some_and(|s| s.starts_with("secret "))
        {
            problems.push("postgres: POSTGRES_PASSWORD is not from a Secret".into());
        }
        let admin = pg_env
            .vars
            .get("POSTGRES_USER")
            .cloned()
            .unwrap_or_default();
        let mounts: Vec<&Value> = pg.spec["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let volume_at = |path: &str| {
            let mount = mounts.iter().find(|v| v["mountPath"] == path)?;
            postgres.pod_spec["volumes"]
                .as_array()?
                .iter()
                .find(|v| v["name"] == mount["name"])
        };
        match volume_at("/docker-entrypoint-initdb.d") {
            None => {
                problems.push("postgres: no init scripts at /docker-entrypoint-initdb.d".into())
            }
            Some(v) => {
                // executable, so that the image runs the script instead of sourcing it
                if v["configMap"]["defaultMode"]
                    .as_u64()
                    .is_none_or(|mode| mode & 0o111 == 0)
                {
                    problems.push("postgres: the init scripts are not executable".into());
                }
                let script: String = v["configMap"]["name"]
                    .as_str()
                    .and_then(|n| m.config_map_data(n))
                    .unwrap_or_default()
                    .into_values()
                    .collect();
                for needle in [
                    "CREATE ROLE",
                    "CREATE DATABASE",
                    "REVOKE ALL ON DATABASE",
                    DATABASE_SECRET_MOUNT,
                ] {
                    if !script.contains(needle) {
                        problems.push(format!("postgres init script: no {needle}"));
                    }
                }
            }
        }
        match volume_at(DATABASE_SECRET_MOUNT) {
            Some(v) if v["secret"]["secretName"] == DATABASE_SECRET => {}
            _ => problems.push(format!(
                "postgres: Secret {DATABASE_SECRET} is not mounted at {DATABASE_SECRET_MOUNT}"
            )),
        }

        let mut roles = BTreeSet::new();
        let with_database: Vec<_> = c
            .app_services(overlay)
            .into_iter()
            .filter(|s| s.database)
            .collect();
        if with_database.is_empty() {
            problems.push("no service with a database".into());
        }
        for svc in with_database {
            let d = deployment(m, c, overlay, svc.name);
            let main = d.container(svc.name).unwrap();
            let env = m.env(&main);
            let from_secret = main.spec["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "DATABASE_URL")
                .map(|e| &e["valueFrom"]["secretKeyRef"]);
            if !from_secret.is_some_and(|r| r["name"] == DATABASE_SECRET && r["key"] == svc.name) {
                problems.push(format!(
                    "{}: DATABASE_URL is not key {} of Secret {DATABASE_SECRET}",
                    svc.name, svc.name
                ));
            }
            match env.vars.get("DATABASE_URL").and_then(|u| url_re.captures(u)) {
                None => problems.push(format!(
                    "{}: the README's DATABASE_URL is not postgres://ROLE:PASSWORD@HOST:PORT/DB (a plain role and database name, a password of 16+ letters and digits)",
                    svc.name
                )),
                Some(caps) => {
                    if &caps[3] != POSTGRES_SERVICE.0 || caps[4] != POSTGRES_SERVICE.1.to_string() {
                        problems.push(format!("{}: database server is not postgres:5432", svc.name));
                    }
                    if &caps[5] != svc.name {
                        problems.push(format!("{}: database {} is not its own", svc.name, &caps[5]));
                    }
                    if caps[1] == admin || !roles.insert(caps[1].to_owned()) {
                        problems.push(format!(
                            "{}: role {} is the admin's or another service's: each service its own credentials",
                            svc.name, &caps[1]
                        ));
                    }
                }
            }
            let migrate = d
                .containers()
                .into_iter()
                .find(|x| x.init && x.command_line().first() == Some(&"migrate"));
            match migrate {
                None => problems.push(format!("{}: no init container running `migrate`", svc.name)),
                Some(migrate) => {
                    let args = migrate.command_line();
                    if args.len() != 2 || !c.names_service(args[1], svc.name) {
                        problems.push(format!("{}: init container runs {args:?}", svc.name));
                    }
                    if migrate.image() != main.image() {
                        problems.push(format!("{}: migrate runs another image", svc.name));
                    }
                    let menv = m.env(&migrate);
                    if menv.vars.get("DATABASE_URL") != env.vars.get("DATABASE_URL") {
                        problems.push(format!("{}: migrate has another DATABASE_URL", svc.name));
                    }
                    if !menv
                        .vars
                        .get("SWITCHYARD_SERVICE")
                        .is_some_and(|s| c.names_service(s, svc.name))
                    {
                        problems.push(format!("{}: migrate's SWITCHYARD_SERVICE", svc.name));
                    }
                }
            }
        }

        match m.workload("StatefulSet", NATS_SERVICE.0) {
            None => problems.push("no StatefulSet nats".into()),
            Some(nats) => {
                if !nats
                    .container("nats")
                    .is_some_and(|n| n.command_line().contains(&"-js"))
                {
                    problems.push("nats does not run with JetStream (-js)".into());
                }
                if nats.object["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .is_none_or(|t| t.is_empty())
                {
                    problems.push("nats: no persistent JetStream storage".into());
                }
            }
        }
        if contract::service_endpoints(m, NATS_SERVICE.0, u64::from(NATS_SERVICE.1)).is_empty() {
            problems.push("Service nats does not reach NATS on 4222".into());
        }
        problems
    });
}

#[test]
fn secrets_are_never_committed() {
    let root = root();
    let mut problems = Vec::new();
    let components = root.join("infra/k8s/components");
    if components.is_dir() {
        problems.extend(secrets::committed_secrets(&components).unwrap());
    }
    let readme = readme_secrets();
    for c in contracts() {
        for dir in [
            render::base_dir(&root, c.name()),
            render::overlay_dir(&root, c.name(), "prod"),
        ] {
            problems.extend(secrets::committed_secrets(&dir).unwrap());
        }
        let m = manifests(c, Overlay::Prod);
        for s in m.of_kind("Secret") {
            problems.push(format!(
                "{}/prod renders {}: prod creates no Secret",
                c.name(),
                manifest::id(s)
            ));
        }
        let in_namespace = readme.get(c.name()).cloned().unwrap_or_default();
        if in_namespace.is_empty() {
            problems.push(format!(
                "infra/README.md creates no Secret with `-n {}`",
                c.name()
            ));
        }
        problems.extend(
            secrets::check_documented(&m, &in_namespace, &format!("-n {}", c.name()))
                .into_iter()
                .map(|p| format!("{}/prod: {p}", c.name())),
        );
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

#[test]
fn the_app_directories_are_the_registrys_apps() {
    // infra/validate.sh renders every infra/k8s/<app>/overlays; the tests check the
    // registry's apps: they must be the same.
    let mut dirs: Vec<String> = fs::read_dir(root().join("infra/k8s"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("overlays").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut apps: Vec<String> = contracts().iter().map(|c| c.name().to_owned()).collect();
    apps.sort();
    assert_eq!(
        dirs, apps,
        "infra/k8s/<app>/overlays directories vs the registry's apps"
    );
}

#[test]
fn the_readme_covers_every_app() {
    let readme = fs::read_to_string(root().join("infra/README.md")).unwrap();
    for c in contracts() {
        assert!(
            readme.contains(c.app.ingress.host),
            "infra/README.md: no hosts entry for {}",
            c.app.ingress.host
        );
        for overlay in Overlay::ALL {
            let path = render::overlay_path(c.name(), overlay.name());
            assert!(
                readme.contains(&path),
                "infra/README.md does not mention {path}"
            );
            let profile = c.skaffold_profile(overlay);
            let command = if profile == "dev" {
                "skaffold dev".to_owned()
            } else {
                format!("skaffold dev -p {profile}")
            };
            assert!(readme.contains(&command), "infra/README.md: no `{command}`");
        }
    }
    assert!(
        readme.contains(contract::INGRESS_CONTROLLER_NAMESPACE)
            && readme.contains(netpol::NAMESPACE_NAME_LABEL),
        "infra/README.md must say which ingress controller namespace the policies admit"
    );
}
