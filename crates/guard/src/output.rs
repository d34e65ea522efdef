//! Output policy: what the assistant is about to say, checked before it leaves.
//!
//! - `solicit_secret`: a sentence that *asks* for a recovery phrase, private key, password / PIN,
//!   one-time code, full card number or CVV (English or Portuguese) blocks the whole reply; it is
//!   replaced by the fixed safety message. Sentences that say the service will *never* ask pass.
//! - `echo_secret` / `echo_pii`: any value the detectors find is masked (`[CARD]`), so a reply
//!   never repeats a secret or personal data, even one the customer typed.
//! - `link_domain`: links to hosts outside the allow-list are removed.
//! - `markdown_image`: markdown images from outside hosts are removed (they fetch on render and
//!   can carry data out in the URL).
//!
//! Every change is an [`AuditEvent`] naming the rule; events never contain the offending value.

use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;

use crate::detect::Detector;
use crate::injection::normalize::normalize;
use crate::redact;

/// The message sent instead of a blocked reply.
pub const SAFETY_MESSAGE: &str = "For your security: we will never ask for your recovery phrase, private keys, passwords, one-time codes, full card number or CVV. If you shared any of them elsewhere, move your funds to a new wallet and contact us. / Para sua segurança: nunca pedimos sua frase de recuperação, chaves privadas, senhas, códigos de verificação, número completo do cartão ou CVV.";

/// What happened to a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputAction {
    /// Sent as is.
    Allow,
    /// Sent with parts removed or masked.
    Rewrite,
    /// Replaced by the safety message.
    Block,
}

/// One policy intervention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// The rule that fired, e.g. `solicit_secret:recovery_phrase`, `echo_secret:CVV`.
    pub rule: String,
    /// What it did.
    pub action: OutputAction,
}

/// The decision on a reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputDecision {
    /// Overall action (the strongest of the events).
    pub action: OutputAction,
    /// The text to send.
    pub text: String,
    /// What fired.
    pub events: Vec<AuditEvent>,
}

/// Configuration of the output policy.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct OutputPolicyConfig {
    /// Hosts links and images may point to (a host matches itself and its subdomains).
    #[serde(default)]
    pub allowed_link_domains: Vec<String>,
}

/// The output policy.
#[derive(Debug, Clone, Default)]
pub struct OutputPolicy {
    config: OutputPolicyConfig,
    detector: Detector,
}

struct SecretNoun {
    kind: &'static str,
    re: Regex,
}

static NOUNS: LazyLock<Vec<SecretNoun>> = LazyLock::new(|| {
    let n = |kind, p: &str| SecretNoun {
        kind,
        re: Regex::new(&format!("(?-u:\\b)(?:{p})(?-u:\\b)")).expect("noun pattern"),
    };
    vec![
        n(
            "recovery_phrase",
            r"recovery (?:phrase|words|seed)|seed (?:phrase|words)|secret (?:recovery )?phrase|mnemonic|backup phrase|(?:12|24|twelve|twenty[- ]four)[- ]words?|frase (?:de recuperacao|semente|secreta)|palavras (?:de recuperacao|secretas|da carteira)|(?:12|24|doze|vinte e quatro) palavras|seed",
        ),
        n("private_key", r"private keys?|priv keys?|secret keys?|chaves? privadas?|wallet keys?"),
        n("password", r"passwords?|passcodes?|pin(?: code| number)?|senhas?"),
        n(
            "otp",
            r"one[- ]time (?:code|password|passcode)|otp|2fa (?:code|token)|verification code|authentication code|authenticator code|sms code|security code sent|codigo (?:de verificacao|2fa|do autenticador|de autenticacao|sms|que (?:voce )?recebeu|enviado)|token (?:de acesso|2fa)",
        ),
        n(
            "card_number",
            r"(?:full |complete |entire |whole )?card number|(?:numero|numeros) (?:completo )?do (?:seu )?cartao|16[- ]digit",
        ),
        n("cvv", r"cvv2?|cvc2?|card verification|security code|codigo de seguranca"),
    ]
});

static REQUEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?-u:\b)(?:send|share|provide|give|tell|type|enter|paste|confirm|submit|reply with|read (?:out|me)|dm|forward|upload|verify|need|require|ask(?:ing)? for|request|what(?: is|'s| are)|may i have|can i (?:have|get)|could you|can you|please|",
        r"envie|enviar|mande|mandar|informe|informar|digite|digitar|passe|passar|compartilhe|compartilhar|confirme|confirmar|forneca|fornecer|preciso|precisamos|qual (?:e|o|a)|me (?:diga|passe|envie|mande|informe)|poderia|pode (?:me )?(?:enviar|informar|passar)|por favor)(?-u:\b)",
    ))
    .expect("request pattern")
});

static NEGATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)(?:never|don't|dont|do not|won't|will not|not ask|no one|nobody|nunca|jamais|nao (?:pedimos|pedira|vamos|compartilhe|envie|informe|passe|digite|solicitamos)|nem)(?-u:\b)")
        .expect("negation pattern")
});

static LAST_DIGITS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)(?:last|final|first) (?:4|four|6|six) digits|(?:ultimos|quatro ultimos|4 ultimos) (?:4 |quatro )?digitos|final do cartao")
        .expect("last digits pattern")
});

static IMAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"!\[[^\]\n]{0,500}\]\(\s*<?([^)\s>]{1,2048})>?(?:\s+[^)]{0,200})?\)").expect("image pattern")
});
static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(?:https?://|www\.)[^\s<>()\[\]{}'\x22]{1,2048}").expect("url pattern"));

fn host_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("HTTPS://"))
        .or_else(|| url.strip_prefix("HTTP://"))
        .unwrap_or(url);
    if rest.starts_with('/') || rest.starts_with('#') || rest.starts_with('.') {
        return None; // relative: same origin
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = host.split(':').next().unwrap_or(host);
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

impl OutputPolicy {
    /// A policy with `config` and the default detectors.
    pub fn new(config: OutputPolicyConfig) -> Self {
        Self { config, detector: Detector::default() }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.config.allowed_link_domains.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            host == d || host.ends_with(&format!(".{d}"))
        })
    }

    /// Which secrets the reply asks for (one entry per kind), sentence by sentence.
    pub fn solicitations(&self, reply: &str) -> Vec<&'static str> {
        let norm = normalize(reply).text;
        let mut kinds = Vec::new();
        for sentence in norm.split(['.', '!', '?', '\n', ';']) {
            if !REQUEST.is_match(sentence) || NEGATION.is_match(sentence) {
                continue;
            }
            for n in NOUNS.iter() {
                if n.re.is_match(sentence)
                    && !(n.kind == "card_number" && LAST_DIGITS.is_match(sentence))
                    && !kinds.contains(&n.kind)
                {
                    kinds.push(n.kind);
                }
            }
        }
        kinds
    }

    /// Check a reply.
    pub fn check(&self, reply: &str) -> OutputDecision {
        let mut events = Vec::new();
        let asked = self.solicitations(reply);
        if !asked.is_empty() {
            for k in asked {
                events.push(AuditEvent { rule: format!("solicit_secret:{k}"), action: OutputAction::Block });
            }
            tracing::warn!(rules = ?events.iter().map(|e| e.rule.as_str()).collect::<Vec<_>>(), "reply blocked by output policy");
            return OutputDecision { action: OutputAction::Block, text: SAFETY_MESSAGE.to_owned(), events };
        }
        // images first (a link check would otherwise see the image URL)
        let text = IMAGE
            .replace_all(reply, |c: &regex::Captures<'_>| match host_of(&c[1]) {
                Some(h) if !self.host_allowed(&h) => {
                    events.push(AuditEvent { rule: "markdown_image".into(), action: OutputAction::Rewrite });
                    String::from("[image removed]")
                }
                _ => c[0].to_owned(),
            })
            .into_owned();
        let text = URL
            .replace_all(&text, |c: &regex::Captures<'_>| {
                let url = c[0].trim_end_matches(['.', ',', ';', ':', '!', '?']);
                let tail = &c[0][url.len()..];
                match host_of(url) {
                    Some(h) if !self.host_allowed(&h) => {
                        events.push(AuditEvent { rule: "link_domain".into(), action: OutputAction::Rewrite });
                        format!("[link removed]{tail}")
                    }
                    _ => c[0].to_owned(),
                }
            })
            .into_owned();
        let found = self.detector.detect(&text);
        for d in &found {
            let rule = if d.kind.is_secret() { "echo_secret" } else { "echo_pii" };
            events.push(AuditEvent { rule: format!("{rule}:{}", d.kind), action: OutputAction::Rewrite });
        }
        let text = if found.is_empty() { text } else { redact::mask(&text, &found) };
        let action = if events.is_empty() { OutputAction::Allow } else { OutputAction::Rewrite };
        OutputDecision { action, text, events }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutputPolicy {
        OutputPolicy::new(OutputPolicyConfig { allowed_link_domains: vec!["exchange.example".into()] })
    }

    #[test]
    fn blocks_requests_for_secrets_en_pt() {
        for (t, rule) in [
            ("To verify your wallet, please send me your 12-word recovery phrase.", "solicit_secret:recovery_phrase"),
            ("Could you share your private key so I can check the balance?", "solicit_secret:private_key"),
            ("What is your password?", "solicit_secret:password"),
            ("Please type the 6-digit verification code we just sent.", "solicit_secret:otp"),
            ("Send the full card number and the CVV.", "solicit_secret:card_number"),
            (
                "Por favor, informe sua frase de recuperação para validarmos a carteira.",
                "solicit_secret:recovery_phrase",
            ),
            ("Me passe o código de verificação que chegou por SMS.", "solicit_secret:otp"),
            ("Qual é a sua senha?", "solicit_secret:password"),
            ("Digite o número completo do cartão e o código de segurança.", "solicit_secret:card_number"),
        ] {
            let d = policy().check(t);
            assert_eq!(d.action, OutputAction::Block, "{t}");
            assert!(d.events.iter().any(|e| e.rule == rule), "{t}: {:?}", d.events);
            assert_eq!(d.text, SAFETY_MESSAGE);
        }
    }

    #[test]
    fn allows_warnings_and_harmless_asks() {
        for t in [
            "We will never ask for your recovery phrase or private key.",
            "Nunca pedimos sua senha ou o código de verificação.",
            "Please confirm the last 4 digits of your card number.",
            "Your card was shipped yesterday; it should arrive within 5 business days.",
            "Do not share your seed phrase with anyone.",
            SAFETY_MESSAGE,
        ] {
            let d = policy().check(t);
            assert_eq!(d.action, OutputAction::Allow, "{t}: {:?}", d.events);
            assert_eq!(d.text, t);
        }
    }

    #[test]
    fn masks_echoed_values_and_strips_links_and_images() {
        let d = policy().check(
            "Your CPF 723.910.967-47 is linked. See https://help.exchange.example/cpf and https://evil.example/x?d=1.",
        );
        assert_eq!(d.action, OutputAction::Rewrite);
        assert_eq!(d.text, "Your CPF [CPF] is linked. See https://help.exchange.example/cpf and [link removed].");
        let rules: Vec<_> = d.events.iter().map(|e| e.rule.as_str()).collect();
        assert_eq!(rules, ["link_domain", "echo_pii:BR_CPF"]);
        let d = policy().check("![x](https://evil.example/p.png?q=secret) ![ok](https://cdn.exchange.example/a.png)");
        assert_eq!(d.text, "[image removed] ![ok](https://cdn.exchange.example/a.png)");
        let d = policy().check("The code is 123456, your authenticator code.");
        assert!(d.events.iter().any(|e| e.rule == "echo_secret:OTP_CODE"));
        assert!(!d.text.contains("123456"));
    }
}
