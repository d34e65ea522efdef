//! JWT bearer tokens: RS256 and ES256 signatures checked against keys from a JWKS (a file, or a
//! URL fetched with a timeout and cached), with the algorithm pinned per key.
//!
//! Key design decisions: a key's algorithm comes from the key set (its `alg`, or its type and
//! curve), never from the token, and a token whose header names another algorithm is refused, so
//! `none`, HMAC (a public key used as a shared secret) and RSA/EC confusion cannot pass. `iss`,
//! `aud`, `exp` and `sub` are required and checked with a small leeway. An unknown `kid` makes a
//! URL key set refresh at most once per `refresh_min_interval`, so a flood of forged tokens cannot
//! turn into a flood of fetches. The tenant and scopes come from configurable claims.

use super::{Principal, Scope};
use crate::error::ApiError;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Where the verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document on disk (read once, at start).
    File(PathBuf),
    /// A JWKS document at an `http(s)` URL.
    Url(String),
}

/// JWT settings (validated by the caller's config layer; [`JwtVerifier::new`] checks the keys).
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (the token's `aud` must contain it).
    pub audience: String,
    /// The key set.
    pub source: JwksSource,
    /// The claim that names the tenant.
    pub tenant_claim: String,
    /// The claim with the scopes (a space-separated string or an array of strings).
    pub scope_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Timeout of one JWKS fetch.
    pub fetch_timeout: Duration,
    /// Least time between two fetches caused by unknown key ids.
    pub refresh_min_interval: Duration,
    /// A fetched key set is refreshed when older than this.
    pub cache_ttl: Duration,
}

impl JwtConfig {
    /// Settings with the defaults: `tenant` and `scope` claims, 30 s leeway, 5 s fetch timeout,
    /// refreshes at most every 30 s on unknown key ids, cache for 10 min.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, source: JwksSource) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            source,
            tenant_claim: "tenant".into(),
            scope_claim: "scope".into(),
            leeway: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            refresh_min_interval: Duration::from_secs(30),
            cache_ttl: Duration::from_secs(600),
        }
    }
}

/// A verification key with its pinned algorithm.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys without a `kid` (usable only when the set has a single key).
    anonymous: Vec<Arc<Key>>,
}

impl KeySet {
    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(k) => self.by_kid.get(k).cloned(),
            None if self.by_kid.len() + self.anonymous.len() == 1 => {
                self.by_kid.values().next().or(self.anonymous.first()).cloned()
            }
            None => None,
        }
    }
    fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }
}

/// Checks bearer JWTs and turns them into a [`Principal`].
pub struct JwtVerifier {
    config: JwtConfig,
    http: Option<reqwest::Client>,
    keys: RwLock<(KeySet, Instant)>,
    /// When the last fetch was attempted (serialises fetches).
    last_fetch: tokio::sync::Mutex<Instant>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("issuer", &self.config.issuer).finish_non_exhaustive()
    }
}

/// The algorithm a key is pinned to: its `alg`, else what its type and curve imply.
fn pinned_alg(jwk: &Jwk) -> Result<Algorithm, String> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = base64_len(&p.n);
            if n < 256 {
                return Err(format!("an RSA key of {} bits is too short (at least 2048)", n * 8));
            }
            Algorithm::RS256
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(p) => {
            return Err(format!("curve {:?} is not accepted (P-256 only)", p.curve));
        }
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are not accepted".into()),
        AlgorithmParameters::OctetKeyPair(_) => return Err("OKP keys are not accepted".into()),
    };
    match jwk.common.key_algorithm.as_ref() {
        None => Ok(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Ok(Algorithm::RS256),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Ok(Algorithm::ES256),
        Some(a) => Err(format!("algorithm {a:?} is not accepted for this key (RS256 for RSA, ES256 for P-256)")),
    }
}

/// Bytes encoded by an unpadded base64url string.
fn base64_len(s: &str) -> usize {
    let s = s.trim_end_matches('=');
    s.len() * 3 / 4
}

impl JwtVerifier {
    /// Loads the key set (reads the file, or fetches the URL once).
    ///
    /// # Errors
    /// A message that says what is wrong: unreadable or malformed key set, no usable key, fetch
    /// failure, a URL that is not `http(s)`.
    pub async fn new(config: JwtConfig) -> Result<Self, String> {
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err("jwt: issuer and audience must not be empty".into());
        }
        let http = match &config.source {
            JwksSource::Url(u) => {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(format!("jwt: jwks_url {u:?} is not an http(s) URL"));
                }
                Some(
                    reqwest::Client::builder()
                        .timeout(config.fetch_timeout)
                        .connect_timeout(config.fetch_timeout)
                        .build()
                        .map_err(|e| format!("jwt: HTTP client: {e}"))?,
                )
            }
            JwksSource::File(_) => None,
        };
        let now = Instant::now();
        let v = Self {
            config,
            http,
            keys: RwLock::new((KeySet::default(), now)),
            last_fetch: tokio::sync::Mutex::new(now),
        };
        let set = v.load().await?;
        *v.keys.write().unwrap_or_else(|p| p.into_inner()) = (set, Instant::now());
        Ok(v)
    }

    /// Reads or fetches the key set; keys that cannot be used are skipped with a warning, and a
    /// set with no usable key is an error.
    async fn load(&self) -> Result<KeySet, String> {
        let text = match &self.config.source {
            JwksSource::File(p) => {
                std::fs::read_to_string(p).map_err(|e| format!("jwt: reading jwks_file {}: {e}", p.display()))?
            }
            JwksSource::Url(u) => {
                let http = self.http.as_ref().ok_or("jwt: no HTTP client")?;
                let resp = http.get(u).send().await.map_err(|e| format!("jwt: fetching {u}: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("jwt: fetching {u}: HTTP {}", resp.status()));
                }
                let body = resp.bytes().await.map_err(|e| format!("jwt: fetching {u}: {e}"))?;
                if body.len() > 1 << 20 {
                    return Err(format!("jwt: {u}: key set larger than 1 MiB"));
                }
                String::from_utf8(body.to_vec()).map_err(|_| format!("jwt: {u}: key set is not UTF-8"))?
            }
        };
        self.parse(&text)
    }

    fn parse(&self, text: &str) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("jwt: key set is not JSON: {e}"))?;
        let keys = doc.get("keys").and_then(Value::as_array).ok_or("jwt: key set has no `keys` array")?;
        let mut set = KeySet::default();
        for (i, k) in keys.iter().enumerate() {
            let kid = k.get("kid").and_then(Value::as_str).map(str::to_string);
            let name = kid.clone().unwrap_or_else(|| format!("#{i}"));
            if k.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
                continue;
            }
            let parsed = serde_json::from_value::<Jwk>(k.clone()).map_err(|e| e.to_string()).and_then(|jwk| {
                let alg = pinned_alg(&jwk)?;
                let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
                Ok((alg, key))
            });
            let (alg, key) = match parsed {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(key = %name, error = %e, "jwt: skipping a key of the key set");
                    continue;
                }
            };
            let mut validation = Validation::new(alg);
            validation.leeway = self.config.leeway.as_secs();
            validation.set_issuer(&[&self.config.issuer]);
            validation.set_audience(&[&self.config.audience]);
            validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
            validation.validate_nbf = true;
            let key = Arc::new(Key { alg, key, validation });
            match kid {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.anonymous.push(key),
            }
        }
        if set.len() == 0 {
            return Err("jwt: the key set has no usable key (RS256 with RSA >= 2048 bits, or ES256 with P-256)".into());
        }
        Ok(set)
    }

    /// Fetches the key set again if the source is a URL and the last attempt is old enough.
    async fn refresh(&self, min_interval: Duration) {
        if !matches!(self.config.source, JwksSource::Url(_)) {
            return;
        }
        let mut last = self.last_fetch.lock().await;
        if last.elapsed() < min_interval {
            return;
        }
        *last = Instant::now();
        match self.load().await {
            Ok(set) => *self.keys.write().unwrap_or_else(|p| p.into_inner()) = (set, Instant::now()),
            Err(e) => tracing::warn!(error = %e, "jwt: key set refresh failed; keeping the cached keys"),
        }
    }

    fn find(&self, kid: Option<&str>) -> (Option<Arc<Key>>, bool) {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        (keys.0.find(kid), keys.1.elapsed() > self.config.cache_ttl)
    }

    /// Verifies a token and returns the caller it names.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] for every way a token can be wrong (the message says which).
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let unauthorized = |m: &str| ApiError::Unauthorized(format!("invalid token: {m}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized("malformed header"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(unauthorized(&format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.as_deref();
        let (mut key, stale) = self.find(kid);
        if stale {
            self.refresh(self.config.refresh_min_interval).await;
            key = self.find(kid).0;
        }
        if key.is_none() {
            self.refresh(self.config.refresh_min_interval).await;
            key = self.find(kid).0;
        }
        let key = key.ok_or_else(|| unauthorized("unknown signing key"))?;
        if key.alg != header.alg {
            return Err(unauthorized("the algorithm does not match the key's"));
        }
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &key.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => unauthorized("expired"),
                K::ImmatureSignature => unauthorized("not valid yet"),
                K::InvalidIssuer => unauthorized("wrong issuer"),
                K::InvalidAudience => unauthorized("wrong audience"),
                K::InvalidSignature => unauthorized("bad signature"),
                K::InvalidAlgorithm => unauthorized("the algorithm does not match the key's"),
                K::MissingRequiredClaim(c) => unauthorized(&format!("missing claim `{c}`")),
                _ => unauthorized("malformed"),
            }
        })?;
        let claims = data.claims;
        let sub = claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 256);
        let sub = sub.ok_or_else(|| unauthorized("claim `sub` must be a non-empty string"))?;
        let tenant_claim = &self.config.tenant_claim;
        let tenant = claims
            .get(tenant_claim)
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty() && t.len() <= 128)
            .ok_or_else(|| unauthorized(&format!("claim `{tenant_claim}` (the tenant) is missing or empty")))?;
        let scopes: Vec<Scope> = match claims.get(&self.config.scope_claim) {
            Some(Value::String(s)) => s.split_whitespace().filter_map(|s| Scope::parse(s).ok()).collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).filter_map(|s| Scope::parse(s).ok()).collect(),
            _ => Vec::new(),
        };
        Ok(Principal { tenant: tenant.to_string(), key_id: format!("jwt:{sub}"), scopes })
    }
}
