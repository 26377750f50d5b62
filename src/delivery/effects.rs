//! What a delivery's fate does to its exchange, in the same transaction that records it:
//! a referral the recipient's system confirmed becomes DELIVERED, one given up on becomes
//! FAILED, and either way the sender is told through its own adapter (and its watch).

use crate::common::GATEWAY_ACTOR;
use crate::pb::v1::{
    ReferralEventType, ReferralOutcome, ReferralStatus, StatusChange, StatusReason,
};
use crate::store::outbox::OutboxRow;
use crate::store::{NewEvent, StoreError, WriteTx};

use crate::domain::payload::{self, KIND_REFERRAL, KIND_STATUS_UPDATE};

/// The receiving system confirmed `row`.
pub async fn delivered(tx: &mut WriteTx, row: &OutboxRow, now: i64) -> Result<(), StoreError> {
    gateway_moves(
        tx,
        row,
        ReferralStatus::Delivered,
        StatusReason::Unspecified,
        "",
        now,
    )
    .await
}

/// The gateway gave up on `row` (attempts, age, or a permanent refusal).
pub async fn given_up(
    tx: &mut WriteTx,
    row: &OutboxRow,
    error: &str,
    now: i64,
) -> Result<(), StoreError> {
    let note = format!(
        "delivery to {} failed: {}",
        row.agency,
        truncate(error, 500)
    );
    gateway_moves(
        tx,
        row,
        ReferralStatus::Failed,
        StatusReason::Other,
        &note,
        now,
    )
    .await
}

/// A referral still SUBMITTED moves to `to`, recorded as done by the gateway, and its
/// sender is told. Anything else (a status update, a referral already acted on) is left.
async fn gateway_moves(
    tx: &mut WriteTx,
    row: &OutboxRow,
    to: ReferralStatus,
    reason: StatusReason,
    note: &str,
    now: i64,
) -> Result<(), StoreError> {
    if row.kind != KIND_REFERRAL {
        return Ok(());
    }
    let Some(referral) = tx.referral(&row.subject_id).await? else {
        return Err(StoreError::Corrupt(format!(
            "delivery {} names no referral",
            row.delivery_id
        )));
    };
    if referral.status != ReferralStatus::Submitted.as_str_name() {
        return Ok(());
    }
    let status = to.as_str_name();
    tx.set_referral_status(&referral.id, status, now).await?;
    tx.insert_event(&NewEvent {
        referral_id: &referral.id,
        information_request_id: "",
        from_agency: &referral.from_agency,
        to_agency: &referral.to_agency,
        event_type: ReferralEventType::StatusChanged.as_str_name(),
        status,
        actor_agency: GATEWAY_ACTOR,
        reason_code: reason.as_str_name(),
        note,
        outcome: ReferralOutcome::Unspecified.as_str_name(),
        occurred_at: now,
    })
    .await?;
    let change = StatusChange {
        status: to as i32,
        actor_agency: GATEWAY_ACTOR.to_string(),
        changed_at: Some(crate::common::time::timestamp(now)),
        reason_code: reason as i32,
        note: note.to_string(),
        outcome: 0,
    };
    tx.enqueue(
        &crate::store::outbox::NewDelivery {
            agency: &referral.from_agency,
            kind: KIND_STATUS_UPDATE,
            subject_id: &referral.id,
            payload: payload::referral_status(&referral.id, change, false),
            traceparent: &row.traceparent,
        },
        now,
    )
    .await?;
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
