//! The blog: posts, comments, moderation, a read model, the event bus, a web client, and
//! the Ingress of host `posts.com` (`shared/spec/blog.md`).

use switchyard_blog_contract::{
    BlogEvent, COMMENT_CREATED, COMMENT_MODERATED, COMMENT_UPDATED, POST_CREATED,
};
use switchyard_events::{Envelope, PayloadError};

use switchyard_bus_client::ServiceEntry;

use crate::{App, ConsumerDefaults, Consumes, ExtraK8sService, IngressSpec, Kind, Service};

/// A blog service listening on its contract's `port`, with its ops endpoints on `ops`.
const fn service(name: &'static str, about: &'static str, port: u16, ops: u16) -> Service {
    Service {
        name,
        kind: Kind::App,
        about,
        contract_port: port,
        local_port: port,
        local_ops_port: ops,
        deployment: None,
        k8s_service: None,
        extra_k8s_services: &[],
        database: true,
        produces: &[],
        sessions: false,
        consumes: Consumes::Nothing,
        consumer_group: None,
        consumer: ConsumerDefaults::STANDARD,
        wave: 1,
        entry: None,
    }
}

/// A service of the app, run through the entry its crate declares.
const fn app(entry: &'static ServiceEntry, about: &'static str, port: u16, ops: u16) -> Service {
    service(entry.name, about, port, ops).run_by(entry)
}

fn check_payload(env: &Envelope) -> Result<(), PayloadError> {
    BlogEvent::from_envelope(env).map(|_| ())
}

/// The blog.
pub static BLOG: App = App {
    name: "blog",
    about: "posts, comments, moderation, query, the event bus, a web client",
    services: &[
        Service {
            kind: Kind::EventBus,
            deployment: Some("event-bus-depl"),
            k8s_service: Some("event-bus-srv"),
            wave: 0,
            ..service(
                "event-bus",
                "the event bus: durable log, ordered delivery",
                4005,
                9405,
            )
        },
        Service {
            deployment: Some("posts-depl"),
            k8s_service: Some("posts-clusterip-srv"),
            extra_k8s_services: &[ExtraK8sService {
                name: "posts-srv",
                kind: "NodePort",
            }],
            // The contract's bus posts every event to every subscriber; posts ignores them.
            consumes: Consumes::Everything,
            consumer_group: Some("posts"),
            produces: &[POST_CREATED],
            ..app(&switchyard_posts::ENTRY, "creates posts", 4000, 9400)
        },
        Service {
            deployment: Some("comments-depl"),
            k8s_service: Some("comments-srv"),
            consumes: Consumes::Only(switchyard_comments::CONSUMES),
            consumer_group: Some("comments"),
            produces: &[COMMENT_CREATED, COMMENT_UPDATED],
            ..app(
                &switchyard_comments::ENTRY,
                "comments per post and their status",
                4001,
                9401,
            )
        },
        Service {
            deployment: Some("query-depl"),
            k8s_service: Some("query-srv"),
            consumes: Consumes::Only(switchyard_query::CONSUMES),
            consumer_group: Some("query"),
            ..app(
                &switchyard_query::ENTRY,
                "the read model: posts with comments",
                4002,
                9402,
            )
        },
        Service {
            deployment: Some("moderation-depl"),
            k8s_service: Some("moderation-srv"),
            consumes: Consumes::Only(switchyard_moderation::CONSUMES),
            consumer_group: Some("moderation"),
            produces: &[COMMENT_MODERATED],
            ..app(
                &switchyard_moderation::ENTRY,
                "judges new comments",
                4003,
                9403,
            )
        },
        Service {
            deployment: Some("client-depl"),
            k8s_service: Some("client-srv"),
            ..app(&switchyard_client::ENTRY, "the web client", 3000, 9404)
        },
        Service {
            kind: Kind::Gateway,
            database: false,
            wave: 2,
            ..service(
                "gateway",
                "the local ingress: the rules of infra/k8s/blog/base/ingress-srv.yaml",
                8080,
                9480,
            )
        },
        Service {
            kind: Kind::Console,
            deployment: Some("console-depl"),
            k8s_service: Some("console-srv"),
            // In the cluster it listens on OTLP's HTTP port: the services' collector is
            // `http://console-srv:4318` (the page is reached by `kubectl port-forward`).
            contract_port: 4318,
            database: false,
            // First, with the bus: the services export their spans to it from their start.
            wave: 0,
            ..service(
                "console",
                "the console: the map, the live event log, journeys, traces, consumers",
                8081,
                9481,
            )
        },
    ],
    ingress: IngressSpec {
        file: "infra/k8s/blog/base/ingress-srv.yaml",
        yaml: include_str!("../../infra/k8s/blog/base/ingress-srv.yaml"),
        name: "ingress-srv",
        host: "posts.com",
        class: "nginx",
        paths: &[
            ("/posts/create", "Prefix", "posts-clusterip-srv", 4000),
            ("/posts", "Prefix", "query-srv", 4002),
            (
                "/posts/?(.*)/comments",
                "ImplementationSpecific",
                "comments-srv",
                4001,
            ),
            ("/?(.*)", "ImplementationSpecific", "client-srv", 3000),
        ],
    },
    stream: "BLOG",
    subject_prefix: "blog",
    // Kept for ever: the read model is rebuilt from the log (`rebuild-query`).
    events_max_age_seconds: 0,
    check_payload,
    events: switchyard_blog_contract::event_docs,
    routes: &[
        ("/posts/create", "posts-clusterip-srv", 4000),
        ("/posts", "query-srv", 4002),
        ("/posts/stream", "query-srv", 4002),
        ("/posts/abc123/comments", "comments-srv", 4001),
        ("/", "client-srv", 3000),
        ("/app.js", "client-srv", 3000),
    ],
    secrets: &[],
    local_env: &[],
};
