//! gRPC handlers. They stay thin: take the caller, validate, apply the domain rules
//! through one store transaction, and map errors in one place (`error`).

pub mod audit;
pub mod convert;
pub mod directory;
pub mod document;
pub mod error;
pub mod inbox;
pub mod information_request;
mod paging;
pub mod referral;
pub mod validate;
