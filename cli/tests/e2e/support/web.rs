//! HTTP fixtures: a client for the hub's REST API (plain HTTP on loopback), a server-sent events
//! reader, and a real headless Chromium driven over WebDriver.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;

use super::Hub;

/// The REST API of one hub, with its admin token.
pub struct Api {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(hub: &Hub) -> Self {
        Self {
            base: format!("http://{}", hub.operator_addr()),
            token: hub.admin_token(),
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn json(response: reqwest::Response) -> (StatusCode, Value) {
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"));
        (status, value)
    }

    /// An unauthenticated page's text (`/readyz`, `/metrics`).
    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        Self::json(r).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        Self::json(r).await
    }

    /// A POST with a body taken as is (malformed JSON on purpose).
    pub async fn post_raw(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        Self::json(r).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .delete(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        Self::json(r).await
    }

    /// The bytes of a GET (task output).
    pub async fn bytes(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }

    /// Opens a server-sent events stream and waits for its `hello`: from then on nothing is missed.
    pub async fn events(&self, path: &str) -> Events {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let mut events = Events {
            stream: Box::pin(r.bytes_stream().eventsource()),
        };
        let hello = events.next(Duration::from_secs(10)).await;
        assert_eq!(hello.event, "hello");
        events
    }
}

type EventItem = Result<Event, eventsource_stream::EventStreamError<reqwest::Error>>;

pub struct Events {
    stream: std::pin::Pin<Box<dyn Stream<Item = EventItem> + Send>>,
}

impl Events {
    pub async fn next(&mut self, within: Duration) -> Event {
        tokio::time::timeout(within, self.stream.next())
            .await
            .expect("no event in time")
            .expect("the event stream ended")
            .expect("a well-formed event")
    }

    /// Waits for the first event for which `want` holds, returning it and every event seen before.
    pub async fn until(&mut self, within: Duration, want: impl Fn(&Event) -> bool) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left).await;
            let done = want(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

/// Headless Chromium under chromedriver (Debian's `chromium` and `chromium-driver`).
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Child,
}

impl Browser {
    pub async fn start() -> Browser {
        // chromedriver takes no port 0: borrow a free one from the kernel.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed (./dev test installs Debian's chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // Ready when its status endpoint says so.
        loop {
            let ready = http
                .get(format!("{url}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1366,900", "--force-device-scale-factor=1"]
            }),
        );
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("connect to chromedriver");
        Browser { client, driver }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// Where tests write screenshots and other things to look at afterwards.
pub fn artifacts_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Api {
    /// Logs in to the dashboard the way a browser does (login form, its CSRF cookie) and returns the
    /// `Cookie` header value of the session.
    pub async fn dashboard_session(&self) -> String {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let form = http.get(self.url("/login")).send().await.unwrap();
        let login_cookie = form
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .next()
            .expect("the login form sets its CSRF cookie");
        let html = form.text().await.unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the login form carries a CSRF token")
            .to_string();
        let done = http
            .post(self.url("/login"))
            .header("cookie", &login_cookie)
            .form(&[
                ("token", self.token.as_str()),
                ("csrf", &csrf),
                ("next", "/"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        done.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .find(|c| !c.contains("_login="))
            .expect("a session cookie")
    }

    /// A dashboard page's HTML with a session cookie.
    pub async fn page(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let r = self
            .client
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}
