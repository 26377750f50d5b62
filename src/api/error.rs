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
    #[error("{message}")]
    PolicyDenied { rule: String, message: String },
    #[error("{kind} {id} is {current}; only an OPEN {kind} can be {action}")]
    NotOpen {
        kind: &'static str,
        id: String,
        current: &'static str,
        action: &'static str,
    },
    #[error("only the agency asked ({asked}) may respond to information request {id}")]
    NotAskedAgency { id: String, asked: String },
    /// Something the caller may not see: told NOT_FOUND, so its existence is not
    /// disclosed; `refused_by` (when it exists) is the rule noted in the audit entry.
    #[error("{kind} {id} not found")]
    Hidden {
        kind: &'static str,
        id: String,
        refused_by: Option<&'static str>,
    },
    #[error(
        "{field}: {actual} bytes is over the gateway's limit of {limit} bytes; nothing was stored"
    )]
    TooLarge {
        reason: &'static str,
        field: &'static str,
        limit: u64,
        actual: u64,
    },
    #[error("document {id}: the stored bytes do not match its SHA-256")]
    DataLoss { id: String },
    /// The request stream broke (the client went away, a message the transport refused).
    #[error("{}", .0.message())]
    Stream(Status),
    #[error("document storage: {0}")]
    Blob(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// Notes an allowing policy decision in the call's audit entry, or refuses with a
    /// message from `explain`.
    pub fn check_policy(
        decision: &crate::auth::policy::Decision,
        audit: &crate::audit::context::AuditContext,
        explain: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        if decision.allowed {
            audit.allow(&decision.rule);
            Ok(())
        } else {
            Err(ApiError::PolicyDenied {
                rule: decision.rule.clone(),
                message: explain(),
            })
        }
    }

    /// The status for the caller, after noting an access refusal in the call's audit
    /// entry (with the rule that refused).
    pub fn refuse(self, audit: &crate::audit::context::AuditContext) -> Status {
        match &self {
            ApiError::NotParty { kind, .. } => {
                audit.deny(&format!("{}.party", kind.replace(' ', "_")))
            }
            ApiError::NotAskedAgency { .. } => audit.deny("information_request.asked-agency"),
            ApiError::PolicyDenied { rule, .. } => audit.deny(rule),
            ApiError::Hidden {
                refused_by: Some(rule),
                ..
            } => audit.deny(rule),
            _ => {}
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
            ApiError::NotOpen {
                kind,
                ref id,
                current,
                ..
            } => {
                let mut details = info(
                    "NOT_OPEN",
                    &[("kind", kind), ("id", id), ("current_status", current)],
                );
                details.add_precondition_failure_violation("STATUS", id.as_str(), message.clone());
                Status::with_error_details(Code::FailedPrecondition, message.clone(), details)
            }
            ApiError::PolicyDenied { ref rule, .. } => Status::with_error_details(
                Code::PermissionDenied,
                message.clone(),
                info("POLICY_DENIED", &[("rule", rule)]),
            ),
            ApiError::NotAskedAgency { ref id, ref asked } => Status::with_error_details(
                Code::PermissionDenied,
                message.clone(),
                info(
                    "NOT_THE_ASKED_AGENCY",
                    &[("information_request_id", id), ("asked_agency", asked)],
                ),
            ),
            ApiError::Hidden { kind, ref id, .. } => Status::with_error_details(
                Code::NotFound,
                message.clone(),
                info("NOT_FOUND", &[("kind", kind), ("id", id)]),
            ),
            ApiError::TooLarge {
                reason,
                field,
                limit,
                ..
            } => {
                let mut details = info(reason, &[("max_bytes", &limit.to_string())]);
                details.add_bad_request_violation(field, message.clone());
                Status::with_error_details(Code::InvalidArgument, message.clone(), details)
            }
            ApiError::DataLoss { ref id } => {
                tracing::error!(document = %id, "stored document bytes do not match their SHA-256");
                Status::with_error_details(
                    Code::DataLoss,
                    format!("{message}; the gateway operator has been alerted"),
                    info("DOCUMENT_CORRUPT", &[("id", id)]),
                )
            }
            ApiError::Stream(status) => status,
            ApiError::Blob(e) => {
                tracing::error!(error = %e, "document storage failure");
                Status::with_error_details(
                    Code::Internal,
                    "internal document storage error; retry later or contact the gateway operator",
                    info("STORAGE", &[]),
                )
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
