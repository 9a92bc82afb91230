//! An order as stored and as the API shows it, with its ticket from the replica.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use switchyard_ticketing_contract::http::{OrderBody, OrderTicket};
use switchyard_ticketing_contract::{OrderId, OrderStatus, Price, TicketId, UserId};
use time::OffsetDateTime;

/// The columns [`Order::from_row`] reads, by name, from `orders o JOIN tickets t` (a
/// macro, so that queries stay `&'static str` literals built with `concat!`). The ticket's
/// title and price are the ones the order was placed at (orders from before they were kept
/// show the replica's).
macro_rules! order_columns {
    () => {
        "o.id AS id, o.user_id AS user_id, o.status AS status, o.expires_at AS expires_at, \
         o.version AS version, t.id AS ticket_id, COALESCE(o.ticket_title, t.title) AS ticket_title, \
         COALESCE(o.ticket_price, t.price) AS ticket_price, t.version AS ticket_version"
    };
}
pub(crate) use order_columns;

/// A ticket as the orders service knows it: its replica.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ticket {
    pub id: TicketId,
    pub title: String,
    pub price: Price,
    pub version: i64,
}

impl Ticket {
    /// The replica of ticket `id`, if it has arrived.
    pub async fn find(conn: &mut AnyConnection, id: &str) -> Result<Option<Ticket>, sqlx::Error> {
        let row = sqlx::query("SELECT id, title, price, version FROM tickets WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
        row.map(|row| {
            Ok(Ticket {
                id: TicketId::from_string(row.try_get("id")?),
                title: row.try_get("title")?,
                price: row.try_get("price")?,
                version: row.try_get("version")?,
            })
        })
        .transpose()
    }

    /// `{id, title, price, version}`, as an order embeds it.
    pub fn to_body(&self) -> OrderTicket {
        OrderTicket {
            id: self.id.clone(),
            title: self.title.clone(),
            price: self.price,
            version: self.version,
        }
    }
}

/// One order with its ticket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub status: OrderStatus,
    /// RFC 3339, UTC, milliseconds (`2026-01-01T00:15:00.000Z`, as JavaScript writes it).
    pub expires_at: String,
    pub version: i64,
    pub ticket: Ticket,
}

impl Order {
    /// Reads a row selected with [`order_columns`].
    pub fn from_row(row: &AnyRow) -> Result<Order, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let status = OrderStatus::parse(&status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown order status {status:?} in the database").into())
        })?;
        Ok(Order {
            id: OrderId::from_string(row.try_get("id")?),
            user_id: UserId::from_string(row.try_get("user_id")?),
            status,
            expires_at: row.try_get("expires_at")?,
            version: row.try_get("version")?,
            ticket: Ticket {
                id: TicketId::from_string(row.try_get("ticket_id")?),
                title: row.try_get("ticket_title")?,
                price: row.try_get("ticket_price")?,
                version: row.try_get("ticket_version")?,
            },
        })
    }

    /// The order `id`, if it exists.
    pub async fn find(conn: &mut AnyConnection, id: &str) -> Result<Option<Order>, sqlx::Error> {
        sqlx::query(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders o JOIN tickets t ON t.id = o.ticket_id WHERE o.id = $1"
        ))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(Order::from_row)
        .transpose()
    }

    /// The API's answer: `{id, userId, status, expiresAt, ticket, version}`.
    pub fn to_body(&self) -> OrderBody {
        OrderBody {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            status: self.status,
            expires_at: self.expires_at.clone(),
            ticket: self.ticket.to_body(),
            version: self.version,
        }
    }
}

/// `now + window` as RFC 3339 in UTC with milliseconds, the shape of JavaScript's
/// `toISOString()` that the original's clients and the expiration service parse; `None`
/// past the calendar's end (the configured window is bounded far below that).
pub(crate) fn expires_at(now: OffsetDateTime, window: Duration) -> Option<String> {
    let at = now.checked_add(time::Duration::try_from(window).ok()?)?;
    let at = at.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&at.year()) {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn expiry_is_written_as_javascript_writes_it() {
        let now =
            OffsetDateTime::from_unix_timestamp_nanos(1_767_225_600_123_456_789).expect("time");
        assert_eq!(
            expires_at(now, Duration::from_secs(900)).as_deref(),
            Some("2026-01-01T00:15:00.123Z")
        );
        let parsed = OffsetDateTime::parse(
            &expires_at(now, Duration::from_secs(1)).expect("time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339");
        assert_eq!(parsed.unix_timestamp(), 1_767_225_601);
        assert_eq!(expires_at(now, Duration::from_secs(u64::MAX)), None);
    }

    #[test]
    fn an_order_shows_its_ticket() {
        let order = Order {
            id: "o".into(),
            user_id: "u".into(),
            status: OrderStatus::AwaitingPayment,
            expires_at: "2026-01-01T00:15:00.000Z".into(),
            version: 2,
            ticket: Ticket {
                id: "t".into(),
                title: "concert".into(),
                price: Price::from_cents(2000),
                version: 1,
            },
        };
        assert_eq!(
            serde_json::to_value(order.to_body()).expect("json"),
            json!({
                "id": "o",
                "userId": "u",
                "status": "awaiting:payment",
                "expiresAt": "2026-01-01T00:15:00.000Z",
                "ticket": {"id": "t", "title": "concert", "price": 20, "version": 1},
                "version": 2,
            })
        );
    }
}
