//! Ticketing's HTTP shapes (`shared/spec/ticketing.md`), for the services' OpenAPI
//! documents. The handlers read and write JSON values checked field by field, so that
//! every failing field is reported at once; these types state the same rules and are
//! never deserialised.
#![allow(dead_code)]

use utoipa::ToSchema;

use crate::OrderStatus;

/// `POST /api/users/signup`: a valid email (trimmed, compared without case) and a
/// password of 4 to 20 characters once trimmed.
#[derive(ToSchema)]
pub struct SignUp {
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(min_length = 4, max_length = 20)]
    password: String,
}

/// `POST /api/users/signin`: a valid email and a password that is not empty.
#[derive(ToSchema)]
pub struct SignIn {
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(min_length = 1)]
    password: String,
}

/// A signed-in user, as signup and signin answer it (with the `session` cookie).
#[derive(ToSchema)]
pub struct User {
    id: String,
    email: String,
}

/// The session's user: its id, email and when the session was issued (seconds).
#[derive(ToSchema)]
pub struct SessionUser {
    id: String,
    email: String,
    iat: u64,
}

/// `GET /api/users/currentuser`: the session's user, or `null` when signed out (an
/// expired, malformed or wrongly signed session is signed out, never an error).
#[derive(ToSchema)]
pub struct CurrentUser {
    #[schema(rename = "currentUser", required = true)]
    current_user: Option<SessionUser>,
}

/// `{}`.
#[derive(ToSchema)]
pub struct Empty {}

/// `POST /api/tickets` and `PUT /api/tickets/{id}`: a title of 1 to 200 characters once
/// trimmed, and a price greater than 0 and at most 999999.99, rounded to cents. As in the
/// original, the price may also come as a string holding a number (`"20.5"`).
#[derive(ToSchema)]
pub struct NewTicket {
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\x00]*\S[^\x00]*$")]
    title: String,
    #[schema(exclusive_minimum = 0.0, maximum = 999_999.99)]
    price: f64,
}

/// A ticket. `orderId` is there while an order holds it.
#[derive(ToSchema)]
#[schema(as = Ticket)]
pub struct TicketBody {
    id: String,
    title: String,
    price: f64,
    #[schema(rename = "userId")]
    user_id: String,
    /// Bumped by every change; replicas apply changes in this order.
    version: i64,
    #[schema(rename = "orderId")]
    order_id: Option<String>,
}

/// `POST /api/orders`: the ticket to reserve.
#[derive(ToSchema)]
pub struct NewOrder {
    /// A ticket's id (24 hexadecimal digits).
    #[schema(rename = "ticketId", min_length = 1)]
    ticket_id: String,
}

/// A ticket as an order shows it.
#[derive(ToSchema)]
pub struct OrderTicket {
    id: String,
    title: String,
    price: f64,
    version: i64,
}

/// An order with its ticket.
#[derive(ToSchema)]
#[schema(as = Order)]
pub struct OrderBody {
    id: String,
    #[schema(rename = "userId")]
    user_id: String,
    status: OrderStatus,
    /// When an unpaid order expires (RFC 3339, UTC).
    #[schema(rename = "expiresAt", format = DateTime)]
    expires_at: String,
    ticket: OrderTicket,
    version: i64,
}

/// `POST /api/payments`: the card token (from Stripe.js; `tok_visa` in test mode) and the
/// order to pay, neither blank nor with control characters.
#[derive(ToSchema)]
pub struct NewPayment {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    token: String,
    #[schema(
        rename = "orderId",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    order_id: String,
}

/// A payment taken.
#[derive(ToSchema)]
pub struct Payment {
    id: String,
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    /// The documented limits are the enforced ones.
    #[test]
    fn limits_match_the_contract() {
        let ticket = serde_json::to_value(super::NewTicket::schema()).expect("json");
        assert_eq!(
            ticket["properties"]["title"]["maxLength"],
            crate::MAX_TITLE_LEN
        );
        assert_eq!(ticket["properties"]["price"]["maximum"], crate::MAX_PRICE);
        let payment = serde_json::to_value(super::NewPayment::schema()).expect("json");
        assert_eq!(
            payment["properties"]["orderId"]["maxLength"],
            crate::MAX_ID_LEN
        );
        let current = serde_json::to_value(super::CurrentUser::schema()).expect("json");
        assert_eq!(current["required"], serde_json::json!(["currentUser"]));
    }
}
