//! PII and secret detectors: candidate patterns, context, validators, overlap resolution.
//!
//! Every pattern is compiled by the `regex` crate (finite automata, linear time in the input:
//! no backtracking blow-up on hostile text) and uses ASCII word boundaries so the lazy DFA is
//! used on any input. A candidate becomes a [`Detection`] in one of two tiers:
//! [`Tier::Strict`] when its validator passes (Luhn, mod-11, base58check, bech32m, EIP-55, ...),
//! [`Tier::FailSafe`] when it is a strong look-alike in context (a mistyped card or seed phrase)
//! that must be masked anyway. Context ("CPF", "cartão", "authenticator", ...) is found once per
//! text and looked up by distance, so the cost stays one pass per pattern.

pub mod bip39;
pub mod validate;

use regex::Regex;
use std::ops::Range;
use std::sync::LazyLock;

use crate::entity::{Detection, EntityType, Tier};
use validate as v;

/// Tunables of the detector.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    /// E-mail domains that are not personal data (the exchange's own support addresses).
    pub allowed_email_domains: Vec<String>,
    /// How far (bytes) before a candidate a context word still counts.
    pub context_before: usize,
    /// How far (bytes) after a candidate a context word still counts.
    pub context_after: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            allowed_email_domains: Vec::new(),
            context_before: DEFAULT_CONTEXT_BEFORE,
            context_after: DEFAULT_CONTEXT_AFTER,
        }
    }
}

/// Default context window before a candidate, in bytes.
pub const DEFAULT_CONTEXT_BEFORE: usize = 64;
/// Default context window after a candidate, in bytes.
pub const DEFAULT_CONTEXT_AFTER: usize = 48;

/// Context word families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Card,
    Ssn,
    Cpf,
    Cnpj,
    Phone,
    Sol,
    Wallet,
    Key,
    Otp,
    Secret,
    Pix,
    Iban,
}

const CTX_COUNT: usize = 12;

fn ctx_pattern(c: Ctx) -> &'static str {
    match c {
        Ctx::Card => {
            r"(?i)(?-u:\b)(?:card|cart[aã]o|cartoes|cartões|visa|master ?card|amex|elo|hipercard|discover|credit|debit|cr[eé]dito|d[eé]bito|final|pan)(?-u:\b)"
        }
        Ctx::Ssn => r"(?i)(?-u:\b)(?:ssn|social security|social|taxpayer|itin|tin)(?-u:\b)",
        Ctx::Cpf => r"(?i)(?-u:\b)(?:cpf|cadastro|contribuinte|documento|receita federal)(?-u:\b)",
        Ctx::Cnpj => r"(?i)(?-u:\b)(?:cnpj|empresa|company|mei|raz[aã]o social)(?-u:\b)",
        Ctx::Phone => {
            r"(?i)(?-u:\b)(?:phone|telephone|telefone|celular|cell|mobile|whatsapp|call|ligar|ligue|tel|sms|fone|contato|contact)(?-u:\b)"
        }
        Ctx::Sol => r"(?i)(?-u:\b)(?:sol|solana|phantom|solflare|spl)(?-u:\b)",
        Ctx::Wallet => {
            r"(?i)(?-u:\b)(?:wallet|address|endere[cç]o|carteira|deposit|dep[oó]sito|withdraw\w*|saque|send|sent|enviei|mandei)(?-u:\b)"
        }
        Ctx::Key => {
            r"(?i)(?-u:\b)(?:private[ _-]?key|priv[ _-]?key|privkey|priv|secret|secret[ _-]?key|chave privada|chave secreta|exported key|export\w*|key|chave|seed|mnemonic)(?-u:\b)"
        }
        Ctx::Otp => {
            r"(?i)(?-u:\b)(?:code|codes|c[oó]digo|codigos|c[oó]digos|2fa|mfa|otp|totp|authenticator|autenticador|autentica[cç][aã]o|verification|verifica[cç][aã]o|verify|sms|one[- ]time|token|passcode)(?-u:\b)"
        }
        Ctx::Secret => {
            r"(?i)(?-u:\b)(?:api[ _-]?key|apikey|key|keys|secret|secrets|token|senha|chave|password|credential\w*|bearer|authorization)(?-u:\b)"
        }
        Ctx::Pix => r"(?i)(?-u:\b)(?:pix|chave aleat[oó]ria|evp)(?-u:\b)",
        Ctx::Iban => r"(?i)(?-u:\b)(?:iban|swift|bic|wire|transfer\w*|bank|banco|conta)(?-u:\b)",
    }
}

const ALL_CTX: [Ctx; CTX_COUNT] = [
    Ctx::Card,
    Ctx::Ssn,
    Ctx::Cpf,
    Ctx::Cnpj,
    Ctx::Phone,
    Ctx::Sol,
    Ctx::Wallet,
    Ctx::Key,
    Ctx::Otp,
    Ctx::Secret,
    Ctx::Pix,
    Ctx::Iban,
];

struct Patterns {
    card: Regex,
    cvv: Regex,
    ssn: Regex,
    cpf: Regex,
    cnpj: Regex,
    phone: Regex,
    email: Regex,
    iban: Regex,
    btc_legacy: Regex,
    btc_segwit: Regex,
    eth: Regex,
    sol: Regex,
    wif: Regex,
    bip32: Regex,
    hex64: Regex,
    otp: Regex,
    api_known: Regex,
    api_generic: Regex,
    uuid: Regex,
    password: Regex,
    ctx: Vec<Regex>,
}

fn re(p: &str) -> Regex {
    Regex::new(p).expect("built-in pattern compiles")
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| Patterns {
    card: re(r"(?-u:\b)(?:\d{3,7}(?:[ -]\d{3,7})+|\d{12,19})(?-u:\b)"),
    cvv: re(
        r"(?i)(?-u:\b)(?:cvv2?|cvc2?|cvn|cid|c[oó]digo de seguran[cç]a|security code|card verification(?: code| value)?)(?-u:\b)[^0-9\n]{0,24}?(\d{3,4})(?-u:\b)",
    ),
    ssn: re(r"(?-u:\b)(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}|\d{9})(?-u:\b)"),
    cpf: re(r"(?-u:\b)\d{3}\.?\d{3}\.?\d{3}-?\d{2}(?-u:\b)"),
    cnpj: re(r"(?-u:\b)[0-9A-Z]{2}\.?[0-9A-Z]{3}\.?[0-9A-Z]{3}/?[0-9A-Z]{4}-?\d{2}(?-u:\b)"),
    phone: re(r"(?:\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,5}){1,4}|\(?\d{2,3}\)?[ .-]?\d{3,5}[ .-]\d{4}|\d{10,11})"),
    email: re(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?-u:\b)"),
    iban: re(r"(?-u:\b)[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)"),
    btc_legacy: re(r"(?-u:\b)[13mn2][1-9A-HJ-NP-Za-km-z]{25,34}(?-u:\b)"),
    btc_segwit: re(r"(?i)(?-u:\b)(?:bc|tb)1[02-9ac-hj-np-z]{6,87}(?-u:\b)"),
    eth: re(r"(?-u:\b)0x[0-9a-fA-F]{40}(?-u:\b)"),
    sol: re(r"(?-u:\b)[1-9A-HJ-NP-Za-km-z]{32,44}(?-u:\b)"),
    wif: re(r"(?-u:\b)[5KLc9][1-9A-HJ-NP-Za-km-z]{50,51}(?-u:\b)"),
    bip32: re(r"(?-u:\b)[xtyzuvXYZUV](?:prv|pub)[1-9A-HJ-NP-Za-km-z]{100,112}(?-u:\b)"),
    hex64: re(r"(?-u:\b)(?:0x)?[0-9a-fA-F]{64}(?-u:\b)"),
    otp: re(r"(?-u:\b)(?:\d{6,8}|\d{3}[ -]\d{3})(?-u:\b)"),
    api_known: re(concat!(
        r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
        r"|(?-u:\b)gh[pousr]_[A-Za-z0-9]{30,255}(?-u:\b)",
        r"|(?-u:\b)github_pat_[A-Za-z0-9_]{22,255}(?-u:\b)",
        r"|(?-u:\b)(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,247}(?-u:\b)",
        r"|(?-u:\b)sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",
        r"|(?-u:\b)xox[abprs]-[0-9A-Za-z-]{10,}",
        r"|(?-u:\b)AIza[0-9A-Za-z_-]{35}",
        r"|(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
        r"|-----BEGIN[A-Z ]{0,30} PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z ]{0,30} PRIVATE KEY-----|\z)",
        r"|organizations/[0-9a-fA-F-]{8,64}/apiKeys/[0-9a-fA-F-]{8,64}",
    )),
    api_generic: re(r"[A-Za-z0-9+/_\-]{20,512}={0,2}"),
    uuid: re(r"(?i)(?-u:\b)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?-u:\b)"),
    password: re(
        r#"(?i)(?-u:\b)(?:password|passwd|passcode|senha)(?:\s+(?:is|was|é|e|era|:))?\s*[:=]?\s*["']?([^\s"']{4,64})"#,
    ),
    ctx: ALL_CTX.iter().map(|&c| re(ctx_pattern(c))).collect(),
});

/// The detector: compiled patterns plus configuration. Cheap to share (`&self` everywhere).
#[derive(Debug, Clone, Default)]
pub struct Detector {
    config: DetectorConfig,
}

/// Context hits of one text.
struct Context {
    hits: [Vec<Range<usize>>; CTX_COUNT],
    before: usize,
    after: usize,
}

impl Context {
    /// A context word of family `c` within the window around `r` (and not inside `r` itself).
    /// Hits are sorted and disjoint, so a binary search finds the first candidate: a huge input
    /// with many hits and many candidates stays O(n log n).
    fn near(&self, c: Ctx, r: &Range<usize>) -> bool {
        let lo = r.start.saturating_sub(self.before);
        let hi = r.end.saturating_add(self.after);
        let hits = &self.hits[c as usize];
        let first = hits.partition_point(|h| h.end < lo);
        hits[first..].iter().take_while(|h| h.start <= hi).any(|h| !(h.start >= r.start && h.end <= r.end))
    }
}

struct Found {
    kind: EntityType,
    bytes: Range<usize>,
    valid: bool,
    confidence: f32,
}

impl Detector {
    /// A detector with the given configuration.
    pub fn new(config: DetectorConfig) -> Self {
        LazyLock::force(&PATTERNS);
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// All detections in `text`, non-overlapping, sorted by position.
    pub fn detect(&self, text: &str) -> Vec<Detection> {
        let p = &*PATTERNS;
        let mut hits: [Vec<Range<usize>>; CTX_COUNT] = Default::default();
        for (i, r) in p.ctx.iter().enumerate() {
            hits[i] = r.find_iter(text).map(|m| m.range()).collect();
        }
        let ctx = Context { hits, before: self.config.context_before, after: self.config.context_after };
        let mut out: Vec<Found> = Vec::new();
        let mut push = |kind, bytes: Range<usize>, valid, confidence| {
            out.push(Found { kind, bytes, valid, confidence });
        };
        self.cards(text, &ctx, &mut push);
        self.ids(text, &ctx, &mut push);
        self.contact(text, &ctx, &mut push);
        self.crypto(text, &ctx, &mut push);
        self.secrets(text, &ctx, &mut push);
        resolve(text, out)
    }

    fn cards(&self, text: &str, ctx: &Context, push: &mut impl FnMut(EntityType, Range<usize>, bool, f32)) {
        let p = &*PATTERNS;
        for m in p.card.find_iter(text) {
            // Flagged windows of one run that overlap are merged: when digits typed next to a
            // card also form a valid number, masking only one of the two would leak the other.
            let mut flagged: Vec<(Range<usize>, bool, f32)> = Vec::new();
            for (range, grouped) in card_windows(m.as_str(), m.start()) {
                let d = v::digits(&text[range.clone()]);
                let near = ctx.near(Ctx::Card, &range);
                let hit = match v::card_issuer(&d) {
                    Some(_) if v::luhn(&d) => Some((
                        true,
                        if near {
                            0.99
                        } else if grouped {
                            0.9
                        } else {
                            0.8
                        },
                    )),
                    Some(_) if near || grouped => Some((false, 0.6)),
                    _ => None,
                };
                let Some((valid, conf)) = hit else { continue };
                // windows come in order of start and the merged ranges stay disjoint, so only
                // the last one can overlap
                match flagged.last_mut().filter(|f| range.start < f.0.end) {
                    Some(f) => {
                        f.0 = f.0.start.min(range.start)..f.0.end.max(range.end);
                        f.1 |= valid;
                        f.2 = f.2.max(conf);
                    }
                    None => flagged.push((range, valid, conf)),
                }
            }
            for (range, valid, conf) in flagged {
                push(EntityType::CreditCard, range, valid, conf);
            }
        }
        for c in p.cvv.captures_iter(text) {
            if let Some(g) = c.get(1) {
                push(EntityType::Cvv, g.range(), true, 0.9);
            }
        }
    }

    fn ids(&self, text: &str, ctx: &Context, push: &mut impl FnMut(EntityType, Range<usize>, bool, f32)) {
        let p = &*PATTERNS;
        for m in p.ssn.find_iter(text) {
            let d = v::digits(m.as_str());
            let delimited = m.as_str().len() != 9;
            let near = ctx.near(Ctx::Ssn, &m.range());
            let valid = v::ssn_valid(&d);
            match (delimited, valid, near) {
                (true, true, _) => push(EntityType::UsSsn, m.range(), true, if near { 0.97 } else { 0.75 }),
                (true, false, true) => push(EntityType::UsSsn, m.range(), false, 0.6),
                (false, true, true) => push(EntityType::UsSsn, m.range(), true, 0.85),
                _ => {}
            }
        }
        for m in p.cpf.find_iter(text) {
            let d = v::digits(m.as_str());
            let punctuated = m.as_str().len() != 11;
            let near = ctx.near(Ctx::Cpf, &m.range());
            match (v::cpf_valid(&d), punctuated, near) {
                (true, _, true) => push(EntityType::BrCpf, m.range(), true, 0.97),
                (true, true, false) => push(EntityType::BrCpf, m.range(), true, 0.9),
                (true, false, false) => push(EntityType::BrCpf, m.range(), true, 0.6),
                (false, true, _) | (false, false, true) => push(EntityType::BrCpf, m.range(), false, 0.55),
                _ => {}
            }
        }
        for m in p.cnpj.find_iter(text) {
            let Some(c) = v::cnpj_chars(m.as_str()) else {
                continue;
            };
            let punctuated = m.as_str().contains('/');
            let near = ctx.near(Ctx::Cnpj, &m.range());
            if v::cnpj_valid(&c) {
                let conf = if near || punctuated { 0.97 } else { 0.7 };
                push(EntityType::BrCnpj, m.range(), true, conf);
            } else if near || punctuated {
                push(EntityType::BrCnpj, m.range(), false, 0.55);
            }
        }
        for m in p.iban.find_iter(text) {
            let s = m.as_str();
            let cut = v::iban_country_len(&s[..2]).and_then(|len| {
                let mut n = 0;
                s.char_indices().filter(|(_, ch)| !ch.is_whitespace()).find_map(|(i, _)| {
                    n += 1;
                    (n == len).then_some(i + 1)
                })
            });
            let (end, known_len) = match cut {
                Some(e) => (m.start() + e, true),
                None => (m.end(), false),
            };
            let range = m.start()..end;
            let cand = &text[range.clone()];
            if v::iban_valid(cand) {
                push(EntityType::Iban, range, true, 0.97);
            } else if known_len && (ctx.near(Ctx::Iban, &range) || cand.contains(' ')) {
                push(EntityType::Iban, range, false, 0.6);
            }
        }
        for m in p.uuid.find_iter(text) {
            if !ctx.near(Ctx::Pix, &m.range()) {
                continue;
            }
            let b = m.as_str().as_bytes();
            let v4 = b[14] == b'4' && matches!(b[19].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b');
            push(EntityType::PixKey, m.range(), v4, if v4 { 0.9 } else { 0.5 });
        }
    }

    fn contact(&self, text: &str, ctx: &Context, push: &mut impl FnMut(EntityType, Range<usize>, bool, f32)) {
        let p = &*PATTERNS;
        let bytes = text.as_bytes();
        for m in p.phone.find_iter(text) {
            let r = m.range();
            let before_ok = r.start == 0 || !bytes[r.start - 1].is_ascii_alphanumeric();
            let after_ok = r.end == bytes.len() || !bytes[r.end].is_ascii_alphanumeric();
            if !before_ok || !after_ok {
                continue;
            }
            let s = m.as_str();
            let d = v::digits(s);
            if !(10..=13).contains(&d.len()) {
                continue;
            }
            let near = ctx.near(Ctx::Phone, &r);
            let formatted = s.starts_with('+') || s.len() != d.len();
            if !formatted && !near {
                continue;
            }
            if phone_valid(s, &d) {
                push(EntityType::Phone, r, true, if near { 0.95 } else { 0.85 });
            } else if near && formatted {
                push(EntityType::Phone, r, false, 0.5);
            }
        }
        for m in p.email.find_iter(text) {
            let s = m.as_str();
            let Some((_, domain)) = s.rsplit_once('@') else {
                continue;
            };
            if s.len() > 254 {
                continue;
            }
            let domain_lc = domain.to_ascii_lowercase();
            let allowed = self
                .config
                .allowed_email_domains
                .iter()
                .any(|a| domain_lc == *a || domain_lc.ends_with(&format!(".{a}")));
            if !allowed {
                push(EntityType::Email, m.range(), true, 0.97);
            }
        }
    }

    fn crypto(&self, text: &str, ctx: &Context, push: &mut impl FnMut(EntityType, Range<usize>, bool, f32)) {
        let p = &*PATTERNS;
        for m in p.btc_segwit.find_iter(text) {
            if v::btc_segwit_valid(m.as_str()) {
                push(EntityType::BtcAddress, m.range(), true, 0.97);
            } else if m.len() >= 14 {
                push(EntityType::BtcAddress, m.range(), false, 0.6);
            }
        }
        for m in p.btc_legacy.find_iter(text) {
            if v::btc_legacy_valid(m.as_str()) {
                push(EntityType::BtcAddress, m.range(), true, 0.95);
            } else if v::btc_legacy_shape(m.as_str()) {
                push(EntityType::BtcAddress, m.range(), false, 0.5);
            }
        }
        for m in p.eth.find_iter(text) {
            match v::eip55(m.as_str()) {
                v::Eip55::Checksummed => push(EntityType::EthAddress, m.range(), true, 0.97),
                v::Eip55::Uncased => push(EntityType::EthAddress, m.range(), true, 0.85),
                v::Eip55::Bad => push(EntityType::EthAddress, m.range(), false, 0.6),
            }
        }
        for m in p.sol.find_iter(text) {
            if !v::sol_shape(m.as_str()) {
                continue;
            }
            if ctx.near(Ctx::Sol, &m.range()) {
                push(EntityType::SolAddress, m.range(), true, 0.9);
            } else if ctx.near(Ctx::Wallet, &m.range()) {
                push(EntityType::SolAddress, m.range(), false, 0.5);
            }
        }
        for m in p.wif.find_iter(text) {
            if v::wif_valid(m.as_str()) {
                push(EntityType::WifPrivateKey, m.range(), true, 0.99);
            } else if ctx.near(Ctx::Key, &m.range())
                || v::base58(m.as_str()).is_some_and(|b| matches!(b.len(), 37 | 38))
            {
                push(EntityType::WifPrivateKey, m.range(), false, 0.6);
            }
        }
        for m in p.bip32.find_iter(text) {
            let private = m.as_str().get(1..4) == Some("prv");
            match v::bip32_kind(m.as_str()) {
                Some(true) => push(EntityType::Bip32Xprv, m.range(), true, 0.99),
                Some(false) => push(EntityType::Bip32Xpub, m.range(), true, 0.95),
                None if private => push(EntityType::Bip32Xprv, m.range(), false, 0.7),
                None => push(EntityType::Bip32Xpub, m.range(), false, 0.5),
            }
        }
        for run in bip39::find_runs(text) {
            let conf = if run.valid { 0.99 } else { 0.7 };
            push(EntityType::Bip39Mnemonic, run.bytes, run.valid, conf);
        }
    }

    fn secrets(&self, text: &str, ctx: &Context, push: &mut impl FnMut(EntityType, Range<usize>, bool, f32)) {
        let p = &*PATTERNS;
        for m in p.hex64.find_iter(text) {
            if ctx.near(Ctx::Key, &m.range()) {
                push(EntityType::HexPrivateKey, m.range(), true, 0.9);
            }
        }
        for m in p.otp.find_iter(text) {
            if ctx.near(Ctx::Otp, &m.range()) {
                push(EntityType::OtpCode, m.range(), true, 0.85);
            }
        }
        for m in p.api_known.find_iter(text) {
            push(EntityType::ApiSecret, m.range(), true, 0.99);
        }
        for m in p.api_generic.find_iter(text) {
            let tok = m.as_str().trim_end_matches('=');
            if v::high_entropy(tok) && ctx.near(Ctx::Secret, &m.range()) {
                push(EntityType::ApiSecret, m.range(), true, 0.75);
            }
        }
        for c in p.password.captures_iter(text) {
            let Some(g) = c.get(1) else { continue };
            let tok = g.as_str().trim_end_matches(['.', ',', ';', '!', '?']);
            let strong = tok.bytes().any(|b| !b.is_ascii_lowercase());
            if tok.len() >= 4 && strong {
                push(EntityType::Password, g.start()..g.start() + tok.len(), false, 0.6);
            }
        }
    }
}

/// Card candidates inside a run of digit groups: every contiguous sequence of groups with one
/// delimiter style and 12–19 digits (so digits typed next to a card do not hide it). Plain
/// digit runs are their own single window. Returns (byte range, grouped).
fn card_windows(run: &str, offset: usize) -> Vec<(Range<usize>, bool)> {
    // (start, end, delimiter before the group)
    let mut groups: Vec<(usize, usize, u8)> = Vec::new();
    let b = run.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let delim = if i > 0 { b[i - 1] } else { 0 };
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        groups.push((s, i, delim));
        i += 1; // skip the delimiter
    }
    if groups.len() == 1 {
        return vec![(offset..offset + run.len(), false)];
    }
    let mut out = Vec::new();
    for a in 0..groups.len() {
        let mut digits = 0;
        for z in a..groups.len().min(a + 7) {
            if z > a + 1 && groups[z].2 != groups[a + 1].2 {
                break;
            }
            digits += groups[z].1 - groups[z].0;
            if digits > 19 {
                break;
            }
            if digits >= 12 {
                out.push((offset + groups[a].0..offset + groups[z].1, z > a));
            }
        }
    }
    out
}

/// Brazilian area codes (DDD) in use, from the Anatel numbering plan.
const BR_DDD: &[u8] = &[
    11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 51, 53, 54, 55, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71, 73, 74, 75, 77, 79, 81, 82, 83, 84, 85, 86, 87, 88, 89,
    91, 92, 93, 94, 95, 96, 97, 98, 99,
];

/// NANP: NXX-NXX-XXXX with N = 2–9 (area and exchange), neither an N11 service code.
fn nanp_valid(d: &[u8]) -> bool {
    d.len() == 10 && d[0] >= 2 && d[3] >= 2 && !(d[1] == 1 && d[2] == 1) && !(d[4] == 1 && d[5] == 1)
}

/// Brazil: DDD from the Anatel list, then mobile 9 + 8 digits or landline [2-5] + 7 digits.
fn br_valid(d: &[u8]) -> bool {
    if d.len() < 10 || d[0] == 0 {
        return false;
    }
    let ddd = d[0] * 10 + d[1];
    BR_DDD.contains(&ddd)
        && match d.len() {
            11 => d[2] == 9,
            10 => (2..=5).contains(&d[2]),
            _ => false,
        }
}

/// Phone validity by the numbering rules of `docs/pii-rules.md` for the two regions served:
/// `+1`/`+55` numbers as written, national numbers as US (10 digits) or BR (10–11 digits).
/// (The `phonenumber` crate's `is_valid` also rejects NANP area codes not yet assigned, which
/// the rules — and the corpus — count as valid, so the structural rule is used.)
fn phone_valid(s: &str, d: &[u8]) -> bool {
    if s.starts_with('+') {
        return match d {
            [1, rest @ ..] => nanp_valid(rest),
            [5, 5, rest @ ..] => br_valid(rest),
            _ => false,
        };
    }
    nanp_valid(d) || br_valid(d)
}

/// Keep the best of overlapping candidates (strict over fail-safe, then confidence, then
/// length), convert byte spans to char offsets, sort by position.
fn resolve(text: &str, mut found: Vec<Found>) -> Vec<Detection> {
    found.sort_by(|a, b| {
        (b.valid, b.confidence, b.bytes.len())
            .partial_cmp(&(a.valid, a.confidence, a.bytes.len()))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    // Kept spans by start. They are disjoint, so the one with the greatest start below a
    // candidate's end is the only one that can overlap it: O(n log n) on huge inputs.
    let mut kept: std::collections::BTreeMap<usize, Found> = std::collections::BTreeMap::new();
    for f in found {
        if f.bytes.is_empty() {
            continue;
        }
        let clash = kept.range(..f.bytes.end).next_back().is_some_and(|(_, k)| k.bytes.end > f.bytes.start);
        if !clash {
            kept.insert(f.bytes.start, f);
        }
    }
    let ascii = text.is_ascii();
    let mut chars_seen = 0usize;
    let mut byte_pos = 0usize;
    let mut to_char = |b: usize| -> usize {
        if ascii {
            return b;
        }
        chars_seen += text[byte_pos..b].chars().count();
        byte_pos = b;
        chars_seen
    };
    kept.into_values()
        .map(|f| {
            let start = to_char(f.bytes.start);
            let end = to_char(f.bytes.end);
            Detection {
                kind: f.kind,
                start,
                end,
                bytes: f.bytes,
                valid: f.valid,
                tier: if f.valid { Tier::Strict } else { Tier::FailSafe },
                confidence: f.confidence,
            }
        })
        .collect()
}

static DEFAULT: LazyLock<Detector> = LazyLock::new(|| Detector::new(DetectorConfig::default()));

/// Detect with the default configuration.
pub fn detect(text: &str) -> Vec<Detection> {
    DEFAULT.detect(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(EntityType, String, bool)> {
        detect(text).into_iter().map(|d| (d.kind, d.value(text).to_owned(), d.valid)).collect()
    }

    macro_rules! cases {
        ($($name:ident: $text:expr => $kind:expr, $value:expr, $valid:expr;)*) => {$(
            #[test]
            fn $name() {
                let got = kinds($text);
                assert!(
                    got.iter().any(|(k, v, ok)| *k == $kind && v == $value && *ok == $valid),
                    "{:?} in {:?}", got, $text
                );
            }
        )*};
    }

    cases! {
        card_dashed: "My card number is 6062-8287-7893-2877, can you check" => EntityType::CreditCard, "6062-8287-7893-2877", true;
        card_luhn_fail: "I typed my card as 2720 9081 0033 9071 but" => EntityType::CreditCard, "2720 9081 0033 9071", false;
        cvv: "o CVV é 123" => EntityType::Cvv, "123", true;
        ssn: "my SSN is 606-26-8506." => EntityType::UsSsn, "606-26-8506", true;
        ssn_bad_area: "I entered 666-85-1393 as my SSN" => EntityType::UsSsn, "666-85-1393", false;
        cpf_bare: "Meu CPF é 97510490405, pode" => EntityType::BrCpf, "97510490405", true;
        cpf_repeated: "Coloquei 000.000.000-00 no cadastro" => EntityType::BrCpf, "000.000.000-00", false;
        cnpj_alnum: "recebeu o CNPJ BEHMYXWAPE5Q17, vocês" => EntityType::BrCnpj, "BEHMYXWAPE5Q17", true;
        phone_br: "Meu telefone é +55 (32) 94494 3969, pode" => EntityType::Phone, "+55 (32) 94494 3969", true;
        phone_us: "reach me at 956-969-1372 or" => EntityType::Phone, "956-969-1372", true;
        email: "write to ana_garcia12@example.com." => EntityType::Email, "ana_garcia12@example.com", true;
        iban: "from IBAN DE65 1797 4054 2938 2577 35." => EntityType::Iban, "DE65 1797 4054 2938 2577 35", true;
        btc_taproot: "to bc1pkzzluj2662ws0sp2lgg579e2jpc8z27y9cv6zxc3n2qxde8mnqdsj2qdcd now" => EntityType::BtcAddress, "bc1pkzzluj2662ws0sp2lgg579e2jpc8z27y9cv6zxc3n2qxde8mnqdsj2qdcd", true;
        eth_bad: "The address 0x58031045ed9B3e5613154F163E6FaB4fF1542455 keeps" => EntityType::EthAddress, "0x58031045ed9B3e5613154F163E6FaB4fF1542455", false;
        sol: "Is HjpFC9bazMjA7kbqsPQvBnPEN5GmF1xMrFV7KdU79vHZ my Solana deposit address?" => EntityType::SolAddress, "HjpFC9bazMjA7kbqsPQvBnPEN5GmF1xMrFV7KdU79vHZ", true;
        hex_key: "private key (hex): 2e6ce2ed5c1369b80d5a28fae54f9b1108c35b20bb2e783a0266b37af2a1328f - can" => EntityType::HexPrivateKey, "2e6ce2ed5c1369b80d5a28fae54f9b1108c35b20bb2e783a0266b37af2a1328f", true;
        otp: "The authenticator code is 828932." => EntityType::OtpCode, "828932", true;
        api_ghp: "My API secret is ghp_baXpLcOkAWRyd5uVzdLU8ueZ5oBUEqWpcHg7 and" => EntityType::ApiSecret, "ghp_baXpLcOkAWRyd5uVzdLU8ueZ5oBUEqWpcHg7", true;
        api_b64: "My API secret is DRJxRpbD/Oyh+M02BZy11Gbo+mk3rO5hCRMwoDMaHYW+nW5+cdgRrCgyvFDy5l23 and" => EntityType::ApiSecret, "DRJxRpbD/Oyh+M02BZy11Gbo+mk3rO5hCRMwoDMaHYW+nW5+cdgRrCgyvFDy5l23", true;
        pix: "minha chave pix é 3f2b8c1e-9d4a-4e6b-a1c2-7d8e9f0a1b2c ok" => EntityType::PixKey, "3f2b8c1e-9d4a-4e6b-a1c2-7d8e9f0a1b2c", true;
        password: "my password is Hunter22! please reset" => EntityType::Password, "Hunter22", false;
    }

    #[test]
    fn near_misses_are_not_flagged() {
        for t in [
            "My withdrawal tx hash is 11464ca7d6e036da4db1a99d70f6429d02d8fa124875bc47d6dc5f36cd1dd8ea and it's still unconfirmed.",
            "I was charged 624210 satoshis in fees, is that normal?",
            "My order reference is 9096690911114656 and the card hasn't shipped.",
            "O valor de 624210 sats de taxa está certo?",
            "I forgot my password, can you help?",
        ] {
            assert!(detect(t).is_empty(), "{t}: {:?}", detect(t));
        }
    }

    #[test]
    fn char_offsets_with_accents() {
        let t = "Código do autenticador: 351277";
        let d = detect(t);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].start, d[0].end), (24, 30));
        assert_eq!(d[0].value(t), "351277");
    }

    #[test]
    fn email_allow_list() {
        let det = Detector::new(DetectorConfig {
            allowed_email_domains: vec!["exchange.example".into()],
            ..DetectorConfig::default()
        });
        assert!(det.detect("write to help@support.exchange.example").is_empty());
        assert_eq!(det.detect("or me@gmail.com").len(), 1);
    }
}
