//! Reports of a scenario run: a human summary, JSON lines (one per scenario, then the counts as
//! the last line) and JUnit XML for CI systems. The HTML report is in [`crate::html`].

use crate::run::{RunReport, ScenarioOutcome};
use std::fmt::Write as _;
use switchboard_router::report::esc;

/// The human summary: one line per scenario, then [`failures`] and [`summary_line`].
pub fn text(report: &RunReport) -> String {
    let mut out = String::new();
    for s in &report.scenarios {
        let _ = writeln!(out, "{}", scenario_line(s));
    }
    out.push_str(&failures(report));
    let _ = writeln!(out, "\n{}", summary_line(report));
    out
}

/// Every failed scenario: its failed checks, then the transcript of the turns played.
pub fn failures(report: &RunReport) -> String {
    let mut out = String::new();
    for s in report.scenarios.iter().filter(|s| !s.passed) {
        let _ = writeln!(out, "\nFAIL {} ({})", s.name, s.file);
        for f in s.failure_lines() {
            let _ = writeln!(out, "  {f}");
        }
        for l in transcript(s).lines() {
            let _ = writeln!(out, "    {l}");
        }
    }
    out
}

/// `N scenarios: P passed, F failed (time, target)`.
pub fn summary_line(report: &RunReport) -> String {
    let sum = report.summary();
    format!(
        "{} scenarios: {} passed, {} failed ({:.1} s, {})",
        sum.scenarios,
        sum.passed,
        sum.failed,
        report.duration_ms / 1000.0,
        report.target
    )
}

/// One line: `PASS`/`FAIL`, the name, the file, the time.
pub fn scenario_line(s: &ScenarioOutcome) -> String {
    format!(
        "{} {} ({}, {} turns, {:.0} ms)",
        if s.passed { "PASS" } else { "FAIL" },
        s.name,
        s.file,
        s.turns.len(),
        s.duration_ms
    )
}

/// JSON lines: one object per scenario, then `{"scenarios":N,"passed":P,"failed":F}` last.
pub fn json_lines(report: &RunReport) -> String {
    let mut out = String::new();
    for s in &report.scenarios {
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&serde_json::to_string(&report.summary()).unwrap_or_default());
    out.push('\n');
    out
}

/// Text safe in XML 1.0: escaped, and without the control characters XML does not allow.
fn xml(s: &str) -> String {
    let kept: String = s.chars().filter(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')).collect();
    esc(&kept)
}

/// The class name of a scenario in JUnit: its file's stem, so CI systems group by file.
fn class_name(s: &ScenarioOutcome) -> String {
    std::path::Path::new(&s.file).file_stem().map_or_else(|| s.file.clone(), |f| f.to_string_lossy().into_owned())
}

/// JUnit XML: one `<testsuite>` with one `<testcase>` per scenario; a failed scenario carries a
/// `<failure>` (failed checks) or an `<error>` (the driver could not play a turn) with every
/// message and the transcript of the turns played.
pub fn junit(report: &RunReport, suite: &str) -> String {
    let sum = report.summary();
    let is_error = |s: &ScenarioOutcome| s.turns.iter().any(|t| t.observed.is_none());
    let errors = report.scenarios.iter().filter(|s| !s.passed && is_error(s)).count();
    let failures = sum.failed - errors;
    let secs = report.duration_ms / 1000.0;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{n}\" tests=\"{t}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{secs:.3}\">",
        n = xml(suite),
        t = sum.scenarios
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{n}\" tests=\"{t}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{secs:.3}\">",
        n = xml(suite),
        t = sum.scenarios
    );
    for s in &report.scenarios {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
            xml(&class_name(s)),
            xml(&s.name),
            xml(&s.file),
            s.duration_ms / 1000.0
        );
        if s.passed {
            out.push_str("/>\n");
            continue;
        }
        let lines = s.failure_lines();
        let tag = if is_error(s) { "error" } else { "failure" };
        let _ = writeln!(
            out,
            ">\n      <{tag} message=\"{}\" type=\"{}\">{}</{tag}>\n    </testcase>",
            xml(lines.first().map_or("failed", String::as_str)),
            if tag == "error" { "DriverError" } else { "ExpectationFailed" },
            xml(&format!("{}\n\n{}", lines.join("\n"), transcript(s)))
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// The turns played and what the assistant answered, for failure details.
pub fn transcript(s: &ScenarioOutcome) -> String {
    let mut out = String::new();
    for t in &s.turns {
        let _ = writeln!(out, "[{}] {}", t.turn, t.input);
        if let Some(o) = &t.observed {
            for r in &o.replies {
                let _ = writeln!(out, "    bot: {r}");
            }
            let _ = writeln!(
                out,
                "    (intent {}, handler {}, tools [{}], handoff {}, interrupts [{}], {:.1} ms)",
                o.intent.as_deref().unwrap_or("-"),
                o.handler.as_deref().unwrap_or("-"),
                o.tool_names().join(", "),
                o.handoff_status,
                o.interrupts.join(", "),
                o.latency_ms
            );
        }
    }
    out
}
