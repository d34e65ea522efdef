//! `switchboard serve` and `switchboard keys create` as a user runs them.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

fn is_key(s: &str) -> bool {
    s.len() == 67 && s.starts_with("sb_") && s[3..].chars().all(|c| c.is_ascii_hexdigit())
}

fn get(addr: &str, path: &str, key: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn keys_create_prints_the_key_alone_on_its_last_line_and_serve_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = bin()
        .args(["keys", "create", "--tenant", "acme", "--scopes", "chat,desk", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().to_string();
    assert!(is_key(&key), "{stdout}");

    let bad = bin()
        .args(["keys", "create", "--tenant", "acme", "--scopes", "root", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope `root`"));

    let mut child = bin()
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        // A key already exists: no admin key is generated.
        assert!(!line.starts_with("First start"), "{line}");
        if let Some(rest) = line.strip_prefix("Switchboard listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        // The first start may train the reference assistant's router (cached afterwards).
        assert!(start.elapsed() < Duration::from_secs(300));
    };
    let resp = get(&addr, "/v1/conversations", &key);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let resp = get(&addr, "/v1/conversations", "sb_wrong");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_prints_an_admin_key_at_first_start_only() {
    let dir = tempfile::tempdir().unwrap();
    let first_line = |dir: &std::path::Path| {
        let mut child = bin()
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        for l in lines.by_ref() {
            let l = l.unwrap();
            let done = l.starts_with("Switchboard listening");
            // The reference assistant's router and LLM reports are not part of the key protocol.
            if l.starts_with("Router for ") || l.starts_with("LLM for ") {
                continue;
            }
            seen.push(l);
            if done {
                break;
            }
        }
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(child.wait().unwrap().success());
        seen
    };
    let first = first_line(dir.path());
    assert!(first[0].starts_with("First start"), "{first:?}");
    assert!(is_key(&first[1]), "{first:?}");
    let second = first_line(dir.path());
    assert_eq!(second.len(), 1, "{second:?}");
}

#[test]
fn a_bad_config_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sb.toml");
    std::fs::write(&cfg, "addr = \"localhost\"\n").unwrap();
    let out = bin().args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("addr \"localhost\" is not HOST:PORT"), "{err}");
    let out =
        bin().args(["serve", "--addr", "127.0.0.1:0"]).env("SWITCHBOARD_REQUEST_TIMEOUT_MS", "soon").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SWITCHBOARD_REQUEST_TIMEOUT_MS"));
}

fn post(addr: &str, path: &str, key: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A `switchboard serve` on a free port whose config points the `openai` provider at `llm_url`
/// (with `extra` TOML before it), its key in `SB_SERVE_TEST_LLM_KEY`. Returns the child, its
/// address, the admin key printed at first start, and the stdout lines before "listening".
fn serve_with_llm(
    dir: &std::path::Path,
    extra: &str,
    llm_url: &str,
) -> (std::process::Child, String, String, Vec<String>) {
    let cfg = dir.join("sb.toml");
    std::fs::write(
        &cfg,
        format!(
            "{extra}[llm.providers.openai]\nkind = \"openai\"\nbase_url = \"{llm_url}/v1\"\n\
             api_key_env = \"SB_SERVE_TEST_LLM_KEY\"\n"
        ),
    )
    .unwrap();
    let mut child = bin()
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("SB_SERVE_TEST_LLM_KEY", "sk-test")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("SWITCHBOARD_LLM")
        .env_remove("SWITCHBOARD_RECORDING")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut key, mut seen) = (String::new(), Vec::new());
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if is_key(&line) {
            key = line.clone();
        }
        if let Some(rest) = line.strip_prefix("Switchboard listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        seen.push(line);
    };
    // Keep reading what it prints after that: a closed pipe would fail the server's next write.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr, key, seen)
}

/// Creates a conversation for `cust_001`; returns its id.
fn new_conversation(addr: &str, key: &str) -> String {
    let resp = post(addr, "/v1/conversations", key, r#"{"customer_id":"cust_001"}"#);
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    body.split("\"id\":\"").nth(1).unwrap().split('"').next().unwrap().to_string()
}

#[test]
fn serve_picks_the_reference_assistants_llm_up_from_its_config() {
    use switchboard_testkit::{FakeServer, Reply, Scenario, Vendor};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeServer::start(Vendor::OpenAi)).unwrap();
    for _ in 0..2 {
        fake.push(Scenario::reply(Reply::text("Written by the configured model.")));
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, key, lines) = serve_with_llm(dir.path(), "", &fake.base_url());
    let llm = lines.iter().find_map(|l| l.strip_prefix("LLM for exchange-support: ")).unwrap_or_default().to_string();
    assert!(llm.contains("help_agent: openai/gpt-4o-mini"), "{llm}");
    assert!(llm.contains("not used: anthropic:claude-haiku-4-5: $ANTHROPIC_API_KEY is not set"), "{llm}");
    let id = new_conversation(&addr, &key);
    let resp = post(
        &addr,
        &format!("/v1/conversations/{id}/messages"),
        &key,
        r#"{"text":"My crypto withdrawal to my external wallet has not arrived yet"}"#,
    );
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("Written by the configured model."), "{resp}");
    let reqs = fake.requests();
    assert!(!reqs.is_empty());
    assert_eq!(reqs[0].body["model"], "gpt-4o-mini");
    assert_eq!(reqs[0].headers["authorization"], "Bearer sk-test");
}

#[test]
fn turns_served_with_recording_on_export_and_replay_without_the_llm_and_without_change() {
    use switchboard_testkit::{FakeServer, Reply, Scenario, Vendor};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeServer::start(Vendor::OpenAi)).unwrap();
    fake.push(Scenario::reply(Reply::text("Withdrawals usually arrive within an hour.")));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, addr, key, _) = serve_with_llm(dir.path(), "[recording]\nenabled = true\n\n", &fake.base_url());
    let id = new_conversation(&addr, &key);
    let mut replies = Vec::new();
    for text in ["hello", "My crypto withdrawal to my external wallet has not arrived yet", "I lost my card"] {
        let body = format!(r#"{{"text":"{text}"}}"#);
        replies.push(post(&addr, &format!("/v1/conversations/{id}/messages"), &key, &body));
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let _ = child.wait();
    for r in &replies {
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    assert!(replies[1].contains("Withdrawals usually arrive within an hour."), "{}", replies[1]);
    drop(fake);

    let file = dir.path().join("cassettes.jsonl");
    let out = bin().args(["eval", "export", "--data-dir"]).arg(&data).arg("--out").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cassettes = std::fs::read_to_string(&file).unwrap();
    assert_eq!(cassettes.lines().count(), 1, "{cassettes}");
    assert!(cassettes.contains("Withdrawals usually arrive within an hour."), "the LLM answer is on the cassette");

    // The fake vendor is gone: the agent's turn can only be answered from the cassette.
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = bin()
        .args(["eval", "replay", "--json", "--fail-on-change", "--from"])
        .arg(&file)
        .arg("--assistant")
        .arg(root.join("assistants/exchange-support"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary, serde_json::json!({"conversations": 1, "turns": 3, "changed_turns": 0, "cassette_misses": 0}));
}
