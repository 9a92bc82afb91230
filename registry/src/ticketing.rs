//! Ticketing: auth, tickets, orders, expiration, payments, a web client, and the Ingress of
//! host `ticketing.dev` (`shared/spec/ticketing.md`). In the cluster every service listens on
//! 3000; under `up` each has a port of its own.

use switchyard_events::{Envelope, PayloadError};
use switchyard_ticketing_contract::{
    EXPIRATION_COMPLETE, ORDER_CANCELLED, ORDER_CREATED, PAYMENT_CREATED, PAYMENT_EXPIRED,
    TICKET_CREATED, TICKET_UPDATED,
};

use switchyard_bus_client::ServiceEntry;

use crate::{App, ConsumerDefaults, Consumes, IngressSpec, Kind, Service};

/// A ticketing service: port 3000 in the cluster, `local` and `ops` under `up`.
const fn service(name: &'static str, about: &'static str, local: u16, ops: u16) -> Service {
    Service {
        name,
        kind: Kind::App,
        about,
        contract_port: 3000,
        local_port: local,
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
    switchyard_ticketing_contract::check_payload(env)
}

/// Ticketing.
pub static TICKETING: App = App {
    name: "ticketing",
    about: "auth, tickets, orders, expiration, payments, a web client (GitTix)",
    services: &[
        Service {
            kind: Kind::EventBus,
            contract_port: 4005,
            deployment: Some("event-bus-depl"),
            k8s_service: Some("event-bus-srv"),
            wave: 0,
            ..service(
                "event-bus",
                "the event bus: durable log, ordered delivery",
                4205,
                9510,
            )
        },
        Service {
            deployment: Some("auth-depl"),
            k8s_service: Some("auth-srv"),
            sessions: true,
            ..app(
                &switchyard_auth::ENTRY,
                "sign up, sign in, sign out, the current user",
                3201,
                9501,
            )
        },
        Service {
            deployment: Some("tickets-depl"),
            k8s_service: Some("tickets-srv"),
            consumes: Consumes::Only(switchyard_tickets::CONSUMES),
            consumer_group: Some("tickets-service"),
            produces: &[TICKET_CREATED, TICKET_UPDATED],
            sessions: true,
            ..app(
                &switchyard_tickets::ENTRY,
                "tickets for sale, reserved by orders",
                3202,
                9502,
            )
        },
        Service {
            deployment: Some("orders-depl"),
            k8s_service: Some("orders-srv"),
            consumes: Consumes::Only(switchyard_orders::CONSUMES),
            consumer_group: Some("orders-service"),
            produces: &[ORDER_CREATED, ORDER_CANCELLED],
            sessions: true,
            ..app(
                &switchyard_orders::ENTRY,
                "orders that reserve tickets, and expire",
                3203,
                9503,
            )
        },
        Service {
            deployment: Some("expiration-depl"),
            consumes: Consumes::Only(switchyard_expiration::CONSUMES),
            consumer_group: Some("expiration-service"),
            produces: &[EXPIRATION_COMPLETE],
            ..app(
                &switchyard_expiration::ENTRY,
                "expiry timers of orders, kept in its database",
                3204,
                9504,
            )
        },
        Service {
            deployment: Some("payments-depl"),
            k8s_service: Some("payments-srv"),
            consumes: Consumes::Only(switchyard_payments::CONSUMES),
            consumer_group: Some("payments-service"),
            produces: &[PAYMENT_CREATED, PAYMENT_EXPIRED],
            sessions: true,
            ..app(
                &switchyard_payments::ENTRY,
                "pays orders, at most once each",
                3205,
                9505,
            )
        },
        Service {
            deployment: Some("client-depl"),
            k8s_service: Some("client-srv"),
            ..app(
                &switchyard_ticketing_client::ENTRY,
                "the web client (GitTix)",
                3200,
                9500,
            )
        },
        Service {
            kind: Kind::Gateway,
            database: false,
            wave: 2,
            ..service(
                "gateway",
                "the local ingress: the rules of infra/k8s/ticketing/base/ingress-srv.yaml",
                8090,
                9580,
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
                8091,
                9581,
            )
        },
    ],
    ingress: IngressSpec {
        file: "infra/k8s/ticketing/base/ingress-srv.yaml",
        yaml: include_str!("../../infra/k8s/ticketing/base/ingress-srv.yaml"),
        name: "ingress-service",
        host: "ticketing.dev",
        class: "nginx",
        paths: &[
            (
                "/api/payments/?(.*)",
                "ImplementationSpecific",
                "payments-srv",
                3000,
            ),
            (
                "/api/users/?(.*)",
                "ImplementationSpecific",
                "auth-srv",
                3000,
            ),
            (
                "/api/tickets/?(.*)",
                "ImplementationSpecific",
                "tickets-srv",
                3000,
            ),
            (
                "/api/orders/?(.*)",
                "ImplementationSpecific",
                "orders-srv",
                3000,
            ),
            ("/?(.*)", "ImplementationSpecific", "client-srv", 3000),
        ],
    },
    stream: "TICKETING",
    subject_prefix: "ticketing",
    // A week: every consumer has long applied an event by then.
    events_max_age_seconds: 7 * 24 * 3600,
    check_payload,
    events: switchyard_ticketing_contract::event_docs,
    routes: &[
        ("/api/users/currentuser", "auth-srv", 3000),
        ("/api/users/signup", "auth-srv", 3000),
        ("/api/tickets", "tickets-srv", 3000),
        ("/api/tickets/5f1b2c3d4e5f6a7b8c9d0e1f", "tickets-srv", 3000),
        ("/api/orders", "orders-srv", 3000),
        ("/api/orders/5f1b2c3d4e5f6a7b8c9d0e1f", "orders-srv", 3000),
        ("/api/payments", "payments-srv", 3000),
        ("/", "client-srv", 3000),
        ("/tickets/new", "client-srv", 3000),
        ("/orders/5f1b2c3d4e5f6a7b8c9d0e1f", "client-srv", 3000),
    ],
    secrets: &["JWT_KEY"],
    // Plain HTTP on one machine; the test payment provider named (payments refuses to start
    // without one named); auth behind one proxy (the gateway).
    local_env: &[
        ("COOKIE_SECURE", "false"),
        ("PAYMENT_PROVIDER", "test"),
        ("TRUSTED_PROXY_HOPS", "1"),
    ],
};
