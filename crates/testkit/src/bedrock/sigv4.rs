//! An independent SigV4 verifier for the Bedrock fake.
//!
//! Written from the published algorithm with `hmac`/`sha2` only, deliberately not
//! with `aws-sigv4`, so a signature made by the adapter (which uses that crate) or by
//! boto3 is checked by a second implementation. It rebuilds the canonical request
//! from the request as received: the raw, still percent-encoded path is encoded once
//! more, as every AWS service but S3 expects.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The key pairs the fake accepts, and the scope they must be used in.
#[derive(Debug, Clone)]
pub struct SigV4Keys {
    /// `(access key id, secret access key)` pairs.
    pub keys: Vec<(String, String)>,
    /// The signing name required in the credential scope (`bedrock`).
    pub service: String,
    /// Maximum distance between `x-amz-date` and now, in seconds (AWS allows 300).
    pub max_skew_secs: i64,
}

/// Why a signature was refused; the text goes into the fake's 403 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Failure {
    /// No or unparsable `Authorization` header.
    #[error("missing or malformed Authorization header")]
    Malformed,
    /// The access key id is not known to the fake.
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The scope names another service, or `x-amz-date` is absent or too far from now.
    #[error("bad credential scope or request time: {0}")]
    Scope(String),
    /// The signature does not match.
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method."
    )]
    Mismatch,
}

struct Parsed<'a> {
    key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Parsed<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => {}
        }
    }
    let mut scope = cred?.split('/');
    let parsed = Parsed {
        key_id: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed?.split(';').collect(),
        signature: sig?,
    };
    (scope.next()? == "aws4_request").then_some(parsed)
}

/// Encodes every byte but RFC 3986 unreserved characters (and `/` when `keep_slash`).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k), false), uri_encode(&percent_decode(v), false))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `yyyymmddThhmmssZ` to Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    if s.len() != 16 || s.as_bytes()[8] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The SigV4 signature of a request, computed from scratch.
///
/// `headers` is every header received (`name`, `value`), `raw_path` and `raw_query`
/// exactly as on the request line.
#[allow(clippy::too_many_arguments)]
pub fn compute_signature(
    secret: &str,
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &[(String, String)],
    signed_headers: &[&str],
    body: &[u8],
    amz_date: &str,
    scope_date: &str,
    region: &str,
    service: &str,
) -> String {
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload_hash = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amz-content-sha256"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| hex_sha256(body));
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    let canonical_request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{}\n{payload_hash}",
        uri_encode(path, true),
        canonical_query(raw_query),
        signed_headers.join(";"),
    );
    let scope = format!("{scope_date}/{region}/{service}/aws4_request");
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex_sha256(canonical_request.as_bytes()));
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), scope_date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    hex::encode(hmac(&k_signing, &string_to_sign))
}

impl SigV4Keys {
    /// Checks the SigV4 signature of a received request; returns the access key id.
    ///
    /// # Errors
    /// [`SigV4Failure`] saying what is wrong, as AWS would.
    pub fn verify(
        &self,
        method: &str,
        raw_path: &str,
        raw_query: &str,
        headers: &[(String, String)],
        body: &[u8],
        now_unix: i64,
    ) -> Result<String, SigV4Failure> {
        let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let auth = header("authorization").ok_or(SigV4Failure::Malformed)?;
        let p = parse_authorization(auth).ok_or(SigV4Failure::Malformed)?;
        let secret =
            self.keys.iter().find(|(id, _)| id == p.key_id).map(|(_, s)| s.as_str()).ok_or(SigV4Failure::UnknownKey)?;
        if p.service != self.service {
            return Err(SigV4Failure::Scope(format!("credential scope names service {:?}", p.service)));
        }
        let amz_date = header("x-amz-date").ok_or_else(|| SigV4Failure::Scope("no x-amz-date".into()))?;
        let when = parse_amz_date(amz_date).ok_or_else(|| SigV4Failure::Scope("unparsable x-amz-date".into()))?;
        if !amz_date.starts_with(p.date) || (when - now_unix).abs() > self.max_skew_secs {
            return Err(SigV4Failure::Scope("signature expired or not yet valid".into()));
        }
        for required in ["host", "x-amz-date"] {
            if !p.signed_headers.contains(&required) {
                return Err(SigV4Failure::Scope(format!("{required} is not signed")));
            }
        }
        let expected = compute_signature(
            secret,
            method,
            raw_path,
            raw_query,
            headers,
            &p.signed_headers,
            body,
            amz_date,
            p.date,
            p.region,
            p.service,
        );
        if constant_time_eq(expected.as_bytes(), p.signature.as_bytes()) {
            Ok(p.key_id.to_owned())
        } else {
            Err(SigV4Failure::Mismatch)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// `post-vanilla` of the AWS SigV4 test suite.
    #[test]
    fn aws_suite_post_vanilla() {
        let sig = compute_signature(
            SECRET,
            "POST",
            "/",
            "",
            &h(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]),
            &["host", "x-amz-date"],
            b"",
            "20150830T123600Z",
            "20150830",
            "us-east-1",
            "service",
        );
        assert_eq!(sig, "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
    }

    /// `get-vanilla-query-order-key-case` of the AWS SigV4 test suite.
    #[test]
    fn aws_suite_query_ordering() {
        let sig = compute_signature(
            SECRET,
            "GET",
            "/",
            "Param2=value2&Param1=value1",
            &h(&[("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]),
            &["host", "x-amz-date"],
            b"",
            "20150830T123600Z",
            "20150830",
            "us-east-1",
            "service",
        );
        assert_eq!(sig, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    }

    #[test]
    fn verify_checks_key_scope_time_and_signature() {
        let keys = SigV4Keys {
            keys: vec![("AKIDEXAMPLE".into(), SECRET.into())],
            service: "service".into(),
            max_skew_secs: 300,
        };
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                    SignedHeaders=host;x-amz-date, \
                    Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";
        let headers =
            h(&[("host", "example.amazonaws.com"), ("x-amz-date", "20150830T123600Z"), ("authorization", auth)]);
        let t = parse_amz_date("20150830T123600Z").expect("date");
        assert_eq!(t, 1_440_938_160);
        assert_eq!(keys.verify("POST", "/", "", &headers, b"", t + 10), Ok("AKIDEXAMPLE".into()));
        assert_eq!(keys.verify("POST", "/", "", &headers, b"x", t), Err(SigV4Failure::Mismatch));
        assert!(matches!(keys.verify("POST", "/", "", &headers, b"", t + 3600), Err(SigV4Failure::Scope(_))));
        let other = SigV4Keys { keys: vec![("AKOTHER".into(), SECRET.into())], ..keys.clone() };
        assert_eq!(other.verify("POST", "/", "", &headers, b"", t), Err(SigV4Failure::UnknownKey));
    }

    #[test]
    fn path_is_encoded_again() {
        assert_eq!(uri_encode("/model/a.b-v1%3A0/converse", true), "/model/a.b-v1%253A0/converse");
    }
}
