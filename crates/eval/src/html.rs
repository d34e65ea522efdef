//! The scenario report as one self-contained HTML page: summary figures, the pass/fail table, the
//! latency of every turn as an inline SVG bar chart, and per-turn details of every failure (no
//! script, no CDN, no external resource of any kind).

use crate::run::{RunReport, ScenarioOutcome};
use std::fmt::Write as _;
use switchboard_router::report::esc;

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}\
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee;vertical-align:top}\
table.kv th{font-weight:normal;color:#555}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}\
tr.failed{background:#fff4f4}.note{color:#666}ul.f{margin:0;padding-left:1.2em;color:#c62828}\
pre{white-space:pre-wrap;margin:0;font:12px/1.3 ui-monospace,monospace}\
.turns td{font-size:13px}svg text{font:11px system-ui,sans-serif;fill:#333}";

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn anchor(i: usize) -> String {
    format!("s{}", i + 1)
}

/// Renders the report. `title` heads the page.
pub fn html(report: &RunReport, title: &str) -> String {
    let sum = report.summary();
    let mut lat: Vec<f64> = report
        .scenarios
        .iter()
        .flat_map(|s| s.turns.iter().filter_map(|t| t.observed.as_ref()))
        .map(|o| o.latency_ms)
        .collect();
    lat.sort_by(f64::total_cmp);
    let mut out = String::with_capacity(64 << 10);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>{CSS}</style></head>\n<body><h1>{t}</h1>\n",
        t = esc(title)
    );
    out.push_str("<section id=\"summary\"><h2>Summary</h2><table class=\"kv\">");
    let rate = if sum.scenarios == 0 { 0.0 } else { 100.0 * sum.passed as f64 / sum.scenarios as f64 };
    let rows = [
        ("scenarios", sum.scenarios.to_string()),
        ("passed", sum.passed.to_string()),
        ("failed", sum.failed.to_string()),
        ("pass rate", format!("{rate:.1}%")),
        ("turns", lat.len().to_string()),
        (
            "turn latency p50 / p95 / max",
            format!(
                "{:.1} ms / {:.1} ms / {:.1} ms",
                percentile(&lat, 0.5),
                percentile(&lat, 0.95),
                percentile(&lat, 1.0)
            ),
        ),
        ("target", report.target.clone()),
        ("run time", format!("{:.1} s", report.duration_ms / 1000.0)),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    let _ = writeln!(out, "</table>{}</section>", pass_bar(sum.passed, sum.failed));
    out.push_str(&table(report));
    out.push_str(&latency_chart(report));
    out.push_str(&failures(report));
    out.push_str("</body></html>\n");
    out
}

fn pass_bar(passed: usize, failed: usize) -> String {
    let total = (passed + failed).max(1) as f64;
    let w = 600.0;
    let pw = w * passed as f64 / total;
    format!(
        "<svg id=\"pass-bar\" width=\"{w}\" height=\"28\" viewBox=\"0 0 {w} 28\" role=\"img\" aria-label=\"{passed} passed, {failed} failed\">\
<rect x=\"0\" y=\"4\" width=\"{pw:.1}\" height=\"20\" fill=\"#2e9d4f\"/><rect x=\"{pw:.1}\" y=\"4\" width=\"{:.1}\" height=\"20\" fill=\"#d64545\"/></svg>",
        w - pw
    )
}

fn table(report: &RunReport) -> String {
    let mut out = String::from(
        "<section id=\"scenarios\"><h2>Scenarios</h2><table id=\"scenario-table\"><thead><tr><th>#</th><th>result</th>\
<th>scenario</th><th>file</th><th>turns</th><th>slowest turn</th><th>time</th></tr></thead><tbody>\n",
    );
    for (i, s) in report.scenarios.iter().enumerate() {
        let slowest = s.turns.iter().filter_map(|t| t.observed.as_ref()).map(|o| o.latency_ms).fold(0.0, f64::max);
        let name = if s.passed { esc(&s.name) } else { format!("<a href=\"#{}\">{}</a>", anchor(i), esc(&s.name)) };
        let _ = writeln!(
            out,
            "<tr class=\"{cls}\"><td class=\"num\">{n}</td><td class=\"{res}\">{res_t}</td><td>{name}</td><td>{file}</td>\
<td class=\"num\">{turns}</td><td class=\"num\">{slowest:.1} ms</td><td class=\"num\">{time:.0} ms</td></tr>",
            cls = if s.passed { "passed" } else { "failed" },
            n = i + 1,
            res = if s.passed { "pass" } else { "fail" },
            res_t = if s.passed { "PASS" } else { "FAIL" },
            file = esc(&s.file),
            turns = s.turns.len(),
            time = s.duration_ms,
        );
    }
    out.push_str("</tbody></table></section>\n");
    out
}

/// One bar per turn, grouped by scenario, red when the turn failed a check.
fn latency_chart(report: &RunReport) -> String {
    let bars: Vec<(usize, usize, f64, bool)> = report
        .scenarios
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.turns
                .iter()
                .filter_map(move |t| t.observed.as_ref().map(|o| (i, t.turn, o.latency_ms, t.failures.is_empty())))
        })
        .collect();
    let max = bars.iter().map(|b| b.2).fold(0.0, f64::max).max(1.0);
    let (left, top, h) = (50.0, 10.0, 220.0);
    let step = 6.0_f64.max(900.0 / bars.len().max(1) as f64).min(24.0);
    let width = left + step * bars.len() as f64 + 20.0;
    let mut out = String::from("<section id=\"latency\"><h2>Latency per turn</h2>");
    let _ = write!(
        out,
        "<svg id=\"latency-chart\" width=\"{width:.0}\" height=\"{:.0}\" viewBox=\"0 0 {width:.0} {:.0}\" role=\"img\" aria-label=\"latency of every turn\">",
        top + h + 40.0,
        top + h + 40.0
    );
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let y = top + h - h * f64::from(k) / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{left}\" x2=\"{:.0}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0} ms</text>",
            width - 10.0,
            left - 4.0,
            y + 4.0
        );
    }
    let mut last = usize::MAX;
    for (j, (i, turn, ms, ok)) in bars.iter().enumerate() {
        let x = left + step * j as f64;
        let bh = (h * ms / max).max(1.0);
        if *i != last {
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{:.0}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.0}\">{}</text>",
                top + h + 4.0,
                x + 1.0,
                top + h + 16.0,
                i + 1
            );
            last = *i;
        }
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{}: turn {turn}, {ms:.1} ms</title></rect>",
            x + 1.0,
            top + h - bh,
            (step - 2.0).max(1.0),
            if *ok { "#4a7fb5" } else { "#d64545" },
            esc(&report.scenarios[*i].name)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{left}\" y=\"{:.0}\">scenario number (each bar is one turn; red: the turn failed a check)</text></svg></section>",
        top + h + 34.0
    );
    out
}

fn failures(report: &RunReport) -> String {
    let mut out = String::from("<section id=\"failures\"><h2>Failures</h2>\n");
    let failed: Vec<(usize, &ScenarioOutcome)> =
        report.scenarios.iter().enumerate().filter(|(_, s)| !s.passed).collect();
    if failed.is_empty() {
        out.push_str("<p class=\"note\">Every scenario passed.</p>");
    }
    for (i, s) in failed {
        let _ = write!(
            out,
            "<article class=\"failure\" id=\"{}\"><h3>{}. {}</h3><p class=\"note\">{}</p>\
<table class=\"turns\"><thead><tr><th>turn</th><th>input</th><th>replies</th><th>observed</th><th>latency</th><th>failed checks</th></tr></thead><tbody>",
            anchor(i),
            i + 1,
            esc(&s.name),
            esc(&s.file)
        );
        for t in &s.turns {
            let (replies, observed, latency) = match &t.observed {
                Some(o) => (
                    o.replies.iter().map(|r| format!("<pre>{}</pre>", esc(r))).collect::<String>(),
                    format!(
                        "intent {}<br>handler {}<br>tools [{}]<br>handoff {}<br>interrupts [{}]<br>slots {}",
                        esc(o.intent.as_deref().unwrap_or("-")),
                        esc(o.handler.as_deref().unwrap_or("-")),
                        esc(&o.tool_names().join(", ")),
                        esc(&o.handoff_status),
                        esc(&o.interrupts.join(", ")),
                        esc(&o.slots.to_string())
                    ),
                    format!("{:.1} ms", o.latency_ms),
                ),
                None => (String::new(), String::new(), String::new()),
            };
            let checks: String = t.failures.iter().map(|f| format!("<li>{}</li>", esc(f))).collect();
            let _ = write!(
                out,
                "<tr class=\"{}\"><td class=\"num\">{}</td><td>{}</td><td>{replies}</td><td>{observed}</td><td class=\"num\">{latency}</td><td><ul class=\"f\">{checks}</ul></td></tr>",
                if t.failures.is_empty() { "passed" } else { "failed" },
                t.turn,
                esc(&t.input)
            );
        }
        out.push_str("</tbody></table></article>\n");
    }
    out.push_str("</section>\n");
    out
}

/// Renders a replay report: the summary figures, a row per conversation, and every changed
/// turn's changes (the reply as a line diff) and cassette misses.
pub fn replay_html(report: &crate::replay::ReplayReport, title: &str) -> String {
    let sum = report.summary();
    let mut out = String::with_capacity(32 << 10);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>{CSS}</style></head>\n<body><h1>{t}</h1>\n",
        t = esc(title)
    );
    out.push_str("<section id=\"summary\"><h2>Summary</h2><table class=\"kv\">");
    for (k, v) in [
        ("conversations", sum.conversations),
        ("turns", sum.turns),
        ("changed turns", sum.changed_turns),
        ("cassette misses", sum.cassette_misses),
    ] {
        let _ = write!(out, "<tr><th>{k}</th><td class=\"num\">{v}</td></tr>");
    }
    out.push_str("</table></section>\n<section id=\"conversations\"><h2>Conversations</h2><table>");
    out.push_str("<tr><th>conversation</th><th>turns</th><th>changed</th><th>misses</th></tr>");
    for c in &report.conversations {
        let changed = c.changed_turns();
        let misses: usize = c.turns.iter().map(|t| t.misses.len()).sum();
        let _ = write!(
            out,
            "<tr{cls}><td>{id}</td><td class=\"num\">{}</td><td class=\"num\">{changed}</td><td class=\"num\">{misses}</td></tr>",
            c.recorded_turns,
            cls = if changed + misses > 0 { " class=\"failed\"" } else { "" },
            id = esc(&c.conversation_id),
        );
    }
    out.push_str("</table></section>\n<section id=\"changes\"><h2>Changes</h2>");
    for c in
        report.conversations.iter().filter(|c| c.changed_turns() > 0 || c.turns.iter().any(|t| !t.misses.is_empty()))
    {
        let _ = write!(out, "<h3>{}</h3><table class=\"turns\">", esc(&c.conversation_id));
        out.push_str("<tr><th>turn</th><th>input</th><th>what</th><th>recorded</th><th>replayed</th></tr>");
        for t in &c.turns {
            let input = esc(&t.input);
            if let Some(e) = &t.error {
                let _ = write!(
                    out,
                    "<tr class=\"failed\"><td>{}</td><td>{input}</td><td>error</td><td colspan=\"2\">{}</td></tr>",
                    t.turn,
                    esc(e)
                );
            }
            for ch in &t.changes {
                // A reply's line diff spans both columns (`-` recorded, `+` replayed).
                let cells = match &ch.diff {
                    Some(d) => format!("<td colspan=\"2\" class=\"diff\"><pre>{}</pre></td>", esc(d)),
                    None => format!(
                        "<td><pre>{}</pre></td><td><pre>{}</pre></td>",
                        esc(&ch.recorded.to_string()),
                        esc(&ch.replayed.to_string())
                    ),
                };
                let _ = write!(out, "<tr><td>{}</td><td>{input}</td><td>{}</td>{cells}</tr>", t.turn, esc(&ch.field));
            }
            for m in &t.misses {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{input}</td><td>{} miss: {}</td><td colspan=\"2\">{}</td></tr>",
                    t.turn,
                    esc(&m.kind),
                    esc(&m.name),
                    esc(&m.outcome)
                );
            }
        }
        out.push_str("</table>");
    }
    out.push_str("</section></body></html>\n");
    out
}
