//! The one mapping from handler errors to gRPC statuses with rich details
//! (google.rpc BadRequest, ErrorInfo, PreconditionFailure).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::domain::referral::{short, TransitionError};
use crate::store::StoreError;

/// ErrorInfo domain of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "jisr.gov.ae";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {}", describe_violations(.0))]
    Invalid(Vec<FieldViolation>),
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} is visible only to its sender and its recipient")]
    NotParty { kind: &'static str, id: String },
    #[error(
        "request_id {request_id:?} was already used by your agency for a different request; \
         retry with the identical request or use a new request_id"
    )]
    RequestIdReused { request_id: String },
    #[error("{source}")]
    Transition {
        referral_id: String,
        source: TransitionError,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The status for the caller, after noting an access refusal in the call's audit
    /// entry (with the rule that refused).
    pub fn refuse(self, audit: &crate::audit::context::AuditContext) -> Status {
        if let ApiError::NotParty { kind, .. } = &self {
            audit.deny(&format!("{kind}.party"));
        }
        Status::from(self)
    }
}

fn describe_violations(v: &[FieldViolation]) -> String {
    v.iter()
        .map(|f| format!("{}: {}", f.field, f.description))
        .collect::<Vec<_>>()
        .join("; ")
}

fn info(reason: &str, metadata: &[(&str, &str)]) -> ErrorDetails {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata)
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let message = err.to_string();
        match err {
            ApiError::Invalid(violations) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(violations),
            ),
            ApiError::NotFound { kind, ref id } => Status::with_error_details(
                Code::NotFound,
                message.clone(),
                info("NOT_FOUND", &[("kind", kind), ("id", id)]),
            ),
            ApiError::NotParty { kind, ref id } => Status::with_error_details(
                Code::PermissionDenied,
                message.clone(),
                info("NOT_A_PARTY", &[("kind", kind), ("id", id)]),
            ),
            ApiError::RequestIdReused { ref request_id } => Status::with_error_details(
                Code::AlreadyExists,
                message.clone(),
                info("REQUEST_ID_REUSED", &[("request_id", request_id)]),
            ),
            ApiError::Transition {
                ref referral_id,
                ref source,
            } => {
                let reason = if source.actor_may_not_set {
                    "STATUS_NOT_SETTABLE_BY_CALLER"
                } else {
                    "TRANSITION_NOT_ALLOWED"
                };
                let mut details = info(
                    reason,
                    &[
                        ("referral_id", referral_id),
                        ("current_status", short(source.from)),
                        ("requested_status", short(source.to)),
                    ],
                );
                details.add_precondition_failure_violation(
                    "STATUS",
                    referral_id.as_str(),
                    message.clone(),
                );
                Status::with_error_details(Code::FailedPrecondition, message.clone(), details)
            }
            ApiError::Store(e) => {
                // The cause is logged; the caller gets no internals.
                tracing::error!(error = %e, "storage failure");
                let (code, text) = match e {
                    StoreError::Db(sqlx::Error::PoolTimedOut) => (
                        Code::Unavailable,
                        "the gateway is overloaded; retry with backoff",
                    ),
                    _ => (
                        Code::Internal,
                        "internal storage error; retry later or contact the gateway operator",
                    ),
                };
                Status::with_error_details(code, text, info("STORAGE", &[]))
            }
        }
    }
}
