//! The stored log as the audit trail's readers see it (AuditService, `jisr audit verify`
//! and export): plain rows and the interface storage implements ([`LogReader`]), so
//! verification knows nothing of the database.

use crate::common::BoxFuture;

/// One stored entry: the canonical bytes, the stored leaf hash and the query columns.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub leaf_index: u64,
    pub time_ms: i64,
    pub caller_agency: String,
    pub method: String,
    pub decision: String,
    pub targets: String,
    pub entry: Vec<u8>,
    pub leaf_hash: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct CheckpointRow {
    pub tree_size: u64,
    pub root_hash: Vec<u8>,
    pub time_ms: i64,
    /// The C2SP signed note.
    pub note: String,
}

/// Which entries `query_entries` returns, oldest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub log_id: String,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub agency: Option<String>,
    pub method: Option<String>,
    pub decision: Option<String>,
    pub target_id: Option<String>,
    /// Only entries after this leaf index (pagination).
    pub after_index: Option<u64>,
    pub limit: i64,
}

/// Reads a stored log; storage implements it for the database.
pub trait LogReader: Sync {
    /// Every log in the database (one per gateway node that ever wrote).
    fn log_ids(&self) -> BoxFuture<'_, Result<Vec<String>, String>>;
    /// How many entries `log_id` holds.
    fn entry_count<'a>(&'a self, log_id: &'a str) -> BoxFuture<'a, Result<u64, String>>;
    /// The entries `filter` selects, oldest first.
    fn query_entries<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRow>, String>>;
    /// Rows of the target index of `log_id` (target id, leaf index), in that order, after
    /// `after` (the last row of the previous page; `("", -1)`-like `None` for the first).
    fn target_rows<'a>(
        &'a self,
        log_id: &'a str,
        after: Option<(String, u64)>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, String>>;
    /// Every checkpoint of `log_id`, smallest first.
    fn checkpoints<'a>(
        &'a self,
        log_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckpointRow>, String>>;
}
