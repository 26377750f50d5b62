//! `domain::storage` implemented by the store: the exchange's transactions run as jobs of
//! the group-commit writer, and each operation is the store's own query, its error mapped
//! to the API's.

use std::sync::Arc;

use super::{Store, WriteTx};
use crate::audit::context::AuditContext;
use crate::audit::entry::AuditEntry;
use crate::audit::Receipt;
use crate::common::{ApiError, BoxFuture};
use crate::domain::records::{
    ApplicationRow, ClearanceRow, EventRow, IdempotentRecord, InformationRequestRow, NewDelivery,
    NewEvent, OutboxRow, ReferralRow,
};
use crate::domain::storage::{ExchangeTx, Storage};

impl Storage for Store {
    type Tx = WriteTx;

    async fn transact<T, F>(
        &self,
        audit: Option<&Arc<AuditContext>>,
        job: F,
    ) -> Result<(T, Option<Receipt>), ApiError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut WriteTx) -> BoxFuture<'t, Result<T, ApiError>> + Send + 'static,
    {
        self.write(audit, job).await
    }

    async fn transact_once<T, F>(
        &self,
        audit: Option<&Arc<AuditContext>>,
        key: (String, String),
        job: F,
    ) -> Result<(T, Option<Receipt>), ApiError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut WriteTx) -> BoxFuture<'t, Result<T, ApiError>> + Send + 'static,
    {
        // The writer looks up its batch's keys together, in a few statements, before it
        // runs the jobs (`prefetch_keys`).
        self.writer.write(audit.cloned(), Some(key), job).await
    }
}

/// Each listed operation is the inherent `WriteTx` method of the same name.
macro_rules! forward {
    ($( fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )+) => {
        $(
            async fn $name(&mut self $(, $arg: $ty)*) -> Result<$ret, ApiError> {
                Ok(WriteTx::$name(self $(, $arg)*).await?)
            }
        )+
    };
}

impl ExchangeTx for WriteTx {
    forward! {
        fn idempotent_record(&mut self, agency: &str, request_id: &str) -> Option<IdempotentRecord>;
        fn record_idempotent(
            &mut self,
            agency: &str,
            request_id: &str,
            method: &str,
            request_sha256: &[u8],
            response: &[u8],
            now: i64
        ) -> ();
        fn referral(&mut self, id: &str) -> Option<ReferralRow>;
        fn insert_referral(&mut self, row: &ReferralRow) -> ();
        fn set_referral_status(&mut self, id: &str, status: &str, now: i64) -> ();
        fn referral_history(&mut self, id: &str) -> Vec<EventRow>;
        fn take_newly_overdue(&mut self, now: i64, limit: i64) -> Vec<ReferralRow>;
        fn information_request(&mut self, id: &str) -> Option<InformationRequestRow>;
        fn insert_information_request(&mut self, row: &InformationRequestRow) -> ();
        fn update_information_request(&mut self, row: &InformationRequestRow) -> ();
        fn take_newly_overdue_information_requests(&mut self, now: i64, limit: i64) -> Vec<InformationRequestRow>;
        fn open_information_requests_due_before(&mut self, before: i64, limit: i64) -> Vec<InformationRequestRow>;
        fn application(&mut self, id: &str) -> Option<ApplicationRow>;
        fn insert_application(&mut self, row: &ApplicationRow, clearances: &[ClearanceRow]) -> ();
        fn update_application(&mut self, row: &ApplicationRow, clearances: &[ClearanceRow]) -> ();
        fn take_clearances_due(&mut self, now: i64, limit: i64) -> Vec<ClearanceRow>;
        fn share_documents(
            &mut self,
            document_ids: &[&str],
            from: &str,
            to: &str,
            subject_id: &str,
            now: i64
        ) -> Vec<usize>;
        fn insert_event(&mut self, event: &NewEvent<'_>) -> i64;
        fn enqueue(&mut self, delivery: &NewDelivery<'_>, now: i64) -> String;
        fn mark_delivered(&mut self, delivery_id: &str, receipt: &str, now: i64) -> ();
        fn mark_dead(&mut self, delivery_id: &str, error: &str, now: i64) -> ();
        fn delivery(&mut self, delivery_id: &str) -> Option<OutboxRow>;
    }

    fn audit(&mut self) -> Option<&mut AuditEntry> {
        WriteTx::audit(self)
    }

    fn audit_receipt(&mut self) -> Result<Receipt, ApiError> {
        Ok(WriteTx::audit_receipt(self)?)
    }
}
