//! A 500-character support message fully scanned: every PII detector plus the injection scorer
//! (normaliser, rules, lexical model). `cargo bench -p switchboard-guard --bench scan`.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group};
use std::hint::black_box;
use switchboard_guard::Guard;
use switchboard_guard::injection::Source;

/// 500 characters: a realistic message with a card, a CPF, an e-mail and an OTP in it.
fn message() -> String {
    let base = "Hi, I tried to pay with my card 4111 1111 1111 1111 yesterday and it was declined. \
My CPF is 723.910.967-47 and my e-mail is ana.souza@example.com. The authenticator code 828932 \
did not work either. I also sent 0.05 BTC to bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq three hours \
ago and it still shows pending. Please ignore my previous message about the bank account, I found it. \
Can you check what happened with both transactions and tell me when the deposit will arrive? Thanks!";
    let mut s: String = base.chars().take(500).collect();
    while s.chars().count() < 500 {
        s.push(' ');
    }
    s
}

fn bench(c: &mut Criterion) {
    let guard = Guard::default();
    let msg = message();
    assert_eq!(msg.chars().count(), 500);
    // warm lazily compiled patterns and the model
    let report = guard.inspect(&msg, Source::User);
    assert!(report.entities.len() >= 4, "{:?}", report.entities);
    c.bench_function("scan_500_chars", |b| {
        b.iter(|| guard.inspect(black_box(&msg), Source::User));
    });
    c.bench_function("detect_only_500_chars", |b| {
        b.iter(|| guard.detector().detect(black_box(&msg)));
    });
}

/// Median thread CPU time per full scan, in batches of 50 calls: unlike wall time it does not
/// count the time this thread waits for a core, so it stays meaningful on a loaded machine.
fn cpu_time_p50() {
    let guard = Guard::default();
    let msg = message();
    let mut per_call: Vec<f64> = (0..400)
        .map(|_| {
            let t = cpu_time::ThreadTime::now();
            for _ in 0..50 {
                black_box(guard.inspect(black_box(&msg), Source::User));
            }
            t.elapsed().as_secs_f64() * 1e6 / 50.0
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    let q = |p: f64| per_call[((per_call.len() - 1) as f64 * p) as usize];
    println!("scan_500_chars thread-cpu per call: p50 {:.1} us, p10 {:.1} us, p90 {:.1} us", q(0.5), q(0.1), q(0.9));
}

criterion_group!(benches, bench);

fn main() {
    benches();
    cpu_time_p50();
    Criterion::default().configure_from_args().final_summary();
}
