//! [`Vendor`]: which wire format a fake speaks.

use std::fmt;
use std::str::FromStr;

/// A vendor whose wire format a fake server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// OpenAI Chat Completions (and compatible servers).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// AWS Bedrock Runtime Converse / ConverseStream.
    Bedrock,
    /// Google Vertex AI and the Gemini API (API-key paths).
    Vertex,
}

impl Vendor {
    /// Every vendor, in CLI order.
    pub const ALL: [Vendor; 4] = [Self::OpenAi, Self::Anthropic, Self::Bedrock, Self::Vertex];

    /// The CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Bedrock => "bedrock",
            Self::Vertex => "vertex",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of `openai|anthropic|bedrock|vertex`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown vendor {0:?} (expected openai, anthropic, bedrock or vertex)")]
pub struct UnknownVendor(pub String);

impl FromStr for Vendor {
    type Err = UnknownVendor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|v| v.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownVendor(s.to_owned()))
    }
}
