//! Who is calling. The agency comes only from the verified client certificate (attached
//! to every request by the TLS listener), never from a payload field.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::audit::context::AuditContext;
use crate::common::error::{ApiError, Reason};
use crate::common::trace::{new_trace_id, trace_id_of};
pub use crate::domain::exchange::Caller;
use crate::tls::listener::ConnInfo;

/// The caller of `request`; also records the request's hash for the audit entry.
pub fn caller<T: prost::Message>(request: &Request<T>) -> Result<Caller, Status> {
    let caller = identify(request)?;
    caller.audit.set_request(request.get_ref());
    Ok(caller)
}

/// The caller of `request`, for a client-streamed call: its audit entry has no request
/// hash (the request is many messages).
pub fn identify<T>(request: &Request<T>) -> Result<Caller, Status> {
    let info = request.extensions().get::<ConnInfo>().ok_or_else(|| {
        // Only reachable if a listener without client authentication served the call.
        Status::from(ApiError::refused(
            Reason::NoClientCertificate,
            "no verified agency certificate on this connection",
        ))
    })?;
    let audit = match request.extensions().get::<Arc<AuditContext>>() {
        Some(ctx) => ctx.clone(),
        // Outside the audit layer (not the case in the gateway): a context of its own.
        None => Arc::new(AuditContext::new(
            "",
            Some(info.identity.clone()),
            request
                .metadata()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(trace_id_of)
                .unwrap_or_else(new_trace_id),
        )),
    };
    let trace_id = audit.trace_id().to_string();
    Ok(Caller {
        identity: info.identity.clone(),
        traceparent: crate::telemetry::traces::traceparent(&tracing::Span::current())
            .unwrap_or_else(|| crate::common::trace::traceparent(&trace_id)),
        trace_id,
        audit,
    })
}
