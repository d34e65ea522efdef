//! The first rung: regex and keyword overrides for compliance-critical intents.
//!
//! Some messages must always reach their handler whatever the classifier thinks (a stolen card,
//! fraud, an account takeover, someone asking for a recovery phrase). Rules are checked first,
//! in order; the first match decides. Patterns are case-insensitive.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RouterError};

/// A rule as written in `rules.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleSpec {
    /// The intent the rule routes to.
    pub intent: String,
    /// Regular expressions; any match fires the rule.
    pub patterns: Vec<String>,
}

/// Compiled rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    specs: Vec<RuleSpec>,
    compiled: Vec<(String, Vec<Regex>)>,
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    /// Intent routed to.
    pub intent: String,
    /// The pattern that matched.
    pub pattern: String,
    /// The matched text.
    pub matched: String,
}

impl Rules {
    /// Compile rule specs.
    ///
    /// # Errors
    /// [`RouterError::BadRule`] when a pattern does not compile.
    pub fn new(specs: Vec<RuleSpec>) -> Result<Self> {
        let mut compiled = Vec::with_capacity(specs.len());
        for s in &specs {
            let mut res = Vec::with_capacity(s.patterns.len());
            for p in &s.patterns {
                let re = Regex::new(&format!("(?i){p}"))
                    .map_err(|source| RouterError::BadRule { intent: s.intent.clone(), source })?;
                res.push(re);
            }
            compiled.push((s.intent.clone(), res));
        }
        Ok(Self { specs, compiled })
    }

    /// Rules for the compliance-critical intents of the reference crypto-exchange assistant.
    pub fn compliance_defaults() -> Vec<RuleSpec> {
        let r = |intent: &str, patterns: &[&str]| RuleSpec {
            intent: intent.to_owned(),
            patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
        };
        vec![
            r(
                "recovery_phrase_scam",
                &[
                    r"\b(recovery|seed|secret|mnemonic)\s+(phrase|words?)\b",
                    r"\b(12|24)\s+words\b",
                    r"\bprivate\s+key\b",
                ],
            ),
            r(
                "account_takeover",
                &[
                    r"\b(hacked|hijacked|compromised)\b.*\baccount\b",
                    r"\baccount\b.*\b(hacked|hijacked|compromised|taken over)\b",
                    r"\bsomeone\b.*\b(logged|log(ged)? ?in|accessed|changed)\b.*\b(my|the)\s+(account|password|email|2fa)\b",
                    r"\b(locked|kicked) out\b.*\b(changed|someone)\b",
                ],
            ),
            // Named after BANKING77's label, so the rule and the classifier agree on the intent.
            r(
                "lost_or_stolen_card",
                &[
                    r"\b(card|wallet)\b.*\b(stolen|was taken|got taken|lost|missing|gone)\b",
                    r"\b(stolen|lost)\b.*\bcard\b",
                    r"\bstole\b.*\bcard\b",
                    // Brazilian Portuguese: "perdi meu cartão", "roubaram meu cartão", "cartão roubado".
                    r"\b(perdi|roubaram|furtaram|levaram)\b.*\bcart[aã]o\b",
                    r"\bcart[aã]o\b.*\b(roubado|perdido|furtado|sumiu)\b",
                ],
            ),
            r(
                "fraud",
                &[
                    r"\bfraud(ulent)?\b",
                    r"\bscam(med|mer)?\b",
                    r"\b(payment|charge|transaction|withdrawal)s?\b.*\b(didn'?t|did not|never)\s+(make|authori[sz]e|recogni[sz]e)\b",
                    r"\b(unauthori[sz]ed|unrecogni[sz]ed)\b.*\b(payment|charge|transaction|withdrawal)s?\b",
                ],
            ),
        ]
    }

    /// The specs these rules were built from.
    pub fn specs(&self) -> &[RuleSpec] {
        &self.specs
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.compiled.is_empty()
    }

    /// The first rule matching `text`, if any.
    pub fn check(&self, text: &str) -> Option<RuleMatch> {
        for (intent, res) in &self.compiled {
            for re in res {
                if let Some(m) = re.find(text) {
                    return Some(RuleMatch {
                        intent: intent.clone(),
                        pattern: re.as_str().trim_start_matches("(?i)").to_owned(),
                        matched: m.as_str().to_owned(),
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! cases {
        ($rules:expr, $( $text:expr => $want:expr ),* $(,)?) => {
            $( assert_eq!($rules.check($text).map(|m| m.intent), $want.map(str::to_owned), "{}", $text); )*
        };
    }

    #[test]
    fn compliance_rules_fire_on_critical_messages_only() {
        let rules = Rules::new(Rules::compliance_defaults()).expect("defaults compile");
        cases!(rules,
            "My card was STOLEN this morning" => Some("lost_or_stolen_card"),
            "someone stole my card at the bar" => Some("lost_or_stolen_card"),
            "I lost my card" => Some("lost_or_stolen_card"),
            "perdi meu cartão, bloqueia por favor" => Some("lost_or_stolen_card"),
            "there is a payment I didn't make" => Some("fraud"),
            "Unauthorized transaction on my statement" => Some("fraud"),
            "I think I've been scammed" => Some("fraud"),
            "my account was hacked" => Some("account_takeover"),
            "someone logged into my account and changed my email" => Some("account_takeover"),
            "support asked for my recovery phrase" => Some("recovery_phrase_scam"),
            "should I share my seed phrase?" => Some("recovery_phrase_scam"),
            "how do I top up with Apple Pay" => None::<&str>,
            "what are the exchange rates" => None::<&str>,
            "my card payment was declined" => None::<&str>,
        );
    }

    #[test]
    fn a_bad_pattern_is_a_typed_error() {
        let err = Rules::new(vec![RuleSpec { intent: "x".into(), patterns: vec!["(unclosed".into()] }])
            .expect_err("must fail");
        assert!(matches!(err, RouterError::BadRule { .. }));
    }
}
