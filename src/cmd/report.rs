//! `switchboard report`: daily containment, handoff, out-of-scope, cost and feedback summaries
//! read from the server's store (the SQLite file of `serve`'s data directory, opened read-only).
//!
//! What it reads and how it counts (all days are UTC):
//!
//! * **turns**: runs of kind `message` created that day; *out-of-scope* and *clarify* are the
//!   turns whose reply names that handler (`result.reply.handler`), and their rates are shares of
//!   the turns that day.
//! * **conversations**: conversations whose first `message` run is that day; a conversation is
//!   **escalated** when any of its runs (up to the end of the report) writes a `handoff` whose
//!   reason is not `approval` (a colleague signing off one tool call keeps the assistant in
//!   charge). **Containment** = 1 − escalated / conversations: the share of that day's
//!   conversations resolved without a human. This is the same definition as the
//!   `switchboard_conversations_escalated_total` / `switchboard_conversations_total` metrics.
//! * **handoffs**: handoff requests queued that day, by reason: distinct (conversation, reason,
//!   queue time) in the runs' `handoff` writes, so a request written again while it waits is one
//!   request, and an approval that becomes a real handoff counts under its new reason.
//! * **cost**: `switchboard.cost.usd` of the LLM spans of the day's turns when the store has a
//!   span table; otherwise reported as not recorded (never as zero).
//! * **feedback**: ratings received that day (count, mean, by rating).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

const DAY_MS: i64 = 86_400_000;

/// `switchboard report`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// Data directory of `serve` (overrides the config and SWITCHBOARD_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `serve`'s TOML config file (its data directory is read).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Days to report, ending with `--until`.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=366))]
    days: u32,
    /// Last day reported, YYYY-MM-DD (UTC); default today.
    #[arg(long)]
    until: Option<String>,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// One day's figures.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub(crate) struct Day {
    /// YYYY-MM-DD.
    pub(crate) day: String,
    pub(crate) conversations: u64,
    pub(crate) escalated: u64,
    /// 1 − escalated / conversations; `None` without conversations.
    pub(crate) containment: Option<f64>,
    pub(crate) turns: u64,
    pub(crate) failed_turns: u64,
    pub(crate) out_of_scope: u64,
    pub(crate) out_of_scope_rate: Option<f64>,
    pub(crate) clarify: u64,
    pub(crate) clarify_rate: Option<f64>,
    /// Handoff requests by reason (approvals included, under `approval`).
    pub(crate) handoffs: BTreeMap<String, u64>,
    /// US dollars; `None` when the store records no LLM spans.
    pub(crate) cost_usd: Option<f64>,
    pub(crate) feedback: u64,
    pub(crate) mean_rating: Option<f64>,
    pub(crate) ratings: BTreeMap<i64, u64>,
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn day_name(day: i64) -> String {
    // The date part of the RFC 3339 time of the day's first millisecond.
    switchboard_interop::a2a::wire::rfc3339(day * DAY_MS)[..10].to_string()
}

/// Parses YYYY-MM-DD into a day number.
fn parse_day(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("--until {s:?}: expected a date as YYYY-MM-DD");
    let mut it = s.trim().splitn(3, '-');
    let (y, m, d) = (it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (i64, u32, u32) =
        (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return Err(bad());
    }
    let day = days_from_civil(y, m, d);
    // A day that does not exist (30 February) comes back as another date.
    if day_name(day) != format!("{y:04}-{m:02}-{d:02}") {
        return Err(bad());
    }
    Ok(day)
}

fn rate(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// Reads the report of days `first..=last` (day numbers) from a store's pool.
pub(crate) async fn read(pool: &SqlitePool, first: i64, last: i64) -> anyhow::Result<Vec<Day>> {
    let (from_ms, to_ms) = (first * DAY_MS, (last + 1) * DAY_MS);
    let index = |ms: i64| -> Option<usize> {
        let d = ms.div_euclid(DAY_MS);
        (first..=last).contains(&d).then(|| (d - first) as usize)
    };
    let mut days: Vec<Day> = (first..=last).map(|d| Day { day: day_name(d), ..Day::default() }).collect();

    // Turns and their handlers.
    let rows = sqlx::query(
        "SELECT status, result, created_at FROM srv_runs WHERE kind = 'message' AND created_at >= ? AND created_at < ?",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await
    .context("reading runs")?;
    for r in rows {
        let Some(i) = index(r.try_get("created_at")?) else { continue };
        let day = &mut days[i];
        day.turns += 1;
        let status: String = r.try_get("status")?;
        if status == "failed" {
            day.failed_turns += 1;
        }
        let result: Option<String> = r.try_get("result")?;
        let handler = result
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["reply"]["handler"].as_str().map(str::to_string));
        match handler.as_deref() {
            Some("out_of_scope") => day.out_of_scope += 1,
            Some("clarify") => day.clarify += 1,
            _ => {}
        }
    }

    // Conversations by the day of their first turn, and which were ever escalated.
    let rows = sqlx::query(
        "SELECT conversation_id, MIN(created_at) AS first FROM srv_runs WHERE kind = 'message' \
         GROUP BY conversation_id HAVING MIN(created_at) >= ? AND MIN(created_at) < ?",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await
    .context("reading conversations")?;
    let mut started: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        if let Some(i) = index(r.try_get("first")?) {
            started.insert(r.try_get("conversation_id")?, i);
        }
    }
    let rows = sqlx::query(
        "SELECT r.conversation_id, e.data FROM srv_run_events e JOIN srv_runs r ON r.id = e.run_id \
         WHERE e.event = 'update' AND r.created_at < ? AND instr(e.data, '\"handoff\"') > 0",
    )
    .bind(to_ms)
    .fetch_all(pool)
    .await
    .context("reading handoff events")?;
    let mut escalated: BTreeSet<String> = BTreeSet::new();
    let mut requests: BTreeSet<(String, String, i64)> = BTreeSet::new();
    for r in rows {
        let conv: String = r.try_get("conversation_id")?;
        let data: String = r.try_get("data")?;
        let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
        let h = &v["update"]["handoff"];
        let (Some(reason), Some(queued)) = (h["reason"].as_str(), h["queued_at_ms"].as_i64()) else { continue };
        if reason != "approval" {
            escalated.insert(conv.clone());
        }
        requests.insert((conv, reason.to_string(), queued));
    }
    for (conv, i) in &started {
        days[*i].conversations += 1;
        if escalated.contains(conv) {
            days[*i].escalated += 1;
        }
    }
    for (_, reason, queued) in requests {
        if let Some(i) = index(queued) {
            *days[i].handoffs.entry(reason).or_default() += 1;
        }
    }

    // Cost, when spans are stored.
    let has_spans: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'srv_spans'")
            .fetch_one(pool)
            .await
            .context("reading the schema")?;
    if has_spans > 0 {
        for d in &mut days {
            d.cost_usd = Some(0.0);
        }
        let rows = sqlx::query(
            "SELECT start_ms, cost_usd FROM srv_spans WHERE cost_usd IS NOT NULL AND start_ms >= ? AND start_ms < ?",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await
        .context("reading spans")?;
        for r in rows {
            if let Some(i) = index(r.try_get("start_ms")?) {
                let c: f64 = r.try_get("cost_usd")?;
                *days[i].cost_usd.get_or_insert(0.0) += c;
            }
        }
    }

    // Feedback.
    let rows = sqlx::query("SELECT rating, created_at FROM srv_feedback WHERE created_at >= ? AND created_at < ?")
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await
        .context("reading feedback")?;
    let mut sums = vec![0i64; days.len()];
    for r in rows {
        let Some(i) = index(r.try_get("created_at")?) else { continue };
        let rating: i64 = r.try_get("rating")?;
        days[i].feedback += 1;
        *days[i].ratings.entry(rating).or_default() += 1;
        sums[i] += rating;
    }
    for (d, sum) in days.iter_mut().zip(sums) {
        d.containment = rate(d.conversations - d.escalated, d.conversations);
        d.out_of_scope_rate = rate(d.out_of_scope, d.turns);
        d.clarify_rate = rate(d.clarify, d.turns);
        d.mean_rating = (d.feedback > 0).then(|| sum as f64 / d.feedback as f64);
    }
    Ok(days)
}

/// The sum of the days (rates recomputed from the sums).
pub(crate) fn total(days: &[Day]) -> Day {
    let mut t = Day { day: "total".into(), ..Day::default() };
    let mut rating_sum = 0.0;
    for d in days {
        t.conversations += d.conversations;
        t.escalated += d.escalated;
        t.turns += d.turns;
        t.failed_turns += d.failed_turns;
        t.out_of_scope += d.out_of_scope;
        t.clarify += d.clarify;
        for (k, v) in &d.handoffs {
            *t.handoffs.entry(k.clone()).or_default() += v;
        }
        if let Some(c) = d.cost_usd {
            *t.cost_usd.get_or_insert(0.0) += c;
        }
        t.feedback += d.feedback;
        rating_sum += d.mean_rating.unwrap_or(0.0) * d.feedback as f64;
        for (k, v) in &d.ratings {
            *t.ratings.entry(*k).or_default() += v;
        }
    }
    t.containment = rate(t.conversations - t.escalated, t.conversations);
    t.out_of_scope_rate = rate(t.out_of_scope, t.turns);
    t.clarify_rate = rate(t.clarify, t.turns);
    t.mean_rating = (t.feedback > 0).then(|| rating_sum / t.feedback as f64);
    t
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// The table printed without `--json`.
pub(crate) fn table(days: &[Day]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10}  {:>5}  {:>9}  {:>11}  {:>5}  {:>6}  {:>6}  {:>7}  {:>8}  {:>9}  {:>8}  {:>6}",
        "day",
        "convs",
        "escalated",
        "containment",
        "turns",
        "failed",
        "oos",
        "clarify",
        "handoffs",
        "cost_usd",
        "feedback",
        "rating"
    );
    let t = total(days);
    for d in days.iter().chain(std::iter::once(&t)) {
        let _ = writeln!(
            out,
            "{:<10}  {:>5}  {:>9}  {:>11}  {:>5}  {:>6}  {:>6}  {:>7}  {:>8}  {:>9}  {:>8}  {:>6}",
            d.day,
            d.conversations,
            d.escalated,
            pct(d.containment),
            d.turns,
            d.failed_turns,
            pct(d.out_of_scope_rate),
            pct(d.clarify_rate),
            d.handoffs.values().sum::<u64>(),
            d.cost_usd.map_or_else(|| "n/a".into(), |c| format!("{c:.4}")),
            d.feedback,
            d.mean_rating.map_or_else(|| "-".into(), |r| format!("{r:.2}")),
        );
    }
    if !t.handoffs.is_empty() {
        let reasons: Vec<String> = t.handoffs.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "handoffs by reason: {}", reasons.join(", "));
    }
    if t.cost_usd.is_none() {
        let _ = writeln!(out, "cost: not recorded (the store has no LLM spans)");
    }
    out
}

async fn open(path: &Path) -> anyhow::Result<SqlitePool> {
    if !path.exists() {
        anyhow::bail!("no store at {} (run `switchboard serve` with this data directory first)", path.display());
    }
    let opts =
        SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(std::time::Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(opts)
        .await
        .with_context(|| format!("opening {}", path.display()))
}

pub(crate) fn run(args: ReportArgs) -> anyhow::Result<()> {
    let config = super::serve::load(args.config.as_deref(), None, args.data_dir)?;
    let last = match &args.until {
        Some(s) => parse_day(s)?,
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            now.div_euclid(DAY_MS)
        }
    };
    let first = last - i64::from(args.days) + 1;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let days = rt.block_on(async {
        let pool = open(&config.db_path()).await?;
        let days = read(&pool, first, last).await;
        pool.close().await;
        days
    })?;
    if args.json {
        let out = json!({"from": day_name(first), "to": day_name(last), "days": days, "total": total(&days)});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(&days));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use switchboard_store::records::{ConversationRecord, EventRecord, FeedbackRecord, RunEnd, RunRecord};
    use switchboard_store::{Records, SqliteConfig, SqliteStore};

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(parse_day("1970-01-01").unwrap(), 0);
        assert_eq!(parse_day("2024-02-29").unwrap(), 19_782);
        assert_eq!(day_name(19_782), "2024-02-29");
        for d in [0, 59, 60, 11_016, 20_000, 30_000] {
            assert_eq!(parse_day(&day_name(d)).unwrap(), d);
        }
        for bad in ["2023-02-29", "2024-13-01", "2024-1-01", "yesterday", "2024-00-10", "2024-04-31", "1969-12-31", ""]
        {
            assert!(parse_day(bad).is_err(), "{bad}");
        }
    }

    /// A conversation with one `message` run per entry: (day offset ms, reply handler, handoff write).
    async fn conversation(records: &Records, id: &str, runs: &[(i64, Option<&str>, Option<Value>)]) {
        let conv = ConversationRecord {
            id: id.into(),
            tenant: "t".into(),
            assistant: "exchange-support".into(),
            customer_id: None,
            metadata: json!({}),
            status: "idle".into(),
            created_at_ms: runs[0].0,
            updated_at_ms: runs[0].0,
        };
        records.insert_conversation(&conv).await.unwrap();
        for (n, (at, handler, handoff)) in runs.iter().enumerate() {
            let run_id = format!("{id}_r{n}");
            let rec = RunRecord {
                id: run_id.clone(),
                tenant: "t".into(),
                conversation_id: id.into(),
                kind: "message".into(),
                status: "running".into(),
                result: None,
                error: None,
                created_at_ms: *at,
                finished_at_ms: None,
            };
            records.start_run(&rec).await.unwrap();
            let mut events = Vec::new();
            if let Some(h) = handoff {
                let data = json!({"run_id": run_id, "event": "update", "node": "flow", "update": {"handoff": h}});
                events.push(Arc::new(EventRecord { seq: 1, event: "update".into(), data: data.to_string() }));
            }
            let reply = handler.map(|h| json!({"role": "assistant", "content": "…", "handler": h}));
            records
                .finish_run(RunEnd {
                    run_id,
                    status: "completed".into(),
                    result: Some(json!({"status": "completed", "reply": reply})),
                    error: None,
                    finished_at_ms: at + 50,
                    events,
                    conversation_id: id.into(),
                    conversation_status: "idle".into(),
                })
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_seeded_store_gives_known_figures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let store = SqliteStore::open(&path, SqliteConfig::default()).await.unwrap();
        let records = Records::on_store(&store);
        let d1 = parse_day("2026-11-20").unwrap() * DAY_MS;
        let d2 = d1 + DAY_MS;
        let queued = |reason: &str, at: i64| json!({"status": "queued", "reason": reason, "queued_at_ms": at});
        // Day 1: three conversations. c1 contained (faq, then out of scope); c2 escalated by the
        // customer (the request is written twice while it waits: one request); c3 only needed an
        // approval (contained).
        conversation(&records, "c1", &[(d1 + 1000, Some("faq"), None), (d1 + 2000, Some("out_of_scope"), None)]).await;
        let q2 = queued("customer_request", d1 + 5000);
        conversation(
            &records,
            "c2",
            &[
                (d1 + 4000, Some("clarify"), None),
                (d1 + 5000, Some("handoff"), Some(q2.clone())),
                (d1 + 6000, None, Some(q2)),
            ],
        )
        .await;
        conversation(&records, "c3", &[(d1 + 7000, Some("card_freeze"), Some(queued("approval", d1 + 7000)))]).await;
        // Day 2: c4 starts; its approval becomes a fraud handoff (escalated); c1 comes back.
        conversation(
            &records,
            "c4",
            &[
                (d2 + 1000, Some("card_freeze"), Some(queued("approval", d2 + 1000))),
                (d2 + 2000, Some("fraud_report"), Some(queued("fraud_report", d2 + 1000))),
            ],
        )
        .await;
        for (id, conv, rating, at) in
            [("f1", "c1", 5, d1 + 3000), ("f2", "c2", 1, d1 + 9000), ("f3", "c4", -1, d2 + 3000)]
        {
            let fb = FeedbackRecord {
                id: id.into(),
                tenant: "t".into(),
                conversation_id: conv.into(),
                message_id: None,
                rating,
                comment: None,
                created_at_ms: at,
            };
            records.insert_feedback(&fb).await.unwrap();
        }
        drop(store);

        let pool = open(&path).await.unwrap();
        let first = d1 / DAY_MS;
        let days = read(&pool, first - 1, first + 1).await.unwrap();
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].day, "2026-11-19");
        assert_eq!((days[0].turns, days[0].conversations, days[0].containment), (0, 0, None));
        let a = &days[1];
        assert_eq!(a.day, "2026-11-20");
        assert_eq!((a.conversations, a.escalated), (3, 1));
        assert!((a.containment.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!((a.turns, a.out_of_scope, a.clarify), (6, 1, 1));
        assert!((a.out_of_scope_rate.unwrap() - 1.0 / 6.0).abs() < 1e-9);
        assert_eq!(a.handoffs, BTreeMap::from([("approval".to_string(), 1), ("customer_request".to_string(), 1)]));
        assert_eq!((a.feedback, a.mean_rating), (2, Some(3.0)));
        assert_eq!(a.cost_usd, None, "no span table: cost is not recorded, not zero");
        let b = &days[2];
        assert_eq!((b.conversations, b.escalated, b.containment), (1, 1, Some(0.0)));
        assert_eq!(b.handoffs, BTreeMap::from([("approval".to_string(), 1), ("fraud_report".to_string(), 1)]));
        assert_eq!(b.ratings, BTreeMap::from([(-1, 1)]));
        let t = total(&days);
        assert_eq!((t.conversations, t.escalated, t.turns, t.feedback), (4, 2, 8, 3));
        assert_eq!(t.containment, Some(0.5));
        assert!((t.mean_rating.unwrap() - 5.0 / 3.0).abs() < 1e-9);
        let text = table(&days);
        assert!(
            text.contains("2026-11-20      3          1        66.7%      6       0   16.7%    16.7%         2"),
            "{text}"
        );
        assert!(text.contains("handoffs by reason: approval 2, customer_request 1, fraud_report 1"), "{text}");
        assert!(text.contains("cost: not recorded"), "{text}");
    }
}
