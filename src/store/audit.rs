//! Reading the audit log (AuditService, `jisr audit ...`). Appending is the writer's job.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::{Arg, SqlBuilder, StoreError};
use crate::audit::merkle::Hash;

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

const COLUMNS: &str =
    "leaf_index, time_ms, caller_agency, method, decision, targets, entry, leaf_hash";

pub async fn query_entries(pool: &AnyPool, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
    let mut q = SqlBuilder::default();
    let mut sql = format!(
        "SELECT {COLUMNS} FROM audit_entries WHERE log_id = {}",
        q.bind(Arg::Text(f.log_id.clone()))
    );
    if let Some(t) = f.since_ms {
        sql += &format!(" AND time_ms >= {}", q.bind(Arg::Int(t)));
    }
    if let Some(t) = f.until_ms {
        sql += &format!(" AND time_ms < {}", q.bind(Arg::Int(t)));
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
    if let Some(t) = &f.target_id {
        sql += &format!(
            " AND targets LIKE {}",
            q.bind(Arg::Text(format!("% {t} %")))
        );
    }
    if let Some(after) = f.after_index {
        sql += &format!(" AND leaf_index > {}", q.bind(Arg::Int(after as i64)));
    }
    sql += &format!(" ORDER BY leaf_index LIMIT {}", q.bind(Arg::Int(f.limit)));
    let rows = q.query(&sql).fetch_all(pool).await?;
    rows.iter().map(audit_row).collect()
}

/// The leaf hashes of entries `0..size`, as stored.
pub async fn leaf_hashes(pool: &AnyPool, log_id: &str, size: u64) -> Result<Vec<Hash>, StoreError> {
    let rows = sqlx::query("SELECT leaf_index, leaf_hash FROM audit_entries WHERE log_id = $1 AND leaf_index < $2 ORDER BY leaf_index")
        .bind(log_id)
        .bind(size as i64)
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (expected, row) in rows.iter().enumerate() {
        let index: i64 = row.try_get("leaf_index")?;
        if index as usize != expected {
            return Err(StoreError::Corrupt(format!(
                "audit entry {expected} is missing"
            )));
        }
        let hash: Vec<u8> = row.try_get("leaf_hash")?;
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

pub async fn checkpoints(pool: &AnyPool, log_id: &str) -> Result<Vec<CheckpointRow>, StoreError> {
    let rows = sqlx::query("SELECT tree_size, root_hash, time_ms, note FROM audit_checkpoints WHERE log_id = $1 ORDER BY tree_size")
        .bind(log_id)
        .fetch_all(pool)
        .await?;
    rows.iter().map(checkpoint_row).collect()
}

/// The checkpoint of exactly `size` entries, or the latest one.
pub async fn checkpoint(
    pool: &AnyPool,
    log_id: &str,
    size: Option<u64>,
) -> Result<Option<CheckpointRow>, StoreError> {
    let row = match size {
        Some(size) => {
            sqlx::query("SELECT tree_size, root_hash, time_ms, note FROM audit_checkpoints WHERE log_id = $1 AND tree_size = $2")
                .bind(log_id)
                .bind(size as i64)
                .fetch_optional(pool)
                .await?
        }
        None => {
            sqlx::query(
                "SELECT tree_size, root_hash, time_ms, note FROM audit_checkpoints WHERE log_id = $1 \
                 ORDER BY tree_size DESC LIMIT 1",
            )
            .bind(log_id)
            .fetch_optional(pool)
            .await?
        }
    };
    row.as_ref().map(checkpoint_row).transpose()
}

/// Every log in the database (one per gateway node that ever wrote).
pub async fn log_ids(pool: &AnyPool) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT DISTINCT log_id FROM audit_entries ORDER BY log_id")
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("log_id")?)).collect()
}

fn audit_row(r: &AnyRow) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        leaf_index: r.try_get::<i64, _>("leaf_index")? as u64,
        time_ms: r.try_get("time_ms")?,
        caller_agency: r.try_get("caller_agency")?,
        method: r.try_get("method")?,
        decision: r.try_get("decision")?,
        targets: r.try_get("targets")?,
        entry: r.try_get("entry")?,
        leaf_hash: r.try_get("leaf_hash")?,
    })
}

fn checkpoint_row(r: &AnyRow) -> Result<CheckpointRow, StoreError> {
    Ok(CheckpointRow {
        tree_size: r.try_get::<i64, _>("tree_size")? as u64,
        root_hash: r.try_get("root_hash")?,
        time_ms: r.try_get("time_ms")?,
        note: r.try_get("note")?,
    })
}
