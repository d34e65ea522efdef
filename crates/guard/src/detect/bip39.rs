//! BIP-39 recovery phrases in English and Portuguese.
//!
//! A phrase is a run of list words (exact word, or its unique 4-letter prefix, after NFKD and
//! lower-casing) separated only by spaces, commas, newlines or enumeration ("1. word 2) word").
//! A run of 12/15/18/21/24 words of one list whose checksum holds is *valid*; any run of ≥ 12
//! list words is masked anyway (fail-safe: a typo breaks the checksum, not the danger).
//! The word lists are the `bitcoin/bips` files (MIT), shipped in `data/bip39/`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::LazyLock;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::validate::sha256;

const ENGLISH: &str = include_str!("../../data/bip39/english.txt");
const PORTUGUESE: &str = include_str!("../../data/bip39/portuguese.txt");

/// Which BIP-39 list a word belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// The English list.
    English,
    /// The Portuguese list.
    Portuguese,
}

/// FNV-1a: the keys are short ASCII words, SipHash's DoS resistance buys nothing here (the
/// table is fixed) and costs a third of the detector's time.
#[derive(Default, Clone, Copy)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

struct Lists {
    words: HashMap<&'static str, (Lang, u16), FnvBuild>,
    prefixes: HashMap<&'static str, (Lang, u16), FnvBuild>,
    by_index: [Vec<&'static str>; 2],
}

static LISTS: LazyLock<Lists> = LazyLock::new(|| {
    let mut words = HashMap::with_capacity_and_hasher(4096, FnvBuild::default());
    let mut prefixes: HashMap<&'static str, Option<(Lang, u16)>> = HashMap::with_capacity(4096);
    let mut by_index = [Vec::with_capacity(2048), Vec::with_capacity(2048)];
    for (lang, list, slot) in [(Lang::English, ENGLISH, 0), (Lang::Portuguese, PORTUGUESE, 1)] {
        for (i, w) in list.lines().map(str::trim).filter(|w| !w.is_empty()).enumerate() {
            let i = u16::try_from(i).expect("a BIP-39 list has 2048 words");
            words.insert(w, (lang, i));
            by_index[slot].push(w);
            if w.len() > 4 && w.is_char_boundary(4) {
                prefixes.entry(&w[..4]).and_modify(|e| *e = None).or_insert(Some((lang, i)));
            }
        }
    }
    let prefixes =
        prefixes.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).filter(|(k, _)| !words.contains_key(k)).collect();
    Lists { words, prefixes, by_index }
});

/// The list word at `index` in `lang` (for tests and generators).
pub fn word(lang: Lang, index: u16) -> Option<&'static str> {
    let slot = match lang {
        Lang::English => 0,
        Lang::Portuguese => 1,
    };
    LISTS.by_index[slot].get(usize::from(index)).copied()
}

/// Look a token up: exact word first, then a unique 4-letter prefix.
pub fn lookup(token: &str) -> Option<(Lang, u16)> {
    let lists = &*LISTS;
    if token.is_ascii() {
        let mut buf = [0u8; 16];
        // list words have 3 to 8 letters
        if token.len() > buf.len() || token.len() < 3 {
            return None;
        }
        let lower = &mut buf[..token.len()];
        lower.copy_from_slice(token.as_bytes());
        lower.make_ascii_lowercase();
        let lower = std::str::from_utf8(lower).ok()?;
        return lists
            .words
            .get(lower)
            .copied()
            .or_else(|| (lower.len() == 4).then(|| lists.prefixes.get(lower).copied()).flatten());
    }
    let folded: String = token.nfkd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect();
    lists
        .words
        .get(folded.as_str())
        .copied()
        .or_else(|| (folded.len() == 4).then(|| lists.prefixes.get(folded.as_str()).copied()).flatten())
}

/// Whether `indices` (one list) form a phrase with a valid BIP-39 checksum.
pub fn checksum_ok(indices: &[u16]) -> bool {
    let n = indices.len();
    if !matches!(n, 12 | 15 | 18 | 21 | 24) {
        return false;
    }
    let total_bits = n * 11;
    let cs_bits = total_bits / 33;
    let ent_bits = total_bits - cs_bits;
    let mut bits = Vec::with_capacity(total_bits);
    for &i in indices {
        for b in (0..11).rev() {
            bits.push((i >> b) & 1 == 1);
        }
    }
    let mut entropy = vec![0u8; ent_bits / 8];
    for (k, bit) in bits[..ent_bits].iter().enumerate() {
        if *bit {
            entropy[k / 8] |= 0x80 >> (k % 8);
        }
    }
    let hash = sha256(&entropy);
    (0..cs_bits).all(|k| bits[ent_bits + k] == ((hash[k / 8] >> (7 - k % 8)) & 1 == 1))
}

/// A run of at least 12 consecutive list words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnemonicRun {
    /// Byte span from the first word's start to the last word's end.
    pub bytes: Range<usize>,
    /// Number of list words in the run.
    pub words: usize,
    /// Some window of 12/15/18/21/24 words of one list has a valid checksum.
    pub valid: bool,
}

/// Separators allowed between two words of a phrase.
fn gap_ok(gap: &str) -> bool {
    gap.len() <= 12
        && !gap.is_empty()
        && gap.bytes().all(|b| b.is_ascii_whitespace() || b.is_ascii_digit() || b",;.:)(-|/#\"'".contains(&b))
}

/// Minimum number of list words that triggers masking.
pub const MIN_RUN: usize = 12;

/// Find runs of ≥ 12 list words in `text`.
pub fn find_runs(text: &str) -> Vec<MnemonicRun> {
    let mut runs = Vec::new();
    // (byte range, lang, index) of the current run's words
    let mut cur: Vec<(Range<usize>, Lang, u16)> = Vec::new();
    let mut last_end = 0usize;
    let mut flush = |cur: &mut Vec<(Range<usize>, Lang, u16)>| {
        if cur.len() >= MIN_RUN {
            runs.push(close_run(cur));
        }
        cur.clear();
    };
    let mut iter = text.char_indices().peekable();
    while let Some((start, c)) = iter.next() {
        if !c.is_alphabetic() {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, c)) = iter.peek() {
            if c.is_alphabetic() || is_combining_mark(c) {
                end = i + c.len_utf8();
                iter.next();
            } else {
                break;
            }
        }
        let token = &text[start..end];
        match lookup(token) {
            Some((lang, idx)) => {
                if !cur.is_empty() && !gap_ok(&text[last_end..start]) {
                    flush(&mut cur);
                }
                cur.push((start..end, lang, idx));
            }
            None => flush(&mut cur),
        }
        last_end = end;
    }
    flush(&mut cur);
    runs
}

fn close_run(words: &[(Range<usize>, Lang, u16)]) -> MnemonicRun {
    let n = words.len();
    // A window may leave out at most three list words of the run (context words such as
    // "wallet:" that happen to be on the list); trying every window of a long run would let a
    // bad 24-word phrase pass through one of its many 12-word windows.
    let valid = [24usize, 21, 18, 15, 12].iter().any(|&size| {
        size <= n
            && size + 3 >= n
            && (0..=n - size).any(|off| {
                let w = &words[off..off + size];
                let lang = w[0].1;
                w.iter().all(|x| x.1 == lang) && checksum_ok(&w.iter().map(|x| x.2).collect::<Vec<_>>())
            })
    });
    MnemonicRun { bytes: words[0].0.start..words[n - 1].0.end, words: n, valid }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_zero_vector() {
        let phrase = format!("{} about", ["abandon"; 11].join(" "));
        let runs = find_runs(&format!("my words: {phrase}. thanks"));
        assert_eq!(runs.len(), 1);
        assert!(runs[0].valid);
        assert_eq!(runs[0].words, 12);
        let bad = ["abandon"; 12].join(" ");
        let runs = find_runs(&bad);
        assert_eq!(runs.len(), 1);
        assert!(!runs[0].valid);
    }

    #[test]
    fn prefixes_numbering_and_case() {
        let phrase = (1..=11)
            .map(|i| format!("{i}. ABAN"))
            .chain(std::iter::once("12. about".to_owned()))
            .collect::<Vec<_>>()
            .join("\n");
        let runs = find_runs(&phrase);
        assert_eq!(runs.len(), 1);
        assert!(runs[0].valid);
    }

    #[test]
    fn corpus_phrase() {
        let t = "Here is my recovery phrase so you can check the wallet: acoustic knife vessel weapon sustain elegant scrub expect couch total valve drive";
        let runs = find_runs(t);
        assert_eq!(runs.len(), 1);
        assert!(runs[0].valid);
        assert_eq!(&t[runs[0].bytes.clone()].split(' ').next_back(), &Some("drive"));
    }

    #[test]
    fn eleven_words_is_not_a_run() {
        assert!(find_runs(&["abandon"; 11].join(" ")).is_empty());
        assert!(word(Lang::Portuguese, 0).is_some());
    }
}
