//! gRPC handlers. They stay thin: take the caller, validate, apply the domain rules
//! through one store transaction, and map errors in one place (`error`).

pub mod audit;
pub mod convert;
pub mod directory;
pub mod document;
pub mod inbox;
pub mod information_request;
/// Page tokens bound to their filters (public for the property tests).
pub mod paging;
pub mod referral;
pub mod validate;

use crate::audit::context::AuditContext;
use crate::common::ApiError;
use crate::domain::policy::Decision;

/// How every handler ends: the answer, or the error as a status with details (after
/// noting a refusal, with its rule, in the call's audit entry).
pub(crate) fn reply<T>(
    caller: &crate::layers::Caller,
    result: Result<T, ApiError>,
) -> Result<tonic::Response<T>, tonic::Status> {
    result
        .map(tonic::Response::new)
        .map_err(|e| e.refuse(&caller.audit))
}

/// An error on its way to the caller, after the call's audit entry has noted the refusal
/// (with its rule) when it is one.
pub(crate) trait Refuse {
    fn refuse(self, audit: &AuditContext) -> tonic::Status;
}

impl Refuse for ApiError {
    fn refuse(self, audit: &AuditContext) -> tonic::Status {
        if let Some(rule) = self.audit_rule() {
            audit.deny(&rule);
        }
        tonic::Status::from(self)
    }
}

/// Notes an allowing policy decision in the call's audit entry, or refuses with a message
/// from `explain`.
pub(crate) fn check_policy(
    decision: &Decision,
    audit: &AuditContext,
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
