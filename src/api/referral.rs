//! jisr.v1.ReferralService: validate → `domain::exchange` (writes) or the store (reads) →
//! reply. The lifecycle, idempotency, events, deliveries and the audit seal are the
//! exchange's; this file only checks input and maps answers.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_types::FieldViolation;

use super::paging::IdPage;
use super::validate::{is_code, Violations};
use super::GatewayExchange;
use crate::common::error::{ApiError, Reason};
use crate::common::time::now_ms;
use crate::directory::Directory;
use crate::domain::exchange::referral::{
    counterpart, event_to_proto, not_found, not_party, to_proto, StatusUpdate,
};
use crate::layers::{self as auth, Caller};
use crate::pb::v1::referral_service_server::ReferralService;
use crate::pb::v1::*;
use crate::store::{EventRow, ListFilter, ReferralRow, Store};
use crate::tls::Registry;
pub(crate) const DEFAULT_PAGE_SIZE: i32 = 50;
pub(crate) const MAX_PAGE_SIZE: i32 = 500;
const WATCH_BATCH: i64 = 256;
/// How often an idle watch looks for events committed by other gateway replicas.
const WATCH_POLL: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct ReferralApi {
    exchange: GatewayExchange,
    /// Reads (get, list, watch) go straight to the store.
    store: Store,
    registry: Registry,
    shutdown: watch::Receiver<bool>,
}

impl ReferralApi {
    pub fn new(
        exchange: GatewayExchange,
        store: Store,
        registry: Registry,
        shutdown: watch::Receiver<bool>,
    ) -> ReferralApi {
        ReferralApi {
            exchange,
            store,
            registry,
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
        let referral = validate_submit(
            &self.registry,
            self.exchange.directory(),
            caller.agency(),
            &req,
            now,
        )?;
        self.exchange
            .submit_referral(caller, referral, req.request_id, now)
            .await
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
        let statuses = v.enum_names::<ReferralStatus>(
            "statuses",
            &req.statuses,
            "a ReferralStatus",
            ReferralStatus::as_str_name,
        );
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
        let update = StatusUpdate {
            referral_id: req.referral_id,
            request_id: req.request_id,
            status: to,
            reason,
            outcome,
            note: req.note,
        };
        self.exchange
            .update_referral_status(caller, update, now_ms())
            .await
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
            // Counted open for as long as this task serves the stream.
            let _open = OpenWatch::new();
            loop {
                if *shutdown.borrow_and_update() {
                    let _ = tx
                        .send(Err(Status::from(ApiError::refused(
                            Reason::ShuttingDown,
                            "the gateway is shutting down; reconnect and resume from your last cursor",
                        ))))
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

/// One open WatchReferralEvents stream, for `jisr_watch_streams_open`.
struct OpenWatch;

impl OpenWatch {
    fn new() -> OpenWatch {
        crate::telemetry::metrics::metrics().watch_streams.inc();
        OpenWatch
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        crate::telemetry::metrics::metrics().watch_streams.dec();
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
