//! Information requests through the exchange: asking (the asked agency's copy goes out
//! through its adapter) and responding (the requester hears the answer), each in one
//! transaction with the call's audit entry; and how a stored request reads as a message.

use prost::Message;
use tonic_types::FieldViolation;

use super::{record, Caller, Exchange, Once, UNREADABLE_DOCUMENT};
use crate::common::time::timestamp;
use crate::common::ApiError;
use crate::directory::calendar::add_working_days;
use crate::domain::information_request::{is_overdue, short};
use crate::domain::payload;
use crate::domain::records::{InformationRequestRow, NewDelivery, NewEvent};
use crate::domain::storage::{ExchangeTx, Storage};
use crate::pb::v1::respond_to_information_request_request::Response as Reply;
use crate::pb::v1::*;

pub const REQUEST: &str = "jisr.v1.InformationRequestService/RequestInformation";
pub const RESPOND: &str = "jisr.v1.InformationRequestService/RespondToInformationRequest";
const KIND: &str = "information request";
/// What a response without answers or decline is told.
pub const MISSING_RESPONSE: &str = "is required: answers (to answer) or decline (to decline)";

impl<S: Storage> Exchange<S> {
    /// Sends `ir` (its input fields only, validated) from the caller's agency.
    pub async fn request_information(
        &self,
        caller: &Caller,
        mut ir: InformationRequest,
        request_id: String,
        now: i64,
    ) -> Result<RequestInformationResponse, ApiError> {
        let agency = caller.agency().to_string();
        caller.audit.set_target("", &ir.to_agency);
        let decision = self.policy.may_ask(&agency, &ir.to_agency);
        decision.check(&caller.audit, || {
            format!(
                "agency {agency} may not send information requests to {}: its policy.ask does not allow it",
                ir.to_agency
            )
        })?;
        let once = Once::new(&agency, &request_id, REQUEST, &ir);
        let due_at = match &ir.due_at {
            Some(t) => crate::common::time::timestamp_ms(t).unwrap_or(now),
            None => add_working_days(
                now,
                self.settings.information_request_days,
                self.directory.calendar(),
            ),
        };
        let call_traceparent = caller.traceparent.clone();
        let (response, fresh) = self
            .write_once(caller, once, now, move |tx| {
                Box::pin(async move {
                    if !ir.referral_id.is_empty() {
                        let party = tx
                            .referral(&ir.referral_id)
                            .await?
                            .is_some_and(|r| r.from_agency == agency || r.to_agency == agency);
                        if !party {
                            return Err(ApiError::Invalid(vec![FieldViolation::new(
                                "information_request.referral_id",
                                "is not a referral your agency is party to",
                            )]));
                        }
                    }
                    ir.id = ulid::Ulid::new().to_string();
                    ir.request_id = request_id.clone();
                    ir.from_agency = agency.clone();
                    ir.status = InformationRequestStatus::Open as i32;
                    ir.due_at = Some(timestamp(due_at));
                    ir.created_at = Some(timestamp(now));
                    let row = InformationRequestRow {
                        id: ir.id.clone(),
                        from_agency: agency.clone(),
                        to_agency: ir.to_agency.clone(),
                        request_id,
                        referral_id: ir.referral_id.clone(),
                        status: InformationRequestStatus::Open.as_str_name().to_string(),
                        due_at,
                        created_at: now,
                        updated_at: now,
                        body: ir.encode_to_vec(),
                    };
                    tx.insert_information_request(&row).await?;
                    if let Some(entry) = tx.audit() {
                        entry.target_ids.push(row.id.clone());
                    }
                    let sent = to_proto(&row, now)?;
                    // The asked agency's copy, through its adapter (same transaction).
                    record(
                        tx,
                        &event(
                            &row,
                            ReferralEventType::InformationRequested,
                            &agency,
                            ("", ""),
                            now,
                        ),
                        &[NewDelivery {
                            agency: &row.to_agency,
                            kind: payload::KIND_INFORMATION_REQUEST,
                            subject_id: &row.id,
                            payload: payload::information_request(&sent),
                            traceparent: &call_traceparent,
                        }],
                        now,
                    )
                    .await?;
                    Ok(RequestInformationResponse {
                        information_request: Some(sent),
                        audit_receipt: Some(tx.audit_receipt()?.to_proto()),
                    })
                })
            })
            .await?;
        if let Some(r) = &response.information_request {
            caller.audit.set_target(&r.id, &r.to_agency);
            if fresh {
                tracing::info!(from = %caller.agency(), to = %r.to_agency, "information requested");
            }
        }
        Ok(response)
    }

    /// The asked agency answers or declines (`req` validated by `api`).
    pub async fn respond_to_information_request(
        &self,
        caller: &Caller,
        req: RespondToInformationRequestRequest,
        now: i64,
    ) -> Result<RespondToInformationRequestResponse, ApiError> {
        let agency = caller.agency().to_string();
        caller.audit.set_target(&req.information_request_id, "");
        let once = Once::new(&agency, &req.request_id, RESPOND, &req);
        let call_traceparent = caller.traceparent.clone();
        let (response, fresh) = self
            .write_once(caller, once, now, move |tx| {
                Box::pin(async move {
                    let id = &req.information_request_id;
                    let mut row = tx
                        .information_request(id)
                        .await?
                        .ok_or_else(|| not_found(id))?;
                    if let Some(entry) = tx.audit() {
                        entry.recipient_agency = if row.from_agency == agency {
                            row.to_agency.clone()
                        } else {
                            row.from_agency.clone()
                        };
                    }
                    may_respond(&row, &agency)?;
                    let mut ir = decode(&row)?;
                    let (new_status, reason, note) = match &req.response {
                        Some(Reply::Answers(a)) => {
                            check_answers(tx, &ir, &a.answers, &row, now).await?;
                            ir.answers = a.answers.clone();
                            (InformationRequestStatus::Answered, "", "")
                        }
                        Some(Reply::Decline(d)) => {
                            ir.decline_reason = d.reason;
                            ir.decline_note = d.note.clone();
                            (
                                InformationRequestStatus::Declined,
                                d.reason().as_str_name(),
                                d.note.as_str(),
                            )
                        }
                        None => {
                            return Err(ApiError::Invalid(vec![FieldViolation::new(
                                "response",
                                MISSING_RESPONSE,
                            )]))
                        }
                    };
                    row.status = new_status.as_str_name().to_string();
                    row.updated_at = now;
                    row.body = ir.encode_to_vec();
                    tx.update_information_request(&row).await?;
                    let answered = to_proto(&row, now)?;
                    // The requester hears the response through its adapter.
                    record(
                        tx,
                        &event(
                            &row,
                            ReferralEventType::InformationResponded,
                            &agency,
                            (reason, note),
                            now,
                        ),
                        &[NewDelivery {
                            agency: &row.from_agency,
                            kind: payload::KIND_INFORMATION_RESPONSE,
                            subject_id: &row.id,
                            payload: payload::information_response(&answered),
                            traceparent: &call_traceparent,
                        }],
                        now,
                    )
                    .await?;
                    Ok(RespondToInformationRequestResponse {
                        information_request: Some(answered),
                        audit_receipt: Some(tx.audit_receipt()?.to_proto()),
                    })
                })
            })
            .await?;
        if fresh {
            tracing::info!(by = %caller.agency(), status = ?response.information_request.as_ref().map(|r| r.status()), "information request answered");
        }
        Ok(response)
    }
}

/// Only the asked agency responds, and only while the request is OPEN.
pub fn may_respond(row: &InformationRequestRow, agency: &str) -> Result<(), ApiError> {
    if row.to_agency != agency {
        return Err(if row.from_agency == agency {
            ApiError::NotAskedAgency {
                id: row.id.clone(),
                asked: row.to_agency.clone(),
            }
        } else {
            not_party(&row.id)
        });
    }
    let status = parse_status(&row.status)?;
    if status != InformationRequestStatus::Open {
        return Err(ApiError::NotOpen {
            kind: KIND,
            id: row.id.clone(),
            current: short(status),
            action: "answered or declined",
        });
    }
    Ok(())
}

/// The other agency of a request, seen from `agency`; anyone else is refused.
pub fn counterpart<'a>(row: &'a InformationRequestRow, agency: &str) -> Result<&'a str, ApiError> {
    if row.from_agency == agency {
        Ok(&row.to_agency)
    } else if row.to_agency == agency {
        Ok(&row.from_agency)
    } else {
        Err(not_party(&row.id))
    }
}

/// Each answer names a question of the request, and each document it references is one
/// the asked agency may read; those documents are shared with the requester.
async fn check_answers<T: ExchangeTx>(
    tx: &mut T,
    ir: &InformationRequest,
    answers: &[Answer],
    row: &InformationRequestRow,
    now: i64,
) -> Result<(), ApiError> {
    let violations = unknown_questions(ir, answers);
    if !violations.is_empty() {
        return Err(ApiError::Invalid(violations));
    }
    let mut documents = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        for (j, d) in a.documents.iter().enumerate() {
            documents.push((
                format!("answers.answers[{i}].documents[{j}].document_id"),
                d.document_id.as_str(),
            ));
        }
    }
    let ids: Vec<&str> = documents.iter().map(|(_, id)| *id).collect();
    let unreadable = tx
        .share_documents(&ids, &row.to_agency, &row.from_agency, &row.id, now)
        .await?;
    if unreadable.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid(
        unreadable
            .into_iter()
            .map(|i| FieldViolation::new(documents[i].0.clone(), UNREADABLE_DOCUMENT))
            .collect(),
    ))
}

/// A violation for each answer that names no question of the request.
pub fn unknown_questions(ir: &InformationRequest, answers: &[Answer]) -> Vec<FieldViolation> {
    let codes: Vec<&str> = ir.questions.iter().map(|q| q.code.as_str()).collect();
    answers
        .iter()
        .enumerate()
        .filter(|(_, a)| !codes.contains(&a.question_code.as_str()))
        .map(|(i, a)| {
            FieldViolation::new(
                format!("answers.answers[{i}].question_code"),
                format!(
                    "{:?} is not a question of this request; its questions are: {}",
                    a.question_code,
                    codes.join(", ")
                ),
            )
        })
        .collect()
}

/// An event of the request (its current status) by `actor`, seen on both parties' watch
/// streams.
pub(crate) fn event<'a>(
    row: &'a InformationRequestRow,
    kind: ReferralEventType,
    actor: &'a str,
    (reason, note): (&'a str, &'a str),
    now: i64,
) -> NewEvent<'a> {
    NewEvent {
        referral_id: &row.referral_id,
        information_request_id: &row.id,
        from_agency: &row.from_agency,
        to_agency: &row.to_agency,
        event_type: kind.as_str_name(),
        status: &row.status,
        actor_agency: actor,
        reason_code: reason,
        note,
        outcome: "",
        occurred_at: now,
        ..NewEvent::default()
    }
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

pub fn parse_status(s: &str) -> Result<InformationRequestStatus, ApiError> {
    InformationRequestStatus::from_str_name(s)
        .ok_or_else(|| ApiError::corrupt(format!("unknown status {s:?}")))
}

fn decode(row: &InformationRequestRow) -> Result<InformationRequest, ApiError> {
    InformationRequest::decode(row.body.as_slice())
        .map_err(|e| ApiError::corrupt(format!("information request {}: {e}", row.id)))
}

/// The request as an API answer: the stored request plus its current state.
pub fn to_proto(row: &InformationRequestRow, now: i64) -> Result<InformationRequest, ApiError> {
    let mut r = decode(row)?;
    let status = parse_status(&row.status)?;
    r.status = status as i32;
    r.due_at = Some(timestamp(row.due_at));
    r.updated_at = Some(timestamp(row.updated_at));
    r.overdue = is_overdue(status, row.due_at, now);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: InformationRequestStatus) -> InformationRequestRow {
        InformationRequestRow {
            id: "01IR".into(),
            from_agency: "housing".into(),
            to_agency: "police".into(),
            request_id: "r".into(),
            referral_id: String::new(),
            status: status.as_str_name().into(),
            due_at: 10,
            created_at: 0,
            updated_at: 0,
            body: InformationRequest::default().encode_to_vec(),
        }
    }

    #[test]
    fn only_the_asked_agency_responds_and_only_while_open() {
        let open = row(InformationRequestStatus::Open);
        assert!(may_respond(&open, "police").is_ok());
        assert!(matches!(
            may_respond(&open, "housing"),
            Err(ApiError::NotAskedAgency { ref asked, .. }) if asked == "police"
        ));
        assert!(matches!(
            may_respond(&open, "charity"),
            Err(ApiError::NotParty { .. })
        ));
        for s in [
            InformationRequestStatus::Answered,
            InformationRequestStatus::Declined,
            InformationRequestStatus::Expired,
        ] {
            assert!(matches!(
                may_respond(&row(s), "police"),
                Err(ApiError::NotOpen { current, .. }) if current == short(s)
            ));
        }
        assert_eq!(counterpart(&open, "police").unwrap(), "housing");
        assert!(counterpart(&open, "charity").is_err());
    }

    #[test]
    fn answers_must_name_questions_of_the_request() {
        let ir = InformationRequest {
            questions: vec![Question {
                code: "income".into(),
                text: "Household income?".into(),
                ..Question::default()
            }],
            ..InformationRequest::default()
        };
        let answer = |code: &str| Answer {
            question_code: code.into(),
            value: "x".into(),
            documents: vec![],
        };
        assert!(unknown_questions(&ir, &[answer("income")]).is_empty());
        let v = unknown_questions(&ir, &[answer("income"), answer("rent")]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "answers.answers[1].question_code");
        assert!(v[0].description.contains("income"), "{}", v[0].description);
    }
}
