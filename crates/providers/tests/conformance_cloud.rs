//! The Bedrock and Gemini/Vertex adapters pass the testkit conformance suite against
//! their fakes, once per authentication mode.
#![cfg(all(feature = "bedrock", feature = "vertex"))]

use switchboard_providers::bedrock::{AwsCredentials, Bedrock, BedrockAuth, BedrockConfig};
use switchboard_providers::vertex::{Gemini, GeminiConfig, GoogleAuth};
use switchboard_testkit::Vendor;
use switchboard_testkit::bedrock::{TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use switchboard_testkit::conformance::assert_conformance;
use switchboard_testkit::vertex::TEST_PROJECT;
use switchboard_testkit::vertex::token::test_service_account_json;

fn bedrock(base: &str, auth: BedrockAuth) -> Bedrock {
    let config = BedrockConfig {
        region: "us-east-1".into(),
        auth,
        endpoint: Some(base.to_owned()),
        connect_timeout: std::time::Duration::from_secs(2),
        request_timeout: std::time::Duration::from_secs(10),
    };
    Bedrock::new("anthropic.claude-3-5-haiku-20241022-v1:0", config).expect("client builds")
}

#[tokio::test]
async fn bedrock_adapter_conforms_with_an_api_key() {
    assert_conformance(Vendor::Bedrock, |base, key| bedrock(base, BedrockAuth::ApiKey(key))).await;
}

#[tokio::test]
async fn bedrock_adapter_conforms_with_sigv4() {
    assert_conformance(Vendor::Bedrock, |base, _key| {
        bedrock(base, BedrockAuth::SigV4(AwsCredentials::new(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, None)))
    })
    .await;
}

#[tokio::test]
async fn gemini_api_key_adapter_conforms() {
    assert_conformance(Vendor::Vertex, |base, key| {
        let mut config = GeminiConfig::api_key(key);
        config.endpoint = Some(base.to_owned());
        Gemini::new("gemini-2.5-flash", config).expect("client builds")
    })
    .await;
}

#[tokio::test]
async fn vertex_service_account_adapter_conforms() {
    assert_conformance(Vendor::Vertex, |base, _key| {
        let json = test_service_account_json(&format!("{base}/token"), TEST_PROJECT);
        let mut config = GeminiConfig::vertex_service_account(&json, None, "us-central1").expect("key parses");
        config.endpoint = Some(base.to_owned());
        assert!(matches!(config.auth, GoogleAuth::ServiceAccount(_)));
        Gemini::new("gemini-2.5-flash", config).expect("client builds")
    })
    .await;
}
