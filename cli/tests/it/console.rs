//! The console in real headless Chromium, beside `switchyard up ticketing`: the map from
//! the registry, and a purchase's `order:created` followed live from its commit to every
//! consumer within a second of the order's answer, with the request's waterfall and the
//! consumers' positions. The screenshot lands in `target/artifacts/console.png`.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use support::http::Client;
use support::up::{Up, free_offset};
use support::webdriver::{self, Driver};
use support::{console_view, shop};
use support::{eventually, process};

fn console_url(offset: u16) -> String {
    let port = shop::port_of("ticketing", switchyard_registry::Kind::Console, offset);
    format!("http://127.0.0.1:{port}")
}

/// The console and the services' span exporters run below the services' priority (a busy
/// machine gives the services the CPU first); the services' own threads keep theirs.
fn observers_yield_to_the_services(up: &Up) {
    use switchyard_kit::priority::nice_of_threads;
    let base = nice_of_threads(None).first().map_or(0, |(_, nice)| *nice);
    let lowered = switchyard_kit::priority::OBSERVER_NICE.max(base);
    let console = up.service_pid("console").expect("the console's pid");
    let threads = nice_of_threads(Some(console));
    assert!(
        !threads.is_empty() && threads.iter().all(|(_, nice)| *nice == lowered),
        "every thread of the console at nice {lowered}: {threads:?}"
    );
    let orders = up.service_pid("orders").expect("orders' pid");
    let threads = nice_of_threads(Some(orders));
    let (exporter, own): (Vec<_>, Vec<_>) = threads.iter().partition(|(name, _)| {
        name.starts_with("OpenTelemetry") || name.starts_with("reqwest-intern")
    });
    assert!(
        !exporter.is_empty() && exporter.iter().all(|(_, nice)| *nice == lowered),
        "orders' exporter threads at nice {lowered}: {threads:?}"
    );
    assert!(
        own.iter().all(|(_, nice)| *nice == base),
        "orders' own threads at nice {base}: {threads:?}"
    );
}

/// How long after its order is answered a purchase's journey may take to show, whole.
const JOURNEY_WITHIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_purchase_s_journey_live() {
    if !webdriver::available() {
        switchyard_kit::testing::skip_or_fail(
            "chromium or chromedriver not installed (apt-get install chromium chromium-driver)",
        );
        return;
    }
    // Timed: not beside the fault-injection runs.
    let _serial = support::faults::ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tmp");
    let offset = free_offset();
    let gateway = process::free_port();
    // Spans exported to up's console (up's default; the harness turns it off unless asked).
    let up = Up::start_app(
        "ticketing",
        dir.path(),
        offset,
        gateway,
        &[],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let console = console_url(offset);
    up.wait_for_line("console (the map", Duration::from_secs(1));
    assert!(
        up.lines().iter().any(|l| l.contains(&console)),
        "up prints the console's address"
    );
    // A seller's ticket, ready for the purchase.
    let c = Client::default();
    let base = up.url();
    let cookie = shop::signed_up(&c, &base, "console@test.com").await;
    let ticket_id = shop::ticket_for_sale(&c, &base, &cookie, "watched").await;
    observers_yield_to_the_services(&up);
    // Orders knows the ticket once its replica has it.
    eventually("the ticket at orders", || async {
        let events = c
            .get(&format!("{console}/api/events?type=ticket:created"))
            .await
            .json();
        let id = events.as_array()?.last()?["id"].as_str()?.to_string();
        let journey = c
            .get(&format!("{console}/api/events/{id}/journey"))
            .await
            .json();
        journey["waitingFor"]
            .as_array()
            .is_some_and(|w| w.is_empty())
            .then_some(())
    })
    .await;

    let driver = Driver::start().await;
    let s = driver.session().await;
    s.resize(1400, 1500).await;
    s.goto(&console).await;
    s.wait_for("#map article[data-service=\"orders\"]").await;
    let app = s.wait_for("#app").await;
    assert_eq!(s.text(&app).await, "ticketing");
    // Follow the newest order:created.
    let type_filter = s.wait_for("#filters input[name=\"type\"]").await;
    s.type_into(&type_filter, "order:created").await;
    let filter = s.wait_for("#filters button[type=\"submit\"]").await;
    s.click(&filter).await;

    let order = c
        .with_cookie(
            Method::POST,
            &format!("{base}/api/orders"),
            Some(&cookie),
            Some(&json!({"ticketId": ticket_id})),
        )
        .await;
    let answered = Instant::now();
    assert_eq!(
        order.status,
        201,
        "{}",
        String::from_utf8_lossy(&order.body)
    );
    let order_id = order.json()["id"].as_str().expect("id").to_string();
    // The page shows the order's journey, applied by every consumer.
    let shown = loop {
        let seen = s
            .script(
                "const j = document.getElementById('journey'); \
                 return [j.dataset.entity || '', j.dataset.complete || ''];",
            )
            .await;
        let entity = seen[0].as_str().unwrap_or("");
        if entity.split(' ').any(|e| e == order_id) && seen[1] == "true" {
            break answered.elapsed();
        }
        assert!(
            answered.elapsed() < Duration::from_secs(20),
            "the journey of order {order_id} never showed whole: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("the purchase's journey showed whole {shown:?} after the order's answer");
    // What the page says: each consumer applied it, after orders committed and published.
    let journey = s.text(&s.wait_for("#journey").await).await;
    assert!(
        journey.contains("Applied by every consumer of order:created."),
        "{journey}"
    );
    // Read in one go: the page redraws the journey while it follows it.
    let listed = s
        .script(
            "return [...document.querySelectorAll('#journey li.step')] \
             .map((li) => [li.dataset.step, li.dataset.service]);",
        )
        .await;
    let steps: Vec<(String, String)> = listed
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    (
                        s[0].as_str().unwrap_or("").to_string(),
                        s[1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for consumer in ["tickets", "expiration", "payments"] {
        assert!(
            steps.iter().any(|(w, s)| w == "applied" && s == consumer),
            "{consumer} applied it: {steps:?}"
        );
    }
    for (what, who) in [
        ("committed", "orders"),
        ("published", "orders"),
        ("appended", "event-bus"),
    ] {
        assert!(
            steps.iter().any(|(w, s)| w == what && s == who),
            "{what} by {who}: {steps:?}"
        );
    }
    // The request's trace as a waterfall, across the services.
    s.wait_for("#waterfall[data-trace-id] .span-row").await;
    let rows = s.text(&s.wait_for("#waterfall").await).await;
    for row in [
        "orders · POST /api/orders",
        "tickets · apply order:created",
        "payments · apply order:created",
        "expiration · apply order:created",
    ] {
        assert!(rows.contains(row), "{row} in the waterfall:\n{rows}");
    }
    // Each consumer's position.
    s.wait_for("#consumers tbody tr[data-service=\"payments\"]")
        .await;
    std::fs::create_dir_all(artifacts()).expect("artifacts");
    let png = s.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(artifacts().join("console.png"), &png).expect("screenshot");
    s.quit().await;
    drop(driver);
    assert!(
        shown <= JOURNEY_WITHIN,
        "the journey showed {shown:?} after the order's answer (at most {JOURNEY_WITHIN:?})"
    );
    // A replay needs the console's header: a page of another site cannot send it.
    let refused = c
        .with_cookie(
            Method::POST,
            &format!("{console}/api/consumers/payments/dead-letters/c-1/replay"),
            None,
            None,
        )
        .await;
    assert_eq!(refused.status, 403);
    // `switchyard console` against the running app: the same events and consumers, read
    // from its bus with the secret up keeps.
    let port = process::free_port();
    let other = std::process::Command::new(process::BIN)
        .args([
            "console",
            "ticketing",
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("EVENT_BUS_URL", bus_url(offset))
        .env("EVENT_BUS_OPS_URL", bus_ops_url(offset))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("switchyard console");
    let mut other = KillOnDrop(other);
    let other_url = format!("http://127.0.0.1:{port}");
    console_view::wait_for_the_order(&c, &other_url, &order_id).await;
    let consumers = console_view::wait_for_every_position(&c, &other_url).await;
    assert_eq!(
        consumers["consumers"].as_array().map(Vec::len),
        Some(4),
        "{consumers}"
    );
    let _ = other.0.kill();
    let _ = other.0.wait();
    drop(up);
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The app's local bus under `offset`, and its ops listener.
fn bus_url(offset: u16) -> String {
    let port = shop::port_of("ticketing", switchyard_registry::Kind::EventBus, offset);
    format!("http://127.0.0.1:{port}")
}

fn bus_ops_url(offset: u16) -> String {
    let bus = switchyard_registry::TICKETING
        .of_kind(switchyard_registry::Kind::EventBus)
        .next()
        .expect("a bus");
    format!("http://127.0.0.1:{}", bus.local_ops_port + offset)
}

fn artifacts() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts")
}

/// The console on PostgreSQL + NATS: the log read from the stream, a purchase's journey
/// (delivered and applied at each consumer), and each durable's position from JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reads_nats_and_its_consumers() {
    use support::backend::{Backend, Resources};
    if !Backend::Production.enabled() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut resources = Resources::new();
    let extra = shop::production_up_args("ticketing", &resources).await;
    let offset = free_offset();
    let up = Up::start_app(
        "ticketing",
        dir.path(),
        offset,
        process::free_port(),
        &extra,
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let console = console_url(offset);
    let c = Client::default();
    let base = up.url();
    let cookie = shop::signed_up(&c, &base, "nats-console@test.com").await;
    let ticket_id = shop::ticket_for_sale(&c, &base, &cookie, "on nats").await;
    let order = shop::order(&c, &base, &cookie, &ticket_id, &[]).await;
    let order_id = order["id"].as_str().expect("id").to_string();
    let journey = eventually("the order's journey, whole", || async {
        let events = c
            .get(&format!(
                "{console}/api/events?type=order:created&entity={order_id}"
            ))
            .await
            .json();
        let id = events.as_array()?.last()?["id"].as_str()?.to_string();
        let j = c
            .get(&format!("{console}/api/events/{id}/journey"))
            .await
            .json();
        j["waitingFor"]
            .as_array()
            .is_some_and(|w| w.is_empty())
            .then_some(j)
    })
    .await;
    let steps = journey["steps"].as_array().expect("steps");
    for consumer in ["tickets", "expiration", "payments"] {
        for step in ["delivered", "applied"] {
            assert!(
                steps
                    .iter()
                    .any(|s| s["step"] == step && s["service"] == consumer),
                "{step} at {consumer}: {journey}"
            );
        }
    }
    let consumers = console_view::wait_for_every_position(&c, &console).await;
    assert_eq!(consumers["bus"], "nats");
    assert_eq!(consumers["consumers"].as_array().map(Vec::len), Some(4));
    drop(up);
    resources.cleanup().await;
}
