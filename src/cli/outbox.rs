//! `jisr outbox list|retry|replay`: see pending and dead deliveries and send them again.

use anyhow::bail;
use clap::Subcommand;

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
    },
    /// Delivered deliveries sent again with the same delivery id (an agency lost them).
    Replay { delivery_ids: Vec<String> },
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
        } => {
            if all_dead {
                let dead = outbox::list(&pool, &[DEAD], agency.as_deref(), i64::MAX).await?;
                delivery_ids.extend(dead.into_iter().map(|r| r.delivery_id));
            }
            if delivery_ids.is_empty() {
                bail!("name delivery ids, or pass --all-dead");
            }
            let n = outbox::requeue(&pool, &delivery_ids, &[DEAD], now_ms()).await?;
            tracing::info!(count = n, "dead deliveries requeued by an operator");
            println!(
                "{n} of {} deliveries requeued (only dead ones move)",
                delivery_ids.len()
            );
            Ok(())
        }
        OutboxCommand::Replay { delivery_ids } => {
            if delivery_ids.is_empty() {
                bail!("name the delivery ids to send again");
            }
            let n = outbox::requeue(&pool, &delivery_ids, &[DELIVERED, DEAD], now_ms()).await?;
            tracing::info!(count = n, "deliveries replayed by an operator");
            println!(
                "{n} of {} deliveries will be sent again with their delivery ids",
                delivery_ids.len()
            );
            Ok(())
        }
    }
}
