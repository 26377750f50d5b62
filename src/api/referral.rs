//! jisr.v1.ReferralService: validate → lifecycle rules → one store transaction → reply.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_types::FieldViolation;

use super::convert::{receipt_proto, replay, timestamp, traceparent};
use super::paging::IdPage;
use super::validate::{is_code, Violations, UNREADABLE_DOCUMENT};
use crate::common::time::now_ms;
use crate::common::ApiError;
use crate::directory::Directory;
use crate::domain::payload;
use crate::domain::policy::Policy;
use crate::domain::referral::{check_transition, is_final, Actor};
use crate::domain::time_frames;
use crate::layers::{self as auth, Caller};
use crate::pb::v1::referral_service_server::ReferralService;
use crate::pb::v1::*;
use crate::store::outbox::NewDelivery;
use crate::store::{EventRow, ListFilter, NewEvent, ReferralRow, Store};
use crate::tls::Registry;
use std::sync::Arc;

const SUBMIT: &str = "jisr.v1.ReferralService/SubmitReferral";
const UPDATE: &str = "jisr.v1.ReferralService/UpdateReferralStatus";
pub(crate) const DEFAULT_PAGE_SIZE: i32 = 50;
pub(crate) const MAX_PAGE_SIZE: i32 = 500;
const WATCH_BATCH: i64 = 256;
/// How often an idle watch looks for events committed by other gateway replicas.
const WATCH_POLL: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct ReferralApi {
    store: Store,
    registry: Registry,
    /// Where each agency may send referrals.
    policy: Policy,
    /// Services and their time frames (due dates).
    directory: Arc<Directory>,
    shutdown: watch::Receiver<bool>,
}

impl ReferralApi {
    pub fn new(
        store: Store,
        registry: Registry,
        policy: Policy,
        directory: Arc<Directory>,
        shutdown: watch::Receiver<bool>,
    ) -> ReferralApi {
        ReferralApi {
            store,
            registry,
            policy,
            directory,
            shutdown,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<WatchReferralEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ReferralService for ReferralApi {
    async fn submit_referral(
        &self,
        request: Request<SubmitReferralRequest>,
    ) -> Result<Response<SubmitReferralResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.submit(&caller, request.into_inner()).await)
    }

    async fn get_referral(
        &self,
        request: Request<GetReferralRequest>,
    ) -> Result<Response<GetReferralResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.get(&caller, request.into_inner()).await)
    }

    async fn list_referrals(
        &self,
        request: Request<ListReferralsRequest>,
    ) -> Result<Response<ListReferralsResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.list(&caller, request.into_inner()).await)
    }

    async fn update_referral_status(
        &self,
        request: Request<UpdateReferralStatusRequest>,
    ) -> Result<Response<UpdateReferralStatusResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.update(&caller, request.into_inner()).await)
    }

    type WatchReferralEventsStream = EventStream;

    async fn watch_referral_events(
        &self,
        request: Request<WatchReferralEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.watch(&caller, request.into_inner()).await)
    }
}

impl ReferralApi {
    async fn submit(
        &self,
        caller: &Caller,
        req: SubmitReferralRequest,
    ) -> Result<SubmitReferralResponse, ApiError> {
        let now = now_ms();
        let mut referral =
            validate_submit(&self.registry, &self.directory, caller.agency(), &req, now)?;
        let decision =
            self.policy
                .may_refer(caller.agency(), &referral.to_agency, &referral.service_code);
        caller.audit.set_target("", &referral.to_agency);
        super::check_policy(&decision, &caller.audit, || {
            format!(
                "agency {} may not send referrals for {} to {}: its policy.refer_to does not allow it",
                caller.agency(),
                referral.service_code,
                referral.to_agency
            )
        })?;
        // The same request_id with a different body is a different request; output-only
        // fields (a spoofed from_agency, say) were dropped above and do not count.
        let hash = Sha256::digest(referral.encode_to_vec()).to_vec();

        let due_at = time_frames::due_at(&self.directory, &referral.service_code, now);
        let agency = caller.agency().to_string();
        let trace_id = caller.trace_id.clone();
        let request_id = req.request_id;
        let (response, receipt) = self
            .store
            .write(Some(&caller.audit), move |tx| {
                Box::pin(async move {
                    if let Some(prev) = tx.idempotent_record(&agency, &request_id).await? {
                        return replay::<SubmitReferralResponse>(prev, SUBMIT, &hash, &request_id);
                    }
                    referral.id = ulid::Ulid::new().to_string();
                    referral.request_id = request_id.clone();
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
                    tx.insert_event(&NewEvent {
                        referral_id: &row.id,
                        information_request_id: "",
                        from_agency: &row.from_agency,
                        to_agency: &row.to_agency,
                        event_type: ReferralEventType::Submitted.as_str_name(),
                        status: &row.status,
                        actor_agency: &agency,
                        reason_code: StatusReason::Unspecified.as_str_name(),
                        note: "",
                        outcome: ReferralOutcome::Unspecified.as_str_name(),
                        occurred_at: now,
                    })
                    .await?;
                    if let Some(entry) = tx.audit() {
                        entry.target_ids.push(row.id.clone());
                    }
                    let receipt = tx.audit_receipt()?;
                    let history = tx.referral_history(&row.id).await?;
                    let delivered = to_proto(&row, &history, now)?;
                    // The recipient's copy, delivered through its adapter (same transaction).
                    tx.enqueue(
                        &NewDelivery {
                            agency: &row.to_agency,
                            kind: payload::KIND_REFERRAL,
                            subject_id: &row.id,
                            payload: payload::referral(&delivered),
                            traceparent: &traceparent(&delivered.trace_id),
                        },
                        now,
                    )
                    .await?;
                    let response = SubmitReferralResponse {
                        referral: Some(delivered),
                        audit_receipt: Some(receipt_proto(&receipt)),
                    };
                    tx.record_idempotent(
                        &agency,
                        &request_id,
                        SUBMIT,
                        &hash,
                        &response.encode_to_vec(),
                        now,
                    )
                    .await?;
                    Ok(response)
                })
            })
            .await?;
        if let Some(r) = &response.referral {
            caller.audit.set_target(&r.id, &r.to_agency);
        }
        if receipt.is_some() {
            tracing::info!(from = %caller.agency(), to = %response.referral.as_ref().map_or("", |r| r.to_agency.as_str()), "referral submitted");
        }
        Ok(response)
    }

    async fn get(
        &self,
        caller: &Caller,
        req: GetReferralRequest,
    ) -> Result<GetReferralResponse, ApiError> {
        let mut v = Violations::default();
        v.ulid("referral_id", &req.referral_id);
        v.finish()?;
        caller.audit.set_target(&req.referral_id, "");
        let row = self.visible_referral(caller, &req.referral_id).await?;
        caller
            .audit
            .set_target(&row.id, counterpart(&row, caller.agency()));
        let history = self
            .store
            .referral_history(std::slice::from_ref(&row.id))
            .await?;
        Ok(GetReferralResponse {
            referral: Some(to_proto(&row, &history, now_ms())?),
        })
    }

    async fn visible_referral(&self, caller: &Caller, id: &str) -> Result<ReferralRow, ApiError> {
        let row = self
            .store
            .referral(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if row.from_agency != caller.agency() && row.to_agency != caller.agency() {
            return Err(not_party(id));
        }
        Ok(row)
    }

    async fn list(
        &self,
        caller: &Caller,
        req: ListReferralsRequest,
    ) -> Result<ListReferralsResponse, ApiError> {
        let mut v = Violations::default();
        let direction = v.enum_value::<ReferralDirection>(
            "direction",
            req.direction,
            false,
            "a ReferralDirection",
        );
        let mut statuses = Vec::new();
        for (i, s) in req.statuses.iter().enumerate() {
            let field = format!("statuses[{i}]");
            if let Some(s) = v.enum_value::<ReferralStatus>(&field, *s, true, "a ReferralStatus") {
                statuses.push(s.as_str_name().to_string());
            }
        }
        statuses.sort();
        statuses.dedup();
        let category =
            v.enum_value::<ReferralCategory>("category", req.category, false, "a ReferralCategory");
        let priority =
            v.enum_value::<ReferralPriority>("priority", req.priority, false, "a ReferralPriority");
        let fingerprint = format!(
            "{}|{}|{:?}|{}|{}|{}",
            caller.agency(),
            req.direction,
            statuses,
            req.category,
            req.priority,
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
        let filter = ListFilter {
            agency: caller.agency().to_string(),
            sent: direction == Some(ReferralDirection::Sent),
            received: direction == Some(ReferralDirection::Received),
            statuses,
            category: category
                .filter(|c| *c != ReferralCategory::Unspecified)
                .map(|c| c.as_str_name().into()),
            priority: priority
                .filter(|p| *p != ReferralPriority::Unspecified)
                .map(|p| p.as_str_name().into()),
            overdue_at: req.overdue_only.then_some(now),
            before_id: page.before_id.clone(),
            limit: page.fetch_limit(),
        };
        let mut rows = self.store.list_referrals(&filter).await?;
        let next_page_token = page.finish(&mut rows, |r| &r.id);
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut histories: HashMap<String, Vec<EventRow>> = HashMap::new();
        for e in self.store.referral_history(&ids).await? {
            histories.entry(e.referral_id.clone()).or_default().push(e);
        }
        let referrals = rows
            .iter()
            .map(|r| {
                to_proto(
                    r,
                    histories.get(&r.id).map(Vec::as_slice).unwrap_or_default(),
                    now,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(ListReferralsResponse {
            referrals,
            next_page_token,
        })
    }

    async fn update(
        &self,
        caller: &Caller,
        req: UpdateReferralStatusRequest,
    ) -> Result<UpdateReferralStatusResponse, ApiError> {
        let mut v = Violations::default();
        v.ulid("referral_id", &req.referral_id);
        v.request_id("request_id", &req.request_id);
        let status =
            v.enum_value::<ReferralStatus>("status", req.status, true, "the new ReferralStatus");
        let reason =
            v.enum_value::<StatusReason>("reason_code", req.reason_code, false, "a StatusReason");
        let outcome =
            v.enum_value::<ReferralOutcome>("outcome", req.outcome, false, "a ReferralOutcome");
        v.max_len("note", &req.note, 2000);
        if let Some(status) = status {
            let needs_reason =
                matches!(status, ReferralStatus::Rejected | ReferralStatus::Withdrawn);
            v.check(
                !needs_reason || reason.is_some_and(|r| r != StatusReason::Unspecified),
                "reason_code",
                format!(
                    "is required when the status is {}",
                    crate::domain::referral::short(status)
                ),
            );
            let completed = status == ReferralStatus::Completed;
            v.check(
                !completed || outcome.is_some_and(|o| o != ReferralOutcome::Unspecified),
                "outcome",
                "is required when the status is COMPLETED",
            );
            v.check(
                completed || req.outcome == 0,
                "outcome",
                "is only allowed when the status is COMPLETED",
            );
        }
        v.check(
            reason != Some(StatusReason::Other) || !req.note.trim().is_empty(),
            "note",
            "is required when reason_code is OTHER: say what the reason is",
        );
        v.finish()?;
        let (reason, outcome) = (reason.unwrap_or_default(), outcome.unwrap_or_default());
        let Some(to) = status else {
            // Not reached: a missing status is a violation, so finish() returned above.
            return Err(ApiError::Invalid(vec![FieldViolation::new(
                "status",
                "is required",
            )]));
        };
        let hash = Sha256::digest(req.encode_to_vec()).to_vec();

        let now = now_ms();
        caller.audit.set_target(&req.referral_id, "");
        let agency = caller.agency().to_string();
        let (response, receipt) = self
            .store
            .write(Some(&caller.audit), move |tx| {
                Box::pin(async move {
                    if let Some(prev) = tx.idempotent_record(&agency, &req.request_id).await? {
                        return replay::<UpdateReferralStatusResponse>(
                            prev,
                            UPDATE,
                            &hash,
                            &req.request_id,
                        );
                    }
                    let mut row = tx
                        .referral(&req.referral_id)
                        .await?
                        .ok_or_else(|| not_found(&req.referral_id))?;
                    let actor = if row.from_agency == agency {
                        Actor::Sender
                    } else if row.to_agency == agency {
                        Actor::Recipient
                    } else {
                        return Err(not_party(&req.referral_id));
                    };
                    if let Some(entry) = tx.audit() {
                        entry.recipient_agency = counterpart(&row, &agency).to_string();
                    }
                    check_transition(parse_status(&row.status)?, to, actor)
                        .map_err(|e| e.into_error(&row.id))?;
                    row.status = to.as_str_name().to_string();
                    row.updated_at = now;
                    tx.set_referral_status(&row.id, &row.status, now).await?;
                    tx.insert_event(&NewEvent {
                        referral_id: &row.id,
                        information_request_id: "",
                        from_agency: &row.from_agency,
                        to_agency: &row.to_agency,
                        event_type: ReferralEventType::StatusChanged.as_str_name(),
                        status: &row.status,
                        actor_agency: &agency,
                        reason_code: reason.as_str_name(),
                        note: &req.note,
                        outcome: outcome.as_str_name(),
                        occurred_at: now,
                    })
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
                    let response = UpdateReferralStatusResponse {
                        referral: Some(referral),
                        audit_receipt: Some(receipt_proto(&receipt)),
                    };
                    tx.record_idempotent(
                        &agency,
                        &req.request_id,
                        UPDATE,
                        &hash,
                        &response.encode_to_vec(),
                        now,
                    )
                    .await?;
                    Ok(response)
                })
            })
            .await?;
        if let Some(r) = &response.referral {
            caller
                .audit
                .set_target(&r.id, counterpart_of(r, caller.agency()));
        }
        if receipt.is_some() {
            tracing::info!(status = ?response.referral.as_ref().map(|r| r.status()), by = %caller.agency(), "referral status changed");
        }
        Ok(response)
    }

    async fn watch(
        &self,
        caller: &Caller,
        req: WatchReferralEventsRequest,
    ) -> Result<EventStream, ApiError> {
        let mut v = Violations::default();
        let cursor = if req.cursor.is_empty() {
            None
        } else {
            let c = req.cursor.parse::<i64>().ok().filter(|c| *c >= 0);
            v.check(
                c.is_some(),
                "cursor",
                "is not a cursor this stream returned",
            );
            c
        };
        v.finish()?;
        let mut after = match cursor {
            Some(c) => c,
            None if req.only_new => self.store.latest_event_seq().await?,
            None => 0,
        };
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        let agency = caller.agency().to_string();
        let mut committed = store.subscribe_events();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                if *shutdown.borrow_and_update() {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "the gateway is shutting down; reconnect and resume from your last cursor",
                        )))
                        .await;
                    return;
                }
                // Mark what we have seen before reading, so a commit after the read wakes us.
                committed.borrow_and_update();
                let batch = match store.events_after(&agency, after, WATCH_BATCH).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                        return;
                    }
                };
                for event in &batch {
                    after = event.seq;
                    let item = event_to_proto(event)
                        .map(|event| WatchReferralEventsResponse { event: Some(event) });
                    if tx.send(item.map_err(Status::from)).await.is_err() {
                        return;
                    }
                }
                if !batch.is_empty() {
                    continue;
                }
                tokio::select! {
                    _ = committed.changed() => {}
                    _ = tokio::time::sleep(WATCH_POLL) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.changed() => {}
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Checks every input field and returns the referral with only its input fields.
pub fn validate_submit(
    registry: &Registry,
    directory: &Directory,
    caller: &str,
    req: &SubmitReferralRequest,
    now: i64,
) -> Result<Referral, ApiError> {
    let mut v = Violations::default();
    v.request_id("request_id", &req.request_id);
    let Some(r) = &req.referral else {
        v.add("referral", "is required");
        return Err(v.into_error());
    };
    v.recipient("referral.to_agency", &r.to_agency, caller, registry);
    let service_ok = is_code(&r.service_code);
    v.check(
        service_ok,
        "referral.service_code",
        "is required: the receiving agency's service code (1-64 of A-Z a-z 0-9 . _ -)",
    );
    // Where the directory lists the recipient's services, the code must be one of them.
    let offered: Vec<&str> = directory
        .services()
        .iter()
        .filter(|s| s.agency_id == r.to_agency)
        .map(|s| s.code.as_str())
        .collect();
    if service_ok && !offered.is_empty() && !offered.contains(&r.service_code.as_str()) {
        v.add(
            "referral.service_code",
            format!(
                "{:?} is not a service of {}; it offers: {} (see DirectoryService.SearchServices)",
                r.service_code,
                r.to_agency,
                offered.join(", ")
            ),
        );
    }
    v.enum_value::<ReferralCategory>("referral.category", r.category, true, "a ReferralCategory");
    v.enum_value::<ReferralPriority>("referral.priority", r.priority, true, "a ReferralPriority");
    v.subject("referral.subject", r.subject.as_ref());
    v.required_text("referral.summary", &r.summary, 4000);
    v.max_len("referral.reason", &r.reason, 4000);
    v.attachments("referral.attachments", &r.attachments);
    v.consent("referral.consent", r.consent.as_ref(), now);
    v.finish()?;
    Ok(Referral {
        to_agency: r.to_agency.clone(),
        service_code: r.service_code.clone(),
        category: r.category,
        priority: r.priority,
        subject: r.subject.clone(),
        summary: r.summary.clone(),
        reason: r.reason.clone(),
        attachments: r.attachments.clone(),
        consent: r.consent.clone(),
        ..Referral::default()
    })
}

/// The other agency of a referral, seen from `agency`.
fn counterpart<'a>(row: &'a ReferralRow, agency: &str) -> &'a str {
    if row.from_agency == agency {
        &row.to_agency
    } else {
        &row.from_agency
    }
}

fn counterpart_of<'a>(r: &'a Referral, agency: &str) -> &'a str {
    if r.from_agency == agency {
        &r.to_agency
    } else {
        &r.from_agency
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        kind: "referral",
        id: id.to_string(),
    }
}

fn not_party(id: &str) -> ApiError {
    ApiError::NotParty {
        kind: "referral",
        id: id.to_string(),
    }
}

fn parse_status(s: &str) -> Result<ReferralStatus, ApiError> {
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
fn to_proto(row: &ReferralRow, history: &[EventRow], now: i64) -> Result<Referral, ApiError> {
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

fn event_to_proto(e: &EventRow) -> Result<ReferralEvent, ApiError> {
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
    if e.information_request_id.is_empty() {
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
