//! `switchboard eval scenarios` as CI runs it: a passing and a deliberately failing scenario file
//! (tests/fixtures/eval), in process and against a running `switchboard serve`; the exit code, the
//! JSON lines (counts last), the JUnit XML (parsed back) and the HTML report.
#![allow(clippy::unwrap_used, missing_docs)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/eval")
}

/// The binary with the repo's assistants and a router cache shared by the test runs (training
/// happens once per content hash).
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    c.current_dir(root())
        .env("SWITCHBOARD_CACHE_DIR", std::env::temp_dir().join("switchboard-eval-tests"))
        .env_remove("SWITCHBOARD_API_KEY");
    c
}

fn json_lines(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// (tests, failures, errors) of a JUnit suite.
type Counts = (u32, u32, u32);
/// A test case's name and its failure (or error) message, if any.
type Case = (String, Option<String>);

/// The JUnit file parsed back: the suite's counts and its test cases.
fn parse_junit(path: &Path) -> (Counts, Vec<Case>) {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("invalid JUnit XML ({e}):\n{text}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suite = root.children().find(|n| n.has_tag_name("testsuite")).unwrap();
    let attr = |n: &str| suite.attribute(n).unwrap().parse::<u32>().unwrap();
    let cases = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|c| {
            let failure = c
                .children()
                .find(|n| n.has_tag_name("failure") || n.has_tag_name("error"))
                .map(|f| f.attribute("message").unwrap().to_string());
            (c.attribute("name").unwrap().to_string(), failure)
        })
        .collect();
    ((attr("tests"), attr("failures"), attr("errors")), cases)
}

fn check_outputs(out: &Output, junit: &Path, html: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a failing scenario fails the run:\n{stderr}");
    let lines = json_lines(out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines.last().unwrap(), &serde_json::json!({"scenarios": 2, "passed": 1, "failed": 1}));
    let failed = lines.iter().find(|l| l["passed"] == false).unwrap();
    assert_eq!(failed["name"], "fixture - deliberately failing expectations");
    let msgs = failed["turns"][0]["failures"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "handler, tool_calls and reply_matches fail: {msgs:?}");
    let passed = lines.iter().find(|l| l["passed"] == true).unwrap();
    assert_eq!(passed["turns"][1]["observed"]["tool_calls"][0]["name"], "freeze_card", "{passed}");

    let ((tests, failures, errors), cases) = parse_junit(junit);
    assert_eq!((tests, failures, errors), (2, 1, 0));
    let bad = cases.iter().find(|c| c.0 == "fixture - deliberately failing expectations").unwrap();
    assert!(bad.1.as_deref().unwrap().contains("handler: expected `card_freeze`"), "{bad:?}");
    let good = cases.iter().find(|c| c.0 == "fixture - a card is frozen after approval").unwrap();
    assert_eq!(good.1, None);

    let page = std::fs::read_to_string(html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    for id in ["id=\"summary\"", "id=\"scenario-table\"", "id=\"latency-chart\"", "id=\"failures\""] {
        assert!(page.contains(id), "{id} in the HTML report");
    }
    // Self-contained: no script, no external resource.
    assert!(!page.contains("<script") && !page.contains("src=\"http") && !page.contains("href=\"http"));
}

/// Runs both fixture files with `extra` options and checks every output.
fn run_both_fixtures(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (junit, html) = (dir.path().join("junit.xml"), dir.path().join("report.html"));
    let out = bin()
        .args(["eval", "scenarios", "--json"])
        .args(extra)
        .arg("--junit")
        .arg(&junit)
        .arg("--html")
        .arg(&html)
        .arg(fixtures().join("passing.yaml"))
        .arg(fixtures().join("failing.yaml"))
        .output()
        .unwrap();
    check_outputs(&out, &junit, &html);
}

#[test]
fn in_process_run_reports_json_junit_html_and_fails_on_a_failing_scenario() {
    run_both_fixtures(&["--lexical"]);

    // Only the passing file: exit 0, and the human summary says so.
    let out = bin().args(["eval", "scenarios", "--lexical"]).arg(fixtures().join("passing.yaml")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("PASS fixture - a card is frozen after approval"), "{stdout}");
    assert!(stdout.contains("1 scenarios: 1 passed, 0 failed"), "{stdout}");
}

#[test]
fn a_malformed_scenario_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "name: x\nturns:\n  - user: hi\n    expect: {handlr: faq}\n").unwrap();
    let out = bin().args(["eval", "scenarios", "--lexical"]).arg(&f).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.yaml") && stderr.contains("handlr"), "{stderr}");
}

#[test]
fn url_mode_drives_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = bin()
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    let mut key = None;
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if line.starts_with("sb_") {
            key = Some(line.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("Switchboard listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        // The first start may train the reference assistant's router (cached afterwards).
        assert!(start.elapsed() < Duration::from_secs(300));
    };
    let url = format!("http://{addr}");
    let key = key.expect("an admin key at first start");
    let result = std::panic::catch_unwind(|| run_both_fixtures(&["--url", &url, "--api-key", &key]));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
