//! Time frames: a referral is due at the end of the receiving service's time frame in
//! working days (the configured weekend and public holidays do not count), and a referral
//! that passes its due date without reaching a final state gets one OVERDUE event, seen on
//! both parties' watch streams and delivered to both through their adapters.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::GATEWAY_ACTOR;
use crate::delivery::payload;
use crate::directory::calendar::add_working_days;
use crate::directory::Directory;
use crate::pb::v1::{
    ReferralEventType, ReferralOutcome, ReferralStatus, StatusChange, StatusReason,
};
use crate::store::outbox::NewDelivery;
use crate::store::{now_ms, NewEvent, Store, StoreError};

/// When a referral submitted at `submitted_ms` for `service_code` is due: None when the
/// directory does not know the service or gives it no time frame.
pub fn due_at(directory: &Directory, service_code: &str, submitted_ms: i64) -> Option<i64> {
    let days = directory.service(service_code)?.time_frame_working_days;
    (days > 0).then(|| add_working_days(submitted_ms, days, directory.calendar()))
}

/// Looks every `every` for referrals that have just become overdue.
pub fn spawn_overdue_watch(
    store: Store,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            if let Err(e) = mark_overdue(&store).await {
                tracing::error!(error = %e, "marking overdue referrals failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}

/// Emits the OVERDUE event (once) for every referral past due and not final.
pub async fn mark_overdue(store: &Store) -> Result<usize, StoreError> {
    let (count, _) = store
        .write(None, |tx| {
            Box::pin(async move {
                let now = now_ms();
                let rows = tx.take_newly_overdue(now, 100).await?;
                for r in &rows {
                    let note = format!(
                        "overdue: the service's time frame ended at {}",
                        crate::api::referral::rfc3339(r.due_at.unwrap_or(now))
                    );
                    tx.insert_event(&NewEvent {
                        referral_id: &r.id,
                        from_agency: &r.from_agency,
                        to_agency: &r.to_agency,
                        event_type: ReferralEventType::Overdue.as_str_name(),
                        status: &r.status,
                        actor_agency: GATEWAY_ACTOR,
                        reason_code: StatusReason::Unspecified.as_str_name(),
                        note: &note,
                        outcome: ReferralOutcome::Unspecified.as_str_name(),
                        occurred_at: now,
                    })
                    .await?;
                    let change = StatusChange {
                        status: ReferralStatus::from_str_name(&r.status).unwrap_or_default() as i32,
                        actor_agency: GATEWAY_ACTOR.to_string(),
                        changed_at: Some(crate::api::referral::timestamp(now)),
                        reason_code: 0,
                        note: note.clone(),
                        outcome: 0,
                    };
                    for agency in [&r.from_agency, &r.to_agency] {
                        tx.enqueue(
                            &NewDelivery {
                                agency,
                                kind: payload::KIND_STATUS_UPDATE,
                                subject_id: &r.id,
                                payload: payload::referral_status(&r.id, change.clone(), true),
                                traceparent: "",
                            },
                            now,
                        )
                        .await?;
                    }
                    tracing::info!(referral_id = %r.id, "referral overdue");
                }
                Ok::<_, StoreError>(rows.len())
            })
        })
        .await?;
    Ok(count)
}
