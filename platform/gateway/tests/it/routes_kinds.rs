//! The local gateway reads either form of an app's routing: the course's Ingress
//! (`infra/k8s/<app>/base/ingress-srv.yaml`, compiled into the registry) or the Gateway API
//! HTTPRoutes (`infra/k8s/<app>/gateway-api/httproutes.yaml`), and both give the same
//! routing table for every contract path of every app, with its variants (trailing slash,
//! query string, deeper paths); they part only where the HTTPRoute's standard matches are
//! case-sensitive, on paths no backend serves.

use std::path::PathBuf;

use switchyard_gateway::{AppRoutes, Backends, Settings};
use switchyard_ingress::{Router, RoutesKind};
use switchyard_kit::{CommonConfig, Env};
use switchyard_registry::{APPS, App};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The app's HTTPRoutes file.
fn http_routes_file(app: &App) -> PathBuf {
    repo_root()
        .join("infra/k8s")
        .join(app.name)
        .join("gateway-api/httproutes.yaml")
}

fn http_routes_yaml(app: &App) -> String {
    let path = http_routes_file(app);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn settings(env: &[(&str, String)], app: &App) -> Settings {
    let common = CommonConfig::for_data_dir("gateway", std::env::temp_dir());
    let routes = AppRoutes {
        ingress_yaml: app.ingress.yaml.to_string(),
        host: app.ingress.host.to_string(),
        backends: Backends::default(),
        asyncapi: None,
    };
    Settings::from_env(&Env::from_pairs(env.iter().cloned()), common, routes)
        .unwrap_or_else(|e| panic!("{}: {e}", app.name))
}

/// The two tables of `app`, read the way the gateway reads them.
fn tables(app: &App) -> (Router, Router) {
    let ingress = settings(&[], app).routes().expect("the Ingress table");
    assert_eq!(ingress.kind(), RoutesKind::Ingress);
    let file = http_routes_file(app).display().to_string();
    let routes = settings(&[("ROUTES_FILE", file)], app)
        .routes()
        .expect("the HTTPRoute table");
    assert_eq!(
        routes.kind(),
        RoutesKind::HttpRoute,
        "{}: detected",
        app.name
    );
    (ingress, routes)
}

fn target(router: &Router, uri: &str) -> String {
    router
        .route(uri)
        .map(|l| l.backend.to_string())
        .unwrap_or_else(|| "nothing".into())
}

/// Every contract path and its variants that any backend could serve.
fn paths(app: &App) -> Vec<String> {
    let mut paths = Vec::new();
    for (uri, ..) in app.routes {
        let uri = uri.to_string();
        paths.push(uri.clone());
        paths.push(format!("{uri}?x=1&y=/posts"));
        if uri != "/" {
            paths.push(format!("{uri}/"));
            paths.push(format!("{uri}/deeper/path"));
        }
    }
    // more of each app's API and pages than the registry lists
    paths.extend(
        [
            "/posts/create/",
            "/posts/abc123/comments/",
            "/posts/abc123/comments?since=1",
            "/posts//comments",
            "/posts/create/comments",
            "/POSTS/abc123/COMMENTS",
            "/api/users/signin",
            "/api/users/signout",
            "/api/payments/",
            "/api/tickets/abc/",
            "/favicon.ico",
            "/_next/static/chunk.js",
            "/auth/signup",
        ]
        .map(String::from),
    );
    paths
}

#[test]
fn ingress_and_http_routes_give_the_same_table_for_every_contract_path() {
    for app in APPS {
        let (ingress, routes) = tables(app);
        assert!(
            !routes.locations().is_empty(),
            "{}: no HTTPRoute rules",
            app.name
        );
        for (uri, service, port) in app.routes {
            let want = format!("{service}:{port}");
            assert_eq!(target(&ingress, uri), want, "{}: Ingress {uri}", app.name);
            assert_eq!(target(&routes, uri), want, "{}: HTTPRoute {uri}", app.name);
        }
        for uri in paths(app) {
            assert_eq!(
                target(&routes, &uri),
                target(&ingress, &uri),
                "{}: {uri} routes differently",
                app.name
            );
        }
    }
}

/// The Ingress's regexes are case-insensitive, the HTTPRoute's PathPrefix matches are not:
/// an upper-case API path reaches the client (which answers 404) instead of a service
/// that has no such route either. This is the only difference on the contract paths.
#[test]
fn case_variants_differ_only_by_falling_through_to_the_client() {
    for app in APPS {
        let (ingress, routes) = tables(app);
        let client = app
            .routes
            .iter()
            .find(|(uri, ..)| *uri == "/")
            .map(|(_, s, p)| format!("{s}:{p}"))
            .expect("a route for /");
        for (uri, ..) in app.routes {
            let upper = uri.to_ascii_uppercase();
            let (by_ingress, by_route) = (target(&ingress, &upper), target(&routes, &upper));
            assert!(
                by_ingress == by_route || by_route == client,
                "{}: {upper}: Ingress {by_ingress}, HTTPRoute {by_route}",
                app.name
            );
        }
    }
}

#[test]
fn routes_kind_is_a_setting() {
    let app = APPS[0];
    let file = http_routes_file(app).display().to_string();
    // explicit kinds
    let s = settings(
        &[
            ("ROUTES_FILE", file.clone()),
            ("ROUTES_KIND", "httproute".into()),
        ],
        app,
    );
    assert_eq!(s.kind, Some(RoutesKind::HttpRoute));
    assert_eq!(s.ingress_yaml, http_routes_yaml(app));
    assert!(s.routes().is_ok());
    // the HTTPRoutes file has no Ingress
    let s = settings(
        &[
            ("ROUTES_FILE", file.clone()),
            ("ROUTES_KIND", "ingress".into()),
        ],
        app,
    );
    assert!(s.routes().is_err());
    // INGRESS_FILE still works, and auto detects
    let s = settings(
        &[("INGRESS_FILE", file), ("ROUTES_KIND", "auto".into())],
        app,
    );
    assert_eq!(s.kind, None);
    assert_eq!(s.routes().expect("routes").kind(), RoutesKind::HttpRoute);
    let common = CommonConfig::for_data_dir("gateway", std::env::temp_dir());
    let bad = Settings::from_env(
        &Env::from_pairs([("ROUTES_KIND", "nginx")]),
        common,
        AppRoutes {
            ingress_yaml: String::new(),
            host: app.ingress.host.into(),
            backends: Backends::default(),
            asyncapi: None,
        },
    );
    assert!(bad.is_err());
}
