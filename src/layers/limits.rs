//! The limits gate and its config: per-agency rate (token bucket) and calls in progress
//! (semaphore), and the message size limit as RESOURCE_EXHAUSTED with the limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::Status;

use crate::audit::context::AuditContext;
use crate::common::error::{ApiError, Reason};
use crate::common::BoxFuture;
use crate::config::{at_least_one, ConfigError};
use crate::layers::gate::{call_of, Gate};

/// Limits that keep one agency (or one attacker) from starving the others. Exceeding a
/// per-call limit is RESOURCE_EXHAUSTED with a retry hint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most TCP connections served at once; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Most TLS connections one agency may hold open; more are closed after the handshake.
    pub max_connections_per_agency: usize,
    /// Most HTTP/2 streams (calls) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Sustained calls per second one agency may make (token bucket)...
    pub requests_per_second: f64,
    /// ...with bursts up to this many calls.
    pub burst: u32,
    /// Most calls of one agency in progress at once (a streamed answer counts until it
    /// starts; streams are bounded by max_concurrent_streams and connections).
    pub max_in_flight_per_agency: usize,
    /// Largest request message (DocumentService uploads have their own chunk limit).
    pub max_message_bytes: usize,
    /// Deadline of every unary call (a shorter grpc-timeout from the client wins);
    /// streams are bounded by their own rules.
    pub call_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections_total(),
            max_connections_per_agency: 64,
            max_concurrent_streams: 128,
            requests_per_second: 200.0,
            burst: 400,
            max_in_flight_per_agency: 64,
            max_message_bytes: 4 * 1024 * 1024,
            call_timeout_ms: 30_000,
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
        at_least_one(&[
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.max_connections_per_agency",
                l.max_connections_per_agency as u64,
            ),
            (
                "limits.max_concurrent_streams",
                u64::from(l.max_concurrent_streams),
            ),
            ("limits.burst", u64::from(l.burst)),
            (
                "limits.max_in_flight_per_agency",
                l.max_in_flight_per_agency as u64,
            ),
            ("limits.max_message_bytes", l.max_message_bytes as u64),
            ("limits.call_timeout_ms", l.call_timeout_ms),
        ])?;
        if !(l.requests_per_second > 0.0 && l.requests_per_second.is_finite()) {
            return Err(ConfigError::invalid(
                "limits.requests_per_second",
                &l.requests_per_second.to_string(),
                "a positive number of calls per second",
            ));
        }
        Ok(())
    }
}

fn default_max_connections_total() -> usize {
    1024
}

/// Per-agency rate (token bucket) and calls in progress (semaphore): one agency flooding
/// the gateway is refused early, without slowing the others.
#[derive(Clone)]
pub struct Limits {
    agencies: Arc<HashMap<String, AgencyLimits>>,
    rate: f64,
    burst: f64,
}

struct AgencyLimits {
    bucket: Mutex<Bucket>,
    in_flight: Arc<Semaphore>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limits {
    /// The limits of `agencies`.
    pub fn new<'a>(l: &LimitsConfig, agencies: impl IntoIterator<Item = &'a str>) -> Limits {
        let burst = f64::from(l.burst);
        Limits {
            agencies: Arc::new(
                agencies
                    .into_iter()
                    .map(|a| {
                        (
                            a.to_string(),
                            AgencyLimits {
                                bucket: Mutex::new(Bucket {
                                    tokens: burst,
                                    at: Instant::now(),
                                }),
                                in_flight: Arc::new(Semaphore::new(l.max_in_flight_per_agency)),
                            },
                        )
                    })
                    .collect(),
            ),
            rate: l.requests_per_second,
            burst,
        }
    }

    /// Takes one token, or says how long until one is available.
    fn take(&self, limits: &AgencyLimits) -> Result<(), Duration> {
        let mut b = limits.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

/// What the limits gate holds for a call: its permit, and what it needs to tell a
/// message the transport refused as too large.
pub struct LimitHold {
    _permit: Option<OwnedSemaphorePermit>,
    call: Option<(String, Arc<AuditContext>)>,
}

impl Gate for Limits {
    type Hold = LimitHold;

    /// tonic refuses a request message over the size limit with OUT_OF_RANGE; gRPC says
    /// RESOURCE_EXHAUSTED, with the limit, which is what the caller gets.
    fn answer(&self, hold: &LimitHold, response: http::Response<Body>) -> http::Response<Body> {
        let message = response
            .headers()
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .map(|m| m.replace("%20", " "))
            .unwrap_or_default();
        let too_large = response
            .headers()
            .get("grpc-status")
            .is_some_and(|s| s == "11")
            && message.contains("too large");
        let Some((agency, audit)) = hold.call.as_ref().filter(|_| too_large) else {
            return response;
        };
        audit.deny("limits.message-size");
        // The limit of the service called (documents have their own), as tonic states it.
        let max = message
            .split("limit is: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_default()
            .to_string();
        Status::from(
            ApiError::refused(
                Reason::MessageTooLarge,
                format!(
                "a request message of agency {agency} is over the gateway's limit of {max} bytes; \
                 send smaller messages (documents: in chunks)"
            ),
            )
            .with("agency", agency.to_string())
            .with("max_bytes", max.to_string()),
        )
        .into_http()
    }

    fn check<'a>(
        &'a self,
        request: &'a mut http::Request<Body>,
    ) -> BoxFuture<'a, Result<Self::Hold, ApiError>> {
        Box::pin(async move {
            let Some((agency, _, audit)) = call_of(request) else {
                return Ok(LimitHold {
                    _permit: None,
                    call: None,
                });
            };
            let Some(limits) = self.agencies.get(&agency) else {
                return Ok(LimitHold {
                    _permit: None,
                    call: Some((agency, audit)),
                });
            };
            if let Err(wait) = self.take(limits) {
                audit.deny("limits.rate");
                let wait = wait.max(Duration::from_millis(1));
                return Err(ApiError::refused(Reason::RateLimited, format!(
                        "agency {agency} is over its rate limit of {} calls per second; retry after {} ms",
                        self.rate,
                        wait.as_millis().max(1)
                    )).with("agency", agency.to_string()).retry_after(wait));
            }
            match limits.in_flight.clone().try_acquire_owned() {
                Ok(permit) => Ok(LimitHold {
                    _permit: Some(permit),
                    call: Some((agency, audit)),
                }),
                Err(_) => {
                    audit.deny("limits.in-flight");
                    Err(ApiError::refused(Reason::TooManyCallsInProgress, format!(
                            "agency {agency} has too many calls in progress; retry when some have finished"
                        )).with("agency", agency.to_string()).retry_after(Duration::from_millis(100)))
                }
            }
        })
    }
}
