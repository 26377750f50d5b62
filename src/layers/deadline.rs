//! The gateway's deadline for every call (`limits.call_timeout_ms`), as our own layer inside
//! the audit layer, so the call's entry records DEADLINE_EXCEEDED once.

use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

use crate::common::error::{ApiError, Reason};
use crate::common::BoxFuture;

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
                Err(_) => Ok(Status::from(
                    ApiError::refused(
                        Reason::CallDeadlineExceeded,
                        format!(
                            "the call took longer than the gateway's deadline of {} ms (limits.call_timeout_ms); \
                             a write it started may still have completed: retry with the same request_id",
                            limit.as_millis()
                        ),
                    )
                    .with("timeout_ms", limit.as_millis().to_string()),
                )
                .into_http()),
            }
        })
    }
}
