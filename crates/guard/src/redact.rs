//! Rewriting text with placeholders.
//!
//! Two flavours: typed placeholders numbered within a conversation (`[CARD_1]`, `[CPF_2]`),
//! where the same value always gets the same number ([`PlaceholderBook`]); and bare typed masks
//! (`[CARD]`) for logs, where nothing may be linked back.

use std::collections::HashMap;

use crate::entity::{Detection, EntityType};

/// Canonical form of a value, so that "4111 1111 …" and "4111-1111-…" are the same card.
pub fn canonical(kind: EntityType, value: &str) -> String {
    match kind {
        EntityType::CreditCard
        | EntityType::Cvv
        | EntityType::UsSsn
        | EntityType::BrCpf
        | EntityType::BrCnpj
        | EntityType::Iban
        | EntityType::OtpCode => {
            value.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect()
        }
        EntityType::Phone => value.chars().filter(char::is_ascii_digit).collect(),
        EntityType::Email | EntityType::PixKey => value.to_lowercase(),
        EntityType::Bip39Mnemonic => value
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" "),
        _ => value.to_owned(),
    }
}

/// Placeholders handed out in one conversation: a value (by key, e.g. an HMAC of its canonical
/// form) keeps its placeholder; a new value gets the next number of its type.
#[derive(Debug, Default, Clone)]
pub struct PlaceholderBook {
    by_key: HashMap<Vec<u8>, String>,
    counts: HashMap<&'static str, u32>,
}

impl PlaceholderBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record an existing assignment (when loading a conversation's vault).
    pub fn record(&mut self, key: Vec<u8>, placeholder: &str) {
        if let Some((stem, n)) = parse_placeholder(placeholder) {
            let c = self.counts.entry(stem_static(stem)).or_default();
            *c = (*c).max(n);
        }
        self.by_key.insert(key, placeholder.to_owned());
    }

    /// The placeholder for `key`, and whether it was newly assigned.
    pub fn placeholder_for(&mut self, kind: EntityType, key: &[u8]) -> (String, bool) {
        if let Some(p) = self.by_key.get(key) {
            return (p.clone(), false);
        }
        let stem = kind.placeholder_stem();
        let n = self.counts.entry(stem).or_default();
        *n += 1;
        let p = format!("[{stem}_{n}]");
        self.by_key.insert(key.to_vec(), p.clone());
        (p, true)
    }
}

fn stem_static(stem: &str) -> &'static str {
    EntityType::ALL.iter().map(|t| t.placeholder_stem()).find(|s| *s == stem).unwrap_or("REDACTED")
}

/// Split `[CARD_12]` into (`CARD`, 12).
pub fn parse_placeholder(p: &str) -> Option<(&str, u32)> {
    let inner = p.strip_prefix('[')?.strip_suffix(']')?;
    let (stem, n) = inner.rsplit_once('_')?;
    Some((stem, n.parse().ok()?))
}

/// Replace each detection's span with `name(detection)`. Detections must not overlap (as
/// returned by the detector).
pub fn apply(text: &str, detections: &[Detection], mut name: impl FnMut(&Detection) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut sorted: Vec<&Detection> = detections.iter().collect();
    sorted.sort_by_key(|d| d.bytes.start);
    for d in sorted {
        if d.bytes.start < pos || d.bytes.end > text.len() {
            continue;
        }
        out.push_str(&text[pos..d.bytes.start]);
        out.push_str(&name(d));
        pos = d.bytes.end;
    }
    out.push_str(&text[pos..]);
    out
}

/// Typed masks without numbering (`[CARD]`): for logs and traces.
pub fn mask(text: &str, detections: &[Detection]) -> String {
    apply(text, detections, |d| format!("[{}]", d.kind.placeholder_stem()))
}

/// Number placeholders within one text (a one-off conversation, e.g. the CLI).
pub fn redact_numbered(text: &str, detections: &[Detection]) -> String {
    let mut book = PlaceholderBook::new();
    apply(text, detections, |d| {
        let key = canonical(d.kind, d.value(text));
        let mut k = d.kind.name().as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(key.as_bytes());
        book.placeholder_for(d.kind, &k).0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect;

    #[test]
    fn same_value_same_placeholder() {
        let t = "card 4111 1111 1111 1111 and 4111-1111-1111-1111 and 5555555555554444";
        let r = redact_numbered(t, &detect(t));
        assert_eq!(r, "card [CARD_1] and [CARD_1] and [CARD_2]");
    }

    #[test]
    fn book_resumes_numbering() {
        let mut b = PlaceholderBook::new();
        b.record(b"a".to_vec(), "[CPF_3]");
        assert_eq!(b.placeholder_for(EntityType::BrCpf, b"b"), ("[CPF_4]".to_owned(), true));
        assert_eq!(b.placeholder_for(EntityType::BrCpf, b"a"), ("[CPF_3]".to_owned(), false));
        assert_eq!(parse_placeholder("[RECOVERY_PHRASE_2]"), Some(("RECOVERY_PHRASE", 2)));
    }

    #[test]
    fn mask_for_logs() {
        let t = "cpf 723.910.967-47";
        assert_eq!(mask(t, &detect(t)), "cpf [CPF]");
    }
}
