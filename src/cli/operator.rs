//! Operators' actions from the CLI (`jisr outbox retry|replay`, `jisr certs revoke`), each
//! recorded in the node's audit log: who ran it as far as the machine knows, what, which
//! ids, and the operator's `--reason`. The CLI appends to the same log as the running
//! gateway (its writer takes in entries another process appended before its next batch).

use std::sync::Arc;

use crate::audit::context::AuditContext;
use crate::server::config::Config;
use crate::store::Store;

/// Method names of operators' actions in the audit log.
pub const OUTBOX_RETRY: &str = "jisr.operator/OutboxRetry";
pub const OUTBOX_REPLAY: &str = "jisr.operator/OutboxReplay";
pub const CERTS_REVOKE: &str = "jisr.operator/CertsRevoke";

/// Who runs this command, as far as the machine knows: `os:<user>@<host>` (the user who
/// ran sudo, if it was sudo).
pub fn who() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("os:{user}@{host}")
}

/// The node's store, its writer appending to the node's audit log.
pub async fn store(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::connect(&config.database, crate::server::log_settings(config)?).await?)
}

/// The audit context of an operator's action, for a write that records it with its
/// change (`Store::write`).
pub fn context(method: &str, reason: &str) -> Arc<AuditContext> {
    Arc::new(crate::audit::operator_context(method, &who(), reason))
}

/// Records an action whose change is outside the database (a CRL file).
pub async fn record(
    config: &Config,
    method: &str,
    targets: &[String],
    reason: &str,
) -> anyhow::Result<()> {
    let store = store(config).await?;
    let entry = crate::audit::operator_entry(method, &who(), targets, reason);
    store.append_audit(entry, std::time::Instant::now()).await?;
    store.close().await;
    Ok(())
}
