//! The `switchboard` binary as a user runs it.
#![allow(clippy::unwrap_used, missing_docs)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_explains_each_subcommand() {
    let help = run_ok(bin().arg("--help"));
    for sub in ["demo", "bench"] {
        assert!(help.contains(sub), "--help lists {sub}:\n{help}");
    }
    let help = run_ok(bin().args(["bench", "engine", "--help"]));
    assert!(help.contains("--workload") && help.contains("--store"), "{help}");
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = bin().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

#[test]
fn demo_runs_a_conversation_with_handoff_and_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(bin().args(["demo", "--data-dir"]).arg(dir.path()));
    assert!(out.contains("intent=card_lost"), "{out}");
    assert!(out.contains("blocked=true"), "the injection attempt is flagged:\n{out}");
    assert!(out.contains("pii=true"), "the card number is flagged:\n{out}");
    assert!(out.contains("[human agent] Hi, this is Maria"), "{out}");
    assert!(out.contains("Forked a new branch"), "{out}");
    assert!(dir.path().join("demo.sqlite").exists());
}

#[test]
fn demo_reads_a_script_from_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["demo", "--interactive", "--conversation", "t1", "--data-dir"])
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"I want to talk to a human agent\nhello from a person\n/history\n/quit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("paused for a human"), "{text}");
    assert!(text.contains("[human agent] hello from a person"), "{text}");
    assert!(text.contains("checkpoints,"), "{text}");
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The exported peer workload, when the shared harness sits beside the repository.
fn exported_workload(dir: &std::path::Path) -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/peers/export_workload.py");
    if !script.exists() {
        eprintln!("SKIPPED: {} not found; the routing check against LangGraph needs it", script.display());
        return None;
    }
    let out = Command::new("python3").arg(&script).output().ok()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = dir.join("workload.json");
    std::fs::write(&path, out.stdout).unwrap();
    Some(path)
}

#[test]
fn bench_engine_routes_every_exported_turn_as_langgraph_does() {
    let dir = tempfile::tempdir().unwrap();
    let Some(workload) = exported_workload(dir.path()) else { return };
    let out = run_ok(
        bin()
            .args(["bench", "engine", "--case", "seq", "--store", "sqlite", "--json", "--workload"])
            .arg(&workload)
            .arg("--dir")
            .arg(dir.path()),
    );
    let r = &json_lines(&out)[0];
    assert_eq!(r["case"], "engine_seq_sqlite");
    assert_eq!(r["routing_checked"], 2000);
    assert_eq!(r["routing_mismatches"], 0);
    for k in ["turns_per_s", "cpu_us_per_turn", "p50_ms", "p99_ms", "peak_rss_mib", "checkpoint_bytes_per_conversation"]
    {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k} in {r}");
    }
    // 20-turn conversations stay far below LangGraph's 868 KB of SQLite file each.
    assert!(r["checkpoint_bytes_per_conversation"].as_f64().unwrap() < 43_000.0, "{r}");
}

#[test]
fn bench_engine_concurrency_case_loses_no_turn() {
    let out = run_ok(bin().args([
        "bench",
        "engine",
        "--case",
        "all",
        "--store",
        "memory",
        "--json",
        "--conversations",
        "10",
        "--turns",
        "4",
        "--conc-conversations",
        "200",
        "--conc-turns",
        "3",
        "--llm-ms",
        "20",
    ]));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    let conc = lines.iter().find(|l| l["case"] == "engine_conc_memory").unwrap();
    assert_eq!(conc["turns"], 600);
    assert_eq!(conc["failed_turns"], 0);
    assert!(conc["wall_s"].as_f64().unwrap() >= 0.06, "three 20 ms LLM calls in a row: {conc}");
}

#[test]
fn keys_are_audited_and_audit_verify_finds_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for tenant in ["acme", "globex"] {
        let out =
            run_ok(bin().args(["keys", "create", "--tenant", tenant, "--scopes", "chat,desk", "--data-dir", data]));
        assert!(out.trim().lines().last().unwrap().len() > 20, "{out}");
    }
    let out = run_ok(bin().args(["audit", "verify", "--data-dir", data, "--json"]));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["ok"].as_bool(), v["records"].as_u64()), (Some(true), Some(2)), "{v}");
    let listed = json_lines(&run_ok(bin().args(["audit", "list", "--data-dir", data])));
    assert_eq!(listed.len(), 2);
    assert_eq!((listed[0]["action"].as_str(), listed[0]["tenant"].as_str()), (Some("key.create"), Some("acme")));
    assert_eq!(listed[1]["actor"], "cli");

    // Someone rewrites history in the file: verify says where, and exits 1.
    let db = dir.path().join("switchboard.sqlite");
    let status = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit_log SET tenant='evil' WHERE seq=1\"); c.commit()"])
        .arg(&db)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("python3 with sqlite3 is not available: tampering part skipped");
        return;
    }
    let out = bin().args(["audit", "verify", "--data-dir", data]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BROKEN at record 1"), "{text}");

    let out =
        bin().args(["audit", "verify", "--data-dir", dir.path().join("nope").to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `bench server` on a small scale: every phase runs, every turn succeeds, and each figure the
/// README quotes is present and plausible (latency covers the engine, overhead is what remains).
#[test]
fn bench_server_measures_every_phase() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        bin()
            .args(["bench", "server", "--json", "--concurrency", "2", "--closed-seconds", "0.5"])
            .args(["--rate", "200", "--open-seconds", "1", "--streams", "50"])
            .current_dir(dir.path()),
    );
    let lines = json_lines(&out);
    let case = |name: &str| lines.iter().find(|l| l["case"] == name).unwrap_or_else(|| panic!("no {name} in {out}"));
    let closed = case("closed_loop");
    assert_eq!(closed["concurrency"], 2);
    assert_eq!(closed["errors"], 0, "{closed}");
    assert!(closed["turns"].as_u64().unwrap() > 0, "{closed}");
    let open = case("open_loop");
    assert_eq!(open["turns"], 200, "every scheduled turn is answered: {open}");
    assert_eq!(open["errors"], 0, "{open}");
    let f = |k: &str| open[k].as_f64().unwrap_or_else(|| panic!("{k} in {open}"));
    assert!(f("p99_ms") >= f("p50_ms") && f("p50_ms") > 0.0, "{open}");
    assert!(f("engine_p50_ms") > 0.0 && f("engine_p50_ms") <= f("p50_ms"), "{open}");
    assert!(f("overhead_from_send_p99_ms") <= f("overhead_p99_ms") + 1e-9, "{open}");
    assert!(f("send_delay_p50_ms") >= 0.0 && f("server_cpu_us_per_turn") > 0.0, "{open}");
    assert!(f("commits_per_turn") > 0.0 && f("store_writes_per_turn") >= 2.0, "{open}");
    let mem = case("sse_memory");
    assert_eq!(mem["opened"], 50, "{mem}");
}
