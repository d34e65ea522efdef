//! Any reply: the output policy terminates and never lets a detected value through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_guard::output::{OutputAction, OutputPolicy};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let d = OutputPolicy::default().check(&text);
    if d.action != OutputAction::Block {
        // whatever survives must not contain a strict-tier secret
        for x in switchboard_guard::detect(&d.text) {
            assert!(!(x.valid && x.kind.is_secret()), "{:?} in {:?}", x, d.text);
        }
    }
});
