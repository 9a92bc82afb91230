//! What `up` starts: each service's command, port and environment, in start order.

use std::path::PathBuf;

use super::{App, UpArgs};

/// One process to supervise.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// The service name (`switchyard serve <name>`), also the log prefix.
    pub name: &'static str,
    pub port: u16,
    pub env: Vec<(String, String)>,
    /// Start wave: every process of a wave is ready before the next wave starts.
    pub wave: u8,
}

/// Every process of an app.
#[derive(Debug, Clone)]
pub struct Plan {
    pub app: App,
    pub host: String,
    pub data_dir: PathBuf,
    pub procs: Vec<ProcSpec>,
    pub gateway_port: u16,
}

impl Plan {
    pub async fn new(args: &UpArgs) -> anyhow::Result<Plan> {
        if let Some(url) = &args.postgres {
            switchyard_kit::config::check_url("--postgres", url, &["postgres", "postgresql"])?;
        }
        if let Some(url) = &args.nats {
            switchyard_kit::config::check_url("--nats", url, &["nats"])?;
        }
        let mut plan = match args.app {
            App::Blog => blog(args)?,
        };
        if let Some(server) = &args.postgres {
            for p in plan.procs.iter_mut().filter(|p| has_database(p.name)) {
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
            if let Err(e) = std::net::TcpListener::bind((self.host.as_str(), p.port)) {
                anyhow::bail!(
                    "port {} ({}) on {} is not available: {e}. Stop what uses it, or choose other ports with --port-offset N / --gateway-port N",
                    p.port,
                    p.name,
                    self.host
                );
            }
        }
        Ok(())
    }

    pub fn url(&self, port: u16) -> String {
        let host = if self.host == "0.0.0.0" {
            "127.0.0.1"
        } else {
            self.host.as_str()
        };
        format!("http://{host}:{port}")
    }
}

fn has_database(service: &str) -> bool {
    matches!(
        service,
        "event-bus" | "posts" | "comments" | "query" | "moderation"
    )
}

fn offset(base: u16, by: u16) -> anyhow::Result<u16> {
    base.checked_add(by)
        .ok_or_else(|| anyhow::anyhow!("--port-offset {by} takes port {base} past 65535"))
}

fn blog(args: &UpArgs) -> anyhow::Result<Plan> {
    let port = |base| offset(base, args.port_offset);
    let (bus, posts, comments, query, moderation, client) = (
        port(4005)?,
        port(4000)?,
        port(4001)?,
        port(4002)?,
        port(4003)?,
        port(3000)?,
    );
    let local = |p: u16| format!("http://127.0.0.1:{p}");
    let data_dir = std::path::absolute(&args.data_dir)?;
    let bus_env: Vec<(String, String)> = match &args.nats {
        Some(url) => vec![
            ("EVENT_BUS_URL".into(), url.clone()),
            ("BUS_STREAM".into(), args.stream.clone()),
            ("BUS_SUBJECT_PREFIX".into(), args.subject_prefix.clone()),
        ],
        None => vec![("EVENT_BUS_URL".into(), local(bus))],
    };
    let common = |name: &str| -> Vec<(String, String)> {
        let mut env = vec![
            ("HOST".into(), args.host.clone()),
            ("DATA_DIR".into(), data_dir.join(name).display().to_string()),
        ];
        env.extend(bus_env.iter().cloned());
        env
    };
    let with = |name: &'static str, port: u16, wave: u8, extra: Vec<(String, String)>| {
        let mut env = common(name);
        env.push(("PORT".into(), port.to_string()));
        env.extend(extra);
        ProcSpec {
            name,
            port,
            env,
            wave,
        }
    };
    let subscribers = format!(
        "posts={},comments={},query={},moderation={}",
        local(posts),
        local(comments),
        local(query),
        local(moderation)
    );
    let backends = format!(
        "posts-clusterip-srv:4000={},query-srv:4002={},comments-srv:4001={},client-srv:3000={}",
        local(posts),
        local(query),
        local(comments),
        local(client)
    );
    let mut procs = Vec::new();
    // With NATS the services talk to JetStream; the HTTP event bus is not needed.
    if args.nats.is_none() {
        procs.push(with(
            "event-bus",
            bus,
            0,
            vec![("SUBSCRIBERS".into(), subscribers)],
        ));
    }
    procs.extend([
        with("posts", posts, 1, vec![]),
        with("comments", comments, 1, vec![]),
        with("query", query, 1, vec![]),
        with("moderation", moderation, 1, vec![]),
        with("client", client, 1, vec![]),
        with(
            "gateway",
            args.gateway_port,
            2,
            vec![("GATEWAY_BACKENDS".into(), backends)],
        ),
    ]);
    Ok(Plan {
        app: args.app,
        host: args.host.clone(),
        data_dir,
        procs,
        gateway_port: args.gateway_port,
    })
}
