//! Slot extractors and repair patterns: the small, deterministic language understanding that
//! flows need besides the intent router.

use crate::config::RepairSpec;
use regex::Regex;
use std::sync::LazyLock;

/// Extractor names a slot may use.
pub const EXTRACTORS: &[&str] = &["last4", "transfer_id", "tx_hash", "asset", "network", "text"];

static LAST4: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|[^\d\[])(\d{4})(?:$|[^\d\]])").expect("last4 pattern"));
static TRANSFER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\btr_\d{3,10}\b").expect("transfer pattern"));
static TX_HASH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b0x[0-9a-fA-F]{64}\b").expect("tx pattern"));

const ASSETS: &[(&str, &[&str])] = &[
    ("BTC", &["btc", "bitcoin", "bitcoins"]),
    ("ETH", &["eth", "ether", "ethereum"]),
    ("USDC", &["usdc"]),
    ("USDT", &["usdt", "tether"]),
    ("SOL", &["sol", "solana"]),
    ("MATIC", &["matic", "pol"]),
];

const NETWORKS: &[(&str, &[&str])] = &[
    ("ethereum", &["ethereum", "erc20", "erc-20", "mainnet", "eth network"]),
    ("polygon", &["polygon", "matic network"]),
    ("arbitrum", &["arbitrum"]),
    ("optimism", &["optimism"]),
    ("bsc", &["bsc", "bep20", "bep-20", "bnb chain", "binance smart chain"]),
    ("solana", &["solana", "spl"]),
    ("tron", &["tron", "trc20", "trc-20"]),
    ("bitcoin", &["bitcoin network", "btc network", "on bitcoin"]),
];

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn lookup(text: &str, table: &[(&str, &[&str])]) -> Option<String> {
    let lower = text.to_lowercase();
    let ws = words(text);
    table
        .iter()
        .find(|(_, names)| {
            names.iter().any(|n| if n.contains(' ') { lower.contains(n) } else { ws.iter().any(|w| w == n) })
        })
        .map(|(v, _)| (*v).to_string())
}

/// Runs an extractor over a (redacted) customer message.
pub fn extract(extractor: &str, text: &str) -> Option<String> {
    match extractor {
        "last4" => LAST4.captures_iter(text).last().map(|c| c[1].to_string()),
        "transfer_id" => TRANSFER.find(text).map(|m| m.as_str().to_ascii_lowercase()),
        "tx_hash" => TX_HASH.find(text).map(|m| m.as_str().to_ascii_lowercase()),
        "asset" => lookup(text, ASSETS),
        "network" => {
            // "sent on polygon" names a network; a bare "ethereum" names the asset unless a
            // network word is there too, so look for network-only words first.
            lookup(text, NETWORKS).or_else(|| {
                let lower = text.to_lowercase();
                (lower.contains(" on ethereum") || lower.contains("ethereum network")).then(|| "ethereum".to_string())
            })
        }
        "text" => {
            let t = text.trim();
            (t.len() >= 3).then(|| t.to_string())
        }
        _ => None,
    }
}

/// The compiled repair patterns.
#[derive(Debug, Clone)]
pub struct Repair {
    cancel: Vec<Regex>,
    restart: Vec<Regex>,
    human: Vec<Regex>,
    correction: Vec<Regex>,
    affirm: Vec<Regex>,
    deny: Vec<Regex>,
}

/// What a message asks of the conversation, before intent routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairAct {
    /// Cancel the active flow.
    Cancel,
    /// Start over.
    Restart,
    /// Talk to a human.
    Human,
}

fn compile(ps: &[String]) -> Vec<Regex> {
    // Patterns were checked by `AssistantSpec::validate`.
    ps.iter().filter_map(|p| Regex::new(&format!("(?i){p}")).ok()).collect()
}

impl Repair {
    /// Compiles the configured patterns.
    pub fn new(spec: &RepairSpec) -> Self {
        Self {
            cancel: compile(&spec.cancel),
            restart: compile(&spec.restart),
            human: compile(&spec.human),
            correction: compile(&spec.correction),
            affirm: compile(&spec.affirm),
            deny: compile(&spec.deny),
        }
    }

    /// A repair act, if the message is one.
    pub fn act(&self, text: &str) -> Option<RepairAct> {
        let any = |rs: &[Regex]| rs.iter().any(|r| r.is_match(text));
        if any(&self.human) {
            Some(RepairAct::Human)
        } else if any(&self.restart) {
            Some(RepairAct::Restart)
        } else if any(&self.cancel) {
            Some(RepairAct::Cancel)
        } else {
            None
        }
    }

    /// The message marks a correction ("actually ...", "no, I meant ...").
    pub fn is_correction(&self, text: &str) -> bool {
        self.correction.iter().any(|r| r.is_match(text))
    }

    /// Yes (`Some(true)`), no (`Some(false)`) or neither.
    pub fn yes_no(&self, text: &str) -> Option<bool> {
        let yes = self.affirm.iter().any(|r| r.is_match(text));
        let no = self.deny.iter().any(|r| r.is_match(text));
        match (yes, no) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extractors() {
        assert_eq!(extract("last4", "the one ending 4242").as_deref(), Some("4242"));
        assert_eq!(extract("last4", "actually it's the card ending 1881").as_deref(), Some("1881"));
        assert_eq!(extract("last4", "my card [CARD_1]"), None);
        assert_eq!(extract("transfer_id", "where is TR_1001?").as_deref(), Some("tr_1001"));
        assert_eq!(extract("asset", "I sent USDC").as_deref(), Some("USDC"));
        assert_eq!(extract("network", "sent it on Polygon").as_deref(), Some("polygon"));
        assert_eq!(extract("network", "ETH"), None);
        assert_eq!(extract("network", "ERC20").as_deref(), Some("ethereum"));
        let h = format!("hash {}", crate::backend::SEED_ETH_TX);
        assert_eq!(extract("tx_hash", &h).as_deref(), Some(crate::backend::SEED_ETH_TX));
    }
}
