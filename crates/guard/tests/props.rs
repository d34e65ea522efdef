//! Property tests: a valid card, CPF or recovery phrase seeded anywhere in random text is always
//! detected and redacted; detectors and the normaliser never panic and return sane spans.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use switchboard_guard::detect::bip39::{self, Lang};
use switchboard_guard::{EntityType, detect, redact};

fn luhn_complete(body: &[u8]) -> u8 {
    // check digit that makes body+digit pass Luhn
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// (prefix, total length) of issuers the rules name.
const ISSUERS: &[(&str, usize)] = &[
    ("4", 16),
    ("4", 13),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("2720", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("65", 16),
    ("3528", 16),
    ("36", 14),
    ("636368", 16),
    ("606282", 16),
];

fn card() -> impl Strategy<Value = String> {
    (0..ISSUERS.len(), prop::collection::vec(0u8..10, 19), 0..3usize).prop_filter_map(
        "not one repeated digit",
        |(i, rand, style)| {
            let (prefix, len) = ISSUERS[i];
            let mut d: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
            d.extend_from_slice(&rand[..len - 1 - d.len()]);
            d.push(luhn_complete(&d));
            if d.windows(2).all(|w| w[0] == w[1]) {
                return None;
            }
            let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
            Some(match (style, len) {
                (1, 16) => {
                    s.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
                }
                (2, 16) => {
                    s.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("-")
                }
                _ => s,
            })
        },
    )
}

fn cpf() -> impl Strategy<Value = String> {
    (prop::collection::vec(0u32..10, 9), any::<bool>()).prop_filter_map("repeated", |(mut d, punct)| {
        if d.windows(2).all(|w| w[0] == w[1]) {
            return None;
        }
        for n in [9usize, 10] {
            let s: u32 = d.iter().zip((2..=n as u32 + 1).rev()).map(|(a, w)| a * w).sum();
            let r = s % 11;
            d.push(if r < 2 { 0 } else { 11 - r });
        }
        let s: String = d.iter().map(|x| char::from_digit(*x, 10).unwrap()).collect();
        Some(if punct { format!("{}.{}.{}-{}", &s[..3], &s[3..6], &s[6..9], &s[9..]) } else { s })
    })
}

fn mnemonic() -> impl Strategy<Value = String> {
    (prop::collection::vec(0u16..2048, 23), any::<bool>(), prop::sample::select(vec![12usize, 24]), 0..3usize).prop_map(
        |(idx, pt, n, sep)| {
            let lang = if pt { Lang::Portuguese } else { Lang::English };
            let mut words: Vec<u16> = idx[..n - 1].to_vec();
            let last = (0..2048u16)
                .find(|&w| {
                    let mut all = words.clone();
                    all.push(w);
                    bip39::checksum_ok(&all)
                })
                .unwrap();
            words.push(last);
            let w: Vec<&str> = words.iter().map(|&i| bip39::word(lang, i).unwrap()).collect();
            match sep {
                0 => w.join(" "),
                1 => w.join(", "),
                _ => w.iter().enumerate().map(|(i, x)| format!("{}. {x}", i + 1)).collect::<Vec<_>>().join("\n"),
            }
        },
    )
}

/// Random filler: words, punctuation, accents and some digits.
fn filler() -> impl Strategy<Value = String> {
    "[a-zA-Zçãéó ,.!?:;'()]{0,60}( [0-9]{1,4})?"
}

fn seeded(value: String, kind: EntityType) -> impl Strategy<Value = (String, String, EntityType)> {
    (filler(), filler()).prop_map(move |(a, b)| (format!("{a} {value} {b}"), value.clone(), kind))
}

fn check((text, value, kind): (String, String, EntityType), require_kind: bool) -> Result<(), TestCaseError> {
    let found = detect(&text);
    // a numbered phrase ("1. word 2. word") is covered from its first word
    let lead = if kind == EntityType::Bip39Mnemonic { value.find(char::is_alphabetic).unwrap() } else { 0 };
    let start = text.find(&value).unwrap() + lead;
    let end = start - lead + value.len();
    let covering = found.iter().find(|d| d.bytes.start <= start && d.bytes.end >= end);
    prop_assert!(covering.is_some(), "{value:?} not covered in {text:?}: {found:?}");
    if require_kind {
        prop_assert_eq!(covering.unwrap().kind, kind);
        prop_assert!(covering.unwrap().valid);
    }
    let red = redact::redact_numbered(&text, &found);
    prop_assert!(!red.contains(&value), "{value:?} survived in {red:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn seeded_card_is_redacted(t in card().prop_flat_map(|c| seeded(c, EntityType::CreditCard))) {
        check(t, true)?;
    }

    #[test]
    fn seeded_cpf_is_redacted(t in cpf().prop_flat_map(|c| seeded(c, EntityType::BrCpf))) {
        check(t, false)?;
    }

    #[test]
    fn seeded_recovery_phrase_is_redacted(t in mnemonic().prop_flat_map(|m| seeded(m, EntityType::Bip39Mnemonic))) {
        check(t, true)?;
    }

    #[test]
    fn detectors_never_panic_and_spans_are_sane(s in "\\PC{0,300}") {
        let found = detect(&s);
        let mut last = 0;
        for d in &found {
            prop_assert!(d.bytes.start >= last && d.bytes.start < d.bytes.end && d.bytes.end <= s.len());
            prop_assert!(s.is_char_boundary(d.bytes.start) && s.is_char_boundary(d.bytes.end));
            prop_assert_eq!(s[..d.bytes.start].chars().count(), d.start);
            prop_assert_eq!(s[..d.bytes.end].chars().count(), d.end);
            last = d.bytes.end;
        }
        let _ = switchboard_guard::injection::normalize(&s);
    }
}

/// Bad input from the issue: 1 MB texts built to maximise candidates, context hits and regex
/// work finish in bounded (near-linear) time and do not panic.
#[test]
fn huge_hostile_inputs_are_bounded() {
    let mb = 1 << 20;
    let fill = |unit: &str| unit.repeat(mb / unit.len());
    let inputs = [
        fill("4111 1111 1111 1111 "),
        fill("card 4111 1111 1111 1112 "),
        fill("a@b.co key "),
        fill("abandon "),
        fill("code 123456 "),
        fill("1"),
        fill("HjpFC9bazMjA7kbqsPQvBnPEN5GmF1xMrFV7KdU79vHZ "),
        fill("\u{200b}a"),
        fill("QUFB"),
    ];
    for s in &inputs {
        let t = std::time::Instant::now();
        let found = detect(s);
        let _ = switchboard_guard::injection::InjectionScorer::default()
            .score(s, switchboard_guard::injection::Source::ToolOutput);
        let _ = switchboard_guard::output::OutputPolicy::default().check(s);
        let secs = t.elapsed().as_secs_f64();
        // generous: debug build on a shared CI core; quadratic behaviour would take hours
        eprintln!("{secs:.2}s {:?}", &s[..12]);
        assert!(secs < 120.0, "{secs}s on input starting {:?} ({} found)", &s[..20], found.len());
    }
}
