//! Referrals through the exchange: submitting one (the recipient's copy goes out through
//! its adapter) and moving it along its lifecycle (the other party is told), each in one
//! transaction with the call's audit entry; and how a stored referral reads as a message.

use prost::Message;
use tonic_types::FieldViolation;

use super::{record, Caller, Exchange, Once, UNREADABLE_DOCUMENT};
use crate::common::time::timestamp;
use crate::common::trace::traceparent;
use crate::common::ApiError;
use crate::domain::payload;
use crate::domain::records::{EventRow, NewDelivery, NewEvent, ReferralRow};
use crate::domain::referral::{check_transition, is_final, Actor};
use crate::domain::storage::{ExchangeTx, Storage};
use crate::domain::time_frames;
use crate::pb::v1::*;

pub const SUBMIT: &str = "jisr.v1.ReferralService/SubmitReferral";
pub const UPDATE: &str = "jisr.v1.ReferralService/UpdateReferralStatus";
const KIND: &str = "referral";

/// A validated status change (`api::referral` checks the fields).
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub referral_id: String,
    pub request_id: String,
    pub status: ReferralStatus,
    pub reason: StatusReason,
    pub outcome: ReferralOutcome,
    pub note: String,
}

impl<S: Storage> Exchange<S> {
    /// Submits `referral` (its input fields only, validated) from the caller's agency.
    pub async fn submit_referral(
        &self,
        caller: &Caller,
        mut referral: Referral,
        request_id: String,
        now: i64,
    ) -> Result<SubmitReferralResponse, ApiError> {
        let agency = caller.agency().to_string();
        caller.audit.set_target("", &referral.to_agency);
        let decision = self
            .policy
            .may_refer(&agency, &referral.to_agency, &referral.service_code);
        decision.check(&caller.audit, || {
            format!(
                "agency {agency} may not send referrals for {} to {}: its policy.refer_to does not allow it",
                referral.service_code, referral.to_agency
            )
        })?;
        let once = Once::new(&agency, &request_id, SUBMIT, &referral);
        let due_at = time_frames::due_at(&self.directory, &referral.service_code, now);
        let trace_id = caller.trace_id.clone();
        let call_traceparent = caller.traceparent.clone();
        let (response, fresh) = self
            .write_once(caller, once, now, move |tx| {
                Box::pin(async move {
                    referral.id = ulid::Ulid::new().to_string();
                    referral.request_id = request_id;
                    referral.from_agency = agency.clone();
                    referral.status = ReferralStatus::Submitted as i32;
                    referral.created_at = Some(timestamp(now));
                    referral.trace_id = trace_id;
                    referral.due_at = due_at.map(timestamp);
                    let row = ReferralRow {
                        id: referral.id.clone(),
                        from_agency: referral.from_agency.clone(),
                        to_agency: referral.to_agency.clone(),
                        request_id: referral.request_id.clone(),
                        service_code: referral.service_code.clone(),
                        category: referral.category().as_str_name().to_string(),
                        priority: referral.priority().as_str_name().to_string(),
                        status: ReferralStatus::Submitted.as_str_name().to_string(),
                        due_at,
                        created_at: now,
                        updated_at: now,
                        body: referral.encode_to_vec(),
                    };
                    tx.insert_referral(&row).await?;
                    // Attachments: documents the sender may read, shared with the recipient.
                    let documents: Vec<&str> = referral
                        .attachments
                        .iter()
                        .map(|d| d.document_id.as_str())
                        .collect();
                    let unreadable = tx
                        .share_documents(&documents, &agency, &row.to_agency, &row.id, now)
                        .await?;
                    if !unreadable.is_empty() {
                        return Err(ApiError::Invalid(
                            unreadable
                                .into_iter()
                                .map(|i| {
                                    FieldViolation::new(
                                        format!("referral.attachments[{i}].document_id"),
                                        UNREADABLE_DOCUMENT,
                                    )
                                })
                                .collect(),
                        ));
                    }
                    let submitted = status_event(
                        &row,
                        ReferralEventType::Submitted,
                        &agency,
                        StatusReason::Unspecified,
                        "",
                        ReferralOutcome::Unspecified,
                        now,
                    );
                    let seq = tx.insert_event(&submitted).await?;
                    // A new referral's history is the event just written.
                    let history = [submitted.stored(seq)];
                    if let Some(entry) = tx.audit() {
                        entry.target_ids.push(row.id.clone());
                    }
                    let receipt = tx.audit_receipt()?;
                    let delivered = to_proto(&row, &history, now)?;
                    // The recipient's copy, delivered through its adapter (same transaction).
                    tx.enqueue(
                        &NewDelivery {
                            agency: &row.to_agency,
                            kind: payload::KIND_REFERRAL,
                            subject_id: &row.id,
                            payload: payload::referral(&delivered),
                            traceparent: &call_traceparent,
                        },
                        now,
                    )
                    .await?;
                    Ok(SubmitReferralResponse {
                        referral: Some(delivered),
                        audit_receipt: Some(receipt.to_proto()),
                    })
                })
            })
            .await?;
        if let Some(r) = &response.referral {
            caller.audit.set_target(&r.id, &r.to_agency);
            if fresh {
                tracing::info!(from = %caller.agency(), to = %r.to_agency, "referral submitted");
            }
        }
        Ok(response)
    }

    /// Moves a referral along its lifecycle for the caller's side of it.
    pub async fn update_referral_status(
        &self,
        caller: &Caller,
        update: StatusUpdate,
        now: i64,
    ) -> Result<UpdateReferralStatusResponse, ApiError> {
        let agency = caller.agency().to_string();
        caller.audit.set_target(&update.referral_id, "");
        let once = Once::new(
            &agency,
            &update.request_id,
            UPDATE,
            &UpdateReferralStatusRequest {
                referral_id: update.referral_id.clone(),
                request_id: update.request_id.clone(),
                status: update.status as i32,
                reason_code: update.reason as i32,
                note: update.note.clone(),
                outcome: update.outcome as i32,
            },
        );
        let (response, fresh) = self
            .write_once(caller, once, now, move |tx| {
                Box::pin(async move {
                    let mut row = tx
                        .referral(&update.referral_id)
                        .await?
                        .ok_or_else(|| not_found(&update.referral_id))?;
                    let actor = side_of(&row, &agency)?;
                    if let Some(entry) = tx.audit() {
                        entry.recipient_agency = counterpart(&row, &agency).to_string();
                    }
                    check_transition(parse_status(&row.status)?, update.status, actor)
                        .map_err(|e| e.into_error(&row.id))?;
                    row.status = update.status.as_str_name().to_string();
                    row.updated_at = now;
                    tx.set_referral_status(&row.id, &row.status, now).await?;
                    tx.insert_event(&status_event(
                        &row,
                        ReferralEventType::StatusChanged,
                        &agency,
                        update.reason,
                        &update.note,
                        update.outcome,
                        now,
                    ))
                    .await?;
                    let receipt = tx.audit_receipt()?;
                    let history = tx.referral_history(&row.id).await?;
                    let referral = to_proto(&row, &history, now)?;
                    // The other party is told, through its adapter (same transaction).
                    if let Some(change) = referral.status_history.last() {
                        tx.enqueue(
                            &NewDelivery {
                                agency: counterpart(&row, &agency),
                                kind: payload::KIND_STATUS_UPDATE,
                                subject_id: &row.id,
                                payload: payload::referral_status(
                                    &row.id,
                                    change.clone(),
                                    referral.overdue,
                                ),
                                traceparent: &traceparent(&referral.trace_id),
                            },
                            now,
                        )
                        .await?;
                    }
                    Ok(UpdateReferralStatusResponse {
                        referral: Some(referral),
                        audit_receipt: Some(receipt.to_proto()),
                    })
                })
            })
            .await?;
        if let Some(r) = &response.referral {
            let other = if r.from_agency == caller.agency() {
                &r.to_agency
            } else {
                &r.from_agency
            };
            caller.audit.set_target(&r.id, other);
            if fresh {
                tracing::info!(status = ?r.status(), by = %caller.agency(), "referral status changed");
            }
        }
        Ok(response)
    }
}

/// Which side of `row` `agency` is: sender or recipient; anyone else is refused.
pub fn side_of(row: &ReferralRow, agency: &str) -> Result<Actor, ApiError> {
    if row.from_agency == agency {
        Ok(Actor::Sender)
    } else if row.to_agency == agency {
        Ok(Actor::Recipient)
    } else {
        Err(not_party(&row.id))
    }
}

/// The other agency of a referral, seen from `agency`.
pub fn counterpart<'a>(row: &'a ReferralRow, agency: &str) -> &'a str {
    if row.from_agency == agency {
        &row.to_agency
    } else {
        &row.from_agency
    }
}

/// A status event of `row` (its current status) by `actor`.
pub(crate) fn status_event<'a>(
    row: &'a ReferralRow,
    kind: ReferralEventType,
    actor: &'a str,
    reason: StatusReason,
    note: &'a str,
    outcome: ReferralOutcome,
    now: i64,
) -> NewEvent<'a> {
    NewEvent {
        referral_id: &row.id,
        information_request_id: "",
        from_agency: &row.from_agency,
        to_agency: &row.to_agency,
        event_type: kind.as_str_name(),
        status: &row.status,
        actor_agency: actor,
        reason_code: reason.as_str_name(),
        note,
        outcome: outcome.as_str_name(),
        occurred_at: now,
        ..NewEvent::default()
    }
}

/// Records a gateway event of `row` (OVERDUE, or a move the gateway made) and tells
/// `to` each agency listed, with `change`.
pub(crate) async fn tell<T: ExchangeTx>(
    tx: &mut T,
    event: &NewEvent<'_>,
    change: &StatusChange,
    overdue: bool,
    agencies: &[&str],
    traceparent: &str,
    now: i64,
) -> Result<(), ApiError> {
    let payload = payload::referral_status(event.referral_id, change.clone(), overdue);
    let deliveries: Vec<NewDelivery> = agencies
        .iter()
        .map(|agency| NewDelivery {
            agency,
            kind: payload::KIND_STATUS_UPDATE,
            subject_id: event.referral_id,
            payload: payload.clone(),
            traceparent,
        })
        .collect();
    record(tx, event, &deliveries, now).await
}

pub fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        kind: KIND,
        id: id.to_string(),
    }
}

pub fn not_party(id: &str) -> ApiError {
    ApiError::NotParty {
        kind: KIND,
        id: id.to_string(),
    }
}

pub fn parse_status(s: &str) -> Result<ReferralStatus, ApiError> {
    ReferralStatus::from_str_name(s)
        .ok_or_else(|| ApiError::corrupt(format!("unknown status {s:?}")))
}

fn status_change(e: &EventRow) -> Result<StatusChange, ApiError> {
    Ok(StatusChange {
        status: parse_status(&e.status)? as i32,
        actor_agency: e.actor_agency.clone(),
        changed_at: Some(timestamp(e.occurred_at)),
        reason_code: StatusReason::from_str_name(&e.reason_code).unwrap_or_default() as i32,
        note: e.note.clone(),
        outcome: ReferralOutcome::from_str_name(&e.outcome).unwrap_or_default() as i32,
    })
}

/// The referral as an API answer: the stored submission plus its current state.
pub fn to_proto(row: &ReferralRow, history: &[EventRow], now: i64) -> Result<Referral, ApiError> {
    let mut r = Referral::decode(row.body.as_slice())
        .map_err(|e| ApiError::corrupt(format!("referral {}: {e}", row.id)))?;
    let status = parse_status(&row.status)?;
    r.status = status as i32;
    r.updated_at = Some(timestamp(row.updated_at));
    r.due_at = row.due_at.map(timestamp);
    r.overdue = row.due_at.is_some_and(|due| due < now) && !is_final(status);
    r.status_history = history
        .iter()
        .filter(|e| e.event_type != ReferralEventType::Overdue.as_str_name())
        .map(status_change)
        .collect::<Result<_, _>>()?;
    r.outcome = r
        .status_history
        .iter()
        .rev()
        .find(|c| c.status == ReferralStatus::Completed as i32)
        .map_or(0, |c| c.outcome);
    Ok(r)
}

/// A stored event as the watch feed carries it.
pub fn event_to_proto(e: &EventRow) -> Result<ReferralEvent, ApiError> {
    let kind = ReferralEventType::from_str_name(&e.event_type).unwrap_or_default();
    let mut event = ReferralEvent {
        cursor: e.seq.to_string(),
        r#type: kind as i32,
        referral_id: e.referral_id.clone(),
        from_agency: e.from_agency.clone(),
        to_agency: e.to_agency.clone(),
        occurred_at: Some(timestamp(e.occurred_at)),
        ..ReferralEvent::default()
    };
    if !e.application_id.is_empty() {
        event.application_id = e.application_id.clone();
        event.application_status =
            ApplicationStatus::from_str_name(&e.status).unwrap_or_default() as i32;
        event.clearance_agency = e.clearance_agency.clone();
        event.clearance_status =
            ClearanceStatus::from_str_name(&e.clearance_status).unwrap_or_default() as i32;
    } else if e.information_request_id.is_empty() {
        event.status = parse_status(&e.status)? as i32;
        event.change = (kind != ReferralEventType::Overdue)
            .then(|| status_change(e))
            .transpose()?;
    } else {
        event.information_request_id = e.information_request_id.clone();
        event.information_request_status =
            InformationRequestStatus::from_str_name(&e.status).unwrap_or_default() as i32;
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: ReferralStatus) -> ReferralRow {
        ReferralRow {
            id: "01REF".into(),
            from_agency: "social-services".into(),
            to_agency: "housing".into(),
            request_id: "r".into(),
            service_code: "s".into(),
            category: String::new(),
            priority: String::new(),
            status: status.as_str_name().into(),
            due_at: Some(1_000),
            created_at: 0,
            updated_at: 0,
            body: Referral::default().encode_to_vec(),
        }
    }

    #[test]
    fn only_the_two_parties_have_a_side() {
        let r = row(ReferralStatus::Submitted);
        assert_eq!(side_of(&r, "social-services").unwrap(), Actor::Sender);
        assert_eq!(side_of(&r, "housing").unwrap(), Actor::Recipient);
        assert!(matches!(
            side_of(&r, "police"),
            Err(ApiError::NotParty { .. })
        ));
        assert_eq!(counterpart(&r, "housing"), "social-services");
        assert_eq!(counterpart(&r, "social-services"), "housing");
    }

    #[test]
    fn a_stored_referral_is_overdue_only_past_due_and_not_final() {
        let history = [];
        assert!(
            to_proto(&row(ReferralStatus::Accepted), &history, 1_001)
                .unwrap()
                .overdue
        );
        assert!(
            !to_proto(&row(ReferralStatus::Accepted), &history, 1_000)
                .unwrap()
                .overdue
        );
        assert!(
            !to_proto(&row(ReferralStatus::Completed), &history, 5_000)
                .unwrap()
                .overdue
        );
    }

    #[test]
    fn the_outcome_is_that_of_the_last_completion_and_overdue_events_are_not_history() {
        let event =
            |kind: ReferralEventType, status: ReferralStatus, outcome: ReferralOutcome| EventRow {
                seq: 1,
                referral_id: "01REF".into(),
                information_request_id: String::new(),
                from_agency: "social-services".into(),
                to_agency: "housing".into(),
                event_type: kind.as_str_name().into(),
                status: status.as_str_name().into(),
                actor_agency: "housing".into(),
                reason_code: String::new(),
                note: String::new(),
                outcome: outcome.as_str_name().into(),
                occurred_at: 5,
                ..EventRow::default()
            };
        let history = [
            event(
                ReferralEventType::Submitted,
                ReferralStatus::Submitted,
                ReferralOutcome::Unspecified,
            ),
            event(
                ReferralEventType::Overdue,
                ReferralStatus::Submitted,
                ReferralOutcome::Unspecified,
            ),
            event(
                ReferralEventType::StatusChanged,
                ReferralStatus::Completed,
                ReferralOutcome::Resolved,
            ),
        ];
        let r = to_proto(&row(ReferralStatus::Completed), &history, 0).unwrap();
        assert_eq!(r.status_history.len(), 2);
        assert_eq!(r.outcome, ReferralOutcome::Resolved as i32);
        let overdue = event_to_proto(&history[1]).unwrap();
        assert!(overdue.change.is_none() && overdue.cursor == "1");
    }

    #[test]
    fn a_row_with_an_unknown_status_is_a_storage_error() {
        let mut r = row(ReferralStatus::Submitted);
        r.status = "NOT_A_STATUS".into();
        assert!(matches!(
            to_proto(&r, &[], 0),
            Err(ApiError::Storage { .. })
        ));
    }
}
