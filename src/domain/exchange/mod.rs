//! The exchange service: every state change of every exchange goes through here.
//!
//! For each move, in one transaction of [`Storage`]:
//!
//! 1. idempotency on `(agency, request_id)`: a retry of the same request gets the first
//!    answer, a different request under the same id is REQUEST_ID_REUSED ([`Once`]);
//! 2. the lifecycle check, for agencies (`referral::check_transition` with the caller's
//!    side) and for the gateway's own moves (DELIVERED, FAILED, OVERDUE, EXPIRED);
//! 3. the new state, the event on the watch feed and the outbox rows that tell the other
//!    party through its adapter ([`record`]);
//! 4. the call's audit entry sealed into the same commit, its receipt in the answer.
//!
//! The rules themselves are pure functions (`domain::referral`,
//! `domain::information_request`, `domain::application`, the planning functions here), tested without a database.
//! Handlers (`api`) validate input and call this; the dispatcher and the inbox call
//! [`gateway::settle_delivery`]; the time-frame sweeps call [`Exchange::sweep`]. Nothing
//! else writes exchange state.

pub mod application;
pub mod gateway;
pub mod information_request;
pub mod referral;

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sha2::{Digest, Sha256};

use super::application::JointServiceSpec;
use super::policy::Policy;
use super::records::{IdempotentRecord, NewDelivery, NewEvent};
use super::storage::{ExchangeTx, Storage};
use crate::audit::context::AuditContext;
use crate::common::{ApiError, BoxFuture};
use crate::directory::Directory;
use crate::tls::identity::AgencyIdentity;

/// The authenticated caller of one RPC: the agency only from its verified certificate,
/// never from a payload field.
#[derive(Clone)]
pub struct Caller {
    pub identity: Arc<AgencyIdentity>,
    /// W3C trace id: from the caller's `traceparent` header, or new.
    pub trace_id: String,
    /// The W3C `traceparent` the deliveries this call makes carry: the call's server span
    /// when traces are exported (so each delivery attempt is its child), else a new span
    /// id in `trace_id`.
    pub traceparent: String,
    /// This call's audit entry in the making (see `layers::audit`).
    pub audit: Arc<AuditContext>,
}

impl Caller {
    pub fn agency(&self) -> &str {
        &self.identity.agency_id
    }
}

/// The exchange rules' settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// An information request sent without due_at is due after this many working days.
    pub information_request_days: u32,
    /// An OPEN information request expires this long after its due date.
    pub information_request_grace: Duration,
    /// The joint services applications can be submitted for (the directory config's
    /// `[[joint_services]]`).
    pub joint_services: Arc<[JointServiceSpec]>,
}

/// The exchange service over storage `S`.
#[derive(Clone)]
pub struct Exchange<S> {
    storage: S,
    /// Where each agency may send referrals and information requests.
    policy: Policy,
    /// Services, their time frames, the working-day calendar.
    directory: Arc<Directory>,
    settings: Settings,
}

impl<S: Storage> Exchange<S> {
    pub fn new(
        storage: S,
        policy: Policy,
        directory: Arc<Directory>,
        settings: Settings,
    ) -> Exchange<S> {
        Exchange {
            storage,
            policy,
            directory,
            settings,
        }
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Runs an agency's write once per request id: in one transaction with the call's
    /// audit entry, a retry of the same request answers the first answer (nothing is
    /// written again), anything else runs `job` and keeps its answer for the retries.
    /// Answers whether `job` ran (a replay seals no new entry).
    async fn write_once<M, F>(
        &self,
        caller: &Caller,
        once: Once,
        now: i64,
        job: F,
    ) -> Result<(M, bool), ApiError>
    where
        M: Message + Default + Send + 'static,
        F: for<'t> FnOnce(&'t mut S::Tx) -> BoxFuture<'t, Result<M, ApiError>> + Send + 'static,
    {
        let (answer, receipt) = self
            .storage
            .transact_once(Some(&caller.audit), once.key(), move |tx| {
                Box::pin(async move {
                    if let Some(first) = once.replayed(tx).await? {
                        return Ok(first);
                    }
                    let answer = job(&mut *tx).await?;
                    once.remember(tx, &answer, now).await?;
                    Ok(answer)
                })
            })
            .await?;
        Ok((answer, receipt.is_some()))
    }
}

/// What a reference to a document the caller may not read is told (whether the document
/// exists is not disclosed).
pub const UNREADABLE_DOCUMENT: &str =
    "is not a document your agency uploaded or received in an exchange; \
     upload it with DocumentService.UploadDocument first";

/// An idempotent write's key and the request it stands for.
pub(crate) struct Once {
    agency: String,
    request_id: String,
    method: &'static str,
    /// SHA-256 of the request's input fields (output-only fields dropped first, so a
    /// spoofed from_agency neither counts nor sticks).
    request_sha256: Vec<u8>,
}

impl Once {
    pub(crate) fn new<M: Message>(
        agency: &str,
        request_id: &str,
        method: &'static str,
        input: &M,
    ) -> Once {
        Once {
            agency: agency.to_string(),
            request_id: request_id.to_string(),
            method,
            request_sha256: Sha256::digest(input.encode_to_vec()).to_vec(),
        }
    }

    /// `(agency, request_id)`.
    pub(crate) fn key(&self) -> (String, String) {
        (self.agency.clone(), self.request_id.clone())
    }

    /// The first answer, if this request was made before.
    pub(crate) async fn replayed<T: ExchangeTx, M: Message + Default>(
        &self,
        tx: &mut T,
    ) -> Result<Option<M>, ApiError> {
        match tx.idempotent_record(&self.agency, &self.request_id).await? {
            Some(prev) => {
                replay(&prev, self.method, &self.request_sha256, &self.request_id).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Keeps `answer` as the answer to every retry of this request.
    pub(crate) async fn remember<T: ExchangeTx, M: Message>(
        &self,
        tx: &mut T,
        answer: &M,
        now: i64,
    ) -> Result<(), ApiError> {
        tx.record_idempotent(
            &self.agency,
            &self.request_id,
            self.method,
            &self.request_sha256,
            &answer.encode_to_vec(),
            now,
        )
        .await
    }
}

/// The first answer to an idempotency key, if the request is the same one (same method,
/// same input); REQUEST_ID_REUSED otherwise.
pub fn replay<M: Message + Default>(
    prev: &IdempotentRecord,
    method: &str,
    request_sha256: &[u8],
    request_id: &str,
) -> Result<M, ApiError> {
    if prev.method != method || prev.request_sha256 != request_sha256 {
        return Err(ApiError::RequestIdReused {
            request_id: request_id.to_string(),
        });
    }
    M::decode(prev.response.as_slice())
        .map_err(|e| ApiError::corrupt(format!("stored response for {request_id}: {e}")))
}

/// Appends `event` to the feed and enqueues what follows from it, in the same transaction.
pub(crate) async fn record<T: ExchangeTx>(
    tx: &mut T,
    event: &NewEvent<'_>,
    deliveries: &[NewDelivery<'_>],
    now: i64,
) -> Result<(), ApiError> {
    tx.insert_event(event).await?;
    for delivery in deliveries {
        tx.enqueue(delivery, now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::v1::AuditReceipt;

    fn record_of(method: &str, hash: &[u8], response: &AuditReceipt) -> IdempotentRecord {
        IdempotentRecord {
            method: method.into(),
            request_sha256: hash.to_vec(),
            response: response.encode_to_vec(),
        }
    }

    #[test]
    fn a_retry_of_the_same_request_replays_the_first_answer() {
        let first = AuditReceipt {
            log_id: "jisr-1".into(),
            leaf_index: 7,
            leaf_hash: vec![1; 32],
        };
        let prev = record_of("M", b"h", &first);
        assert_eq!(
            replay::<AuditReceipt>(&prev, "M", b"h", "r-1").unwrap(),
            first
        );
    }

    #[test]
    fn another_body_or_method_under_the_same_id_is_refused() {
        let prev = record_of("M", b"h", &AuditReceipt::default());
        for (method, hash) in [("M", b"x".as_slice()), ("N", b"h".as_slice())] {
            let e = replay::<AuditReceipt>(&prev, method, hash, "r-1").unwrap_err();
            assert!(
                matches!(e, ApiError::RequestIdReused { ref request_id } if request_id == "r-1")
            );
        }
    }

    #[test]
    fn a_stored_answer_that_does_not_decode_is_a_storage_error() {
        let prev = IdempotentRecord {
            method: "M".into(),
            request_sha256: b"h".to_vec(),
            response: vec![0xff, 0xff, 0xff],
        };
        let e = replay::<AuditReceipt>(&prev, "M", b"h", "r-1").unwrap_err();
        assert!(
            matches!(
                e,
                ApiError::Storage {
                    transient: false,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
