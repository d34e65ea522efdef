//! Strict validators: checksums and structure rules of `docs/pii-rules.md`.
//!
//! Luhn, card issuers, SSN, CPF, CNPJ and EIP-55 are written here (the rules ask for it and test
//! them against the corpus); base58check, bech32/bech32m and IBAN use small audited crates.
//! Every function takes the candidate text and never panics on any input.

use sha2::{Digest, Sha256};
use sha3::Keccak256;

/// Digits of `s`, ignoring everything else.
pub fn digits(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect()
}

fn all_same(d: &[u8]) -> bool {
    d.windows(2).all(|w| w[0] == w[1])
}

/// Luhn mod-10 over digit values.
pub fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    !d.is_empty() && sum.is_multiple_of(10)
}

/// Card brands the rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// Visa.
    Visa,
    /// Mastercard, 51–55 and 2221–2720.
    Mastercard,
    /// American Express.
    Amex,
    /// Discover.
    Discover,
    /// JCB.
    Jcb,
    /// Diners Club.
    Diners,
    /// Elo (Brazil).
    Elo,
    /// Hipercard (Brazil).
    Hipercard,
}

fn prefix_num(d: &[u8], n: usize) -> u32 {
    d.iter().take(n).fold(0u32, |acc, &x| acc * 10 + u32::from(x))
}

/// Elo BIN ranges (6 digits), from the public Elo BIN table.
const ELO_RANGES: &[(u32, u32)] = &[
    (401178, 401179),
    (431274, 431274),
    (438935, 438935),
    (451416, 451416),
    (457393, 457393),
    (457631, 457632),
    (504175, 504175),
    (506699, 506778),
    (509000, 509999),
    (627780, 627780),
    (636297, 636297),
    (636368, 636368),
    (650031, 650033),
    (650035, 650051),
    (650405, 650439),
    (650485, 650538),
    (650541, 650598),
    (650700, 650718),
    (650720, 650727),
    (650901, 650920),
    (651652, 651679),
    (655000, 655019),
    (655021, 655058),
];

const HIPERCARD_BINS: &[u32] = &[606282, 637095, 637568, 637599, 637609, 637612];

/// The issuer whose prefix and length match, if any (not checking Luhn).
pub fn card_issuer(d: &[u8]) -> Option<Issuer> {
    let len = d.len();
    if !(12..=19).contains(&len) || all_same(d) {
        return None;
    }
    let p6 = prefix_num(d, 6);
    let p4 = prefix_num(d, 4);
    let p3 = prefix_num(d, 3);
    let p2 = prefix_num(d, 2);
    if len == 16 && ELO_RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&p6)) {
        return Some(Issuer::Elo);
    }
    if (HIPERCARD_BINS.contains(&p6) && len == 16) || (p4 == 3841 && (16..=19).contains(&len)) {
        return Some(Issuer::Hipercard);
    }
    if d[0] == 4 && matches!(len, 13 | 16 | 19) {
        return Some(Issuer::Visa);
    }
    if ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16 {
        return Some(Issuer::Mastercard);
    }
    if matches!(p2, 34 | 37) && len == 15 {
        return Some(Issuer::Amex);
    }
    if (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65) && (16..=19).contains(&len) {
        return Some(Issuer::Discover);
    }
    if (3528..=3589).contains(&p4) && (16..=19).contains(&len) {
        return Some(Issuer::Jcb);
    }
    if (matches!(p2, 36 | 38) || (300..=305).contains(&p3)) && (14..=19).contains(&len) {
        return Some(Issuer::Diners);
    }
    None
}

/// Strict card rule: issuer prefix and length consistent, Luhn, not one repeated digit.
pub fn card_valid(d: &[u8]) -> bool {
    card_issuer(d).is_some() && luhn(d)
}

/// SSN rules: area not 000/666/900–999, group not 00, serial not 0000, not a public sample.
pub fn ssn_valid(d: &[u8]) -> bool {
    if d.len() != 9 {
        return false;
    }
    let area = prefix_num(d, 3);
    let group = prefix_num(&d[3..], 2);
    let serial = prefix_num(&d[5..], 4);
    let whole = prefix_num(d, 9);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && whole != 78_051_120 && whole != 123_456_789
}

fn mod11_dv(values: &[u32], weights: &[u32]) -> u32 {
    let s: u32 = values.iter().zip(weights).map(|(v, w)| v * w).sum();
    let r = s % 11;
    if r < 2 { 0 } else { 11 - r }
}

/// CPF: two mod-11 check digits, not one repeated digit.
pub fn cpf_valid(d: &[u8]) -> bool {
    if d.len() != 11 || all_same(d) {
        return false;
    }
    let v: Vec<u32> = d.iter().map(|&x| u32::from(x)).collect();
    let dv1 = mod11_dv(&v[..9], &[10, 9, 8, 7, 6, 5, 4, 3, 2]);
    let dv2 = mod11_dv(&v[..10], &[11, 10, 9, 8, 7, 6, 5, 4, 3, 2]);
    v[9] == dv1 && v[10] == dv2
}

/// CNPJ characters (digits and, from July 2026, upper-case letters in the first 12), without
/// punctuation. `None` if the shape is wrong.
pub fn cnpj_chars(s: &str) -> Option<Vec<u8>> {
    let c: Vec<u8> = s.bytes().filter(u8::is_ascii_alphanumeric).collect();
    if c.len() != 14
        || !c[..12].iter().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        || !c[12..].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    Some(c)
}

/// CNPJ: value = ASCII − 48 per character, two mod-11 check digits; not one repeated digit.
pub fn cnpj_valid(c: &[u8]) -> bool {
    if c.len() != 14 || all_same(c) {
        return false;
    }
    let v: Vec<u32> = c.iter().map(|&b| u32::from(b) - 48).collect();
    let dv1 = mod11_dv(&v[..12], &[5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]);
    let dv2 = mod11_dv(&v[..13], &[6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]);
    v[12] == dv1 && v[13] == dv2
}

/// EIP-55 outcome for a `0x` + 40 hex candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eip55 {
    /// Mixed case with a correct checksum.
    Checksummed,
    /// All lower or all upper case: valid, no checksum to check.
    Uncased,
    /// Mixed case, wrong checksum.
    Bad,
}

/// Check EIP-55: keccak-256 of the lower-case hex; a letter is upper-case iff its nibble ≥ 8.
pub fn eip55(addr: &str) -> Eip55 {
    let hex = addr.strip_prefix("0x").unwrap_or(addr);
    let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
    if !(has_lower && has_upper) {
        return Eip55::Uncased;
    }
    let lower = hex.to_ascii_lowercase();
    let hash = Keccak256::digest(lower.as_bytes());
    for (i, b) in hex.bytes().enumerate() {
        if !b.is_ascii_alphabetic() {
            continue;
        }
        let byte = hash[i / 2];
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        if (nibble >= 8) != b.is_ascii_uppercase() {
            return Eip55::Bad;
        }
    }
    Eip55::Checksummed
}

/// EIP-55 encoding of a 20-byte address (used by tests and seeded generators).
pub fn eip55_encode(bytes: &[u8; 20]) -> String {
    let lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::from("0x");
    for (i, c) in lower.chars().enumerate() {
        let byte = hash[i / 2];
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        out.push(if nibble >= 8 { c.to_ascii_uppercase() } else { c });
    }
    out
}

/// Base58check payload (version byte included, checksum removed), if the checksum holds.
pub fn base58check(s: &str) -> Option<Vec<u8>> {
    bs58::decode(s).with_check(None).into_vec().ok()
}

/// Raw base58 decode (no checksum).
pub fn base58(s: &str) -> Option<Vec<u8>> {
    bs58::decode(s).into_vec().ok()
}

/// Bitcoin legacy address: 25 bytes, version 0x00/0x05 (mainnet) or 0x6F/0xC4 (testnet),
/// double-SHA-256 checksum.
pub fn btc_legacy_valid(s: &str) -> bool {
    matches!(base58check(s), Some(p) if p.len() == 21 && matches!(p[0], 0x00 | 0x05 | 0x6f | 0xc4))
}

/// Same shape as a legacy address (25 bytes, known version) whatever the checksum.
pub fn btc_legacy_shape(s: &str) -> bool {
    matches!(base58(s), Some(p) if p.len() == 25 && matches!(p[0], 0x00 | 0x05 | 0x6f | 0xc4))
}

/// Bitcoin segwit address: BIP-173/350 through the `bech32` crate (single case, HRP bc/tb,
/// bech32 for v0 and bech32m for v1+, program lengths).
pub fn btc_segwit_valid(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if !(lower.starts_with("bc1") || lower.starts_with("tb1")) {
        return false;
    }
    let mixed = s.bytes().any(|b| b.is_ascii_lowercase()) && s.bytes().any(|b| b.is_ascii_uppercase());
    !mixed && bech32::segwit::decode(s).is_ok()
}

/// WIF: base58check, version 0x80/0xEF, 32-byte key, optional 0x01 compression flag.
pub fn wif_valid(s: &str) -> bool {
    match base58check(s) {
        Some(p) if p.len() == 33 => matches!(p[0], 0x80 | 0xef),
        Some(p) if p.len() == 34 => matches!(p[0], 0x80 | 0xef) && p[33] == 0x01,
        _ => false,
    }
}

const XPRV_VERSIONS: &[u32] =
    &[0x0488_ADE4, 0x0435_8394, 0x049D_7878, 0x04B2_430C, 0x0295_B005, 0x02AA_7A99, 0x044A_4E28, 0x045F_18BC];
const XPUB_VERSIONS: &[u32] =
    &[0x0488_B21E, 0x0435_87CF, 0x049D_7CB2, 0x04B2_4746, 0x0295_B43F, 0x02AA_7ED3, 0x044A_5262, 0x045F_1CF6];

/// BIP-32 extended key: `Some(true)` for a valid private key, `Some(false)` for a valid public
/// key, `None` otherwise (78-byte base58check payload with a known version).
pub fn bip32_kind(s: &str) -> Option<bool> {
    let p = base58check(s)?;
    if p.len() != 78 {
        return None;
    }
    let v = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
    if XPRV_VERSIONS.contains(&v) {
        Some(true)
    } else if XPUB_VERSIONS.contains(&v) {
        Some(false)
    } else {
        None
    }
}

/// Solana: base58 decoding to exactly 32 bytes (there is no checksum).
pub fn sol_shape(s: &str) -> bool {
    matches!(base58(s), Some(p) if p.len() == 32)
}

/// IBAN through `iban_validate` (country length, BBAN format, mod 97 = 1). Spaces allowed.
pub fn iban_valid(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    compact.parse::<iban::Iban>().is_ok()
}

/// IBAN length by country for the countries the service sees most; used to cut a candidate
/// to size and to mask look-alikes that fail mod 97.
pub fn iban_country_len(cc: &str) -> Option<usize> {
    Some(match cc {
        "BR" => 29,
        "DE" | "GB" | "IE" => 22,
        "PT" => 25,
        "FR" | "IT" | "MC" => 27,
        "ES" | "SE" => 24,
        "NL" => 18,
        "BE" => 16,
        "CH" | "LI" => 21,
        "AT" | "LU" => 20,
        "PL" | "HU" => 28,
        "DK" | "FI" => 18,
        "NO" => 15,
        _ => return None,
    })
}

/// Shannon entropy in bits per char.
pub fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// High-entropy token rule: > 3.0 bits/char for hex, > 4.5 for base64-like, on ≥ 20 chars.
/// Short tokens cannot reach 4.5 bits (log2 of their length), so the bar is capped at 90% of it.
pub fn high_entropy(token: &str) -> bool {
    let len = token.len();
    if len < 20 {
        return false;
    }
    let e = shannon_entropy(token);
    if token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return e > 3.0;
    }
    let cap = 0.9 * (len as f64).log2();
    let has_digit = token.bytes().any(|b| b.is_ascii_digit());
    let has_alpha = token.bytes().any(|b| b.is_ascii_alphabetic());
    has_digit && has_alpha && e > 4.5_f64.min(cap)
}

/// SHA-256 (re-exported for the BIP-39 checksum).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_cards() {
        assert!(card_valid(&digits("4111 1111 1111 1111")));
        assert!(!card_valid(&digits("4111 1111 1111 1112")));
        assert!(card_valid(&digits("2720-1742-1809-6798")));
        assert!(card_valid(&digits("6062-8287-7893-2877")));
        assert!(card_valid(&digits("6363681816997741")));
        assert!(!card_valid(&digits("2720 9081 0033 9071")));
        assert!(!card_valid(&digits("0000000000000000")));
        assert_eq!(card_issuer(&digits("9096690911114656")), None);
        assert_eq!(card_issuer(&digits("378282246310005")), Some(Issuer::Amex));
        assert!(card_valid(&digits("378282246310005")));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_valid(&digits("606-26-8506")));
        assert!(!ssn_valid(&digits("666-85-1393")));
        assert!(!ssn_valid(&digits("000-56-7808")));
        assert!(!ssn_valid(&digits("912-56-7808")));
        assert!(!ssn_valid(&digits("123-45-6789")));
        assert!(!ssn_valid(&digits("078-05-1120")));
        assert!(!ssn_valid(&digits("123-00-6780")));
    }

    #[test]
    fn cpf_and_cnpj() {
        assert!(cpf_valid(&digits("97510490405")));
        assert!(cpf_valid(&digits("723.910.967-47")));
        assert!(!cpf_valid(&digits("490.267.304-58")));
        assert!(!cpf_valid(&digits("111.111.111-11")));
        let ok = |s: &str| cnpj_chars(s).is_some_and(|c| cnpj_valid(&c));
        assert!(ok("12.ABC.345/01DE-35"));
        assert!(ok("71.851.337/4207-96"));
        assert!(ok("BEHMYXWAPE5Q17"));
        assert!(!ok("27.730.689/8575-59"));
        assert!(!ok("60901384000141"));
    }

    #[test]
    fn eip55_cases() {
        assert_eq!(eip55("0xa9CDf8FA1D6a7ab5cb9abd650F73776b14A4B212"), Eip55::Checksummed);
        assert_eq!(eip55("0x0e38f59001f523a1dd3fd032cf7c4cc7f2d8c6ac"), Eip55::Uncased);
        assert_eq!(eip55("0x58031045ed9B3e5613154F163E6FaB4fF1542455"), Eip55::Bad);
        let enc = eip55_encode(&[0xab; 20]);
        assert_eq!(eip55(&enc), Eip55::Checksummed);
    }

    #[test]
    fn bitcoin() {
        assert!(btc_legacy_valid("1AfKsJhroMWUET1kXCUgfQVadh4toQ1zyd"));
        assert!(btc_segwit_valid("bc1pkzzluj2662ws0sp2lgg579e2jpc8z27y9cv6zxc3n2qxde8mnqdsj2qdcd"));
        assert!(!btc_segwit_valid("bc1ps2mzxqxlpw5rv4q2kq65rgjjah0egplfwgpk2rggzeghs32mresq9kd5js"));
        assert!(!btc_segwit_valid("bc1qw8ahx5Smpqltnmcxlpd0whv486kqr2v76mjgwq"));
    }

    #[test]
    fn keys_and_iban() {
        assert!(wif_valid("L2eVydKUwRYtBwQJSK11bkiAQAaRw3RJZ5oqnFwxPNkHbo42LaRw"));
        assert!(wif_valid("5JkW9XaQoU6CimjTb9dbhJjN44pY6AJVyLmAYnRCYWWzqrwsVZy"));
        assert_eq!(
            bip32_kind(
                "xprv9u1ZPstGXz3P13TBBhew8E4pxH4ZvFwXQDtRQaYpFAEDNeoxEo7X38fXmL8oCM5oZbPDuSFMqbZ3UnoMYwL9SE8jKHm3ps8zucemyjZvJGt"
            ),
            Some(true)
        );
        assert!(sol_shape("HjpFC9bazMjA7kbqsPQvBnPEN5GmF1xMrFV7KdU79vHZ"));
        assert!(iban_valid("DE65 1797 4054 2938 2577 35"));
        assert!(!iban_valid("GB39 GUNZ 3363 9532 2750 14"));
        assert!(high_entropy("DRJxRpbD/Oyh+M02BZy11Gbo+mk3rO5hCRMwoDMaHYW+nW5+cdgRrCgyvFDy5l23"));
        assert!(!high_entropy("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    }
}
