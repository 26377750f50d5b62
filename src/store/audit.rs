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

/// Subtrees of `2^NODE_LEVEL` leaves or more have their roots stored (`audit_nodes`),
/// written by the writer with the entries that complete them.
pub const NODE_LEVEL: u32 = 8;

/// The leaf hashes of entries `lo..hi`, as stored.
pub async fn leaf_range(
    db: &Reads,
    log_id: &str,
    lo: u64,
    hi: u64,
) -> Result<Vec<Hash>, StoreError> {
    let rows = q(
        "SELECT leaf_index, leaf_hash FROM audit_entries WHERE log_id = $1 AND leaf_index >= $2 \
         AND leaf_index < $3 ORDER BY leaf_index",
    )
    .bind(log_id)
    .bind(lo as i64)
    .bind(hi as i64)
    .fetch_all(db.scan())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (expected, row) in (lo..).zip(rows.iter()) {
        let index: i64 = row.col("leaf_index")?;
        if index as u64 != expected {
            return Err(StoreError::Corrupt(format!(
                "audit entry {expected} is missing"
            )));
        }
        out.push(hash32(row.col("leaf_hash")?, index)?);
    }
    if (out.len() as u64) < hi - lo {
        return Err(StoreError::Corrupt(format!(
            "audit log {log_id} has no entry {}",
            lo + out.len() as u64
        )));
    }
    Ok(out)
}

fn hash32(bytes: Vec<u8>, at: impl std::fmt::Display) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("audit hash at {at} is not 32 bytes")))
}

/// The hash of leaf `index` and its inclusion proof in the tree of the first `size`
/// entries, from O(log n) rows ([`range_roots`]).
pub async fn inclusion_proof(
    db: &Reads,
    log_id: &str,
    index: u64,
    size: u64,
) -> Result<(Hash, Vec<Hash>), StoreError> {
    let ranges = crate::audit::merkle::inclusion_ranges(index, size)
        .map_err(|e| StoreError::Corrupt(format!("inclusion proof: {e}")))?;
    let leaf = leaf_range(db, log_id, index, index + 1).await?[0];
    Ok((leaf, range_roots(db, log_id, &ranges).await?))
}

/// The consistency proof from the tree of the first `old_size` entries to that of the
/// first `new_size`, from O(log n) rows ([`range_roots`]).
pub async fn consistency_proof(
    db: &Reads,
    log_id: &str,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, StoreError> {
    let ranges = crate::audit::merkle::consistency_ranges(old_size, new_size)
        .map_err(|e| StoreError::Corrupt(format!("consistency proof: {e}")))?;
    range_roots(db, log_id, &ranges).await
}

/// The tree hashes of the leaf ranges of a proof (`merkle::inclusion_ranges`,
/// `consistency_ranges`), in order. Each range is folded from its perfect subtrees: those
/// of 256 leaves or more are stored rows of `audit_nodes`, read in one query; the smaller
/// ones lie in at most a few 256-leaf stretches at the edges of the proof, read as leaf
/// ranges. So a proof reads O(log n) rows whatever the log's size. A subtree a log written
/// before `audit_nodes` lacks is computed from its leaves instead.
pub async fn range_roots(
    db: &Reads,
    log_id: &str,
    ranges: &[(u64, u64)],
) -> Result<Vec<Hash>, StoreError> {
    use std::collections::{BTreeMap, HashMap};
    let covers: Vec<Vec<(u32, u64)>> = ranges
        .iter()
        .map(|(lo, hi)| crate::audit::merkle::perfect_cover(*lo, *hi))
        .collect();
    let mut known: HashMap<(u32, u64), Hash> = HashMap::new();
    let large: Vec<(u32, u64)> = covers
        .iter()
        .flatten()
        .filter(|(level, _)| *level >= NODE_LEVEL)
        .copied()
        .collect();
    if !large.is_empty() {
        let mut params = vec![super::sql::Param::from(log_id)];
        let mut terms = Vec::new();
        for (level, index) in &large {
            params.push(super::sql::Param::Int(i64::from(*level)));
            params.push(super::sql::Param::Int(*index as i64));
            terms.push(format!(
                "(level = ${} AND idx = ${})",
                params.len() - 1,
                params.len()
            ));
        }
        let sql = format!(
            "SELECT level, idx, hash FROM audit_nodes WHERE log_id = $1 AND ({})",
            terms.join(" OR ")
        );
        for row in Query::with_params(sql, params)
            .fetch_all(db.point())
            .await?
        {
            let (level, index): (i64, i64) = (row.col("level")?, row.col("idx")?);
            known.insert(
                (level as u32, index as u64),
                hash32(row.col("hash")?, index)?,
            );
        }
    }
    // The rest from their leaves, one read per contiguous stretch.
    let mut stretches: BTreeMap<u64, u64> = BTreeMap::new();
    for (level, index) in covers.iter().flatten() {
        if !known.contains_key(&(*level, *index)) {
            let lo = index << level;
            let hi = stretches.entry(lo).or_insert(lo);
            *hi = (*hi).max(lo + (1 << level));
        }
    }
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in stretches {
        match merged.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let mut leaves: Vec<(u64, Vec<Hash>)> = Vec::new();
    for (lo, hi) in merged {
        leaves.push((lo, leaf_range(db, log_id, lo, hi).await?));
    }
    let mut out = Vec::with_capacity(covers.len());
    for cover in &covers {
        let mut hashes = Vec::with_capacity(cover.len());
        for (level, index) in cover {
            let hash = match known.get(&(*level, *index)) {
                Some(h) => *h,
                None => {
                    let lo = index << level;
                    let (start, run) = leaves
                        .iter()
                        .find(|(start, run)| *start <= lo && lo < start + run.len() as u64)
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("audit leaves at {lo} were not read"))
                        })?;
                    let at = (lo - start) as usize;
                    crate::audit::merkle::root(&run[at..at + (1usize << level)])
                }
            };
            hashes.push(hash);
        }
        out.push(crate::audit::merkle::fold_cover(&hashes));
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
