//! The test provider: no network, no money. Stripe's test tokens give Stripe's outcomes, so
//! the app behaves as against Stripe's test mode: `tok_visa`, `tok_mastercard`, `tok_amex`
//! and `tok_visa_debit` succeed, `tok_chargeDeclined` is declined, anything else is an
//! unknown token.
//!
//! As Stripe does, it answers a repeated idempotency key with the first answer. Charge ids
//! are derived from the key (UUID v5), so even a key forgotten by the bounded memory of
//! answers replays a success with the same id.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::{Charge, ChargeError, ChargeRequest, PaymentProvider};

/// The tokens whose charges succeed.
pub const SUCCEEDING_TOKENS: [&str; 4] =
    ["tok_visa", "tok_mastercard", "tok_amex", "tok_visa_debit"];
/// The token whose charges are declined.
pub const DECLINED_TOKEN: &str = "tok_chargeDeclined";
/// Stripe's smallest charge in USD.
const MIN_AMOUNT: i64 = 50;
/// Idempotency keys remembered (oldest forgotten first): bounds memory in a long run.
const REMEMBERED: usize = 100_000;

/// The namespace of the charge ids derived from idempotency keys.
const NAMESPACE: Uuid = Uuid::from_u128(0x7c1d_5e2a_9b4f_4c8e_a3d6_0f21_8e4b_6a95);

/// Simulated charges.
#[derive(Debug, Default)]
pub struct TestProvider {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    charges: Answers<Result<Charge, ChargeError>>,
    refunds: Answers<Result<(), ChargeError>>,
    /// Charges made and not refunded.
    live: HashSet<String>,
    refunded: HashSet<String>,
    charged: u64,
    refund_count: u64,
}

/// First answers by idempotency key, the oldest forgotten past [`REMEMBERED`].
#[derive(Debug)]
struct Answers<T> {
    by_key: HashMap<String, T>,
    order: VecDeque<String>,
}

impl<T> Default for Answers<T> {
    fn default() -> Self {
        Answers {
            by_key: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: Clone> Answers<T> {
    fn get(&self, key: &str) -> Option<T> {
        self.by_key.get(key).cloned()
    }

    fn remember(&mut self, key: &str, answer: T) {
        if self.by_key.insert(key.to_string(), answer).is_none() {
            self.order.push_back(key.to_string());
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }
}

impl TestProvider {
    pub fn new() -> Self {
        TestProvider::default()
    }

    /// Charges made (a replayed answer is not a charge).
    pub fn charges(&self) -> u64 {
        self.lock().charged
    }

    /// Refunds made (a replayed answer is not a refund).
    pub fn refunds(&self) -> u64 {
        self.lock().refund_count
    }

    /// The id of the charge made with `idempotency_key`.
    pub fn charge_id(idempotency_key: &str) -> String {
        format!(
            "ch_test_{}",
            Uuid::new_v5(&NAMESPACE, idempotency_key.as_bytes()).simple()
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn charge_now(&self, request: &ChargeRequest) -> Result<Charge, ChargeError> {
        let mut state = self.lock();
        if let Some(answer) = state.charges.get(&request.idempotency_key) {
            return answer;
        }
        let answer = if request.amount_cents < MIN_AMOUNT {
            Err(ChargeError::Invalid(
                "Amount must be at least 50 cents".to_string(),
            ))
        } else if SUCCEEDING_TOKENS.contains(&request.source.as_str()) {
            let id = TestProvider::charge_id(&request.idempotency_key);
            state.live.insert(id.clone());
            state.charged += 1;
            Ok(Charge { id })
        } else if request.source == DECLINED_TOKEN {
            Err(ChargeError::Declined("Your card was declined.".to_string()))
        } else {
            Err(ChargeError::Invalid(format!(
                "No such token: '{}'",
                request.source
            )))
        };
        state
            .charges
            .remember(&request.idempotency_key, answer.clone());
        answer
    }

    fn refund_now(&self, charge_id: &str, idempotency_key: &str) -> Result<(), ChargeError> {
        let mut state = self.lock();
        if let Some(answer) = state.refunds.get(idempotency_key) {
            return answer;
        }
        let answer = if state.refunded.contains(charge_id) {
            Err(ChargeError::Invalid(format!(
                "Charge {charge_id} has already been refunded."
            )))
        } else if state.live.remove(charge_id) {
            state.refunded.insert(charge_id.to_string());
            state.refund_count += 1;
            Ok(())
        } else {
            Err(ChargeError::Invalid(format!(
                "No such charge: '{charge_id}'"
            )))
        };
        state.refunds.remember(idempotency_key, answer.clone());
        answer
    }
}

impl PaymentProvider for TestProvider {
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, Result<Charge, ChargeError>> {
        Box::pin(async move { self.charge_now(&request) })
    }

    fn refund<'a>(
        &'a self,
        charge_id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<(), ChargeError>> {
        Box::pin(async move { self.refund_now(charge_id, idempotency_key) })
    }

    fn find_charge<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Charge>, ChargeError>> {
        Box::pin(async move {
            // A charge's id is derived from its key: made and not refunded, or refunded.
            let id = TestProvider::charge_id(idempotency_key);
            let state = self.lock();
            Ok((state.live.contains(&id) || state.refunded.contains(&id)).then_some(Charge { id }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str, key: &str) -> ChargeRequest {
        ChargeRequest {
            amount_cents: 2000,
            currency: "usd".into(),
            source: token.into(),
            idempotency_key: key.into(),
            description: "test".into(),
        }
    }

    #[tokio::test]
    async fn stripe_test_tokens_have_stripe_outcomes() {
        let p = TestProvider::new();
        for (n, token) in SUCCEEDING_TOKENS.iter().enumerate() {
            let charge = p
                .charge(request(token, &format!("k{n}")))
                .await
                .expect("charged");
            assert!(charge.id.starts_with("ch_"), "{charge:?}");
        }
        assert_eq!(
            p.charge(request("tok_chargeDeclined", "d")).await,
            Err(ChargeError::Declined("Your card was declined.".into()))
        );
        assert_eq!(
            p.charge(request("tok_nope", "n")).await,
            Err(ChargeError::Invalid("No such token: 'tok_nope'".into()))
        );
        let mut small = request("tok_visa", "small");
        small.amount_cents = 49;
        assert!(matches!(
            p.charge(small).await,
            Err(ChargeError::Invalid(_))
        ));
        assert_eq!(p.charges(), 4);
    }

    #[tokio::test]
    async fn a_repeated_key_replays_the_first_answer() {
        let p = TestProvider::new();
        let first = p.charge(request("tok_visa", "charge-o-1")).await;
        // Same key, whatever the token now: the first answer, and no second charge.
        assert_eq!(
            p.charge(request("tok_chargeDeclined", "charge-o-1")).await,
            first
        );
        assert_eq!(p.charges(), 1);
        assert_eq!(
            first.map(|c| c.id),
            Ok(TestProvider::charge_id("charge-o-1"))
        );
        let declined = p.charge(request("tok_chargeDeclined", "charge-o-2")).await;
        assert_eq!(p.charge(request("tok_visa", "charge-o-2")).await, declined);
        assert_eq!(p.charges(), 1);
        // Different keys, different charges.
        assert_ne!(TestProvider::charge_id("a"), TestProvider::charge_id("b"));
    }

    #[tokio::test]
    async fn refunds_are_idempotent_and_need_a_charge() {
        let p = TestProvider::new();
        let charge = p.charge(request("tok_visa", "c")).await.expect("charged");
        assert_eq!(p.refund(&charge.id, "refund-c").await, Ok(()));
        assert_eq!(p.refund(&charge.id, "refund-c").await, Ok(()));
        assert_eq!(p.refunds(), 1);
        assert!(matches!(
            p.refund(&charge.id, "another").await,
            Err(ChargeError::Invalid(_))
        ));
        assert!(matches!(
            p.refund("ch_unknown", "r").await,
            Err(ChargeError::Invalid(_))
        ));
    }

    #[test]
    fn old_answers_are_forgotten_past_the_bound() {
        let mut answers = Answers::default();
        for n in 0..REMEMBERED + 10 {
            answers.remember(&n.to_string(), n);
        }
        assert_eq!(answers.by_key.len(), REMEMBERED);
        assert_eq!(answers.get("0"), None);
        assert_eq!(
            answers.get(&(REMEMBERED + 9).to_string()),
            Some(REMEMBERED + 9)
        );
    }
}
