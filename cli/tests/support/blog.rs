//! The whole blog in this process: the bus and the four services, each on its own port
//! with its own database, wired over real HTTP.

use std::path::{Path, PathBuf};

use switchyard_bus_client::BusConfig;
use switchyard_event_bus::Subscriber;
use switchyard_kit::CommonConfig;

use super::{Running, listener, start};

pub const SERVICES: [&str; 4] = ["posts", "comments", "query", "moderation"];

pub struct Blog {
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub bus: Option<Running>,
    pub posts: Option<Running>,
    pub comments: Option<Running>,
    pub query: Option<Running>,
    pub moderation: Option<Running>,
}

#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub bus: u16,
    pub posts: u16,
    pub comments: u16,
    pub query: u16,
    pub moderation: u16,
}

fn common(dir: &Path, service: &str) -> CommonConfig {
    let mut c = CommonConfig::for_data_dir(service, dir.join("data"));
    c.shutdown_grace = std::time::Duration::from_secs(5);
    c
}

impl Blog {
    /// Starts everything.
    pub async fn start() -> Blog {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lb, lp, lc, lq, lm) = (
            listener(0).await,
            listener(0).await,
            listener(0).await,
            listener(0).await,
            listener(0).await,
        );
        let port = |l: &tokio::net::TcpListener| l.local_addr().expect("addr").port();
        let ports = Ports {
            bus: port(&lb),
            posts: port(&lp),
            comments: port(&lc),
            query: port(&lq),
            moderation: port(&lm),
        };
        let mut blog = Blog {
            dir,
            ports,
            bus: None,
            posts: None,
            comments: None,
            query: None,
            moderation: None,
        };
        blog.bus = Some(blog.launch_bus(lb));
        blog.posts = Some(blog.launch("posts", lp));
        blog.comments = Some(blog.launch("comments", lc));
        blog.query = Some(blog.launch("query", lq));
        blog.moderation = Some(blog.launch("moderation", lm));
        blog
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.port(service))
    }

    pub fn port(&self, service: &str) -> u16 {
        match service {
            "event-bus" => self.ports.bus,
            "posts" => self.ports.posts,
            "comments" => self.ports.comments,
            "query" => self.ports.query,
            "moderation" => self.ports.moderation,
            other => panic!("unknown service {other}"),
        }
    }

    fn bus_config(&self) -> BusConfig {
        BusConfig::http(self.url("event-bus"))
    }

    fn launch_bus(&self, l: tokio::net::TcpListener) -> Running {
        let subscribers = SERVICES
            .iter()
            .map(|s| Subscriber::parse(&format!("{s}={}", self.url(s))).expect("subscriber"))
            .collect();
        let settings = switchyard_event_bus::Settings::for_test(&self.data_dir(), subscribers);
        start(l, move |l, s| switchyard_event_bus::launch(settings, l, s))
    }

    fn launch(&self, service: &str, l: tokio::net::TcpListener) -> Running {
        let dir = self.dir.path();
        let bus = self.bus_config();
        match service {
            "posts" => {
                let s = switchyard_posts::Settings {
                    common: common(dir, service),
                    bus,
                };
                start(l, move |l, sd| switchyard_posts::launch(s, l, sd))
            }
            "comments" => {
                let s = switchyard_comments::Settings {
                    common: common(dir, service),
                    bus,
                };
                start(l, move |l, sd| switchyard_comments::launch(s, l, sd))
            }
            "query" => {
                let s = switchyard_query::Settings {
                    common: common(dir, service),
                    bus,
                };
                start(l, move |l, sd| switchyard_query::launch(s, l, sd))
            }
            "moderation" => {
                let s = switchyard_moderation::Settings {
                    common: common(dir, service),
                    bus,
                    rule: switchyard_moderation::Rule::default(),
                };
                start(l, move |l, sd| switchyard_moderation::launch(s, l, sd))
            }
            other => panic!("unknown service {other}"),
        }
    }

    fn slot(&mut self, service: &str) -> &mut Option<Running> {
        match service {
            "event-bus" => &mut self.bus,
            "posts" => &mut self.posts,
            "comments" => &mut self.comments,
            "query" => &mut self.query,
            "moderation" => &mut self.moderation,
            other => panic!("unknown service {other}"),
        }
    }

    /// Graceful stop of one service.
    pub async fn stop(&mut self, service: &str) {
        if let Some(r) = self.slot(service).take() {
            r.stop().await.expect("service stopped cleanly");
        }
    }

    /// Abrupt stop of one service (its task is dropped mid-flight).
    pub async fn kill(&mut self, service: &str) {
        if let Some(r) = self.slot(service).take() {
            r.kill().await;
        }
    }

    /// Starts a stopped service again on its port, with its data.
    pub async fn restart(&mut self, service: &str) {
        let l = listener(self.port(service)).await;
        let running = if service == "event-bus" {
            self.launch_bus(l)
        } else {
            self.launch(service, l)
        };
        *self.slot(service) = Some(running);
    }

    /// Stops everything gracefully.
    pub async fn shutdown(mut self) {
        for s in ["posts", "comments", "query", "moderation", "event-bus"] {
            self.stop(s).await;
        }
    }
}
