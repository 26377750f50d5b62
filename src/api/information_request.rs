//! jisr.v1.InformationRequestService: one agency asks another for information about a
//! person (optionally about a referral it is party to); the asked agency answers, with
//! values and documents, or declines. validate → `domain::exchange` (writes) or the store
//! (reads) → reply. Only the two agencies see a request.

use tonic::{Request, Response, Status};

use super::paging::IdPage;
use super::referral::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use super::validate::{is_code, Violations};
use super::GatewayExchange;
use crate::common::time::now_ms;
use crate::common::ApiError;
use crate::domain::exchange::information_request::{
    counterpart, not_found, to_proto, MISSING_RESPONSE,
};
use crate::layers::{self as auth, Caller};
use crate::pb::v1::information_request_service_server::InformationRequestService;
use crate::pb::v1::respond_to_information_request_request::Response as Reply;
use crate::pb::v1::*;
use crate::store::information_requests::InformationRequestFilter;
use crate::store::Store;
use crate::tls::Registry;

const MAX_QUESTIONS: usize = 50;
/// A due date at most this far ahead.
const MAX_DUE_AHEAD_MS: i64 = 366 * 86_400_000;

#[derive(Clone)]
pub struct InformationRequestApi {
    exchange: GatewayExchange,
    /// Reads (get, list) go straight to the store.
    store: Store,
    registry: Registry,
}

impl InformationRequestApi {
    pub fn new(
        exchange: GatewayExchange,
        store: Store,
        registry: Registry,
    ) -> InformationRequestApi {
        InformationRequestApi {
            exchange,
            store,
            registry,
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
        let ir = validate_request(&self.registry, caller.agency(), &req, now)?;
        self.exchange
            .request_information(caller, ir, req.request_id, now)
            .await
    }

    async fn respond(
        &self,
        caller: &Caller,
        req: RespondToInformationRequestRequest,
    ) -> Result<RespondToInformationRequestResponse, ApiError> {
        validate_response(&req)?;
        self.exchange
            .respond_to_information_request(caller, req, now_ms())
            .await
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
        caller
            .audit
            .set_target(id, counterpart(&row, caller.agency())?);
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
        let statuses = v.enum_names::<InformationRequestStatus>(
            "statuses",
            &req.statuses,
            "an InformationRequestStatus",
            InformationRequestStatus::as_str_name,
        );
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
