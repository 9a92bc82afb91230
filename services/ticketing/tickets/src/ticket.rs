//! A ticket as stored, as the API shows it, and as its events carry it.

use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use switchyard_events::Envelope;
use switchyard_ticketing_contract::{TicketCreated, TicketUpdated, TicketingEvent};

/// The columns [`Ticket::from_row`] reads, in its order (a macro, so that queries stay
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
    pub id: String,
    pub title: String,
    pub price: f64,
    pub user_id: String,
    /// The order that reserves it, if any.
    pub order_id: Option<String>,
    pub version: i64,
}

impl Ticket {
    /// Reads a row selected with [`ticket_columns`].
    pub fn from_row(row: &AnyRow) -> Result<Ticket, sqlx::Error> {
        Ok(Ticket {
            id: row.try_get(0)?,
            title: row.try_get(1)?,
            price: row.try_get(2)?,
            user_id: row.try_get(3)?,
            order_id: row.try_get(4)?,
            version: row.try_get(5)?,
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

    /// The API's JSON: `{id, title, price, userId, version}`, plus `orderId` while an
    /// order reserves it (the original omitted the key when unset, and clients test for
    /// its presence).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(self.id));
        map.insert("title".into(), json!(self.title));
        map.insert("price".into(), price_json(self.price));
        map.insert("userId".into(), json!(self.user_id));
        map.insert("version".into(), json!(self.version));
        if let Some(order_id) = &self.order_id {
            map.insert("orderId".into(), json!(order_id));
        }
        Value::Object(map)
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

/// A price as JSON: a whole price as an integer (`20`, as the original's JavaScript wrote
/// it), any other as a decimal (`20.5`).
pub(crate) fn price_json(price: f64) -> Value {
    // Prices are at most MAX_PRICE, far below 2^53: whole ones convert exactly.
    if price.fract() == 0.0 && price.abs() < 9.0e15 {
        json!(price as i64)
    } else {
        json!(price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(order_id: Option<&str>) -> Ticket {
        Ticket {
            id: "t".into(),
            title: "concert".into(),
            price: 20.0,
            user_id: "u".into(),
            order_id: order_id.map(str::to_string),
            version: 3,
        }
    }

    #[test]
    fn order_id_shows_only_when_set() {
        assert_eq!(
            ticket(None).to_json(),
            json!({"id": "t", "title": "concert", "price": 20, "userId": "u", "version": 3})
        );
        assert_eq!(ticket(Some("o")).to_json()["orderId"], "o");
    }

    #[test]
    fn events_carry_the_contract_payload() {
        let created = ticket(None).created(None);
        assert_eq!(created.event_type, "ticket:created");
        assert_eq!(
            created.data,
            json!({"id": "t", "version": 3, "title": "concert", "price": 20.0, "userId": "u"})
        );
        let updated = ticket(Some("o")).updated(Some("r".into()));
        assert_eq!(updated.data["orderId"], "o");
        assert_eq!(updated.correlation_id.as_deref(), Some("r"));
        assert!(ticket(None).updated(None).data.get("orderId").is_none());
    }

    #[test]
    fn prices_are_written_as_the_original_wrote_them() {
        assert_eq!(price_json(20.0), json!(20));
        assert_eq!(price_json(20.5), json!(20.5));
        assert_eq!(price_json(0.01), json!(0.01));
    }
}
