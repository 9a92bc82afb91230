//! The services the binary can run, as the app registry declares them.
//!
//! `serve <name>` resolves `name` in the registry (`posts`, or `blog/posts` when two apps
//! share a name), reads the service's configuration from the environment with the
//! registry's ports and consumer settings as defaults, binds its two listeners and runs it.

use switchyard_bus_client::{ConsumerSettings, ServiceSettings};
use switchyard_event_bus::Subscriber;
use switchyard_gateway::{AppRoutes, Backends};
use switchyard_kit::server::Listeners;
use switchyard_kit::{CommonConfig, Env, Shutdown};
use switchyard_registry::{App, Consumes, Kind, Resolved};

/// The common settings of `r`, with its registry ports as defaults.
pub fn common_config(r: &Resolved, env: &Env) -> anyhow::Result<CommonConfig> {
    Ok(CommonConfig::from_env(
        env,
        r.service.name,
        r.service.local_port,
        r.service.local_ops_port,
    )?)
}

/// The consumer settings the registry gives `r`, if it consumes.
pub fn consumer_settings(r: &Resolved) -> Option<ConsumerSettings> {
    let group = r.service.consumer_group?;
    let defaults = r.service.consumer;
    let mut settings = ConsumerSettings::new(group);
    settings.ack_wait = defaults.ack_wait;
    settings.max_deliver = defaults.max_deliver;
    settings.concurrency = defaults.concurrency;
    match r.service.consumes {
        Consumes::Nothing => None,
        Consumes::Everything => Some(settings),
        Consumes::Only(types) => Some(settings.only(types.iter().copied())),
    }
}

/// The settings of an app service that talks to the bus; NATS names default to the app's.
pub fn service_settings(r: &Resolved, env: &Env) -> anyhow::Result<ServiceSettings> {
    let env = with_app_bus_defaults(env, r.app);
    Ok(ServiceSettings::from_env(
        &env,
        common_config(r, &env)?,
        consumer_settings(r),
    )?)
}

/// `env` with the app's stream, subject prefix and event retention where `BUS_STREAM`,
/// `BUS_SUBJECT_PREFIX` and `EVENTS_MAX_AGE_SECONDS` are unset.
fn with_app_bus_defaults(env: &Env, app: &App) -> Env {
    env.with_defaults([
        ("BUS_STREAM", app.stream.to_string()),
        ("BUS_SUBJECT_PREFIX", app.subject_prefix.to_string()),
        (
            "EVENTS_MAX_AGE_SECONDS",
            app.events_max_age_seconds.to_string(),
        ),
    ])
}

/// `env` with what `up` would have given the service: its data directory under
/// `data_dir`, the app's local bus and that bus's ops listener.
pub fn beside_up(r: &Resolved, env: &Env, data_dir: Option<std::path::PathBuf>) -> Env {
    let mut env = env.clone();
    if let Some(dir) = data_dir {
        env = env.with_overrides([("DATA_DIR", dir.join(r.service.name).display().to_string())]);
    }
    if let Some(bus) = r.app.of_kind(Kind::EventBus).next() {
        let url = env
            .raw("EVENT_BUS_URL")
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", bus.local_port));
        let host = url
            .split_once("://")
            .map(|(_, rest)| rest.split([':', '/']).next().unwrap_or("127.0.0.1"))
            .unwrap_or("127.0.0.1")
            .to_string();
        env = env.with_defaults([
            ("EVENT_BUS_URL", url),
            (
                "EVENT_BUS_OPS_URL",
                format!("http://{host}:{}", bus.local_ops_port),
            ),
        ]);
    }
    env
}

/// The NATS users of `app`'s services: each its own user, publishing the types it
/// produces and pulling from its own durable.
pub fn nats_users(app: &App) -> Vec<switchyard_bus_client::nats_users::ServiceUser> {
    app.bus_users()
        .map(|s| switchyard_bus_client::nats_users::ServiceUser {
            user: s.name.to_string(),
            durable: s.consumer_group.map(str::to_string),
            produces: s.produces.iter().map(|t| t.to_string()).collect(),
            watcher: s.kind == Kind::Console,
        })
        .collect()
}

/// The `authorization` block of the nats-server configuration for `app` on `stream`
/// with subjects under `prefix`.
pub fn nats_server_config(app: &App, stream: &str, prefix: &str) -> String {
    switchyard_bus_client::nats_users::server_config(stream, prefix, &nats_users(app))
}

/// The event bus's subscribers in the embedded setup: every service of the app that
/// consumes, at its local port, with the types and limits the registry gives it.
pub fn default_subscribers(app: &App, host: &str, port_offset: u16) -> Vec<Subscriber> {
    app.subscribers()
        .map(|s| {
            let port = s.local_port.saturating_add(port_offset);
            let mut subscriber = Subscriber::new(s.name, &format!("http://{host}:{port}"));
            if let Some(types) = s.consumes.types() {
                subscriber = subscriber.only(types.iter().copied());
            }
            subscriber.ack_wait = s.consumer.ack_wait;
            subscriber.max_deliver = s.consumer.max_deliver;
            subscriber
        })
        .collect()
}

/// The gateway's backends in the embedded setup: each Kubernetes Service of the app's
/// Ingress at its service's local port.
pub fn default_backends(app: &App, host: &str, port_offset: u16) -> Backends {
    let mut backends = Backends::default();
    for s in app.services {
        if let Some(name) = s.k8s_service {
            let port = s.local_port.saturating_add(port_offset);
            backends = backends.with(name, s.contract_port, format!("http://{host}:{port}"));
        }
    }
    backends
}

/// The gateway's view of `app` here.
pub fn app_routes(app: &App) -> AppRoutes {
    AppRoutes {
        ingress_yaml: app.ingress.yaml.to_string(),
        host: app.ingress.host.to_string(),
        backends: default_backends(app, "127.0.0.1", 0),
        asyncapi: Some(switchyard_registry::asyncapi::document_text(app)),
    }
}

/// The map the console draws of `app`: each service that sends or receives events, from
/// the registry.
pub fn app_map(app: &App) -> switchyard_console::AppMap {
    let services = app
        .services
        .iter()
        .filter(|s| s.kind == Kind::App)
        .map(|s| switchyard_console::MapService {
            name: s.name.to_string(),
            about: s.about.to_string(),
            sends: s.produces.iter().map(|t| t.to_string()).collect(),
            receives: match s.consumes {
                Consumes::Nothing => Vec::new(),
                Consumes::Everything => vec!["*".to_string()],
                Consumes::Only(types) => types.iter().map(|t| t.to_string()).collect(),
            },
            subscriber: (s.consumes != Consumes::Nothing).then(|| s.name.to_string()),
            durable: s.consumer_group.map(str::to_string),
        })
        .collect();
    switchyard_console::AppMap {
        app: app.name.to_string(),
        services,
    }
}

async fn bind(common: &CommonConfig) -> anyhow::Result<Listeners> {
    Listeners::bind(common).await
}

/// Runs `name` from the environment until SIGTERM or Ctrl-C.
pub async fn serve(name: &str, env: &Env) -> anyhow::Result<()> {
    let r = switchyard_registry::resolve(name)?;
    // Spans go to the collector the OTEL_* variables name, if any, until the end. Never the
    // console's own: it is the collector under up, and its exports would be spans again.
    let export = if r.service.kind == Kind::Console {
        None
    } else {
        switchyard_kit::otel::init(env, r.app.name, r.service.name)?
    };
    let served = run(&r, env).await;
    if let Some(export) = export {
        export.shutdown().await;
    }
    served
}

async fn run(r: &Resolved, env: &Env) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    match (r.service.kind, r.app.name, r.service.name) {
        (Kind::EventBus, ..) => {
            let env = &with_app_bus_defaults(env, r.app);
            let common = common_config(r, env)?;
            let s = switchyard_event_bus::Settings::from_env(
                env,
                common,
                default_subscribers(r.app, "127.0.0.1", 0),
                Some(r.app.check_payload),
            )?;
            let l = bind(&s.common).await?;
            switchyard_event_bus::launch(s, l, shutdown).await
        }
        (Kind::Gateway, ..) => {
            let common = common_config(r, env)?;
            let s = switchyard_gateway::Settings::from_env(env, common, app_routes(r.app))?;
            let l = bind(&s.common).await?;
            switchyard_gateway::launch(s, l, shutdown).await
        }
        (Kind::Console, ..) => {
            let env = &with_app_bus_defaults(env, r.app);
            let common = common_config(r, env)?;
            let s = switchyard_console::Settings::from_env(env, common, app_map(r.app))?;
            let l = bind(&s.common).await?;
            switchyard_console::launch(s, l, shutdown).await
        }
        (Kind::App, ..) => {
            let Some(entry) = r.service.entry else {
                anyhow::bail!("{} has no entry in the registry", r.qualified());
            };
            let env = with_app_bus_defaults(env, r.app);
            let start = switchyard_bus_client::Start {
                common: common_config(r, &env)?,
                consumer: consumer_settings(r),
                env,
                shutdown,
            };
            (entry.run)(start).await
        }
    }
}

/// The migrations of `r`, if it has a database.
fn migrations_of(r: &Resolved) -> Option<Vec<&'static switchyard_kit::Migrations>> {
    match r.service.kind {
        Kind::EventBus => Some(vec![&switchyard_event_bus::MIGRATIONS]),
        Kind::Gateway | Kind::Console => None,
        Kind::App => r
            .service
            .entry
            .filter(|entry| entry.has_database())
            .map(|entry| entry.migrations.to_vec()),
    }
}

/// Runs `name`'s migrations and returns.
pub async fn migrate(name: &str, env: &Env) -> anyhow::Result<()> {
    let r = switchyard_registry::resolve(name)?;
    let Some(sets) = migrations_of(&r) else {
        tracing::info!(service = %r.qualified(), "no database, nothing to migrate");
        return Ok(());
    };
    let common = common_config(&r, env)?;
    let db = switchyard_kit::Db::connect(&common.database_url).await?;
    db.migrate(&common.service, &sets).await?;
    db.close().await;
    tracing::info!(service = %r.qualified(), "migrations applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_service_with_a_database_has_migrations_and_back() {
        for r in switchyard_registry::all() {
            assert_eq!(
                migrations_of(&r).is_some(),
                r.service.database,
                "{}: the registry and the binary disagree on its database",
                r.qualified()
            );
        }
    }

    #[test]
    fn subscribers_come_from_the_registry_with_their_types() {
        let blog = &switchyard_registry::BLOG;
        let subs = default_subscribers(blog, "127.0.0.1", 100);
        let names: Vec<_> = subs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["posts", "comments", "query", "moderation"]);
        assert_eq!(subs[0].url, "http://127.0.0.1:4100/events");
        assert!(subs[0].types.is_none());
        assert!(subs[3].accepts("CommentCreated") && !subs[3].accepts("PostCreated"));
    }
}
