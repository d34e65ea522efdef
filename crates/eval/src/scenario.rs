//! The scenario file format: one conversation per file (or a list of them), each turn a customer
//! message or a human's answer to a pending approval, with what must hold after it.
//!
//! Key design decision: the format is strict. Unknown keys, a turn that is both (or neither) a
//! message and an approval, and a regular expression that does not compile are load errors that
//! name the file (and the line, when the YAML parser knows it), so a typo never turns into a
//! check that silently passes.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The assistant a scenario runs against when it names none.
pub const DEFAULT_ASSISTANT: &str = "exchange-support";

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ScenarioError {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// What is wrong, with the line when known.
    pub message: String,
}

impl ScenarioError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self { path: path.to_path_buf(), message: message.into() }
    }
}

/// One multi-turn conversation and its expectations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique name, shown in reports.
    pub name: String,
    /// The assistant to run.
    #[serde(default = "default_assistant")]
    pub assistant: String,
    /// The seeded customer the conversation belongs to.
    #[serde(default)]
    pub customer: Option<String>,
    /// The turns, in order.
    pub turns: Vec<Turn>,
    /// The file it came from (set by the loader).
    #[serde(skip)]
    pub file: PathBuf,
}

fn default_assistant() -> String {
    DEFAULT_ASSISTANT.to_string()
}

/// One step of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// A customer message.
    #[serde(default)]
    pub user: Option<String>,
    /// A human approving (`true`) or denying (`false`) the pending approval.
    #[serde(default)]
    pub approve: Option<bool>,
    /// What must hold after the turn.
    #[serde(default)]
    pub expect: Expect,
}

/// What a turn does, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// The customer writes.
    Say(&'a str),
    /// A human resolves the pending approval.
    Approve(bool),
}

impl Turn {
    /// The turn's action (the loader checked that there is exactly one).
    pub fn action(&self) -> Action<'_> {
        match (&self.user, self.approve) {
            (Some(text), _) => Action::Say(text),
            (None, Some(a)) => Action::Approve(a),
            (None, None) => Action::Say(""),
        }
    }

    /// A short label (`user: ...` / `approve: true`) for reports.
    pub fn label(&self) -> String {
        match self.action() {
            Action::Say(t) => format!("user: {t}"),
            Action::Approve(a) => format!("approve: {a}"),
        }
    }
}

/// `no_tool_calls`: `true` (no tool at all) or a list of tools that must not run.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum NoToolCalls {
    /// `true`: no tool was called; `false`: no check.
    All(bool),
    /// None of these tools was called.
    Named(Vec<String>),
}

/// An expected tool call: its name and a subset of its arguments.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectedCall {
    /// Tool name.
    pub name: String,
    /// Arguments that must be present with these values (compared as strings).
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
}

/// The checks of one turn; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The router's top intent for the message.
    pub intent: Option<String>,
    /// What handled the turn (a flow, `faq`, `out_of_scope`, `clarify`, `handoff`, ...).
    pub handler: Option<String>,
    /// A subset of the flow's slots after the turn (values compared as strings).
    pub slots: Option<BTreeMap<String, Value>>,
    /// An ordered subset of the turn's tool calls.
    pub tool_calls: Option<Vec<ExpectedCall>>,
    /// No tool (or none of the named tools) was called.
    pub no_tool_calls: Option<NoToolCalls>,
    /// The turn requested (`true`) or did not request (`false`) a human handoff.
    pub handoff: Option<bool>,
    /// The kind of interrupt left pending after the turn (`approval`).
    pub interrupt: Option<String>,
    /// A regular expression the reply must match.
    pub reply_matches: Option<String>,
    /// A regular expression the reply must not match.
    pub reply_not_matches: Option<String>,
    /// Upper bound on the turn's latency.
    pub max_latency_ms: Option<u64>,
}

/// The two shapes a file may have: one scenario or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileShape {
    List(Vec<Scenario>),
    One(Box<Scenario>),
}

fn is_scenario_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// Loads every scenario of `paths` (files, or directories whose `.yaml` / `.yml` files are read
/// in name order, not recursively).
///
/// # Errors
/// [`ScenarioError`] for an unreadable path, a malformed file, a bad turn or pattern, an empty
/// selection, or two scenarios with the same name.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Scenario>, ScenarioError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| ScenarioError::new(p, e.to_string()))?;
            let mut found: Vec<PathBuf> =
                rd.filter_map(Result::ok).map(|e| e.path()).filter(|f| f.is_file() && is_scenario_file(f)).collect();
            found.sort();
            if found.is_empty() {
                return Err(ScenarioError::new(p, "no .yaml scenario files in this directory"));
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut all = Vec::new();
    for f in &files {
        all.extend(load_file(f)?);
    }
    let mut seen = BTreeMap::new();
    for s in &all {
        if let Some(other) = seen.insert(s.name.clone(), s.file.clone()) {
            return Err(ScenarioError::new(
                &s.file,
                format!("scenario name `{}` is also used in {}", s.name, other.display()),
            ));
        }
    }
    Ok(all)
}

/// Loads one file.
///
/// # Errors
/// As [`load_paths`].
pub fn load_file(path: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::new(path, e.to_string()))?;
    parse(&text, path)
}

/// Parses the text of a scenario file (`path` only names it in errors and results).
///
/// # Errors
/// As [`load_paths`].
pub fn parse(text: &str, path: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let shape: FileShape = serde_yaml::from_str(text).map_err(|e| {
        let at = e.location().map(|l| format!("line {}, column {}: ", l.line(), l.column())).unwrap_or_default();
        // The untagged enum hides the inner error; parse again as one scenario to name it.
        let detail = serde_yaml::from_str::<Scenario>(text).err().map_or_else(|| e.to_string(), |e| e.to_string());
        ScenarioError::new(path, format!("{at}{detail}"))
    })?;
    let mut list = match shape {
        FileShape::List(l) => l,
        FileShape::One(s) => vec![*s],
    };
    if list.is_empty() {
        return Err(ScenarioError::new(path, "no scenario in this file"));
    }
    for s in &mut list {
        s.file = path.to_path_buf();
        validate(s).map_err(|m| ScenarioError::new(path, format!("scenario `{}`: {m}", s.name)))?;
    }
    Ok(list)
}

fn validate(s: &Scenario) -> Result<(), String> {
    if s.name.trim().is_empty() {
        return Err("the name is empty".into());
    }
    if s.turns.is_empty() {
        return Err("no turns".into());
    }
    for (i, t) in s.turns.iter().enumerate() {
        let n = i + 1;
        match (&t.user, t.approve) {
            (Some(_), Some(_)) => return Err(format!("turn {n} has both `user` and `approve`")),
            (None, None) => return Err(format!("turn {n} has neither `user` nor `approve`")),
            (Some(u), None) if u.trim().is_empty() => return Err(format!("turn {n}: `user` is empty")),
            _ => {}
        }
        for (key, p) in [("reply_matches", &t.expect.reply_matches), ("reply_not_matches", &t.expect.reply_not_matches)]
        {
            if let Some(p) = p {
                Regex::new(p).map_err(|e| format!("turn {n}: `{key}` is not a valid regular expression: {e}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Scenario>, ScenarioError> {
        parse(text, Path::new("t.yaml"))
    }

    #[test]
    fn one_scenario_and_a_list() {
        let one =
            p("name: a\ncustomer: cust_001\nturns:\n  - user: hi\n  - approve: true\n    expect: {handoff: false}\n")
                .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].assistant, DEFAULT_ASSISTANT);
        assert_eq!(one[0].turns[1].action(), Action::Approve(true));
        assert_eq!(one[0].turns[1].expect.handoff, Some(false));
        let two = p("- name: a\n  turns: [{user: hi}]\n- name: b\n  turns: [{user: bye}]\n").unwrap();
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn expectations_parse() {
        let s = p(r#"
name: x
turns:
  - user: "the one ending 4242"
    expect:
      slots: {last4: 4242}
      tool_calls: [{name: freeze_card, args: {last4: "4242"}}]
      no_tool_calls: [get_card_status]
      reply_matches: '(?i)frozen'
      max_latency_ms: 500
  - user: hi
    expect: {no_tool_calls: true}
"#)
        .unwrap();
        let e = &s[0].turns[0].expect;
        assert_eq!(e.slots.as_ref().unwrap()["last4"], serde_json::json!(4242));
        assert_eq!(e.tool_calls.as_ref().unwrap()[0].args["last4"], "4242");
        assert_eq!(e.no_tool_calls, Some(NoToolCalls::Named(vec!["get_card_status".into()])));
        assert_eq!(s[0].turns[1].expect.no_tool_calls, Some(NoToolCalls::All(true)));
    }

    #[test]
    fn strict_errors_name_the_problem() {
        let e = p("name: x\nturns:\n  - user: hi\n    expect: {intnet: a}\n").unwrap_err();
        assert!(e.message.contains("intnet"), "{e}");
        let e = p("name: x\nturns:\n  - user: hi\n    approve: true\n").unwrap_err();
        assert!(e.message.contains("both"), "{e}");
        let e = p("name: x\nturns:\n  - expect: {handoff: true}\n").unwrap_err();
        assert!(e.message.contains("neither"), "{e}");
        let e = p("name: x\nturns:\n  - user: hi\n    expect: {reply_matches: '(unclosed'}\n").unwrap_err();
        assert!(e.message.contains("reply_matches"), "{e}");
        let e = p("name: x\nturns: []\n").unwrap_err();
        assert!(e.message.contains("no turns"), "{e}");
    }
}
