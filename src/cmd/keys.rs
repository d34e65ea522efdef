//! `switchboard keys create`: mints an API key for a tenant in the server's store and prints it
//! alone on the last line (only its hash is stored; it cannot be shown again).

use anyhow::Context;
use std::path::PathBuf;
use switchboard_server::auth::{Scope, create_key};
use switchboard_store::records::ApiKeyRecord;
use switchboard_store::{AuditEvent, AuditLog, Records, SqliteConfig, SqliteStore};

/// `switchboard keys ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Creates an API key and prints it on the last line.
    Create(CreateArgs),
}

/// Options of `switchboard keys create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The tenant the key belongs to.
    #[arg(long)]
    tenant: String,
    /// Comma-separated scopes: chat, desk, admin.
    #[arg(long, value_delimiter = ',', default_value = "chat")]
    scopes: Vec<String>,
    /// Data directory of the server.
    #[arg(long, conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    /// The server's config file (its data directory is used).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs `switchboard keys`.
pub(crate) fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let KeysCommand::Create(args) = cmd;
    let scopes = args
        .scopes
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Scope::parse(s).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = super::serve::load(args.config.as_deref(), None, args.data_dir)?;
    let path = config.db_path();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let key = rt.block_on(async {
        let cfg = SqliteConfig { busy_timeout: std::time::Duration::from_secs(5), ..SqliteConfig::default() };
        let store = SqliteStore::open(&path, cfg).await.with_context(|| format!("opening {}", path.display()))?;
        let records = Records::on_store(&store);
        let (key, rec) = create_key(&records, &args.tenant, &scopes).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        AuditLog::on_store(&store).append(created(&rec, "cli")).await?;
        eprintln!("created key {} for tenant `{}` with scopes {}", rec.id, rec.tenant, rec.scopes.join(","));
        anyhow::Ok(key)
    })?;
    println!("{key}");
    Ok(())
}

/// The audit record of a new key (its id and scopes; never the key).
pub(crate) fn created(rec: &ApiKeyRecord, actor: &str) -> AuditEvent {
    AuditEvent::new(&rec.tenant, actor, "key.create", &rec.id).with_details(serde_json::json!({"scopes": rec.scopes}))
}
