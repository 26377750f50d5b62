//! The small things every layer shares, and nothing else: the contract's generated code,
//! the one error type and its single mapping to `tonic::Status`, boxed futures, time and
//! trace-context conversions, identifiers.
//!
//! This module imports no other module of the crate. (DESIGN.md calls it `core/`; it is
//! `common` here because `core` is the name of Rust's own core library, and a module of
//! that name makes `core::` paths ambiguous inside the crate.)

pub mod contract;
pub mod error;
pub mod pb;
pub mod time;
pub mod trace;

use std::future::Future;
use std::pin::Pin;

pub use error::{ApiError, ERROR_DOMAIN};

/// A boxed, sendable future: what trait methods that do I/O return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The id the gateway itself uses when it acts (DELIVERED, FAILED, OVERDUE, EXPIRED); no
/// agency may take it.
pub const GATEWAY_ACTOR: &str = "jisr";

/// What an agency or node id must look like, for messages.
pub const SLUG_RULE: &str =
    "2-63 characters: lowercase letters, digits and '-', starting with a letter (and not \"jisr\")";

/// Agency ids, node ids: `[a-z][a-z0-9-]{1,62}`.
pub fn is_slug(s: &str) -> bool {
    (2..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An error and its sources, "a: b: c" (hyper's and rustls' own messages are terse).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
