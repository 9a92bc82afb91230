//! Every service of both apps describes its routes in OpenAPI, served as `/openapi.json` on
//! its ops listener and never on the public one; and schemathesis, run from each document
//! against the service under `up` with a fixed seed and a bounded number of cases, finds no
//! 5xx, no status or content type the document does not state, no answer that breaks its
//! schema (so every 4xx has the JSON error body), no input that breaks the schema accepted,
//! no signed-in route that answers without a session, and no created resource that cannot
//! be read back ([`EXCLUDED_CHECKS`] says which checks are left out and why). On both
//! backends.
//!
//! `OPENAPI_FUZZ_CASES` (default 25 per operation) and `OPENAPI_FUZZ_SEED` (default 1) change
//! the run; schemathesis is found through `SCHEMATHESIS`, the `PATH`, or the virtual
//! environment `.ci/services.sh` installs it in.

use crate::per_backend;
use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::backend::{Backend, Resources};
use support::faults::production_args;
use support::http::Client;
use support::process;
use support::up::{Up, free_offset};
use switchyard_registry::Kind;

/// Every check of schemathesis except two whose premise the contract does not share:
///
/// * `use_after_free` expects a resource to be gone after `DELETE`; the contract's
///   `DELETE /api/orders/{id}` cancels the order, which stays readable as cancelled;
/// * `positive_data_acceptance` expects a 2xx for every request that fits the schema; the
///   contract answers some of them 4xx by rules no schema states (an unknown ticket is a
///   404, an email in use or a wrong password a 400, a reserved ticket cannot be ordered).
///
/// So it requires no 5xx; no status, content type or header the document does not state;
/// every answer matching its schema (every 4xx carries the JSON error body); input that
/// breaks the schema refused (`negative_data_rejection`); undocumented methods answered 405;
/// a signed-in route refusing a request without the session (`ignored_auth`); and a created
/// resource readable at once (`ensure_resource_availability`).
const EXCLUDED_CHECKS: &str = "use_after_free,positive_data_acceptance";

/// Operations that are described but cannot be fuzzed, and why: (service, path).
///
/// `GET /posts/stream` is a server-sent event stream that stays open by design, so no
/// request to it ends with an answer to check. Each of its events carries the body of
/// `GET /posts`, which is fuzzed; the stream itself is tested by `up.rs` and the browser.
const NOT_FUZZED: &[(&str, &str)] = &[("query", "/posts/stream")];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The schemathesis command, if it is installed.
fn schemathesis() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(path) = std::env::var("SCHEMATHESIS") {
        candidates.push(path.into());
    }
    candidates.push("schemathesis".into());
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(Path::new(&home).join(".cache/switchyard/schemathesis/bin/schemathesis"));
    }
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// A `Cookie` header value of a user signed up through auth at `auth`.
async fn signed_up(auth: &str) -> String {
    let client = Client::default();
    let email = format!("{}@fuzz.test", switchyard_ticketing_contract::object_id());
    let a = client
        .post_json(
            &format!("{auth}/api/users/signup"),
            &json!({"email": email, "password": "password"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    a.set_cookies
        .iter()
        .find(|c| c.starts_with("session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string()
}

async fn described_and_fuzzed(backend: Backend, app_name: &str) {
    let Some(schemathesis) = schemathesis() else {
        switchyard_kit::testing::skip_or_fail(
            "schemathesis is not installed (bash .ci/services.sh installs it)",
        );
        return;
    };
    let _one = support::faults::ONE_AT_A_TIME.lock().await;
    let app = switchyard_registry::app(app_name).expect("app");
    let dir = tempfile::tempdir().expect("tmp");
    let mut resources = Resources::new();
    let with_db: Vec<&str> = app
        .services
        .iter()
        .filter(|s| s.database)
        .map(|s| s.name)
        .collect();
    let extra = match backend {
        Backend::Embedded => Vec::new(),
        Backend::Production => production_args(&resources, &with_db).await,
    };
    let offset = free_offset();
    let up = Up::start_app(
        app_name,
        dir.path(),
        offset,
        process::free_port(),
        &extra,
        &[("ARGON2_MEMORY_KIB", "1024"), ("ARGON2_ITERATIONS", "1")],
    );
    let local = |port: u16| format!("http://127.0.0.1:{}", port + offset);
    // The session of a user signed up for the run, as the value of the document's
    // `session` scheme: schemathesis then knows which requests are signed in, sends them
    // with it, and tries the signed-in routes without it too.
    let config = dir.path().join("schemathesis.toml");
    let auth = match app.service("auth") {
        Some(auth) => {
            let cookie = signed_up(&local(auth.local_port)).await;
            let value = cookie.trim_start_matches("session=");
            format!(
                "[auth.openapi.{}]\napi_key = \"{value}\"\n",
                switchyard_kit::openapi::SESSION
            )
        }
        None => String::new(),
    };
    std::fs::write(&config, auth).expect("schemathesis config");
    let cases = env_or("OPENAPI_FUZZ_CASES", 25);
    let seed = env_or("OPENAPI_FUZZ_SEED", 1);
    let client = Client::default();
    let mut fuzzed = Vec::new();
    // Every process `up` runs on this backend, except the gateway (it serves no routes
    // of its own: it forwards the Ingress's paths to the services fuzzed here).
    for service in app.services.iter().filter(|s| s.kind != Kind::Gateway) {
        if up.service_pid(service.name).is_none() {
            assert!(
                backend == Backend::Production && service.kind == Kind::EventBus,
                "{} is not running under up",
                service.name
            );
            continue;
        }
        let public = local(service.local_port);
        let document_url = format!("{}/openapi.json", local(service.local_ops_port));
        let a = client.get(&document_url).await;
        assert_eq!(
            a.status, 200,
            "{}: no document at {document_url}",
            service.name
        );
        let doc: Value = a.json();
        assert_eq!(doc["openapi"], "3.1.0", "{}", service.name);
        let paths = doc["paths"].as_object().expect("paths");
        if paths.is_empty() {
            // A service whose only route is where the HTTP bus delivers (moderation,
            // expiration) has none with NATS: nothing to fuzz, and its port takes nothing.
            assert_eq!(
                backend,
                Backend::Production,
                "{} describes no route",
                service.name
            );
            client
                .post_json(
                    &format!("{public}/events"),
                    &serde_json::json!({"type": "X"}),
                )
                .await
                .assert_error(404, None);
            continue;
        }
        let a = client.get(&format!("{public}/openapi.json")).await;
        a.assert_error(404, None);
        let mut args: Vec<String> = vec![
            "run".into(),
            document_url,
            "--url".into(),
            public,
            "--checks".into(),
            "all".into(),
            "--exclude-checks".into(),
            EXCLUDED_CHECKS.into(),
            "--phases".into(),
            "examples,coverage,fuzzing,stateful".into(),
            "--max-examples".into(),
            cases.to_string(),
            "--seed".into(),
            seed.to_string(),
            "--generation-database".into(),
            "none".into(),
            "--request-timeout".into(),
            "20".into(),
            "--workers".into(),
            "1".into(),
            "--no-color".into(),
        ];
        for (_, path) in NOT_FUZZED.iter().filter(|(s, _)| *s == service.name) {
            assert!(paths.contains_key(*path), "{path} is no longer described");
            args.extend(["--exclude-path".into(), path.to_string()]);
        }
        let command = schemathesis.clone();
        let cwd = dir.path().to_path_buf();
        let config = config.clone();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(command)
                .arg("--config-file")
                .arg(&config)
                .args(&args)
                .current_dir(cwd)
                .output()
                .expect("run schemathesis")
        })
        .await
        .expect("join");
        let report = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "schemathesis found problems in {} ({}, seed {seed}):\n{report}",
            service.name,
            backend.name()
        );
        let summary = report
            .lines()
            .skip_while(|l| !l.starts_with("Test cases:"))
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string();
        fuzzed.push(format!("{}: {summary}", service.name));
        assert!(
            up.service_pid(service.name).is_some(),
            "{} is not running after schemathesis",
            service.name
        );
    }
    eprintln!(
        "{app_name} ({}), {cases} cases per operation, seed {seed}:\n  {}",
        backend.name(),
        fuzzed.join("\n  ")
    );
    drop(up);
    resources.cleanup().await;
}

async fn every_blog_service_is_described_and_fuzzed(backend: Backend) {
    described_and_fuzzed(backend, "blog").await;
}

async fn every_ticketing_service_is_described_and_fuzzed(backend: Backend) {
    described_and_fuzzed(backend, "ticketing").await;
}

per_backend!(
    every_blog_service_is_described_and_fuzzed,
    every_ticketing_service_is_described_and_fuzzed,
);
