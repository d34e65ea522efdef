//! API keys, JWT bearer tokens, and the caller's identity. A key is `sb_` and 64 hex digits of OS
//! entropy; only its SHA-256 is stored, so a leaked database does not leak usable keys. A JWT (when
//! configured, see [`jwt`]) is checked against a key set and names its tenant and scopes in
//! claims. Every request to `/v1` resolves to a [`Principal`]: a tenant and scopes. Handlers take
//! the tenant from it and from nowhere else.

pub mod jwt;

use crate::error::ApiError;
use crate::state::{AppState, now_ms, random_hex};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use switchboard_store::records::ApiKeyRecord;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Customer-facing chat: conversations, messages, feedback, runs.
    Chat,
    /// The agent desk: state, history, fork, interrupts.
    Desk,
    /// Everything.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Desk => "desk",
            Self::Admin => "admin",
        }
    }

    /// Parses a scope name.
    ///
    /// # Errors
    /// The unknown name.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "chat" => Ok(Self::Chat),
            "desk" => Ok(Self::Desk),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown scope `{other}` (expected chat, desk or admin)")),
        }
    }
}

/// The SHA-256 of a key, hex.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a key for a tenant and stores its hash; returns the key (shown once) and its record.
///
/// # Errors
/// An empty tenant or scope list, or a store failure.
pub async fn create_key(
    records: &switchboard_store::Records,
    tenant: &str,
    scopes: &[Scope],
) -> Result<(String, ApiKeyRecord), ApiError> {
    if tenant.trim().is_empty() || tenant.len() > 128 {
        return Err(ApiError::Invalid("a tenant name is 1 to 128 characters".into()));
    }
    if scopes.is_empty() {
        return Err(ApiError::Invalid("a key needs at least one scope".into()));
    }
    let key = format!("sb_{}", random_hex(32));
    let mut names: Vec<String> = scopes.iter().map(|s| s.as_str().to_string()).collect();
    names.dedup();
    let rec = ApiKeyRecord {
        id: format!("key_{}", random_hex(8)),
        tenant: tenant.to_string(),
        scopes: names,
        created_at_ms: now_ms(),
    };
    records.insert_key(&rec, &hash_key(&key)).await?;
    Ok((key, rec))
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The caller's tenant: every query is filtered by it.
    pub tenant: String,
    /// The key's id (`jwt:<sub>` for a token): what rate limits count by.
    pub key_id: String,
    pub(crate) scopes: Vec<Scope>,
}

impl Principal {
    /// Who this is in the audit log: `key:<id>` for an API key, `jwt:<sub>` for a token.
    pub fn actor(&self) -> String {
        if self.key_id.starts_with("jwt:") { self.key_id.clone() } else { format!("key:{}", self.key_id) }
    }

    /// Succeeds when the caller has any of `scopes` (admin has all).
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn require(&self, scopes: &[Scope]) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| *s == Scope::Admin || scopes.contains(s)) {
            Ok(())
        } else {
            let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            Err(ApiError::Forbidden(format!("this key needs one of the scopes {names:?}")))
        }
    }
}

fn bearer(parts: &Parts) -> Result<String, ApiError> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::Unauthorized("expected `Authorization: Bearer <key>`".into()));
        }
        return Ok(token.trim().to_string());
    }
    if let Some(v) = parts.headers.get("x-api-key") {
        return v
            .to_str()
            .map(|s| s.trim().to_string())
            .map_err(|_| ApiError::Unauthorized("malformed X-API-Key".into()));
    }
    Err(ApiError::Unauthorized("missing credentials: send `Authorization: Bearer <key>`".into()))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts)?;
        if let Some(jwt) = &state.inner.jwt
            && !key.starts_with("sb_")
            && key.bytes().filter(|b| *b == b'.').count() == 2
        {
            let p = jwt.verify(&key).await?;
            state.take_token(&p.key_id).await?;
            return Ok(p);
        }
        let rec = state.key(&hash_key(&key)).await?.ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))?;
        state.take_token(&rec.id).await?;
        Ok(Principal {
            tenant: rec.tenant,
            key_id: rec.id,
            scopes: rec.scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect(),
        })
    }
}
