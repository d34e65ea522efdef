//! JWT bearer tokens: keys generated here (RSA 2048 and P-256), key sets from a file and from a
//! JWKS URL served on a real local socket; every way a token can be wrong is a 401 JSON error,
//! a missing scope is a 403, and a token's tenant sees only its tenant's rows.

#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{call, error_code};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_server::auth::jwt::{JwksSource, JwtConfig, JwtVerifier};

const ISS: &str = "https://idp.test";
const AUD: &str = "switchboard";

struct Keys {
    rsa: EncodingKey,
    rsa_n: Vec<u8>,
    ec: EncodingKey,
    rsa_jwk: Value,
    ec_jwk: Value,
}

fn keys() -> Keys {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::EncodePrivateKey as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    let mut rng = rand::rngs::OsRng;
    let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let n = rsa_key.n().to_bytes_be();
    let rsa_jwk = json!({"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig",
        "n": B64.encode(&n), "e": B64.encode(rsa_key.e().to_bytes_be())});
    let ec_key = p256::SecretKey::random(&mut rng);
    let point = ec_key.public_key().to_encoded_point(false);
    // No `alg`: ES256 is implied by the curve.
    let ec_jwk = json!({"kty": "EC", "kid": "e1", "crv": "P-256",
        "x": B64.encode(point.x().unwrap()), "y": B64.encode(point.y().unwrap())});
    Keys {
        rsa: EncodingKey::from_rsa_der(rsa_key.to_pkcs1_der().unwrap().as_bytes()),
        rsa_n: n,
        ec: EncodingKey::from_ec_der(ec_key.to_pkcs8_der().unwrap().as_bytes()),
        rsa_jwk,
        ec_jwk,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(tenant: &str, scope: &str) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "user-1", "exp": now() + 600, "iat": now(), "tenant": tenant, "scope": scope})
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

/// A token assembled by hand (for headers no library would sign).
fn raw_token(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()), B64.encode(sig))
}

async fn env_with(source: JwksSource, tweak: impl FnOnce(&mut JwtConfig)) -> (common::Env, Router) {
    let mut config = JwtConfig::new(ISS, AUD, source);
    tweak(&mut config);
    let env = common::setup_jwt(JwtVerifier::new(config).await.unwrap()).await;
    let app = env.app.clone();
    (env, app)
}

/// A JWKS served over HTTP on a local socket, with a fetch counter; the document can be replaced.
struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    doc: Arc<Mutex<Value>>,
}

async fn jwks_server(doc: Value) -> JwksServer {
    let fetches = Arc::new(AtomicUsize::new(0));
    let doc = Arc::new(Mutex::new(doc));
    let (f, d) = (fetches.clone(), doc.clone());
    let app = Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (f, d) = (f.clone(), d.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(d.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    JwksServer { url: format!("http://{addr}/.well-known/jwks.json"), fetches, doc }
}

async fn expect_401(app: &Router, token: &str, why: &str) {
    let (s, v) = call(app, "GET", "/v1/conversations", Some(token), None).await;
    assert_eq!(s, 401, "{why}: {v}");
    assert_eq!(error_code(s, &v), "unauthorized", "{why}");
}

#[tokio::test]
async fn tokens_from_a_jwks_file_are_checked_in_every_way() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, json!({"keys": [k.rsa_jwk, k.ec_jwk]}).to_string()).unwrap();
    let (env, app) = env_with(JwksSource::File(file), |_| {}).await;

    // Valid RS256 and ES256 tokens; each sees only its tenant's rows.
    let acme = sign(Algorithm::RS256, "r1", &k.rsa, &claims("acme", "chat desk"));
    let globex = sign(Algorithm::ES256, "e1", &k.ec, &claims("globex", "chat"));
    let (s, conv) = call(&app, "POST", "/v1/conversations", Some(&acme), Some(json!({}))).await;
    assert_eq!(s, 201, "{conv}");
    let id = conv["id"].as_str().unwrap();
    let (s, _) = call(&app, "GET", &format!("/v1/conversations/{id}"), Some(&acme), None).await;
    assert_eq!(s, 200);
    let (s, v) = call(&app, "GET", &format!("/v1/conversations/{id}"), Some(&globex), None).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(&app, "GET", "/v1/conversations", Some(&globex), None).await;
    assert_eq!((s.as_u16(), v["items"].as_array().unwrap().len()), (200, 0));
    // The same tenant through an API key sees the token's conversation, and keys still work.
    let (s, _) = call(&app, "GET", &format!("/v1/conversations/{id}"), Some(&env.a), None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&app, "GET", &format!("/v1/conversations/{id}"), Some(&env.b), None).await;
    assert_eq!(s, 404);

    // Scopes: none, or the wrong one, is a 403.
    let none = sign(Algorithm::RS256, "r1", &k.rsa, &claims("acme", ""));
    let (s, v) = call(&app, "POST", "/v1/conversations", Some(&none), Some(json!({}))).await;
    assert_eq!((s.as_u16(), error_code(s, &v)), (403, "forbidden".into()));
    let desk = sign(Algorithm::RS256, "r1", &k.rsa, &claims("acme", "desk openid"));
    let (s, _) = call(&app, "POST", "/v1/conversations", Some(&desk), Some(json!({}))).await;
    assert_eq!(s, 403);
    let (s, _) = call(&app, "GET", &format!("/v1/conversations/{id}/history"), Some(&desk), None).await;
    assert_eq!(s, 200);
    // Scopes as an array are accepted too.
    let mut c = claims("acme", "");
    c["scope"] = json!(["chat"]);
    let (s, _) = call(&app, "GET", "/v1/conversations", Some(&sign(Algorithm::RS256, "r1", &k.rsa, &c)), None).await;
    assert_eq!(s, 200);

    // Every bad token is a 401 with the JSON error shape.
    let mut c = claims("acme", "chat");
    c["exp"] = json!(now() - 120);
    expect_401(&app, &sign(Algorithm::RS256, "r1", &k.rsa, &c), "expired").await;
    let mut c = claims("acme", "chat");
    c["exp"] = json!(now() - 10);
    let (s, _) = call(&app, "GET", "/v1/conversations", Some(&sign(Algorithm::RS256, "r1", &k.rsa, &c)), None).await;
    assert_eq!(s, 200, "within the leeway");
    let mut c = claims("acme", "chat");
    c["iss"] = json!("https://evil.test");
    expect_401(&app, &sign(Algorithm::RS256, "r1", &k.rsa, &c), "wrong iss").await;
    let mut c = claims("acme", "chat");
    c["aud"] = json!("someone-else");
    expect_401(&app, &sign(Algorithm::RS256, "r1", &k.rsa, &c), "wrong aud").await;
    let mut c = claims("acme", "chat");
    c.as_object_mut().unwrap().remove("sub");
    expect_401(&app, &sign(Algorithm::RS256, "r1", &k.rsa, &c), "missing sub").await;
    let mut c = claims("acme", "chat");
    c.as_object_mut().unwrap().remove("exp");
    expect_401(&app, &sign(Algorithm::RS256, "r1", &k.rsa, &c), "missing exp").await;
    let mut c = claims("acme", "chat");
    c.as_object_mut().unwrap().remove("tenant");
    expect_401(&app, &sign(Algorithm::RS256, "r1", &k.rsa, &c), "missing tenant").await;
    expect_401(&app, &sign(Algorithm::RS256, "r9", &k.rsa, &claims("acme", "chat")), "unknown kid").await;
    // The EC key's signature under the RSA key's id, and the reverse: the key pins the algorithm.
    expect_401(&app, &sign(Algorithm::ES256, "r1", &k.ec, &claims("acme", "chat")), "alg mismatch (ES256 on RSA key)")
        .await;
    expect_401(&app, &sign(Algorithm::RS256, "e1", &k.rsa, &claims("acme", "chat")), "alg mismatch (RS256 on EC key)")
        .await;
    // HS256 with the RSA public key as the shared secret (the classic confusion attack).
    let hs = sign(Algorithm::HS256, "r1", &EncodingKey::from_secret(&k.rsa_n), &claims("acme", "chat"));
    expect_401(&app, &hs, "HS256").await;
    expect_401(&app, &raw_token(&json!({"alg": "none", "kid": "r1"}), &claims("acme", "chat"), b""), "alg none").await;
    let none_unsigned = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        B64.encode(claims("acme", "admin").to_string())
    );
    expect_401(&app, &none_unsigned, "alg none, empty signature").await;
    // A valid token whose payload is swapped for another tenant's keeps a signature that no longer matches.
    let parts: Vec<&str> = acme.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], B64.encode(claims("globex", "admin").to_string()), parts[2]);
    expect_401(&app, &forged, "tampered payload").await;
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    expect_401(&app, &format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig)), "tampered signature").await;
    expect_401(&app, "not.a.jwt", "garbage").await;
    expect_401(&app, "sb_0000", "unknown API key").await;
}

#[tokio::test]
async fn a_jwks_url_is_fetched_cached_and_refreshed_at_a_limited_rate() {
    let k = keys();
    let server = jwks_server(json!({"keys": [k.rsa_jwk]})).await;
    let (_env, app) = env_with(JwksSource::Url(server.url.clone()), |c| {
        c.refresh_min_interval = Duration::from_millis(400);
    })
    .await;
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "fetched once at start");
    let ok = sign(Algorithm::RS256, "r1", &k.rsa, &claims("acme", "chat"));
    for _ in 0..3 {
        let (s, _) = call(&app, "GET", "/v1/conversations", Some(&ok), None).await;
        assert_eq!(s, 200);
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "known keys come from the cache");

    // A token signed by a key the set does not have yet: one refresh, still unknown.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let rotated = sign(Algorithm::ES256, "e1", &k.ec, &claims("acme", "chat"));
    expect_401(&app, &rotated, "unknown kid before rotation").await;
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
    // The IdP publishes the new key; within the interval, unknown kids do not fetch again.
    server.doc.lock().unwrap()["keys"].as_array_mut().unwrap().push(k.ec_jwk.clone());
    for _ in 0..5 {
        expect_401(&app, &rotated, "rate-limited refresh").await;
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2, "no fetch storm from unknown kids");
    // After the interval, the next unknown kid refreshes and the rotated key works.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (s, v) = call(&app, "GET", "/v1/conversations", Some(&rotated), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn bad_key_sets_stop_the_start_with_a_clear_message() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let start = |source| JwtVerifier::new(JwtConfig::new(ISS, AUD, source));
    let file = |name: &str, doc: Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, doc.to_string()).unwrap();
        JwksSource::File(p)
    };
    let err = start(JwksSource::File(dir.path().join("missing.json"))).await.unwrap_err();
    assert!(err.contains("jwks_file"), "{err}");
    let err = start(file("hs.json", json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}))).await.unwrap_err();
    assert!(err.contains("no usable key"), "{err}");
    let mut wrong_alg = k.rsa_jwk.clone();
    wrong_alg["alg"] = json!("ES256");
    let err = start(file("alg.json", json!({"keys": [wrong_alg]}))).await.unwrap_err();
    assert!(err.contains("no usable key"), "{err}");
    let err = start(file("bad.json", json!({"nokeys": []}))).await.unwrap_err();
    assert!(err.contains("`keys`"), "{err}");
    // An unreachable URL: the fetch times out or is refused, with the URL in the message.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    let err = start(JwksSource::Url(url.clone())).await.unwrap_err();
    assert!(err.contains(&url), "{err}");
    // A mixed set keeps its usable keys.
    assert!(start(file("mixed.json", json!({"keys": [{"kty": "oct", "k": "eA"}, k.ec_jwk]}))).await.is_ok());
}
