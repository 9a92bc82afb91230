//! A plain HTTP client for tests that name whole URLs (`up`'s services, the gateway, a
//! service's ops port), with the raw body, every `Set-Cookie` and the request id of each
//! answer. [`crate::Client`] is the one for a service's own paths with session cookies.

use serde_json::Value;

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Every `Set-Cookie` header.
    pub set_cookies: Vec<String>,
    /// The `x-request-id` answered, if any.
    pub request_id: Option<String>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the contract's error body: `{"errors":[{"message", "field"?}]}`.
    pub fn assert_error(&self, status: u16, field: Option<&str>) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(
            self.content_type.starts_with("application/json"),
            "content type {}",
            self.content_type
        );
        let v = self.json();
        let errors = v["errors"].as_array().expect("errors array");
        assert!(!errors.is_empty());
        for e in errors {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
        if let Some(field) = field {
            assert_eq!(errors[0]["field"], field, "{v}");
        }
    }
}

#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            inner: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }
}

impl Client {
    pub async fn get(&self, url: &str) -> Answer {
        self.send(self.inner.get(url)).await
    }

    pub async fn try_get(&self, url: &str) -> Option<Answer> {
        let r = self.inner.get(url).send().await.ok()?;
        Some(read(r).await)
    }

    pub async fn post_json(&self, url: &str, body: &Value) -> Answer {
        self.post_raw(
            url,
            "application/json",
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }

    pub async fn post_raw(
        &self,
        url: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        self.send(
            self.inner
                .post(url)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    pub async fn request(&self, method: reqwest::Method, url: &str) -> Answer {
        self.send(self.inner.request(method, url)).await
    }

    /// A request with a `Cookie` header (when given) and a JSON body (when given).
    pub async fn with_cookie(
        &self,
        method: reqwest::Method,
        url: &str,
        cookie: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.inner.request(method, url);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("json"));
        }
        self.send(request).await
    }

    /// [`Client::with_cookie`] with extra request headers.
    pub async fn with_headers(
        &self,
        method: reqwest::Method,
        url: &str,
        cookie: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.inner.request(method, url);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("json"));
        }
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request sent");
        read(response).await
    }
}

async fn read(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let set_cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.bytes().await.expect("body").to_vec();
    Answer {
        status,
        content_type,
        body,
        set_cookies,
        request_id,
    }
}
