//! W3C trace context: the trace id of an incoming `traceparent`, new trace ids, and the
//! `traceparent` a delivery carries to continue the exchange's trace.

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

/// A W3C traceparent continuing the exchange's trace (a new span id each time).
pub fn traceparent(trace_id: &str) -> String {
    let span = ulid::Ulid::new().0 as u64;
    format!("00-{trace_id}-{span:016x}-01")
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
