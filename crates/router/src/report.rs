//! The intent evaluation report as one self-contained HTML page: summary figures, a per-intent
//! F1 table, a heat map of the most confused pairs, a reliability diagram, the out-of-scope
//! trade-off curve and a latency histogram, all drawn as inline SVG (no script, no CDN, no
//! external resource of any kind).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::eval::{Evaluation, Item, per_label};

/// Most confused (gold, predicted) pairs the heat map shows.
const CONFUSED_PAIRS: usize = 20;
/// Bins of the reliability diagram.
const RELIABILITY_BINS: usize = 10;
/// Bins of the latency histogram.
const LATENCY_BINS: usize = 24;

/// Renders the report. `title` heads the page (e.g. the model and data set names).
pub fn html(eval: &Evaluation, title: &str) -> String {
    let r = &eval.report;
    let mut out = String::with_capacity(64 << 10);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>{css}</style></head>\n<body><h1>{t}</h1>\n",
        t = esc(title),
        css = CSS
    );
    out.push_str("<section id=\"summary\"><h2>Summary</h2><table class=\"kv\">");
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    let opt = |x: Option<f64>| x.map_or_else(|| "n/a (no out-of-scope items)".to_owned(), pct);
    let rows: [(&str, String); 11] = [
        ("utterances", r.n.to_string()),
        ("accuracy", pct(r.accuracy)),
        ("macro-F1", format!("{:.4}", r.macro_f1)),
        ("in-scope accuracy", pct(r.in_scope_accuracy)),
        ("in-scope rejection rate", pct(r.in_scope_rejection_rate)),
        ("top-1 accuracy (closed set)", pct(r.top1_accuracy)),
        ("out-of-scope recall", opt(r.oos_recall)),
        ("out-of-scope precision", opt(r.oos_precision)),
        ("expected calibration error (15 bins)", format!("{:.4}", r.ece)),
        ("clarify rate", pct(r.clarify_rate)),
        ("latency p50 / p99", format!("{:.2} ms / {:.2} ms", r.latency_ms.p50, r.latency_ms.p99)),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    let th = &eval.thresholds;
    let oos_rule = match th.neighbours {
        Some(n) => format!(
            "out of scope below a score of {:.3} (standardised log top confidence + {:.1} × standardised mean cosine to the {} nearest in-scope training examples), neighbour vote weight {:.2}",
            n.oos_score, n.sim_weight, n.sim_k, n.vote_weight
        ),
        None => format!("out of scope below {:.3}", th.oos),
    };
    let _ = writeln!(
        out,
        "</table><p class=\"note\">Thresholds: {}, clarify below a margin of {:.3}, temperature {:.3}.</p></section>",
        esc(&oos_rule),
        th.clarify_margin,
        th.temperature
    );
    out.push_str(&reliability_section(eval));
    out.push_str(&oos_section(eval));
    out.push_str(&confusion_section(eval));
    out.push_str(&latency_section(&eval.items));
    out.push_str(&per_intent_section(eval));
    out.push_str("</body></html>\n");
    out
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}\
table.kv th{font-weight:normal;color:#555}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.bar{display:inline-block;height:10px;background:#4a7fb5}.note{color:#666}\
svg text{font:11px system-ui,sans-serif;fill:#333}";

/// Escapes text for HTML and SVG (also used by the other self-contained reports).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A plot area: `w`×`h` pixels with margins, mapping data ranges to pixels.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        let span = (self.x.1 - self.x.0).max(f64::EPSILON);
        self.left + (x - self.x.0) / span * (self.w - self.left - 10.0)
    }
    fn py(&self, y: f64) -> f64 {
        let span = (self.y.1 - self.y.0).max(f64::EPSILON);
        self.h - self.bottom - (y - self.y.0) / span * (self.h - self.bottom - 10.0)
    }
    /// Opens the SVG and draws the axes with `ticks` labelled ticks on each, and axis titles.
    fn open(&self, out: &mut String, label: &str, xt: &str, yt: &str, ticks: usize) {
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{}\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\">",
            esc(label),
            self.w,
            self.h,
            self.w,
            self.h
        );
        let (x0, y0, x1, y1) = (self.px(self.x.0), self.py(self.y.0), self.px(self.x.1), self.py(self.y.1));
        let _ = write!(out, "<path d=\"M{x0:.1} {y1:.1}V{y0:.1}H{x1:.1}\" fill=\"none\" stroke=\"#888\"/>");
        for i in 0..=ticks {
            let f = i as f64 / ticks as f64;
            let xv = self.x.0 + f * (self.x.1 - self.x.0);
            let yv = self.y.0 + f * (self.y.1 - self.y.0);
            let (px, py) = (self.px(xv), self.py(yv));
            let _ = write!(
                out,
                "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                y0 + 14.0,
                tick(xv),
                self.left - 4.0,
                py + 4.0,
                tick(yv)
            );
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text transform=\"translate(12 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            (x0 + x1) / 2.0,
            self.h - 4.0,
            esc(xt),
            (y0 + y1) / 2.0,
            esc(yt)
        );
    }
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

fn reliability_section(eval: &Evaluation) -> String {
    let mut count = [0usize; RELIABILITY_BINS];
    let mut right = [0usize; RELIABILITY_BINS];
    let mut conf = [0f64; RELIABILITY_BINS];
    for i in eval.items.iter().filter(|i| i.gold != eval.oos_label && i.top_intent.is_some()) {
        let b = ((f64::from(i.top_score.clamp(0.0, 1.0)) * RELIABILITY_BINS as f64) as usize).min(RELIABILITY_BINS - 1);
        count[b] += 1;
        conf[b] += f64::from(i.top_score);
        right[b] += usize::from(i.top_intent.as_deref() == Some(i.gold.as_str()));
    }
    let f = Frame { w: 420.0, h: 360.0, left: 48.0, bottom: 36.0, x: (0.0, 1.0), y: (0.0, 1.0) };
    let mut out = String::from(
        "<section id=\"reliability\"><h2>Reliability diagram</h2><p class=\"note\">Accuracy of the top intent per confidence bin (in-scope items); the diagonal is perfect calibration, numbers are items per bin.</p>",
    );
    f.open(&mut out, "reliability diagram", "confidence", "accuracy", 5);
    let _ = write!(
        out,
        "<path d=\"M{:.1} {:.1}L{:.1} {:.1}\" stroke=\"#bbb\" stroke-dasharray=\"4 3\"/>",
        f.px(0.0),
        f.py(0.0),
        f.px(1.0),
        f.py(1.0)
    );
    let width = 1.0 / RELIABILITY_BINS as f64;
    for b in 0..RELIABILITY_BINS {
        if count[b] == 0 {
            continue;
        }
        let acc = right[b] as f64 / count[b] as f64;
        let lo = b as f64 * width;
        let (x0, x1, y0, y1) = (f.px(lo) + 1.0, f.px(lo + width) - 1.0, f.py(0.0), f.py(acc));
        let _ = write!(
            out,
            "<rect class=\"bin\" x=\"{x0:.1}\" y=\"{y1:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7fb5\"><title>confidence {:.2}–{:.2}: accuracy {:.3}, mean confidence {:.3}, {} items</title></rect><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x1 - x0,
            (y0 - y1).max(0.0),
            lo,
            lo + width,
            acc,
            conf[b] / count[b] as f64,
            count[b],
            (x0 + x1) / 2.0,
            y1 - 3.0,
            count[b]
        );
    }
    out.push_str("</svg></section>\n");
    out
}

/// Out-of-scope trade-off: sweeping the rejection threshold over the top score, the in-scope
/// rejection rate (x) against the out-of-scope recall (y). Without out-of-scope items, the
/// in-scope rejection rate against the threshold.
fn oos_section(eval: &Evaluation) -> String {
    let mut ins: Vec<f64> = Vec::new();
    let mut oos: Vec<f64> = Vec::new();
    for i in &eval.items {
        if i.gold == eval.oos_label { oos.push(f64::from(i.top_score)) } else { ins.push(f64::from(i.top_score)) }
    }
    ins.sort_by(f64::total_cmp);
    oos.sort_by(f64::total_cmp);
    let below =
        |v: &[f64], t: f64| if v.is_empty() { 0.0 } else { v.partition_point(|&s| s < t) as f64 / v.len() as f64 };
    let thresholds: Vec<f64> = (0..=200).map(|k| f64::from(k) / 200.0).collect();
    let current = f64::from(eval.thresholds.oos);
    let mut out = String::from("<section id=\"oos\"><h2>Out-of-scope trade-off</h2>");
    let f;
    let points: Vec<(f64, f64)>;
    let marker;
    if oos.is_empty() {
        out.push_str("<p class=\"note\">The data has no out-of-scope items: the in-scope rejection rate as the threshold on the top confidence rises.</p>");
        f = Frame { w: 520.0, h: 340.0, left: 48.0, bottom: 36.0, x: (0.0, 1.0), y: (0.0, 1.0) };
        f.open(&mut out, "in-scope rejection rate by threshold", "threshold", "in-scope rejected", 5);
        points = thresholds.iter().map(|&t| (t, below(&ins, t))).collect();
        marker = (current, below(&ins, current));
    } else {
        out.push_str(if eval.thresholds.neighbours.is_some() {
            "<p class=\"note\">Each point is a threshold on the top confidence alone: the fraction of in-scope items it rejects (x) and of out-of-scope items it catches (y). This router decides on a combined score (confidence and similarity to its training examples), so its operating point is not on this curve; the dot marks a threshold of 0.</p>"
        } else {
            "<p class=\"note\">Each point is a threshold on the top confidence: the fraction of in-scope items it rejects (x) and of out-of-scope items it catches (y). The dot is the router's fitted threshold.</p>"
        });
        let xmax = thresholds.iter().map(|&t| below(&ins, t)).fold(0.05f64, f64::max).min(1.0);
        f = Frame { w: 520.0, h: 340.0, left: 48.0, bottom: 36.0, x: (0.0, xmax), y: (0.0, 1.0) };
        f.open(&mut out, "out-of-scope trade-off", "in-scope rejection rate", "out-of-scope recall", 5);
        points = thresholds.iter().map(|&t| (below(&ins, t), below(&oos, t))).collect();
        marker = (below(&ins, current), below(&oos, current));
    }
    let mut d = String::new();
    for (k, (x, y)) in points.iter().enumerate() {
        let _ = write!(d, "{}{:.1} {:.1}", if k == 0 { "M" } else { "L" }, f.px(*x), f.py(*y));
    }
    let _ = writeln!(
        out,
        "<path class=\"curve\" d=\"{d}\" fill=\"none\" stroke=\"#4a7fb5\" stroke-width=\"2\"/><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#c0392b\"><title>fitted threshold {current:.3}: ({:.3}, {:.3})</title></circle></svg></section>",
        f.px(marker.0),
        f.py(marker.1),
        marker.0,
        marker.1
    );
    out
}

fn confusion_section(eval: &Evaluation) -> String {
    let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for i in eval.items.iter().filter(|i| i.gold != i.pred) {
        *pairs.entry((i.gold.as_str(), i.pred.as_str())).or_default() += 1;
    }
    let mut top: Vec<((&str, &str), usize)> = pairs.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(CONFUSED_PAIRS);
    let mut out = String::from("<section id=\"confusion\"><h2>Most confused pairs</h2>");
    if top.is_empty() {
        out.push_str("<p>No errors.</p></section>\n");
        return out;
    }
    let labels: Vec<&str> = top.iter().flat_map(|((g, p), _)| [*g, *p]).collect::<BTreeSet<_>>().into_iter().collect();
    let mut cells: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for i in &eval.items {
        let (g, p) = (i.gold.as_str(), i.pred.as_str());
        if labels.contains(&g) && labels.contains(&p) {
            *cells.entry((g, p)).or_default() += 1;
        }
    }
    let max_off = top.first().map_or(1, |t| t.1).max(1) as f64;
    let cell = 22.0;
    let margin = 8.0 * labels.iter().map(|l| l.chars().count()).max().unwrap_or(4) as f64 + 12.0;
    let size = margin + cell * labels.len() as f64 + 10.0;
    let _ = write!(
        out,
        "<p class=\"note\">Rows: gold intent; columns: predicted. Only the intents of the {} most frequent confusions; off-diagonal shading is relative to the most frequent one ({} items); the diagonal is grey.</p><svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"confusion heat map\" width=\"{size:.0}\" height=\"{size:.0}\" viewBox=\"0 0 {size:.0} {size:.0}\">",
        top.len(),
        max_off
    );
    for (k, l) in labels.iter().enumerate() {
        let c = margin + cell * k as f64 + cell / 2.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><text transform=\"translate({:.1} {:.1}) rotate(-90)\" text-anchor=\"start\">{}</text>",
            margin - 4.0,
            c + 4.0,
            esc(l),
            c + 4.0,
            margin - 4.0,
            esc(l)
        );
    }
    for (r, g) in labels.iter().enumerate() {
        for (c, p) in labels.iter().enumerate() {
            let n = cells.get(&(*g, *p)).copied().unwrap_or(0);
            let (x, y) = (margin + cell * c as f64, margin + cell * r as f64);
            let fill = if g == p {
                "#e8e8e8".to_owned()
            } else {
                let a = n as f64 / max_off;
                format!("rgba(192,57,43,{a:.3})")
            };
            let _ = write!(
                out,
                "<rect class=\"cell\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"{fill}\" stroke=\"#fff\"><title>{} → {}: {n}</title></rect>",
                esc(g),
                esc(p)
            );
            if n > 0 {
                let _ = write!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{n}</text>",
                    x + cell / 2.0,
                    y + cell / 2.0 + 4.0
                );
            }
        }
    }
    out.push_str("</svg><table><tr><th>gold</th><th>predicted</th><th>items</th></tr>");
    for ((g, p), n) in &top {
        let _ = write!(out, "<tr><td>{}</td><td>{}</td><td class=\"num\">{n}</td></tr>", esc(g), esc(p));
    }
    out.push_str("</table></section>\n");
    out
}

fn latency_section(items: &[Item]) -> String {
    let mut out = String::from("<section id=\"latency\"><h2>Latency</h2>");
    if items.is_empty() {
        out.push_str("<p>No items.</p></section>\n");
        return out;
    }
    let mut lat: Vec<f64> = items.iter().map(|i| i.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    // The top 1% would stretch the axis: the last bin collects everything above the p99.
    let hi = crate::eval::percentile(&lat, 0.99).max(lat[0] + 1e-3);
    let lo = lat[0];
    let width = (hi - lo) / LATENCY_BINS as f64;
    let mut bins = [0usize; LATENCY_BINS];
    for &v in &lat {
        bins[(((v - lo) / width) as usize).min(LATENCY_BINS - 1)] += 1;
    }
    let ymax = bins.iter().copied().max().unwrap_or(1).max(1) as f64;
    let f = Frame { w: 560.0, h: 300.0, left: 52.0, bottom: 36.0, x: (lo, hi), y: (0.0, ymax) };
    let _ = write!(
        out,
        "<p class=\"note\">Time to route one utterance alone ({} utterances; the last bar holds everything above the p99, {hi:.2} ms).</p>",
        lat.len()
    );
    f.open(&mut out, "latency histogram", "milliseconds", "utterances", 4);
    for (b, &n) in bins.iter().enumerate() {
        let x0 = lo + b as f64 * width;
        let (px0, px1, py) = (f.px(x0) + 0.5, f.px(x0 + width) - 0.5, f.py(n as f64));
        let _ = write!(
            out,
            "<rect class=\"bin\" x=\"{px0:.1}\" y=\"{py:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7fb5\"><title>{x0:.2}–{:.2} ms: {n}</title></rect>",
            (px1 - px0).max(0.5),
            f.py(0.0) - py,
            x0 + width
        );
    }
    out.push_str("</svg></section>\n");
    out
}

fn per_intent_section(eval: &Evaluation) -> String {
    let gold: Vec<String> = eval.items.iter().map(|i| i.gold.clone()).collect();
    let pred: Vec<String> = eval.items.iter().map(|i| i.pred.clone()).collect();
    let mut scores = per_label(&gold, &pred);
    scores.sort_by(|a, b| a.f1.total_cmp(&b.f1).then_with(|| a.label.cmp(&b.label)));
    let mut out = String::from(
        "<section id=\"per-intent\"><h2>Per intent</h2><p class=\"note\">Worst F1 first.</p><table><tr><th>intent</th><th>support</th><th>precision</th><th>recall</th><th>F1</th><th></th></tr>",
    );
    for s in &scores {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td><td><span class=\"bar\" style=\"width:{:.0}px\"></span></td></tr>",
            esc(&s.label),
            s.support,
            s.precision,
            s.recall,
            s.f1,
            s.f1 * 120.0
        );
    }
    out.push_str("</table></section>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Thresholds;
    use crate::eval::summarize;

    fn item(gold: &str, pred: &str, top: &str, score: f32, ms: f64) -> Item {
        Item {
            gold: gold.into(),
            pred: pred.into(),
            top_intent: Some(top.into()),
            top_score: score,
            clarify: false,
            latency_ms: ms,
        }
    }

    fn evaluation(items: Vec<Item>) -> Evaluation {
        Evaluation {
            report: summarize(&items, "oos"),
            items,
            oos_label: "oos".into(),
            thresholds: Thresholds {
                oos: 0.4,
                clarify_margin: 0.05,
                prototype: 0.6,
                temperature: 1.3,
                neighbours: None,
            },
        }
    }

    fn sample() -> Evaluation {
        let mut items = Vec::new();
        for k in 0..40 {
            let s = 0.3 + k as f32 / 60.0;
            items.push(item("card_lost", "card_lost", "card_lost", s, 1.0 + f64::from(k) / 10.0));
        }
        for _ in 0..7 {
            items.push(item("card_lost", "card_stolen", "card_stolen", 0.55, 2.0));
        }
        items.push(item("card_stolen", "card_lost", "card_lost", 0.5, 2.5));
        items.push(item("oos", "oos", "card_lost", 0.2, 1.5));
        items.push(item("oos", "card_lost", "card_lost", 0.7, 1.5));
        items.push(item("card_stolen", "oos", "card_stolen", 0.35, 40.0));
        evaluation(items)
    }

    #[test]
    fn report_has_every_section_and_nothing_external() {
        let page = html(&sample(), "banking <test> & co");
        for id in ["summary", "reliability", "oos", "confusion", "latency", "per-intent"] {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "missing {id}");
        }
        assert!(page.contains("banking &lt;test&gt; &amp; co"), "the title is escaped");
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
        assert_eq!(page.matches("<svg").count(), 4, "four plots");
        // Self-contained: no script, no linked resource, no address but the SVG namespace.
        assert!(!page.contains("<script") && !page.contains("<link") && !page.contains(" src="));
        assert_eq!(page.matches("http").count(), page.matches("http://www.w3.org/2000/svg").count());
        // The most confused pair is listed and drawn with its count.
        assert!(page.contains("card_lost → card_stolen: 7"));
        assert!(page.contains("<td>card_lost</td><td>card_stolen</td><td class=\"num\">7</td>"));
    }

    #[test]
    fn reliability_bins_count_in_scope_items_only() {
        let page = html(&sample(), "t");
        let rel = &page[page.find("id=\"reliability\"").unwrap_or(0)..page.find("id=\"oos\"").unwrap_or(0)];
        let total: usize = rel
            .split("items</title>")
            .filter_map(|s| s.rsplit(", ").next())
            .filter_map(|s| s.trim().parse::<usize>().ok())
            .sum();
        assert_eq!(total, 49, "the 49 in-scope items, not the 2 out-of-scope ones: {total}");
    }

    #[test]
    fn oos_curve_marks_the_fitted_threshold() {
        let page = html(&sample(), "t");
        // With threshold 0.4: in-scope scores below 0.4 are 6 of the 40 + the 0.35 one = 7 of 49,
        // out-of-scope below 0.4: 1 of 2.
        assert!(page.contains(&format!("({:.3}, {:.3})", 7.0 / 49.0, 0.5)), "{page}");
        let no_oos = evaluation(vec![item("a", "a", "a", 0.9, 1.0), item("b", "a", "a", 0.3, 1.0)]);
        let page = html(&no_oos, "t");
        assert!(page.contains("has no out-of-scope items"));
    }

    #[test]
    fn empty_and_perfect_evaluations_render() {
        let page = html(&evaluation(Vec::new()), "empty");
        assert!(page.contains("No items.") && page.contains("No errors."));
        let page = html(&evaluation(vec![item("a", "a", "a", 0.9, 1.0)]), "perfect");
        assert!(page.contains("No errors."));
    }
}
