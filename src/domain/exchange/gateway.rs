//! The gateway's own moves, through the same lifecycle rules as the agencies':
//!
//! - a delivery's fate: a referral its recipient's system confirmed becomes DELIVERED, one
//!   given up on becomes FAILED, and either way the sender is told (its adapter, its watch);
//! - time frames: a referral or information request that passes its due date gets one
//!   OVERDUE event, told to both parties; an information request still OPEN after the
//!   grace period becomes EXPIRED; a clearance past its deadline is deemed approved or
//!   told overdue (`application`).

use super::referral::{parse_status, status_event, tell};
use super::{information_request, record, Exchange};
use crate::common::time::{rfc3339, timestamp};
use crate::common::{ApiError, GATEWAY_ACTOR};
use crate::domain::information_request::is_overdue;
use crate::domain::payload::{self, KIND_REFERRAL, KIND_STATUS_UPDATE};
use crate::domain::records::{InformationRequestRow, NewDelivery, OutboxRow};
use crate::domain::referral::{check_transition, Actor};
use crate::domain::storage::{ExchangeTx, Storage};
use crate::pb::v1::{
    InformationRequestStatus, ReferralEventType, ReferralOutcome, ReferralStatus, StatusChange,
    StatusReason,
};

/// Most rows one sweep handles; the rest wait for the next one.
pub(super) const SWEEP_BATCH: i64 = 100;

/// How a delivery ended.
#[derive(Debug, Clone, Copy)]
pub enum Fate<'a> {
    /// The agency's system confirmed it, with its own receipt.
    Delivered { receipt: &'a str },
    /// The gateway gave up on it (too old, refused, rejected by the agency).
    GivenUp { error: &'a str },
}

/// Records the end of `row` (in the outbox) and what it means for its exchange.
pub async fn settle_delivery<T: ExchangeTx>(
    tx: &mut T,
    row: &OutboxRow,
    fate: Fate<'_>,
    now: i64,
) -> Result<(), ApiError> {
    let (to, reason, note) = match fate {
        Fate::Delivered { receipt } => {
            tx.mark_delivered(&row.delivery_id, receipt, now).await?;
            (
                ReferralStatus::Delivered,
                StatusReason::Unspecified,
                String::new(),
            )
        }
        Fate::GivenUp { error } => {
            tx.mark_dead(&row.delivery_id, error, now).await?;
            let note = format!(
                "delivery to {} failed: {}",
                row.agency,
                truncate(error, 500)
            );
            (ReferralStatus::Failed, StatusReason::Other, note)
        }
    };
    if row.kind != KIND_REFERRAL {
        return Ok(());
    }
    let Some(mut referral) = tx.referral(&row.subject_id).await? else {
        return Err(ApiError::corrupt(format!(
            "delivery {} names no referral",
            row.delivery_id
        )));
    };
    // Only a referral nobody acted on yet moves: once the recipient accepted (say), its
    // delivery's fate changes nothing.
    if !gateway_may_move(parse_status(&referral.status)?, to) {
        return Ok(());
    }
    referral.status = to.as_str_name().to_string();
    tx.set_referral_status(&referral.id, &referral.status, now)
        .await?;
    let event = status_event(
        &referral,
        ReferralEventType::StatusChanged,
        GATEWAY_ACTOR,
        reason,
        &note,
        ReferralOutcome::Unspecified,
        now,
    );
    let change = gateway_change(to, reason, &note, now);
    tell(
        tx,
        &event,
        &change,
        false,
        &[&referral.from_agency],
        &row.traceparent,
        now,
    )
    .await
}

/// Whether the gateway's move to `to` applies to a referral in `current` (the lifecycle's
/// gateway edges: SUBMITTED → DELIVERED | FAILED).
pub fn gateway_may_move(current: ReferralStatus, to: ReferralStatus) -> bool {
    check_transition(current, to, Actor::Gateway).is_ok()
}

/// What one time-frame sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub referrals_overdue: usize,
    pub information_requests_overdue: usize,
    pub information_requests_expired: usize,
    pub clearances_overdue: usize,
    pub clearances_deemed_approved: usize,
}

impl<S: Storage> Exchange<S> {
    /// One sweep of the time frames at `now`: new OVERDUE events for referrals and
    /// information requests past due, EXPIRED for requests past due and the grace period,
    /// and the clearances whose deadline passed (deemed approved, or overdue).
    pub async fn sweep(&self, now: i64) -> Result<Swept, ApiError> {
        let referrals_overdue = self.mark_overdue(now).await?;
        let grace = self.settings.information_request_grace.as_millis() as i64;
        let (overdue, expired) = self
            .storage
            .transact(None, move |tx| {
                Box::pin(async move { information_requests_due(tx, now, grace).await })
            })
            .await?
            .0;
        let (clearances_overdue, clearances_deemed_approved) = self.clearances_due(now).await?;
        Ok(Swept {
            referrals_overdue,
            information_requests_overdue: overdue,
            information_requests_expired: expired,
            clearances_overdue,
            clearances_deemed_approved,
        })
    }

    /// Emits the OVERDUE event (once) for every referral past due and not final.
    async fn mark_overdue(&self, now: i64) -> Result<usize, ApiError> {
        let (count, _) = self
            .storage
            .transact(None, move |tx| {
                Box::pin(async move {
                    let rows = tx.take_newly_overdue(now, SWEEP_BATCH).await?;
                    for r in &rows {
                        let note = format!(
                            "overdue: the service's time frame ended at {}",
                            rfc3339(r.due_at.unwrap_or(now))
                        );
                        let event = status_event(
                            r,
                            ReferralEventType::Overdue,
                            GATEWAY_ACTOR,
                            StatusReason::Unspecified,
                            &note,
                            ReferralOutcome::Unspecified,
                            now,
                        );
                        let change = gateway_change(
                            ReferralStatus::from_str_name(&r.status).unwrap_or_default(),
                            StatusReason::Unspecified,
                            &note,
                            now,
                        );
                        tell(
                            tx,
                            &event,
                            &change,
                            true,
                            &[&r.from_agency, &r.to_agency],
                            "",
                            now,
                        )
                        .await?;
                        tracing::info!(referral_id = %r.id, "referral overdue");
                    }
                    Ok(rows.len())
                })
            })
            .await?;
        Ok(count)
    }
}

/// Information requests past due: each OPEN one gets one OVERDUE event, and once `grace`
/// (ms) has also passed it becomes EXPIRED. Both parties are told each time, through their
/// adapters and on their watch streams. Answers (overdue, expired).
async fn information_requests_due<T: ExchangeTx>(
    tx: &mut T,
    now: i64,
    grace: i64,
) -> Result<(usize, usize), ApiError> {
    // OVERDUE first, so it precedes EXPIRED in the feed when both happen at once.
    let overdue = tx
        .take_newly_overdue_information_requests(now, SWEEP_BATCH)
        .await?;
    for r in &overdue {
        let note = format!("overdue: the response was due at {}", rfc3339(r.due_at));
        information_request_event(tx, r, ReferralEventType::Overdue, &note, now).await?;
        tracing::info!(information_request_id = %r.id, "information request overdue");
    }
    let expired = tx
        .open_information_requests_due_before(now - grace, SWEEP_BATCH)
        .await?;
    for r in &expired {
        let mut r = r.clone();
        r.status = InformationRequestStatus::Expired.as_str_name().to_string();
        r.updated_at = now;
        tx.update_information_request(&r).await?;
        let note = "expired: no response by the due date";
        information_request_event(tx, &r, ReferralEventType::InformationExpired, note, now).await?;
        tracing::info!(information_request_id = %r.id, "information request expired");
    }
    Ok((overdue.len(), expired.len()))
}

/// An event of an information request the gateway acted on, told to both parties.
async fn information_request_event<T: ExchangeTx>(
    tx: &mut T,
    r: &InformationRequestRow,
    kind: ReferralEventType,
    note: &str,
    now: i64,
) -> Result<(), ApiError> {
    let status = InformationRequestStatus::from_str_name(&r.status).unwrap_or_default();
    let payload = payload::information_request_status(
        &r.id,
        status,
        timestamp(now),
        is_overdue(status, r.due_at, now),
    );
    let deliveries: Vec<NewDelivery> = [&r.from_agency, &r.to_agency]
        .into_iter()
        .map(|agency| NewDelivery {
            agency,
            kind: KIND_STATUS_UPDATE,
            subject_id: &r.id,
            payload: payload.clone(),
            traceparent: "",
        })
        .collect();
    let event = information_request::event(r, kind, GATEWAY_ACTOR, ("", note), now);
    record(tx, &event, &deliveries, now).await
}

/// A change the gateway made (or noted) at `now`, as the parties are told of it.
fn gateway_change(
    status: ReferralStatus,
    reason: StatusReason,
    note: &str,
    now: i64,
) -> StatusChange {
    StatusChange {
        status: status as i32,
        actor_agency: GATEWAY_ACTOR.to_string(),
        changed_at: Some(timestamp(now)),
        reason_code: reason as i32,
        note: note.to_string(),
        outcome: 0,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReferralStatus as S;

    #[test]
    fn the_gateway_moves_only_referrals_nobody_acted_on() {
        assert!(gateway_may_move(S::Submitted, S::Delivered));
        assert!(gateway_may_move(S::Submitted, S::Failed));
        for current in [
            S::Delivered,
            S::Accepted,
            S::Rejected,
            S::Withdrawn,
            S::Completed,
        ] {
            for to in [S::Delivered, S::Failed] {
                assert!(!gateway_may_move(current, to), "{current:?} -> {to:?}");
            }
        }
        assert!(
            !gateway_may_move(S::Submitted, S::Accepted),
            "not a gateway status"
        );
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ab", 5), "ab");
        assert_eq!(truncate("مرحبا", 2), "مر");
    }
}
