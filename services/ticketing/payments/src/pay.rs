//! Paying an order, at most once.
//!
//! A payment request first claims a **charge attempt**: a row of `charge_attempts`, numbered
//! per order, in status `pending`. A partial unique index admits one pending or succeeded
//! attempt per order, so of concurrent requests for one order exactly one claims it; the
//! others answer 400 while it is in flight, and "already paid" once it succeeded. The
//! charge is made outside any transaction, with the idempotency key
//! `charge-<orderId>-<attempt>`, and the attempt is then settled:
//!
//! * charged: the attempt succeeds, the payment is stored and `payment:created` committed,
//!   in one transaction (the order row is locked on PostgreSQL, so a cancellation applied
//!   concurrently comes strictly before or after);
//! * charged, but the order was cancelled meanwhile (it expired during the charge): the
//!   charge is refunded with the key `refund-<orderId>-<attempt>`, the attempt recorded as
//!   refunded, and the request answered "Cannot pay for an cancelled order";
//! * declined or refused as invalid: the attempt is closed with the provider's message and
//!   the order stays payable (the next request claims the next attempt number);
//! * the provider unavailable: nothing is known about the charge, so the attempt stays
//!   pending and is released; the next request replays it.
//!
//! A pending attempt belongs to its request for a grace period (its lease). A request that
//! finds one whose lease ran out (its request crashed, was cut off, or released it) takes it
//! over and replays it with its stored key, token and amount: the provider answers a
//! repeated key with the first answer, so a charge that went through is found, not made
//! again. Every settlement is conditional on the attempt still being pending, so two
//! requests settling the same attempt (a takeover racing a slow original) agree on one
//! outcome.

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use switchyard_bus_client::ServiceState;
use switchyard_kit::ApiError;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::db::is_unique_violation;
use switchyard_ticketing_contract::{
    OrderId, OrderStatus, PaymentCreated, PaymentId, TicketingEvent, object_id,
};

use crate::provider::{Charge, ChargeError, ChargeRequest, PaymentProvider};
use crate::verdict::{EXPIRED, PAID, lock_order};

/// What every order is charged in.
pub(crate) const CURRENCY: &str = "usd";

const PENDING: &str = "pending";
const SUCCEEDED: &str = "succeeded";
const DECLINED: &str = "declined";
const FAILED: &str = "failed";
const REFUNDED: &str = "refunded";
/// A charge attempt taken over for a closed order, whose charge was never made: closed
/// without charging.
const ABANDONED: &str = "abandoned";
/// A refund the provider refused for good: recorded and alarmed, not retried.
const REFUND_FAILED: &str = "refund_failed";
/// Longest provider message stored with a closed attempt.
const MAX_MESSAGE: usize = 500;

/// The order's live attempt (at most one: the partial unique index).
const LIVE_ATTEMPT: &str = "SELECT attempt, status, lease_until, idempotency_key, token, amount_cents, currency, charge_id FROM charge_attempts WHERE order_id = $1 AND status IN ('pending', 'succeeded')";
/// The order's pending attempt, the same columns.
const PENDING_ATTEMPT: &str = "SELECT attempt, status, lease_until, idempotency_key, token, amount_cents, currency, charge_id FROM charge_attempts WHERE order_id = $1 AND status = 'pending'";

/// What paying needs: the database and outbox, the provider, the lease of an attempt.
#[derive(Clone)]
pub(crate) struct Payments {
    pub service: ServiceState,
    pub provider: Arc<dyn PaymentProvider>,
    pub grace: Duration,
    /// A payment is refused once its order is this close to its expiry.
    pub expiry_margin: Duration,
    /// Charge attempts one order may have.
    pub max_attempts: i64,
}

/// How a payment request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Paid: the payment's id.
    Paid(String),
    AlreadyPaid,
    /// Another request is paying the order right now.
    InProgress,
    Cancelled,
    /// Past (or too close to) its expiry: no charge is started.
    Expired,
    /// The order has had its most charge attempts.
    TooManyAttempts,
    /// Declined or refused by the provider, with its message.
    Refused(String),
    /// The provider could not be reached.
    Unavailable,
}

/// A charge attempt as stored.
#[derive(Debug, Clone)]
struct Attempt {
    order_id: String,
    number: i64,
    key: String,
    token: String,
    amount_cents: i64,
    currency: String,
    /// Set when the charge is known to exist but is not settled (its refund is due).
    charge_id: Option<String>,
    /// Taken over from a request that did not settle it: whether its charge was made is
    /// unknown, so the provider is asked before it is replayed.
    replay: bool,
}

struct Order {
    user_id: String,
    price_cents: i64,
    status: String,
    /// Payments' verdict, once made ([`crate::verdict`]).
    verdict: Option<String>,
    /// Its expiry, in milliseconds.
    expires_at: Option<i64>,
}

impl Order {
    /// Closed unpaid: cancelled by its user, or expired.
    fn closed(&self) -> bool {
        self.status == OrderStatus::Cancelled.as_str() || self.verdict.as_deref() == Some(EXPIRED)
    }
}

enum Claim {
    Paid,
    InProgress,
    /// Closed unpaid meanwhile.
    Closed,
    /// The order has had its most attempts.
    TooMany,
    /// A new attempt of this request.
    Fresh(Attempt),
    /// A pending attempt whose lease ran out, taken over.
    Stale(Attempt),
}

impl Payments {
    /// Pays `order_id` for `user_id` with the card `token`. 404 unknown order, 401 another
    /// user's; the other answers are [`Outcome`]s.
    pub async fn pay(
        &self,
        order_id: &str,
        user_id: &str,
        token: &str,
        correlation: Option<String>,
    ) -> Result<Outcome, ApiError> {
        // A stale attempt replayed and declined leaves the order payable: one more round,
        // with this request's own token.
        for _ in 0..2 {
            let order = self
                .order(order_id)
                .await?
                .ok_or_else(|| ApiError::not_found("Not Found"))?;
            if order.user_id != user_id {
                return Err(ApiError::unauthorized());
            }
            if order.closed() {
                // A charge left pending by a crash may have gone through: settling it now
                // refunds it (and one never made is closed without charging).
                if let Some(stale) = self.take_over_pending(order_id).await? {
                    self.run(stale, &correlation).await?;
                }
                return Ok(if order.status == OrderStatus::Cancelled.as_str() {
                    Outcome::Cancelled
                } else {
                    Outcome::Expired
                });
            }
            if order.verdict.as_deref() == Some(PAID) {
                return Ok(Outcome::AlreadyPaid);
            }
            // No charge starts for an order at (or too near) its expiry: its expiration
            // may be decided any moment, and a charge only to refund it helps nobody.
            let margin = i64::try_from(self.expiry_margin.as_millis()).unwrap_or(i64::MAX);
            if order
                .expires_at
                .is_some_and(|at| unix_millis().saturating_add(margin) >= at)
            {
                return Ok(Outcome::Expired);
            }
            match self.claim(order_id, &order, token).await? {
                Claim::Paid => return Ok(Outcome::AlreadyPaid),
                Claim::InProgress => return Ok(Outcome::InProgress),
                Claim::Closed => return Ok(Outcome::Expired),
                Claim::TooMany => return Ok(Outcome::TooManyAttempts),
                Claim::Fresh(attempt) => return self.run(attempt, &correlation).await,
                Claim::Stale(attempt) => match self.run(attempt, &correlation).await? {
                    Outcome::Refused(_) => continue,
                    other => return Ok(other),
                },
            }
        }
        Ok(Outcome::InProgress)
    }

    async fn order(&self, id: &str) -> Result<Option<Order>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT user_id, price_cents, status, verdict, expires_at FROM orders WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.service.db.reader())
        .await?;
        row.map(|r| {
            Ok(Order {
                user_id: r.try_get("user_id")?,
                price_cents: r.try_get("price_cents")?,
                status: r.try_get("status")?,
                verdict: r.try_get("verdict")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    fn grace_ms(&self) -> i64 {
        i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX)
    }

    /// Claims the order's attempt for this request: a new one, or a pending one whose
    /// lease ran out.
    async fn claim(&self, order_id: &str, order: &Order, token: &str) -> Result<Claim, ApiError> {
        let now = unix_millis();
        let mut tx = self.service.db.pool().begin().await?;
        // The verdict, read under the order's lock: an expiry decided meanwhile stops the
        // claim, and an expiry decided after it sees the attempt and waits for it.
        match lock_order(&mut tx, self.service.db.dialect(), order_id).await? {
            Some((_, Some(verdict))) if verdict == EXPIRED => {
                tx.rollback().await?;
                return Ok(Claim::Closed);
            }
            _ => {}
        }
        let paid = sqlx::query("SELECT 1 FROM payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if paid {
            tx.rollback().await?;
            return Ok(Claim::Paid);
        }
        let live = sqlx::query(LIVE_ATTEMPT)
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = live {
            let status: String = row.try_get("status")?;
            if status == SUCCEEDED {
                tx.rollback().await?;
                return Ok(Claim::Paid);
            }
            let taken = self.take_over(&mut tx, order_id, &row, now).await?;
            tx.commit().await?;
            return Ok(taken.map_or(Claim::InProgress, Claim::Stale));
        }
        let number: i64 = sqlx::query(
            "SELECT COALESCE(MAX(attempt), 0) + 1 FROM charge_attempts WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if number > self.max_attempts {
            tx.rollback().await?;
            return Ok(Claim::TooMany);
        }
        let attempt = Attempt {
            order_id: order_id.to_string(),
            number,
            key: format!("charge-{order_id}-{number}"),
            token: token.to_string(),
            amount_cents: order.price_cents,
            currency: CURRENCY.to_string(),
            charge_id: None,
            replay: false,
        };
        let inserted = sqlx::query(
            "INSERT INTO charge_attempts (order_id, attempt, status, idempotency_key, token, amount_cents, currency, lease_until, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(order_id)
        .bind(number)
        .bind(PENDING)
        .bind(&attempt.key)
        .bind(&attempt.token)
        .bind(attempt.amount_cents)
        .bind(&attempt.currency)
        .bind(now.saturating_add(self.grace_ms()))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Another request claimed an attempt for the order first (PostgreSQL; SQLite's
            // single writer serializes the claims, and the second finds the first's row).
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                return Ok(Claim::InProgress);
            }
            Err(e) => return Err(e.into()),
        }
        match tx.commit().await {
            Ok(()) => Ok(Claim::Fresh(attempt)),
            Err(e) if is_unique_violation(&e) => Ok(Claim::InProgress),
            Err(e) => Err(e.into()),
        }
    }

    /// Settles every attempt left pending past its lease (its request crashed or gave up):
    /// replayed with its key, so a charge that went through becomes the order's payment,
    /// or is refunded if the order was cancelled meanwhile, without waiting for another
    /// request for the order that may never come. Returns how many were settled.
    pub async fn settle_stale(&self) -> Result<usize, ApiError> {
        // Oldest first: none waits behind newer ones for ever.
        let orders: Vec<String> = sqlx::query(
            "SELECT order_id FROM charge_attempts WHERE status = 'pending' AND lease_until <= $1 GROUP BY order_id ORDER BY MIN(created_at) LIMIT 100",
        )
        .bind(unix_millis())
        .fetch_all(self.service.db.pool())
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
        let mut settled = 0;
        for order_id in orders {
            if let Some(stale) = self.take_over_pending(&order_id).await? {
                self.run(stale, &None).await?;
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// The pending attempt of an order, if its lease ran out (taken over).
    async fn take_over_pending(&self, order_id: &str) -> Result<Option<Attempt>, ApiError> {
        let now = unix_millis();
        let mut tx = self.service.db.pool().begin().await?;
        let pending = sqlx::query(PENDING_ATTEMPT)
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
        let taken = match pending {
            Some(row) => self.take_over(&mut tx, order_id, &row, now).await?,
            None => None,
        };
        tx.commit().await?;
        Ok(taken)
    }

    /// Takes the pending attempt `row` over if its lease ran out and no one else took it
    /// meanwhile (the lease it read is part of the condition).
    async fn take_over(
        &self,
        conn: &mut AnyConnection,
        order_id: &str,
        row: &AnyRow,
        now: i64,
    ) -> Result<Option<Attempt>, sqlx::Error> {
        let lease_until: i64 = row.try_get("lease_until")?;
        if lease_until > now {
            return Ok(None);
        }
        let attempt = Attempt {
            order_id: order_id.to_string(),
            number: row.try_get("attempt")?,
            key: row.try_get("idempotency_key")?,
            token: row.try_get("token")?,
            amount_cents: row.try_get("amount_cents")?,
            currency: row.try_get("currency")?,
            charge_id: row.try_get("charge_id")?,
            replay: true,
        };
        let taken = sqlx::query(
            "UPDATE charge_attempts SET lease_until = $1, updated_at = $2 WHERE order_id = $3 AND attempt = $4 AND status = $5 AND lease_until = $6",
        )
        .bind(now.saturating_add(self.grace_ms()))
        .bind(now)
        .bind(order_id)
        .bind(attempt.number)
        .bind(PENDING)
        .bind(lease_until)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if taken == 0 {
            return Ok(None);
        }
        tracing::warn!(%order_id, attempt = attempt.number, "replaying a charge attempt left pending");
        Ok(Some(attempt))
    }

    /// Makes (or replays) the attempt's charge and settles the attempt.
    async fn run(
        &self,
        attempt: Attempt,
        correlation: &Option<String>,
    ) -> Result<Outcome, ApiError> {
        let result = match &attempt.charge_id {
            // Charged already; the order was cancelled before it was settled.
            Some(id) => Ok(Charge { id: id.clone() }),
            // Whether this attempt's charge was made is unknown: the provider is asked
            // first (it forgets a key after 24 hours, after which a replay would charge
            // again), and a charge never made is not made for an order now closed.
            None if attempt.replay => match self.provider.find_charge(&attempt.key).await {
                Ok(Some(charge)) => Ok(charge),
                Ok(None) if self.order_closed(&attempt.order_id).await? => {
                    return self
                        .close(
                            &attempt,
                            ABANDONED,
                            "the order closed before its charge was made".into(),
                        )
                        .await
                        .map(|_| Outcome::Cancelled);
                }
                Ok(None) => self.charge(&attempt).await,
                Err(e) => Err(e),
            },
            None => self.charge(&attempt).await,
        };
        self.settle(attempt, result, correlation).await
    }

    /// Whether the order is closed unpaid (cancelled, or expired).
    async fn order_closed(&self, order_id: &str) -> Result<bool, sqlx::Error> {
        Ok(self.order(order_id).await?.is_some_and(|o| o.closed()))
    }

    /// Makes the attempt's charge (or has its first answer replayed, by its key).
    async fn charge(&self, attempt: &Attempt) -> Result<Charge, ChargeError> {
        self.provider
            .charge(ChargeRequest {
                amount_cents: attempt.amount_cents,
                currency: attempt.currency.clone(),
                source: attempt.token.clone(),
                idempotency_key: attempt.key.clone(),
                description: format!("ticketing order {}", attempt.order_id),
            })
            .await
    }

    /// Settles the attempt with the provider's answer.
    async fn settle(
        &self,
        attempt: Attempt,
        result: Result<Charge, ChargeError>,
        correlation: &Option<String>,
    ) -> Result<Outcome, ApiError> {
        match result {
            Ok(charge) => self.charged(&attempt, charge, correlation).await,
            Err(ChargeError::Declined(message)) => self.close(&attempt, DECLINED, message).await,
            Err(ChargeError::Invalid(message)) => self.close(&attempt, FAILED, message).await,
            Err(ChargeError::Unavailable(why)) => {
                tracing::warn!(order_id = %attempt.order_id, attempt = attempt.number, reason = %why, "payment provider unavailable; the next payment request replays the attempt with its key");
                self.release(&attempt).await?;
                Ok(Outcome::Unavailable)
            }
        }
    }

    /// Settles a charge made: the payment, or a refund if the order was cancelled meanwhile.
    async fn charged(
        &self,
        attempt: &Attempt,
        charge: Charge,
        correlation: &Option<String>,
    ) -> Result<Outcome, ApiError> {
        let mut change = self.service.outbox.begin().await?;
        // The order's row, locked (PostgreSQL; SQLite's change holds the one writer): its
        // cancellation or its expiry's verdict comes strictly before or after this.
        let order = lock_order(&mut change, self.service.db.dialect(), &attempt.order_id).await?;
        let closed = order.as_ref().is_some_and(|(status, verdict)| {
            status == OrderStatus::Cancelled.as_str() || verdict.as_deref() == Some(EXPIRED)
        });
        let now = unix_millis();
        if closed {
            // The charge is recorded first: if the refund does not happen now, the next
            // request for the order finds the charge and refunds it.
            sqlx::query(
                "UPDATE charge_attempts SET charge_id = $1, updated_at = $2 WHERE order_id = $3 AND attempt = $4 AND status = $5",
            )
            .bind(&charge.id)
            .bind(now)
            .bind(&attempt.order_id)
            .bind(attempt.number)
            .bind(PENDING)
            .execute(&mut *change)
            .await?;
            change.commit().await?;
            self.refund(attempt, &charge.id).await?;
            return Ok(Outcome::Cancelled);
        }
        let settled = sqlx::query(
            "UPDATE charge_attempts SET status = $1, charge_id = $2, token = '', lease_until = 0, updated_at = $3 WHERE order_id = $4 AND attempt = $5 AND status = $6",
        )
        .bind(SUCCEEDED)
        .bind(&charge.id)
        .bind(now)
        .bind(&attempt.order_id)
        .bind(attempt.number)
        .bind(PENDING)
        .execute(&mut *change)
        .await?
        .rows_affected();
        if settled == 0 {
            change.rollback().await?;
            return self.settled_elsewhere(attempt).await;
        }
        // The verdict: paid. An expiry that comes after finds it and changes nothing.
        sqlx::query("UPDATE orders SET verdict = $1 WHERE id = $2 AND verdict IS NULL")
            .bind(PAID)
            .bind(&attempt.order_id)
            .execute(&mut *change)
            .await?;
        let id = object_id();
        sqlx::query(
            "INSERT INTO payments (id, order_id, stripe_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(&attempt.order_id)
        .bind(&charge.id)
        .bind(now)
        .execute(&mut *change)
        .await?;
        let event = TicketingEvent::from(PaymentCreated {
            id: PaymentId::from(id.clone()),
            order_id: OrderId::from(attempt.order_id.clone()),
            stripe_id: charge.id.clone(),
        })
        .into_envelope(correlation.clone());
        change.publish(&event).await?;
        change.commit().await?;
        tracing::info!(order_id = %attempt.order_id, payment_id = %id, attempt = attempt.number, "order paid");
        Ok(Outcome::Paid(id))
    }

    /// Refunds the attempt's charge (its order was cancelled); on failure the attempt stays
    /// pending, released, and the next request for the order tries again.
    async fn refund(&self, attempt: &Attempt, charge_id: &str) -> Result<(), ApiError> {
        let key = format!("refund-{}-{}", attempt.order_id, attempt.number);
        match self.provider.refund(charge_id, &key).await {
            Ok(()) => {
                sqlx::query(
                    "UPDATE charge_attempts SET status = $1, token = '', lease_until = 0, updated_at = $2 WHERE order_id = $3 AND attempt = $4 AND status = $5",
                )
                .bind(REFUNDED)
                .bind(unix_millis())
                .bind(&attempt.order_id)
                .bind(attempt.number)
                .bind(PENDING)
                .execute(self.service.db.pool())
                .await?;
                tracing::info!(order_id = %attempt.order_id, attempt = attempt.number, "the order was cancelled during its payment: charge refunded");
            }
            Err(ChargeError::Unavailable(why)) => {
                tracing::warn!(order_id = %attempt.order_id, attempt = attempt.number, reason = %why, "could not refund the charge of a closed order now; the settler tries again");
                self.release(attempt).await?;
            }
            Err(e) => {
                // The provider refused the refund for good: retrying cannot help. Recorded
                // on the attempt and raised, for someone to settle by hand.
                let message: String = e.to_string().chars().take(MAX_MESSAGE).collect();
                sqlx::query(
                    "UPDATE charge_attempts SET status = $1, message = $2, token = '', lease_until = 0, updated_at = $3 WHERE order_id = $4 AND attempt = $5 AND status = $6",
                )
                .bind(REFUND_FAILED)
                .bind(&message)
                .bind(unix_millis())
                .bind(&attempt.order_id)
                .bind(attempt.number)
                .bind(PENDING)
                .execute(self.service.db.pool())
                .await?;
                self.service.metrics.alarm("refund_failed");
                tracing::error!(order_id = %attempt.order_id, attempt = attempt.number, charge_id, error = %message, "the provider refused to refund the charge of a closed order: settle it by hand");
            }
        }
        Ok(())
    }

    /// Closes the attempt as `status` (declined, failed) with the provider's `message`.
    async fn close(
        &self,
        attempt: &Attempt,
        status: &str,
        message: String,
    ) -> Result<Outcome, ApiError> {
        let stored: String = message.chars().take(MAX_MESSAGE).collect();
        let closed = sqlx::query(
            "UPDATE charge_attempts SET status = $1, message = $2, token = '', lease_until = 0, updated_at = $3 WHERE order_id = $4 AND attempt = $5 AND status = $6",
        )
        .bind(status)
        .bind(&stored)
        .bind(unix_millis())
        .bind(&attempt.order_id)
        .bind(attempt.number)
        .bind(PENDING)
        .execute(self.service.db.pool())
        .await?
        .rows_affected();
        if closed == 0 {
            return self.settled_elsewhere(attempt).await;
        }
        Ok(Outcome::Refused(stored))
    }

    /// Ends this request's lease of a pending attempt: the next request replays it at once.
    async fn release(&self, attempt: &Attempt) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE charge_attempts SET lease_until = 0, updated_at = $1 WHERE order_id = $2 AND attempt = $3 AND status = $4",
        )
        .bind(unix_millis())
        .bind(&attempt.order_id)
        .bind(attempt.number)
        .bind(PENDING)
        .execute(self.service.db.pool())
        .await?;
        Ok(())
    }

    /// The outcome of an attempt another request settled first (a takeover racing a slow
    /// original): both answer the same.
    async fn settled_elsewhere(&self, attempt: &Attempt) -> Result<Outcome, ApiError> {
        let row = sqlx::query(
            "SELECT status, message FROM charge_attempts WHERE order_id = $1 AND attempt = $2",
        )
        .bind(&attempt.order_id)
        .bind(attempt.number)
        .fetch_one(self.service.db.pool())
        .await?;
        let status: String = row.try_get("status")?;
        let message: Option<String> = row.try_get("message")?;
        Ok(match status.as_str() {
            SUCCEEDED => {
                let payment: Option<String> =
                    sqlx::query("SELECT id FROM payments WHERE order_id = $1")
                        .bind(&attempt.order_id)
                        .fetch_optional(self.service.db.pool())
                        .await?
                        .map(|row| row.try_get(0))
                        .transpose()?;
                payment.map_or(Outcome::AlreadyPaid, Outcome::Paid)
            }
            DECLINED | FAILED => Outcome::Refused(message.unwrap_or_default()),
            REFUNDED => Outcome::Cancelled,
            _ => Outcome::InProgress,
        })
    }
}
