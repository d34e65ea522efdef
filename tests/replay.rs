//! Record and replay from the command line: conversations recorded by `switchboard chat
//! --record`, exported with `eval export`, replayed with `eval replay` against the same
//! assistant (nothing changes) and against a copy whose card-freeze reply was reworded (exactly
//! that turn changes, exit 1 with --fail-on-change); bad cassette files are typed errors.
#![allow(clippy::unwrap_used, missing_docs)]

use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    c.current_dir(root())
        .env("SWITCHBOARD_CACHE_DIR", std::env::temp_dir().join("switchboard-replay-tests"))
        .env("SWITCHBOARD_LLM", "off")
        .env_remove("SWITCHBOARD_RECORDING");
    c
}

/// A `switchboard chat --record` session fed `script` on standard input.
fn chat(data: &Path, conversation: &str, script: &str) {
    let mut child = bin()
        .args(["chat", "--record", "--lexical", "--customer", "cust_001", "--conversation", conversation])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chat failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("could not record"), "{stdout}");
}

fn replay(from: &Path, assistant: &Path) -> Output {
    bin()
        .args(["eval", "replay", "--lexical", "--json", "--fail-on-change", "--from"])
        .arg(from)
        .arg("--assistant")
        .arg(assistant)
        .output()
        .unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn recorded_chats_export_and_replay_and_a_reworded_reply_fails_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    chat(&data, "conv_freeze", "I lost my card, block it please\nthe one ending 4242\n/approve\n");
    chat(&data, "conv_human", "hello\ncan I talk to a person?\n");

    let file = dir.path().join("cassettes.jsonl");
    let out = bin()
        .args(["eval", "export", "--store"])
        .arg(data.join("chat.sqlite"))
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let cassettes: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(cassettes.len(), 2, "{text}");
    assert_eq!(cassettes[0]["conversation_id"], "conv_freeze");
    let turns = cassettes[0]["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[2]["input"], serde_json::json!({"approve": true}));
    assert!(turns[2]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "freeze_card"), "{}", turns[2]);

    // Only one conversation; an unknown one is an error.
    let one = dir.path().join("one.jsonl");
    let out = bin()
        .args(["eval", "export", "--conversation", "conv_human", "--store"])
        .arg(data.join("chat.sqlite"))
        .arg("--out")
        .arg(&one)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&one).unwrap().lines().count(), 1);
    let out = bin()
        .args(["eval", "export", "--conversation", "nope", "--store"])
        .arg(data.join("chat.sqlite"))
        .arg("--out")
        .arg(&one)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("conversation `nope` has no recorded turns"));

    // The same assistant: no change, no miss, exit 0.
    let same = replay(&file, &root().join("assistants/exchange-support"));
    assert_eq!(same.status.code(), Some(0), "{}", String::from_utf8_lossy(&same.stderr));
    let lines = json_lines(&same);
    assert_eq!(
        lines.last().unwrap(),
        &serde_json::json!({"conversations": 2, "turns": 5, "changed_turns": 0, "cassette_misses": 0})
    );

    // A copy with the freeze confirmation reworded: exactly that turn changed, exit 1.
    let copy = dir.path().join("exchange-support-v2");
    copy_dir(&root().join("assistants/exchange-support"), &copy);
    let toml = std::fs::read_to_string(copy.join("assistant.toml")).unwrap();
    let old = "frozen = \"Done: the card ending {last4} is now frozen.";
    assert!(toml.contains(old));
    let toml = toml.replace(old, "frozen = \"Card {last4} is blocked.");
    std::fs::write(copy.join("assistant.toml"), toml).unwrap();
    let changed = replay(&file, &copy.join("assistant.toml"));
    assert_eq!(changed.status.code(), Some(1), "{}", String::from_utf8_lossy(&changed.stderr));
    let lines = json_lines(&changed);
    assert_eq!(
        lines.last().unwrap(),
        &serde_json::json!({"conversations": 2, "turns": 5, "changed_turns": 1, "cassette_misses": 0})
    );
    let freeze = &lines[0];
    assert_eq!(freeze["conversation_id"], "conv_freeze");
    let turn =
        freeze["turns"].as_array().unwrap().iter().find(|t| !t["changes"].as_array().unwrap().is_empty()).unwrap();
    assert_eq!(turn["turn"], 3);
    assert_eq!(turn["changes"][0]["field"], "reply");
    assert!(turn["changes"][0]["diff"].as_str().unwrap().contains("+ Card 4242 is blocked."), "{turn}");

    // The text report shows the diff too.
    let out = bin()
        .args(["eval", "replay", "--lexical", "--from"])
        .arg(&file)
        .arg("--assistant")
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "without --fail-on-change a change is not an error");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CHANGED conv_freeze") && text.contains("+ Card 4242 is blocked."), "{text}");
}

#[test]
fn bad_cassette_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let assistant = root().join("assistants/exchange-support");
    let out = replay(&dir.path().join("missing.jsonl"), &assistant);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.jsonl: no such file or directory"), "{err}");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"version\":1,\"conversation_id\":\"c\",\"assistant\":\"a\",\"turns\":[]}\nnot json\n")
        .unwrap();
    let out = replay(&bad, &assistant);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl:2: not a cassette"), "{err}");
}
