//! The ticketing workload of the fault-injection test, and its checker.
//!
//! Clients sign up, sell tickets and race each other to buy the newest ones through the
//! gateway; each order they get is then paid, cancelled or left to expire (a third each).
//! Every acknowledged answer is recorded. The checker reads every user's orders, every
//! ticket and the payment provider's charges, and counts what breaks a guarantee.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake_stripe::FakeStripe;

/// What a client does with an order it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Pay,
    Cancel,
    Expire,
}

/// An order acknowledged (201), and what happened to the client's plan for it.
#[derive(Debug, Clone)]
pub struct AckedOrder {
    pub ticket: String,
    pub user: usize,
    pub plan: Plan,
    /// The payment answered 201 / the cancellation 204.
    pub done: bool,
}

/// Everything acknowledged during the load.
#[derive(Debug, Default)]
pub struct Acked {
    /// Each client's session cookie (`session=...`), by client number.
    pub cookies: BTreeMap<usize, String>,
    /// Ticket id → price.
    pub tickets: BTreeMap<String, i64>,
    /// Ticket ids as they were acknowledged, oldest first.
    pub listed_order: Vec<String>,
    pub orders: BTreeMap<String, AckedOrder>,
    /// Orders a client tried to buy and was told the ticket is reserved (400).
    pub refused: usize,
}

/// How long a client keeps retrying one payment or cancellation: well inside the
/// expiration window, so that a payment is not made to race the expiry on purpose.
const ACTION_RETRY: Duration = Duration::from_secs(2);

/// One client: signs up, then sells or buys until `until`.
pub async fn client(base: String, me: usize, until: Instant, acked: Arc<Mutex<Acked>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let Some(cookie) = sign_up(&http, &base, me, until).await else {
        return;
    };
    acked
        .lock()
        .expect("lock")
        .cookies
        .insert(me, cookie.clone());
    let mut n = 0usize;
    while Instant::now() < until {
        n += 1;
        // One client in four sells; the others buy the newest tickets, so buyers race.
        if me.is_multiple_of(4) {
            let price = 10 + (n % 50) as i64;
            let answer = send(
                &http,
                reqwest::Method::POST,
                &format!("{base}/api/tickets"),
                &cookie,
                Some(json!({"title": format!("show {me}-{n}"), "price": price})),
            )
            .await;
            match answer {
                Some((201, body)) => {
                    if let Some(id) = body["id"].as_str() {
                        let mut a = acked.lock().expect("lock");
                        a.tickets.insert(id.to_string(), price);
                        a.listed_order.push(id.to_string());
                    }
                }
                _ => pause().await,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let candidates: Vec<String> = {
            let a = acked.lock().expect("lock");
            a.listed_order.iter().rev().take(8).cloned().collect()
        };
        let Some(ticket) = candidates.get((me + n) % candidates.len().max(1)).cloned() else {
            pause().await;
            continue;
        };
        let answer = send(
            &http,
            reqwest::Method::POST,
            &format!("{base}/api/orders"),
            &cookie,
            Some(json!({"ticketId": ticket})),
        )
        .await;
        let order = match answer {
            Some((201, body)) => body,
            Some((400, _)) => {
                acked.lock().expect("lock").refused += 1;
                pause().await;
                continue;
            }
            _ => {
                pause().await;
                continue;
            }
        };
        let Some(order_id) = order["id"].as_str().map(str::to_string) else {
            continue;
        };
        let plan = match (me + n) % 3 {
            0 => Plan::Pay,
            1 => Plan::Cancel,
            _ => Plan::Expire,
        };
        acked.lock().expect("lock").orders.insert(
            order_id.clone(),
            AckedOrder {
                ticket,
                user: me,
                plan,
                done: false,
            },
        );
        let done = match plan {
            Plan::Pay => pay(&http, &base, &cookie, &order_id).await,
            Plan::Cancel => cancel(&http, &base, &cookie, &order_id).await,
            Plan::Expire => false,
        };
        if done && let Some(o) = acked.lock().expect("lock").orders.get_mut(&order_id) {
            o.done = true;
        }
    }
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Sends a JSON request with the session cookie; `None` when no answer came.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    cookie: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut request = http.request(method, url).header("cookie", cookie);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.ok()?;
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// Signs up (or, when an earlier attempt went through unseen, signs in); the cookie.
async fn sign_up(http: &reqwest::Client, base: &str, me: usize, until: Instant) -> Option<String> {
    let credentials = json!({"email": format!("buyer{me}@faults.test"), "password": "password"});
    while Instant::now() < until {
        for path in ["signup", "signin"] {
            let Ok(r) = http
                .post(format!("{base}/api/users/{path}"))
                .json(&credentials)
                .send()
                .await
            else {
                continue;
            };
            if !r.status().is_success() {
                continue;
            }
            let cookie = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|c| c.starts_with("session="))
                .and_then(|c| c.split(';').next())
                .map(str::to_string);
            if cookie.is_some() {
                return cookie;
            }
        }
        pause().await;
    }
    None
}

/// Pays with `tok_visa` until 201 (true), a refusal, or [`ACTION_RETRY`] has passed.
async fn pay(http: &reqwest::Client, base: &str, cookie: &str, order_id: &str) -> bool {
    let deadline = Instant::now() + ACTION_RETRY;
    while Instant::now() < deadline {
        match send(
            http,
            reqwest::Method::POST,
            &format!("{base}/api/payments"),
            cookie,
            Some(json!({"orderId": order_id, "token": "tok_visa"})),
        )
        .await
        {
            Some((201, _)) => return true,
            // Paid by an earlier attempt whose answer was lost, or the order is gone: the
            // checker judges the order by its final state.
            Some((400, body)) if !in_progress(&body) => return false,
            _ => pause().await,
        }
    }
    false
}

fn in_progress(body: &Value) -> bool {
    body["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("in progress"))
}

/// Cancels until 204 (true) or [`ACTION_RETRY`] has passed.
async fn cancel(http: &reqwest::Client, base: &str, cookie: &str, order_id: &str) -> bool {
    let deadline = Instant::now() + ACTION_RETRY;
    while Instant::now() < deadline {
        match send(
            http,
            reqwest::Method::DELETE,
            &format!("{base}/api/orders/{order_id}"),
            cookie,
            None,
        )
        .await
        {
            Some((204, _)) => return true,
            _ => pause().await,
        }
    }
    false
}

/// What the checker counts; every field but the first four must be 0.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub tickets: usize,
    pub orders: usize,
    pub paid: usize,
    pub charges: usize,
    /// Acknowledged orders missing from their user's orders.
    pub lost: usize,
    /// Tickets with more than one complete order.
    pub sold_twice: usize,
    /// Orders with more than one charge not refunded.
    pub charged_twice: usize,
    /// Complete orders without a charge, or charges kept for orders that are not complete.
    pub charge_mismatch: usize,
    /// Acknowledged payments whose order is not complete.
    pub paid_not_complete: usize,
    /// Acknowledged cancellations whose order is not cancelled.
    pub cancelled_not_cancelled: usize,
    /// Orders still created or awaiting payment after the window.
    pub not_expired: usize,
    /// Tickets whose reservation disagrees with the orders: a sold ticket listed or free, a
    /// ticket of no live order still reserved or not listed.
    pub ticket_mismatch: usize,
    /// The first few tickets counted in `ticket_mismatch`, as read: the ticket, then every
    /// order on it with its status.
    pub mismatched: Vec<String>,
}

impl Verdict {
    pub fn violations(&self) -> usize {
        self.lost
            + self.sold_twice
            + self.charged_twice
            + self.charge_mismatch
            + self.paid_not_complete
            + self.cancelled_not_cancelled
            + self.not_expired
            + self.ticket_mismatch
    }
}

/// One reading of the system against what was acknowledged; `None` when a read failed.
pub async fn check(base: &str, acked: &Acked, stripe: &FakeStripe) -> Option<Verdict> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut verdict = Verdict {
        tickets: acked.tickets.len(),
        orders: acked.orders.len(),
        paid: acked
            .orders
            .values()
            .filter(|o| o.plan == Plan::Pay && o.done)
            .count(),
        ..Verdict::default()
    };
    // Every order of every user: id → (ticket id, status).
    let mut orders: HashMap<String, (String, String)> = HashMap::new();
    for cookie in acked.cookies.values() {
        let (200, list) = send(
            &http,
            reqwest::Method::GET,
            &format!("{base}/api/orders"),
            cookie,
            None,
        )
        .await?
        else {
            return None;
        };
        for o in list.as_array()? {
            orders.insert(
                o["id"].as_str()?.to_string(),
                (
                    o["ticket"]["id"].as_str()?.to_string(),
                    o["status"].as_str()?.to_string(),
                ),
            );
        }
    }
    // Charges kept (not refunded), by order.
    let mut charges: HashMap<String, usize> = HashMap::new();
    for charge in stripe.charged().values().filter(|c| !c.refunded) {
        let order = charge
            .description
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        *charges.entry(order).or_default() += 1;
        verdict.charges += 1;
    }
    for (id, o) in &acked.orders {
        let Some((_, status)) = orders.get(id) else {
            verdict.lost += 1;
            continue;
        };
        if o.done && o.plan == Plan::Pay && status != "complete" {
            verdict.paid_not_complete += 1;
        }
        if o.done && o.plan == Plan::Cancel && status != "cancelled" {
            verdict.cancelled_not_cancelled += 1;
        }
    }
    let mut complete_by_ticket: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, (ticket, status)) in &orders {
        let kept = charges.get(id).copied().unwrap_or(0);
        if kept > 1 {
            verdict.charged_twice += 1;
        }
        match status.as_str() {
            "complete" => {
                complete_by_ticket.entry(ticket).or_default().push(id);
                if kept == 0 {
                    verdict.charge_mismatch += 1;
                }
            }
            "cancelled" => {
                if kept > 0 {
                    verdict.charge_mismatch += 1;
                }
            }
            _ => verdict.not_expired += 1,
        }
    }
    verdict.sold_twice = complete_by_ticket.values().filter(|v| v.len() > 1).count();
    // Tickets: a sold one reserved by its order and not listed; any other free and listed.
    let (200, listed) = send(
        &http,
        reqwest::Method::GET,
        &format!("{base}/api/tickets"),
        "",
        None,
    )
    .await?
    else {
        return None;
    };
    let listed: HashSet<&str> = listed
        .as_array()?
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    for id in acked.tickets.keys() {
        let (200, ticket) = send(
            &http,
            reqwest::Method::GET,
            &format!("{base}/api/tickets/{id}"),
            "",
            None,
        )
        .await?
        else {
            return None;
        };
        let holder = ticket["orderId"].as_str();
        let fits = match complete_by_ticket.get(id.as_str()) {
            Some(sold) => {
                holder.is_some_and(|h| sold.contains(&h)) && !listed.contains(id.as_str())
            }
            None => holder.is_none() && listed.contains(id.as_str()),
        };
        if !fits {
            verdict.ticket_mismatch += 1;
            if verdict.mismatched.len() < 5 {
                let on_it: Vec<String> = orders
                    .iter()
                    .filter(|(_, (t, _))| t == id)
                    .map(|(o, (_, status))| format!("{o} {status}"))
                    .collect();
                verdict.mismatched.push(format!(
                    "ticket {id}: orderId {holder:?}, listed {}; orders: {}",
                    listed.contains(id.as_str()),
                    on_it.join(", ")
                ));
            }
        }
    }
    Some(verdict)
}
