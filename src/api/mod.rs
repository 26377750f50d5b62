//! gRPC handlers. They stay thin: take the caller, validate, apply the domain rules
//! through one store transaction, and map errors in one place (`error`).

pub mod audit;
pub mod contract;
pub mod convert;
pub mod directory;
pub mod document;
pub mod error;
pub mod inbox;
pub mod information_request;
/// Page tokens bound to their filters (public for the property tests).
pub mod paging;
pub mod referral;
pub mod validate;

/// How every handler ends: the answer, or the error as a status with details (after
/// noting a refusal, with its rule, in the call's audit entry).
pub(crate) fn reply<T>(
    caller: &crate::auth::Caller,
    result: Result<T, error::ApiError>,
) -> Result<tonic::Response<T>, tonic::Status> {
    result
        .map(tonic::Response::new)
        .map_err(|e| e.refuse(&caller.audit))
}
