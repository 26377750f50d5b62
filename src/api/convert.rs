//! Conversions every handler shares: stored values to messages (times, receipts), trace
//! context for deliveries, and replaying the first answer to an idempotency key.

use prost::Message;

use crate::common::ApiError;
use crate::pb::v1::AuditReceipt;
use crate::store::{IdempotentRecord, Receipt};

pub fn receipt_proto(r: &Receipt) -> AuditReceipt {
    AuditReceipt {
        log_id: r.log_id.clone(),
        leaf_index: r.leaf_index,
        leaf_hash: r.leaf_hash.to_vec(),
    }
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
    M::decode(prev.response.as_slice())
        .map_err(|e| ApiError::corrupt(format!("stored response for {request_id}: {e}")))
}

pub use crate::common::time::{rfc3339, timestamp};
pub use crate::common::trace::traceparent;
