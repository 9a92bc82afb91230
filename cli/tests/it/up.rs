//! `switchyard up blog`: everything ready behind the gateway, a crashed service restarted,
//! a clean stop, state kept across runs, a clear message for a port in use.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::backend::{Backend, Resources};
use support::faults::production_args;
use support::http::Client;
use support::up::{Up, free_offset};
use support::{DEADLINE, eventually, process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_blog_restarts_what_dies_and_keeps_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let offset = free_offset();
    let gateway = process::free_port();
    let mut up = Up::start(dir.path(), offset, gateway);
    // The table lists every service, ready.
    let lines = up.lines();
    for service in [
        "event-bus",
        "posts",
        "comments",
        "query",
        "moderation",
        "client",
        "gateway",
    ] {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(service))
            .unwrap_or_else(|| panic!("{service} missing from the table:\n{}", lines.join("\n")));
        assert!(row.contains(" yes "), "{row}");
    }
    up.wait_for_line(
        &format!("open http://127.0.0.1:{gateway}"),
        Duration::from_secs(1),
    );
    // The whole flow through the gateway.
    let c = Client::default();
    let page = c.get(&up.url()).await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<title>Switchyard Blog</title>"));
    // Nothing operational is public: the gateway routes /metrics, /healthz and /readyz as
    // any path (to the client's catch-all), never to a service's ops endpoints.
    for ops in ["/metrics", "/healthz", "/readyz"] {
        let a = c.get(&format!("{}{ops}", up.url())).await;
        let body = String::from_utf8_lossy(&a.body);
        assert!(
            !body.contains("switchyard_http_requests_total") && !body.contains("# TYPE"),
            "{ops} through the gateway answered metrics: {body}"
        );
    }
    let post = c
        .post_json(
            &format!("{}/posts/create", up.url()),
            &json!({"title": "kept"}),
        )
        .await;
    assert_eq!(post.status, 201);
    let id = post.json()["id"].as_str().expect("id").to_string();
    let comments = c
        .post_json(
            &format!("{}/posts/{id}/comments", up.url()),
            &json!({"content": "orange"}),
        )
        .await;
    assert_eq!(comments.status, 201);
    eventually("rejected through the gateway", || async {
        let v = c.try_get(&format!("{}/posts", up.url())).await?.json();
        (v[&id]["comments"][0]["status"] == "rejected").then_some(())
    })
    .await;
    // A service that dies is restarted, like a Deployment's pod.
    let pid = up.service_pid("query").expect("query's pid");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    eventually("query restarted with a new pid", || async {
        up.service_pid("query").filter(|p| *p != pid).map(|_| ())
    })
    .await;
    eventually("query serves again through the gateway", || async {
        let a = c.try_get(&format!("{}/posts", up.url())).await?;
        (a.status == 200 && a.json().get(&id).is_some()).then_some(())
    })
    .await;
    // Ctrl-C / SIGTERM stops everything cleanly; the final table counts the restart.
    assert_eq!(up.stop(), Some(0));
    let lines = up.lines();
    let query_row = lines
        .iter()
        .rev()
        .find(|l| l.split_whitespace().next() == Some("query"))
        .expect("query row");
    assert!(query_row.trim_end().ends_with('1'), "restarts: {query_row}");
    assert!(
        !lines.iter().any(|l| l.contains("killing it")),
        "a service had to be killed:\n{}",
        lines.join("\n")
    );
    drop(up);
    // State survives up being stopped and started again.
    let up = Up::start(dir.path(), offset, gateway);
    let v = c.get(&format!("{}/posts", up.url())).await.json();
    assert_eq!(v[&id]["title"], "kept");
    assert_eq!(v[&id]["comments"][0]["status"], "rejected");
}

#[test]
fn a_port_in_use_gives_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    let (status, stderr) = process::run(
        &[
            "up",
            "blog",
            "--port-offset",
            &free_offset().to_string(),
            "--gateway-port",
            &port.to_string(),
            "--data-dir",
            &dir.path().display().to_string(),
        ],
        &[],
    );
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("port {port} (gateway)")),
        "{stderr}"
    );
    assert!(stderr.contains("--gateway-port"), "{stderr}");
}

/// `up blog --replicas 2` on the production backends: two processes of every service, one
/// row each in the table; the gateway gives each replica its turn, passes over one that
/// died (no request fails while `up` restarts it), and the table counts that replica's
/// restart only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_two_replicas_of_each_service_behind_the_gateway() {
    if !Backend::Production.enabled() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut resources = Resources::new();
    let services = ["posts", "comments", "query", "moderation"];
    let mut extra = production_args(&resources, &services).await;
    extra.extend(["--replicas".to_string(), "2".to_string()]);
    let offset = free_offset();
    let mut up = Up::start_with(dir.path(), offset, process::free_port(), &extra);
    let lines = up.lines();
    let row = |label: &str| {
        lines
            .iter()
            .find(|l| table_row(l, label))
            .unwrap_or_else(|| panic!("{label} missing from the table:\n{}", lines.join("\n")))
            .clone()
    };
    for service in services.iter().chain(&["client"]) {
        for k in 1..=2 {
            let r = row(&format!("{service}#{k}"));
            assert!(r.contains(" yes "), "{r}\n{}", lines.join("\n"));
        }
    }
    assert!(row("gateway").contains(" yes "));
    let c = Client::default();
    let post = c
        .post_json(
            &format!("{}/posts/create", up.url()),
            &json!({"title": "twice"}),
        )
        .await;
    assert_eq!(post.status, 201);
    // Turns: each replica of query answers about half of the reads.
    let query = switchyard_registry::BLOG
        .services
        .iter()
        .find(|s| s.name == "query")
        .expect("query");
    let served = |k: u8| {
        let c = &c;
        let ops =
            switchyard_registry::replica_port(query.local_ops_port + offset, k).expect("port");
        async move {
            let text = c.get(&format!("http://127.0.0.1:{ops}/metrics")).await.body;
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| {
                    l.starts_with("switchyard_http_requests_total{")
                        && l.contains("route=\"/posts\",method=\"GET\",status=\"200\"")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    for _ in 0..20 {
        assert_eq!(c.get(&format!("{}/posts", up.url())).await.status, 200);
    }
    let (first, second) = (served(1).await, served(2).await);
    assert!(
        first >= 8 && second >= 8,
        "the replicas served {first} and {second} of 20 reads"
    );
    // The first replica dies: while up restarts it, every read is answered by the other.
    let pid = up.service_pid("query").expect("query#1's pid");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    for _ in 0..40 {
        let a = c.get(&format!("{}/posts", up.url())).await;
        assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    }
    eventually("query#1 restarted with a new pid", || async {
        up.service_pid("query").filter(|p| *p != pid).map(|_| ())
    })
    .await;
    assert_eq!(up.stop(), Some(0));
    let lines = up.lines();
    let last = |label: &str| {
        lines
            .iter()
            .rev()
            .find(|l| table_row(l, label))
            .map(|l| l.trim_end().to_string())
            .unwrap_or_default()
    };
    assert!(last("query#1").ends_with(" 1"), "{}", last("query#1"));
    assert!(last("query#2").ends_with(" 0"), "{}", last("query#2"));
    drop(up);
    resources.cleanup().await;
}

/// With the step logs on (`RUST_LOG=switchyard_bus_client=trace`, JSON), every step of
/// every comment reaches `up`'s output, on both backends: its events staged and committed,
/// read by the relay, published, received and handled by each consumer. (On the production
/// backends, lines of the same call sites went missing at random, and the per-hop
/// timeline lost its steps.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_log_line_reaches_up_s_output() {
    const COMMENTS: usize = 15;
    for backend in [Backend::Embedded, Backend::Production] {
        if !backend.enabled() {
            continue;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let mut resources = Resources::new();
        let services = ["posts", "comments", "query", "moderation"];
        let extra = match backend {
            Backend::Production => production_args(&resources, &services).await,
            Backend::Embedded => Vec::new(),
        };
        let envs = [
            ("RUST_LOG", "switchyard_bus_client=trace"),
            ("LOG_FORMAT", "json"),
        ];
        let gateway = process::free_port();
        let mut up = Up::start_app("blog", dir.path(), free_offset(), gateway, &extra, &envs);
        let c = Client::default();
        let post = c
            .post_json(
                &format!("{}/posts/create", up.url()),
                &json!({"title": "steps"}),
            )
            .await;
        assert_eq!(post.status, 201);
        let id = post.json()["id"].as_str().expect("post id").to_string();
        for n in 0..COMMENTS {
            let url = format!("{}/posts/{id}/comments", up.url());
            let answer = c
                .post_json(&url, &json!({"content": format!("step {n}")}))
                .await;
            assert_eq!(answer.status, 201);
        }
        eventually("every comment approved", || async {
            let posts = c.get(&format!("{}/posts", up.url())).await.json();
            let comments = posts[&id]["comments"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let approved = comments
                .iter()
                .filter(|c| c["status"] == "approved")
                .count();
            (approved == COMMENTS).then_some(())
        })
        .await;
        // The last comment's last steps (the relay's) may follow its approval; a line that
        // never comes is reported below, with the others missing.
        let published = 1 + 3 * COMMENTS;
        let all_published = || async {
            let lines = up.lines();
            let n = lines
                .iter()
                .filter(|l| l.contains("\"event published\""))
                .count();
            (n >= published).then_some(())
        };
        let _ = switchyard_kit::wait::until("the publications", DEADLINE, all_published).await;
        assert_eq!(up.stop(), Some(0));
        let lines = up.lines();
        let count = |service: &str, message: &str| {
            let prefix = format!("{service} |");
            let message = format!("\"message\":\"{message}\"");
            let of = |l: &&String| l.trim_start().starts_with(&prefix) && l.contains(&message);
            lines.iter().filter(of).count()
        };
        // posts: PostCreated; comments: CommentCreated and CommentUpdated each; moderation:
        // CommentModerated each. Consumers: moderation and comments one event per comment,
        // query the post and two per comment.
        let expected = [
            ("posts", "event staged", 1),
            ("comments", "event staged", 2 * COMMENTS),
            ("moderation", "event staged", COMMENTS),
            ("comments", "change committed", 2 * COMMENTS),
            ("comments", "event read by the relay", 2 * COMMENTS),
            ("moderation", "event published", COMMENTS),
            ("moderation", "event received", COMMENTS),
            ("comments", "event received", COMMENTS),
            ("query", "event received", 1 + 2 * COMMENTS),
            ("query", "event handled", 1 + 2 * COMMENTS),
        ];
        let missing: Vec<String> = expected
            .iter()
            .filter(|(service, message, n)| count(service, message) < *n)
            .map(|(service, message, n)| {
                format!("{service}: {} of {n} {message:?}", count(service, message))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{}: missing step logs: {missing:?}",
            backend.name()
        );
        drop(up);
        resources.cleanup().await;
    }
}

/// Whether `line` is the status table's row of `label` (not a log line of it).
fn table_row(line: &str, label: &str) -> bool {
    let mut cells = line.split_whitespace();
    cells.next() == Some(label) && cells.next().is_some_and(|a| a.starts_with("http://"))
}
