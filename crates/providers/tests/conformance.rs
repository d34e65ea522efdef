//! Every adapter in this crate passes the testkit conformance suite against its fake.

use switchboard_providers::anthropic::{AnthropicConfig, AnthropicModel};
use switchboard_providers::openai::{OpenAiConfig, OpenAiModel};
use switchboard_testkit::Vendor;
use switchboard_testkit::conformance::assert_conformance;

#[tokio::test]
async fn openai_adapter_conforms() {
    assert_conformance(Vendor::OpenAi, |base, key| {
        OpenAiModel::new(OpenAiConfig::new("gpt-test").base_url(format!("{base}/v1")).api_key(key))
            .expect("client builds")
    })
    .await;
}

#[tokio::test]
async fn anthropic_adapter_conforms() {
    assert_conformance(Vendor::Anthropic, |base, key| {
        AnthropicModel::new(AnthropicConfig::new("claude-test").base_url(base).api_key(key)).expect("client builds")
    })
    .await;
}
