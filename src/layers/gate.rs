//! The checks every call passes before its handler, as tower layers stacked in
//! `layers::stack` (after the audit layer, which records whatever they decide):
//!
//! ```text
//! limits (per-agency rate and calls in progress) → officer token → authorize (policy)
//! ```
//!
//! Each is a [`Gate`]: it looks at the request (and may annotate it), then lets it through,
//! holding something until the handler has answered, or refuses it with a status. A refusal
//! names its rule in the call's audit entry.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

use crate::audit::context::AuditContext;
use crate::common::{ApiError, BoxFuture};
use crate::tls::listener::ConnInfo;

/// One check on the request path.
pub trait Gate: Clone + Send + Sync + 'static {
    /// Held until the handler has answered (a concurrency permit, say).
    type Hold: Send + 'static;
    fn check<'a>(
        &'a self,
        request: &'a mut http::Request<Body>,
    ) -> BoxFuture<'a, Result<Self::Hold, ApiError>>;

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
                Err(refusal) => Ok(Status::from(refusal).into_http()),
            }
        })
    }
}

/// What the gates know of a call: its agency (from the certificate), its method
/// (`package.Service/Method`) and its audit context.
pub(super) fn call_of(
    request: &http::Request<Body>,
) -> Option<(String, String, Arc<AuditContext>)> {
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
