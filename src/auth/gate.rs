//! The checks every call passes before its handler, as tower layers stacked in
//! `server.rs` (after the audit layer, which records whatever they decide):
//!
//! ```text
//! limits (per-agency rate and calls in progress) → officer token → authorize (policy)
//! ```
//!
//! Each is a [`Gate`]: it looks at the request (and may annotate it), then lets it through,
//! holding something until the handler has answered, or refuses it with a status. A refusal
//! names its rule in the call's audit entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use super::officer::{OfficerError, OfficerReason, OfficerVerifier};
use super::policy::{Policy, AUDIT_SERVICE};
use crate::api::error::ERROR_DOMAIN;
use crate::audit::context::AuditContext;
use crate::config::Config;
use crate::store::BoxFuture;
use crate::tls::listener::ConnInfo;

/// One check on the request path.
pub trait Gate: Clone + Send + Sync + 'static {
    /// Held until the handler has answered (a concurrency permit, say).
    type Hold: Send + 'static;
    fn check<'a>(
        &'a self,
        request: &'a mut http::Request<Body>,
    ) -> BoxFuture<'a, Result<Self::Hold, Status>>;

    /// Sees the answer on its way out (the default passes it on unchanged).
    fn answer(&self, _hold: &Self::Hold, response: http::Response<Body>) -> http::Response<Body> {
        response
    }
}

/// A [`Gate`] as a tower layer.
#[derive(Clone)]
pub struct GateLayer<G>(pub G);

impl<S, G: Clone> Layer<S> for GateLayer<G> {
    type Service = Gated<S, G>;
    fn layer(&self, inner: S) -> Gated<S, G> {
        Gated {
            inner,
            gate: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gated<S, G> {
    inner: S,
    gate: G,
}

impl<S, G> Service<http::Request<Body>> for Gated<S, G>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    G: Gate,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The service that was polled ready serves this call (tower's clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            match gate.check(&mut request).await {
                Ok(hold) => {
                    let response = inner.call(request).await?;
                    Ok(gate.answer(&hold, response))
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The gateway's deadline for every call: past it the handler is dropped and the caller
/// gets DEADLINE_EXCEEDED (a write the call had started still commits or rolls back whole;
/// the audit layer records the call once, after it settles). A client's own shorter
/// `grpc-timeout` is enforced by tonic as well.
#[derive(Clone)]
pub struct DeadlineLayer(pub Duration);

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            limit: self.0,
        }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<http::Request<Body>> for Deadline<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, inner.call(request)).await {
                Ok(answer) => answer,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call took longer than the gateway's deadline of {} ms (limits.call_timeout_ms); \
                     a write it started may still have completed: retry with the same request_id",
                    limit.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

/// What the gates know of a call: its agency (from the certificate), its method
/// (`package.Service/Method`) and its audit context.
fn call_of(request: &http::Request<Body>) -> Option<(String, String, Arc<AuditContext>)> {
    let agency = request
        .extensions()
        .get::<ConnInfo>()?
        .identity
        .agency_id
        .clone();
    let audit = request.extensions().get::<Arc<AuditContext>>()?.clone();
    let method = request.uri().path().trim_start_matches('/').to_string();
    Some((agency, method, audit))
}

/// A refusal with an ErrorInfo (and a retry hint, when waiting helps).
fn refusal(
    code: Code,
    message: String,
    reason: &str,
    metadata: &[(&str, &str)],
    retry_after: Option<Duration>,
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    if let Some(delay) = retry_after {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, message, details)
}

// ---- limits -------------------------------------------------------------------------------

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
    pub fn new(config: &Config) -> Limits {
        let l = &config.limits;
        let burst = f64::from(l.burst);
        Limits {
            agencies: Arc::new(
                config
                    .agencies
                    .iter()
                    .map(|a| {
                        (
                            a.id.clone(),
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
        refusal(
            Code::ResourceExhausted,
            format!(
                "a request message of agency {agency} is over the gateway's limit of {max} bytes; \
                 send smaller messages (documents: in chunks)"
            ),
            "MESSAGE_TOO_LARGE",
            &[("agency", agency), ("max_bytes", &max)],
            None,
        )
        .into_http()
    }

    fn check<'a>(
        &'a self,
        request: &'a mut http::Request<Body>,
    ) -> BoxFuture<'a, Result<Self::Hold, Status>> {
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
                return Err(refusal(
                    Code::ResourceExhausted,
                    format!(
                        "agency {agency} is over its rate limit of {} calls per second; retry after {} ms",
                        self.rate,
                        wait.as_millis().max(1)
                    ),
                    "RATE_LIMITED",
                    &[("agency", &agency)],
                    Some(wait),
                ));
            }
            match limits.in_flight.clone().try_acquire_owned() {
                Ok(permit) => Ok(LimitHold {
                    _permit: Some(permit),
                    call: Some((agency, audit)),
                }),
                Err(_) => {
                    audit.deny("limits.in-flight");
                    Err(refusal(
                        Code::ResourceExhausted,
                        format!(
                            "agency {agency} has too many calls in progress; retry when some have finished"
                        ),
                        "TOO_MANY_CALLS_IN_PROGRESS",
                        &[("agency", &agency)],
                        Some(Duration::from_millis(100)),
                    ))
                }
            }
        })
    }
}

// ---- officer token ------------------------------------------------------------------------

/// `authorization: Bearer <token>`, when present, must name a verified officer; the
/// subject goes into the audit entry and the request, the token goes nowhere (the header
/// is removed before the handler).
#[derive(Clone)]
pub struct Officers(pub Arc<OfficerVerifier>);

impl Gate for Officers {
    type Hold = ();

    fn check<'a>(
        &'a self,
        request: &'a mut http::Request<Body>,
    ) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let Some(header) = request.headers_mut().remove(http::header::AUTHORIZATION) else {
                return Ok(());
            };
            let Some((agency, _, audit)) = call_of(request) else {
                return Ok(());
            };
            let token = header
                .to_str()
                .ok()
                .and_then(|h| h.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            let result = match token {
                Some(token) => self.0.verify(token).await,
                None => Err(OfficerError::new(
                    OfficerReason::TokenMalformed,
                    "the authorization header is not `Bearer <token>`",
                )),
            };
            match result {
                Ok(officer) => {
                    audit.set_officer(&officer.subject);
                    request
                        .extensions_mut()
                        .insert(OfficerSubject(officer.subject));
                    Ok(())
                }
                Err(e) => {
                    audit.deny("officer.token");
                    let (code, retry) = if e.reason.is_unavailable() {
                        (Code::Unavailable, Some(Duration::from_secs(1)))
                    } else {
                        (Code::Unauthenticated, None)
                    };
                    Err(refusal(
                        code,
                        e.message.clone(),
                        e.code(),
                        &[("agency", &agency)],
                        retry,
                    ))
                }
            }
        })
    }
}

// ---- authorize ----------------------------------------------------------------------------

/// Default deny: the call's RPC must be granted by the agency's policy (or its role), and
/// an officer token must be present where the policy requires one.
#[derive(Clone)]
pub struct Authorize(pub Policy);

/// Set on requests that carried a valid officer token (by the officer gate).
#[derive(Debug, Clone)]
pub struct OfficerSubject(pub String);

impl Gate for Authorize {
    type Hold = ();

    fn check<'a>(
        &'a self,
        request: &'a mut http::Request<Body>,
    ) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let Some((agency, method, audit)) = call_of(request) else {
                // Only reachable if a listener without client authentication served the call.
                return Err(Status::unauthenticated(
                    "no verified agency certificate on this connection",
                ));
            };
            let decision = self.0.rpc(&agency, &method);
            if !decision.allowed {
                audit.deny(&decision.rule);
                let auditor_only = method.starts_with(AUDIT_SERVICE);
                let (reason, message) = if auditor_only {
                    (
                        "AUDITOR_ROLE_REQUIRED",
                        format!(
                            "agency {agency} does not hold the auditor role; only auditors may read the audit trail"
                        ),
                    )
                } else {
                    (
                        "POLICY_DENIED",
                        format!(
                            "agency {agency} may not call {method}: its policy does not grant it (default deny); \
                             ask the gateway operator to add it to the agency's policy.allow"
                        ),
                    )
                };
                return Err(refusal(
                    Code::PermissionDenied,
                    message,
                    reason,
                    &[
                        ("agency", &agency),
                        ("method", &method),
                        ("rule", &decision.rule),
                    ],
                    None,
                ));
            }
            audit.allow(&decision.rule);
            if let Some(rule) = self.0.officer_required(&agency, &method) {
                if request.extensions().get::<OfficerSubject>().is_none() {
                    audit.deny(&rule);
                    return Err(refusal(
                        Code::Unauthenticated,
                        format!(
                            "{method} needs the acting officer's token for agency {agency}: \
                             send `authorization: Bearer <token>`"
                        ),
                        "OFFICER_TOKEN_REQUIRED",
                        &[("agency", &agency), ("method", &method), ("rule", &rule)],
                        None,
                    ));
                }
            }
            Ok(())
        })
    }
}
