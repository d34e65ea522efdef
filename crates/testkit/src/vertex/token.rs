//! The Vertex fake's OAuth token endpoint: checks RS256 JWT-bearer assertions made
//! from service-account keys and issues short opaque access tokens.
//!
//! Assertions from a registered service account are verified with its public key;
//! others are refused unless the issuer accepts unknown keys (the CLI default, so
//! any local key file works offline), in which case only their claims are checked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The scope an assertion must ask for.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The canonical Google token endpoint, also accepted as the assertion audience.
pub const GOOGLE_TOKEN_ENDPOINT: &str = "https://oauth2.googleapis.com/token";

/// A throwaway RSA key for tests, never used anywhere real.
pub const TEST_PRIVATE_KEY_PEM: &str = include_str!("test_sa_key.pem");
/// The public half of [`TEST_PRIVATE_KEY_PEM`].
pub const TEST_PUBLIC_KEY_PEM: &str = include_str!("test_sa_key.pub.pem");
/// The e-mail of the test service account.
pub const TEST_CLIENT_EMAIL: &str = "switchboard-test@fake-project.iam.gserviceaccount.com";

/// A service-account key JSON for the test account whose `token_uri` is `token_uri`.
pub fn test_service_account_json(token_uri: &str, project_id: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "fake-key-1",
        "private_key": TEST_PRIVATE_KEY_PEM,
        "client_email": TEST_CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    #[serde(default)]
    scope: String,
    iat: u64,
    exp: u64,
}

/// Issues and checks access tokens.
pub struct TokenIssuer {
    keys: HashMap<String, DecodingKey>,
    accept_unknown: bool,
    lifetime: Mutex<Duration>,
    issued: Mutex<HashMap<String, Instant>>,
    counter: AtomicU64,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("accounts", &self.keys.keys().collect::<Vec<_>>())
            .field("accept_unknown", &self.accept_unknown)
            .finish_non_exhaustive()
    }
}

/// A refused grant: the HTTP status and the OAuth error JSON.
#[derive(Debug, Clone)]
pub struct GrantError {
    /// 400 for bad grants, as Google answers.
    pub status: u16,
    /// `{"error": …, "error_description": …}`.
    pub body: serde_json::Value,
}

fn grant_error(error: &str, description: &str) -> GrantError {
    GrantError { status: 400, body: serde_json::json!({"error": error, "error_description": description}) }
}

impl TokenIssuer {
    /// An issuer that knows the test account and, if `accept_unknown`, trusts the
    /// claims of any other.
    pub fn new(accept_unknown: bool) -> Self {
        let mut keys = HashMap::new();
        keys.insert(
            TEST_CLIENT_EMAIL.to_owned(),
            DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes())
                .expect("the bundled test public key is valid PEM"),
        );
        Self {
            keys,
            accept_unknown,
            lifetime: Mutex::new(Duration::from_secs(3599)),
            issued: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// Sets the lifetime of tokens issued from now on (tests use short ones).
    pub fn set_lifetime(&self, lifetime: Duration) {
        *self.lifetime.lock().expect("lock poisoned") = lifetime;
    }

    /// How many tokens were issued so far.
    pub fn issued_count(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    /// Handles a form-encoded JWT-bearer grant; `expected_aud` is this endpoint's URL.
    ///
    /// # Errors
    /// [`GrantError`] for a wrong grant type, a bad signature, audience, scope or time.
    pub fn exchange(&self, form: &str, expected_aud: &str) -> Result<(String, u64), GrantError> {
        let fields: HashMap<String, String> = form
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (form_decode(k), form_decode(v)))
            .collect();
        if fields.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return Err(grant_error("unsupported_grant_type", "Invalid grant_type"));
        }
        let assertion = fields
            .get("assertion")
            .ok_or_else(|| grant_error("invalid_request", "Missing required parameter: assertion"))?;
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| grant_error("invalid_grant", "Invalid JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(grant_error("invalid_grant", "Invalid JWT: alg must be RS256"));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        // Google accepts its canonical endpoint as audience whatever `token_uri` says
        // (google-auth always uses it), or the endpoint itself.
        validation.set_audience(&[expected_aud, GOOGLE_TOKEN_ENDPOINT]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.leeway = 60;
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Claims>(assertion)
            .map_err(|e| grant_error("invalid_grant", &format!("Invalid JWT: {e}")))?
            .claims;
        let claims = match self.keys.get(&unverified.iss) {
            Some(key) => {
                jsonwebtoken::decode::<Claims>(assertion, key, &validation)
                    .map_err(|e| match e.kind() {
                        jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                            grant_error("invalid_grant", "Invalid JWT Signature.")
                        }
                        other => grant_error("invalid_grant", &format!("Invalid JWT: {other:?}")),
                    })?
                    .claims
            }
            None if self.accept_unknown => unverified,
            None => return Err(grant_error("invalid_grant", "Invalid JWT Signature.")),
        };
        if claims.aud != expected_aud && claims.aud != GOOGLE_TOKEN_ENDPOINT {
            return Err(grant_error("invalid_grant", "Invalid JWT: audience is not this endpoint"));
        }
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if claims.exp <= claims.iat || claims.exp - claims.iat > 3600 || claims.iat > now + 60 {
            return Err(grant_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
            ));
        }
        if !claims.scope.split(' ').any(|s| s == CLOUD_PLATFORM_SCOPE) {
            return Err(grant_error("invalid_scope", "Invalid OAuth scope or ID token audience provided."));
        }
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("ya29.fake-{n}-{:x}", now.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let lifetime = *self.lifetime.lock().expect("lock poisoned");
        self.issued.lock().expect("lock poisoned").insert(token.clone(), Instant::now() + lifetime);
        Ok((token, lifetime.as_secs()))
    }

    /// Whether `token` was issued here and has not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        self.issued.lock().expect("lock poisoned").get(token).is_some_and(|exp| Instant::now() < *exp)
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assertion(key_pem: &str, iss: &str, aud: &str, scope: &str) -> String {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_secs();
        let claims = serde_json::json!({"iss": iss, "aud": aud, "scope": scope, "iat": now, "exp": now + 3600});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::RS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes()).expect("pem"),
        )
        .expect("sign")
    }

    const AUD: &str = "http://127.0.0.1:1/token";

    fn form(jwt: &str) -> String {
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}")
    }

    #[test]
    fn valid_assertion_gets_a_token_that_checks() {
        let issuer = TokenIssuer::new(false);
        let jwt = assertion(TEST_PRIVATE_KEY_PEM, TEST_CLIENT_EMAIL, AUD, CLOUD_PLATFORM_SCOPE);
        let (tok, ttl) = issuer.exchange(&form(&jwt), AUD).expect("granted");
        assert!(issuer.is_valid(&tok));
        assert!(!issuer.is_valid("ya29.forged"));
        assert_eq!(ttl, 3599);
        assert_eq!(issuer.issued_count(), 1);
    }

    #[test]
    fn wrong_audience_scope_or_tampering_is_refused() {
        let issuer = TokenIssuer::new(false);
        let jwt = assertion(TEST_PRIVATE_KEY_PEM, TEST_CLIENT_EMAIL, "http://elsewhere/token", CLOUD_PLATFORM_SCOPE);
        assert!(issuer.exchange(&form(&jwt), AUD).is_err());
        let jwt = assertion(TEST_PRIVATE_KEY_PEM, TEST_CLIENT_EMAIL, AUD, "openid");
        assert_eq!(issuer.exchange(&form(&jwt), AUD).expect_err("scope").body["error"], "invalid_scope");
        let jwt = assertion(TEST_PRIVATE_KEY_PEM, TEST_CLIENT_EMAIL, AUD, CLOUD_PLATFORM_SCOPE);
        let mut parts: Vec<&str> = jwt.split('.').collect();
        // Change the signature's first character to a different one (a fixed "A" left it
        // unchanged whenever the signature already began with "A", one run in 64).
        let first = if parts[2].starts_with('A') { 'B' } else { 'A' };
        let forged_sig = format!("{first}{}", &parts[2][1..]);
        parts[2] = &forged_sig;
        assert!(issuer.exchange(&form(&parts.join(".")), AUD).is_err());
        // Unknown accounts are refused unless the issuer trusts them.
        let jwt = assertion(TEST_PRIVATE_KEY_PEM, "other@x.iam.gserviceaccount.com", AUD, CLOUD_PLATFORM_SCOPE);
        assert!(issuer.exchange(&form(&jwt), AUD).is_err());
        assert!(TokenIssuer::new(true).exchange(&form(&jwt), AUD).is_ok());
        assert_eq!(issuer.issued_count(), 0);
    }

    #[test]
    fn canonical_google_audience_is_accepted() {
        let issuer = TokenIssuer::new(false);
        let jwt = assertion(TEST_PRIVATE_KEY_PEM, TEST_CLIENT_EMAIL, GOOGLE_TOKEN_ENDPOINT, CLOUD_PLATFORM_SCOPE);
        assert!(issuer.exchange(&form(&jwt), AUD).is_ok());
    }
}
