//! The Bedrock [`ChatModel`]: builds, authenticates and sends Converse requests.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::credentials::{BedrockAuth, CredentialsError, resolve_region};
use super::{VENDOR, convert, sign, stream};
use crate::error::ProviderError;
use crate::event::{EventStream, StreamEvent};
use crate::http;
use crate::model::{Capabilities, ChatModel, ModelId};
use crate::types::{ChatRequest, ChatResponse};

/// Settings of a Bedrock model.
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    /// AWS region, e.g. `us-east-1`; part of the signature scope and the default endpoint.
    pub region: String,
    /// How requests are authenticated.
    pub auth: BedrockAuth,
    /// Endpoint override (a fake, a VPC endpoint); default
    /// `https://bedrock-runtime.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Deadline for a whole call, body included; for a stream, for its response headers.
    pub request_timeout: Duration,
}

impl BedrockConfig {
    /// Region and credentials from the environment and the AWS shared files
    /// (`AWS_REGION`, `AWS_ACCESS_KEY_ID`…, `AWS_PROFILE`, `AWS_BEARER_TOKEN_BEDROCK`).
    ///
    /// # Errors
    /// [`CredentialsError`] when no region or credentials are found.
    pub fn from_env() -> Result<Self, CredentialsError> {
        let env = |k: &str| std::env::var(k).ok();
        Self::from_lookup(&env)
    }

    /// As [`BedrockConfig::from_env`], with the environment given as a lookup function.
    ///
    /// # Errors
    /// [`CredentialsError`] when no region or credentials are found.
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        Ok(Self {
            region: resolve_region(env)?,
            auth: BedrockAuth::resolve(env)?,
            endpoint: env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME").filter(|v| !v.is_empty()),
            connect_timeout: http::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: http::DEFAULT_REQUEST_TIMEOUT,
        })
    }
}

/// A Bedrock model behind the Converse API.
#[derive(Debug, Clone)]
pub struct Bedrock {
    id: ModelId,
    config: BedrockConfig,
    base: String,
    http: reqwest::Client,
}

/// Percent-encodes a model id as one path label (`:` → `%3A`, `/` → `%2F`).
fn path_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Bedrock {
    /// A model (`anthropic.claude-3-5-haiku-20241022-v1:0`, an inference profile or an ARN).
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] if the HTTP client cannot be built.
    pub fn new(model: impl Into<String>, config: BedrockConfig) -> Result<Self, ProviderError> {
        let model = model.into();
        let base = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://bedrock-runtime.{}.amazonaws.com", config.region));
        Ok(Self { id: ModelId::new(VENDOR, model), http: http::client(config.connect_timeout)?, base, config })
    }

    /// Uses another provider name in the [`ModelId`] (for config-named providers).
    #[must_use]
    pub fn with_provider_name(mut self, provider: impl Into<String>) -> Self {
        self.id.provider = provider.into();
        self
    }

    fn url(&self, op: &str) -> String {
        http::join_url(&self.base, &format!("/model/{}/{op}", path_label(&self.id.model)))
    }

    /// Builds the signed (or bearer-authenticated) request.
    fn build(&self, op: &str, req: &ChatRequest) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut body = serde_json::to_value(convert::request(req))
            .map_err(|e| ProviderError::InvalidRequest(format!("cannot encode request: {e}")))?;
        http::merge_extra(&mut body, &req.extra);
        let body = serde_json::to_vec(&body)
            .map_err(|e| ProviderError::InvalidRequest(format!("cannot encode request: {e}")))?;
        let url = self.url(op);
        let accept = if op == "converse-stream" { "application/vnd.amazon.eventstream" } else { "application/json" };
        let mut rb = self.http.post(&url).header("content-type", "application/json").header("accept", accept);
        match &self.config.auth {
            BedrockAuth::ApiKey(key) => {
                rb = rb.header("authorization", format!("Bearer {}", key.expose()));
            }
            BedrockAuth::SigV4(creds) => {
                let signed = sign::sign_request(
                    creds,
                    &self.config.region,
                    sign::SIGNING_NAME,
                    SystemTime::now(),
                    sign::Outgoing {
                        method: "POST",
                        url: &url,
                        headers: &[("content-type", "application/json")],
                        body: &body,
                    },
                )
                .map_err(|e| ProviderError::InvalidRequest(e.to_string()))?;
                for (name, value) in signed {
                    rb = rb.header(name, value);
                }
            }
        }
        Ok(rb.body(body))
    }

    async fn send(
        &self,
        op: &str,
        req: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<(reqwest::Response, Option<String>), ProviderError> {
        let rb = self.build(op, req)?;
        let streaming = op == "converse-stream";
        let resp = http::send(VENDOR, rb, self.config.request_timeout, streaming, cancel).await?;
        let request_id = resp.headers().get("x-amzn-requestid").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if !resp.status().is_success() {
            let error_type = resp.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let e = http::error_response(resp, "x-amzn-requestid", cancel).await;
            return Err(convert::http_error(e, error_type.as_deref()));
        }
        Ok((resp, request_id))
    }
}

impl ChatModel for Bedrock {
    fn id(&self) -> &ModelId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { streaming: true, tools: true, native_structured_output: false }
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let (resp, request_id) = self.send("converse", &req, &cancel).await?;
        let wire = http::json_body(VENDOR, resp, self.config.request_timeout, &cancel).await?;
        convert::response(wire, request_id, &self.id.model)
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let (resp, request_id) = self.send("converse-stream", &req, &cancel).await?;
        let start = StreamEvent::Start { id: request_id, model: Some(self.id.model.clone()) };
        Ok(stream::event_stream(resp, start, cancel, self.config.request_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_one_path_label() {
        assert_eq!(
            path_label("anthropic.claude-3-5-haiku-20241022-v1:0"),
            "anthropic.claude-3-5-haiku-20241022-v1%3A0"
        );
        assert_eq!(
            path_label("arn:aws:bedrock:us-east-1::foundation-model/x"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fx"
        );
    }
}
