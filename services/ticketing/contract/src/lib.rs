//! The ticketing app's events, as the contract (`shared/spec/ticketing.md`) defines them:
//! the original's subjects and payloads, checked.
//!
//! | subject               | data                                                          |
//! |-----------------------|---------------------------------------------------------------|
//! | `ticket:created`      | `{id, version, title, price, userId}`                         |
//! | `ticket:updated`      | `{id, version, title, price, userId, orderId?}`               |
//! | `order:created`       | `{id, version, status, userId, expiresAt, ticket: {id, price}}` |
//! | `order:cancelled`     | `{id, version, ticket: {id}}`                                 |
//! | `expiration:complete` | `{orderId}`                                                   |
//! | `payment:created`     | `{id, orderId, stripeId}`                                     |
//! | `payment:expired`     | `{orderId}`                                                   |
//!
//! `payment:expired` is this implementation's: payments decides, in one transaction per
//! order, whether it was paid (`payment:created`) or its time ran out unpaid
//! (`payment:expired`), and orders cancels it on the latter. The course's services ignore it.

pub mod http;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_events::payload::{nested, number, object, optional_text, text, unsigned};
use switchyard_events::{Envelope, EnvelopeError};

pub use switchyard_events::PayloadError;

pub const TICKET_CREATED: &str = "ticket:created";
pub const TICKET_UPDATED: &str = "ticket:updated";
pub const ORDER_CREATED: &str = "order:created";
pub const ORDER_CANCELLED: &str = "order:cancelled";
pub const EXPIRATION_COMPLETE: &str = "expiration:complete";
pub const PAYMENT_CREATED: &str = "payment:created";
pub const PAYMENT_EXPIRED: &str = "payment:expired";

/// Every subject of the app.
pub const SUBJECTS: [&str; 7] = [
    TICKET_CREATED,
    TICKET_UPDATED,
    ORDER_CREATED,
    ORDER_CANCELLED,
    EXPIRATION_COMPLETE,
    PAYMENT_CREATED,
    PAYMENT_EXPIRED,
];

/// Longest id accepted in a payload.
pub const MAX_ID_LEN: usize = 64;
/// Longest ticket title (characters).
pub const MAX_TITLE_LEN: usize = 200;
/// Longest ISO 8601 time accepted.
const MAX_TIME_LEN: usize = 40;
/// Highest ticket price accepted: a charge is `price * 100` cents, and the provider takes
/// at most eight digits.
pub const MAX_PRICE: f64 = 999_999.99;
/// Lowest ticket price accepted for sale: the payment provider's smallest charge (Stripe's,
/// 0.50 USD); a cheaper ticket could be ordered but never paid.
pub const MIN_PRICE: f64 = 0.50;

/// An order's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum OrderStatus {
    /// Created, the ticket reserved, not paid yet.
    #[serde(rename = "created")]
    Created,
    /// Cancelled by its user, or expired: the ticket is free again.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// Being paid (the original's status; unused by its services).
    #[serde(rename = "awaiting:payment")]
    AwaitingPayment,
    /// Paid.
    #[serde(rename = "complete")]
    Complete,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::AwaitingPayment => "awaiting:payment",
            OrderStatus::Complete => "complete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "created" => Some(OrderStatus::Created),
            "cancelled" => Some(OrderStatus::Cancelled),
            "awaiting:payment" => Some(OrderStatus::AwaitingPayment),
            "complete" => Some(OrderStatus::Complete),
            _ => None,
        }
    }

    /// Whether an order in this status holds its ticket.
    pub fn reserves(self) -> bool {
        !matches!(self, OrderStatus::Cancelled)
    }
}

/// A ticketing event with a checked payload.
#[derive(Debug, Clone, PartialEq)]
pub enum TicketingEvent {
    TicketCreated {
        id: String,
        version: i64,
        title: String,
        price: f64,
        user_id: String,
    },
    TicketUpdated {
        id: String,
        version: i64,
        title: String,
        price: f64,
        user_id: String,
        order_id: Option<String>,
    },
    OrderCreated {
        id: String,
        version: i64,
        status: OrderStatus,
        user_id: String,
        /// ISO 8601 (RFC 3339) time.
        expires_at: String,
        ticket_id: String,
        ticket_price: f64,
    },
    OrderCancelled {
        id: String,
        version: i64,
        ticket_id: String,
    },
    ExpirationComplete {
        order_id: String,
    },
    PaymentCreated {
        id: String,
        order_id: String,
        stripe_id: String,
    },
    /// The order's time ran out unpaid: payments' verdict, final.
    PaymentExpired {
        order_id: String,
    },
}

fn price(data: &serde_json::Map<String, Value>) -> Result<f64, EnvelopeError> {
    let p = number(data, "price")?;
    if !(0.0..=MAX_PRICE).contains(&p) {
        return Err(EnvelopeError::WrongType {
            field: "price",
            expected: "number from 0 to 999999.99",
        });
    }
    Ok(p)
}

impl TicketingEvent {
    /// Reads a ticketing event. `Ok(None)` for a subject the app does not know; `Err` for a
    /// known subject whose payload is malformed.
    pub fn from_envelope(env: &Envelope) -> Result<Option<TicketingEvent>, PayloadError> {
        let Some(event_type) = SUBJECTS.iter().copied().find(|s| *s == env.event_type) else {
            return Ok(None);
        };
        let err = |source| PayloadError { event_type, source };
        let data = object(env, event_type)?;
        let id = |field| text(data, field, MAX_ID_LEN, false).map_err(err);
        let event = match event_type {
            TICKET_CREATED | TICKET_UPDATED => {
                let (id, version) = (id("id")?, unsigned(data, "version").map_err(err)?);
                let title = text(data, "title", MAX_TITLE_LEN, false).map_err(err)?;
                let price = price(data).map_err(err)?;
                let user_id = text(data, "userId", MAX_ID_LEN, false).map_err(err)?;
                if event_type == TICKET_CREATED {
                    TicketingEvent::TicketCreated {
                        id,
                        version,
                        title,
                        price,
                        user_id,
                    }
                } else {
                    TicketingEvent::TicketUpdated {
                        id,
                        version,
                        title,
                        price,
                        user_id,
                        order_id: optional_text(data, "orderId", MAX_ID_LEN).map_err(err)?,
                    }
                }
            }
            ORDER_CREATED => {
                let status_text = text(data, "status", 32, false).map_err(err)?;
                let status =
                    OrderStatus::parse(&status_text).ok_or(err(EnvelopeError::WrongType {
                        field: "status",
                        expected: "one of created, cancelled, awaiting:payment, complete",
                    }))?;
                let ticket = nested(data, "ticket").map_err(err)?;
                TicketingEvent::OrderCreated {
                    id: id("id")?,
                    version: unsigned(data, "version").map_err(err)?,
                    status,
                    user_id: id("userId")?,
                    expires_at: text(data, "expiresAt", MAX_TIME_LEN, false).map_err(err)?,
                    ticket_id: text(ticket, "id", MAX_ID_LEN, false)
                        .map_err(|_| err(EnvelopeError::Missing { field: "ticket.id" }))?,
                    ticket_price: price(ticket).map_err(|_| {
                        err(EnvelopeError::Missing {
                            field: "ticket.price",
                        })
                    })?,
                }
            }
            ORDER_CANCELLED => {
                let ticket = nested(data, "ticket").map_err(err)?;
                TicketingEvent::OrderCancelled {
                    id: id("id")?,
                    version: unsigned(data, "version").map_err(err)?,
                    ticket_id: text(ticket, "id", MAX_ID_LEN, false)
                        .map_err(|_| err(EnvelopeError::Missing { field: "ticket.id" }))?,
                }
            }
            EXPIRATION_COMPLETE => TicketingEvent::ExpirationComplete {
                order_id: id("orderId")?,
            },
            PAYMENT_CREATED => TicketingEvent::PaymentCreated {
                id: id("id")?,
                order_id: id("orderId")?,
                stripe_id: text(data, "stripeId", 255, false).map_err(err)?,
            },
            PAYMENT_EXPIRED => TicketingEvent::PaymentExpired {
                order_id: id("orderId")?,
            },
            // Only a subject of SUBJECTS gets here, and each has its arm above.
            _ => return Ok(None),
        };
        Ok(Some(event))
    }

    /// The event's subject.
    pub fn event_type(&self) -> &'static str {
        match self {
            TicketingEvent::TicketCreated { .. } => TICKET_CREATED,
            TicketingEvent::TicketUpdated { .. } => TICKET_UPDATED,
            TicketingEvent::OrderCreated { .. } => ORDER_CREATED,
            TicketingEvent::OrderCancelled { .. } => ORDER_CANCELLED,
            TicketingEvent::ExpirationComplete { .. } => EXPIRATION_COMPLETE,
            TicketingEvent::PaymentCreated { .. } => PAYMENT_CREATED,
            TicketingEvent::PaymentExpired { .. } => PAYMENT_EXPIRED,
        }
    }

    /// The contract's `data` payload.
    pub fn data(&self) -> Value {
        match self {
            TicketingEvent::TicketCreated {
                id,
                version,
                title,
                price,
                user_id,
            } => {
                json!({"id": id, "version": version, "title": title, "price": price, "userId": user_id})
            }
            TicketingEvent::TicketUpdated {
                id,
                version,
                title,
                price,
                user_id,
                order_id,
            } => {
                let mut v = json!({"id": id, "version": version, "title": title, "price": price, "userId": user_id});
                if let (Some(order_id), Some(map)) = (order_id, v.as_object_mut()) {
                    map.insert("orderId".into(), json!(order_id));
                }
                v
            }
            TicketingEvent::OrderCreated {
                id,
                version,
                status,
                user_id,
                expires_at,
                ticket_id,
                ticket_price,
            } => json!({
                "id": id,
                "version": version,
                "status": status.as_str(),
                "userId": user_id,
                "expiresAt": expires_at,
                "ticket": {"id": ticket_id, "price": ticket_price},
            }),
            TicketingEvent::OrderCancelled {
                id,
                version,
                ticket_id,
            } => json!({"id": id, "version": version, "ticket": {"id": ticket_id}}),
            TicketingEvent::ExpirationComplete { order_id } => json!({"orderId": order_id}),
            TicketingEvent::PaymentCreated {
                id,
                order_id,
                stripe_id,
            } => json!({"id": id, "orderId": order_id, "stripeId": stripe_id}),
            TicketingEvent::PaymentExpired { order_id } => json!({"orderId": order_id}),
        }
    }

    /// A new envelope for this event (fresh id, current time).
    pub fn into_envelope(self, correlation_id: Option<String>) -> Envelope {
        Envelope::new(self.event_type(), self.data()).with_correlation(correlation_id)
    }
}

/// The envelope field that marks a `ticket:updated` as the ticket's whole state
/// republished (tickets' reconciliation), not a step after the previous version: a replica
/// applies it whenever it is newer than what it holds, skipping lost versions.
pub const SNAPSHOT_FIELD: &str = "snapshot";

/// Whether `envelope` is a republished whole state ([`SNAPSHOT_FIELD`]).
pub fn is_snapshot(envelope: &Envelope) -> bool {
    envelope.extra.get(SNAPSHOT_FIELD) == Some(&Value::Bool(true))
}

/// Marks `envelope` as a republished whole state.
pub fn as_snapshot(mut envelope: Envelope) -> Envelope {
    envelope
        .extra
        .insert(SNAPSHOT_FIELD.to_string(), Value::Bool(true));
    envelope
}

/// Checks the payload of a known subject (the event bus refuses malformed ones).
pub fn check_payload(env: &Envelope) -> Result<(), PayloadError> {
    TicketingEvent::from_envelope(env).map(|_| ())
}

/// A new entity id: 24 lowercase hex characters (96 random bits), the shape of the
/// original's MongoDB ObjectIds, so clients that check ids keep working.
pub fn object_id() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut out = String::with_capacity(24);
    for b in &bytes[..12] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// Whether `id` has the shape of an entity id (24 hex characters), as the original's
/// `mongoose.Types.ObjectId.isValid` checks `ticketId`.
pub fn is_object_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A price as the API takes it: a JSON number (or numeric string, as a form sends it)
/// greater than 0, at most [`MAX_PRICE`], rounded to cents.
pub fn parse_price(value: Option<&Value>) -> Option<f64> {
    let p = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (p.is_finite() && p > 0.0 && p <= MAX_PRICE).then(|| (p * 100.0).round() / 100.0)
}

/// The amount a price is charged as: cents, `price * 100`.
pub fn cents(price: f64) -> i64 {
    // Prices are checked to at most MAX_PRICE and rounded to cents: exact in i64.
    (price * 100.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(event_type: &str, data: Value) -> Envelope {
        Envelope::new(event_type, data)
    }

    #[test]
    fn every_event_round_trips() {
        let events = [
            TicketingEvent::TicketCreated {
                id: object_id(),
                version: 0,
                title: "concert".into(),
                price: 20.5,
                user_id: "u".into(),
            },
            TicketingEvent::TicketUpdated {
                id: "t".into(),
                version: 2,
                title: "concert".into(),
                price: 20.0,
                user_id: "u".into(),
                order_id: Some("o".into()),
            },
            TicketingEvent::OrderCreated {
                id: "o".into(),
                version: 0,
                status: OrderStatus::Created,
                user_id: "u".into(),
                expires_at: "2026-12-01T00:15:00Z".into(),
                ticket_id: "t".into(),
                ticket_price: 20.0,
            },
            TicketingEvent::OrderCancelled {
                id: "o".into(),
                version: 1,
                ticket_id: "t".into(),
            },
            TicketingEvent::ExpirationComplete {
                order_id: "o".into(),
            },
            TicketingEvent::PaymentCreated {
                id: "p".into(),
                order_id: "o".into(),
                stripe_id: "ch_1".into(),
            },
            TicketingEvent::PaymentExpired {
                order_id: "o".into(),
            },
        ];
        assert_eq!(events.len(), SUBJECTS.len(), "one of each subject");
        for e in events {
            let envelope = e.clone().into_envelope(None);
            assert_eq!(TicketingEvent::from_envelope(&envelope), Ok(Some(e)));
        }
    }

    #[test]
    fn the_wire_payloads_are_the_originals() {
        let e = TicketingEvent::OrderCancelled {
            id: "o".into(),
            version: 1,
            ticket_id: "t".into(),
        };
        assert_eq!(
            e.data(),
            json!({"id": "o", "version": 1, "ticket": {"id": "t"}})
        );
        let updated = TicketingEvent::TicketUpdated {
            id: "t".into(),
            version: 1,
            title: "x".into(),
            price: 1.0,
            user_id: "u".into(),
            order_id: None,
        };
        assert!(updated.data().get("orderId").is_none());
    }

    #[test]
    fn malformed_payloads_name_the_field() {
        let e = env(
            ORDER_CREATED,
            json!({"id": "o", "version": 0, "status": "created", "userId": "u", "expiresAt": "x"}),
        );
        let err = TicketingEvent::from_envelope(&e).expect_err("no ticket");
        assert_eq!(err.field().as_deref(), Some("data.ticket"));
        let e = env(
            TICKET_UPDATED,
            json!({"id": "t", "version": -1, "title": "x", "price": 1, "userId": "u"}),
        );
        assert_eq!(
            TicketingEvent::from_envelope(&e)
                .expect_err("negative")
                .field()
                .as_deref(),
            Some("data.version")
        );
        let e = env(
            ORDER_CREATED,
            json!({"id": "o", "version": 0, "status": "maybe", "userId": "u", "expiresAt": "x", "ticket": {"id": "t", "price": 1}}),
        );
        assert!(TicketingEvent::from_envelope(&e).is_err());
        assert_eq!(
            TicketingEvent::from_envelope(&env("other", json!(1))),
            Ok(None)
        );
    }

    #[test]
    fn ids_prices_and_cents() {
        let id = object_id();
        assert!(is_object_id(&id));
        assert_ne!(id, object_id());
        assert!(!is_object_id("abc"));
        assert!(!is_object_id(&"g".repeat(24)));
        assert_eq!(parse_price(Some(&json!(10))), Some(10.0));
        assert_eq!(parse_price(Some(&json!("12.345"))), Some(12.35));
        for bad in [
            json!(0),
            json!(-1),
            json!("abc"),
            json!(null),
            json!(1e9),
            json!([1]),
        ] {
            assert_eq!(parse_price(Some(&bad)), None, "{bad}");
        }
        assert_eq!(parse_price(None), None);
        assert_eq!(cents(20.0), 2000);
        assert_eq!(cents(19.99), 1999);
        assert_eq!(cents(0.29), 29);
    }
}
