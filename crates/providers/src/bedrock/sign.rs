//! SigV4 signing of Bedrock requests with the `aws-sigv4` crate.
//!
//! The signer sees exactly the method, URL, headers and body that go on the wire,
//! and returns the headers to add (`authorization`, `x-amz-date`, and
//! `x-amz-security-token` for temporary credentials). Path segments are encoded
//! twice in the canonical request, as every AWS service but S3 expects; the crate
//! does this by default.

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::credentials::AwsCredentials;

/// The SigV4 signing name of Bedrock Runtime.
pub(crate) const SIGNING_NAME: &str = "bedrock";

/// Why a request could not be signed (a malformed URL or header; never includes key material).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the request: {0}")]
pub(crate) struct SignError(String);

/// The parts of an outgoing request that the signature covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    /// HTTP method.
    pub(crate) method: &'a str,
    /// Full URL, path already percent-encoded as sent.
    pub(crate) url: &'a str,
    /// Headers to sign besides `host` and `x-amz-date` (at least `content-type`).
    pub(crate) headers: &'a [(&'a str, &'a str)],
    /// The exact body bytes.
    pub(crate) body: &'a [u8],
}

/// Signs a request and returns the headers to add to it (`host` is derived from the URL).
///
/// # Errors
/// [`SignError`] if the URL or a header cannot be represented in a canonical request.
pub(crate) fn sign_request(
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
    req: Outgoing<'_>,
) -> Result<Vec<(&'static str, String)>, SignError> {
    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.expose().to_owned(),
        creds.session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "switchboard",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    let request = SignableRequest::new(req.method, req.url, req.headers.iter().copied(), SignableBody::Bytes(req.body))
        .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params).map_err(|e| SignError(e.to_string()))?.into_parts();
    let (out, _params) = instructions.into_parts();
    Ok(out.into_iter().map(|h| (h.name(), h.value().to_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn header<'a>(hs: &'a [(&'static str, String)], name: &str) -> &'a str {
        hs.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("missing {name}"))
    }

    /// The `post-vanilla` case of the AWS SigV4 test suite (2015-08-30T12:36:00Z).
    #[test]
    fn aws_suite_post_vanilla() {
        let creds = AwsCredentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None);
        let hs = sign_request(
            &creds,
            "us-east-1",
            "service",
            at(1_440_938_160),
            Outgoing { method: "POST", url: "https://example.amazonaws.com/", headers: &[], body: b"" },
        )
        .expect("sign");
        assert_eq!(header(&hs, "x-amz-date"), "20150830T123600Z");
        assert_eq!(
            header(&hs, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        let creds = AwsCredentials::new("ASIAX", "secret", Some("the-token".into()));
        let hs = sign_request(
            &creds,
            "us-west-2",
            SIGNING_NAME,
            at(1_764_000_000),
            Outgoing {
                method: "POST",
                url: "http://127.0.0.1:9/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                headers: &[("content-type", "application/json")],
                body: b"{}",
            },
        )
        .expect("sign");
        assert_eq!(header(&hs, "x-amz-security-token"), "the-token");
        let auth = header(&hs, "authorization");
        assert!(auth.contains("/us-west-2/bedrock/aws4_request"), "{auth}");
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"), "{auth}");
        assert!(!auth.contains("secret"));
    }
}
