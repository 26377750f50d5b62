//! Applications for joint services through the exchange: submitting (the clearances whose
//! prerequisites are met go out at once, each through its agency's adapter), a clearing
//! agency moving its own clearance, the lead withdrawing, and the gateway's moves at a
//! clearance's deadline (deemed approval, or overdue). Each runs in one transaction with
//! the call's audit entry. The application's status is never set: after every change
//! [`advance`] derives it from the clearances by the service's decision rule
//! (`domain::application`), requests the clearances that became ready, and cancels the
//! open ones once the application is decided.

use std::collections::BTreeMap;

use prost::Message;
use tonic_types::FieldViolation;

use super::{record, Caller, Exchange, Once, UNREADABLE_DOCUMENT};
use crate::common::error::Reason;
use crate::common::time::{rfc3339, timestamp, timestamp_ms};
use crate::common::{ApiError, GATEWAY_ACTOR};
use crate::directory::calendar::{add_working_days, Calendar};
use crate::domain::application::{self as rules, JointServiceSpec};
use crate::domain::payload::{self, KIND_CLEARANCE_REQUEST, KIND_STATUS_UPDATE};
use crate::domain::records::{ApplicationRow, ClearanceRow, NewDelivery, NewEvent};
use crate::domain::storage::{ExchangeTx, Storage};
use crate::pb::adapter_v1::ApplicationStatusUpdate;
use crate::pb::v1::{
    Application, ApplicationStatus, Clearance, ClearanceStatus, ReferralEventType,
    SubmitApplicationResponse, UpdateClearanceRequest, UpdateClearanceResponse,
    WithdrawApplicationRequest, WithdrawApplicationResponse,
};

pub const SUBMIT: &str = "jisr.v1.ApplicationService/SubmitApplication";
pub const UPDATE: &str = "jisr.v1.ApplicationService/UpdateClearance";
pub const WITHDRAW: &str = "jisr.v1.ApplicationService/WithdrawApplication";
const KIND: &str = "application";

impl<S: Storage> Exchange<S> {
    /// The joint service named `code` in the directory config.
    pub fn joint_service(&self, code: &str) -> Option<&JointServiceSpec> {
        self.settings.joint_services.iter().find(|s| s.code == code)
    }

    /// The lead submits `app` (its input fields only, validated).
    pub async fn submit_application(
        &self,
        caller: &Caller,
        mut app: Application,
        request_id: String,
        now: i64,
    ) -> Result<SubmitApplicationResponse, ApiError> {
        let lead = caller.agency().to_string();
        let Some(spec) = self.joint_service(&app.service_code) else {
            let known: Vec<&str> = self
                .settings
                .joint_services
                .iter()
                .map(|s| s.code.as_str())
                .collect();
            return Err(ApiError::Invalid(vec![FieldViolation::new(
                "application.service_code",
                format!(
                    "{:?} is not a joint service of this gateway; its joint services are: {}",
                    app.service_code,
                    known.join(", ")
                ),
            )]));
        };
        self.policy
            .may_apply(&lead, &spec.code)
            .check(&caller.audit, || {
                format!(
                    "agency {lead} may not submit applications for {}: its policy.apply does not allow it",
                    spec.code
                )
            })?;
        let once = Once::new(&lead, &request_id, SUBMIT, &app);
        let exchange = self.clone();
        let traceparent = caller.traceparent.clone();
        let trace_id = caller.trace_id.clone();
        let (response, fresh) = self
            .write_once(caller, once, now, move |tx| {
                Box::pin(async move {
                    let spec = exchange.spec_of(&app)?;
                    let calendar = exchange.directory.calendar();
                    app.id = ulid::Ulid::new().to_string();
                    app.request_id = request_id.clone();
                    app.lead_agency = lead.clone();
                    app.trace_id = trace_id;
                    app.created_at = Some(timestamp(now));
                    app.required_approvals = spec.required();
                    app.clearances = spec
                        .clearances
                        .iter()
                        .map(|c| Clearance {
                            agency: c.agency.clone(),
                            status: ClearanceStatus::Waiting as i32,
                            after: c.after.clone(),
                            ..Clearance::default()
                        })
                        .collect();
                    let advanced = advance(spec, &mut app, now, calendar);
                    let due_at = expected_completion(spec, &app, now, calendar).unwrap_or(now);
                    app.due_at = Some(timestamp(due_at));
                    share_attachments(tx, &app, now).await?;
                    let row = stored(&app, now);
                    tx.insert_application(&row, &clearance_rows(&app)).await?;
                    if let Some(entry) = tx.audit() {
                        entry.target_ids.push(app.id.clone());
                    }
                    let submitted =
                        app_event(&app, ReferralEventType::ApplicationSubmitted, &lead, now);
                    record(tx, &submitted.event(&lead), &[], now).await?;
                    let mover = Mover {
                        spec,
                        calendar,
                        actor: &lead,
                        traceparent: &traceparent,
                        now,
                    };
                    mover.publish(tx, &app, None, "", &advanced).await?;
                    Ok(SubmitApplicationResponse {
                        application: Some(mover.view(&app, &lead)),
                        audit_receipt: Some(tx.audit_receipt()?.to_proto()),
                    })
                })
            })
            .await?;
        if let Some(a) = &response.application {
            caller.audit.set_target(&a.id, "");
            if fresh {
                tracing::info!(lead = %caller.agency(), service = %a.service_code, "application submitted");
            }
        }
        Ok(response)
    }

    /// A clearing agency moves its own clearance (`req` validated by `api`).
    pub async fn update_clearance(
        &self,
        caller: &Caller,
        req: UpdateClearanceRequest,
        now: i64,
    ) -> Result<UpdateClearanceResponse, ApiError> {
        let agency = caller.agency().to_string();
        caller.audit.set_target(&req.application_id, "");
        let once = Once::new(&agency, &req.request_id, UPDATE, &req);
        let exchange = self.clone();
        let traceparent = caller.traceparent.clone();
        let (response, fresh) = self
            .write_once(caller, once, now, move |tx| {
                Box::pin(async move {
                    let (row, mut app) = load(tx, &req.application_id).await?;
                    if let Some(entry) = tx.audit() {
                        entry.recipient_agency = row.lead_agency.clone();
                    }
                    let mover = exchange.mover(&app, &agency, &traceparent, now)?;
                    let Some(i) = app.clearances.iter().position(|c| c.agency == agency) else {
                        return Err(if app.lead_agency == agency {
                            ApiError::refused(
                                Reason::NotAClearingAgency,
                                format!(
                                    "your agency leads application {} but clears nothing in it; \
                                     the lead withdraws it with WithdrawApplication",
                                    app.id
                                ),
                            )
                            .with("application_id", app.id.clone())
                        } else {
                            not_party(&app.id)
                        });
                    };
                    still_open(&app)?;
                    let to = req.status();
                    check_move(&app, i, to)?;
                    if to == ClearanceStatus::InformationRequested {
                        let ir = tx.information_request(&req.information_request_id).await?;
                        if !ir.is_some_and(|ir| ir.from_agency == agency && ir.to_agency == app.lead_agency) {
                            return Err(ApiError::Invalid(vec![FieldViolation::new(
                                "information_request_id",
                                format!(
                                    "is not an information request your agency sent the lead agency ({}); \
                                     send one with InformationRequestService.RequestInformation first",
                                    app.lead_agency
                                ),
                            )]));
                        }
                    }
                    let c = &mut app.clearances[i];
                    c.status = to as i32;
                    c.updated_at = Some(timestamp(now));
                    c.note = req.note.clone();
                    c.information_request_id = req.information_request_id.clone();
                    match to {
                        ClearanceStatus::Approved => {
                            c.conditions = req.conditions.clone();
                            c.decided_at = Some(timestamp(now));
                        }
                        ClearanceStatus::Rejected => {
                            c.reason = req.reason.clone();
                            c.decided_at = Some(timestamp(now));
                        }
                        _ => {}
                    }
                    let note = if req.reason.is_empty() { req.note.clone() } else { req.reason.clone() };
                    mover.settle(tx, &mut app, Some(&agency), &note).await?;
                    Ok(UpdateClearanceResponse {
                        application: Some(mover.view(&app, &agency)),
                        audit_receipt: Some(tx.audit_receipt()?.to_proto()),
                    })
                })
            })
            .await?;
        if fresh {
            tracing::info!(by = %caller.agency(), status = ?req_status(&response), "clearance updated");
        }
        Ok(response)
    }

    /// The lead withdraws an application still in progress.
    pub async fn withdraw_application(
        &self,
        caller: &Caller,
        req: WithdrawApplicationRequest,
        now: i64,
    ) -> Result<WithdrawApplicationResponse, ApiError> {
        let agency = caller.agency().to_string();
        caller.audit.set_target(&req.application_id, "");
        let once = Once::new(&agency, &req.request_id, WITHDRAW, &req);
        let exchange = self.clone();
        let traceparent = caller.traceparent.clone();
        let (response, _) = self
            .write_once(caller, once, now, move |tx| {
                Box::pin(async move {
                    let (_, mut app) = load(tx, &req.application_id).await?;
                    if app.lead_agency != agency {
                        return Err(if app.clearances.iter().any(|c| c.agency == agency) {
                            ApiError::refused(
                                Reason::NotTheLeadAgency,
                                format!(
                                    "only the lead agency ({}) may withdraw application {}",
                                    app.lead_agency, app.id
                                ),
                            )
                            .with("lead_agency", app.lead_agency.clone())
                        } else {
                            not_party(&app.id)
                        });
                    }
                    still_open(&app)?;
                    let mover = exchange.mover(&app, &agency, &traceparent, now)?;
                    app.withdrawal_reason = req.reason.clone();
                    mover.settle(tx, &mut app, None, &req.reason).await?;
                    Ok(WithdrawApplicationResponse {
                        application: Some(mover.view(&app, &agency)),
                        audit_receipt: Some(tx.audit_receipt()?.to_proto()),
                    })
                })
            })
            .await?;
        Ok(response)
    }

    /// The clearances whose deadline passed at `now`: each counts as approved if its
    /// service says silence is consent for it, or else gets one CLEARANCE_OVERDUE event,
    /// told to both sides. Answers (overdue, deemed approved).
    pub(super) async fn clearances_due(&self, now: i64) -> Result<(usize, usize), ApiError> {
        let exchange = self.clone();
        let (counts, _) = self
            .storage
            .transact(None, move |tx| {
                Box::pin(async move {
                    let due = tx.take_clearances_due(now, super::gateway::SWEEP_BATCH).await?;
                    let (mut overdue, mut deemed) = (0, 0);
                    for c in &due {
                        let (_, mut app) = load(tx, &c.application_id).await?;
                        let mover = exchange.mover(&app, GATEWAY_ACTOR, "", now)?;
                        let spec = mover.spec;
                        let Some(i) = app.clearances.iter().position(|x| x.agency == c.agency) else {
                            continue;
                        };
                        let cl = &app.clearances[i];
                        let due_at = cl.due_at.as_ref().and_then(timestamp_ms).unwrap_or(now);
                        if app.status() != ApplicationStatus::InProgress || !is_open(cl.status()) {
                            continue;
                        }
                        if spec.deemed_approved(&cl.agency, state(cl), due_at, now) {
                            let cl = &mut app.clearances[i];
                            cl.status = ClearanceStatus::Approved as i32;
                            cl.deemed_approved = true;
                            cl.decided_at = Some(timestamp(now));
                            cl.updated_at = Some(timestamp(now));
                            let note = format!(
                                "deemed approved: no answer by its due date {}",
                                rfc3339(due_at)
                            );
                            cl.note = note.clone();
                            mover.settle(tx, &mut app, Some(&c.agency), &note).await?;
                            deemed += 1;
                            tracing::info!(application_id = %app.id, agency = %c.agency, "clearance deemed approved");
                        } else {
                            let note = format!("overdue: the clearance was due at {}", rfc3339(due_at));
                            let e = app_event(&app, ReferralEventType::ClearanceOverdue, GATEWAY_ACTOR, now)
                                .clearance(&app.clearances[i])
                                .note(&note);
                            let late = Some(&app.clearances[i]);
                            let mut deliveries = vec![mover.told(&app, &app.lead_agency, late, &note)];
                            if c.agency != app.lead_agency {
                                deliveries.push(mover.told(&app, &c.agency, late, &note));
                            }
                            record(tx, &e.event(&c.agency), &deliveries, now).await?;
                            overdue += 1;
                            tracing::info!(application_id = %app.id, agency = %c.agency, "clearance overdue");
                        }
                    }
                    Ok((overdue, deemed))
                })
            })
            .await?;
        Ok(counts)
    }

    /// What moves `app` on a change by `actor`: its joint service and the calendar.
    fn mover<'a>(
        &'a self,
        app: &Application,
        actor: &'a str,
        traceparent: &'a str,
        now: i64,
    ) -> Result<Mover<'a>, ApiError> {
        Ok(Mover {
            spec: self.spec_of(app)?,
            calendar: self.directory.calendar(),
            actor,
            traceparent,
            now,
        })
    }

    fn spec_of(&self, app: &Application) -> Result<&JointServiceSpec, ApiError> {
        self.joint_service(&app.service_code).ok_or_else(|| {
            ApiError::corrupt(format!(
                "application {} is for joint service {:?}, which the config no longer defines",
                app.id, app.service_code
            ))
        })
    }

    /// The application `row` as `agency` may see it (NOT_A_PARTY for anyone else).
    pub fn application_view(
        &self,
        row: &ApplicationRow,
        agency: &str,
        now: i64,
    ) -> Result<Application, ApiError> {
        let app = decode(row)?;
        if !is_party(&app, agency) {
            return Err(not_party(&app.id));
        }
        Ok(view(
            self.spec_of(&app)?,
            &app,
            agency,
            now,
            self.directory.calendar(),
        ))
    }
}

fn req_status(r: &UpdateClearanceResponse) -> Option<ApplicationStatus> {
    r.application.as_ref().map(|a| a.status())
}

/// What a change did beyond itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advanced {
    /// Clearances requested now (their prerequisites approved).
    pub requested: Vec<String>,
    /// Requested clearances cancelled because the application was decided.
    pub cancelled: Vec<String>,
    /// The application was decided by this change.
    pub decided: bool,
}

/// Derives the application's status from its clearances by `spec`'s rule; while it is in
/// progress, requests the clearances whose prerequisites are all approved (due after their
/// time frame in working days from now); once decided, cancels the open ones. Each
/// waiting clearance's due date is its expected one. Pure.
pub fn advance(
    spec: &JointServiceSpec,
    app: &mut Application,
    now: i64,
    calendar: &Calendar,
) -> Advanced {
    let mut advanced = Advanced::default();
    let was = app.status();
    let status = derived_status(spec, app);
    if status == ApplicationStatus::InProgress {
        let ready = spec.ready(&states(app));
        for c in app
            .clearances
            .iter_mut()
            .filter(|c| ready.contains(&c.agency))
        {
            let days = spec
                .clearances
                .iter()
                .find(|s| s.agency == c.agency)
                .map_or(0, |s| s.time_frame_working_days);
            c.status = ClearanceStatus::Requested as i32;
            c.requested_at = Some(timestamp(now));
            c.due_at = Some(timestamp(add_working_days(now, days, calendar)));
            c.updated_at = Some(timestamp(now));
            advanced.requested.push(c.agency.clone());
        }
    } else if was != status {
        advanced.decided = true;
        app.decided_at = Some(timestamp(now));
        let unfinished =
            |c: &&mut Clearance| is_open(c.status()) || c.status() == ClearanceStatus::Waiting;
        for c in app.clearances.iter_mut().filter(unfinished) {
            if c.requested_at.is_some() {
                advanced.cancelled.push(c.agency.clone());
            }
            c.status = ClearanceStatus::Cancelled as i32;
            c.decided_at = Some(timestamp(now));
            c.updated_at = Some(timestamp(now));
        }
    }
    app.status = status as i32;
    app.updated_at = Some(timestamp(now));
    let created = app
        .created_at
        .as_ref()
        .and_then(timestamp_ms)
        .unwrap_or(now);
    let schedule = spec.schedule(created, &states(app), now, calendar);
    for c in app
        .clearances
        .iter_mut()
        .filter(|c| c.status() == ClearanceStatus::Waiting)
    {
        c.due_at = schedule.due_at.get(&c.agency).map(|&t| timestamp(t));
    }
    advanced
}

/// The status the clearances imply (WITHDRAWN once the lead gave a withdrawal reason).
fn derived_status(spec: &JointServiceSpec, app: &Application) -> ApplicationStatus {
    match spec.status(&states(app), !app.withdrawal_reason.is_empty()) {
        rules::ApplicationStatus::InProgress => ApplicationStatus::InProgress,
        rules::ApplicationStatus::Approved => ApplicationStatus::Approved,
        rules::ApplicationStatus::Rejected => ApplicationStatus::Rejected,
        rules::ApplicationStatus::Withdrawn => ApplicationStatus::Withdrawn,
    }
}

/// When the application is expected to be decided, as of `now` (None once decided, or
/// when it can no longer be approved).
fn expected_completion(
    spec: &JointServiceSpec,
    app: &Application,
    now: i64,
    calendar: &Calendar,
) -> Option<i64> {
    if app.status() != ApplicationStatus::InProgress {
        return None;
    }
    let created = app
        .created_at
        .as_ref()
        .and_then(timestamp_ms)
        .unwrap_or(now);
    spec.schedule(created, &states(app), now, calendar)
        .expected_completion
}

fn states(app: &Application) -> BTreeMap<String, rules::Clearance> {
    app.clearances
        .iter()
        .map(|c| (c.agency.clone(), state(c)))
        .collect()
}

/// A clearance as the rules see it. A cancelled one only exists once the application is
/// decided, and counts as never requested (the decision stands by the others).
fn state(c: &Clearance) -> rules::Clearance {
    match c.status() {
        ClearanceStatus::Unspecified | ClearanceStatus::Waiting | ClearanceStatus::Cancelled => {
            rules::Clearance::Waiting
        }
        ClearanceStatus::Requested => rules::Clearance::Requested,
        ClearanceStatus::Accepted => rules::Clearance::Accepted,
        ClearanceStatus::InReview => rules::Clearance::InReview,
        ClearanceStatus::InformationRequested => rules::Clearance::InformationRequested,
        ClearanceStatus::Approved => {
            rules::Clearance::Approved(c.decided_at.as_ref().and_then(timestamp_ms).unwrap_or(0))
        }
        ClearanceStatus::Rejected => rules::Clearance::Rejected,
    }
}

/// Requested and not decided.
fn is_open(s: ClearanceStatus) -> bool {
    matches!(
        s,
        ClearanceStatus::Requested
            | ClearanceStatus::Accepted
            | ClearanceStatus::InReview
            | ClearanceStatus::InformationRequested
    )
}

/// Whether a clearing agency may move its clearance `i` to `to`: only the statuses it
/// sets, only once requested and while open, ACCEPTED only as the first answer.
pub fn check_move(app: &Application, i: usize, to: ClearanceStatus) -> Result<(), ApiError> {
    use ClearanceStatus as C;
    let c = &app.clearances[i];
    let current = c.status();
    let refuse = |reason: Reason, message: String| {
        ApiError::refused(reason, message)
            .with("application_id", app.id.clone())
            .with("clearance_agency", c.agency.clone())
            .with("current_status", short(current))
            .with("requested_status", short(to))
    };
    if !matches!(
        to,
        C::Accepted | C::InReview | C::InformationRequested | C::Approved | C::Rejected
    ) {
        return Err(refuse(
            Reason::StatusNotSettableByCaller,
            format!(
                "a clearing agency sets ACCEPTED, IN_REVIEW, INFORMATION_REQUESTED, APPROVED or REJECTED, never {}",
                short(to)
            ),
        ));
    }
    let why = match current {
        C::Waiting | C::Unspecified => Some(format!(
            "it is not requested yet: it waits for the approval of {}",
            c.after.join(", ")
        )),
        C::Approved | C::Rejected | C::Cancelled => {
            Some(format!("it is {}, which is final", short(current)))
        }
        C::Requested => None,
        _ if to == C::Accepted => {
            Some("ACCEPTED is only the first answer to a request".to_string())
        }
        _ if to == current && to != C::InformationRequested => {
            Some(format!("it is already {}", short(to)))
        }
        _ => None,
    };
    match why {
        Some(why) => Err(refuse(
            Reason::TransitionNotAllowed,
            format!(
                "the clearance of {} in application {} cannot move to {}: {why}",
                c.agency,
                app.id,
                short(to)
            ),
        )),
        None => Ok(()),
    }
}

fn still_open(app: &Application) -> Result<(), ApiError> {
    if app.status() == ApplicationStatus::InProgress {
        return Ok(());
    }
    let current = app
        .status()
        .as_str_name()
        .trim_start_matches("APPLICATION_STATUS_");
    Err(ApiError::refused(
        Reason::ApplicationDecided,
        format!(
            "application {} is already {current}: nothing in it moves any more",
            app.id
        ),
    )
    .with("current_status", current))
}

fn short(s: ClearanceStatus) -> &'static str {
    s.as_str_name().trim_start_matches("CLEARANCE_STATUS_")
}

fn is_party(app: &Application, agency: &str) -> bool {
    app.lead_agency == agency || app.clearances.iter().any(|c| c.agency == agency)
}

/// The application as `agency` sees it, with its overdue flags and expected completion as
/// of `now`: the lead sees every clearance, a clearing agency its own (not the others'
/// notes, conditions or reasons).
pub fn view(
    spec: &JointServiceSpec,
    app: &Application,
    agency: &str,
    now: i64,
    calendar: &Calendar,
) -> Application {
    let mut out = app.clone();
    if out.lead_agency != agency {
        out.clearances.retain(|c| c.agency == agency);
    }
    for c in &mut out.clearances {
        let due = c.due_at.as_ref().and_then(timestamp_ms);
        c.overdue = is_open(c.status()) && due.is_some_and(|d| now > d);
    }
    let due = out.due_at.as_ref().and_then(timestamp_ms);
    out.overdue = out.status() == ApplicationStatus::InProgress && due.is_some_and(|d| now > d);
    out.expected_completion_at = expected_completion(spec, app, now, calendar).map(timestamp);
    out
}

/// Documents attached by the lead are shared once with every clearing agency; each must
/// be one the lead may read.
async fn share_attachments<T: ExchangeTx>(
    tx: &mut T,
    app: &Application,
    now: i64,
) -> Result<(), ApiError> {
    let ids: Vec<&str> = app
        .attachments
        .iter()
        .map(|d| d.document_id.as_str())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    for c in app
        .clearances
        .iter()
        .filter(|c| c.agency != app.lead_agency)
    {
        let unreadable = tx
            .share_documents(&ids, &app.lead_agency, &c.agency, &app.id, now)
            .await?;
        if !unreadable.is_empty() {
            return Err(ApiError::Invalid(
                unreadable
                    .into_iter()
                    .map(|i| {
                        FieldViolation::new(
                            format!("application.attachments[{i}].document_id"),
                            UNREADABLE_DOCUMENT,
                        )
                    })
                    .collect(),
            ));
        }
    }
    Ok(())
}

/// Who moves an application, and when: the service's rules, the calendar and the call's
/// trace, everything the consequences of a move are computed with.
struct Mover<'a> {
    spec: &'a JointServiceSpec,
    calendar: &'a Calendar,
    /// The agency that made the change; "jisr" for the gateway's.
    actor: &'a str,
    traceparent: &'a str,
    now: i64,
}

impl<'a> Mover<'a> {
    /// After a change to `app` (of clearance `changed`, if any): derives its status,
    /// requests what became ready or cancels what is left, stores it, tells everyone.
    async fn settle<T: ExchangeTx>(
        &self,
        tx: &mut T,
        app: &mut Application,
        changed: Option<&str>,
        note: &str,
    ) -> Result<(), ApiError> {
        let advanced = advance(self.spec, app, self.now, self.calendar);
        save(tx, app, self.now).await?;
        self.publish(tx, app, changed, note, &advanced).await
    }

    /// The application as `agency` sees it now.
    fn view(&self, app: &Application, agency: &str) -> Application {
        view(self.spec, app, agency, self.now, self.calendar)
    }

    /// Tells everyone what a change means: the changed clearance (if any) to the lead;
    /// each clearance requested now to its agency through its adapter (with the
    /// application as it sees it); and a decision to the lead and every agency that was
    /// asked. The lead is not told of its own moves through its adapter (it has the
    /// answer).
    async fn publish<T: ExchangeTx>(
        &self,
        tx: &mut T,
        app: &Application,
        changed: Option<&str>,
        note: &str,
        advanced: &Advanced,
    ) -> Result<(), ApiError> {
        let (actor, now) = (self.actor, self.now);
        let lead = app.lead_agency.as_str();
        let clearance = |agency: &str| app.clearances.iter().find(|c| c.agency == agency);
        let to_lead = |c: Option<&Clearance>, note: &str| -> Vec<NewDelivery<'_>> {
            if actor == lead {
                return Vec::new();
            }
            vec![self.told(app, lead, c, note)]
        };
        if let Some(c) = changed.and_then(clearance) {
            let e = app_event(app, ReferralEventType::ClearanceChanged, actor, now)
                .clearance(c)
                .note(note);
            let mut deliveries = to_lead(Some(c), note);
            if actor == GATEWAY_ACTOR && c.agency != lead {
                // The gateway moved it (deemed approval): its agency hears it too.
                deliveries.push(self.told(app, &c.agency, Some(c), note));
            }
            record(tx, &e.event(&c.agency), &deliveries, now).await?;
        }
        for agency in &advanced.requested {
            let Some(c) = clearance(agency) else { continue };
            let e = app_event(app, ReferralEventType::ClearanceChanged, actor, now).clearance(c);
            let mut deliveries = vec![NewDelivery {
                agency,
                kind: KIND_CLEARANCE_REQUEST,
                subject_id: &app.id,
                payload: payload::clearance_request(&self.view(app, agency)),
                traceparent: self.traceparent,
            }];
            deliveries.extend(to_lead(Some(c), ""));
            record(tx, &e.event(agency), &deliveries, now).await?;
        }
        for agency in &advanced.cancelled {
            let Some(c) = clearance(agency) else { continue };
            let e = app_event(app, ReferralEventType::ClearanceChanged, GATEWAY_ACTOR, now)
                .clearance(c)
                .note("cancelled: the application was decided");
            record(tx, &e.event(agency), &[], now).await?;
        }
        if advanced.decided {
            let decided =
                app_event(app, ReferralEventType::ApplicationDecided, actor, now).note(note);
            record(tx, &decided.event(lead), &to_lead(None, note), now).await?;
            for c in app
                .clearances
                .iter()
                .filter(|c| c.requested_at.is_some() && c.agency != lead)
            {
                let delivery = self.told(app, &c.agency, Some(c), note);
                record(tx, &decided.event(&c.agency), &[delivery], now).await?;
            }
        }
        Ok(())
    }

    /// A status update to `agency` about `app` (and clearance `c`, if any), through its
    /// adapter.
    fn told<'d>(
        &self,
        app: &'d Application,
        agency: &'d str,
        c: Option<&Clearance>,
        note: &str,
    ) -> NewDelivery<'d>
    where
        'a: 'd,
    {
        let now = self.now;
        let due = |t: &Option<prost_types::Timestamp>| t.as_ref().and_then(timestamp_ms);
        let overdue =
            c.is_some_and(|c| is_open(c.status()) && due(&c.due_at).is_some_and(|d| now > d));
        let update = ApplicationStatusUpdate {
            application_id: app.id.clone(),
            status: app.status,
            clearance_agency: c.map(|c| c.agency.clone()).unwrap_or_default(),
            clearance_status: c.map_or(0, |c| c.status),
            changed_at: Some(timestamp(now)),
            overdue,
            expected_completion_at: expected_completion(self.spec, app, now, self.calendar)
                .map(timestamp),
            actor_agency: self.actor.to_string(),
            note: note.to_string(),
        };
        NewDelivery {
            agency,
            kind: KIND_STATUS_UPDATE,
            subject_id: &app.id,
            payload: payload::application_status(update),
            traceparent: self.traceparent,
        }
    }
}

/// An application's event in the making; [`AppEvent::event`] addresses it.
struct AppEvent<'a> {
    app: &'a Application,
    kind: ReferralEventType,
    actor: &'a str,
    clearance: Option<(&'a str, &'static str)>,
    note: &'a str,
    now: i64,
}

fn app_event<'a>(
    app: &'a Application,
    kind: ReferralEventType,
    actor: &'a str,
    now: i64,
) -> AppEvent<'a> {
    AppEvent {
        app,
        kind,
        actor,
        clearance: None,
        note: "",
        now,
    }
}

impl<'a> AppEvent<'a> {
    fn clearance(mut self, c: &'a Clearance) -> AppEvent<'a> {
        self.clearance = Some((&c.agency, c.status().as_str_name()));
        self
    }

    fn note(mut self, note: &'a str) -> AppEvent<'a> {
        self.note = note;
        self
    }

    /// The event as `party` sees it: a clearance's event from the lead to its agency (both
    /// see it once); an application-wide one addressed to `party` alone.
    fn event(&self, party: &'a str) -> NewEvent<'a> {
        let (from, to) = match self.clearance {
            Some(_) => (self.app.lead_agency.as_str(), party),
            None => (party, party),
        };
        let (clearance_agency, clearance_status) = self.clearance.unwrap_or(("", ""));
        NewEvent {
            application_id: &self.app.id,
            clearance_agency,
            clearance_status,
            from_agency: from,
            to_agency: to,
            event_type: self.kind.as_str_name(),
            status: self.app.status().as_str_name(),
            actor_agency: self.actor,
            note: self.note,
            occurred_at: self.now,
            ..NewEvent::default()
        }
    }
}

async fn load<T: ExchangeTx>(
    tx: &mut T,
    id: &str,
) -> Result<(ApplicationRow, Application), ApiError> {
    let row = tx.application(id).await?.ok_or_else(|| not_found(id))?;
    let app = decode(&row)?;
    Ok((row, app))
}

async fn save<T: ExchangeTx>(tx: &mut T, app: &Application, now: i64) -> Result<(), ApiError> {
    tx.update_application(&stored(app, now), &clearance_rows(app))
        .await
}

fn stored(app: &Application, now: i64) -> ApplicationRow {
    ApplicationRow {
        id: app.id.clone(),
        lead_agency: app.lead_agency.clone(),
        request_id: app.request_id.clone(),
        service_code: app.service_code.clone(),
        status: app.status().as_str_name().to_string(),
        due_at: app.due_at.as_ref().and_then(timestamp_ms).unwrap_or(now),
        created_at: app
            .created_at
            .as_ref()
            .and_then(timestamp_ms)
            .unwrap_or(now),
        updated_at: now,
        body: app.encode_to_vec(),
    }
}

/// The clearance rows beside the body; a clearance awaits its deadline while requested
/// and open, until the sweep handles it.
fn clearance_rows(app: &Application) -> Vec<ClearanceRow> {
    app.clearances
        .iter()
        .map(|c| ClearanceRow {
            application_id: app.id.clone(),
            agency: c.agency.clone(),
            status: c.status().as_str_name().to_string(),
            due_at: c.due_at.as_ref().and_then(timestamp_ms),
            awaiting_deadline: is_open(c.status()),
        })
        .collect()
}

pub fn decode(row: &ApplicationRow) -> Result<Application, ApiError> {
    Application::decode(row.body.as_slice())
        .map_err(|e| ApiError::corrupt(format!("application {}: {e}", row.id)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::application::{ClearanceSpec, OnDeadline};

    const DAY: i64 = 86_400_000;
    /// Monday 2026-11-02, 09:00 UTC.
    const MONDAY: i64 = 1_793_610_000_000;

    /// The last millisecond of the day `days` after MONDAY (a due date ends its day).
    fn end_of(days: i64) -> i64 {
        MONDAY - 9 * 3_600_000 + (days + 1) * DAY - 1
    }

    fn spec(required: Option<u32>) -> JointServiceSpec {
        let c = |agency: &str, after: &[&str]| ClearanceSpec {
            agency: agency.into(),
            time_frame_working_days: 2,
            after: after.iter().map(|a| a.to_string()).collect(),
            on_deadline: OnDeadline::StaysOverdue,
        };
        JointServiceSpec {
            code: "permit".into(),
            clearances: vec![
                c("planning", &[]),
                c("water", &[]),
                c("civil", &["planning"]),
            ],
            required_approvals: required,
        }
    }

    fn submitted(spec: &JointServiceSpec) -> (Application, Advanced) {
        let mut app = Application {
            id: "01APP".into(),
            lead_agency: "city".into(),
            created_at: Some(timestamp(MONDAY)),
            clearances: spec
                .clearances
                .iter()
                .map(|c| Clearance {
                    agency: c.agency.clone(),
                    status: ClearanceStatus::Waiting as i32,
                    after: c.after.clone(),
                    ..Clearance::default()
                })
                .collect(),
            ..Application::default()
        };
        let advanced = advance(spec, &mut app, MONDAY, &Calendar::default());
        (app, advanced)
    }

    fn set(app: &mut Application, agency: &str, s: ClearanceStatus, at: i64) {
        let c = app
            .clearances
            .iter_mut()
            .find(|c| c.agency == agency)
            .unwrap();
        c.status = s as i32;
        c.decided_at = Some(timestamp(at));
    }

    fn status_of(app: &Application, agency: &str) -> ClearanceStatus {
        app.clearances
            .iter()
            .find(|c| c.agency == agency)
            .unwrap()
            .status()
    }

    #[test]
    fn submitting_requests_what_has_no_prerequisite_and_dates_the_rest() {
        let spec = spec(None);
        let (app, advanced) = submitted(&spec);
        assert_eq!(advanced.requested, ["planning", "water"]);
        assert_eq!(status_of(&app, "civil"), ClearanceStatus::Waiting);
        assert_eq!(app.status(), ApplicationStatus::InProgress);
        // Requested Monday with 2 working days: due Wednesday; civil after planning: Friday.
        let due = |a: &str| {
            timestamp_ms(
                app.clearances
                    .iter()
                    .find(|c| c.agency == a)
                    .unwrap()
                    .due_at
                    .as_ref()
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(due("planning"), end_of(2));
        assert_eq!(due("civil"), end_of(4));
        assert_eq!(
            expected_completion(&spec, &app, MONDAY, &Calendar::default()),
            Some(end_of(4))
        );
    }

    #[test]
    fn an_approval_requests_its_dependents_and_the_last_one_decides() {
        let spec = spec(None);
        let (mut app, _) = submitted(&spec);
        set(
            &mut app,
            "planning",
            ClearanceStatus::Approved,
            MONDAY + DAY,
        );
        let a = advance(&spec, &mut app, MONDAY + DAY, &Calendar::default());
        assert_eq!(a.requested, ["civil"]);
        assert!(!a.decided);
        set(&mut app, "water", ClearanceStatus::Approved, MONDAY + DAY);
        set(
            &mut app,
            "civil",
            ClearanceStatus::Approved,
            MONDAY + 2 * DAY,
        );
        let a = advance(&spec, &mut app, MONDAY + 2 * DAY, &Calendar::default());
        assert!(a.decided && a.requested.is_empty() && a.cancelled.is_empty());
        assert_eq!(app.status(), ApplicationStatus::Approved);
        assert!(expected_completion(&spec, &app, MONDAY + 2 * DAY, &Calendar::default()).is_none());
    }

    #[test]
    fn one_rejection_decides_at_once_and_cancels_what_was_asked() {
        let spec = spec(None);
        let (mut app, _) = submitted(&spec);
        set(&mut app, "water", ClearanceStatus::Rejected, MONDAY);
        let a = advance(&spec, &mut app, MONDAY, &Calendar::default());
        assert!(a.decided);
        assert_eq!(a.cancelled, ["planning"], "civil was never asked");
        assert_eq!(app.status(), ApplicationStatus::Rejected);
        assert_eq!(status_of(&app, "civil"), ClearanceStatus::Cancelled);
        // Deciding again changes nothing.
        assert_eq!(
            advance(&spec, &mut app, MONDAY, &Calendar::default()),
            Advanced::default()
        );
        assert_eq!(app.status(), ApplicationStatus::Rejected);
    }

    #[test]
    fn k_of_n_is_approved_by_k_and_survives_a_rejection() {
        let spec = spec(Some(2));
        let (mut app, _) = submitted(&spec);
        set(&mut app, "water", ClearanceStatus::Rejected, MONDAY);
        advance(&spec, &mut app, MONDAY, &Calendar::default());
        assert_eq!(app.status(), ApplicationStatus::InProgress);
        set(&mut app, "planning", ClearanceStatus::Approved, MONDAY);
        let a = advance(&spec, &mut app, MONDAY, &Calendar::default());
        assert_eq!(a.requested, ["civil"]);
        set(&mut app, "civil", ClearanceStatus::Approved, MONDAY);
        assert!(advance(&spec, &mut app, MONDAY, &Calendar::default()).decided);
        assert_eq!(app.status(), ApplicationStatus::Approved);
    }

    #[test]
    fn a_withdrawal_cancels_every_open_clearance() {
        let spec = spec(None);
        let (mut app, _) = submitted(&spec);
        app.withdrawal_reason = "applicant moved".into();
        let a = advance(&spec, &mut app, MONDAY, &Calendar::default());
        assert_eq!(app.status(), ApplicationStatus::Withdrawn);
        assert_eq!(a.cancelled, ["planning", "water"]);
    }

    #[test]
    fn a_clearing_agency_moves_only_a_requested_open_clearance() {
        use ClearanceStatus as C;
        let spec = spec(None);
        let (mut app, _) = submitted(&spec);
        let i = |a: &str| app.clearances.iter().position(|c| c.agency == a).unwrap();
        let (planning, civil) = (i("planning"), i("civil"));
        for to in [
            C::Accepted,
            C::InReview,
            C::InformationRequested,
            C::Approved,
            C::Rejected,
        ] {
            assert!(check_move(&app, planning, to).is_ok(), "{to:?}");
        }
        for to in [C::Waiting, C::Requested, C::Cancelled] {
            let e = check_move(&app, planning, to).unwrap_err();
            assert_eq!(e.reason(), Some(Reason::StatusNotSettableByCaller));
        }
        let e = check_move(&app, civil, C::Approved).unwrap_err();
        assert_eq!(e.reason(), Some(Reason::TransitionNotAllowed));
        assert!(
            e.to_string().contains("waits for the approval of planning"),
            "{e}"
        );
        set(&mut app, "planning", C::InReview, MONDAY);
        assert!(check_move(&app, planning, C::Accepted).is_err());
        assert!(check_move(&app, planning, C::InReview).is_err());
        set(&mut app, "planning", C::Approved, MONDAY);
        assert!(check_move(&app, planning, C::Rejected).is_err());
    }

    #[test]
    fn a_clearing_agency_sees_only_its_own_clearance() {
        let spec = spec(None);
        let (mut app, _) = submitted(&spec);
        app.clearances[1].note = "water's private note".into();
        let cal = Calendar::default();
        let lead = view(&spec, &app, "city", MONDAY, &cal);
        assert_eq!(lead.clearances.len(), 3);
        let planning = view(&spec, &app, "planning", MONDAY, &cal);
        assert_eq!(planning.clearances.len(), 1);
        assert_eq!(planning.clearances[0].agency, "planning");
        assert_eq!(planning.status(), ApplicationStatus::InProgress);
        let late = view(&spec, &app, "planning", MONDAY + 3 * DAY, &cal);
        assert!(late.clearances[0].overdue);
        assert!(
            timestamp_ms(late.expected_completion_at.as_ref().unwrap()).unwrap()
                > timestamp_ms(planning.expected_completion_at.as_ref().unwrap()).unwrap(),
            "a late clearance moves the expected completion"
        );
    }
}
