//! gRPC handlers. They stay thin: take the caller, validate, call `domain::exchange` for
//! every change (or the store for a read), and map the answer; errors become statuses in
//! one place (`common::error`), after `reply` notes a refusal in the call's audit entry.

pub mod application;
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

/// The exchange service as the gateway runs it: over the store.
pub type GatewayExchange = crate::domain::exchange::Exchange<crate::store::Store>;

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
