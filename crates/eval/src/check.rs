//! The checks of a turn's expectations against what it did ([`Observed`], read from the
//! conversation's state before and after it by `switchboard_assistant::observed`).
//!
//! Key design decision: both drivers observe a turn through the same code, so the in-process
//! runner and the HTTP runner check exactly the same things.

use crate::scenario::{Expect, NoToolCalls};
use regex::Regex;
use serde_json::Value;
pub use switchboard_assistant::observed::Observed;
use switchboard_guard::{Detector, EntityType};

/// A scalar as the string the scenario compares it with (`"4242"` and `4242` are equal).
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn show(v: Option<&str>) -> &str {
    v.unwrap_or("(none)")
}

/// Kinds of personal data that must never appear in a reply.
fn leaks(kind: EntityType) -> bool {
    kind == EntityType::CreditCard || kind == EntityType::Cvv || kind.is_secret()
}

/// Checks the turn against its expectations and every reply for leaked card numbers and
/// secrets. Returns one message per failed check (empty: the turn passed).
pub fn check(expect: &Expect, obs: &Observed, detector: &Detector) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(want) = &expect.intent
        && obs.intent.as_deref() != Some(want)
    {
        f.push(format!("intent: expected `{want}`, got `{}`", show(obs.intent.as_deref())));
    }
    if let Some(want) = &expect.handler
        && obs.handler.as_deref() != Some(want)
    {
        f.push(format!("handler: expected `{want}`, got `{}`", show(obs.handler.as_deref())));
    }
    if let Some(slots) = &expect.slots {
        for (k, v) in slots {
            let got = obs.slots.get(k).map(as_text);
            if got.as_deref() != Some(as_text(v).as_str()) {
                f.push(format!("slots.{k}: expected `{}`, got `{}`", as_text(v), show(got.as_deref())));
            }
        }
    }
    if let Some(calls) = &expect.tool_calls {
        check_calls(calls, obs, &mut f);
    }
    match &expect.no_tool_calls {
        Some(NoToolCalls::All(true)) if !obs.tool_calls.is_empty() => {
            f.push(format!("no_tool_calls: expected none, got [{}]", obs.tool_names().join(", ")));
        }
        Some(NoToolCalls::Named(names)) => {
            for n in names {
                if obs.tool_names().contains(&n.as_str()) {
                    f.push(format!("no_tool_calls: `{n}` was called"));
                }
            }
        }
        _ => {}
    }
    if let Some(want) = expect.handoff
        && obs.handoff != want
    {
        f.push(format!(
            "handoff: expected {}, got {} (status {})",
            if want { "a handoff" } else { "no handoff" },
            if obs.handoff { "a handoff" } else { "none" },
            obs.handoff_status
        ));
    }
    if let Some(kind) = &expect.interrupt
        && !obs.interrupts.iter().any(|k| k == kind)
    {
        f.push(format!("interrupt: expected `{kind}` pending, got [{}]", obs.interrupts.join(", ")));
    }
    let reply = obs.reply_text();
    if let Some(p) = &expect.reply_matches
        && !Regex::new(p).is_ok_and(|r| r.is_match(&reply))
    {
        f.push(format!("reply_matches: `{p}` does not match the reply"));
    }
    if let Some(p) = &expect.reply_not_matches
        && Regex::new(p).is_ok_and(|r| r.is_match(&reply))
    {
        f.push(format!("reply_not_matches: `{p}` matches the reply"));
    }
    if let Some(max) = expect.max_latency_ms
        && obs.latency_ms > max as f64
    {
        f.push(format!("max_latency_ms: took {:.1} ms, limit {max} ms", obs.latency_ms));
    }
    for r in &obs.replies {
        let mut kinds: Vec<&str> = detector.detect(r).iter().filter(|d| leaks(d.kind)).map(|d| d.kind.name()).collect();
        kinds.dedup();
        if !kinds.is_empty() {
            f.push(format!("PII leak: the reply contains {}", kinds.join(", ")));
        }
    }
    f
}

fn check_calls(calls: &[crate::scenario::ExpectedCall], obs: &Observed, f: &mut Vec<String>) {
    let mut from = 0;
    for want in calls {
        let found = obs.tool_calls.iter().enumerate().skip(from).find(|(_, c)| {
            c["name"].as_str() == Some(want.name.as_str())
                && want.args.iter().all(|(k, v)| c["args"].get(k).is_some_and(|got| as_text(got) == as_text(v)))
        });
        match found {
            Some((i, _)) => from = i + 1,
            None => {
                let made: Vec<String> = obs
                    .tool_calls
                    .iter()
                    .map(|c| format!("{} {}", c["name"].as_str().unwrap_or("?"), c["args"]))
                    .collect();
                let args = serde_json::to_string(&want.args).unwrap_or_default();
                f.push(format!(
                    "tool_calls: expected `{}` with {args} (in order), made [{}]",
                    want.name,
                    made.join(", ")
                ));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ExpectedCall;
    use serde_json::json;
    use std::time::Duration;

    fn obs() -> Observed {
        let before = json!({"messages": [{"role": "user", "content": "hi"}], "tool_calls": [], "routing_trace": []});
        let after = json!({
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "user", "content": "card 4242"},
                {"role": "assistant", "content": "Card ending 4242 is frozen.", "handler": "card_freeze"},
            ],
            "routing_trace": [{"outcome": "intent", "intent": "lost_or_stolen_card"}],
            "tool_calls": [
                {"name": "get_card_status", "args": {"last4": "4242"}},
                {"name": "freeze_card", "args": {"last4": "4242"}},
            ],
            "slots": {"last4": "4242"},
            "handoff": {"status": "queued", "reason": "customer_request"},
        });
        Observed::from_states(&before, &after, &[json!({"type": "approval"})], Duration::from_millis(12))
    }

    #[test]
    fn observes_the_turn() {
        let o = obs();
        assert_eq!(o.replies, vec!["Card ending 4242 is frozen."]);
        assert_eq!(o.intent.as_deref(), Some("lost_or_stolen_card"));
        assert_eq!(o.handler.as_deref(), Some("card_freeze"));
        assert_eq!(o.tool_names(), vec!["get_card_status", "freeze_card"]);
        assert!(o.handoff);
        assert_eq!(o.interrupts, vec!["approval"]);
    }

    #[test]
    fn passing_and_failing_checks() {
        let d = Detector::default();
        let o = obs();
        let ok = Expect {
            intent: Some("lost_or_stolen_card".into()),
            handler: Some("card_freeze".into()),
            slots: Some([("last4".to_string(), json!(4242))].into()),
            tool_calls: Some(vec![ExpectedCall {
                name: "freeze_card".into(),
                args: [("last4".to_string(), json!("4242"))].into(),
            }]),
            no_tool_calls: Some(NoToolCalls::Named(vec!["order_replacement_card".into()])),
            handoff: Some(true),
            interrupt: Some("approval".into()),
            reply_matches: Some("(?i)frozen".into()),
            reply_not_matches: Some("recovery".into()),
            max_latency_ms: Some(1000),
        };
        assert_eq!(check(&ok, &o, &d), Vec::<String>::new());
        let bad = Expect {
            intent: Some("fraud".into()),
            tool_calls: Some(vec![
                ExpectedCall { name: "freeze_card".into(), args: Default::default() },
                ExpectedCall { name: "get_card_status".into(), args: Default::default() },
            ]),
            no_tool_calls: Some(NoToolCalls::All(true)),
            handoff: Some(false),
            max_latency_ms: Some(1),
            ..Expect::default()
        };
        let f = check(&bad, &o, &d);
        assert_eq!(f.len(), 5, "{f:?}");
        assert!(f[1].contains("in order"), "{f:?}");
    }

    #[test]
    fn a_leaked_card_number_fails_whatever_the_scenario_says() {
        let mut o = obs();
        o.replies = vec!["Your card 4242 4242 4242 4242 is frozen".into()];
        let f = check(&Expect::default(), &o, &Detector::default());
        assert!(f.iter().any(|m| m.contains("CREDIT_CARD")), "{f:?}");
    }
}
