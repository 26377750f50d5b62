//! Domain rules: what may happen to an exchange, independent of transport and storage.

pub mod information_request;
pub mod payload;
pub mod policy;
pub mod records;
pub mod referral;
pub mod time_frames;
