//! `switchboard audit verify`: walks the hash-chained audit log of a server's store (the SQLite
//! file of a data directory, or a PostgreSQL database) and says whether it is whole; `audit list`
//! prints records.

use anyhow::Context;
use std::path::PathBuf;
use switchboard_store::{AuditLog, PgConfig, PgStore, SqliteConfig, SqliteStore};

/// `switchboard audit ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCmd {
    /// Recomputes every record's hash and link; exits 1 at the first broken record.
    Verify(Where),
    /// Prints records, oldest first, one JSON object per line.
    List {
        #[command(flatten)]
        place: Where,
        /// Start after this record.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Most records to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Which store.
#[derive(Debug, clap::Args)]
pub(crate) struct Where {
    /// Data directory of the server (its SQLite file).
    #[arg(long, conflicts_with_all = ["config", "database_url"])]
    data_dir: Option<PathBuf>,
    /// The server's config file (its data directory is used).
    #[arg(long, conflicts_with = "database_url")]
    config: Option<PathBuf>,
    /// A PostgreSQL database instead of the SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

async fn open(w: &Where) -> anyhow::Result<(AuditLog, String)> {
    if let Some(url) = &w.database_url {
        let store = PgStore::open(url, PgConfig::default()).await.context("opening PostgreSQL")?;
        return Ok((AuditLog::on_postgres(store.pool().clone()), "postgres".into()));
    }
    let config = super::serve::load(w.config.as_deref(), None, w.data_dir.clone())?;
    let path = config.db_path();
    anyhow::ensure!(path.is_file(), "no store at {} (is this the server's data directory?)", path.display());
    let store = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((AuditLog::on_store(&store), path.display().to_string()))
}

/// Runs `switchboard audit`.
pub(crate) fn run(cmd: AuditCmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        match cmd {
            AuditCmd::Verify(w) => {
                let (log, place) = open(&w).await?;
                let v = log.verify().await?;
                if w.json {
                    let broken = v.broken.as_ref().map(|(seq, why)| serde_json::json!({"seq": seq, "reason": why}));
                    let out =
                        serde_json::json!({"ok": v.is_ok(), "records": v.records, "head": v.head, "broken": broken});
                    println!("{out}");
                } else {
                    match &v.broken {
                        None => println!("audit log ok: {} records, head {} ({place})", v.records, v.head),
                        Some((seq, why)) => println!(
                            "audit log BROKEN at record {seq}: {why} ({} records before it check out; {place})",
                            v.records
                        ),
                    }
                }
                if !v.is_ok() {
                    std::process::exit(1);
                }
            }
            AuditCmd::List { place, after, limit } => {
                let (log, _) = open(&place).await?;
                for r in log.page(after, limit).await? {
                    let e = &r.event;
                    println!(
                        "{}",
                        serde_json::json!({"seq": r.seq, "at_ms": r.at_ms, "tenant": e.tenant, "actor": e.actor,
                            "action": e.action, "subject": e.subject, "details": e.details, "hash": r.hash})
                    );
                }
            }
        }
        anyhow::Ok(())
    })
}
