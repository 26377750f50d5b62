//! Who is calling. The agency comes only from the verified client certificate (attached
//! to every request by the TLS listener), never from a payload field.

pub mod gate;
pub mod officer;
pub mod policy;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::audit::context::AuditContext;
use crate::tls::identity::AgencyIdentity;
use crate::tls::listener::ConnInfo;

/// The authenticated caller of one RPC.
#[derive(Clone)]
pub struct Caller {
    pub identity: Arc<AgencyIdentity>,
    /// W3C trace id: from the caller's `traceparent` header, or new.
    pub trace_id: String,
    /// This call's audit entry in the making (see `audit::layer`).
    pub audit: Arc<AuditContext>,
}

impl Caller {
    pub fn agency(&self) -> &str {
        &self.identity.agency_id
    }
}

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
        Status::unauthenticated("no verified agency certificate on this connection")
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
    Ok(Caller {
        identity: info.identity.clone(),
        trace_id: audit.trace_id().to_string(),
        audit,
    })
}

/// The trace id of a W3C `traceparent` (version 00): `00-<32 hex>-<16 hex>-<2 hex>`.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let parts: Vec<&str> = traceparent.split('-').collect();
    match parts.as_slice() {
        [version, trace, span, flags]
            if version.len() == 2
                && trace.len() == 32
                && span.len() == 16
                && flags.len() == 2
                && trace.chars().all(|c| c.is_ascii_hexdigit())
                && *trace != "00000000000000000000000000000000" =>
        {
            Some(trace.to_ascii_lowercase())
        }
        _ => None,
    }
}

pub fn new_trace_id() -> String {
    format!("{:032x}", ulid::Ulid::new().0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn traceparent_is_parsed_strictly() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            super::trace_id_of(tp).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(super::trace_id_of("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(super::new_trace_id().len(), 32);
    }
}
