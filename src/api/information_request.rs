//! jisr.v1.InformationRequestService: one agency asks another for information about a
//! person (optionally about a referral it is party to); the asked agency answers, with
//! values and documents, or declines. validate → one store transaction (the request, its
//! event, the delivery to the other agency, the audit entry, the idempotency record) →
//! reply. Only the two agencies see a request.

use std::sync::Arc;

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tonic_types::FieldViolation;

use super::convert::{receipt_proto, replay, timestamp, traceparent};
use super::paging::IdPage;
use super::referral::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use super::validate::{is_code, Violations};
use crate::common::time::now_ms;
use crate::common::ApiError;
use crate::directory::calendar::add_working_days;
use crate::directory::Directory;
use crate::domain::information_request::{is_overdue, short};
use crate::domain::payload;
use crate::domain::policy::Policy;
use crate::layers::{self as auth, Caller};
use crate::pb::v1::information_request_service_server::InformationRequestService;
use crate::pb::v1::respond_to_information_request_request::Response as Reply;
use crate::pb::v1::*;
use crate::store::information_requests::{InformationRequestFilter, InformationRequestRow};
use crate::store::outbox::NewDelivery;
use crate::store::{NewEvent, Store, WriteTx};
use crate::tls::Registry;

const REQUEST: &str = "jisr.v1.InformationRequestService/RequestInformation";
const RESPOND: &str = "jisr.v1.InformationRequestService/RespondToInformationRequest";
const KIND: &str = "information request";
const MAX_QUESTIONS: usize = 50;
/// A due date at most this far ahead.
const MAX_DUE_AHEAD_MS: i64 = 366 * 86_400_000;

#[derive(Clone)]
pub struct InformationRequestApi {
    store: Store,
    registry: Registry,
    /// Which agencies each agency may ask.
    policy: Policy,
    /// The working-day calendar (default due dates).
    directory: Arc<Directory>,
    default_time_frame_days: u32,
}

impl InformationRequestApi {
    pub fn new(
        store: Store,
        registry: Registry,
        policy: Policy,
        directory: Arc<Directory>,
        default_time_frame_days: u32,
    ) -> InformationRequestApi {
        InformationRequestApi {
            store,
            registry,
            policy,
            directory,
            default_time_frame_days,
        }
    }
}

#[tonic::async_trait]
impl InformationRequestService for InformationRequestApi {
    async fn request_information(
        &self,
        request: Request<RequestInformationRequest>,
    ) -> Result<Response<RequestInformationResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.request(&caller, request.into_inner()).await)
    }

    async fn respond_to_information_request(
        &self,
        request: Request<RespondToInformationRequestRequest>,
    ) -> Result<Response<RespondToInformationRequestResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.respond(&caller, request.into_inner()).await)
    }

    async fn get_information_request(
        &self,
        request: Request<GetInformationRequestRequest>,
    ) -> Result<Response<GetInformationRequestResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.get(&caller, request.into_inner()).await)
    }

    async fn list_information_requests(
        &self,
        request: Request<ListInformationRequestsRequest>,
    ) -> Result<Response<ListInformationRequestsResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.list(&caller, request.into_inner()).await)
    }
}

impl InformationRequestApi {
    async fn request(
        &self,
        caller: &Caller,
        req: RequestInformationRequest,
    ) -> Result<RequestInformationResponse, ApiError> {
        let now = now_ms();
        let mut ir = validate_request(&self.registry, caller.agency(), &req, now)?;
        caller.audit.set_target("", &ir.to_agency);
        let decision = self.policy.may_ask(caller.agency(), &ir.to_agency);
        super::check_policy(&decision, &caller.audit, || {
            format!(
                "agency {} may not send information requests to {}: its policy.ask does not allow it",
                caller.agency(),
                ir.to_agency
            )
        })?;
        // Output-only fields were dropped: a spoofed from_agency neither counts nor sticks.
        let hash = Sha256::digest(ir.encode_to_vec()).to_vec();
        let due_at = match &ir.due_at {
            Some(t) => super::validate::timestamp_ms(t).unwrap_or(now),
            None => add_working_days(now, self.default_time_frame_days, self.directory.calendar()),
        };
        let agency = caller.agency().to_string();
        let trace_id = caller.trace_id.clone();
        let request_id = req.request_id;
        let (response, receipt) = self
            .store
            .write(Some(&caller.audit), move |tx| {
                Box::pin(async move {
                    if let Some(prev) = tx.idempotent_record(&agency, &request_id).await? {
                        return replay::<RequestInformationResponse>(
                            prev,
                            REQUEST,
                            &hash,
                            &request_id,
                        );
                    }
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
                        request_id: request_id.clone(),
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
                    let sent = record_change(
                        tx,
                        &row,
                        ReferralEventType::InformationRequested,
                        &agency,
                        ("", ""),
                        now,
                    )
                    .await?;
                    // The asked agency's copy, through its adapter (same transaction).
                    tx.enqueue(
                        &NewDelivery {
                            agency: &row.to_agency,
                            kind: payload::KIND_INFORMATION_REQUEST,
                            subject_id: &row.id,
                            payload: payload::information_request(&sent),
                            traceparent: &traceparent(&trace_id),
                        },
                        now,
                    )
                    .await?;
                    let response = RequestInformationResponse {
                        information_request: Some(sent),
                        audit_receipt: Some(receipt_proto(&tx.audit_receipt()?)),
                    };
                    tx.record_idempotent(
                        &agency,
                        &request_id,
                        REQUEST,
                        &hash,
                        &response.encode_to_vec(),
                        now,
                    )
                    .await?;
                    Ok(response)
                })
            })
            .await?;
        if let Some(r) = &response.information_request {
            caller.audit.set_target(&r.id, &r.to_agency);
        }
        if receipt.is_some() {
            tracing::info!(from = %caller.agency(), to = %response.information_request.as_ref().map_or("", |r| r.to_agency.as_str()), "information requested");
        }
        Ok(response)
    }

    async fn respond(
        &self,
        caller: &Caller,
        req: RespondToInformationRequestRequest,
    ) -> Result<RespondToInformationRequestResponse, ApiError> {
        validate_response(&req)?;
        let hash = Sha256::digest(req.encode_to_vec()).to_vec();
        let now = now_ms();
        caller.audit.set_target(&req.information_request_id, "");
        let agency = caller.agency().to_string();
        let trace_id = caller.trace_id.clone();
        let (response, receipt) = self
            .store
            .write(Some(&caller.audit), move |tx| {
                Box::pin(async move {
                    if let Some(prev) = tx.idempotent_record(&agency, &req.request_id).await? {
                        return replay::<RespondToInformationRequestResponse>(
                            prev,
                            RESPOND,
                            &hash,
                            &req.request_id,
                        );
                    }
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
                    if row.to_agency != agency {
                        return Err(if row.from_agency == agency {
                            ApiError::NotAskedAgency {
                                id: id.clone(),
                                asked: row.to_agency.clone(),
                            }
                        } else {
                            not_party(id)
                        });
                    }
                    let status = parse_status(&row.status)?;
                    if status != InformationRequestStatus::Open {
                        return Err(ApiError::NotOpen {
                            kind: KIND,
                            id: id.clone(),
                            current: short(status),
                            action: "answered or declined",
                        });
                    }
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
                    let answered = record_change(
                        tx,
                        &row,
                        ReferralEventType::InformationResponded,
                        &agency,
                        (reason, note),
                        now,
                    )
                    .await?;
                    // The requester hears the response through its adapter.
                    tx.enqueue(
                        &NewDelivery {
                            agency: &row.from_agency,
                            kind: payload::KIND_INFORMATION_RESPONSE,
                            subject_id: &row.id,
                            payload: payload::information_response(&answered),
                            traceparent: &traceparent(&trace_id),
                        },
                        now,
                    )
                    .await?;
                    let response = RespondToInformationRequestResponse {
                        information_request: Some(answered),
                        audit_receipt: Some(receipt_proto(&tx.audit_receipt()?)),
                    };
                    tx.record_idempotent(
                        &agency,
                        &req.request_id,
                        RESPOND,
                        &hash,
                        &response.encode_to_vec(),
                        now,
                    )
                    .await?;
                    Ok(response)
                })
            })
            .await?;
        if receipt.is_some() {
            tracing::info!(by = %caller.agency(), status = ?response.information_request.as_ref().map(|r| r.status()), "information request answered");
        }
        Ok(response)
    }

    async fn get(
        &self,
        caller: &Caller,
        req: GetInformationRequestRequest,
    ) -> Result<GetInformationRequestResponse, ApiError> {
        let mut v = Violations::default();
        v.ulid("information_request_id", &req.information_request_id);
        v.finish()?;
        let id = &req.information_request_id;
        caller.audit.set_target(id, "");
        let row = self
            .store
            .information_request(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let other = if row.from_agency == caller.agency() {
            &row.to_agency
        } else if row.to_agency == caller.agency() {
            &row.from_agency
        } else {
            return Err(not_party(id));
        };
        caller.audit.set_target(id, other);
        Ok(GetInformationRequestResponse {
            information_request: Some(to_proto(&row, now_ms())?),
        })
    }

    async fn list(
        &self,
        caller: &Caller,
        req: ListInformationRequestsRequest,
    ) -> Result<ListInformationRequestsResponse, ApiError> {
        let mut v = Violations::default();
        let direction = v.enum_value::<InformationRequestDirection>(
            "direction",
            req.direction,
            false,
            "an InformationRequestDirection",
        );
        let mut statuses = Vec::new();
        for (i, s) in req.statuses.iter().enumerate() {
            let field = format!("statuses[{i}]");
            if let Some(s) = v.enum_value::<InformationRequestStatus>(
                &field,
                *s,
                true,
                "an InformationRequestStatus",
            ) {
                statuses.push(s.as_str_name().to_string());
            }
        }
        statuses.sort();
        statuses.dedup();
        if !req.referral_id.is_empty() {
            v.ulid("referral_id", &req.referral_id);
        }
        let fingerprint = format!(
            "{}|{}|{:?}|{}|{}",
            caller.agency(),
            req.direction,
            statuses,
            req.referral_id,
            req.overdue_only
        );
        let page = IdPage::new(
            &mut v,
            req.page_size,
            &req.page_token,
            fingerprint,
            (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
        );
        v.finish()?;
        let now = now_ms();
        let filter = InformationRequestFilter {
            agency: caller.agency().to_string(),
            sent: direction == Some(InformationRequestDirection::Sent),
            received: direction == Some(InformationRequestDirection::Received),
            statuses,
            referral_id: (!req.referral_id.is_empty()).then(|| req.referral_id.clone()),
            overdue_at: req.overdue_only.then_some(now),
            before_id: page.before_id.clone(),
            limit: page.fetch_limit(),
        };
        let mut rows = self.store.list_information_requests(&filter).await?;
        let next_page_token = page.finish(&mut rows, |r| &r.id);
        Ok(ListInformationRequestsResponse {
            information_requests: rows
                .iter()
                .map(|r| to_proto(r, now))
                .collect::<Result<_, _>>()?,
            next_page_token,
        })
    }
}

/// Checks every input field and returns the request with only its input fields.
pub fn validate_request(
    registry: &Registry,
    caller: &str,
    req: &RequestInformationRequest,
    now: i64,
) -> Result<InformationRequest, ApiError> {
    let mut v = Violations::default();
    v.request_id("request_id", &req.request_id);
    let Some(r) = &req.information_request else {
        v.add("information_request", "is required");
        return Err(v.into_error());
    };
    v.recipient(
        "information_request.to_agency",
        &r.to_agency,
        caller,
        registry,
    );
    if !r.referral_id.is_empty() {
        v.ulid("information_request.referral_id", &r.referral_id);
    }
    v.subject("information_request.subject", r.subject.as_ref());
    let n = r.questions.len();
    v.check(
        (1..=MAX_QUESTIONS).contains(&n),
        "information_request.questions",
        format!("has {n} questions; between 1 and {MAX_QUESTIONS} are allowed"),
    );
    for (i, q) in r.questions.iter().enumerate() {
        let field = format!("information_request.questions[{i}]");
        v.check(
            is_code(&q.code),
            format!("{field}.code"),
            "is required: 1-64 characters of A-Z a-z 0-9 . _ -, such as household-income",
        );
        if r.questions[..i].iter().any(|p| p.code == q.code) {
            v.add(format!("{field}.code"), "is used by an earlier question");
        }
        v.required_text(&format!("{field}.text"), &q.text, 2000);
    }
    if let Some(due) = &r.due_at {
        v.future_time("information_request.due_at", due, now, MAX_DUE_AHEAD_MS);
    }
    v.finish()?;
    Ok(InformationRequest {
        to_agency: r.to_agency.clone(),
        referral_id: r.referral_id.clone(),
        subject: r.subject.clone(),
        questions: r.questions.clone(),
        due_at: r.due_at,
        ..InformationRequest::default()
    })
}

/// Checks the shape of a response; whether the answers fit the request is checked in
/// the transaction (`check_answers`).
pub fn validate_response(req: &RespondToInformationRequestRequest) -> Result<(), ApiError> {
    let mut v = Violations::default();
    v.ulid("information_request_id", &req.information_request_id);
    v.request_id("request_id", &req.request_id);
    match &req.response {
        None => v.add("response", MISSING_RESPONSE),
        Some(Reply::Answers(a)) => {
            let n = a.answers.len();
            v.check(
                (1..=MAX_QUESTIONS).contains(&n),
                "answers.answers",
                format!("has {n} answers; between 1 and {MAX_QUESTIONS} are allowed"),
            );
            for (i, answer) in a.answers.iter().enumerate() {
                let field = format!("answers.answers[{i}]");
                if a.answers[..i]
                    .iter()
                    .any(|p| p.question_code == answer.question_code)
                {
                    v.add(
                        format!("{field}.question_code"),
                        "is answered by an earlier answer",
                    );
                }
                v.max_len(&format!("{field}.value"), &answer.value, 4000);
                v.check(
                    !answer.value.trim().is_empty() || !answer.documents.is_empty(),
                    format!("{field}.value"),
                    "is required unless documents carry the answer",
                );
                v.attachments(&format!("{field}.documents"), &answer.documents);
            }
        }
        Some(Reply::Decline(d)) => {
            let reason =
                v.enum_value::<DeclineReason>("decline.reason", d.reason, true, "a DeclineReason");
            v.max_len("decline.note", &d.note, 2000);
            v.check(
                reason != Some(DeclineReason::Other) || !d.note.trim().is_empty(),
                "decline.note",
                "is required when the reason is OTHER: say what the reason is",
            );
        }
    }
    v.finish()
}

const MISSING_RESPONSE: &str = "is required: answers (to answer) or decline (to decline)";

/// Each answer names a question of the request, and each document it references is one
/// the asked agency may read; those documents are shared with the requester.
async fn check_answers(
    tx: &mut WriteTx,
    ir: &InformationRequest,
    answers: &[Answer],
    row: &InformationRequestRow,
    now: i64,
) -> Result<(), ApiError> {
    let mut v = Violations::default();
    let mut documents = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        if !ir.questions.iter().any(|q| q.code == a.question_code) {
            let codes: Vec<&str> = ir.questions.iter().map(|q| q.code.as_str()).collect();
            v.add(
                format!("answers.answers[{i}].question_code"),
                format!(
                    "{:?} is not a question of this request; its questions are: {}",
                    a.question_code,
                    codes.join(", ")
                ),
            );
        }
        for (j, d) in a.documents.iter().enumerate() {
            documents.push((
                format!("answers.answers[{i}].documents[{j}].document_id"),
                d.document_id.as_str(),
            ));
        }
    }
    v.finish()?;
    let mut v = Violations::default();
    let ids: Vec<&str> = documents.iter().map(|(_, id)| *id).collect();
    let unreadable = tx
        .share_documents(&ids, &row.to_agency, &row.from_agency, &row.id, now)
        .await?;
    for i in unreadable {
        v.add(documents[i].0.clone(), super::validate::UNREADABLE_DOCUMENT);
    }
    v.finish()
}

/// Appends the request's event (seen on both parties' watch streams) and returns the
/// request as it now stands.
async fn record_change(
    tx: &mut WriteTx,
    row: &InformationRequestRow,
    event: ReferralEventType,
    actor: &str,
    (reason, note): (&str, &str),
    now: i64,
) -> Result<InformationRequest, ApiError> {
    tx.insert_event(&NewEvent {
        referral_id: &row.referral_id,
        information_request_id: &row.id,
        from_agency: &row.from_agency,
        to_agency: &row.to_agency,
        event_type: event.as_str_name(),
        status: &row.status,
        actor_agency: actor,
        reason_code: reason,
        note,
        outcome: "",
        occurred_at: now,
    })
    .await?;
    to_proto(row, now)
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        kind: KIND,
        id: id.to_string(),
    }
}

fn not_party(id: &str) -> ApiError {
    ApiError::NotParty {
        kind: KIND,
        id: id.to_string(),
    }
}

fn parse_status(s: &str) -> Result<InformationRequestStatus, ApiError> {
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
