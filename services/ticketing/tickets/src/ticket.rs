//! A ticket as stored, as the API shows it, and as its events carry it.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use switchyard_events::Envelope;
use switchyard_ticketing_contract::http::TicketBody;
use switchyard_ticketing_contract::{
    OrderId, Price, TicketCreated, TicketId, TicketUpdated, TicketingEvent, UserId,
};

/// The columns [`Ticket::from_row`] reads, by name (a macro, so that queries stay
/// `&'static str` literals built with `concat!`).
macro_rules! ticket_columns {
    () => {
        "id, title, price, user_id, order_id, version"
    };
}
pub(crate) use ticket_columns;

/// One ticket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ticket {
    pub id: TicketId,
    pub title: String,
    pub price: Price,
    pub user_id: UserId,
    /// The order that reserves it, if any.
    pub order_id: Option<OrderId>,
    pub version: i64,
}

impl Ticket {
    /// Reads a row selected with [`ticket_columns`].
    pub fn from_row(row: &AnyRow) -> Result<Ticket, sqlx::Error> {
        Ok(Ticket {
            id: TicketId::from_string(row.try_get("id")?),
            title: row.try_get("title")?,
            price: row.try_get("price")?,
            user_id: UserId::from_string(row.try_get("user_id")?),
            order_id: row
                .try_get::<Option<String>, _>("order_id")?
                .map(OrderId::from_string),
            version: row.try_get("version")?,
        })
    }

    /// The ticket `id`, if it exists.
    pub async fn find(conn: &mut AnyConnection, id: &str) -> Result<Option<Ticket>, sqlx::Error> {
        sqlx::query(concat!(
            "SELECT ",
            ticket_columns!(),
            " FROM tickets WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(Ticket::from_row)
        .transpose()
    }

    /// The API's answer: `{id, title, price, userId, version}`, plus `orderId` while an
    /// order reserves it.
    pub fn to_body(&self) -> TicketBody {
        TicketBody {
            id: self.id.clone(),
            title: self.title.clone(),
            price: self.price,
            user_id: self.user_id.clone(),
            version: self.version,
            order_id: self.order_id.clone(),
        }
    }

    /// `ticket:created` for this ticket.
    pub fn created(&self, correlation_id: Option<String>) -> Envelope {
        TicketingEvent::from(TicketCreated {
            id: self.id.clone(),
            version: self.version,
            title: self.title.clone(),
            price: self.price,
            user_id: self.user_id.clone(),
        })
        .into_envelope(correlation_id)
    }

    /// `ticket:updated` for this ticket as it is now.
    pub fn updated(&self, correlation_id: Option<String>) -> Envelope {
        TicketingEvent::from(TicketUpdated {
            id: self.id.clone(),
            version: self.version,
            title: self.title.clone(),
            price: self.price,
            user_id: self.user_id.clone(),
            order_id: self.order_id.clone(),
        })
        .into_envelope(correlation_id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ticket(order_id: Option<&str>) -> Ticket {
        Ticket {
            id: "t".into(),
            title: "concert".into(),
            price: Price::from_cents(2000),
            user_id: "u".into(),
            order_id: order_id.map(OrderId::from),
            version: 3,
        }
    }

    #[test]
    fn order_id_shows_only_when_set() {
        let body = |t: Ticket| serde_json::to_value(t.to_body()).expect("json");
        assert_eq!(
            body(ticket(None)),
            json!({"id": "t", "title": "concert", "price": 20, "userId": "u", "version": 3})
        );
        assert_eq!(body(ticket(Some("o")))["orderId"], "o");
    }

    #[test]
    fn events_carry_the_contract_payload() {
        let created = ticket(None).created(None);
        assert_eq!(created.event_type, "ticket:created");
        assert_eq!(
            created.data,
            json!({"id": "t", "version": 3, "title": "concert", "price": 20, "userId": "u"})
        );
        let updated = ticket(Some("o")).updated(Some("r".into()));
        assert_eq!(updated.data["orderId"], "o");
        assert_eq!(updated.correlation_id.as_deref(), Some("r"));
        assert!(ticket(None).updated(None).data.get("orderId").is_none());
    }
}
