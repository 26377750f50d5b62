//! The domain: what may happen to an exchange, independent of transport and storage.
//!
//! `exchange` is the one service every state change goes through; the lifecycle rules
//! (`referral`, `information_request`, `application`: joint services' clearances), `policy`, `time_frames` and `payload` are pure;
//! `storage` is the interface `store` implements, over the plain data of `records`.
//! Never imports store, api, delivery, adapters or cli (checked in tests/it/layout.rs).

pub mod application;
pub mod exchange;
pub mod information_request;
pub mod payload;
pub mod policy;
pub mod records;
pub mod referral;
pub mod storage;
pub mod time_frames;
