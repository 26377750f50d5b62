//! `jisr bench --sandbox --seed N`: a store with many rows, written straight through the
//! store's writer in large batches (no RPC, no delivery), so a benchmark can compare the
//! cost of a call at 1,000 and 1,000,000 rows.

use prost::Message;

use crate::domain::records::{NewEvent, ReferralRow};
use crate::pb::v1::*;
use crate::store::{Store, StoreError};

/// Referrals written per batch.
const BATCH: u64 = 2_000;
/// Audit appenders at once.
const APPENDERS: u64 = 256;

/// Writes `n` referrals, a third sent by `agency`, a third received by it and a third
/// between two other agencies, each with its SUBMITTED event; then `n` audit entries.
pub async fn seed(store: &Store, n: u64, agency: &str, other: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut done = 0;
    while done < n {
        let count = BATCH.min(n - done);
        let rows: Vec<ReferralRow> = (done..done + count)
            .map(|i| {
                let (from, to) = match i % 3 {
                    0 => (agency, other),
                    1 => (other, agency),
                    _ => ("police", "health"),
                };
                row(from, to, i)
            })
            .collect();
        store
            .write(None, move |tx| {
                Box::pin(async move {
                    for r in &rows {
                        tx.insert_referral(r).await?;
                        tx.insert_event(&NewEvent {
                            referral_id: &r.id,
                            information_request_id: "",
                            from_agency: &r.from_agency,
                            to_agency: &r.to_agency,
                            event_type: ReferralEventType::Submitted.as_str_name(),
                            status: &r.status,
                            actor_agency: &r.from_agency,
                            reason_code: StatusReason::Unspecified.as_str_name(),
                            note: "",
                            outcome: ReferralOutcome::Unspecified.as_str_name(),
                            occurred_at: r.created_at,
                            ..NewEvent::default()
                        })
                        .await?;
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .await?;
        done += count;
    }
    super::audit::append_synthetic(store, n, APPENDERS).await?;
    // Statistics for the planner, as autovacuum gathers them after a bulk load (without
    // them PostgreSQL guesses, and may scan a table for a page's histories).
    if store.backend() == crate::store::Backend::Postgres {
        sqlx::query("ANALYZE").execute(store.pool()).await?;
    }
    eprintln!(
        "seeded {n} referrals, {n} events and {n} audit entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn row(from: &str, to: &str, i: u64) -> ReferralRow {
    let now = crate::common::time::now_ms();
    let id = ulid::Ulid::new().to_string();
    let referral = Referral {
        id: id.clone(),
        request_id: format!("seed-{i}"),
        from_agency: from.to_string(),
        to_agency: to.to_string(),
        service_code: "housing-support".into(),
        category: ReferralCategory::FinancialHardship as i32,
        priority: ReferralPriority::Routine as i32,
        status: ReferralStatus::Submitted as i32,
        summary: "Seeded referral for a benchmark.".into(),
        ..Referral::default()
    };
    ReferralRow {
        id,
        from_agency: from.to_string(),
        to_agency: to.to_string(),
        request_id: referral.request_id.clone(),
        service_code: referral.service_code.clone(),
        category: referral.category().as_str_name().to_string(),
        priority: referral.priority().as_str_name().to_string(),
        status: ReferralStatus::Submitted.as_str_name().to_string(),
        due_at: None,
        created_at: now,
        updated_at: now,
        body: referral.encode_to_vec(),
    }
}
