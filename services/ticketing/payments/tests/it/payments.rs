//! The payments service with the in-process event bus: the replica of orders, `POST
//! /api/payments` and its answers, at most one payment per order under concurrent requests,
//! a declined card, a cancellation during the charge, a crashed attempt replayed, the
//! provider configured as Stripe, and bad input.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use support::fake_stripe::FakeStripe;
use support::{
    Recorder, Running, bus, eventually, listeners, now_ms, postgres, publish, subscriber,
};
use switchyard_bus_client::outbox::MESSAGING;
use switchyard_bus_client::{BusConfig, ConsumerSettings, ServiceSettings};
use switchyard_kit::{CommonConfig, Db};
use switchyard_payments::provider::{
    Charge, ChargeError, ChargeRequest, PaymentProvider, ProviderConfig, TestProvider,
};
use switchyard_payments::{MIGRATIONS, Settings};
use switchyard_session::{SessionConfig, Sessions};
use switchyard_ticketing_contract::{
    EXPIRATION_COMPLETE, ORDER_CANCELLED, ORDER_CREATED, PAYMENT_CREATED, PAYMENT_EXPIRED,
    check_payload, object_id,
};
use tokio::sync::Semaphore;

const JWT_KEY: &str = "payments-test-key-payments-test-key";

/// A provider whose charges wait at a gate the test opens: it holds a charge "in flight".
struct Gated {
    inner: TestProvider,
    entered: AtomicUsize,
    gate: Semaphore,
}

impl Default for Gated {
    fn default() -> Self {
        Gated {
            inner: TestProvider::new(),
            entered: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        }
    }
}

impl Gated {
    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    fn open(&self, charges: usize) {
        self.gate.add_permits(charges);
    }
}

impl PaymentProvider for Gated {
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, Result<Charge, ChargeError>> {
        Box::pin(async move {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.expect("gate").forget();
            self.inner.charge(request).await
        })
    }

    fn refund<'a>(
        &'a self,
        charge_id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<(), ChargeError>> {
        self.inner.refund(charge_id, idempotency_key)
    }

    fn find_charge<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Charge>, ChargeError>> {
        self.inner.find_charge(idempotency_key)
    }
}

/// The bus, a recorder of `payment:created`, the service, and a window on its database.
struct App {
    bus: Running,
    recorder: Recorder,
    service: Running,
    db: Db,
    sessions: Sessions,
    client: reqwest::Client,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

enum Provider {
    /// Given to the service (`launch_with`), so the test sees its charges.
    Given(Arc<dyn PaymentProvider>),
    /// Built by the service from its configuration (`launch`).
    Configured(ProviderConfig),
}

impl App {
    /// The service on SQLite in a data directory of its own.
    async fn with(provider: Provider) -> App {
        App::on(provider, None).await
    }

    /// The service on `database_url`, or SQLite when `None`.
    async fn on(provider: Provider, database_url: Option<&str>) -> App {
        let (bus_dir, data) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let mut common = CommonConfig::for_data_dir("payments", data.path());
        if let Some(url) = database_url {
            common.database_url = url.to_string();
        }
        // Migrated before the service starts, so the two never migrate at the same time.
        let db = open_db(&common.database_url).await;
        let service_listeners = listeners(0).await;
        let service_url = format!(
            "http://{}",
            service_listeners.public.local_addr().expect("addr")
        );
        let recorder = Recorder::start().await;
        let bus = bus::start(
            bus_dir.path(),
            vec![
                subscriber(
                    "payments",
                    &service_url,
                    &[ORDER_CREATED, ORDER_CANCELLED, EXPIRATION_COMPLETE],
                ),
                subscriber(
                    "recorder",
                    &recorder.url,
                    &[PAYMENT_CREATED, PAYMENT_EXPIRED],
                ),
            ],
            Some(check_payload),
        )
        .await;
        let config = match &provider {
            Provider::Configured(config) => config.clone(),
            Provider::Given(_) => ProviderConfig::test(),
        };
        let settings = Settings {
            service: ServiceSettings {
                common,
                bus: BusConfig::http(bus.url()),
                consumer: Some(ConsumerSettings::new("payments-service").only([
                    ORDER_CREATED,
                    ORDER_CANCELLED,
                    EXPIRATION_COMPLETE,
                ])),
                retention: Default::default(),
            },
            session: SessionConfig::for_key(JWT_KEY),
            provider: config,
        };
        let service = match provider {
            Provider::Given(p) => Running::start(service_listeners, move |l, s| {
                switchyard_payments::launch_with(settings, p, l, s)
            }),
            Provider::Configured(_) => Running::start(service_listeners, move |l, s| {
                switchyard_payments::launch(settings, l, s)
            }),
        };
        App {
            bus,
            recorder,
            service,
            db,
            sessions: Sessions::new(SessionConfig::for_key(JWT_KEY)).expect("sessions"),
            client: reqwest::Client::new(),
            _dirs: (bus_dir, data),
        }
    }

    async fn stop(self) {
        self.db.close().await;
        self.service.stop().await.expect("clean stop");
        self.bus.stop().await.expect("bus stop");
    }

    /// The cookie of a signed-in `user_id`.
    fn cookie(&self, user_id: &str) -> String {
        switchyard_testkit::http::cookie(&self.sessions, user_id)
    }

    /// `POST /api/payments` as `cookie` with `body`: the status and the JSON body.
    async fn pay(&self, cookie: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}/api/payments", self.service.url()))
            .json(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let answer = request.send().await.expect("request");
        let status = answer.status().as_u16();
        (status, answer.json().await.expect("a JSON body"))
    }

    /// Publishes `order:created` for `user_id` at `price`, and waits until it is applied.
    async fn order(&self, user_id: &str, price: f64) -> String {
        self.order_expiring(user_id, price, "2030-01-01T00:15:00.000Z")
            .await
    }

    /// [`App::order`], expiring at `expires_at`.
    async fn order_expiring(&self, user_id: &str, price: f64, expires_at: &str) -> String {
        let id = object_id();
        publish(
            &self.client,
            &self.bus.url(),
            &json!({
                "type": ORDER_CREATED,
                "data": {
                    "id": id,
                    "version": 0,
                    "status": "created",
                    "userId": user_id,
                    "expiresAt": expires_at,
                    "ticket": {"id": object_id(), "price": price},
                },
            }),
        )
        .await;
        self.wait_for_order(&id, "created", 0).await;
        id
    }

    async fn cancel(&self, order_id: &str) {
        publish(
            &self.client,
            &self.bus.url(),
            &json!({
                "type": ORDER_CANCELLED,
                "data": {"id": order_id, "version": 1, "ticket": {"id": object_id()}},
            }),
        )
        .await;
        self.wait_for_order(order_id, "cancelled", 1).await;
    }

    async fn order_row(&self, order_id: &str) -> Option<(String, i64)> {
        sqlx::query_as("SELECT status, version FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_optional(self.db.reader())
            .await
            .expect("query")
    }

    async fn wait_for_order(&self, order_id: &str, status: &str, version: i64) {
        eventually("the order in the replica", || async {
            (self.order_row(order_id).await == Some((status.to_string(), version))).then_some(())
        })
        .await;
    }

    /// `POST /events` straight to the service, as the bus delivers: the status.
    async fn deliver(&self, event: &Value) -> u16 {
        self.client
            .post(format!("{}/events", self.service.url()))
            .json(event)
            .send()
            .await
            .expect("deliver")
            .status()
            .as_u16()
    }

    async fn payments_of(&self, order_id: &str) -> Vec<(String, String)> {
        sqlx::query_as("SELECT id, stripe_id FROM payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(self.db.reader())
            .await
            .expect("query")
    }

    /// What a request that crashed during its charge leaves: the charge made at the
    /// provider with the first attempt's key, and the attempt pending until `lease_until`.
    async fn crashed_attempt(
        &self,
        provider: &TestProvider,
        order_id: &str,
        lease_until: i64,
    ) -> String {
        let key = format!("charge-{order_id}-1");
        let charge = provider
            .charge(ChargeRequest {
                amount_cents: 2500,
                currency: "usd".into(),
                source: "tok_visa".into(),
                idempotency_key: key.clone(),
                description: "crashed".into(),
            })
            .await
            .expect("charged");
        self.pending_attempt(order_id, &key, lease_until).await;
        charge.id
    }

    /// A pending first attempt of `order_id` with `key`, leased until `lease_until`.
    async fn pending_attempt(&self, order_id: &str, key: &str, lease_until: i64) {
        sqlx::query(
            "INSERT INTO charge_attempts (order_id, attempt, status, idempotency_key, token, amount_cents, currency, lease_until, created_at, updated_at) VALUES ($1, 1, 'pending', $2, 'tok_visa', 2500, 'usd', $3, $4, $4)",
        )
        .bind(order_id)
        .bind(key)
        .bind(lease_until)
        .bind(now_ms())
        .execute(self.db.pool())
        .await
        .expect("insert");
    }

    async fn attempts_of(&self, order_id: &str) -> Vec<(i64, String)> {
        sqlx::query_as(
            "SELECT attempt, status FROM charge_attempts WHERE order_id = $1 ORDER BY attempt",
        )
        .bind(order_id)
        .fetch_all(self.db.reader())
        .await
        .expect("query")
    }
}

/// The service's database, migrated (a test may open it before the service does).
async fn open_db(url: &str) -> Db {
    let db = Db::connect(url).await.expect("db");
    db.migrate("payments", &[&MESSAGING, &MIGRATIONS])
        .await
        .expect("migrate");
    db
}

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_an_order_charges_it_stores_the_payment_and_publishes_payment_created() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let (buyer, other) = (object_id(), object_id());
    let order = app.order(&buyer, 20.5).await;
    let pay = json!({"token": "tok_visa", "orderId": order});

    let (status, body) = app.pay(None, &pay).await;
    assert_eq!((status, message(&body)), (401, "Not authorized"));
    let (status, body) = app.pay(Some(&app.cookie(&buyer)), &json!({})).await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["token", "orderId"], "{body}");
    let (status, _) = app
        .pay(
            Some(&app.cookie(&buyer)),
            &json!({"token": "tok_visa", "orderId": object_id()}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = app.pay(Some(&app.cookie(&other)), &pay).await;
    assert_eq!((status, message(&body)), (401, "Not authorized"));
    assert_eq!(provider.charges(), 0);

    let (status, body) = app.pay(Some(&app.cookie(&buyer)), &pay).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(body, json!({"id": id}));
    assert_eq!(provider.charges(), 1);
    let stripe_id = TestProvider::charge_id(&format!("charge-{order}-1"));
    assert_eq!(
        app.payments_of(&order).await,
        [(id.clone(), stripe_id.clone())]
    );
    let published = eventually("payment:created", || async {
        app.recorder
            .matching(PAYMENT_CREATED, "orderId", &order)
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        published.event["data"],
        json!({"id": id, "orderId": order, "stripeId": stripe_id})
    );

    // Paid once: a second payment is refused, and charges nothing.
    let (status, body) = app.pay(Some(&app.cookie(&buyer)), &pay).await;
    assert_eq!(
        (status, message(&body)),
        (400, "Order has already been paid")
    );
    assert_eq!(provider.charges(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_order_cannot_be_paid() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let buyer = object_id();
    let order = app.order(&buyer, 10.0).await;
    app.cancel(&order).await;
    let (status, body) = app
        .pay(
            Some(&app.cookie(&buyer)),
            &json!({"token": "tok_visa", "orderId": order}),
        )
        .await;
    assert_eq!(
        (status, message(&body)),
        (400, "Cannot pay for an cancelled order")
    );
    assert_eq!(provider.charges(), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_leaves_the_order_payable() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let buyer = object_id();
    let order = app.order(&buyer, 15.0).await;
    let cookie = app.cookie(&buyer);
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_chargeDeclined", "orderId": order}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"errors": [{"message": "Your card was declined."}]})
    );
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_nonsense", "orderId": order}),
        )
        .await;
    assert_eq!(
        (status, message(&body)),
        (400, "No such token: 'tok_nonsense'")
    );
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_visa", "orderId": order}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(provider.charges(), 1);
    assert_eq!(
        app.attempts_of(&order).await,
        [
            (1, "declined".to_string()),
            (2, "failed".to_string()),
            (3, "succeeded".to_string())
        ]
    );
    app.stop().await;
}

/// Eight requests for one order at once: one charge is held in flight while the seven
/// others are answered; exactly one is paid, charged once.
async fn concurrent_payments_charge_once(app: &Arc<App>, provider: &Arc<Gated>) {
    let buyer = object_id();
    let order = app.order(&buyer, 30.0).await;
    let pay = json!({"token": "tok_visa", "orderId": order});
    let charges_before = provider.inner.charges();
    let entered_before = provider.entered();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut requests = Vec::new();
    for _ in 0..8 {
        let (app, pay, cookie, answered) = (
            app.clone(),
            pay.clone(),
            app.cookie(&buyer),
            answered.clone(),
        );
        requests.push(tokio::spawn(async move {
            let answer = app.pay(Some(&cookie), &pay).await;
            answered.fetch_add(1, Ordering::SeqCst);
            answer
        }));
    }
    eventually("one charge in flight, seven answered", || async {
        (provider.entered() == entered_before + 1 && answered.load(Ordering::SeqCst) == 7)
            .then_some(())
    })
    .await;
    provider.open(1);
    let mut statuses = Vec::new();
    for request in requests {
        let (status, body) = request.await.expect("request");
        if status == 400 {
            assert_eq!(
                message(&body),
                "A payment for this order is already in progress"
            );
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 400, 400, 400, 400, 400, 400, 400]);
    assert_eq!(provider.entered(), entered_before + 1);
    assert_eq!(provider.inner.charges(), charges_before + 1);
    assert_eq!(app.payments_of(&order).await.len(), 1);
}

/// The order is cancelled (it expired) while its charge is in flight: the charge is
/// refunded and the request refused.
async fn a_cancellation_during_the_charge_refunds_it(app: &Arc<App>, provider: &Arc<Gated>) {
    let buyer = object_id();
    let order = app.order(&buyer, 12.0).await;
    let (charges_before, refunds_before) = (provider.inner.charges(), provider.inner.refunds());
    let entered_before = provider.entered();
    let paying = {
        let (app, cookie) = (app.clone(), app.cookie(&buyer));
        let pay = json!({"token": "tok_visa", "orderId": order});
        tokio::spawn(async move { app.pay(Some(&cookie), &pay).await })
    };
    eventually("the charge in flight", || async {
        (provider.entered() == entered_before + 1).then_some(())
    })
    .await;
    app.cancel(&order).await;
    provider.open(1);
    let (status, body) = paying.await.expect("request");
    assert_eq!(
        (status, message(&body)),
        (400, "Cannot pay for an cancelled order")
    );
    assert_eq!(provider.inner.charges(), charges_before + 1);
    assert_eq!(provider.inner.refunds(), refunds_before + 1);
    assert_eq!(app.attempts_of(&order).await, [(1, "refunded".to_string())]);
    assert!(app.payments_of(&order).await.is_empty());
}

async fn stop_shared(app: Arc<App>) {
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("a request still holds the app"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_of_one_order_charge_it_once() {
    let provider = Arc::new(Gated::default());
    let app = Arc::new(App::with(Provider::Given(provider.clone())).await);
    concurrent_payments_charge_once(&app, &provider).await;
    stop_shared(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_cancelled_during_its_charge_is_refunded() {
    let provider = Arc::new(Gated::default());
    let app = Arc::new(App::with(Provider::Given(provider.clone())).await);
    a_cancellation_during_the_charge_refunds_it(&app, &provider).await;
    stop_shared(app).await;
}

/// The same on PostgreSQL, where the claims really run at the same time on several
/// connections, and the settlement locks the order row against the cancellation.
/// Needs a server (`SWITCHYARD_TEST_POSTGRES_URL`, default
/// postgres://postgres@127.0.0.1:5432): skipped without one, a failure under `CI=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_one_payment_per_order_and_refunds_of_cancelled_orders() {
    let Some(database) = postgres::database_or_skip("payments").await else {
        return;
    };
    let provider = Arc::new(Gated::default());
    let app = Arc::new(App::on(Provider::Given(provider.clone()), Some(&database.url)).await);
    concurrent_payments_charge_once(&app, &provider).await;
    a_cancellation_during_the_charge_refunds_it(&app, &provider).await;
    // And the plain path: paid, then refused a second time.
    let buyer = object_id();
    let order = app.order(&buyer, 20.0).await;
    let pay = json!({"token": "tok_visa", "orderId": order});
    provider.open(1);
    let (status, body) = app.pay(Some(&app.cookie(&buyer)), &pay).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app.pay(Some(&app.cookie(&buyer)), &pay).await;
    assert_eq!(
        (status, message(&body)),
        (400, "Order has already been paid")
    );
    stop_shared(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_left_pending_by_a_crash_is_replayed_with_its_key_and_token() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let buyer = object_id();
    let (crashed, busy) = (app.order(&buyer, 25.0).await, app.order(&buyer, 25.0).await);
    // The crashed request's charge reached the provider; then the process died.
    let now = now_ms();
    let charge_id = app.crashed_attempt(&provider, &crashed, now - 1).await;
    app.pending_attempt(&busy, &format!("charge-{busy}-1"), now + 60_000)
        .await;
    let cookie = app.cookie(&buyer);
    // Its lease ran out: the next request replays it (with the stored token, whatever this
    // one brings), and finds the charge instead of making another.
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_mastercard", "orderId": crashed}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(provider.charges(), 1);
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(app.payments_of(&crashed).await, [(id, charge_id)]);
    assert_eq!(
        app.attempts_of(&crashed).await,
        [(1, "succeeded".to_string())]
    );
    // Within its lease, an attempt still belongs to its request.
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_visa", "orderId": busy}),
        )
        .await;
    assert_eq!(
        (status, message(&body)),
        (400, "A payment for this order is already in progress")
    );
    assert_eq!(provider.charges(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_left_pending_by_a_crash_is_settled_without_another_request() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let buyer = object_id();
    let order = app.order(&buyer, 25.0).await;
    // The request's charge reached the provider; then the process died, and the buyer
    // never asked again.
    let charge_id = app.crashed_attempt(&provider, &order, now_ms() - 1).await;
    // The background settler replays it with its key: the charge is found, not made again,
    // and becomes the order's payment.
    eventually("the stale attempt settled", || async {
        (app.attempts_of(&order).await == [(1, "succeeded".to_string())]).then_some(())
    })
    .await;
    assert_eq!(provider.charges(), 1);
    let payments = app.payments_of(&order).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].1, charge_id);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_lost_the_race_with_its_cancellation_is_refunded() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let buyer = object_id();
    let order = app.order(&buyer, 12.0).await;
    let (status, body) = app
        .pay(
            Some(&app.cookie(&buyer)),
            &json!({"token": "tok_visa", "orderId": order}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Its user cancelled the order at orders before orders saw the payment: the
    // cancellation comes after. (An expiry cannot: payments makes that verdict itself.)
    app.cancel(&order).await;
    eventually("the charge refunded", || async {
        (app.attempts_of(&order).await == [(1, "refunded".to_string())]).then_some(())
    })
    .await;
    assert_eq!((provider.charges(), provider.refunds()), (1, 1));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_applies_orders_in_version_order() {
    let app = App::with(Provider::Given(Arc::new(TestProvider::new()))).await;
    let order = app.order(&object_id(), 5.0).await;
    let cancelled = |version: i64, id: &str| {
        json!({
            "id": format!("evt-{id}"),
            "type": ORDER_CANCELLED,
            "data": {"id": order, "version": version, "ticket": {"id": "t"}},
        })
    };
    // A gap: deferred, and nothing changes.
    assert_eq!(app.deliver(&cancelled(3, "gap")).await, 425);
    // An order not known yet: deferred.
    let unknown = json!({
        "id": "evt-unknown",
        "type": ORDER_CANCELLED,
        "data": {"id": object_id(), "version": 1, "ticket": {"id": "t"}},
    });
    assert_eq!(app.deliver(&unknown).await, 425);
    assert_eq!(
        app.order_row(&order).await,
        Some(("created".to_string(), 0))
    );
    // The next version applies; redelivered, it changes nothing; an older one is ignored.
    assert_eq!(app.deliver(&cancelled(1, "v1")).await, 200);
    assert_eq!(
        app.order_row(&order).await,
        Some(("cancelled".to_string(), 1))
    );
    assert_eq!(app.deliver(&cancelled(1, "v1")).await, 200);
    assert_eq!(app.deliver(&cancelled(1, "v1-again")).await, 200);
    assert_eq!(
        app.order_row(&order).await,
        Some(("cancelled".to_string(), 1))
    );
    // The deferred event was not remembered as processed: it applies once its turn comes
    // (here it is older than the stored version 1 + 1, so it is a gap still).
    assert_eq!(app.deliver(&cancelled(3, "gap")).await, 425);
    // A malformed order event is refused.
    let malformed = json!({"type": ORDER_CREATED, "data": {"id": "o", "version": 0}});
    assert_eq!(app.deliver(&malformed).await, 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_4xx_never_a_5xx() {
    let app = App::with(Provider::Given(Arc::new(TestProvider::new()))).await;
    let buyer = object_id();
    let order = app.order(&buyer, 20.0).await;
    let cookie = app.cookie(&buyer);
    let url = format!("{}/api/payments", app.service.url());
    let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
    let big = format!(
        "{{\"token\": \"{}\", \"orderId\": \"{order}\"}}",
        "x".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", Vec::new()),
        ("application/json", b"{".to_vec()),
        ("application/json", b"null".to_vec()),
        ("application/json", b"[]".to_vec()),
        ("application/json", b"\"tok_visa\"".to_vec()),
        (
            "application/json",
            b"{\"token\": 1, \"orderId\": true}".to_vec(),
        ),
        (
            "application/json",
            b"{\"token\": {}, \"orderId\": []}".to_vec(),
        ),
        ("application/json", deep.into_bytes()),
        ("application/json", big.into_bytes()),
        ("application/json", vec![b'{', 0xff, 0xfe, b'}']),
        ("text/plain", b"token=tok_visa".to_vec()),
        (
            "application/x-www-form-urlencoded",
            format!("token=tok_visa&orderId={order}").into_bytes(),
        ),
        (
            "application/json",
            format!(
                "{{\"token\": \"tok_visa\", \"orderId\": \"{}\"}}",
                "9".repeat(65)
            )
            .into_bytes(),
        ),
        (
            "application/json",
            b"{\"token\": \"tok_visa\", \"orderId\": \"' OR 1=1 --\"}".to_vec(),
        ),
        (
            "application/json",
            "{\"token\": \"tok_visa\", \"orderId\": \"\u{1F39F}\u{FE0F}\"}"
                .as_bytes()
                .to_vec(),
        ),
        (
            "application/json",
            format!(
                "{{\"token\": \"{}\", \"orderId\": \"{order}\"}}",
                "t".repeat(256)
            )
            .into_bytes(),
        ),
        (
            "application/json",
            format!("{{\"token\": \"tok_\\u0000\", \"orderId\": \"{order}\"}}").into_bytes(),
        ),
    ];
    for (content_type, body) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(60)
            .collect::<String>();
        let answer = app
            .client
            .post(&url)
            .header("content-type", content_type)
            .header("cookie", &cookie)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = answer.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{content_type} {shown:?}: {status}"
        );
        let json: Value = answer.json().await.expect("a JSON error body");
        assert!(
            json["errors"][0]["message"].is_string(),
            "{shown:?}: {json}"
        );
    }
    // Other methods and routes answer JSON too.
    for (method, path) in [
        ("GET", "/api/payments"),
        ("DELETE", "/api/payments"),
        ("GET", "/api/payments/x"),
    ] {
        let answer = app
            .client
            .request(
                method.parse().expect("method"),
                format!("{}{path}", app.service.url()),
            )
            .send()
            .await
            .expect("request");
        let status = answer.status().as_u16();
        assert!((400..500).contains(&status), "{method} {path}: {status}");
        let json: Value = answer.json().await.expect("a JSON error body");
        assert!(json["errors"].is_array());
    }
    // None of it charged anything, and the order is still payable.
    let (status, _) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_visa", "orderId": order}),
        )
        .await;
    assert_eq!(status, 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_with_stripe_the_service_charges_through_it() {
    let key = "sk_test_service";
    let fake = FakeStripe::start(key).await;
    let app = App::with(Provider::Configured(ProviderConfig::stripe(key, &fake.url))).await;
    let buyer = object_id();
    let order = app.order(&buyer, 20.0).await;
    let cookie = app.cookie(&buyer);
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_chargeDeclined", "orderId": order}),
        )
        .await;
    assert_eq!((status, message(&body)), (400, "Your card was declined."));
    // One 500 on the way: retried with the same key, charged once.
    fake.fail_next(1);
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_visa", "orderId": order}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(fake.charges(), 1);
    let keys: Vec<String> = fake
        .seen()
        .into_iter()
        .filter_map(|s| s.idempotency_key)
        .collect();
    let (first, second) = (format!("charge-{order}-1"), format!("charge-{order}-2"));
    assert_eq!(keys, [first, second.clone(), second]);
    let amounts: Vec<Option<String>> = fake
        .seen()
        .into_iter()
        .map(|s| s.form.get("amount").cloned())
        .collect();
    assert!(
        amounts.iter().all(|a| a.as_deref() == Some("2000")),
        "{amounts:?}"
    );
    assert_eq!(app.payments_of(&order).await[0].1, "ch_fake_1");
    // An outage of the provider is a 503 the client may retry.
    fake.fail_next(usize::MAX);
    let other = app.order(&buyer, 20.0).await;
    let (status, _) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_visa", "orderId": other}),
        )
        .await;
    assert_eq!(status, 503);
    // Back up: the released attempt is replayed at once with its key.
    fake.fail_next(0);
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_visa", "orderId": other}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        app.attempts_of(&other).await,
        [(1, "succeeded".to_string())]
    );
    assert_eq!(fake.charges(), 2);
    app.stop().await;
}

fn expiration(order_id: &str) -> Value {
    json!({"id": format!("exp-{order_id}"), "type": EXPIRATION_COMPLETE, "data": {"orderId": order_id}})
}

async fn verdict_of(app: &App, order_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT verdict FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(app.db.reader())
        .await
        .expect("query")
}

/// Paid or expired is decided once, here: an expiry after a payment changes nothing, and a
/// payment after an expiry is refused before any charge; the expiry's verdict is published
/// as `payment:expired`, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_or_expired_is_decided_once_and_stays() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let buyer = object_id();
    let cookie = app.cookie(&buyer);
    let paid = app.order(&buyer, 20.0).await;
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_visa", "orderId": paid}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.deliver(&expiration(&paid)).await, 200);
    assert_eq!(verdict_of(&app, &paid).await.as_deref(), Some("paid"));
    let expired = app.order(&buyer, 20.0).await;
    assert_eq!(app.deliver(&expiration(&expired)).await, 200);
    assert_eq!(verdict_of(&app, &expired).await.as_deref(), Some("expired"));
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_visa", "orderId": expired}),
        )
        .await;
    assert_eq!(
        (status, message(&body)),
        (400, "Cannot pay for an expired order")
    );
    assert_eq!(provider.charges(), 1, "no charge for the expired order");
    let verdicts = eventually("payment:expired published", || async {
        let all = app.recorder.all();
        let expired_events: Vec<_> = all
            .iter()
            .filter(|r| r.event["type"] == PAYMENT_EXPIRED)
            .cloned()
            .collect();
        (!expired_events.is_empty()).then_some(expired_events)
    })
    .await;
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].event["data"]["orderId"], expired.as_str());
    app.stop().await;
}

/// An expiry that comes while the order's charge is being made waits for it: the charge
/// decides (here: paid), and the payment answered 201 stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_during_a_charge_waits_for_it() {
    let provider = Arc::new(Gated::default());
    let app = Arc::new(App::with(Provider::Given(provider.clone())).await);
    let buyer = object_id();
    let order = app.order(&buyer, 20.0).await;
    let paying = {
        let (app, cookie, order) = (app.clone(), app.cookie(&buyer), order.clone());
        tokio::spawn(async move {
            app.pay(
                Some(&cookie),
                &json!({"token": "tok_visa", "orderId": order}),
            )
            .await
        })
    };
    eventually("the charge in flight", || async {
        (provider.entered() == 1).then_some(())
    })
    .await;
    assert_eq!(
        app.deliver(&expiration(&order)).await,
        425,
        "not yet: the charge decides"
    );
    provider.open(1);
    let (status, body) = paying.await.expect("payment");
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.deliver(&expiration(&order)).await, 200);
    assert_eq!(verdict_of(&app, &order).await.as_deref(), Some("paid"));
    stop_shared(app).await;
}

/// No charge starts for an order within the margin (2 s) of its expiry, or past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_at_its_expiry_is_not_charged() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let buyer = object_id();
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let at = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let order = app.order_expiring(&buyer, 20.0, &at).await;
    let (status, body) = app
        .pay(
            Some(&app.cookie(&buyer)),
            &json!({"token": "tok_visa", "orderId": order}),
        )
        .await;
    assert_eq!(
        (status, message(&body)),
        (400, "Cannot pay for an expired order")
    );
    assert_eq!(provider.charges(), 0);
    app.stop().await;
}

/// At most five charge attempts per order (a card-testing oracle otherwise): the sixth
/// payment is refused before it reaches the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_has_at_most_five_attempts() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let buyer = object_id();
    let cookie = app.cookie(&buyer);
    let order = app.order(&buyer, 20.0).await;
    for _ in 0..5 {
        let (status, body) = app
            .pay(
                Some(&cookie),
                &json!({"token": "tok_chargeDeclined", "orderId": order}),
            )
            .await;
        assert_eq!((status, message(&body)), (400, "Your card was declined."));
    }
    let (status, body) = app
        .pay(
            Some(&cookie),
            &json!({"token": "tok_visa", "orderId": order}),
        )
        .await;
    assert_eq!(
        (status, message(&body)),
        (400, "Too many payment attempts for this order")
    );
    assert_eq!(provider.charges(), 0);
    app.stop().await;
}

/// An attempt left pending by a crash before its charge was made, for an order that has
/// closed since: the provider is asked first, finds nothing, and the attempt is closed
/// without charging (it used to be replayed, only to refund the charge it made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_of_a_closed_order_is_not_charged() {
    let provider = Arc::new(TestProvider::new());
    let app = App::with(Provider::Given(provider.clone())).await;
    let buyer = object_id();
    let order = app.order(&buyer, 25.0).await;
    app.pending_attempt(&order, &format!("charge-{order}-1"), now_ms() - 1)
        .await;
    app.cancel(&order).await;
    eventually("the stale attempt closed", || async {
        (app.attempts_of(&order).await == [(1, "abandoned".to_string())]).then_some(())
    })
    .await;
    assert_eq!((provider.charges(), provider.refunds()), (0, 0));
    app.stop().await;
}

/// An order whose expiration never arrives is closed unpaid by payments itself once it is
/// `EXPIRY_SWEEP_GRACE_SECONDS` past its expiry (here 0): `payment:expired` is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_expiration_is_lost_is_closed_by_the_sweeper() {
    let mut config = ProviderConfig::test();
    config.sweep_grace = std::time::Duration::ZERO;
    let app = App::with(Provider::Configured(config)).await;
    let buyer = object_id();
    let past = (time::OffsetDateTime::now_utc() - time::Duration::seconds(5))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let order = app.order_expiring(&buyer, 20.0, &past).await;
    let untouched = app.order(&buyer, 20.0).await;
    eventually("the sweeper's verdict", || async {
        (verdict_of(&app, &order).await.as_deref() == Some("expired")).then_some(())
    })
    .await;
    assert_eq!(verdict_of(&app, &untouched).await, None);
    eventually("payment:expired published", || async {
        app.recorder
            .all()
            .iter()
            .any(|r| {
                r.event["type"] == PAYMENT_EXPIRED && r.event["data"]["orderId"] == order.as_str()
            })
            .then_some(())
    })
    .await;
    app.stop().await;
}
