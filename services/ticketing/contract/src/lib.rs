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
mod money;

pub use money::Price;

switchyard_events::id_type!(
    /// A ticket's id (24 hexadecimal digits when this implementation made it).
    pub TicketId
);
switchyard_events::id_type!(
    /// An order's id.
    pub OrderId
);
switchyard_events::id_type!(
    /// A user's id, as the session names it.
    pub UserId
);
switchyard_events::id_type!(
    /// A payment's id.
    pub PaymentId
);

impl TicketId {
    /// A new ticket's id: an entity id ([`object_id`]).
    pub fn generate() -> TicketId {
        TicketId(object_id())
    }
}

impl OrderId {
    /// A new order's id: an entity id ([`object_id`]).
    pub fn generate() -> OrderId {
        OrderId(object_id())
    }
}

impl PaymentId {
    /// A new payment's id: an entity id ([`object_id`]).
    pub fn generate() -> PaymentId {
        PaymentId(object_id())
    }
}

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_events::payload::{nested, number, object, optional_text, text, unsigned};
use switchyard_events::{Envelope, EnvelopeError, EventDoc};

pub use switchyard_events::PayloadError;

pub const TICKET_CREATED: &str = TicketCreated::NAME;
pub const TICKET_UPDATED: &str = TicketUpdated::NAME;
pub const ORDER_CREATED: &str = OrderCreated::NAME;
pub const ORDER_CANCELLED: &str = OrderCancelled::NAME;
pub const EXPIRATION_COMPLETE: &str = ExpirationComplete::NAME;
pub const PAYMENT_CREATED: &str = PaymentCreated::NAME;
pub const PAYMENT_EXPIRED: &str = PaymentExpired::NAME;

/// Longest id accepted in a payload.
pub const MAX_ID_LEN: usize = 64;
/// Longest ticket title (characters).
pub const MAX_TITLE_LEN: usize = 200;
/// Longest ISO 8601 time accepted.
const MAX_TIME_LEN: usize = 40;
/// Highest ticket price accepted: a charge is `price * 100` cents, and the provider takes
/// at most eight digits.
pub const MAX_PRICE: f64 = 999_999.99;

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

/// An event of the contract: a payload type and the subject it travels on. The type is
/// the one wire shape of its event: services build it to publish, consumers get it from
/// [`TicketingEvent::from_envelope`], and the AsyncAPI document takes its schema from it.
pub trait ContractEvent: Serialize + utoipa::ToSchema + Into<TicketingEvent> {
    /// The subject.
    const NAME: &'static str;
}

/// `ticket:created`: a ticket was put up for sale (tickets publishes; orders keeps a
/// replica).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketCreated {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub id: TicketId,
    /// 0 for a new ticket; each update adds one.
    #[schema(minimum = 0)]
    pub version: i64,
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    #[schema(value_type = f64, minimum = 0, maximum = 999999.99)]
    pub price: Price,
    /// The seller.
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub user_id: UserId,
}

/// `ticket:updated`: a ticket's title or price changed, or an order reserved or released
/// it (`orderId` is the order holding it, absent when none does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketUpdated {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub id: TicketId,
    /// One more than the version it follows.
    #[schema(minimum = 0)]
    pub version: i64,
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    #[schema(value_type = f64, minimum = 0, maximum = 999999.99)]
    pub price: Price,
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64)]
    pub order_id: Option<OrderId>,
}

/// The ticket an order reserves, with the price it was ordered at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderedTicket {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub id: TicketId,
    #[schema(value_type = f64, minimum = 0, maximum = 999999.99)]
    pub price: Price,
}

/// The ticket an order released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TicketRef {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub id: TicketId,
}

/// `order:created`: a user ordered a ticket, reserved until `expiresAt` unless paid
/// (orders publishes; tickets reserves, expiration starts a timer, payments keeps a
/// replica).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub id: OrderId,
    #[schema(minimum = 0)]
    pub version: i64,
    #[schema(inline)]
    pub status: OrderStatus,
    /// The buyer.
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub user_id: UserId,
    /// ISO 8601 (RFC 3339) time.
    #[schema(min_length = 1, max_length = 40)]
    pub expires_at: String,
    #[schema(inline)]
    pub ticket: OrderedTicket,
}

/// `order:cancelled`: an order was cancelled by its user or ran out of time unpaid; its
/// ticket is free again (orders publishes; tickets releases, payments closes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub id: OrderId,
    #[schema(minimum = 0)]
    pub version: i64,
    #[schema(inline)]
    pub ticket: TicketRef,
}

/// `expiration:complete`: an order's time to pay is over (expiration publishes; payments
/// decides whether it was paid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpirationComplete {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub order_id: OrderId,
}

/// `payment:created`: an order was paid, for good (payments publishes; orders completes
/// the order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCreated {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub id: PaymentId,
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub order_id: OrderId,
    /// The provider's charge id.
    #[schema(min_length = 1, max_length = 255)]
    pub stripe_id: String,
}

/// `payment:expired`: an order's time ran out unpaid, payments' final verdict (payments
/// publishes; orders cancels the order). This implementation's: the course's services
/// ignore it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentExpired {
    #[schema(value_type = String, min_length = 1, max_length = 64)]
    pub order_id: OrderId,
}

/// A ticketing event with a checked payload: one variant per subject, each holding its
/// payload type. Consumers match it without a wildcard arm, so a new event makes every
/// consumer decide about it.
#[derive(Debug, Clone, PartialEq)]
pub enum TicketingEvent {
    TicketCreated(TicketCreated),
    TicketUpdated(TicketUpdated),
    OrderCreated(OrderCreated),
    OrderCancelled(OrderCancelled),
    ExpirationComplete(ExpirationComplete),
    PaymentCreated(PaymentCreated),
    PaymentExpired(PaymentExpired),
}

/// Implements [`ContractEvent`] and the conversion into [`TicketingEvent`] for each
/// payload type, and lists the subjects in [`SUBJECTS`] and the documents in
/// [`event_docs`], from one list.
macro_rules! contract_events {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        $(
            impl ContractEvent for $variant {
                const NAME: &'static str = $name;
            }
            impl From<$variant> for TicketingEvent {
                fn from(event: $variant) -> Self {
                    TicketingEvent::$variant(event)
                }
            }
        )+

        /// Every subject of the app.
        pub const SUBJECTS: &[&str] = &[$($name),+];

        /// Every event's subject and payload schema, for the app's AsyncAPI document.
        pub fn event_docs() -> Vec<EventDoc> {
            vec![$(EventDoc::of::<$variant>($name)),+]
        }

        impl TicketingEvent {
            /// The event's subject.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(TicketingEvent::$variant(_) => $name,)+
                }
            }

            /// The contract's `data` payload.
            pub fn data(&self) -> Value {
                match self {
                    $(TicketingEvent::$variant(event) => payload(event),)+
                }
            }
        }
    };
}

contract_events! {
    TicketCreated => "ticket:created",
    TicketUpdated => "ticket:updated",
    OrderCreated => "order:created",
    OrderCancelled => "order:cancelled",
    ExpirationComplete => "expiration:complete",
    PaymentCreated => "payment:created",
    PaymentExpired => "payment:expired",
}

fn price(data: &serde_json::Map<String, Value>) -> Result<Price, EnvelopeError> {
    let p = number(data, "price")?;
    Price::from_number(p).ok_or(EnvelopeError::WrongType {
        field: "price",
        expected: "number from 0 to 999999.99",
    })
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
        let ticket_id = |field| id(field).map(TicketId::from_string);
        let order_id = |field| id(field).map(OrderId::from_string);
        let user_id = |field| id(field).map(UserId::from_string);
        let event = match event_type {
            TICKET_CREATED | TICKET_UPDATED => {
                let id = ticket_id("id")?;
                let version = unsigned(data, "version").map_err(err)?;
                let title = text(data, "title", MAX_TITLE_LEN, false).map_err(err)?;
                let price = price(data).map_err(err)?;
                let user_id = user_id("userId")?;
                if event_type == TICKET_CREATED {
                    TicketCreated {
                        id,
                        version,
                        title,
                        price,
                        user_id,
                    }
                    .into()
                } else {
                    TicketUpdated {
                        id,
                        version,
                        title,
                        price,
                        user_id,
                        order_id: optional_text(data, "orderId", MAX_ID_LEN)
                            .map_err(err)?
                            .map(OrderId::from_string),
                    }
                    .into()
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
                OrderCreated {
                    id: order_id("id")?,
                    version: unsigned(data, "version").map_err(err)?,
                    status,
                    user_id: user_id("userId")?,
                    expires_at: text(data, "expiresAt", MAX_TIME_LEN, false).map_err(err)?,
                    ticket: OrderedTicket {
                        id: text(ticket, "id", MAX_ID_LEN, false)
                            .map(TicketId::from_string)
                            .map_err(|_| err(EnvelopeError::Missing { field: "ticket.id" }))?,
                        price: price(ticket).map_err(|_| {
                            err(EnvelopeError::Missing {
                                field: "ticket.price",
                            })
                        })?,
                    },
                }
                .into()
            }
            ORDER_CANCELLED => {
                let ticket = nested(data, "ticket").map_err(err)?;
                OrderCancelled {
                    id: order_id("id")?,
                    version: unsigned(data, "version").map_err(err)?,
                    ticket: TicketRef {
                        id: text(ticket, "id", MAX_ID_LEN, false)
                            .map(TicketId::from_string)
                            .map_err(|_| err(EnvelopeError::Missing { field: "ticket.id" }))?,
                    },
                }
                .into()
            }
            EXPIRATION_COMPLETE => ExpirationComplete {
                order_id: order_id("orderId")?,
            }
            .into(),
            PAYMENT_CREATED => PaymentCreated {
                id: id("id").map(PaymentId::from_string)?,
                order_id: order_id("orderId")?,
                stripe_id: text(data, "stripeId", 255, false).map_err(err)?,
            }
            .into(),
            PAYMENT_EXPIRED => PaymentExpired {
                order_id: order_id("orderId")?,
            }
            .into(),
            // Only a subject of SUBJECTS gets here, and each has its arm above (the
            // round-trip test decodes one of each).
            _ => return Ok(None),
        };
        Ok(Some(event))
    }

    /// A new envelope for this event (fresh id, current time).
    pub fn into_envelope(self, correlation_id: Option<String>) -> Envelope {
        Envelope::new(self.event_type(), self.data()).with_correlation(correlation_id)
    }
}

/// An event's `data`: its payload type as JSON.
fn payload<E: Serialize>(event: &E) -> Value {
    // Plain structs of strings and numbers (prices are finite): serialising cannot fail.
    serde_json::to_value(event).expect("a contract payload serialises to JSON")
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(event_type: &str, data: Value) -> Envelope {
        Envelope::new(event_type, data)
    }

    fn one_of_each() -> Vec<TicketingEvent> {
        vec![
            TicketCreated {
                id: TicketId::generate(),
                version: 0,
                title: "concert".into(),
                price: Price::from_cents(2050),
                user_id: "u".into(),
            }
            .into(),
            TicketUpdated {
                id: "t".into(),
                version: 2,
                title: "concert".into(),
                price: Price::from_cents(2000),
                user_id: "u".into(),
                order_id: Some("o".into()),
            }
            .into(),
            OrderCreated {
                id: "o".into(),
                version: 0,
                status: OrderStatus::Created,
                user_id: "u".into(),
                expires_at: "2026-12-01T00:15:00Z".into(),
                ticket: OrderedTicket {
                    id: "t".into(),
                    price: Price::from_cents(2000),
                },
            }
            .into(),
            OrderCancelled {
                id: "o".into(),
                version: 1,
                ticket: TicketRef { id: "t".into() },
            }
            .into(),
            ExpirationComplete {
                order_id: "o".into(),
            }
            .into(),
            PaymentCreated {
                id: "p".into(),
                order_id: "o".into(),
                stripe_id: "ch_1".into(),
            }
            .into(),
            PaymentExpired {
                order_id: "o".into(),
            }
            .into(),
        ]
    }

    #[test]
    fn every_event_round_trips() {
        let events = one_of_each();
        let subjects: Vec<&str> = events.iter().map(TicketingEvent::event_type).collect();
        assert_eq!(subjects, SUBJECTS, "one of each subject");
        for e in events {
            let envelope = e.clone().into_envelope(None);
            assert_eq!(TicketingEvent::from_envelope(&envelope), Ok(Some(e)));
        }
    }

    #[test]
    fn the_wire_payloads_are_the_originals() {
        let e = TicketingEvent::from(OrderCancelled {
            id: "o".into(),
            version: 1,
            ticket: TicketRef { id: "t".into() },
        });
        assert_eq!(
            serde_json::to_string(&e.data()).expect("json"),
            r#"{"id":"o","version":1,"ticket":{"id":"t"}}"#
        );
        let created = one_of_each().remove(2);
        assert_eq!(
            serde_json::to_string(&created.data()).expect("json"),
            r#"{"id":"o","version":0,"status":"created","userId":"u","expiresAt":"2026-12-01T00:15:00Z","ticket":{"id":"t","price":20}}"#
        );
        let updated = TicketingEvent::from(TicketUpdated {
            id: "t".into(),
            version: 1,
            title: "x".into(),
            price: Price::from_cents(100),
            user_id: "u".into(),
            order_id: None,
        });
        assert!(updated.data().get("orderId").is_none());
    }

    #[test]
    fn every_event_is_documented_with_its_payload_schema() {
        let docs = event_docs();
        let names: Vec<&str> = docs.iter().map(|d| d.name).collect();
        assert_eq!(names, SUBJECTS);
        let created = &docs[2];
        assert_eq!(created.message, "OrderCreated");
        let properties = &created.payload["properties"];
        for field in ["id", "version", "status", "userId", "expiresAt", "ticket"] {
            assert!(properties.get(field).is_some(), "{field}: {properties}");
        }
        assert_eq!(
            properties["ticket"]["properties"]["price"]["type"],
            "number"
        );
        assert!(
            created.payload["description"]
                .as_str()
                .is_some_and(|d| d.contains("order:created")),
            "{}",
            created.payload
        );
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
    fn ids() {
        let id = object_id();
        assert!(is_object_id(&id));
        assert_ne!(id, object_id());
        assert!(!is_object_id("abc"));
        assert!(!is_object_id(&"g".repeat(24)));
    }
}
