//! What the exchange needs from storage, and nothing more: one transaction at a time
//! ([`Storage::transact`]) and, inside it, the reads and writes of [`ExchangeTx`]. `store`
//! implements both (the group-commit writer runs each job in a savepoint of its batch); the
//! domain knows no SQL and no driver.
//!
//! Every method answers with the API's one error type; a storage failure is
//! `ApiError::Storage`, which the caller hears as STORAGE.

use std::future::Future;
use std::sync::Arc;

use super::records::{
    ApplicationRow, ClearanceRow, EventRow, IdempotentRecord, InformationRequestRow, NewDelivery,
    NewEvent, OutboxRow, ReferralRow,
};
use crate::audit::context::AuditContext;
use crate::audit::entry::AuditEntry;
use crate::audit::Receipt;
use crate::common::{ApiError, BoxFuture};

/// Runs exchange jobs, each in one durable transaction.
pub trait Storage: Clone + Send + Sync + 'static {
    type Tx: ExchangeTx;

    /// Runs `job` in one transaction with the call's audit entry (if any) as its draft;
    /// answers once the transaction is durable, with the entry's receipt if the job sealed
    /// it. A job that fails is rolled back whole and its entry is not written.
    fn transact<T, F>(
        &self,
        audit: Option<&Arc<AuditContext>>,
        job: F,
    ) -> impl Future<Output = Result<(T, Option<Receipt>), ApiError>> + Send
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut Self::Tx) -> BoxFuture<'t, Result<T, ApiError>> + Send + 'static;

    /// [`Storage::transact`] for a job that begins by looking up the idempotency key
    /// `(agency, request_id)`: the storage may look up a whole batch's keys at once.
    fn transact_once<T, F>(
        &self,
        audit: Option<&Arc<AuditContext>>,
        key: (String, String),
        job: F,
    ) -> impl Future<Output = Result<(T, Option<Receipt>), ApiError>> + Send
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut Self::Tx) -> BoxFuture<'t, Result<T, ApiError>> + Send + 'static;
}

/// One transaction's view of the exchanges.
pub trait ExchangeTx: Send {
    // ---- idempotency ----
    /// The first answer recorded for `(agency, request_id)`, if any.
    fn idempotent_record(
        &mut self,
        agency: &str,
        request_id: &str,
    ) -> impl Future<Output = Result<Option<IdempotentRecord>, ApiError>> + Send;
    fn record_idempotent(
        &mut self,
        agency: &str,
        request_id: &str,
        method: &str,
        request_sha256: &[u8],
        response: &[u8],
        now: i64,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    // ---- referrals ----
    fn referral(
        &mut self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ReferralRow>, ApiError>> + Send;
    /// `row.id` is new (a ULID minted for it): the insert is held back and goes in with
    /// the batch's other rows, where a duplicate would fail the whole batch.
    fn insert_referral(
        &mut self,
        row: &ReferralRow,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn set_referral_status(
        &mut self,
        id: &str,
        status: &str,
        now: i64,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Every event of a referral, oldest first.
    fn referral_history(
        &mut self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<EventRow>, ApiError>> + Send;
    /// Referrals past due and not final that have no OVERDUE event yet (marks them).
    fn take_newly_overdue(
        &mut self,
        now: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ReferralRow>, ApiError>> + Send;

    // ---- information requests ----
    fn information_request(
        &mut self,
        id: &str,
    ) -> impl Future<Output = Result<Option<InformationRequestRow>, ApiError>> + Send;
    fn insert_information_request(
        &mut self,
        row: &InformationRequestRow,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn update_information_request(
        &mut self,
        row: &InformationRequestRow,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// OPEN requests past due that have no OVERDUE event yet (marks them).
    fn take_newly_overdue_information_requests(
        &mut self,
        now: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<InformationRequestRow>, ApiError>> + Send;
    /// OPEN requests due before `before`.
    fn open_information_requests_due_before(
        &mut self,
        before: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<InformationRequestRow>, ApiError>> + Send;

    // ---- applications ----
    fn application(
        &mut self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ApplicationRow>, ApiError>> + Send;
    /// Stores a new application and its clearances' rows.
    fn insert_application(
        &mut self,
        row: &ApplicationRow,
        clearances: &[ClearanceRow],
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Records the application's new body and status, and its clearances' rows.
    fn update_application(
        &mut self,
        row: &ApplicationRow,
        clearances: &[ClearanceRow],
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Clearances awaiting their deadline that passed before `now` (each is taken: not
    /// answered again).
    fn take_clearances_due(
        &mut self,
        now: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ClearanceRow>, ApiError>> + Send;

    // ---- documents ----
    /// Lets `to` read the documents `from` may read, for exchange `subject_id`; answers
    /// the indexes of those `from` may not read (nothing is shared then).
    fn share_documents(
        &mut self,
        document_ids: &[&str],
        from: &str,
        to: &str,
        subject_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<Vec<usize>, ApiError>> + Send;

    // ---- events and the outbox ----
    /// Appends an event to the feed; answers its sequence number.
    fn insert_event(
        &mut self,
        event: &NewEvent<'_>,
    ) -> impl Future<Output = Result<i64, ApiError>> + Send;
    /// Enqueues a delivery; answers its delivery id.
    fn enqueue(
        &mut self,
        delivery: &NewDelivery<'_>,
        now: i64,
    ) -> impl Future<Output = Result<String, ApiError>> + Send;
    fn mark_delivered(
        &mut self,
        delivery_id: &str,
        receipt: &str,
        now: i64,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn mark_dead(
        &mut self,
        delivery_id: &str,
        error: &str,
        now: i64,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn delivery(
        &mut self,
        delivery_id: &str,
    ) -> impl Future<Output = Result<Option<OutboxRow>, ApiError>> + Send;

    // ---- the call's audit entry ----
    /// The call's entry in the making, to add what the job learns (targets, recipient).
    fn audit(&mut self) -> Option<&mut AuditEntry>;
    /// Seals the call's entry into this transaction and answers its receipt.
    fn audit_receipt(&mut self) -> Result<Receipt, ApiError>;
}
