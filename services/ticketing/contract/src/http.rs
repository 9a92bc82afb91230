//! Ticketing's HTTP shapes (`shared/spec/ticketing.md`): one type per request body and per
//! answer. A request type is what the handler's extractor parses (every failing field
//! reported, with the contract's messages) and what the OpenAPI document shows; an answer
//! type is what the handler serialises.

use serde::Serialize;
use serde_json::Value;
use switchyard_wire::{FieldValue, request_body};
use utoipa::ToSchema;

use crate::{
    MAX_ID_LEN, MAX_TITLE_LEN, OrderId, OrderStatus, PaymentId, Price, TicketId, UserId,
    is_object_id,
};

/// Longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest card token accepted.
pub const MAX_TOKEN_LEN: usize = 255;

request_body! {
    /// `POST /api/users/signup`: a valid email (trimmed, compared without case) and a
    /// password of 4 to 20 characters once trimmed.
    #[derive(Debug, Clone, PartialEq, ToSchema)]
    pub struct SignUp {
        #[schema(value_type = String, format = Email, max_length = 254)]
        pub email: Email = "email",
        #[schema(value_type = String, min_length = 4, max_length = 20)]
        pub password: NewPassword = "password",
    }
}

request_body! {
    /// `POST /api/users/signin`: a valid email and a password that is not empty.
    #[derive(Debug, Clone, PartialEq, ToSchema)]
    pub struct SignIn {
        #[schema(value_type = String, format = Email, max_length = 254)]
        pub email: Email = "email",
        #[schema(value_type = String, min_length = 1)]
        pub password: GivenPassword = "password",
    }
}

/// A trimmed, lower-cased email: one `@`, a non-empty local part of at most 64
/// characters, a domain of dot-separated labels of letters, digits and hyphens with at
/// least one dot, no spaces or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// `value` as an email, if it is a plausible address.
    pub fn parse(value: &str) -> Option<Email> {
        let email = value.trim().to_lowercase();
        if email.is_empty() || email.len() > MAX_EMAIL_LEN {
            return None;
        }
        let (local, domain) = email.rsplit_once('@')?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
        (local_ok && domain_ok).then_some(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FieldValue for Email {
    fn parse_field(_: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        value
            .and_then(Value::as_str)
            .and_then(Email::parse)
            .ok_or_else(|| vec!["Email must be valid".to_string()])
    }
}

/// A password being chosen: 4 to 20 characters once trimmed.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);

/// A password being tried: not empty once trimmed.
#[derive(Clone, PartialEq, Eq)]
pub struct GivenPassword(String);

/// A trimmed password, if the value is a string.
fn password(value: Option<&Value>) -> Option<String> {
    value?.as_str().map(|p| p.trim().to_string())
}

impl NewPassword {
    pub fn into_string(self) -> String {
        self.0
    }
}

impl GivenPassword {
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FieldValue for NewPassword {
    fn parse_field(_: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        password(value)
            .filter(|p| (4..=20).contains(&p.chars().count()))
            .map(NewPassword)
            .ok_or_else(|| vec!["Password must be between 4 and 20 characters".to_string()])
    }
}

impl FieldValue for GivenPassword {
    fn parse_field(_: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        password(value)
            .filter(|p| !p.is_empty())
            .map(GivenPassword)
            .ok_or_else(|| vec!["You must supply a password".to_string()])
    }
}

/// Passwords never reach a log.
impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

/// Passwords never reach a log.
impl std::fmt::Debug for GivenPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GivenPassword(..)")
    }
}

/// A signed-in user, as signup and signin answer it (with the `session` cookie).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
}

/// The session's user: its id, email and when the session was issued (seconds).
#[derive(ToSchema)]
pub struct SessionUser {
    pub id: String,
    pub email: String,
    pub iat: u64,
}

/// `GET /api/users/currentuser`: the session's user, or `null` when signed out (an
/// expired, malformed or wrongly signed session is signed out, never an error).
#[derive(ToSchema)]
pub struct CurrentUser {
    #[schema(rename = "currentUser", required = true)]
    pub current_user: Option<SessionUser>,
}

/// `{}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Empty {}

request_body! {
    /// `POST /api/tickets` and `PUT /api/tickets/{id}`: a title of 1 to 200 characters
    /// once trimmed, and a price of at least 0.50 and at most 999999.99, rounded to cents.
    /// As in the original, the price may also come as a string holding a number (`"20.5"`).
    #[derive(Debug, Clone, PartialEq, ToSchema)]
    pub struct NewTicket {
        #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\x00]*\S[^\x00]*$")]
        pub title: Title = "title",
        #[schema(value_type = f64, exclusive_minimum = 0.0, maximum = 999_999.99)]
        pub price: Price = "price",
    }
}

/// A ticket's title: trimmed (padding is never meant), 1 to [`MAX_TITLE_LEN`]
/// characters, without NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FieldValue for Title {
    fn parse_field(_: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        let title = match value {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim(),
            _ => return Err(vec!["Title is required".to_string()]),
        };
        let mut errors = Vec::new();
        if title.chars().count() > MAX_TITLE_LEN {
            errors.push(format!("Title must be at most {MAX_TITLE_LEN} characters"));
        }
        // PostgreSQL stores no NUL in text: refused on every backend alike.
        if title.contains('\0') {
            errors.push("Title must not contain NUL characters".to_string());
        }
        if errors.is_empty() {
            Ok(Title(title.to_string()))
        } else {
            Err(errors)
        }
    }
}

/// A price a ticket is offered at: at least [`Price::MIN_SALE`] (below what a charge can
/// be, a ticket could be ordered but never paid), at most [`Price::MAX`].
impl FieldValue for Price {
    fn parse_field(_: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        match value.and_then(Price::from_json) {
            Some(price) if price >= Price::MIN_SALE => Ok(price),
            // A price that rounds to 0 cents is not greater than 0.
            Some(price) if price.cents() > 0 => {
                Err(vec![format!("Price must be at least {}", Price::MIN_SALE)])
            }
            _ => {
                let too_high = match value {
                    Some(Value::Number(n)) => n.as_f64().is_some_and(|p| p > crate::MAX_PRICE),
                    Some(Value::String(s)) => {
                        s.trim().parse::<f64>().is_ok_and(|p| p > crate::MAX_PRICE)
                    }
                    _ => false,
                };
                Err(vec![if too_high {
                    format!("Price must be at most {}", crate::MAX_PRICE)
                } else {
                    "Price must be greater than 0".to_string()
                }])
            }
        }
    }
}

/// A ticket. `orderId` is there while an order holds it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Ticket)]
#[serde(rename_all = "camelCase")]
pub struct TicketBody {
    #[schema(value_type = String)]
    pub id: TicketId,
    pub title: String,
    #[schema(value_type = f64)]
    pub price: Price,
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// Bumped by every change; replicas apply changes in this order.
    pub version: i64,
    /// Absent (not `null`) while no order holds it: the original omitted the key, and
    /// clients test for its presence.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub order_id: Option<OrderId>,
}

request_body! {
    /// `POST /api/orders`: the ticket to reserve.
    #[derive(Debug, Clone, PartialEq, ToSchema)]
    pub struct NewOrder {
        /// A ticket's id (24 hexadecimal digits).
        #[schema(value_type = String, min_length = 1)]
        pub ticket_id: TicketId = "ticketId",
    }
}

/// A ticket's id as an order names it: an entity id (24 hexadecimal digits), as the
/// original's `mongoose.Types.ObjectId.isValid` checks it.
impl FieldValue for TicketId {
    fn parse_field(_: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        value
            .and_then(Value::as_str)
            .filter(|id| is_object_id(id))
            .map(TicketId::from)
            .ok_or_else(|| vec!["TicketId must be provided".to_string()])
    }
}

/// A ticket as an order shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OrderTicket {
    #[schema(value_type = String)]
    pub id: TicketId,
    pub title: String,
    #[schema(value_type = f64)]
    pub price: Price,
    pub version: i64,
}

/// An order with its ticket.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Order)]
#[serde(rename_all = "camelCase")]
pub struct OrderBody {
    #[schema(value_type = String)]
    pub id: OrderId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub status: OrderStatus,
    /// When an unpaid order expires (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub ticket: OrderTicket,
    pub version: i64,
}

request_body! {
    /// `POST /api/payments`: the card token (from Stripe.js; `tok_visa` in test mode) and
    /// the order to pay, neither blank nor with control characters.
    #[derive(Debug, Clone, PartialEq, ToSchema)]
    pub struct NewPayment {
        #[schema(
            value_type = String,
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        pub token: CardToken = "token",
        #[schema(
            value_type = String,
            min_length = 1,
            max_length = 64,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        pub order_id: OrderId = "orderId",
    }
}

/// A card token: trimmed, 1 to [`MAX_TOKEN_LEN`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardToken(String);

impl CardToken {
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A required line: trimmed, not blank, at most `max` characters, no control characters
/// (in no token or id, and PostgreSQL refuses NUL in text).
fn line(label: &str, max: usize, value: Option<&Value>) -> Result<String, Vec<String>> {
    match value {
        Some(Value::String(s)) if s.trim().chars().count() > max => {
            Err(vec![format!("{label} must be at most {max} characters")])
        }
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            Err(vec![format!("{label} is malformed")])
        }
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(vec![format!("{label} must be provided")]),
    }
}

impl FieldValue for CardToken {
    fn parse_field(_: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        line("Token", MAX_TOKEN_LEN, value).map(CardToken)
    }
}

/// The order a payment is for: trimmed, 1 to [`MAX_ID_LEN`] characters, no control
/// characters (an id of another shape names no order: 404).
impl FieldValue for OrderId {
    fn parse_field(_: &str, value: Option<&Value>) -> Result<Self, Vec<String>> {
        line("OrderId", MAX_ID_LEN, value).map(OrderId::from)
    }
}

/// A payment taken.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Payment {
    #[schema(value_type = String)]
    pub id: PaymentId,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use switchyard_wire::{BodyError, RequestBody};
    use utoipa::PartialSchema;

    use super::*;

    /// The documented limits are the enforced ones.
    #[test]
    fn limits_match_the_contract() {
        let ticket = serde_json::to_value(NewTicket::schema()).expect("json");
        assert_eq!(
            ticket["properties"]["title"]["maxLength"],
            crate::MAX_TITLE_LEN
        );
        assert_eq!(ticket["properties"]["price"]["maximum"], crate::MAX_PRICE);
        assert_eq!(Price::MAX.as_number(), crate::MAX_PRICE);
        let payment = serde_json::to_value(NewPayment::schema()).expect("json");
        assert_eq!(payment["properties"]["orderId"]["maxLength"], MAX_ID_LEN);
        assert_eq!(payment["properties"]["token"]["maxLength"], MAX_TOKEN_LEN);
        let sign_up = serde_json::to_value(SignUp::schema()).expect("json");
        assert_eq!(sign_up["properties"]["email"]["maxLength"], MAX_EMAIL_LEN);
        let current = serde_json::to_value(CurrentUser::schema()).expect("json");
        assert_eq!(current["required"], json!(["currentUser"]));
    }

    fn fields(body: Value, parse: fn(&Value) -> Result<(), BodyError>) -> Vec<(String, String)> {
        match parse(&body) {
            Err(BodyError::Fields(fields)) => fields
                .into_iter()
                .map(|(f, m)| (f.to_string(), m))
                .collect(),
            other => panic!("{body}: {other:?}"),
        }
    }

    fn ticket(body: &Value) -> Result<(), BodyError> {
        NewTicket::from_json(body).map(drop)
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Test@Test.COM ").map(|e| e.as_str().to_string()),
            Some("test@test.com".to_string())
        );
        for bad in [
            "",
            "plain",
            "a@b",
            "a@b.c",
            "@b.com",
            "a b@c.com",
            "a@-b.com",
            "a..b@c.com",
            "a@b..com",
        ] {
            assert_eq!(Email::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn sign_up_and_sign_in_list_every_failing_field() {
        let sign_up = |b: &Value| SignUp::from_json(b).map(drop);
        assert_eq!(
            fields(json!({}), sign_up),
            [
                ("email".into(), "Email must be valid".into()),
                (
                    "password".into(),
                    "Password must be between 4 and 20 characters".into()
                )
            ]
        );
        assert_eq!(
            fields(json!({"email": "a@b.co", "password": "  abc  "}), sign_up).len(),
            1
        );
        let ok = SignUp::from_json(&json!({"email": "a@b.co", "password": " abcd "}));
        assert_eq!(ok.map(|s| s.password.into_string()), Ok("abcd".into()));
        assert!(
            SignUp::from_json(&json!({"email": "a@b.co", "password": "a".repeat(21)})).is_err()
        );
        let sign_in = |b: &Value| SignIn::from_json(b).map(drop);
        assert_eq!(
            fields(json!({"email": "a@b.co", "password": "   "}), sign_in)[0].1,
            "You must supply a password"
        );
        // A password never reaches a log.
        let signed = SignIn::from_json(&json!({"email": "a@b.co", "password": "hunter2"}));
        assert!(!format!("{signed:?}").contains("hunter2"));
    }

    #[test]
    fn every_failing_ticket_field_is_reported() {
        assert_eq!(
            fields(json!({"title": "", "price": -10}), ticket),
            [
                ("title".into(), "Title is required".into()),
                ("price".into(), "Price must be greater than 0".into())
            ]
        );
        assert_eq!(
            NewTicket::from_json(&json!([1, 2])),
            Err(BodyError::NotAnObject)
        );
        // A title both too long and with NUL gets both messages.
        let both = format!("{}\u{0}", "x".repeat(MAX_TITLE_LEN));
        assert_eq!(fields(json!({"title": both, "price": 1}), ticket).len(), 2);
    }

    #[test]
    fn titles_and_prices() {
        let parsed = NewTicket::from_json(&json!({"title": " concert ", "price": "10.5"}));
        assert_eq!(
            parsed.map(|t| (t.title.into_string(), t.price)),
            Ok(("concert".to_string(), Price::from_cents(1050)))
        );
        for bad in [
            json!({"title": 5, "price": 10}),
            json!({"title": "   ", "price": 10}),
            json!({"price": 10}),
            json!({"title": "x".repeat(MAX_TITLE_LEN + 1), "price": 10}),
            json!({"title": "a\u{0}b", "price": 10}),
        ] {
            assert_eq!(fields(bad, ticket)[0].0, "title");
        }
        // Above 0 but under what a charge can be.
        for low in [json!(0.49), json!("0.1"), json!(0.01)] {
            assert_eq!(
                fields(json!({"title": "t", "price": low}), ticket),
                [("price".into(), "Price must be at least 0.50".into())]
            );
        }
        assert!(ticket(&json!({"title": "t", "price": 0.5})).is_ok());
        for bad in [
            json!(0),
            json!(-1),
            json!("abc"),
            json!(null),
            json!(true),
            json!(0.001),
        ] {
            assert_eq!(
                fields(json!({"title": "t", "price": bad}), ticket),
                [("price".into(), "Price must be greater than 0".into())]
            );
        }
        assert_eq!(
            fields(json!({"title": "t", "price": 1e9}), ticket)[0].1,
            format!("Price must be at most {}", crate::MAX_PRICE)
        );
    }

    #[test]
    fn an_order_names_a_ticket_by_entity_id() {
        let order = |b: &Value| NewOrder::from_json(b).map(drop);
        for bad in [
            json!({}),
            json!({"ticketId": "abc"}),
            json!({"ticketId": 5}),
        ] {
            assert_eq!(
                fields(bad, order),
                [("ticketId".into(), "TicketId must be provided".into())]
            );
        }
        let ok = NewOrder::from_json(&json!({"ticketId": "0123456789abcdef01234567"}));
        assert_eq!(
            ok.map(|o| o.ticket_id.as_str().to_string()),
            Ok("0123456789abcdef01234567".into())
        );
    }

    #[test]
    fn both_payment_fields_are_required_and_all_failures_listed() {
        let pay = |b: &Value| NewPayment::from_json(b).map(drop);
        let ok = NewPayment::from_json(&json!({"token": " tok_visa ", "orderId": "abc"}));
        assert_eq!(
            ok.map(|p| (p.token.into_string(), p.order_id.into_string())),
            Ok(("tok_visa".to_string(), "abc".to_string()))
        );
        let names = |body: Value| -> Vec<String> {
            fields(body, pay).into_iter().map(|(f, _)| f).collect()
        };
        assert_eq!(names(json!({})), ["token", "orderId"]);
        assert_eq!(fields(json!({}), pay)[0].1, "Token must be provided");
        for body in [
            json!({"token": "", "orderId": "  "}),
            json!({"token": null, "orderId": 12}),
            json!({"token": ["tok_visa"], "orderId": {"id": "x"}}),
            json!({"token": "tok_\u{0}", "orderId": "a\nb"}),
        ] {
            assert_eq!(names(body), ["token", "orderId"]);
        }
        assert_eq!(
            names(json!({"token": "tok_visa", "orderId": "x".repeat(65)})),
            ["orderId"]
        );
        assert_eq!(
            NewPayment::from_json(&json!("token")),
            Err(BodyError::NotAnObject)
        );
    }
}
