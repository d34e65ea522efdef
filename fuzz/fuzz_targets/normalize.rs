//! Any input: normalisation and injection scoring terminate, stay bounded and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_guard::injection::normalize::{MAX_DECODED, MAX_INPUT, normalize};
use switchboard_guard::injection::{InjectionScorer, Source};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let n = normalize(&text);
    // folding can expand a char (NFKD, lower-casing) but never by more than a small factor
    assert!(n.text.len() <= MAX_INPUT * 18);
    assert!(n.decoded.iter().map(String::len).sum::<usize>() <= MAX_DECODED * 18);
    let v = InjectionScorer::default().score(&text, Source::ToolOutput);
    assert!((0.0..=1.0).contains(&v.score));
});
