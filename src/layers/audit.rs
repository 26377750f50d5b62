//! The audit tower layer: the one place every call ends, where its entry is written.
//!
//! It wraps every service of the gateway. For a call the handler did not record itself
//! (reads, refusals, invalid input, unknown methods, streams) it appends the entry when
//! the call's gRPC status is known, and holds back the end of the response (the status)
//! until the entry is durable. A call the client abandons is recorded as CANCELLED.
//!
//! It is also where a call's telemetry starts and ends: the server span (OpenTelemetry
//! RPC conventions, continuing the caller's `traceparent`, whose trace id the audit entry
//! carries) and `rpc.server.call.duration` with the calls-by-decision counter.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::audit::context::AuditContext;
use crate::telemetry::metrics::{code_name, metrics};
use crate::telemetry::traces;
use crate::tls::listener::ConnInfo;
use {crate::common::BoxFuture, crate::store::Store};

#[derive(Clone)]
pub struct AuditLayer {
    store: Store,
}

impl AuditLayer {
    pub fn new(store: Store) -> AuditLayer {
        AuditLayer { store }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audited<S>;
    fn layer(&self, inner: S) -> Audited<S> {
        Audited {
            inner,
            store: self.store.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Audited<S> {
    inner: S,
    store: Store,
}

impl<S> Service<http::Request<Body>> for Audited<S>
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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let identity = request
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.identity.clone());
        let traceparent = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        let span = server_span(&request, traceparent);
        // The exported trace's id when there is one (it continues the caller's), so the
        // audit entry and the spans name the same trace.
        let trace_id = traces::trace_id(&span)
            .or_else(|| traceparent.and_then(crate::common::trace::trace_id_of))
            .unwrap_or_else(crate::common::trace::new_trace_id);
        let ctx = Arc::new(AuditContext::new(request.uri().path(), identity, trace_id));
        request.extensions_mut().insert(ctx.clone());
        // The service that was polled ready serves this call (tower's clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let pending = Pending {
            ctx,
            store: self.store.clone(),
            span: span.clone(),
        };
        Box::pin(async move {
            // Dropped before an answer (the client went away, or its deadline passed):
            // the guard records the call as CANCELLED.
            let mut unanswered = Unanswered(Some(pending));
            let response = inner.call(request).instrument(span).await?;
            let Some(pending) = unanswered.0.take() else {
                return Ok(response);
            };
            let (parts, body) = response.into_parts();
            // An error answer carries its status in the headers ("trailers-only"): the
            // call is over, record it before answering.
            if let Some(code) = grpc_status(&parts.headers) {
                pending.record(code).await;
                return Ok(http::Response::from_parts(parts, body));
            }
            let body = AuditedBody {
                inner: body,
                pending: Some(pending),
                recording: None,
                trailers: None,
            };
            Ok(http::Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// The call's server span, if traces are exported: named `{rpc.method}`, with the
/// OpenTelemetry RPC semantic conventions, continuing `traceparent`.
fn server_span(request: &http::Request<Body>, traceparent: Option<&str>) -> tracing::Span {
    if !traces::enabled() {
        return tracing::Span::none();
    }
    let method = request.uri().path().trim_start_matches('/');
    let authority = request.uri().authority();
    let span = tracing::info_span!(
        target: traces::TARGET,
        "rpc",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system.name = "grpc",
        rpc.method = method,
        rpc.response.status_code = tracing::field::Empty,
        server.address = authority.map(|a| a.host()),
        server.port = authority.and_then(|a| a.port_u16()),
        error.type = tracing::field::Empty,
    );
    traces::continue_trace(&span, traceparent);
    span
}

/// The `rpc_method` label: a method of the contract or of health and reflection, else
/// `_OTHER` (as OpenTelemetry's conventions say), so a caller's made-up paths cannot grow
/// the metric without bound.
fn metric_method(path: &str) -> &'static str {
    static KNOWN: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            let mut known: std::collections::HashSet<String> =
                crate::common::contract::served_rpcs().into_iter().collect();
            known.extend(
                [
                    "grpc.health.v1.Health/Check",
                    "grpc.health.v1.Health/Watch",
                    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                ]
                .map(String::from),
            );
            known
        });
    // The label borrows the set's own string: no allocation per call.
    KNOWN
        .get(path.trim_start_matches('/'))
        .map_or("_OTHER", String::as_str)
}

/// Server-side codes that mean the server failed (OpenTelemetry's gRPC conventions):
/// the span's status is ERROR and `error.type` names the code.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A call whose entry is still to be written.
struct Pending {
    ctx: Arc<AuditContext>,
    store: Store,
    span: tracing::Span,
}

impl Pending {
    async fn record(self, code: i32) {
        // A write of this call still in flight records it, or settles without doing so.
        self.ctx.settled().await;
        if !self.ctx.is_recorded() {
            let entry = self.ctx.entry(code);
            if let Err(e) = self.store.append_audit(entry, self.ctx.started()).await {
                tracing::error!(error = %e, trace_id = %self.ctx.trace_id(), "audit entry could not be written");
            }
        }
        let code = tonic::Code::from_i32(code);
        let name = code_name(code);
        metrics().call(
            metric_method(self.ctx.method()),
            code,
            self.ctx.caller_agency(),
            self.ctx.allowed(),
            self.ctx.started().elapsed(),
        );
        self.span.record("rpc.response.status_code", name);
        if is_server_error(code) {
            self.span.record("error.type", name);
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

/// A call not answered yet; recorded as CANCELLED if it is dropped so.
struct Unanswered(Option<Pending>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(pending.record(tonic::Code::Cancelled as i32));
            }
        }
    }
}

/// The response body, with its trailers held until the entry is durable.
struct AuditedBody {
    inner: Body,
    pending: Option<Pending>,
    recording: Option<BoxFuture<'static, ()>>,
    trailers: Option<Result<Frame<Bytes>, tonic::Status>>,
}

impl http_body::Body for AuditedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(recording) = this.recording.as_mut() {
                std::task::ready!(recording.as_mut().poll(cx));
                this.recording = None;
                return Poll::Ready(this.trailers.take());
            }
            let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
            let code = match &frame {
                Some(Ok(f)) => match f.trailers_ref() {
                    Some(trailers) => grpc_status(trailers).unwrap_or(2),
                    None => return Poll::Ready(frame),
                },
                Some(Err(status)) => status.code() as i32,
                None => 0,
            };
            match this.pending.take() {
                Some(pending) => {
                    this.trailers = frame;
                    this.recording = Some(Box::pin(pending.record(code)));
                }
                None => return Poll::Ready(frame),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none()
            && self.recording.is_none()
            && self.trailers.is_none()
            && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // The client went away before the call ended (a closed stream, a reset).
        if let Some(pending) = self.pending.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(pending.record(tonic::Code::Cancelled as i32));
            }
        }
    }
}
