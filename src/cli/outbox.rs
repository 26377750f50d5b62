//! `jisr outbox list|retry|replay`: see pending and dead deliveries and send them again.

use anyhow::bail;
use clap::Subcommand;

use super::operator::{self, OUTBOX_REPLAY, OUTBOX_RETRY};
use crate::common::time::now_ms;
use crate::server::config::Config;
use crate::store::outbox::{self, DEAD, DELIVERED, LEASED, PENDING};
use crate::store::Store;

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Deliveries, oldest first (default: pending, leased and dead ones).
    List {
        /// pending, leased, delivered, dead or all.
        #[arg(long)]
        state: Vec<String>,
        #[arg(long)]
        agency: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Dead-lettered deliveries back to pending, attempts reset (after fixing the cause).
    Retry {
        delivery_ids: Vec<String>,
        /// Every dead delivery (of --agency, if given).
        #[arg(long)]
        all_dead: bool,
        #[arg(long)]
        agency: Option<String>,
        /// Why (recorded with the ids in the node's audit log).
        #[arg(long)]
        reason: String,
    },
    /// Delivered deliveries sent again with the same delivery id (an agency lost them).
    Replay {
        delivery_ids: Vec<String>,
        /// Why (recorded with the ids in the node's audit log).
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(config: &Config, command: OutboxCommand) -> anyhow::Result<()> {
    let (pool, _) = Store::open_pool(&config.database).await?;
    match command {
        OutboxCommand::List {
            state,
            agency,
            limit,
        } => {
            let states: Vec<&str> = if state.iter().any(|s| s == "all") {
                Vec::new()
            } else if state.is_empty() {
                vec![PENDING, LEASED, DEAD]
            } else {
                for s in &state {
                    if ![PENDING, LEASED, DELIVERED, DEAD].contains(&s.as_str()) {
                        bail!("--state {s:?}: expected pending, leased, delivered, dead or all");
                    }
                }
                state.iter().map(String::as_str).collect()
            };
            let rows = outbox::list(&pool, &states, agency.as_deref(), limit).await?;
            println!(
                "{:<26}  {:<9}  {:<18}  {:<13}  {:>8}  {:<26}  last error",
                "delivery id", "state", "agency", "kind", "attempts", "subject"
            );
            for r in &rows {
                println!(
                    "{:<26}  {:<9}  {:<18}  {:<13}  {:>8}  {:<26}  {}",
                    r.delivery_id,
                    r.state,
                    r.agency,
                    r.kind,
                    r.attempts,
                    r.subject_id,
                    r.last_error
                );
            }
            println!("({} shown)", rows.len());
            Ok(())
        }
        OutboxCommand::Retry {
            mut delivery_ids,
            all_dead,
            agency,
            reason,
        } => {
            if all_dead {
                let dead = outbox::list(&pool, &[DEAD], agency.as_deref(), i64::MAX).await?;
                delivery_ids.extend(dead.into_iter().map(|r| r.delivery_id));
            }
            if delivery_ids.is_empty() {
                bail!("name delivery ids, or pass --all-dead");
            }
            let n = requeue(config, &delivery_ids, &[DEAD], OUTBOX_RETRY, &reason).await?;
            tracing::info!(count = n, "dead deliveries requeued by an operator");
            println!(
                "{n} of {} deliveries requeued (only dead ones move)",
                delivery_ids.len()
            );
            Ok(())
        }
        OutboxCommand::Replay {
            delivery_ids,
            reason,
        } => {
            if delivery_ids.is_empty() {
                bail!("name the delivery ids to send again");
            }
            let n = requeue(
                config,
                &delivery_ids,
                &[DELIVERED, DEAD],
                OUTBOX_REPLAY,
                &reason,
            )
            .await?;
            tracing::info!(count = n, "deliveries replayed by an operator");
            println!(
                "{n} of {} deliveries will be sent again with their delivery ids",
                delivery_ids.len()
            );
            Ok(())
        }
    }
}

/// Requeues the deliveries of `ids` that are in one of `from`, in one transaction with the
/// operator's audit entry (the ids that moved are its targets), through the node's writer.
async fn requeue(
    config: &Config,
    ids: &[String],
    from: &'static [&'static str],
    method: &str,
    reason: &str,
) -> anyhow::Result<u64> {
    let store = operator::store(config).await?;
    let ctx = operator::context(method, reason);
    let ids = ids.to_vec();
    let result = store
        .write(Some(&ctx), move |tx| {
            Box::pin(async move {
                let moved = tx.requeue(&ids, from, now_ms()).await?;
                if let Some(entry) = tx.audit() {
                    entry.target_ids.extend(moved.iter().cloned());
                }
                tx.audit_receipt()?;
                Ok::<_, crate::store::StoreError>(moved.len() as u64)
            })
        })
        .await;
    store.close().await;
    Ok(result?.0)
}
