//! Time frames: a referral is due at the end of the receiving service's time frame in
//! working days (the configured weekend and public holidays do not count), and a referral
//! that passes its due date without reaching a final state gets one OVERDUE event, seen on
//! both parties' watch streams and delivered to both through their adapters. Information
//! requests likewise get one OVERDUE event when due_at passes while they are OPEN, and
//! become EXPIRED once the configured grace period after it has passed too.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::common::time::now_ms;
use crate::common::GATEWAY_ACTOR;
use crate::directory::calendar::add_working_days;
use crate::directory::Directory;
use crate::domain::information_request::is_overdue;
use crate::domain::payload;
use crate::pb::v1::{
    InformationRequestStatus, ReferralEventType, ReferralOutcome, ReferralStatus, StatusChange,
    StatusReason,
};
use crate::store::information_requests::InformationRequestRow;
use crate::store::outbox::NewDelivery;
use crate::store::{NewEvent, Store, StoreError, WriteTx};

/// When a referral submitted at `submitted_ms` for `service_code` is due: None when the
/// directory does not know the service or gives it no time frame.
pub fn due_at(directory: &Directory, service_code: &str, submitted_ms: i64) -> Option<i64> {
    let days = directory.service(service_code)?.time_frame_working_days;
    (days > 0).then(|| add_working_days(submitted_ms, days, directory.calendar()))
}

/// Looks every `every` for referrals and information requests that have just become
/// overdue, and for information requests to expire (`expire_after` past due_at).
pub fn spawn_overdue_watch(
    store: Store,
    every: Duration,
    expire_after: Duration,
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
            if let Err(e) = information_requests_due(&store, expire_after).await {
                tracing::error!(error = %e, "overdue or expired information requests failed; retrying");
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
                        crate::common::time::rfc3339(r.due_at.unwrap_or(now))
                    );
                    tx.insert_event(&NewEvent {
                        referral_id: &r.id,
                        information_request_id: "",
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
                        changed_at: Some(crate::common::time::timestamp(now)),
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

/// Information requests past due: each OPEN one gets one OVERDUE event, and once
/// `expire_after` has also passed it becomes EXPIRED. Both parties are told each time,
/// through their adapters and on their watch streams. Returns (overdue, expired).
pub async fn information_requests_due(
    store: &Store,
    expire_after: Duration,
) -> Result<(usize, usize), StoreError> {
    let grace = expire_after.as_millis() as i64;
    let (counts, _) = store
        .write(None, move |tx| {
            Box::pin(async move {
                let now = now_ms();
                // OVERDUE first, so it precedes EXPIRED in the feed when both happen at once.
                let overdue = tx.take_newly_overdue_information_requests(now, 100).await?;
                for r in &overdue {
                    let note = format!(
                        "overdue: the response was due at {}",
                        crate::common::time::rfc3339(r.due_at)
                    );
                    information_request_event(tx, r, ReferralEventType::Overdue, &note, now)
                        .await?;
                    tracing::info!(information_request_id = %r.id, "information request overdue");
                }
                let expired = tx
                    .open_information_requests_due_before(now - grace, 100)
                    .await?;
                for r in &expired {
                    let mut r = r.clone();
                    r.status = InformationRequestStatus::Expired.as_str_name().to_string();
                    r.updated_at = now;
                    tx.update_information_request(&r).await?;
                    let note = "expired: no response by the due date";
                    information_request_event(
                        tx,
                        &r,
                        ReferralEventType::InformationExpired,
                        note,
                        now,
                    )
                    .await?;
                    tracing::info!(information_request_id = %r.id, "information request expired");
                }
                Ok::<_, StoreError>((overdue.len(), expired.len()))
            })
        })
        .await?;
    Ok(counts)
}

/// An event of an information request the gateway acted on, told to both parties.
async fn information_request_event(
    tx: &mut WriteTx,
    r: &InformationRequestRow,
    event: ReferralEventType,
    note: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.insert_event(&NewEvent {
        referral_id: &r.referral_id,
        information_request_id: &r.id,
        from_agency: &r.from_agency,
        to_agency: &r.to_agency,
        event_type: event.as_str_name(),
        status: &r.status,
        actor_agency: GATEWAY_ACTOR,
        reason_code: "",
        note,
        outcome: "",
        occurred_at: now,
    })
    .await?;
    let status = InformationRequestStatus::from_str_name(&r.status).unwrap_or_default();
    let overdue = is_overdue(status, r.due_at, now);
    for agency in [&r.from_agency, &r.to_agency] {
        tx.enqueue(
            &NewDelivery {
                agency,
                kind: payload::KIND_STATUS_UPDATE,
                subject_id: &r.id,
                payload: payload::information_request_status(
                    &r.id,
                    status,
                    crate::common::time::timestamp(now),
                    overdue,
                ),
                traceparent: "",
            },
            now,
        )
        .await?;
    }
    Ok(())
}
