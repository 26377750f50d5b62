//! The time-frame sweep: every `every`, the exchange marks what has just become overdue and
//! expires information requests past their grace period (`exchange::gateway`).

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::common::time::now_ms;
use crate::domain::exchange::Exchange;
use crate::store::Store;

/// Runs the sweep until `shutdown` turns true.
pub fn spawn(
    exchange: Exchange<Store>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            if let Err(e) = exchange.sweep(now_ms()).await {
                tracing::error!(error = %e, "marking overdue or expired exchanges failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}
