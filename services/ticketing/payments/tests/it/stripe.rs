//! The stripe provider against a local server that speaks Stripe's API: form bodies, the
//! Bearer key, the error objects, idempotency keys replayed, retries that reuse the key.

use crate::support;

use std::time::{Duration, Instant};

use support::fake_stripe::FakeStripe;
use switchyard_payments::provider::{
    ChargeError, ChargeRequest, PaymentProvider, STRIPE_RETRIES, StripeProvider,
};

const KEY: &str = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc";

fn request(token: &str, key: &str) -> ChargeRequest {
    ChargeRequest {
        amount_cents: 2000,
        currency: "usd".into(),
        source: token.into(),
        idempotency_key: key.into(),
        description: "ticketing order o1".into(),
    }
}

async fn stripe() -> (FakeStripe, StripeProvider) {
    let fake = FakeStripe::start(KEY).await;
    let provider = StripeProvider::new(KEY, &fake.url, Duration::from_secs(5)).expect("provider");
    (fake, provider)
}

#[tokio::test]
async fn a_charge_posts_the_form_with_the_key_and_the_idempotency_key() {
    let (fake, stripe) = stripe().await;
    let charge = stripe
        .charge(request("tok_visa", "charge-o1-1"))
        .await
        .expect("charged");
    assert_eq!(charge.id, "ch_fake_1");
    assert_eq!(fake.charges(), 1);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/charges");
    assert_eq!(seen[0].idempotency_key.as_deref(), Some("charge-o1-1"));
    let form = &seen[0].form;
    assert_eq!(form.get("amount").map(String::as_str), Some("2000"));
    assert_eq!(form.get("currency").map(String::as_str), Some("usd"));
    assert_eq!(form.get("source").map(String::as_str), Some("tok_visa"));
    assert_eq!(
        form.get("description").map(String::as_str),
        Some("ticketing order o1")
    );
}

#[tokio::test]
async fn declines_and_unknown_tokens_carry_stripes_message() {
    let (fake, stripe) = stripe().await;
    assert_eq!(
        stripe.charge(request("tok_chargeDeclined", "k1")).await,
        Err(ChargeError::Declined("Your card was declined.".into()))
    );
    assert_eq!(
        stripe.charge(request("tok_bogus", "k2")).await,
        Err(ChargeError::Invalid("No such token: 'tok_bogus'".into()))
    );
    let mut small = request("tok_visa", "k3");
    small.amount_cents = 10;
    assert!(matches!(
        stripe.charge(small).await,
        Err(ChargeError::Invalid(m)) if m.contains("at least")
    ));
    assert_eq!(fake.charges(), 0);
    // Final answers: no retries.
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn a_repeated_idempotency_key_gets_the_first_answer_without_a_second_charge() {
    let (fake, stripe) = stripe().await;
    let first = stripe.charge(request("tok_visa", "charge-o1-1")).await;
    let again = stripe.charge(request("tok_visa", "charge-o1-1")).await;
    assert_eq!(first, again);
    assert_eq!(fake.charges(), 1);
    let other = stripe
        .charge(request("tok_visa", "charge-o1-2"))
        .await
        .expect("charged");
    assert_ne!(Ok(other), first);
    assert_eq!(fake.charges(), 2);
}

#[tokio::test]
async fn a_server_error_is_retried_with_the_same_key_and_charges_once() {
    let (fake, stripe) = stripe().await;
    fake.fail_next(1);
    let charge = stripe
        .charge(request("tok_visa", "charge-o1-1"))
        .await
        .expect("charged after a retry");
    assert_eq!(charge.id, "ch_fake_1");
    assert_eq!(fake.charges(), 1);
    let keys: Vec<Option<String>> = fake.seen().into_iter().map(|s| s.idempotency_key).collect();
    assert_eq!(keys, vec![Some("charge-o1-1".to_string()); 2]);
}

#[tokio::test]
async fn an_outage_ends_unavailable_after_the_retries() {
    let (fake, stripe) = stripe().await;
    fake.fail_next(usize::MAX);
    let answer = stripe.charge(request("tok_visa", "charge-o1-1")).await;
    assert!(
        matches!(answer, Err(ChargeError::Unavailable(_))),
        "{answer:?}"
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 1 + STRIPE_RETRIES as usize);
    assert!(
        seen.iter()
            .all(|s| s.idempotency_key.as_deref() == Some("charge-o1-1"))
    );
    assert_eq!(fake.charges(), 0);
    // Nobody listening at all: unavailable too.
    let closed = {
        let l = support::listener(0).await;
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let nowhere = StripeProvider::new(KEY, &closed, Duration::from_secs(1)).expect("provider");
    assert!(matches!(
        nowhere.charge(request("tok_visa", "k")).await,
        Err(ChargeError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_charge_whose_answer_was_lost_is_found_again_by_its_key() {
    let fake = FakeStripe::start(KEY).await;
    let stripe = StripeProvider::new(KEY, &fake.url, Duration::from_millis(200)).expect("provider");
    // Stripe charges, but every answer comes too late.
    fake.answer_late(Some(Duration::from_secs(2)));
    let started = Instant::now();
    let answer = stripe.charge(request("tok_visa", "charge-o1-1")).await;
    assert!(
        matches!(answer, Err(ChargeError::Unavailable(_))),
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        fake.charges(),
        1,
        "the retries replayed, never charged again"
    );
    // The attempt is replayed later with its key: the charge made is found.
    fake.answer_late(None);
    let charge = stripe
        .charge(request("tok_visa", "charge-o1-1"))
        .await
        .expect("found");
    assert_eq!(charge.id, "ch_fake_1");
    assert_eq!(fake.charges(), 1);
}

#[tokio::test]
async fn a_wrong_key_is_unavailable_and_never_shown() {
    let fake = FakeStripe::start(KEY).await;
    let stripe =
        StripeProvider::new("sk_test_wrong", &fake.url, Duration::from_secs(5)).expect("provider");
    match stripe.charge(request("tok_visa", "k")).await {
        Err(ChargeError::Unavailable(message)) => assert!(!message.contains("sk_"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.seen().len(), 1, "a refused key is not retried");
}

#[tokio::test]
async fn refunds_are_idempotent() {
    let (fake, stripe) = stripe().await;
    let charge = stripe
        .charge(request("tok_visa", "charge-o1-1"))
        .await
        .expect("charged");
    assert_eq!(stripe.refund(&charge.id, "refund-o1-1").await, Ok(()));
    assert_eq!(stripe.refund(&charge.id, "refund-o1-1").await, Ok(()));
    assert_eq!(fake.refunds(), 1);
    let refund = fake
        .seen()
        .into_iter()
        .find(|s| s.path == "/v1/refunds")
        .expect("refund");
    assert_eq!(refund.form.get("charge"), Some(&charge.id));
    assert!(matches!(
        stripe.refund(&charge.id, "another-key").await,
        Err(ChargeError::Invalid(m)) if m.contains("already been refunded")
    ));
    assert!(matches!(
        stripe.refund("ch_unknown", "refund-x").await,
        Err(ChargeError::Invalid(m)) if m.contains("No such charge")
    ));
}

/// Stripe forgets an idempotency key after 24 hours: a charge whose fate is unknown is
/// looked up by the key in its metadata, which Stripe keeps, before any replay.
#[tokio::test]
async fn a_charge_is_found_by_its_key_after_stripe_forgot_the_key() {
    let (fake, provider) = stripe().await;
    let charge = provider
        .charge(request("tok_visa", "charge-o1-1"))
        .await
        .expect("charged");
    fake.forget_keys();
    assert_eq!(
        provider.find_charge("charge-o1-1").await.expect("search"),
        Some(charge)
    );
    assert_eq!(
        provider.find_charge("charge-o2-1").await.expect("search"),
        None
    );
    assert_eq!(fake.charges(), 1);
}
