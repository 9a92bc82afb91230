//! Stripe's API: `POST /v1/charges` and `POST /v1/refunds`, form-encoded, with the secret
//! key as a Bearer token and an `Idempotency-Key` header; a charge carries its key in its
//! metadata too (`switchyard_key`), so that `GET /v1/charges/search` finds it after Stripe
//! has forgotten the key (24 hours).
//!
//! Stripe answers errors with `{"error": {"type", "code", "message", "decline_code"}}`:
//!
//! | answer | becomes |
//! |---|---|
//! | `card_error`, or 402 | [`ChargeError::Declined`] with Stripe's message (for the buyer) |
//! | 401, 403 | [`ChargeError::Unavailable`]: our key is wrong; logged, not shown to the buyer (Stripe's message quotes part of the key) |
//! | 409, 429, `idempotency_error` | retried: another call with the key is in progress, or rate limited |
//! | other 4xx | [`ChargeError::Invalid`] with Stripe's message |
//! | 5xx, timeouts, connection errors | retried |
//!
//! Retries (up to [`RETRIES`], with capped, jittered backoff) reuse the same idempotency key,
//! so a call that reached Stripe but whose answer was lost is answered, not made again; once
//! they are used up the call is [`ChargeError::Unavailable`]. An idempotency error is never
//! taken as a refusal: it means the key's first call may still succeed, and closing the
//! attempt on it could let a new attempt charge a second time.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use switchyard_kit::Backoff;

use super::{Charge, ChargeError, ChargeRequest, PaymentProvider};

/// Retries after the first call, each with the same idempotency key.
pub const RETRIES: u32 = 3;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Stripe, through its HTTP API.
pub struct StripeProvider {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl std::fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeProvider")
            .field("base", &self.base)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: StripeError,
}

#[derive(Deserialize, Default)]
struct StripeError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Found {
    #[serde(default)]
    data: Vec<Created>,
}

/// The metadata field a charge carries its idempotency key in.
pub const KEY_METADATA: &str = "switchyard_key";

/// What one call's failure means.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Retrying (with the same key) may work.
    Retry(String),
    /// The answer stands.
    Final(ChargeError),
}

impl StripeProvider {
    /// A client of the API at `base` (`https://api.stripe.com`), waiting at most `timeout`
    /// for each call.
    pub fn new(key: &str, base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(StripeProvider {
            client,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        })
    }

    /// Posts `form` to `path` with `idempotency_key`, retrying what may work later.
    async fn post(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<Created, ChargeError> {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut retries = 0;
        loop {
            match self.post_once(path, form, idempotency_key).await {
                Ok(created) => return Ok(created),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(why)) if retries < RETRIES => {
                    retries += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(%path, %idempotency_key, reason = %why, retry = retries, retry_in = ?delay, "Stripe call failed, retrying with the same idempotency key");
                    tokio::time::sleep(delay).await;
                }
                Err(Failure::Retry(why)) => {
                    tracing::warn!(%path, %idempotency_key, reason = %why, "Stripe call failed after retries");
                    return Err(ChargeError::Unavailable(why));
                }
            }
        }
    }

    async fn post_once(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<Created, Failure> {
        let answer = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await
            .map_err(|e| Failure::Retry(describe(e)))?;
        let status = answer.status().as_u16();
        let body = answer
            .bytes()
            .await
            .map_err(|e| Failure::Retry(describe(e)))?;
        if (200..300).contains(&status) {
            // A success whose body cannot be read: the charge may exist; the same key
            // tells Stripe to answer again instead of charging again.
            return serde_json::from_slice::<Created>(&body)
                .map_err(|e| Failure::Retry(format!("unreadable answer from Stripe: {e}")));
        }
        Err(classify(status, &body))
    }
}

/// A transport error without the request's URL or headers.
fn describe(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("Stripe {what}: {}", e.without_url())
}

/// What an error answer from Stripe means.
fn classify(status: u16, body: &[u8]) -> Failure {
    let error = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_default();
    let message = error
        .message
        .clone()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| format!("Stripe answered {status}"));
    if matches!(status, 401 | 403) {
        // Stripe's message quotes part of the key: logged here, never shown to a buyer.
        tracing::error!(status, "Stripe refused our credentials: check STRIPE_KEY");
        return Failure::Final(ChargeError::Unavailable(format!(
            "Stripe refused the credentials ({status})"
        )));
    }
    if status >= 500 || matches!(status, 409 | 429) || error.kind == "idempotency_error" {
        return Failure::Retry(format!("{status}: {message}"));
    }
    if status == 402 || error.kind == "card_error" {
        tracing::info!(
            code = error.code.as_deref().unwrap_or(""),
            decline_code = error.decline_code.as_deref().unwrap_or(""),
            "card declined"
        );
        return Failure::Final(ChargeError::Declined(message));
    }
    if (400..500).contains(&status) {
        return Failure::Final(ChargeError::Invalid(message));
    }
    Failure::Retry(format!("unexpected answer {status}"))
}

impl PaymentProvider for StripeProvider {
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, Result<Charge, ChargeError>> {
        Box::pin(async move {
            let metadata = format!("metadata[{KEY_METADATA}]");
            let form = [
                ("amount", request.amount_cents.to_string()),
                ("currency", request.currency),
                ("source", request.source),
                ("description", request.description),
                (metadata.as_str(), request.idempotency_key.clone()),
            ];
            let created = self
                .post("/v1/charges", &form, &request.idempotency_key)
                .await?;
            Ok(Charge { id: created.id })
        })
    }

    fn refund<'a>(
        &'a self,
        charge_id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<(), ChargeError>> {
        Box::pin(async move {
            let form = [("charge", charge_id.to_string())];
            self.post("/v1/refunds", &form, idempotency_key).await?;
            Ok(())
        })
    }

    fn find_charge<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Charge>, ChargeError>> {
        Box::pin(async move {
            // Keys are the service's own (`charge-<order>-<n>`): no quote to escape.
            let query = format!("metadata['{KEY_METADATA}']:'{idempotency_key}'");
            let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
            let mut retries = 0;
            loop {
                let answer = async {
                    let answer = self
                        .client
                        .get(format!("{}/v1/charges/search", self.base))
                        .bearer_auth(&self.key)
                        .query(&[("query", query.as_str())])
                        .send()
                        .await
                        .map_err(|e| Failure::Retry(describe(e)))?;
                    let status = answer.status().as_u16();
                    let body = answer
                        .bytes()
                        .await
                        .map_err(|e| Failure::Retry(describe(e)))?;
                    if (200..300).contains(&status) {
                        return serde_json::from_slice::<Found>(&body).map_err(|e| {
                            Failure::Retry(format!("unreadable answer from Stripe: {e}"))
                        });
                    }
                    Err(classify(status, &body))
                }
                .await;
                match answer {
                    Ok(found) => {
                        return Ok(found.data.into_iter().next().map(|c| Charge { id: c.id }));
                    }
                    Err(Failure::Final(e)) => return Err(e),
                    Err(Failure::Retry(why)) if retries < RETRIES => {
                        retries += 1;
                        tokio::time::sleep(backoff.next_delay()).await;
                        tracing::debug!(reason = %why, "looking up a charge failed, retrying");
                    }
                    Err(Failure::Retry(why)) => return Err(ChargeError::Unavailable(why)),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: &str, code: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": {"type": kind, "code": code, "message": message}
        }))
        .expect("json")
    }

    #[test]
    fn stripe_errors_are_mapped() {
        assert_eq!(
            classify(
                402,
                &error("card_error", "card_declined", "Your card was declined.")
            ),
            Failure::Final(ChargeError::Declined("Your card was declined.".into()))
        );
        // A card error is a decline whatever the status.
        assert_eq!(
            classify(
                400,
                &error(
                    "card_error",
                    "incorrect_cvc",
                    "Your card's security code is incorrect."
                )
            ),
            Failure::Final(ChargeError::Declined(
                "Your card's security code is incorrect.".into()
            ))
        );
        assert_eq!(
            classify(
                400,
                &error(
                    "invalid_request_error",
                    "resource_missing",
                    "No such token: 'tok_x'"
                )
            ),
            Failure::Final(ChargeError::Invalid("No such token: 'tok_x'".into()))
        );
        assert_eq!(
            classify(404, b"not json"),
            Failure::Final(ChargeError::Invalid("Stripe answered 404".into()))
        );
        for status in [500, 502, 503, 409, 429] {
            assert!(
                matches!(classify(status, b""), Failure::Retry(_)),
                "{status}"
            );
        }
        assert!(matches!(
            classify(
                400,
                &error(
                    "idempotency_error",
                    "",
                    "Keys for idempotent requests can only be used with the same parameters"
                )
            ),
            Failure::Retry(_)
        ));
    }

    #[test]
    fn a_refused_key_is_not_shown_to_the_buyer() {
        let answer = classify(
            401,
            &error(
                "invalid_request_error",
                "",
                "Invalid API Key provided: sk_test_****1234",
            ),
        );
        match answer {
            Failure::Final(ChargeError::Unavailable(m)) => assert!(!m.contains("sk_"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
