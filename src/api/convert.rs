//! Conversions every handler shares: stored values to messages (times, receipts), trace
//! context for deliveries, and replaying the first answer to an idempotency key.

use prost::Message;
use prost_types::Timestamp;

use super::error::ApiError;
use crate::pb::v1::AuditReceipt;
use crate::store::{IdempotentRecord, Receipt, StoreError};

pub fn receipt_proto(r: &Receipt) -> AuditReceipt {
    AuditReceipt {
        log_id: r.log_id.clone(),
        leaf_index: r.leaf_index,
        leaf_hash: r.leaf_hash.to_vec(),
    }
}

/// A W3C traceparent continuing the exchange's trace (a new span id each time).
pub fn traceparent(trace_id: &str) -> String {
    let span = ulid::Ulid::new().0 as u64;
    format!("00-{trace_id}-{span:016x}-01")
}

/// The first response to this idempotency key, if the request is the same one.
pub fn replay<M: Message + Default>(
    prev: IdempotentRecord,
    method: &str,
    hash: &[u8],
    request_id: &str,
) -> Result<M, ApiError> {
    if prev.method != method || prev.request_sha256 != hash {
        return Err(ApiError::RequestIdReused {
            request_id: request_id.to_string(),
        });
    }
    M::decode(prev.response.as_slice()).map_err(|e| {
        ApiError::Store(StoreError::Corrupt(format!(
            "stored response for {request_id}: {e}"
        )))
    })
}

/// Unix milliseconds as RFC 3339 (UTC), for messages.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validate::timestamp_ms;

    #[test]
    fn timestamps_round_trip_before_and_after_the_epoch() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1, -1001] {
            assert_eq!(timestamp_ms(&timestamp(ms)), Some(ms));
        }
    }
}
