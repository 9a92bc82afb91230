//! Talking to a service over HTTP: a client with session cookies ([`Client`]) and its
//! answers, with the assertions of the contract's JSON error body ([`Answer`]).

use std::time::Duration;

use serde_json::Value;
use switchyard_session::{SessionConfig, Sessions};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    /// The JSON body (`null` when empty).
    pub body: Value,
}

impl Answer {
    /// Reads `response`, failing the test when its body is neither empty nor JSON.
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "status {status}: not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            content_type,
            body,
        }
    }

    /// Asserts the contract's error body with `status`, whose first error has `message`
    /// (and `field`, when given).
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str, field: Option<&str>) {
        assert_eq!(self.status, status, "{:?}", self.body);
        self.assert_json_error();
        let first = &self.body["errors"][0];
        assert_eq!(first["message"], message, "{:?}", self.body);
        match field {
            Some(field) => assert_eq!(first["field"], field, "{:?}", self.body),
            None => assert!(first.get("field").is_none(), "{:?}", self.body),
        }
    }

    /// Asserts a 4xx with the contract's JSON error body, whatever the message.
    #[track_caller]
    pub fn assert_json_error(&self) {
        assert!(
            (400..500).contains(&self.status),
            "status {}: {:?}",
            self.status,
            self.body
        );
        assert!(
            self.content_type.starts_with("application/json"),
            "content type {:?}",
            self.content_type
        );
        let errors = self.body["errors"].as_array().expect("errors array");
        assert!(!errors.is_empty(), "{:?}", self.body);
        for e in errors {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{:?}",
                self.body
            );
        }
    }

    /// The fields of the errors, in order.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The `Cookie` header of a session for user `user_id` (email `<user_id>@test.com`), built
/// as the auth service's `Set-Cookie` is.
pub fn cookie(sessions: &Sessions, user_id: &str) -> String {
    let (token, _) = sessions
        .issue(user_id, &format!("{user_id}@test.com"))
        .expect("token");
    let set = sessions.set_cookie(&token);
    set.to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("name=value")
        .to_string()
}

/// A client of a service and of the bus it is subscribed to: requests as a signed-in user
/// (a session cookie) or anonymous, answers read as [`Answer`]s, events published and the
/// bus's log read.
#[derive(Clone)]
pub struct Client {
    /// The HTTP client underneath, for requests of a test's own.
    pub http: reqwest::Client,
    /// The service, `http://127.0.0.1:<port>`: where paths go.
    pub service_url: String,
    /// The bus.
    pub bus_url: String,
    /// Sessions signed as the service expects them.
    pub sessions: Sessions,
}

impl Client {
    /// A client of the service at `service_url` and the bus at `bus_url`, with sessions
    /// signed with `session_key`.
    pub fn new(service_url: String, bus_url: String, session_key: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("client"),
            service_url,
            bus_url,
            sessions: Sessions::new(SessionConfig::for_key(session_key)).expect("sessions"),
        }
    }

    /// The service's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.service_url)
    }

    /// The `Cookie` header of a session for user `id` ([`cookie`]).
    pub fn cookie(&self, id: &str) -> String {
        cookie(&self.sessions, id)
    }

    /// A request to `url`, with `cookie` when given.
    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        cookie: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        }
    }

    /// Sends a request to `url` with an optional cookie and an optional JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        cookie: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.request(method, url, cookie);
        if let Some(body) = body {
            request = request.json(body);
        }
        Answer::read(request.send().await.expect("request")).await
    }

    /// Sends raw bytes with a content type (for malformed bodies).
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        url: &str,
        cookie: Option<&str>,
        content_type: Option<&str>,
        body: &'static [u8],
    ) -> Answer {
        let mut request = self.request(method, url, cookie).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        Answer::read(request.send().await.expect("request")).await
    }

    /// `GET` the service's `path`.
    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        self.send(reqwest::Method::GET, &self.url(path), cookie, None)
            .await
    }

    /// `POST` `body` to the service's `path`.
    pub async fn post(&self, path: &str, cookie: Option<&str>, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, &self.url(path), cookie, Some(body))
            .await
    }

    /// `PUT` `body` to the service's `path`.
    pub async fn put(&self, path: &str, cookie: Option<&str>, body: &Value) -> Answer {
        self.send(reqwest::Method::PUT, &self.url(path), cookie, Some(body))
            .await
    }

    /// `DELETE` the service's `path`.
    pub async fn delete(&self, path: &str, cookie: Option<&str>) -> Answer {
        self.send(reqwest::Method::DELETE, &self.url(path), cookie, None)
            .await
    }

    /// Posts `event` straight to the service's `POST /events`, as the bus delivers (and
    /// redelivers) it.
    pub async fn deliver(&self, event: Value) -> Answer {
        self.post("/events", None, &event).await
    }

    /// Publishes `{"type", "data"}` (with `id` when given) on the bus.
    pub async fn publish(&self, id: Option<&str>, event_type: &str, data: Value) {
        self.publish_to(&self.bus_url, id, event_type, data).await
    }

    /// Publishes `{"type", "data"}` (with `id` when given) on the bus at `bus_url`.
    pub async fn publish_to(&self, bus_url: &str, id: Option<&str>, event_type: &str, data: Value) {
        crate::bus::publish(
            &self.http,
            bus_url,
            &crate::bus::event(id, event_type, data),
        )
        .await
    }

    /// The bus's log, oldest first.
    pub async fn log(&self) -> Vec<Value> {
        crate::bus::log(&self.http, &self.bus_url).await
    }

    /// The events of `event_type` in the bus's log.
    pub async fn events(&self, event_type: &str) -> Vec<Value> {
        crate::bus::events(&self.http, &self.bus_url, event_type).await
    }

    /// Waits until the bus's log holds `count` events of `event_type`; returns them.
    pub async fn wait_events(&self, event_type: &str, count: usize) -> Vec<Value> {
        crate::bus::wait_events(&self.http, &self.bus_url, event_type, count).await
    }
}
