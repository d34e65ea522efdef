//! Any input: detectors return sane, ordered, non-overlapping spans, and redaction removes them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_guard::{detect, redact};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let found = detect(&text);
    let mut last = 0;
    for d in &found {
        assert!(d.bytes.start >= last && d.bytes.start < d.bytes.end && d.bytes.end <= text.len());
        assert!(text.is_char_boundary(d.bytes.start) && text.is_char_boundary(d.bytes.end));
        assert!(d.start < d.end && d.end <= text.chars().count());
        last = d.bytes.end;
    }
    let masked = redact::mask(&text, &found);
    let numbered = redact::redact_numbered(&text, &found);
    assert_eq!(found.is_empty(), masked == text);
    assert_eq!(found.is_empty(), numbered == text);
});
