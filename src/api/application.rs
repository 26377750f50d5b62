//! jisr.v1.ApplicationService: a lead agency applies for a joint service, each clearing
//! agency moves its own clearance, the application's status follows from them.
//! validate → `domain::exchange` (writes) or the store (reads) → reply. The lead sees
//! everything, a clearing agency the application and its own clearance, anyone else
//! nothing.

use tonic::{Request, Response, Status};

use super::paging::IdPage;
use super::referral::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use super::validate::{is_code, Violations};
use super::GatewayExchange;
use crate::common::time::now_ms;
use crate::common::ApiError;
use crate::domain::exchange::application::not_found;
use crate::layers::{self as auth, Caller};
use crate::pb::v1::application_service_server::ApplicationService;
use crate::pb::v1::*;
use crate::store::applications::ApplicationFilter;
use crate::store::Store;

const MAX_REFERENCES: usize = 20;
const MAX_CONDITIONS: usize = 20;

#[derive(Clone)]
pub struct ApplicationApi {
    exchange: GatewayExchange,
    /// Reads (get, list) go straight to the store.
    store: Store,
}

impl ApplicationApi {
    pub fn new(exchange: GatewayExchange, store: Store) -> ApplicationApi {
        ApplicationApi { exchange, store }
    }
}

#[tonic::async_trait]
impl ApplicationService for ApplicationApi {
    async fn submit_application(
        &self,
        request: Request<SubmitApplicationRequest>,
    ) -> Result<Response<SubmitApplicationResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.submit(&caller, request.into_inner()).await)
    }

    async fn get_application(
        &self,
        request: Request<GetApplicationRequest>,
    ) -> Result<Response<GetApplicationResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.get(&caller, request.into_inner()).await)
    }

    async fn list_applications(
        &self,
        request: Request<ListApplicationsRequest>,
    ) -> Result<Response<ListApplicationsResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.list(&caller, request.into_inner()).await)
    }

    async fn update_clearance(
        &self,
        request: Request<UpdateClearanceRequest>,
    ) -> Result<Response<UpdateClearanceResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.update(&caller, request.into_inner()).await)
    }

    async fn withdraw_application(
        &self,
        request: Request<WithdrawApplicationRequest>,
    ) -> Result<Response<WithdrawApplicationResponse>, Status> {
        let caller = auth::caller(&request)?;
        super::reply(&caller, self.withdraw(&caller, request.into_inner()).await)
    }
}

impl ApplicationApi {
    async fn submit(
        &self,
        caller: &Caller,
        req: SubmitApplicationRequest,
    ) -> Result<SubmitApplicationResponse, ApiError> {
        let app = validate_submission(&req)?;
        self.exchange
            .submit_application(caller, app, req.request_id, now_ms())
            .await
    }

    async fn update(
        &self,
        caller: &Caller,
        req: UpdateClearanceRequest,
    ) -> Result<UpdateClearanceResponse, ApiError> {
        validate_update(&req)?;
        self.exchange.update_clearance(caller, req, now_ms()).await
    }

    async fn withdraw(
        &self,
        caller: &Caller,
        req: WithdrawApplicationRequest,
    ) -> Result<WithdrawApplicationResponse, ApiError> {
        validate_withdrawal(&req)?;
        self.exchange
            .withdraw_application(caller, req, now_ms())
            .await
    }

    async fn get(
        &self,
        caller: &Caller,
        req: GetApplicationRequest,
    ) -> Result<GetApplicationResponse, ApiError> {
        let mut v = Violations::default();
        v.ulid("application_id", &req.application_id);
        v.finish()?;
        let id = &req.application_id;
        caller.audit.set_target(id, "");
        let row = self
            .store
            .application(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let application = self
            .exchange
            .application_view(&row, caller.agency(), now_ms())?;
        if row.lead_agency != caller.agency() {
            caller.audit.set_target(id, &row.lead_agency);
        }
        Ok(GetApplicationResponse {
            application: Some(application),
        })
    }

    async fn list(
        &self,
        caller: &Caller,
        req: ListApplicationsRequest,
    ) -> Result<ListApplicationsResponse, ApiError> {
        let mut v = Violations::default();
        let direction = v.enum_value::<ApplicationDirection>(
            "direction",
            req.direction,
            false,
            "an ApplicationDirection",
        );
        let statuses = v.enum_names::<ApplicationStatus>(
            "statuses",
            &req.statuses,
            "an ApplicationStatus",
            ApplicationStatus::as_str_name,
        );
        let fingerprint = format!(
            "{}|{}|{:?}|{}",
            caller.agency(),
            req.direction,
            statuses,
            req.service_code
        );
        let page = IdPage::new(
            &mut v,
            req.page_size,
            &req.page_token,
            fingerprint,
            (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
        );
        v.finish()?;
        let filter = ApplicationFilter {
            agency: caller.agency().to_string(),
            led: direction == Some(ApplicationDirection::Led),
            clearing: direction == Some(ApplicationDirection::Clearing),
            statuses,
            service_code: (!req.service_code.is_empty()).then(|| req.service_code.clone()),
            before_id: page.before_id.clone(),
            limit: page.fetch_limit(),
        };
        let mut rows = self.store.list_applications(&filter).await?;
        let next_page_token = page.finish(&mut rows, |r| &r.id);
        let now = now_ms();
        Ok(ListApplicationsResponse {
            applications: rows
                .iter()
                .map(|r| self.exchange.application_view(r, caller.agency(), now))
                .collect::<Result<_, _>>()?,
            next_page_token,
        })
    }
}

/// Checks every input field and returns the application with only its input fields.
pub fn validate_submission(req: &SubmitApplicationRequest) -> Result<Application, ApiError> {
    let mut v = Violations::default();
    v.request_id("request_id", &req.request_id);
    let Some(a) = &req.application else {
        v.add("application", "is required");
        return Err(v.into_error());
    };
    v.check(
        is_code(&a.service_code),
        "application.service_code",
        "is required: the joint service's code, such as building-completion-certificate",
    );
    v.subject("application.subject", a.subject.as_ref());
    v.max_len("application.summary", &a.summary, 4000);
    let n = a.references.len();
    v.check(
        n <= MAX_REFERENCES,
        "application.references",
        format!("has {n} references; at most {MAX_REFERENCES} are allowed"),
    );
    for (i, r) in a.references.iter().enumerate() {
        let field = format!("application.references[{i}]");
        v.check(
            is_code(&r.name),
            format!("{field}.name"),
            "is required: 1-64 characters of A-Z a-z 0-9 . _ -, such as plot-number",
        );
        if a.references[..i].iter().any(|p| p.name == r.name) {
            v.add(format!("{field}.name"), "is used by an earlier reference");
        }
        v.required_text(&format!("{field}.value"), &r.value, 200);
    }
    v.attachments("application.attachments", &a.attachments);
    v.finish()?;
    Ok(Application {
        service_code: a.service_code.clone(),
        subject: a.subject.clone(),
        summary: a.summary.clone(),
        references: a.references.clone(),
        attachments: a.attachments.clone(),
        ..Application::default()
    })
}

/// The shape of a clearance update; whether the move is allowed is the exchange's rule
/// (`check_move`).
pub fn validate_update(req: &UpdateClearanceRequest) -> Result<(), ApiError> {
    let mut v = Violations::default();
    v.ulid("application_id", &req.application_id);
    v.request_id("request_id", &req.request_id);
    let status = v.enum_value::<ClearanceStatus>("status", req.status, true, "a ClearanceStatus");
    v.max_len("note", &req.note, 2000);
    v.max_len("reason", &req.reason, 2000);
    match status {
        Some(ClearanceStatus::Rejected) => v.check(
            !req.reason.trim().is_empty(),
            "reason",
            "is required with REJECTED: say why the clearance is refused",
        ),
        Some(ClearanceStatus::InformationRequested) => {
            v.ulid("information_request_id", &req.information_request_id)
        }
        _ => {}
    }
    if status != Some(ClearanceStatus::Approved) && !req.conditions.is_empty() {
        v.add("conditions", "are only for APPROVED");
    }
    if status != Some(ClearanceStatus::InformationRequested)
        && !req.information_request_id.is_empty()
    {
        v.add(
            "information_request_id",
            "is only for INFORMATION_REQUESTED",
        );
    }
    let n = req.conditions.len();
    v.check(
        n <= MAX_CONDITIONS,
        "conditions",
        format!("has {n} conditions; at most {MAX_CONDITIONS} are allowed"),
    );
    for (i, c) in req.conditions.iter().enumerate() {
        v.required_text(&format!("conditions[{i}]"), c, 500);
    }
    v.finish()
}

pub fn validate_withdrawal(req: &WithdrawApplicationRequest) -> Result<(), ApiError> {
    let mut v = Violations::default();
    v.ulid("application_id", &req.application_id);
    v.request_id("request_id", &req.request_id);
    v.required_text("reason", &req.reason, 2000);
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: ApiError) -> Vec<String> {
        match e {
            ApiError::Invalid(v) => v.into_iter().map(|f| f.field).collect(),
            other => panic!("expected field violations, got {other:?}"),
        }
    }

    #[test]
    fn an_update_carries_what_its_status_needs_and_nothing_else() {
        let base = UpdateClearanceRequest {
            application_id: ulid::Ulid::new().to_string(),
            request_id: "u-1".into(),
            status: ClearanceStatus::Rejected as i32,
            ..UpdateClearanceRequest::default()
        };
        assert_eq!(fields(validate_update(&base).unwrap_err()), ["reason"]);
        let ir = UpdateClearanceRequest {
            status: ClearanceStatus::InformationRequested as i32,
            ..base.clone()
        };
        assert_eq!(
            fields(validate_update(&ir).unwrap_err()),
            ["information_request_id"]
        );
        let conditions = UpdateClearanceRequest {
            status: ClearanceStatus::InReview as i32,
            conditions: vec!["x".into()],
            ..base.clone()
        };
        assert_eq!(
            fields(validate_update(&conditions).unwrap_err()),
            ["conditions"]
        );
        let approved = UpdateClearanceRequest {
            status: ClearanceStatus::Approved as i32,
            conditions: vec!["fire exits kept clear".into()],
            ..base
        };
        assert!(validate_update(&approved).is_ok());
    }

    #[test]
    fn a_submission_needs_a_service_and_unique_references() {
        let req = SubmitApplicationRequest {
            request_id: "a-1".into(),
            application: Some(Application {
                references: vec![
                    ReferenceField {
                        name: "plot".into(),
                        value: "12".into(),
                    },
                    ReferenceField {
                        name: "plot".into(),
                        value: "".into(),
                    },
                ],
                ..Application::default()
            }),
        };
        let f = fields(validate_submission(&req).unwrap_err());
        assert!(f.contains(&"application.service_code".to_string()), "{f:?}");
        assert!(
            f.contains(&"application.references[1].name".to_string()),
            "{f:?}"
        );
        assert!(
            f.contains(&"application.references[1].value".to_string()),
            "{f:?}"
        );
    }
}
