//! A minimal W3C WebDriver client (enough to drive headless Chromium through chromedriver).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The element key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// True if chromium and chromedriver are installed.
pub fn available() -> bool {
    ["chromium", "chromedriver"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

pub struct Driver {
    process: Child,
    base: String,
    http: reqwest::Client,
}

pub struct Session {
    url: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

#[derive(Clone, Debug)]
pub struct Element(String);

impl Driver {
    pub async fn start() -> Driver {
        let port = super::process::free_port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            process,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    pub async fn session(&self) -> Session {
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.path().display())
                ]
            }
        }}});
        let v = post(&self.http, &format!("{}/session", self.base), &caps).await;
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Session {
            url: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let r = http
        .post(url)
        .json(body)
        .send()
        .await
        .expect("webdriver request");
    r.json().await.expect("webdriver json")
}

impl Session {
    async fn cmd(&self, path: &str, body: Value) -> Value {
        let v = post(&self.http, &format!("{}{path}", self.url), &body).await;
        if let Some(err) = v["value"]["error"].as_str() {
            panic!("webdriver {path}: {err}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("webdriver request");
        r.json::<Value>().await.expect("webdriver json")["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("/url", json!({"url": url})).await;
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self
            .cmd("/elements", json!({"using": "css selector", "value": css}))
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for the first element matching `css`.
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + super::DEADLINE;
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            assert!(Instant::now() < deadline, "no element {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find_in(&self, parent: &Element, css: &str) -> Vec<Element> {
        let v = self
            .cmd(
                &format!("/element/{}/elements", parent.0),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn type_into(&self, e: &Element, text: &str) {
        self.cmd(&format!("/element/{}/value", e.0), json!({"text": text}))
            .await;
    }

    pub async fn click(&self, e: &Element) {
        self.cmd(&format!("/element/{}/click", e.0), json!({}))
            .await;
    }

    pub async fn text(&self, e: &Element) -> String {
        self.get(&format!("/element/{}/text", e.0))
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.get(&format!("/element/{}/attribute/{name}", e.0))
            .await
            .as_str()
            .map(String::from)
    }

    /// Runs a script (from the test, not the page) and returns its value.
    pub async fn script(&self, source: &str) -> Value {
        self.cmd("/execute/sync", json!({"script": source, "args": []}))
            .await
    }

    /// The text of an open alert, if any.
    pub async fn alert_text(&self) -> Option<String> {
        let v = self.get("/alert/text").await;
        if v.get("error").is_some() {
            None
        } else {
            v.as_str().map(String::from)
        }
    }

    /// Resizes the window (a screenshot shows the whole page at this size).
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.get("/screenshot").await;
        let b64 = v.as_str().expect("screenshot");
        decode_base64(b64)
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    out
}
