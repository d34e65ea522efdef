//! Entity types, tiers and detections: the vocabulary every other module speaks.
//!
//! Type names are those of `docs/pii-rules.md` and the PII corpus (`CREDIT_CARD`, `BR_CPF`, ...),
//! plus three the rules ask for without giving the corpus a name (`CVV`, `BIP32_XPUB`, `PIX_KEY`)
//! and `PASSWORD` for "my password is ..." in context.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// A kind of personal data or secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntityType {
    /// Payment card number (PAN).
    CreditCard,
    /// Card verification code next to "cvv / cvc / código de segurança".
    Cvv,
    /// US social security number.
    UsSsn,
    /// Brazilian individual taxpayer number.
    BrCpf,
    /// Brazilian company number, numeric or alphanumeric.
    BrCnpj,
    /// US or Brazilian phone number.
    Phone,
    /// E-mail address.
    Email,
    /// International bank account number.
    Iban,
    /// Bitcoin address, legacy or segwit.
    BtcAddress,
    /// Ethereum / EVM address.
    EthAddress,
    /// Solana address (with chain context).
    SolAddress,
    /// BIP-39 recovery phrase.
    Bip39Mnemonic,
    /// Wallet import format private key.
    WifPrivateKey,
    /// BIP-32 extended private key.
    #[serde(rename = "BIP32_XPRV")]
    Bip32Xprv,
    /// BIP-32 extended public key (privacy data, not a secret).
    #[serde(rename = "BIP32_XPUB")]
    Bip32Xpub,
    /// Raw 64-hex private key, only with key context.
    HexPrivateKey,
    /// One-time / 2FA code in context.
    OtpCode,
    /// API key or secret.
    ApiSecret,
    /// Pix random key (UUID v4 with Pix context).
    PixKey,
    /// A password given in context ("my password is ...").
    Password,
}

impl EntityType {
    /// Every type, in a fixed order.
    pub const ALL: [EntityType; 20] = [
        Self::CreditCard,
        Self::Cvv,
        Self::UsSsn,
        Self::BrCpf,
        Self::BrCnpj,
        Self::Phone,
        Self::Email,
        Self::Iban,
        Self::BtcAddress,
        Self::EthAddress,
        Self::SolAddress,
        Self::Bip39Mnemonic,
        Self::WifPrivateKey,
        Self::Bip32Xprv,
        Self::Bip32Xpub,
        Self::HexPrivateKey,
        Self::OtpCode,
        Self::ApiSecret,
        Self::PixKey,
        Self::Password,
    ];

    /// The name used in reports and JSON (`CREDIT_CARD`, `BR_CPF`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::CreditCard => "CREDIT_CARD",
            Self::Cvv => "CVV",
            Self::UsSsn => "US_SSN",
            Self::BrCpf => "BR_CPF",
            Self::BrCnpj => "BR_CNPJ",
            Self::Phone => "PHONE",
            Self::Email => "EMAIL",
            Self::Iban => "IBAN",
            Self::BtcAddress => "BTC_ADDRESS",
            Self::EthAddress => "ETH_ADDRESS",
            Self::SolAddress => "SOL_ADDRESS",
            Self::Bip39Mnemonic => "BIP39_MNEMONIC",
            Self::WifPrivateKey => "WIF_PRIVATE_KEY",
            Self::Bip32Xprv => "BIP32_XPRV",
            Self::Bip32Xpub => "BIP32_XPUB",
            Self::HexPrivateKey => "HEX_PRIVATE_KEY",
            Self::OtpCode => "OTP_CODE",
            Self::ApiSecret => "API_SECRET",
            Self::PixKey => "PIX_KEY",
            Self::Password => "PASSWORD",
        }
    }

    /// The stem of the placeholder that replaces a value of this type (`CARD` in `[CARD_1]`).
    pub fn placeholder_stem(self) -> &'static str {
        match self {
            Self::CreditCard => "CARD",
            Self::Cvv => "CVV",
            Self::UsSsn => "SSN",
            Self::BrCpf => "CPF",
            Self::BrCnpj => "CNPJ",
            Self::Phone => "PHONE",
            Self::Email => "EMAIL",
            Self::Iban => "IBAN",
            Self::BtcAddress => "BTC_ADDRESS",
            Self::EthAddress => "ETH_ADDRESS",
            Self::SolAddress => "SOL_ADDRESS",
            Self::Bip39Mnemonic => "RECOVERY_PHRASE",
            Self::WifPrivateKey | Self::HexPrivateKey => "PRIVATE_KEY",
            Self::Bip32Xprv => "XPRV",
            Self::Bip32Xpub => "XPUB",
            Self::OtpCode => "OTP",
            Self::ApiSecret => "API_SECRET",
            Self::PixKey => "PIX_KEY",
            Self::Password => "PASSWORD",
        }
    }

    /// A credential that gives control of money or an account: the service blocks it (never
    /// stores or forwards it, warns the customer) rather than only redacting it.
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            Self::Cvv
                | Self::Bip39Mnemonic
                | Self::WifPrivateKey
                | Self::Bip32Xprv
                | Self::HexPrivateKey
                | Self::OtpCode
                | Self::ApiSecret
                | Self::Password
        )
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one of [`EntityType::name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entity type {0:?}")]
pub struct UnknownEntityType(pub String);

impl FromStr for EntityType {
    type Err = UnknownEntityType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| UnknownEntityType(s.to_owned()))
    }
}

/// Which redactor tier produced a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The value passed the strict validator: it definitely is this type.
    Strict,
    /// A strong look-alike in context (bad checksum, typo): masked to fail safe.
    FailSafe,
}

/// One detected value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// What it is.
    #[serde(rename = "type")]
    pub kind: EntityType,
    /// Start, in chars (Unicode scalar values) from the start of the text.
    pub start: usize,
    /// End (exclusive), in chars.
    pub end: usize,
    /// The same span in bytes, for slicing the `&str`.
    #[serde(skip)]
    pub bytes: Range<usize>,
    /// Whether the value passes the strict validator.
    pub valid: bool,
    /// Strict or fail-safe tier (`Strict` iff `valid`).
    pub tier: Tier,
    /// How sure the detector is, in `[0, 1]`.
    pub confidence: f32,
}

impl Detection {
    /// The detected value as it appears in `text` (the text it was detected in).
    pub fn value<'t>(&self, text: &'t str) -> &'t str {
        text.get(self.bytes.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serde_agrees() {
        for t in EntityType::ALL {
            assert_eq!(t.name().parse::<EntityType>(), Ok(t));
            let json = serde_json::to_string(&t).expect("serialise");
            assert_eq!(json, format!("\"{}\"", t.name()));
        }
    }
}
