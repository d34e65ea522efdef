//! Google credentials: a service-account key exchanged for OAuth access tokens
//! (RS256 JWT bearer grant), cached and refreshed before expiry, or a Gemini API key.
//!
//! The token endpoint is the key file's `token_uri`, so tests point it at a fake.
//! Only one refresh runs at a time: concurrent callers wait on the same lock and
//! reuse the fresh token. The private key and tokens are [`Secret`]s.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::Secret;

/// The OAuth scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, used when a key file has no `token_uri`.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Tokens are refreshed this long before they expire.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Lifetime asked for in the JWT assertion (Google's maximum).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The fields of a service-account key JSON file that the grant needs.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    /// The service account's e-mail, the JWT issuer.
    pub client_email: String,
    /// The PEM private key (PKCS#8).
    #[serde(deserialize_with = "secret_string")]
    private_key: Secret,
    /// Id of the key, sent as the JWT `kid`.
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// Where to exchange the assertion for a token.
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
    /// The project the key belongs to, a default for the Vertex project.
    #[serde(default)]
    pub project_id: Option<String>,
}

fn secret_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

fn default_token_uri() -> String {
    DEFAULT_TOKEN_URI.to_owned()
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key", &self.private_key)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key file is not valid JSON of the expected shape, or its key is not an RSA PEM.
    #[error("invalid service-account key: {0}")]
    InvalidKey(String),
    /// The assertion could not be signed.
    #[error("cannot sign the JWT assertion: {0}")]
    Sign(String),
    /// The token endpoint answered with an error status.
    #[error("token endpoint rejected the grant ({status}): {error}")]
    Rejected {
        /// HTTP status of the token endpoint.
        status: u16,
        /// OAuth `error` code (e.g. `invalid_grant`), never the assertion.
        error: String,
    },
    /// The token endpoint could not be reached, timed out, or sent an unreadable reply.
    #[error("token endpoint unreachable: {message}")]
    Transport {
        /// What failed (never the assertion).
        message: String,
        /// Whether the connection itself failed (nothing was sent).
        connect: bool,
    },
}

impl AuthError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Rejected { status, .. } => *status == 429 || *status >= 500,
            Self::InvalidKey(_) | Self::Sign(_) => false,
        }
    }
}

impl ServiceAccountKey {
    /// Parses a key file's JSON text.
    ///
    /// # Errors
    /// [`AuthError::InvalidKey`] if fields are missing; the text is never echoed.
    pub fn from_json(text: &str) -> Result<Self, AuthError> {
        serde_json::from_str(text).map_err(|e| {
            // serde's message can quote input; keep only its position.
            AuthError::InvalidKey(format!("not a service-account key (line {}, column {})", e.line(), e.column()))
        })
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenErrorReply {
    #[serde(default)]
    error: String,
}

struct Cached {
    token: Secret,
    refresh_at: Instant,
}

/// Exchanges a service-account key for access tokens and caches them.
pub struct TokenSource {
    key: ServiceAccountKey,
    signing_key: jsonwebtoken::EncodingKey,
    scope: String,
    http: reqwest::Client,
    timeout: Duration,
    refresh_margin: Duration,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").field("key", &self.key).field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A token source for `key` with the cloud-platform scope.
    ///
    /// # Errors
    /// [`AuthError::InvalidKey`] if the private key is not an RSA PEM.
    pub fn new(key: ServiceAccountKey, http: reqwest::Client, timeout: Duration) -> Result<Self, AuthError> {
        let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.expose().as_bytes())
            .map_err(|_| AuthError::InvalidKey("private_key is not an RSA PEM key".into()))?;
        Ok(Self {
            key,
            signing_key,
            scope: CLOUD_PLATFORM_SCOPE.to_owned(),
            http,
            timeout,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// Changes how long before expiry a token is refreshed.
    #[must_use]
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// The service account's project id, if the key names one.
    pub fn project_id(&self) -> Option<&str> {
        self.key.project_id.as_deref()
    }

    /// A valid access token: the cached one, or a fresh one when it is within the
    /// refresh margin of its expiry.
    ///
    /// # Errors
    /// [`AuthError`] if signing or the exchange fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled refresh leaves the cache as it was.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drops the cached token (after the API answered 401 with it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    fn assertion(&self) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| AuthError::Sign("system clock before 1970".into()))?
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid.clone_from(&self.key.private_key_id);
        let claims = Claims {
            iss: &self.key.client_email,
            scope: &self.scope,
            aud: &self.key.token_uri,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.signing_key).map_err(|e| AuthError::Sign(e.to_string()))
    }

    async fn fetch(&self) -> Result<Cached, AuthError> {
        let assertion = self.assertion()?;
        let started = Instant::now();
        let form = format!("grant_type={}&assertion={assertion}", urlencode(JWT_BEARER_GRANT));
        let resp = self
            .http
            .post(&self.key.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| AuthError::Transport { connect: e.is_connect(), message: e.without_url().to_string() })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| AuthError::Transport { connect: false, message: e.without_url().to_string() })?;
        if !status.is_success() {
            let error = serde_json::from_slice::<TokenErrorReply>(&body).map(|e| e.error).unwrap_or_default();
            return Err(AuthError::Rejected { status: status.as_u16(), error });
        }
        let reply: TokenReply = serde_json::from_slice(&body)
            .map_err(|_| AuthError::Transport { connect: false, message: "token reply is not a token JSON".into() })?;
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(ASSERTION_LIFETIME_SECS));
        Ok(Cached {
            token: Secret::new(reply.access_token),
            refresh_at: started + lifetime.saturating_sub(self.refresh_margin),
        })
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How requests to Gemini are authenticated.
#[derive(Debug, Clone)]
pub enum GoogleAuth {
    /// Vertex AI with OAuth tokens from a service account.
    ServiceAccount(std::sync::Arc<TokenSource>),
    /// A fixed bearer token (e.g. from `gcloud auth print-access-token`).
    AccessToken(Secret),
    /// The Gemini Developer API with `x-goog-api-key`.
    ApiKey(Secret),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_json_errors_do_not_echo_content() {
        let err =
            ServiceAccountKey::from_json(r#"{"private_key":"-----BEGIN SECRET"}"#).expect_err("missing client_email");
        assert!(!err.to_string().contains("SECRET"));
        let key = ServiceAccountKey::from_json(r#"{"client_email":"a@b","private_key":"pem-here","project_id":"p"}"#)
            .expect("valid");
        assert_eq!(key.token_uri, DEFAULT_TOKEN_URI);
        assert!(!format!("{key:?}").contains("pem-here"));
        let bad = TokenSource::new(key, reqwest::Client::new(), Duration::from_secs(1));
        assert!(matches!(bad, Err(AuthError::InvalidKey(_))));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(urlencode(JWT_BEARER_GRANT), "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
    }
}
