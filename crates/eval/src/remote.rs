//! The HTTP driver: plays scenarios against a running `switchboard serve` through its public API
//! (`POST /v1/conversations`, `POST .../messages`, `GET .../interrupts`,
//! `POST .../interrupts/resume`, `GET .../state`).
//!
//! The state endpoint returns the conversation's full state, so every expectation is checked as
//! in process. What differs: the server has one back end for all conversations, so seed data is
//! not reset between scenarios (a card frozen by one scenario stays frozen for the next), and the
//! latency includes the HTTP round trip. The key needs the `chat` and `desk` scopes (an admin
//! key has both): approvals and the state are desk operations.

use crate::check::Observed;
use crate::run::{Driver, DriverError};
use crate::scenario::{Action, Scenario};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Timeout of one HTTP request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs scenarios against a server.
#[derive(Debug, Clone)]
pub struct Remote {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// A conversation on the server.
#[derive(Debug)]
pub struct RemoteConversation {
    id: String,
}

impl Remote {
    /// A driver for the server at `base` (e.g. `http://127.0.0.1:8080`), with an API key.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(base: &str, key: Option<String>) -> Result<Self, DriverError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(DriverError::msg)?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), key, http })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, DriverError> {
        let url = format!("{}/v1{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| DriverError(format!("{method} {url}: {e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| DriverError(format!("{method} {url}: {e}")))?;
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("(no message)");
            return Err(DriverError(format!("{method} {url}: {status}: {msg}")));
        }
        Ok(v)
    }

    async fn state(&self, conv: &str) -> Result<Value, DriverError> {
        Ok(self.call(reqwest::Method::GET, &format!("/conversations/{conv}/state"), None).await?["values"].take())
    }
}

fn payloads(interrupts: &Value) -> Vec<Value> {
    interrupts.as_array().map(|a| a.iter().map(|i| i["payload"].clone()).collect()).unwrap_or_default()
}

impl Driver for Remote {
    type Conversation = RemoteConversation;

    async fn open(&self, scenario: &Scenario) -> Result<RemoteConversation, DriverError> {
        let mut body = json!({"assistant": scenario.assistant, "metadata": {"scenario": scenario.name}});
        if let Some(c) = &scenario.customer {
            body["customer_id"] = json!(c);
        }
        let v = self.call(reqwest::Method::POST, "/conversations", Some(body)).await?;
        let id = v["id"].as_str().ok_or_else(|| DriverError("the server returned no conversation id".into()))?;
        Ok(RemoteConversation { id: id.to_string() })
    }

    async fn play(&self, c: &mut RemoteConversation, action: Action<'_>) -> Result<Observed, DriverError> {
        let before = self.state(&c.id).await?;
        let started = Instant::now();
        let result = match action {
            Action::Say(text) => {
                let path = format!("/conversations/{}/messages", c.id);
                self.call(reqwest::Method::POST, &path, Some(json!({"text": text}))).await?
            }
            Action::Approve(approve) => {
                let pending =
                    self.call(reqwest::Method::GET, &format!("/conversations/{}/interrupts", c.id), None).await?;
                if !payloads(&pending["items"]).iter().any(|p| p["type"] == "approval") {
                    return Err(DriverError("no approval is pending".into()));
                }
                let path = format!("/conversations/{}/interrupts/resume", c.id);
                let value = json!({"value": {"approve": approve, "by": "scenario"}});
                self.call(reqwest::Method::POST, &path, Some(value)).await?
            }
        };
        let latency = started.elapsed();
        let after = self.state(&c.id).await?;
        Ok(Observed::from_states(&before, &after, &payloads(&result["interrupts"]), latency))
    }
}
