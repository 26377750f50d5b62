//! The one error type that crosses into the API, and the only mapping from it to a
//! `tonic::Status` with rich details (google.rpc BadRequest, ErrorInfo, PreconditionFailure,
//! RetryInfo).
//!
//! Every stable reason (ErrorInfo.reason) the gateway can return is a [`Reason`], declared
//! once below with its gRPC code and meaning; docs/errors.md's table is generated from
//! that list (`reason_table`) and a test keeps the two equal.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// ErrorInfo domain of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "jisr.gov.ae";

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident = $text:literal, [$($code:ident),+], $meaning:literal; )+) => {
        /// A stable reason code (google.rpc.ErrorInfo.reason, domain [`ERROR_DOMAIN`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( $(#[$doc])* $name, )+
        }

        impl Reason {
            /// Every reason, in the order of the docs' table.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),+];

            /// The reason as it appears in ErrorInfo.reason.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$name => $text,)+ }
            }

            /// The gRPC codes a status with this reason can have (the first is the usual one).
            pub fn codes(self) -> &'static [Code] {
                match self { $(Reason::$name => &[$(Code::$code),+],)+ }
            }

            /// What it means and what the caller should do.
            pub fn meaning(self) -> &'static str {
                match self { $(Reason::$name => $meaning,)+ }
            }
        }
    };
}

reasons! {
    // ---- the request path: TLS identity, limits, officer token, authorization ----
    NoClientCertificate = "NO_CLIENT_CERTIFICATE", [Unauthenticated],
        "The call reached a handler without a verified agency certificate (only possible behind a listener without client authentication).";
    RateLimited = "RATE_LIMITED", [ResourceExhausted],
        "The agency is over limits.requests_per_second; RetryInfo says when to retry.";
    TooManyCallsInProgress = "TOO_MANY_CALLS_IN_PROGRESS", [ResourceExhausted],
        "The agency has limits.max_in_flight_per_agency calls in progress; retry when some have finished (RetryInfo).";
    MessageTooLarge = "MESSAGE_TOO_LARGE", [ResourceExhausted],
        "A request message is over limits.max_message_bytes (metadata max_bytes); send smaller messages, documents in chunks.";
    CallDeadlineExceeded = "CALL_DEADLINE_EXCEEDED", [DeadlineExceeded],
        "The call took longer than limits.call_timeout_ms (metadata timeout_ms); a write it started may have completed: retry with the same request_id.";
    TokenMalformed = "TOKEN_MALFORMED", [Unauthenticated],
        "The authorization header is not `Bearer <token>`, or the token cannot be read.";
    AlgorithmNotAllowed = "ALGORITHM_NOT_ALLOWED", [Unauthenticated],
        "The officer token is signed with an algorithm outside the allow-list (never none or HMAC).";
    UnknownKey = "UNKNOWN_KEY", [Unauthenticated],
        "The officer token's signing key (kid) is not in the identity provider's JWKS.";
    BadSignature = "BAD_SIGNATURE", [Unauthenticated],
        "The officer token's signature does not verify.";
    TokenExpired = "TOKEN_EXPIRED", [Unauthenticated],
        "The officer token has expired: sign in again.";
    TokenNotYetValid = "TOKEN_NOT_YET_VALID", [Unauthenticated],
        "The officer token is not valid yet (nbf in the future).";
    WrongIssuer = "WRONG_ISSUER", [Unauthenticated],
        "The officer token was issued by a provider this gateway does not trust.";
    WrongAudience = "WRONG_AUDIENCE", [Unauthenticated],
        "The officer token is not meant for this gateway (aud).";
    MissingClaim = "MISSING_CLAIM", [Unauthenticated],
        "A required claim of the officer token (exp, iss, aud, sub) is absent.";
    InvalidClaim = "INVALID_CLAIM", [Unauthenticated],
        "A claim of the officer token has the wrong type (exp as a string, say).";
    TokenInactive = "INACTIVE", [Unauthenticated],
        "Introspection says the opaque officer token is not active (expired, revoked or unknown).";
    IntrospectionUnavailable = "INTROSPECTION_UNAVAILABLE", [Unavailable],
        "The identity provider's introspection endpoint could not answer; retry (RetryInfo).";
    KeysUnavailable = "KEYS_UNAVAILABLE", [Unavailable],
        "The identity provider's keys (JWKS) could not be fetched; retry (RetryInfo).";
    OfficersNotConfigured = "NOT_CONFIGURED", [Unauthenticated],
        "The call carried an officer token but this gateway has no [officers] verifier configured.";
    OfficerTokenRequired = "OFFICER_TOKEN_REQUIRED", [Unauthenticated],
        "The agency's policy.officer_required names this RPC: send the acting officer's `authorization: Bearer <token>`.";
    PolicyDenied = "POLICY_DENIED", [PermissionDenied],
        "The agency's policy does not grant this (default deny); metadata rule names the deciding rule.";
    AuditorRoleRequired = "AUDITOR_ROLE_REQUIRED", [PermissionDenied],
        "Only agencies with the auditor role may call AuditService.";
    // ---- exchanges ----
    NotFound = "NOT_FOUND", [NotFound],
        "No such referral, information request, application, document or delivery that the caller may see (metadata kind, id).";
    NotAParty = "NOT_A_PARTY", [PermissionDenied],
        "Only the exchange's parties may see or change it: a referral's or information request's sender and recipient, an application's lead and clearing agencies (metadata kind, id).";
    RequestIdReused = "REQUEST_ID_REUSED", [AlreadyExists],
        "The request_id was already used by the agency for a different request: retry with the identical request or a new request_id.";
    TransitionNotAllowed = "TRANSITION_NOT_ALLOWED", [FailedPrecondition],
        "The referral's or clearance's lifecycle does not allow this move from its current status (metadata current_status, requested_status).";
    StatusNotSettableByCaller = "STATUS_NOT_SETTABLE_BY_CALLER", [FailedPrecondition],
        "The caller's side may never set this status (the recipient cannot withdraw, only the gateway sets DELIVERED and FAILED).";
    NotOpen = "NOT_OPEN", [FailedPrecondition],
        "The information request is no longer OPEN (metadata current_status): it was answered, declined or has expired.";
    NotTheAskedAgency = "NOT_THE_ASKED_AGENCY", [PermissionDenied],
        "Only the agency asked may respond to an information request (metadata asked_agency).";
    NotAClearingAgency = "NOT_A_CLEARING_AGENCY", [PermissionDenied],
        "Only a clearing agency of the application moves a clearance, and only its own (metadata application_id); the lead withdraws instead.";
    NotTheLeadAgency = "NOT_THE_LEAD_AGENCY", [PermissionDenied],
        "Only the application's lead agency may withdraw it (metadata lead_agency).";
    ApplicationDecided = "APPLICATION_DECIDED", [FailedPrecondition],
        "The application is already APPROVED, REJECTED or WITHDRAWN (metadata current_status): nothing in it moves any more.";
    NotAnInboxAgency = "NOT_AN_INBOX_AGENCY", [FailedPrecondition],
        "The agency's deliveries are pushed by its adapter; only agencies with adapter kind \"inbox\" pull.";
    // ---- documents ----
    ChunkTooLarge = "CHUNK_TOO_LARGE", [InvalidArgument],
        "An UploadDocument chunk is over documents.max_chunk_bytes (metadata max_bytes); nothing was stored.";
    DocumentTooLarge = "DOCUMENT_TOO_LARGE", [InvalidArgument],
        "The document is over documents.max_document_bytes (metadata max_bytes); nothing was stored.";
    DocumentCorrupt = "DOCUMENT_CORRUPT", [DataLoss],
        "The stored bytes of the document do not match its SHA-256; the operator is alerted.";
    // ---- the audit trail ----
    NoCheckpointYet = "NO_CHECKPOINT_YET", [FailedPrecondition],
        "The log has no signed checkpoint yet; one is written shortly after the first entry.";
    BeyondCheckpoint = "BEYOND_CHECKPOINT", [FailedPrecondition],
        "The leaf index or tree size asked for is not covered by the latest signed checkpoint yet (metadata tree_size): ask again shortly.";
    // ---- the gateway itself ----
    ShuttingDown = "SHUTTING_DOWN", [Unavailable],
        "The gateway is shutting down: an open WatchReferralEvents stream ends with it; reconnect and resume from your last cursor.";
    Storage = "STORAGE", [Internal, Unavailable],
        "The gateway's storage failed. UNAVAILABLE (with RetryInfo) when it is worth retrying soon: the database is overloaded, unreachable, restarting or out of disk; retry with the same request_id (a write whose commit was cut off is then answered once, from its idempotency record).";
}

/// The error every handler and gate returns; `Status::from` is its only way out.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: INVALID_ARGUMENT with a BadRequest field violation per problem.
    #[error("invalid request: {}", describe_violations(.0))]
    Invalid(Vec<FieldViolation>),
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} is visible only to the agencies party to it")]
    NotParty { kind: &'static str, id: String },
    #[error(
        "request_id {request_id:?} was already used by your agency for a different request; \
         retry with the identical request or use a new request_id"
    )]
    RequestIdReused { request_id: String },
    /// A lifecycle move the rules refuse (`message` says why and what is allowed).
    #[error("{message}")]
    Transition {
        referral_id: String,
        current: &'static str,
        requested: &'static str,
        /// The caller's side may never set `requested`, whatever the current status.
        not_settable: bool,
        message: String,
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
        reason: Reason,
        field: &'static str,
        limit: u64,
        actual: u64,
    },
    #[error("document {id}: the stored bytes do not match its SHA-256")]
    DataLoss { id: String },
    /// A refusal with its reason, for the caller (`message`), its ErrorInfo metadata, and
    /// a retry hint when waiting helps. The request path's gates and the audit service
    /// refuse this way.
    #[error("{message}")]
    Refused {
        reason: Reason,
        code: Code,
        message: String,
        metadata: Vec<(&'static str, String)>,
        retry_after: Option<Duration>,
    },
    /// The request stream broke (the client went away, a message the transport refused).
    #[error("{}", .0.message())]
    Stream(Status),
    #[error("document storage: {0}")]
    Blob(#[from] std::io::Error),
    /// The database failed; `cause` is logged, never sent. `transient`: it is worth
    /// retrying soon (overloaded, unreachable, restarting, out of disk), so UNAVAILABLE with
    /// a retry hint rather than INTERNAL.
    #[error("storage: {cause}")]
    Storage { transient: bool, cause: String },
}

impl ApiError {
    /// A refusal with the usual code of `reason`.
    pub fn refused(reason: Reason, message: impl Into<String>) -> ApiError {
        ApiError::Refused {
            reason,
            code: reason.codes()[0],
            message: message.into(),
            metadata: Vec::new(),
            retry_after: None,
        }
    }

    /// Adds an ErrorInfo metadata entry (refusals only).
    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> ApiError {
        if let ApiError::Refused { metadata, .. } = &mut self {
            metadata.push((key, value.into()));
        }
        self
    }

    /// Adds a retry hint (refusals only).
    pub fn retry_after(mut self, delay: Duration) -> ApiError {
        if let ApiError::Refused { retry_after, .. } = &mut self {
            *retry_after = Some(delay);
        }
        self
    }

    /// Uses another of the reason's codes (refusals only).
    pub fn with_code(mut self, new: Code) -> ApiError {
        if let ApiError::Refused { code, reason, .. } = &mut self {
            debug_assert!(reason.codes().contains(&new), "{reason:?} is never {new:?}");
            *code = new;
        }
        self
    }

    /// Stored data that cannot be read back.
    pub fn corrupt(what: impl std::fmt::Display) -> ApiError {
        ApiError::Storage {
            transient: false,
            cause: format!("stored data is corrupt: {what}"),
        }
    }

    /// The stable reason of this error, if it has one (bad input has field violations
    /// instead; a broken stream keeps the transport's status).
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            ApiError::Invalid(_) | ApiError::Stream(_) => return None,
            ApiError::NotFound { .. } | ApiError::Hidden { .. } => Reason::NotFound,
            ApiError::NotParty { .. } => Reason::NotAParty,
            ApiError::RequestIdReused { .. } => Reason::RequestIdReused,
            ApiError::Transition { not_settable, .. } => {
                if *not_settable {
                    Reason::StatusNotSettableByCaller
                } else {
                    Reason::TransitionNotAllowed
                }
            }
            ApiError::PolicyDenied { .. } => Reason::PolicyDenied,
            ApiError::NotOpen { .. } => Reason::NotOpen,
            ApiError::NotAskedAgency { .. } => Reason::NotTheAskedAgency,
            ApiError::TooLarge { reason, .. } | ApiError::Refused { reason, .. } => *reason,
            ApiError::DataLoss { .. } => Reason::DocumentCorrupt,
            ApiError::Blob(_) | ApiError::Storage { .. } => Reason::Storage,
        })
    }

    /// The rule an access refusal is noted with in the call's audit entry, if this error
    /// is one (refusals of the request path note their own rule before they refuse).
    pub fn audit_rule(&self) -> Option<String> {
        match self {
            ApiError::NotParty { kind, .. } => Some(format!("{}.party", kind.replace(' ', "_"))),
            ApiError::NotAskedAgency { .. } => Some("information_request.asked-agency".into()),
            ApiError::Refused {
                reason: Reason::NotAClearingAgency,
                ..
            } => Some("application.clearing-agency".into()),
            ApiError::Refused {
                reason: Reason::NotTheLeadAgency,
                ..
            } => Some("application.lead-agency".into()),
            ApiError::PolicyDenied { rule, .. } => Some(rule.clone()),
            ApiError::Hidden {
                refused_by: Some(rule),
                ..
            } => Some(rule.to_string()),
            _ => None,
        }
    }
}

fn describe_violations(v: &[FieldViolation]) -> String {
    v.iter()
        .map(|f| format!("{}: {}", f.field, f.description))
        .collect::<Vec<_>>()
        .join("; ")
}

fn info(reason: Reason, metadata: &[(&str, &str)]) -> ErrorDetails {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, metadata)
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let message = err.to_string();
        let reason = err.reason();
        let with = |code: Code, details: ErrorDetails| {
            Status::with_error_details(code, message.clone(), details)
        };
        let reason = || reason.unwrap_or(Reason::Storage);
        match err {
            ApiError::Invalid(violations) => with(
                Code::InvalidArgument,
                ErrorDetails::with_bad_request(violations),
            ),
            ApiError::NotFound { kind, ref id }
            | ApiError::NotParty { kind, ref id }
            | ApiError::Hidden { kind, ref id, .. } => with(
                reason().codes()[0],
                info(reason(), &[("kind", kind), ("id", id)]),
            ),
            ApiError::RequestIdReused { ref request_id } => with(
                Code::AlreadyExists,
                info(reason(), &[("request_id", request_id)]),
            ),
            ApiError::Transition {
                ref referral_id,
                current,
                requested,
                ..
            } => {
                let mut details = info(
                    reason(),
                    &[
                        ("referral_id", referral_id),
                        ("current_status", current),
                        ("requested_status", requested),
                    ],
                );
                details.add_precondition_failure_violation(
                    "STATUS",
                    referral_id.as_str(),
                    message.clone(),
                );
                with(Code::FailedPrecondition, details)
            }
            ApiError::NotOpen {
                kind,
                ref id,
                current,
                ..
            } => {
                let mut details = info(
                    reason(),
                    &[("kind", kind), ("id", id), ("current_status", current)],
                );
                details.add_precondition_failure_violation("STATUS", id.as_str(), message.clone());
                with(Code::FailedPrecondition, details)
            }
            ApiError::PolicyDenied { ref rule, .. } => {
                with(Code::PermissionDenied, info(reason(), &[("rule", rule)]))
            }
            ApiError::NotAskedAgency { ref id, ref asked } => with(
                Code::PermissionDenied,
                info(
                    reason(),
                    &[("information_request_id", id), ("asked_agency", asked)],
                ),
            ),
            ApiError::TooLarge { field, limit, .. } => {
                let mut details = info(reason(), &[("max_bytes", &limit.to_string())]);
                details.add_bad_request_violation(field, message.clone());
                with(Code::InvalidArgument, details)
            }
            ApiError::DataLoss { ref id } => {
                tracing::error!(document = %id, "stored document bytes do not match their SHA-256");
                Status::with_error_details(
                    Code::DataLoss,
                    format!("{message}; the gateway operator has been alerted"),
                    info(reason(), &[("id", id)]),
                )
            }
            ApiError::Refused {
                reason,
                code,
                ref metadata,
                retry_after,
                ..
            } => {
                let metadata: Vec<(&str, &str)> =
                    metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let mut details = info(reason, &metadata);
                if let Some(delay) = retry_after {
                    details.set_retry_info(Some(delay));
                }
                with(code, details)
            }
            ApiError::Stream(status) => status,
            ApiError::Blob(e) => {
                tracing::error!(error = %e, "document storage failure");
                Status::with_error_details(
                    Code::Internal,
                    "internal document storage error; retry later or contact the gateway operator",
                    info(reason(), &[]),
                )
            }
            ApiError::Storage { transient, cause } => {
                // The cause is logged; the caller gets no internals.
                tracing::error!(error = %cause, "storage failure");
                let mut details = info(reason(), &[]);
                let (code, text) = if transient {
                    details.set_retry_info(Some(STORAGE_RETRY));
                    (
                        Code::Unavailable,
                        "the gateway's storage is unavailable for the moment; retry after the RetryInfo delay, with the same request_id",
                    )
                } else {
                    (
                        Code::Internal,
                        "internal storage error; retry later or contact the gateway operator",
                    )
                };
                Status::with_error_details(code, text, details)
            }
        }
    }
}

/// The retry hint of a transient storage failure.
const STORAGE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The Markdown table of every reason, as docs/errors.md carries it.
pub fn reason_table() -> String {
    let mut out = String::from("| reason | gRPC code | meaning |\n|---|---|---|\n");
    for r in Reason::ALL {
        let codes: Vec<String> = r
            .codes()
            .iter()
            .map(|c| format!("{c:?}"))
            .map(|c| screaming(&c))
            .collect();
        out += &format!(
            "| `{}` | {} | {} |\n",
            r.as_str(),
            codes.join(", "),
            r.meaning()
        );
    }
    out
}

/// `FailedPrecondition` → `FAILED_PRECONDITION`.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_screaming_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{s}");
            assert!(!r.codes().is_empty() && !r.meaning().is_empty(), "{s}");
        }
        assert_eq!(screaming("FailedPrecondition"), "FAILED_PRECONDITION");
    }

    #[test]
    fn every_error_maps_to_a_code_its_reason_allows() {
        let samples = vec![
            ApiError::NotFound {
                kind: "referral",
                id: "x".into(),
            },
            ApiError::NotParty {
                kind: "referral",
                id: "x".into(),
            },
            ApiError::RequestIdReused {
                request_id: "r".into(),
            },
            ApiError::Transition {
                referral_id: "x".into(),
                current: "SUBMITTED",
                requested: "COMPLETED",
                not_settable: false,
                message: "no".into(),
            },
            ApiError::PolicyDenied {
                rule: "policy.default-deny".into(),
                message: "no".into(),
            },
            ApiError::NotOpen {
                kind: "information request",
                id: "x".into(),
                current: "ANSWERED",
                action: "answered",
            },
            ApiError::NotAskedAgency {
                id: "x".into(),
                asked: "police".into(),
            },
            ApiError::Hidden {
                kind: "document",
                id: "x".into(),
                refused_by: None,
            },
            ApiError::TooLarge {
                reason: Reason::ChunkTooLarge,
                field: "chunk",
                limit: 1,
                actual: 2,
            },
            ApiError::DataLoss { id: "x".into() },
            ApiError::refused(Reason::RateLimited, "slow down")
                .retry_after(Duration::from_millis(5)),
            ApiError::refused(Reason::KeysUnavailable, "down"),
            ApiError::Storage {
                transient: true,
                cause: "pool".into(),
            },
            ApiError::Storage {
                transient: false,
                cause: "disk".into(),
            },
        ];
        for e in samples {
            let reason = e.reason().expect("a reason");
            let status = Status::from(e);
            assert!(
                reason.codes().contains(&status.code()),
                "{reason:?} mapped to {:?}",
                status.code()
            );
            let details = status.get_error_details();
            let info = details.error_info().expect("ErrorInfo");
            assert_eq!(info.reason, reason.as_str());
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    #[test]
    fn the_docs_table_of_reasons_is_generated_from_the_type() {
        let doc = include_str!("../../docs/errors.md");
        let table = reason_table();
        assert!(
            doc.contains(&table),
            "docs/errors.md's reason table is out of date; replace it with:\n\n{table}"
        );
    }
}
