//! A local stand-in for the part of Stripe's API the stripe provider uses: `POST
//! /v1/charges` and `POST /v1/refunds`, form-encoded, with the secret key as a Bearer token,
//! and `GET /v1/charges/search` by the charge's `metadata[switchyard_key]`. It can forget
//! the idempotency keys it has seen ([`FakeStripe::forget_keys`]), as Stripe does after 24
//! hours.
//!
//! As Stripe: `tok_visa` (and the other succeeding test tokens) is charged,
//! `tok_chargeDeclined` answers 402 with a `card_error` / `card_declined` error object, an
//! unknown token 400 `invalid_request_error`; a repeated `Idempotency-Key` replays the first
//! answer (with `Idempotent-Replayed: true`) without charging again. It counts the real
//! charges and refunds, records every request, and can fail (500, before doing anything) or
//! answer late (after doing the work, as when an answer is lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::listener;

/// One request received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: &'static str,
    pub idempotency_key: Option<String>,
    pub form: HashMap<String, String>,
}

/// A charge made: what it was for, and whether it was refunded.
#[derive(Debug, Clone, Default)]
pub struct Charged {
    pub description: String,
    pub refunded: bool,
    /// Its `metadata[switchyard_key]`.
    pub key: Option<String>,
}

#[derive(Default)]
struct Inner {
    key: String,
    /// First answers by (path, idempotency key).
    answers: HashMap<(&'static str, String), (u16, Value)>,
    /// Charges by id: refunded or not, and the description they were made with.
    charges: HashMap<String, Charged>,
    charge_count: usize,
    refund_count: usize,
    /// Answer 500 to this many more requests, before doing anything.
    fail_next: usize,
    /// Answer this late, after doing the work.
    late: Option<Duration>,
    seen: Vec<Seen>,
}

/// The fake Stripe server.
#[derive(Clone)]
pub struct FakeStripe {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeStripe {
    /// Serves on a free port, accepting the secret key `key`.
    pub async fn start(key: &str) -> FakeStripe {
        let listener = listener(0).await;
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let inner = Arc::new(Mutex::new(Inner {
            key: key.to_string(),
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .route("/v1/charges", post(charges))
            .route("/v1/charges/search", get(search))
            .route("/v1/refunds", post(refunds))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe { url, inner }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("lock")
    }

    /// Charges made (replays not counted).
    pub fn charges(&self) -> usize {
        self.lock().charge_count
    }

    pub fn refunds(&self) -> usize {
        self.lock().refund_count
    }

    /// Every charge made (replays not counted), by charge id.
    pub fn charged(&self) -> HashMap<String, Charged> {
        self.lock().charges.clone()
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The next `n` requests fail with 500 before anything is done.
    /// Forgets every idempotency key seen (Stripe does after 24 hours): a repeated key is
    /// then a new request.
    pub fn forget_keys(&self) {
        self.lock().answers.clear();
    }

    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Answers `delay` after doing the work (`None`: at once).
    pub fn answer_late(&self, delay: Option<Duration>) {
        self.lock().late = delay;
    }
}

fn error(status: u16, kind: &str, code: &str, message: &str) -> (u16, Value) {
    let mut error = json!({"type": kind, "message": message});
    if !code.is_empty() {
        error["code"] = json!(code);
    }
    if code == "card_declined" {
        error["decline_code"] = json!("generic_decline");
    }
    (status, json!({ "error": error }))
}

/// The checks and replays both endpoints share, then `work` for a new request.
async fn handle(
    inner: &Mutex<Inner>,
    path: &'static str,
    headers: &HeaderMap,
    form: HashMap<String, String>,
    work: impl FnOnce(&mut Inner, &HashMap<String, String>) -> (u16, Value),
) -> Response {
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (answer, replayed, late) = {
        let mut state = inner.lock().expect("lock");
        state.seen.push(Seen {
            path,
            idempotency_key: idempotency_key.clone(),
            form: form.clone(),
        });
        let expected = format!("Bearer {}", state.key);
        let authorized = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected);
        if !authorized {
            let (status, body) = error(
                401,
                "invalid_request_error",
                "",
                "Invalid API Key provided: sk_test_********************1234",
            );
            return reply(status, body, false);
        }
        if state.fail_next > 0 {
            state.fail_next -= 1;
            let (status, body) = error(500, "api_error", "", "An unknown error occurred");
            return reply(status, body, false);
        }
        let remembered = idempotency_key
            .as_ref()
            .and_then(|k| state.answers.get(&(path, k.clone())).cloned());
        match remembered {
            Some(answer) => (answer, true, state.late),
            None => {
                let answer = work(&mut state, &form);
                if let Some(k) = &idempotency_key {
                    state.answers.insert((path, k.clone()), answer.clone());
                }
                (answer, false, state.late)
            }
        }
    };
    if let Some(delay) = late {
        tokio::time::sleep(delay).await;
    }
    reply(answer.0, answer.1, replayed)
}

fn reply(status: u16, body: Value, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).expect("status");
    let mut response = (status, axum::Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", "true".parse().expect("header"));
    }
    response
}

async fn charges(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    handle(&inner, "/v1/charges", &headers, form, |state, form| {
        let Some(amount) = form.get("amount").and_then(|a| a.parse::<i64>().ok()) else {
            return error(
                400,
                "invalid_request_error",
                "parameter_missing",
                "Missing required param: amount.",
            );
        };
        if amount < 50 {
            return error(
                400,
                "invalid_request_error",
                "amount_too_small",
                "Amount must be at least $0.50 usd",
            );
        }
        let source = form.get("source").cloned().unwrap_or_default();
        match source.as_str() {
            "tok_visa" | "tok_mastercard" | "tok_amex" | "tok_visa_debit" => {
                state.charge_count += 1;
                let id = format!("ch_fake_{}", state.charge_count);
                state.charges.insert(
                    id.clone(),
                    Charged {
                        description: form.get("description").cloned().unwrap_or_default(),
                        refunded: false,
                        key: form.get("metadata[switchyard_key]").cloned(),
                    },
                );
                (
                    200,
                    json!({
                        "id": id,
                        "object": "charge",
                        "amount": amount,
                        "currency": form.get("currency"),
                        "status": "succeeded",
                    }),
                )
            }
            "tok_chargeDeclined" => error(
                402,
                "card_error",
                "card_declined",
                "Your card was declined.",
            ),
            other => error(
                400,
                "invalid_request_error",
                "resource_missing",
                &format!("No such token: '{other}'"),
            ),
        }
    })
    .await
}

async fn refunds(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    handle(&inner, "/v1/refunds", &headers, form, |state, form| {
        let charge = form.get("charge").cloned().unwrap_or_default();
        match state.charges.get(&charge).map(|c| c.refunded) {
            None => error(
                404,
                "invalid_request_error",
                "resource_missing",
                &format!("No such charge: '{charge}'"),
            ),
            Some(true) => error(
                400,
                "invalid_request_error",
                "charge_already_refunded",
                &format!("Charge {charge} has already been refunded."),
            ),
            Some(false) => {
                if let Some(c) = state.charges.get_mut(&charge) {
                    c.refunded = true;
                }
                state.refund_count += 1;
                (
                    200,
                    json!({
                        "id": format!("re_fake_{}", state.refund_count),
                        "object": "refund",
                        "charge": charge,
                        "status": "succeeded",
                    }),
                )
            }
        }
    })
    .await
}

/// `GET /v1/charges/search?query=metadata['switchyard_key']:'<key>'`: the charges made with
/// that key (Stripe's search, for the one query the provider makes).
async fn search(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let state = inner.lock().expect("lock");
    let expected = format!("Bearer {}", state.key);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        let (status, body) = error(401, "invalid_request_error", "", "Invalid API Key provided");
        return reply(status, body, false);
    }
    let query = params.get("query").cloned().unwrap_or_default();
    let wanted = query
        .strip_prefix("metadata['switchyard_key']:'")
        .and_then(|rest| rest.strip_suffix('\''));
    let Some(wanted) = wanted else {
        let (status, body) = error(400, "invalid_request_error", "", "Unsupported search query");
        return reply(status, body, false);
    };
    let data: Vec<Value> = state
        .charges
        .iter()
        .filter(|(_, c)| c.key.as_deref() == Some(wanted))
        .map(|(id, c)| json!({"id": id, "object": "charge", "refunded": c.refunded}))
        .collect();
    reply(200, json!({"object": "search_result", "data": data}), false)
}
