//! Record and replay: recording conversations in process as cassettes, reading and writing
//! them as JSON lines (one conversation a line), re-running them against another version of the
//! assistant with the outside world served from the cassette, and what changed, turn by turn.
//!
//! It must not know where cassettes are stored by the server (the caller reads them) nor build
//! assistants (the caller hands the in-process driver assistants whose tape replays). Key design
//! decision: a replayed turn is observed exactly as a scenario turn ([`Observed`], redacted like
//! the recording) and compared field by field (routing, slots, tool trajectory, handoff,
//! interrupts, replies), and every call the cassette could not answer is reported with the turn,
//! so "no change" means the new version did the same thing with the same answers from outside.

use crate::check::Observed;
use crate::local::InProcess;
use crate::run::{Driver, DriverError, TURN_TIMEOUT};
use crate::scenario::{Action, Scenario};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchboard_assistant::cassette::{Cassette, CassetteTurn, FORMAT_VERSION, Source, Tape, TurnInput};

/// Cassettes that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    /// The file or directory does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a cassette.
    #[error("{path}:{line}: not a cassette: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A cassette written by a newer format.
    #[error("{path}:{line}: cassette format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    Version {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The version found.
        found: u32,
    },
}

/// Parses JSON lines of cassettes (blank lines skipped); `path` names the source in errors.
///
/// # Errors
/// [`CassetteError::Malformed`] or [`CassetteError::Version`] naming the first bad line.
pub fn parse_jsonl(text: &str, path: &Path) -> Result<Vec<Cassette>, CassetteError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| CassetteError::Malformed { path: path.to_path_buf(), line: i + 1, message };
        let c: Cassette = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if c.version > FORMAT_VERSION {
            return Err(CassetteError::Version { path: path.to_path_buf(), line: i + 1, found: c.version });
        }
        out.push(c);
    }
    Ok(out)
}

/// Reads cassettes from a `.jsonl` file, or from every `.jsonl` file of a directory (by name).
///
/// # Errors
/// See [`CassetteError`].
pub fn load(path: &Path) -> Result<Vec<Cassette>, CassetteError> {
    let io = |source| CassetteError::Io { path: path.to_path_buf(), source };
    if !path.exists() {
        return Err(CassetteError::NotFound(path.to_path_buf()));
    }
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| CassetteError::Io { path: f.clone(), source })?;
        out.extend(parse_jsonl(&text, &f)?);
    }
    Ok(out)
}

/// Cassettes as JSON lines, one conversation a line.
pub fn to_jsonl(cassettes: &[Cassette]) -> String {
    cassettes.iter().filter_map(|c| serde_json::to_string(c).ok()).map(|l| l + "\n").collect()
}

fn action(input: &TurnInput) -> Action<'_> {
    match input {
        TurnInput::User(t) => Action::Say(t),
        TurnInput::Approve(a) => Action::Approve(*a),
    }
}

fn scenario_of(name: &str, assistant: &str, customer: Option<&str>) -> Scenario {
    Scenario {
        name: name.to_string(),
        assistant: assistant.to_string(),
        customer: customer.map(str::to_string),
        turns: Vec::new(),
        file: PathBuf::new(),
    }
}

/// Plays `inputs` as one new conversation of `assistant` (built with `tape`, a recorder, as its
/// [`switchboard_assistant::AssistantOptions::tape`]) and returns its cassette.
///
/// # Errors
/// A turn the driver could not play (or that timed out).
pub async fn record(
    driver: &InProcess,
    tape: &Arc<Tape>,
    assistant: &str,
    customer: Option<&str>,
    inputs: &[TurnInput],
) -> Result<Cassette, DriverError> {
    let mut conv = driver.open(&scenario_of("recording", assistant, customer)).await?;
    let mut turns = Vec::new();
    for input in inputs {
        let observed = tokio::time::timeout(TURN_TIMEOUT, driver.play(&mut conv, action(input)))
            .await
            .map_err(|_| DriverError(format!("timed out after {TURN_TIMEOUT:?}")))??;
        let log = tape.take(conv.id());
        turns.push(CassetteTurn {
            input: input.clone(),
            llm: log.llm,
            tools: log.tools,
            observed: tape.redact_observed(observed),
        });
    }
    tape.forget(conv.id());
    Ok(Cassette {
        version: FORMAT_VERSION,
        conversation_id: conv.id().to_string(),
        assistant: assistant.to_string(),
        customer: customer.map(str::to_string),
        turns,
    })
}

/// One field of a turn that is not what was recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// `intent`, `rung`, `outcome`, `handler`, `slots`, `tool_calls`, `handoff`, `interrupts`
    /// or `reply`.
    pub field: String,
    /// As recorded.
    pub recorded: Value,
    /// As replayed.
    pub replayed: Value,
    /// For the reply: a line diff (`- recorded`, `+ replayed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// A call the cassette did not answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Miss {
    /// `llm` or `tool`.
    pub kind: String,
    /// The model (`provider/model`) or the tool.
    pub name: String,
    /// What happened instead.
    pub outcome: String,
}

/// One replayed turn.
#[derive(Debug, Clone, Serialize)]
pub struct TurnReplay {
    /// 1-based.
    pub turn: usize,
    /// `user: ...` or `approve: ...`.
    pub input: String,
    /// What differs from the recording (empty: the same).
    pub changes: Vec<Change>,
    /// Calls the cassette did not answer.
    pub misses: Vec<Miss>,
    /// Calls answered from the cassette.
    pub served: usize,
    /// The driver's error, when the turn could not be played (the conversation stops there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TurnReplay {
    /// Something differs (or the turn failed).
    pub fn changed(&self) -> bool {
        !self.changes.is_empty() || self.error.is_some()
    }
}

/// One replayed conversation.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationReplay {
    /// The recorded conversation's id.
    pub conversation_id: String,
    /// The assistant it was recorded with.
    pub assistant: String,
    /// Its turns (fewer than recorded when one failed).
    pub turns: Vec<TurnReplay>,
    /// Recorded turns.
    pub recorded_turns: usize,
}

impl ConversationReplay {
    /// Turns that changed (a recorded turn that was not played counts as changed).
    pub fn changed_turns(&self) -> usize {
        self.turns.iter().filter(|t| t.changed()).count() + self.recorded_turns.saturating_sub(self.turns.len())
    }
}

/// The counts of a replay (the last JSON line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// Conversations replayed.
    pub conversations: usize,
    /// Recorded turns.
    pub turns: usize,
    /// Turns where something changed.
    pub changed_turns: usize,
    /// Calls the cassettes did not answer.
    pub cassette_misses: usize,
}

/// A whole replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Per conversation, in order.
    pub conversations: Vec<ConversationReplay>,
}

impl ReplayReport {
    /// The counts.
    pub fn summary(&self) -> ReplaySummary {
        ReplaySummary {
            conversations: self.conversations.len(),
            turns: self.conversations.iter().map(|c| c.recorded_turns).sum(),
            changed_turns: self.conversations.iter().map(ConversationReplay::changed_turns).sum(),
            cassette_misses: self.conversations.iter().flat_map(|c| &c.turns).map(|t| t.misses.len()).sum(),
        }
    }
}

/// Re-runs every cassette as a new conversation of the driver's assistant named `assistant`
/// (built with `tape`, a player, as its tape), on a freshly seeded back end, calling `progress`
/// after each conversation.
pub async fn replay(
    driver: &InProcess,
    tape: &Arc<Tape>,
    assistant: &str,
    cassettes: &[Cassette],
    mut progress: impl FnMut(&ConversationReplay),
) -> ReplayReport {
    let mut out = Vec::with_capacity(cassettes.len());
    for c in cassettes {
        let r = replay_one(driver, tape, assistant, c).await;
        progress(&r);
        out.push(r);
    }
    ReplayReport { conversations: out }
}

async fn replay_one(driver: &InProcess, tape: &Arc<Tape>, assistant: &str, c: &Cassette) -> ConversationReplay {
    let mut report = ConversationReplay {
        conversation_id: c.conversation_id.clone(),
        assistant: c.assistant.clone(),
        turns: Vec::new(),
        recorded_turns: c.turns.len(),
    };
    let mut conv = match driver.open(&scenario_of(&c.conversation_id, assistant, c.customer.as_deref())).await {
        Ok(conv) => conv,
        Err(e) => {
            report.turns.push(failed(1, c.turns.first().map(|t| t.input.label()).unwrap_or_default(), e));
            return report;
        }
    };
    tape.load(conv.id(), c);
    for (i, recorded) in c.turns.iter().enumerate() {
        let played = tokio::time::timeout(TURN_TIMEOUT, driver.play(&mut conv, action(&recorded.input))).await;
        let log = tape.take(conv.id());
        let observed = match played {
            Ok(Ok(o)) => tape.redact_observed(o),
            Ok(Err(e)) => {
                report.turns.push(failed(i + 1, recorded.input.label(), e));
                break;
            }
            Err(_) => {
                let e = DriverError(format!("timed out after {TURN_TIMEOUT:?}"));
                report.turns.push(failed(i + 1, recorded.input.label(), e));
                break;
            }
        };
        let mut misses: Vec<Miss> = log
            .llm
            .iter()
            .filter(|l| l.source.is_miss())
            .map(|l| Miss {
                kind: "llm".into(),
                name: l.model.clone(),
                outcome: match (l.source, &l.error) {
                    (Source::Live, None) => "request not in the cassette; answered by the live model (--live)".into(),
                    (Source::Live, Some(e)) => format!("request not in the cassette; the live model failed: {e}"),
                    _ => "cassette miss: request not in the cassette; the call failed (replay without --live)".into(),
                },
            })
            .collect();
        misses.extend(log.tools.iter().filter(|t| t.source.is_miss()).map(|t| Miss {
            kind: "tool".into(),
            name: t.name.clone(),
            outcome: format!("call {} not in the cassette; ran against the fresh fake exchange", t.args),
        }));
        let served = log.llm.iter().filter(|l| l.source == Source::Cassette).count()
            + log.tools.iter().filter(|t| t.source == Source::Cassette).count();
        report.turns.push(TurnReplay {
            turn: i + 1,
            input: recorded.input.label(),
            changes: compare(&recorded.observed, &observed),
            misses,
            served,
            error: None,
        });
    }
    tape.forget(conv.id());
    report
}

fn failed(turn: usize, input: String, e: DriverError) -> TurnReplay {
    TurnReplay { turn, input, changes: Vec::new(), misses: Vec::new(), served: 0, error: Some(e.to_string()) }
}

fn routing_field(o: &Observed, key: &str) -> Value {
    o.routing.as_ref().and_then(|r| r.get(key)).cloned().unwrap_or(Value::Null)
}

fn trajectory(o: &Observed) -> Value {
    Value::Array(o.tool_calls.iter().map(|c| json!({"name": c["name"], "args": c["args"]})).collect())
}

/// The fields of `replayed` that differ from `recorded` (latency and routing scores aside).
pub fn compare(recorded: &Observed, replayed: &Observed) -> Vec<Change> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: Value, b: Value| {
        if a != b {
            out.push(Change { field: name.into(), recorded: a, replayed: b, diff: None });
        }
    };
    field("intent", json!(recorded.intent), json!(replayed.intent));
    field("outcome", routing_field(recorded, "outcome"), routing_field(replayed, "outcome"));
    field("rung", routing_field(recorded, "rung"), routing_field(replayed, "rung"));
    field("handler", json!(recorded.handler), json!(replayed.handler));
    field("slots", recorded.slots.clone(), replayed.slots.clone());
    field("tool_calls", trajectory(recorded), trajectory(replayed));
    field(
        "handoff",
        json!({"requested": recorded.handoff, "status": recorded.handoff_status}),
        json!({"requested": replayed.handoff, "status": replayed.handoff_status}),
    );
    field("interrupts", json!(recorded.interrupts), json!(replayed.interrupts));
    if recorded.replies != replayed.replies {
        out.push(Change {
            field: "reply".into(),
            recorded: json!(recorded.reply_text()),
            replayed: json!(replayed.reply_text()),
            diff: Some(line_diff(&recorded.reply_text(), &replayed.reply_text())),
        });
    }
    out
}

/// A line diff: unchanged lines prefixed `  `, removed `- `, added `+ ` (longest common
/// subsequence of lines).
pub fn line_diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out.join("\n")
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

/// The text report: a line per conversation, then each changed turn's changes and misses.
pub fn text(report: &ReplayReport) -> String {
    let mut out = String::new();
    for c in &report.conversations {
        let changed = c.changed_turns();
        let misses: usize = c.turns.iter().map(|t| t.misses.len()).sum();
        out.push_str(&format!(
            "{} {} ({} turns, {changed} changed, {misses} cassette misses)\n",
            if changed == 0 && misses == 0 { "SAME   " } else { "CHANGED" },
            c.conversation_id,
            c.recorded_turns
        ));
        for t in &c.turns {
            if let Some(e) = &t.error {
                out.push_str(&format!("  turn {} ({}): could not be played: {e}\n", t.turn, t.input));
            }
            for ch in &t.changes {
                match &ch.diff {
                    Some(d) => {
                        out.push_str(&format!("  turn {} ({}): reply changed:\n", t.turn, t.input));
                        for l in d.lines() {
                            out.push_str(&format!("      {l}\n"));
                        }
                    }
                    None => out.push_str(&format!(
                        "  turn {} ({}): {}: {} → {}\n",
                        t.turn,
                        t.input,
                        ch.field,
                        show(&ch.recorded),
                        show(&ch.replayed)
                    )),
                }
            }
            for m in &t.misses {
                out.push_str(&format!("  turn {} ({}): {} {}: {}\n", t.turn, t.input, m.kind, m.name, m.outcome));
            }
        }
        if c.turns.len() < c.recorded_turns {
            out.push_str(&format!("  turns {}..{} not played\n", c.turns.len() + 1, c.recorded_turns));
        }
    }
    let s = report.summary();
    out.push_str(&format!(
        "\n{} conversations, {} turns: {} changed, {} cassette misses\n",
        s.conversations, s.turns, s.changed_turns, s.cassette_misses
    ));
    out
}

/// One JSON object per conversation, then the [`ReplaySummary`] as the last line.
pub fn json_lines(report: &ReplayReport) -> String {
    let mut out = String::new();
    for c in &report.conversations {
        let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
        v["changed_turns"] = json!(c.changed_turns());
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out.push_str(&serde_json::to_string(&report.summary()).unwrap_or_default());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_named() {
        let good = r#"{"version":1,"conversation_id":"c1","assistant":"a","turns":[]}"#;
        let text = format!("{good}\n\n{{\"version\":1}}\n");
        let e = parse_jsonl(&text, Path::new("x.jsonl")).unwrap_err();
        assert!(matches!(e, CassetteError::Malformed { line: 3, .. }), "{e}");
        assert!(e.to_string().starts_with("x.jsonl:3: not a cassette"), "{e}");
        let newer = r#"{"version":99,"conversation_id":"c1","assistant":"a","turns":[]}"#;
        assert!(matches!(
            parse_jsonl(newer, Path::new("y")).unwrap_err(),
            CassetteError::Version { line: 1, found: 99, .. }
        ));
        assert_eq!(parse_jsonl(good, Path::new("z")).unwrap().len(), 1);
        assert!(matches!(load(Path::new("/nonexistent/cassettes.jsonl")).unwrap_err(), CassetteError::NotFound(_)));
    }

    #[test]
    fn line_diffs() {
        assert_eq!(line_diff("a\nb\nc", "a\nx\nc"), "  a\n- b\n+ x\n  c");
        assert_eq!(line_diff("same", "same"), "  same");
        assert_eq!(line_diff("", "new"), "+ new");
    }

    #[test]
    fn compares_what_matters_and_not_latency() {
        let a = Observed {
            replies: vec!["Your card is frozen.".into()],
            intent: Some("lost_or_stolen_card".into()),
            handler: Some("card_freeze".into()),
            routing: Some(
                json!({"intent": "lost_or_stolen_card", "rung": "encoder", "outcome": "intent", "confidence": 0.9}),
            ),
            slots: json!({"last4": "4242"}),
            tool_calls: vec![json!({"name": "freeze_card", "args": {"last4": "4242"}, "result": {"ok": true}})],
            latency_ms: 3.0,
            ..Observed::default()
        };
        let mut b = a.clone();
        b.latency_ms = 40.0;
        b.routing.as_mut().unwrap()["confidence"] = json!(0.8);
        assert!(compare(&a, &b).is_empty());
        b.handler = Some("faq".into());
        b.replies = vec!["Frozen!".into()];
        b.tool_calls.clear();
        let fields: Vec<String> = compare(&a, &b).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["handler", "tool_calls", "reply"]);
    }
}
