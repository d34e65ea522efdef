//! The Gemini [`ChatModel`]: Vertex AI or the Developer API, chosen by the auth.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::auth::{AuthError, GoogleAuth, ServiceAccountKey, TokenSource};
use super::{VENDOR_GEMINI, VENDOR_VERTEX, convert, stream};
use crate::error::ProviderError;
use crate::event::EventStream;
use crate::http;
use crate::model::{Capabilities, ChatModel, ModelId};
use crate::secret::Secret;
use crate::types::{ChatRequest, ChatResponse};

/// Default Vertex location.
pub const DEFAULT_LOCATION: &str = "us-central1";

/// Settings of a Gemini model.
#[derive(Debug, Clone)]
pub struct GeminiConfig {
    /// Service account or access token (Vertex AI), or API key (Developer API).
    pub auth: GoogleAuth,
    /// Vertex project; defaults to the service account's `project_id`.
    pub project: Option<String>,
    /// Vertex location (`us-central1`, `europe-west4`, `global`).
    pub location: String,
    /// Endpoint override (a fake, a private endpoint).
    pub endpoint: Option<String>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Deadline for a whole call, body included; for a stream, for its response headers.
    pub request_timeout: Duration,
}

impl GeminiConfig {
    /// Vertex AI with a service-account key file's JSON text.
    ///
    /// # Errors
    /// [`AuthError::InvalidKey`] if the JSON or its private key is unusable.
    pub fn vertex_service_account(
        key_json: &str,
        project: Option<String>,
        location: impl Into<String>,
    ) -> Result<Self, AuthError> {
        let key = ServiceAccountKey::from_json(key_json)?;
        let source = TokenSource::new(
            key,
            http::client(http::DEFAULT_CONNECT_TIMEOUT).map_err(|e| AuthError::InvalidKey(e.to_string()))?,
            http::DEFAULT_CONNECT_TIMEOUT,
        )?;
        Ok(Self {
            auth: GoogleAuth::ServiceAccount(Arc::new(source)),
            project,
            location: location.into(),
            endpoint: None,
            connect_timeout: http::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: http::DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// The Gemini Developer API with an API key.
    pub fn api_key(key: Secret) -> Self {
        Self {
            auth: GoogleAuth::ApiKey(key),
            project: None,
            location: DEFAULT_LOCATION.to_owned(),
            endpoint: None,
            connect_timeout: http::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: http::DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// From the environment: `GEMINI_API_KEY` / `GOOGLE_API_KEY` select the Developer
    /// API; otherwise `GOOGLE_APPLICATION_CREDENTIALS` (a service-account key file),
    /// `GOOGLE_CLOUD_PROJECT` and `GOOGLE_CLOUD_LOCATION` select Vertex AI.
    ///
    /// # Errors
    /// [`AuthError::InvalidKey`] when neither is configured or the key file is unusable.
    pub fn from_env() -> Result<Self, AuthError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(key) = var("GEMINI_API_KEY").or_else(|| var("GOOGLE_API_KEY")) {
            return Ok(Self::api_key(Secret::new(key)));
        }
        let path = var("GOOGLE_APPLICATION_CREDENTIALS").ok_or_else(|| {
            AuthError::InvalidKey("set GEMINI_API_KEY, or GOOGLE_APPLICATION_CREDENTIALS for Vertex AI".into())
        })?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| AuthError::InvalidKey(format!("cannot read the key file: {e}")))?;
        Self::vertex_service_account(
            &text,
            var("GOOGLE_CLOUD_PROJECT"),
            var("GOOGLE_CLOUD_LOCATION").unwrap_or_else(|| DEFAULT_LOCATION.to_owned()),
        )
    }
}

/// A Gemini model on Vertex AI or the Developer API.
#[derive(Debug, Clone)]
pub struct Gemini {
    id: ModelId,
    vendor: &'static str,
    config: GeminiConfig,
    /// URL up to the method, e.g. `…/models/gemini-2.5-flash`.
    model_url: String,
    http: reqwest::Client,
}

fn auth_error(vendor: &'static str, e: AuthError) -> ProviderError {
    match e {
        AuthError::Rejected { status, error } => ProviderError::Api {
            vendor,
            status,
            retryable: status == 429 || status >= 500,
            kind: if error.is_empty() { "token_exchange".into() } else { error },
            message: "the OAuth token endpoint refused the service-account grant".into(),
            retry_after: None,
            request_id: None,
        },
        AuthError::Transport { message, connect } => {
            ProviderError::Transport { vendor, message: format!("token endpoint: {message}"), connect }
        }
        other => ProviderError::InvalidRequest(other.to_string()),
    }
}

impl Gemini {
    /// A model, e.g. `gemini-2.5-flash`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] if Vertex has no project, or the HTTP client
    /// cannot be built.
    pub fn new(model: impl Into<String>, config: GeminiConfig) -> Result<Self, ProviderError> {
        let model = model.into();
        let (vendor, model_url) = match &config.auth {
            GoogleAuth::ApiKey(_) => {
                let base =
                    config.endpoint.clone().unwrap_or_else(|| "https://generativelanguage.googleapis.com".to_owned());
                (VENDOR_GEMINI, http::join_url(&base, &format!("/v1beta/models/{model}")))
            }
            GoogleAuth::ServiceAccount(_) | GoogleAuth::AccessToken(_) => {
                let project = config
                    .project
                    .clone()
                    .or_else(|| match &config.auth {
                        GoogleAuth::ServiceAccount(s) => s.project_id().map(str::to_owned),
                        _ => None,
                    })
                    .ok_or_else(|| ProviderError::InvalidRequest("Vertex AI needs a project id".into()))?;
                let loc = &config.location;
                let base = config.endpoint.clone().unwrap_or_else(|| {
                    if loc == "global" {
                        "https://aiplatform.googleapis.com".to_owned()
                    } else {
                        format!("https://{loc}-aiplatform.googleapis.com")
                    }
                });
                (
                    VENDOR_VERTEX,
                    http::join_url(
                        &base,
                        &format!("/v1/projects/{project}/locations/{loc}/publishers/google/models/{model}"),
                    ),
                )
            }
        };
        Ok(Self {
            id: ModelId::new(vendor, model),
            vendor,
            http: http::client(config.connect_timeout)?,
            model_url,
            config,
        })
    }

    /// Uses another provider name in the [`ModelId`] (for config-named providers).
    #[must_use]
    pub fn with_provider_name(mut self, provider: impl Into<String>) -> Self {
        self.id.provider = provider.into();
        self
    }

    async fn send(
        &self,
        method: &str,
        req: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<reqwest::Response, ProviderError> {
        let vertex = self.vendor == VENDOR_VERTEX;
        let mut body = serde_json::to_value(convert::request(req, vertex)?)
            .map_err(|e| ProviderError::InvalidRequest(format!("cannot encode request: {e}")))?;
        http::merge_extra(&mut body, &req.extra);
        let query = if method == "streamGenerateContent" { "?alt=sse" } else { "" };
        let rb = self.http.post(format!("{}:{method}{query}", self.model_url)).json(&body);
        let rb = match &self.config.auth {
            GoogleAuth::ApiKey(key) => rb.header("x-goog-api-key", key.expose()),
            GoogleAuth::AccessToken(token) => rb.bearer_auth(token.expose()),
            GoogleAuth::ServiceAccount(source) => {
                let token = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(ProviderError::Cancelled),
                    t = source.token() => t.map_err(|e| auth_error(self.vendor, e))?,
                };
                rb.bearer_auth(token.expose())
            }
        };
        let streaming = method == "streamGenerateContent";
        let resp = http::send(self.vendor, rb, self.config.request_timeout, streaming, cancel).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        if resp.status().as_u16() == 401
            && let GoogleAuth::ServiceAccount(source) = &self.config.auth
        {
            // The token was revoked or the clock is off: fetch a new one next time.
            source.invalidate().await;
        }
        let e = http::error_response(resp, "x-request-id", cancel).await;
        Err(convert::http_error(self.vendor, e))
    }
}

impl ChatModel for Gemini {
    fn id(&self) -> &ModelId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { streaming: true, tools: true, native_structured_output: true }
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let resp = self.send("generateContent", &req, &cancel).await?;
        let wire = http::json_body(self.vendor, resp, self.config.request_timeout, &cancel).await?;
        convert::response(self.vendor, wire, &self.id.model)
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let resp = self.send("streamGenerateContent", &req, &cancel).await?;
        Ok(http::sse_stream(self.vendor, resp, stream::Decoder::new(self.vendor), cancel))
    }
}
