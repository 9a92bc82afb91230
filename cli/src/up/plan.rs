//! What `up` starts: each service's command, ports and environment, in start order, all
//! read from the app registry.

use std::path::PathBuf;

use switchyard_registry::{App, Kind, Resolved};

use super::UpArgs;
use crate::services::default_subscribers;

pub use switchyard_registry::MAX_REPLICAS;

/// One process to supervise.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// The service's name (the log prefix and the row of the table are [`ProcSpec::label`]).
    pub name: &'static str,
    /// Which of the service's processes this is (1 to `replicas`).
    pub replica: u8,
    pub replicas: u8,
    /// What `switchyard serve` is given (qualified: `blog/posts`).
    pub serve: String,
    pub port: u16,
    /// The port of its `/healthz`, `/readyz`, `/metrics`.
    pub ops_port: u16,
    /// Its `/readyz` on the address it listens on (`--host`), as `up` polls it at start
    /// and after every restart.
    pub ready_url: String,
    pub env: Vec<(String, String)>,
    /// Start wave: every process of a wave is ready before the next wave starts.
    pub wave: u8,
}

impl ProcSpec {
    /// The service's name, with `#k` when it runs as several processes.
    pub fn label(&self) -> String {
        if self.replicas > 1 {
            format!("{}#{}", self.name, self.replica)
        } else {
            self.name.to_string()
        }
    }
}

/// Every process of an app.
#[derive(Debug, Clone)]
pub struct Plan {
    pub app: &'static App,
    pub host: String,
    pub data_dir: PathBuf,
    pub procs: Vec<ProcSpec>,
    pub gateway_port: u16,
}

impl Plan {
    pub async fn new(app: &'static App, args: &UpArgs) -> anyhow::Result<Plan> {
        if let Some(url) = &args.postgres {
            switchyard_kit::config::check_url("--postgres", url, &["postgres", "postgresql"])?;
        }
        if let Some(url) = &args.nats {
            switchyard_kit::config::check_url_list("--nats", url, &["nats"])?;
        }
        let mut plan = plan(app, args)?;
        if let Some(server) = &args.postgres {
            for p in plan.procs.iter_mut() {
                let has_database = app.service(p.name).is_some_and(|s| s.database);
                if !has_database {
                    continue;
                }
                let database = format!("{}_{}", args.database_prefix, p.name.replace('-', "_"));
                let url = switchyard_kit::db::ensure_postgres_database(server, &database)
                    .await
                    .map_err(|e| anyhow::anyhow!("--postgres: {e:#}"))?;
                p.env.push(("DATABASE_URL".into(), url));
            }
        }
        Ok(plan)
    }

    /// Fails with a clear message if a port is taken.
    pub fn check_ports(&self) -> anyhow::Result<()> {
        for p in &self.procs {
            for (port, what) in [(p.port, ""), (p.ops_port, " ops")] {
                if let Err(e) = std::net::TcpListener::bind((self.host.as_str(), port)) {
                    anyhow::bail!(
                        "port {port} ({}{what}) on {} is not available: {e}. Stop what uses it, or choose other ports with --port-offset N / --gateway-port N",
                        p.name,
                        self.host
                    );
                }
            }
        }
        Ok(())
    }

    /// The address of `port` on the plan's host, as a client reaches it.
    pub fn url(&self, port: u16) -> String {
        url_on(&self.host, port)
    }
}

/// `http://host:port`, with a wildcard host reached on loopback.
pub fn url_on(host: &str, port: u16) -> String {
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "[::1]",
        other => other,
    };
    format!("http://{host}:{port}")
}

/// The value of the secret `name`: from the environment when set there, otherwise the one
/// kept in `<data_dir>/<name>` (generated on the first run, readable by its owner only), so
/// sessions survive restarts of `up` and every service agrees on it.
fn secret_value(name: &str, data_dir: &std::path::Path) -> anyhow::Result<String> {
    if let Some(value) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
        return Ok(value);
    }
    let path = data_dir.join(name.to_lowercase());
    if let Ok(value) = std::fs::read_to_string(&path) {
        let value = value.trim().to_string();
        if !value.is_empty() {
            return Ok(value);
        }
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let value = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            use std::io::Write;
            file.write_all(value.as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            Ok(value)
        }
        // Another `up` created it meanwhile: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().to_string())
        }
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
}

fn offset(base: u16, by: u16) -> anyhow::Result<u16> {
    base.checked_add(by)
        .ok_or_else(|| anyhow::anyhow!("--port-offset {by} takes port {base} past 65535"))
}

/// The port of replica `k` (from 1) of a service whose first listens on `port`.
fn replica_port(port: u16, k: u8) -> anyhow::Result<u16> {
    switchyard_registry::replica_port(port, k.max(1))
        .ok_or_else(|| anyhow::anyhow!("replica {k} would listen past port 65535"))
}

/// How many processes of each service: `--replicas` for every one that can have several,
/// `--replica SERVICE=N` over it; several only on the production backends.
fn replica_counts(app: &App, args: &UpArgs) -> anyhow::Result<Vec<u8>> {
    let several = |s: &switchyard_registry::Service| s.kind == Kind::App;
    let mut counts: Vec<u8> = app
        .services
        .iter()
        .map(|s| if several(s) { args.replicas } else { 1 })
        .collect();
    for item in &args.replica {
        let (name, n) = item
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--replica {item:?}: expected SERVICE=N"))?;
        let Some(i) = app.services.iter().position(|s| s.name == name.trim()) else {
            anyhow::bail!(
                "--replica {item:?}: the {} has no service {name:?}",
                app.name
            );
        };
        if !several(&app.services[i]) {
            anyhow::bail!("--replica {item:?}: {name} runs as one process");
        }
        counts[i] = n
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=MAX_REPLICAS).contains(n))
            .ok_or_else(|| anyhow::anyhow!("--replica {item:?}: N is 1 to {MAX_REPLICAS}"))?;
    }
    if counts.iter().any(|n| *n > 1) && (args.postgres.is_none() || args.nats.is_none()) {
        anyhow::bail!(
            "several replicas need the production backends, --postgres and --nats: a SQLite database is one process's file, and the HTTP event bus delivers to one address per service"
        );
    }
    Ok(counts)
}

fn plan(app: &'static App, args: &UpArgs) -> anyhow::Result<Plan> {
    let data_dir = std::path::absolute(&args.data_dir)?;
    let reach = match args.host.as_str() {
        "0.0.0.0" | "::" | "[::]" => "127.0.0.1".to_string(),
        other => other.to_string(),
    };
    let gateway_port = match args.gateway_port {
        Some(port) => port,
        None => app
            .of_kind(Kind::Gateway)
            .next()
            .map(|g| offset(g.local_port, args.port_offset))
            .transpose()?
            .unwrap_or(8080),
    };
    let bus = app
        .of_kind(Kind::EventBus)
        .next()
        .map(|b| offset(b.local_port, args.port_offset))
        .transpose()?;
    let bus_env: Vec<(String, String)> = match (&args.nats, bus) {
        (Some(url), _) => vec![
            ("EVENT_BUS_URL".into(), url.clone()),
            (
                "BUS_STREAM".into(),
                args.stream
                    .clone()
                    .unwrap_or_else(|| app.stream.to_string()),
            ),
            (
                "BUS_SUBJECT_PREFIX".into(),
                args.subject_prefix
                    .clone()
                    .unwrap_or_else(|| app.subject_prefix.to_string()),
            ),
            (
                "BUS_STREAM_REPLICAS".into(),
                args.stream_replicas.to_string(),
            ),
        ],
        (None, Some(port)) => vec![("EVENT_BUS_URL".into(), format!("http://{reach}:{port}"))],
        (None, None) => Vec::new(),
    };
    // The flag over the app's default (and over up's environment).
    let mut bus_env = bus_env;
    if let Some(secs) = args.events_max_age {
        bus_env.push(("EVENTS_MAX_AGE_SECONDS".into(), secs.to_string()));
    }
    // What the operator set in up's environment wins (the children inherit it).
    let local_env: Vec<(String, String)> = app
        .local_env
        .iter()
        .filter(|(k, _)| std::env::var_os(k).is_none())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The app's secrets go to the services that check sessions only.
    let mut secrets = Vec::new();
    for secret in app.secrets {
        secrets.push((secret.to_string(), secret_value(secret, &data_dir)?));
    }
    // The bus's secret: publishers and the bus prove with it that they are the app's.
    let bus_secret = (
        switchyard_registry::BUS_SECRET.to_string(),
        secret_value(switchyard_registry::BUS_SECRET, &data_dir)?,
    );
    // The console: where the services' spans go (unless up's own environment names a
    // collector or turns export off), and the bus's ops listener it reads.
    let console = app
        .of_kind(Kind::Console)
        .next()
        .map(|c| offset(c.local_port, args.port_offset))
        .transpose()?;
    let operator_chose_tracing = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()));
    let mut tracing_env: Vec<(String, String)> = Vec::new();
    if let (Some(port), false) = (console, operator_chose_tracing) {
        tracing_env.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://{reach}:{port}"),
        ));
        if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
            // A journey in the console within a fraction of a second.
            tracing_env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
        }
    }
    let bus_ops = match (&args.nats, app.of_kind(Kind::EventBus).next()) {
        (None, Some(b)) => Some(offset(b.local_ops_port, args.port_offset)?),
        _ => None,
    };
    let counts = replica_counts(app, args)?;
    // The gateway's backends: every replica of each routed service.
    let mut backends = switchyard_gateway::Backends::default();
    for (service, n) in app.services.iter().zip(&counts) {
        if let Some(k8s) = service.k8s_service {
            let first = offset(service.local_port, args.port_offset)?;
            let urls = (1..=*n)
                .map(|k| replica_port(first, k).map(|p| format!("http://{reach}:{p}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            backends = backends.with_replicas(k8s, service.contract_port, urls);
        }
    }
    let mut procs = Vec::new();
    for (service, replicas) in app.services.iter().zip(counts) {
        for replica in 1..=replicas {
            // With NATS the services talk to JetStream; the HTTP event bus is not needed.
            if service.kind == Kind::EventBus && args.nats.is_some() {
                continue;
            }
            let (port, ops_port) = if service.kind == Kind::Gateway {
                (
                    gateway_port,
                    offset(service.local_ops_port, args.port_offset)?,
                )
            } else {
                (
                    replica_port(offset(service.local_port, args.port_offset)?, replica)?,
                    replica_port(offset(service.local_ops_port, args.port_offset)?, replica)?,
                )
            };
            let folder = match replica {
                1 => service.name.to_string(),
                k => format!("{}-{k}", service.name),
            };
            let mut env = vec![
                ("HOST".into(), args.host.clone()),
                (
                    "DATA_DIR".into(),
                    data_dir.join(folder).display().to_string(),
                ),
                ("PORT".into(), port.to_string()),
                ("OPS_PORT".into(), ops_port.to_string()),
            ];
            env.extend(bus_env.iter().cloned());
            env.extend(local_env.iter().cloned());
            if service.sessions {
                env.extend(secrets.iter().cloned());
            }
            if service.uses_the_bus() {
                env.push(bus_secret.clone());
            }
            match service.kind {
                Kind::EventBus => {
                    let subscribers: Vec<String> =
                        default_subscribers(app, &reach, args.port_offset)
                            .iter()
                            .map(|s| s.spec())
                            .collect();
                    env.push(("SUBSCRIBERS".into(), subscribers.join(",")));
                }
                Kind::Gateway => {
                    env.push(("GATEWAY_BACKENDS".into(), backends.spec()));
                }
                Kind::App => {}
                Kind::Console => {
                    // Never on every address: it has no sign-in (it shows every event and
                    // replays dead letters), so `--host 0.0.0.0` leaves it on this machine.
                    if let Some(host) = env.iter_mut().find(|(k, _)| k == "HOST")
                        && matches!(host.1.as_str(), "0.0.0.0" | "::" | "[::]")
                    {
                        host.1 = "127.0.0.1".to_string();
                    }
                    // It reads the log as the services' peer, and the bus's positions.
                    env.push(bus_secret.clone());
                    if let Some(port) = bus_ops {
                        env.push(("EVENT_BUS_OPS_URL".into(), format!("http://{reach}:{port}")));
                    }
                }
            }
            if service.kind != Kind::Console {
                env.extend(tracing_env.iter().cloned());
            }
            procs.push(ProcSpec {
                name: service.name,
                replica,
                replicas,
                serve: Resolved { app, service }.qualified(),
                port,
                ops_port,
                ready_url: format!("{}/readyz", url_on(&args.host, ops_port)),
                env,
                wave: service.wave,
            });
        }
    }
    Ok(Plan {
        app,
        host: args.host.clone(),
        data_dir,
        procs,
        gateway_port,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        up: UpArgs,
    }

    fn args(extra: &[&str]) -> UpArgs {
        let mut argv = vec!["up", "blog"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv).up
    }

    #[test]
    fn readiness_is_polled_on_the_host_the_services_listen_on() {
        let blog = &switchyard_registry::BLOG;
        let on_host = plan(blog, &args(&["--host", "127.0.0.2"])).expect("plan");
        for p in &on_host.procs {
            assert!(
                p.ready_url.starts_with("http://127.0.0.2:"),
                "{}: {}",
                p.name,
                p.ready_url
            );
        }
        let wildcard = plan(blog, &args(&["--host", "0.0.0.0"])).expect("plan");
        assert!(wildcard.procs[0].ready_url.starts_with("http://127.0.0.1:"));
    }

    #[test]
    fn the_plan_is_the_registry_shifted_by_the_offset() {
        let blog = &switchyard_registry::BLOG;
        let shifted = plan(blog, &args(&["--port-offset", "100"])).expect("plan");
        let names: Vec<_> = shifted.procs.iter().map(|p| p.name).collect();
        let expected: Vec<_> = blog.services.iter().map(|s| s.name).collect();
        assert_eq!(names, expected);
        let posts = shifted
            .procs
            .iter()
            .find(|p| p.name == "posts")
            .expect("posts");
        assert_eq!((posts.port, posts.ops_port), (4100, 9500));
        assert_eq!(posts.serve, "blog/posts");
        assert_eq!(shifted.gateway_port, 8180);
        let bus = shifted
            .procs
            .iter()
            .find(|p| p.name == "event-bus")
            .expect("bus");
        let subscribers = bus
            .env
            .iter()
            .find(|(k, _)| k == "SUBSCRIBERS")
            .map(|(_, v)| v.clone())
            .expect("SUBSCRIBERS");
        assert!(
            subscribers.contains("moderation=http://127.0.0.1:4103/events;types=CommentCreated"),
            "{subscribers}"
        );
        // With NATS there is no HTTP event bus.
        let with_nats = plan_with_nats();
        assert!(with_nats.procs.iter().all(|p| p.name != "event-bus"));
    }

    #[test]
    fn a_generated_secret_is_kept_and_one_in_the_environment_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = secret_value("SWITCHYARD_TEST_SECRET_NOT_SET", dir.path()).expect("made");
        assert!(first.len() >= 32);
        let again = secret_value("SWITCHYARD_TEST_SECRET_NOT_SET", dir.path()).expect("kept");
        assert_eq!(first, again);
        // SAFETY-free: the variable name is this test's own.
        let from_env = secret_value("PATH", dir.path()).expect("env");
        assert_eq!(Some(from_env), std::env::var("PATH").ok());
    }

    #[test]
    fn the_stream_s_replicas_and_max_age_reach_every_service_on_nats() {
        let cluster = plan(
            &switchyard_registry::BLOG,
            &args(&[
                "--nats",
                "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224",
                "--stream-replicas",
                "3",
                "--events-max-age",
                "86400",
            ]),
        )
        .expect("plan");
        let posts = cluster
            .procs
            .iter()
            .find(|p| p.name == "posts")
            .expect("posts");
        let var = |name: &str| {
            posts
                .env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(var("BUS_STREAM_REPLICAS").as_deref(), Some("3"));
        assert_eq!(var("EVENTS_MAX_AGE_SECONDS").as_deref(), Some("86400"));
        assert_eq!(
            var("EVENT_BUS_URL").as_deref(),
            Some("nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224")
        );
        let default = plan_with_nats();
        let posts = default
            .procs
            .iter()
            .find(|p| p.name == "posts")
            .expect("posts");
        assert!(posts.env.iter().all(|(k, _)| k != "EVENTS_MAX_AGE_SECONDS"));
    }

    #[test]
    fn replicas_run_every_app_service_several_times_behind_the_gateway() {
        let production = [
            "--postgres",
            "postgres://postgres@127.0.0.1:5432",
            "--nats",
            "nats://127.0.0.1:4222",
        ];
        let mut argv = production.to_vec();
        argv.extend(["--replicas", "2", "--replica", "query=3"]);
        let p = plan(&switchyard_registry::BLOG, &args(&argv)).expect("plan");
        let of =
            |name: &str| -> Vec<&ProcSpec> { p.procs.iter().filter(|s| s.name == name).collect() };
        let query = of("query");
        assert_eq!(query.len(), 3);
        let labels: Vec<String> = query.iter().map(|q| q.label()).collect();
        assert_eq!(labels, ["query#1", "query#2", "query#3"]);
        assert_eq!(
            query
                .iter()
                .map(|q| (q.port, q.ops_port))
                .collect::<Vec<_>>(),
            [(4002, 9402), (4022, 9422), (4042, 9442)]
        );
        assert_eq!(of("posts").len(), 2);
        assert_eq!(of("gateway").len(), 1);
        assert_eq!(of("gateway")[0].label(), "gateway");
        // Each replica a folder of its own; every port once.
        let mut dirs: Vec<&String> = p
            .procs
            .iter()
            .flat_map(|s| {
                s.env
                    .iter()
                    .filter(|(k, _)| k == "DATA_DIR")
                    .map(|(_, v)| v)
            })
            .collect();
        let mut ports: Vec<u16> = p.procs.iter().flat_map(|s| [s.port, s.ops_port]).collect();
        let (d, n) = (dirs.len(), ports.len());
        dirs.sort();
        dirs.dedup();
        ports.sort();
        ports.dedup();
        assert_eq!((dirs.len(), ports.len()), (d, n));
        let backends = of("gateway")[0]
            .env
            .iter()
            .find(|(k, _)| k == "GATEWAY_BACKENDS")
            .map(|(_, v)| v.clone())
            .expect("GATEWAY_BACKENDS");
        assert!(
            backends.contains(
                "query-srv:4002=http://127.0.0.1:4002|http://127.0.0.1:4022|http://127.0.0.1:4042"
            ),
            "{backends}"
        );
        // Several processes need the production backends; the bus runs as one.
        let err = plan(&switchyard_registry::BLOG, &args(&["--replicas", "2"]))
            .expect_err("SQLite")
            .to_string();
        assert!(err.contains("--postgres and --nats"), "{err}");
        let mut argv = production.to_vec();
        argv.extend(["--replica", "gateway=2"]);
        assert!(plan(&switchyard_registry::BLOG, &args(&argv)).is_err());
        let mut argv = production.to_vec();
        argv.extend(["--replica", "query=9"]);
        assert!(plan(&switchyard_registry::BLOG, &args(&argv)).is_err());
    }

    fn plan_with_nats() -> Plan {
        plan(
            &switchyard_registry::BLOG,
            &args(&["--nats", "nats://127.0.0.1:4222"]),
        )
        .expect("plan")
    }
}
