//! Reading the audit log (AuditService, `jisr audit ...`). Appending is the writer's job.

use super::sql::{q, Query, Row};

use super::{Arg, Reads, SqlBuilder, StoreError};
use crate::audit::log::LogReader;
pub use crate::audit::log::{AuditFilter, AuditRow, CheckpointRow};
use crate::audit::merkle::Hash;
use crate::common::BoxFuture;

const COLUMNS: &str =
    "leaf_index, time_ms, caller_agency, method, decision, targets, entry, leaf_hash";

/// The entries `f` selects, oldest first. Every filter walks an index: a time bound
/// becomes a leaf position (entry times never decrease along the log), a target id is
/// looked up in `audit_targets`, so a first page costs the same at any log size.
pub async fn query_entries(db: &Reads, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
    // Leaf positions: from (inclusive), to (exclusive).
    let mut from = f.after_index.map_or(0, |after| after + 1);
    let mut to = None;
    if let Some(t) = f.since_ms {
        match first_at_or_after(db, &f.log_id, t).await? {
            Some(leaf) => from = from.max(leaf),
            None => return Ok(Vec::new()),
        }
    }
    if let Some(t) = f.until_ms {
        to = first_at_or_after(db, &f.log_id, t).await?;
    }
    let rows = entries_query(f, from, to).fetch_all(db.scan()).await?;
    rows.iter().map(audit_row).collect()
}

/// The entries `f` selects from leaf `from` (inclusive) to `to` (exclusive).
pub(super) fn entries_query(f: &AuditFilter, from: u64, to: Option<u64>) -> Query {
    let mut q = SqlBuilder::default();
    let log = q.bind(Arg::Text(f.log_id.clone()));
    let mut bounds = format!(" AND leaf_index >= {}", q.bind(Arg::Int(from as i64)));
    if let Some(to) = to {
        bounds += &format!(" AND leaf_index < {}", q.bind(Arg::Int(to as i64)));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM audit_entries WHERE log_id = {log}");
    match &f.target_id {
        // The bounds inside, so the entries are looked up by the target's leaves only.
        Some(t) => {
            sql += &format!(
                " AND leaf_index IN (SELECT leaf_index FROM audit_targets \
                 WHERE log_id = {log} AND target_id = {}{bounds})",
                q.bind(Arg::Text(t.clone()))
            )
        }
        None => sql += &bounds,
    }
    if let Some(a) = &f.agency {
        sql += &format!(" AND caller_agency = {}", q.bind(Arg::Text(a.clone())));
    }
    if let Some(m) = &f.method {
        sql += &format!(" AND method = {}", q.bind(Arg::Text(m.clone())));
    }
    if let Some(d) = &f.decision {
        sql += &format!(" AND decision = {}", q.bind(Arg::Text(d.clone())));
    }
    sql += &format!(" ORDER BY leaf_index LIMIT {}", q.bind(Arg::Int(f.limit)));
    q.query(&sql)
}

/// The first entry whose time is `t` or later: a binary search over leaf positions (entry
/// times never decrease along the log), a few point reads by primary key, so no index on
/// time costs every append a page.
async fn first_at_or_after(db: &Reads, log_id: &str, t: i64) -> Result<Option<u64>, StoreError> {
    let read = db.point();
    let size: i64 =
        q("SELECT COALESCE(MAX(leaf_index) + 1, 0) AS n FROM audit_entries WHERE log_id = $1")
            .bind(log_id)
            .fetch_one(read)
            .await?
            .col("n")?;
    let (mut lo, mut hi) = (0i64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let time: i64 =
            q("SELECT time_ms FROM audit_entries WHERE log_id = $1 AND leaf_index = $2")
                .bind(log_id)
                .bind(mid)
                .fetch_one(read)
                .await?
                .col("time_ms")?;
        if time >= t {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok((lo < size).then_some(lo as u64))
}

/// The leaf hashes of entries `0..size`, as stored.
pub async fn leaf_hashes(db: &Reads, log_id: &str, size: u64) -> Result<Vec<Hash>, StoreError> {
    let rows = q("SELECT leaf_index, leaf_hash FROM audit_entries WHERE log_id = $1 AND leaf_index < $2 ORDER BY leaf_index")
        .bind(log_id)
        .bind(size as i64)
        .fetch_all(db.scan())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (expected, row) in rows.iter().enumerate() {
        let index: i64 = row.col("leaf_index")?;
        if index as usize != expected {
            return Err(StoreError::Corrupt(format!(
                "audit entry {expected} is missing"
            )));
        }
        let hash: Vec<u8> = row.col("leaf_hash")?;
        out.push(hash.try_into().map_err(|_| {
            StoreError::Corrupt(format!("audit entry {index}: leaf hash is not 32 bytes"))
        })?);
    }
    if (out.len() as u64) < size {
        return Err(StoreError::Corrupt(format!(
            "audit log has {} entries, fewer than {size}",
            out.len()
        )));
    }
    Ok(out)
}

pub async fn checkpoints(db: &Reads, log_id: &str) -> Result<Vec<CheckpointRow>, StoreError> {
    let rows = q("SELECT tree_size, root_hash, time_ms, note FROM audit_checkpoints WHERE log_id = $1 ORDER BY tree_size")
        .bind(log_id)
        .fetch_all(db.scan())
        .await?;
    rows.iter().map(checkpoint_row).collect()
}

/// The checkpoint of exactly `size` entries, or the latest one.
pub async fn checkpoint(
    db: &Reads,
    log_id: &str,
    size: Option<u64>,
) -> Result<Option<CheckpointRow>, StoreError> {
    let row = match size {
        Some(size) => {
            q("SELECT tree_size, root_hash, time_ms, note FROM audit_checkpoints WHERE log_id = $1 AND tree_size = $2")
                .bind(log_id)
                .bind(size as i64)
                .fetch_optional(db.scan())
                .await?
        }
        None => {
            q(
                "SELECT tree_size, root_hash, time_ms, note FROM audit_checkpoints WHERE log_id = $1 \
                 ORDER BY tree_size DESC LIMIT 1",
            )
            .bind(log_id)
            .fetch_optional(db.scan())
            .await?
        }
    };
    row.as_ref().map(checkpoint_row).transpose()
}

/// A page of the target index (target id, leaf index), in key order, after `after`.
pub async fn target_rows(
    db: &Reads,
    log_id: &str,
    after: Option<(String, u64)>,
    limit: i64,
) -> Result<Vec<(String, u64)>, StoreError> {
    let (target, leaf) = after.map_or((String::new(), -1), |(t, l)| (t, l as i64));
    let rows = q(
        "SELECT target_id, leaf_index FROM audit_targets WHERE log_id = $1 \
                  AND (target_id, leaf_index) > ($2, $3) ORDER BY target_id, leaf_index LIMIT $4",
    )
    .bind(log_id)
    .bind(target)
    .bind(leaf)
    .bind(limit)
    .fetch_all(db.scan())
    .await?;
    rows.iter()
        .map(|r| Ok((r.col("target_id")?, r.col::<i64>("leaf_index")? as u64)))
        .collect()
}

/// Every log in the database (one per gateway node that ever wrote).
pub async fn log_ids(db: &Reads) -> Result<Vec<String>, StoreError> {
    let rows = q("SELECT DISTINCT log_id FROM audit_entries ORDER BY log_id")
        .fetch_all(db.scan())
        .await?;
    rows.iter().map(|r| r.col("log_id")).collect()
}

/// How many entries the log holds.
pub async fn entry_count(db: &Reads, log_id: &str) -> Result<u64, StoreError> {
    let total: i64 = q("SELECT COUNT(*) AS n FROM audit_entries WHERE log_id = $1")
        .bind(log_id)
        .fetch_one(db.scan())
        .await?
        .col("n")?;
    Ok(total as u64)
}

/// The stored log, as `jisr audit verify` reads it.
impl LogReader for Reads {
    fn log_ids(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(async move { log_ids(self).await.map_err(|e| e.to_string()) })
    }
    fn entry_count<'a>(&'a self, log_id: &'a str) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move { entry_count(self, log_id).await.map_err(|e| e.to_string()) })
    }
    fn query_entries<'a>(
        &'a self,
        filter: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRow>, String>> {
        Box::pin(async move { query_entries(self, filter).await.map_err(|e| e.to_string()) })
    }
    fn target_rows<'a>(
        &'a self,
        log_id: &'a str,
        after: Option<(String, u64)>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, String>> {
        Box::pin(async move {
            target_rows(self, log_id, after, limit)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn checkpoints<'a>(
        &'a self,
        log_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CheckpointRow>, String>> {
        Box::pin(async move { checkpoints(self, log_id).await.map_err(|e| e.to_string()) })
    }
}

fn audit_row(r: &impl Row) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        leaf_index: r.col::<i64>("leaf_index")? as u64,
        time_ms: r.col("time_ms")?,
        caller_agency: r.col("caller_agency")?,
        method: r.col("method")?,
        decision: r.col("decision")?,
        targets: r.col("targets")?,
        entry: r.col("entry")?,
        leaf_hash: r.col("leaf_hash")?,
    })
}

fn checkpoint_row(r: &impl Row) -> Result<CheckpointRow, StoreError> {
    Ok(CheckpointRow {
        tree_size: r.col::<i64>("tree_size")? as u64,
        root_hash: r.col("root_hash")?,
        time_ms: r.col("time_ms")?,
        note: r.col("note")?,
    })
}
