//! Durable delivery to agencies: the outbox (written in the same transaction as the change
//! that caused it), the dispatcher that drains it through each agency's adapter (a
//! delivery's fate goes back through the exchange: DELIVERED, FAILED, the sender told),
//! and the time-frame sweep.
//!
//! At least once, with a stable `delivery_id` the receiver de-duplicates on; deliveries of
//! one exchange to one agency arrive in order. See docs/adapters.md.

pub mod breaker;
pub mod dispatcher;
pub mod sweeper;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::common::BoxFuture;
use crate::config::{at_least_one, ConfigError};
use crate::pb::adapter_v1::Delivery;

/// Delivery to agencies: retries, limits, dead letters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// The gateway's own client certificate for calling agencies (created with the dev PKI).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A delivery is retried until this long after it was created, then dead-lettered
    /// (FAILED). Only a permanent refusal ends it sooner...
    pub max_age_secs: u64,
    /// ...or, if an operator sets it, this many attempts. Unset by default: an agency's
    /// outage must not fail deliveries by their attempt count.
    pub max_attempts: Option<u32>,
    /// Backoff before retry n: min(initial * 2^(n-1), max), with jitter.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// One attempt's deadline.
    pub timeout_ms: u64,
    /// Deliveries in flight to one agency at once.
    pub per_agency_concurrency: usize,
    /// Consecutive failures that open an agency's circuit breaker, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    /// An inbox delivery not acknowledged this long after it was pulled is offered again.
    pub visibility_timeout_ms: u64,
    /// How often the dispatcher looks for due retries when nothing wakes it.
    pub poll_interval_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            client_cert: PathBuf::from("certs/dev/gateway-client.pem"),
            client_key: PathBuf::from("certs/dev/gateway-client.key"),
            max_age_secs: 86_400,
            max_attempts: None,
            initial_backoff_ms: 200,
            max_backoff_ms: 60_000,
            timeout_ms: 10_000,
            per_agency_concurrency: 32,
            breaker_failures: 5,
            breaker_cooldown_ms: 10_000,
            visibility_timeout_ms: 30_000,
            poll_interval_ms: 500,
        }
    }
}

impl DeliveryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = self;
        at_least_one(&[
            ("delivery.max_attempts", d.max_attempts.map_or(1, u64::from)),
            ("delivery.max_age_secs", d.max_age_secs),
            ("delivery.timeout_ms", d.timeout_ms),
            (
                "delivery.per_agency_concurrency",
                d.per_agency_concurrency as u64,
            ),
            ("delivery.breaker_failures", u64::from(d.breaker_failures)),
            ("delivery.visibility_timeout_ms", d.visibility_timeout_ms),
            ("delivery.poll_interval_ms", d.poll_interval_ms),
        ])
    }
}

/// What an adapter is asked to deliver.
#[derive(Debug, Clone)]
pub struct OutboundDelivery {
    pub delivery_id: String,
    /// The receiving agency.
    pub agency: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The message, with its metadata (delivery id, attempt, created_at, traceparent) set.
    pub message: Delivery,
}

/// How a delivery failed, which decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again later: the agency is down, slow, overloaded, or answered 5xx.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Trying again cannot help: the agency refused the message (4xx, INVALID_ARGUMENT...).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The agency's own reference for a delivered message.
pub type AgencyReceipt = String;

/// One way of reaching an agency's system. See docs/adapters.md for writing one.
pub trait Adapter: Send + Sync {
    /// The `kind` in the config that selects this adapter.
    fn kind(&self) -> &'static str;
    /// Delivers one message. Must be idempotent on `delivery_id` at the receiver.
    fn deliver<'a>(
        &'a self,
        delivery: &'a OutboundDelivery,
    ) -> BoxFuture<'a, Result<AgencyReceipt, DeliveryError>>;
    /// Whether the agency's system can be reached now.
    fn health(&self) -> BoxFuture<'_, Result<(), DeliveryError>>;
}

/// What a retryable failure means for a delivery after its `attempts`-th attempt, `age_ms`
/// after it was written: the delay before the next attempt, or why it is given up. It is
/// given up only once it is `max_age_secs` old (or, if an operator set `max_attempts`,
/// after that many attempts); until then it is retried with capped backoff.
pub fn after_retryable_failure(
    settings: &DeliveryConfig,
    attempts: u32,
    age_ms: i64,
    error: &str,
) -> Result<Duration, String> {
    if settings.max_attempts.is_some_and(|max| attempts >= max) {
        return Err(format!("gave up after {attempts} attempts: {error}"));
    }
    if age_ms >= settings.max_age_secs as i64 * 1000 {
        return Err(format!("gave up after {} s: {error}", age_ms / 1000));
    }
    Ok(backoff(
        attempts,
        Duration::from_millis(settings.initial_backoff_ms),
        Duration::from_millis(settings.max_backoff_ms),
    ))
}

/// Delay before attempt `attempt + 1`: exponential, capped, with "equal jitter" (half fixed,
/// half random) so retries of many deliveries do not synchronize.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max);
    let half = capped / 2;
    half + half.mul_f64(random_unit())
}

/// A uniform number in [0, 1) from the system's secure random source.
fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 1..=12u32 {
            let full = (i * 2u32.pow(attempt - 1)).min(m);
            for _ in 0..20 {
                let d = backoff(attempt, i, m);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} outside [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(3, i, m)).collect();
        assert!(samples.len() > 10, "jitter varies the delay");
    }

    #[test]
    fn a_retryable_failure_is_retried_until_the_delivery_is_too_old() {
        let s = DeliveryConfig::default();
        let day_ms = s.max_age_secs as i64 * 1000;
        // A thousand attempts an hour into an outage: still retried, at most max_backoff.
        let delay = after_retryable_failure(&s, 1000, 3_600_000, "down").unwrap();
        assert!(
            delay <= Duration::from_millis(s.max_backoff_ms),
            "{delay:?}"
        );
        assert!(
            delay >= Duration::from_millis(s.max_backoff_ms / 2),
            "{delay:?}"
        );
        assert!(after_retryable_failure(&s, 3, day_ms - 1, "down").is_ok());
        let why = after_retryable_failure(&s, 3, day_ms, "down").unwrap_err();
        assert_eq!(why, "gave up after 86400 s: down");
        // An operator's explicit attempt limit still applies.
        let limited = DeliveryConfig {
            max_attempts: Some(3),
            ..DeliveryConfig::default()
        };
        assert!(after_retryable_failure(&limited, 2, 0, "down").is_ok());
        let why = after_retryable_failure(&limited, 3, 0, "down").unwrap_err();
        assert_eq!(why, "gave up after 3 attempts: down");
    }
}
