//! gRPC handlers. They stay thin: take the caller, validate, apply the domain rules
//! through one store transaction, and map errors in one place (`error`).

pub mod audit;
pub mod directory;
pub mod error;
pub mod inbox;
mod paging;
pub mod referral;
pub mod unimplemented;
pub mod validate;
