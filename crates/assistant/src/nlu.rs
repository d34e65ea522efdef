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

/// First words of a question (English and Brazilian Portuguese).
const QUESTION_WORDS: &[&str] = &[
    "how", "what", "why", "when", "where", "which", "who", "can", "could", "do", "does", "is", "are", "will", "would",
    "should", "como", "quanto", "quantos", "quantas", "qual", "quais", "quando", "onde", "porque", "posso",
];

/// Words that may come before the question word.
const FILLERS: &[&str] =
    &["wait", "ok", "okay", "so", "and", "also", "oh", "hey", "btw", "by", "the", "way", "então", "e"];

/// Starts of a request phrased as a question ("can you freeze the card?").
const REQUEST_STARTS: &[&str] =
    &["can you", "could you", "would you", "will you", "please", "pode ", "você pode", "voce pode", "por favor"];

/// Words that make a message about the customer's own case.
const OWN_WORDS: &[&str] = &["my", "mine", "meu", "minha", "meus", "minhas"];

/// A question about how things work in general rather than about the customer's own case: it
/// asks (a question mark, or a question word first, possibly after "wait" / "by the way") and
/// names nothing of theirs ("my", card digits, a transfer id, a transaction hash). Such a
/// question mid-flow is a digression, and before any flow it is for the help centre.
pub fn general_question(text: &str) -> bool {
    let ws = words(text);
    // The first word after fillers ("wait, how long ...", "by the way, why ...").
    let first = ws.iter().find(|w| !FILLERS.contains(&w.as_str()));
    let asks = text.contains('?') || first.is_some_and(|w| QUESTION_WORDS.contains(&w.as_str()));
    let own = ws.iter().any(|w| OWN_WORDS.contains(&w.as_str()));
    let entity = ["last4", "transfer_id", "tx_hash"].iter().any(|e| extract(e, text).is_some());
    let lower = text.trim_start().to_lowercase();
    let request = REQUEST_STARTS.iter().any(|p| lower.starts_with(p));
    asks && !own && !entity && !request
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
    fn general_questions() {
        for q in [
            "How many confirmations do you require before crediting ETH?",
            "wait, how long does a replacement card take to arrive?",
            "what happens if I forget the destination tag when sending XRP?",
            "by the way, why are withdrawal fees on Ethereum so high?",
        ] {
            assert!(general_question(q), "{q}");
        }
        for q in [
            "where is my transfer tr_1001?",
            "my card is 5500 0055 5555 5559, is it frozen?",
            "it hasn't arrived",
            "the one ending 4242",
            "cadê minha transferência?",
            "can you freeze the card?",
            "the hash is 0x123abc",
        ] {
            assert!(!general_question(q), "{q}");
        }
    }

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
