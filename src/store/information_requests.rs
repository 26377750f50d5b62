//! Information request rows. Their events share the referral event feed (`referrals`).

use super::sql::{q, Conn, Query, Row};

use super::{Arg, SqlBuilder, Store, StoreError, WriteTx};
pub use crate::domain::records::InformationRequestRow;

/// The one status an information request can be answered, declined or expired from.
pub const OPEN: &str = "INFORMATION_REQUEST_STATUS_OPEN";

/// Which requests `list_information_requests` returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct InformationRequestFilter {
    pub agency: String,
    pub sent: bool,
    pub received: bool,
    pub statuses: Vec<String>,
    pub referral_id: Option<String>,
    /// Only those past due_at (unix ms) and still OPEN.
    pub overdue_at: Option<i64>,
    /// Keyset pagination: only ids below this one.
    pub before_id: Option<String>,
    pub limit: i64,
}

const COLUMNS: &str = "id, from_agency, to_agency, request_id, referral_id, status, due_at, \
     created_at, updated_at, body";

impl WriteTx {
    pub async fn insert_information_request(
        &mut self,
        r: &InformationRequestRow,
    ) -> Result<(), StoreError> {
        q(format!(
            "INSERT INTO information_requests ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&r.id)
        .bind(&r.from_agency)
        .bind(&r.to_agency)
        .bind(&r.request_id)
        .bind(&r.referral_id)
        .bind(&r.status)
        .bind(r.due_at)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.body.clone())
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// The request as this transaction sees it (writers are serialized).
    pub async fn information_request(
        &mut self,
        id: &str,
    ) -> Result<Option<InformationRequestRow>, StoreError> {
        fetch(self.conn(), id).await
    }

    /// Records a new status, and the request's new body (with its response).
    pub async fn update_information_request(
        &mut self,
        r: &InformationRequestRow,
    ) -> Result<(), StoreError> {
        q("UPDATE information_requests SET status = $1, body = $2, updated_at = $3 WHERE id = $4")
            .bind(&r.status)
            .bind(r.body.clone())
            .bind(r.updated_at)
            .bind(&r.id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// OPEN requests past due_at whose OVERDUE event was not emitted yet; each is marked
    /// as notified.
    pub async fn take_newly_overdue_information_requests(
        &mut self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<InformationRequestRow>, StoreError> {
        let rows = self
            .open_due_before(now, "AND overdue_notified = 0", limit)
            .await?;
        for r in &rows {
            q("UPDATE information_requests SET overdue_notified = 1 WHERE id = $1")
                .bind(&r.id)
                .execute(self.conn())
                .await?;
        }
        Ok(rows)
    }

    /// OPEN requests due before `cutoff` (to be expired).
    pub async fn open_information_requests_due_before(
        &mut self,
        cutoff: i64,
        limit: i64,
    ) -> Result<Vec<InformationRequestRow>, StoreError> {
        self.open_due_before(cutoff, "", limit).await
    }

    async fn open_due_before(
        &mut self,
        cutoff: i64,
        and: &str,
        limit: i64,
    ) -> Result<Vec<InformationRequestRow>, StoreError> {
        let rows = open_due_query(cutoff, and, limit)
            .fetch_all(self.conn())
            .await?;
        rows.iter().map(row).collect()
    }
}

/// OPEN requests due before `cutoff` (and `and`), by due date: the overdue and expiry
/// sweeps. The status is written as a literal, as the partial index's predicate is
/// (`information_requests_open_by_due`): with a parameter the planner could not use it.
pub(super) fn open_due_query(cutoff: i64, and: &str, limit: i64) -> Query {
    q(format!(
        "SELECT {COLUMNS} FROM information_requests WHERE status = '{OPEN}' AND due_at < $1 {and} \
         ORDER BY due_at LIMIT $2"
    ))
    .bind(cutoff)
    .bind(limit)
}

impl Store {
    pub async fn information_request(
        &self,
        id: &str,
    ) -> Result<Option<InformationRequestRow>, StoreError> {
        fetch(self.point_reads(), id).await
    }

    pub async fn list_information_requests(
        &self,
        f: &InformationRequestFilter,
    ) -> Result<Vec<InformationRequestRow>, StoreError> {
        let rows = list_query(f).fetch_all(self.scans()).await?;
        rows.iter().map(row).collect()
    }
}

pub(super) fn list_query(f: &InformationRequestFilter) -> Query {
    let mut q = SqlBuilder::default();
    let mut sql = q.and_in("status", &f.statuses);
    if let Some(referral) = &f.referral_id {
        sql += &format!(" AND referral_id = {}", q.bind(Arg::Text(referral.clone())));
    }
    if let Some(now) = f.overdue_at {
        sql += &format!(
            " AND due_at < {} AND status = {}",
            q.bind(Arg::Int(now)),
            q.bind(Arg::Text(OPEN.to_string()))
        );
    }
    q.newest_page(
        &format!("SELECT {COLUMNS} FROM information_requests"),
        &f.agency,
        (f.sent, f.received),
        sql,
        (f.before_id.as_ref(), f.limit),
    )
}

async fn fetch(ex: impl Conn, id: &str) -> Result<Option<InformationRequestRow>, StoreError> {
    let r = q(format!(
        "SELECT {COLUMNS} FROM information_requests WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(ex)
    .await?;
    r.as_ref().map(row).transpose()
}

fn row(r: &impl Row) -> Result<InformationRequestRow, StoreError> {
    Ok(InformationRequestRow {
        id: r.col("id")?,
        from_agency: r.col("from_agency")?,
        to_agency: r.col("to_agency")?,
        request_id: r.col("request_id")?,
        referral_id: r.col("referral_id")?,
        status: r.col("status")?,
        due_at: r.col("due_at")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
        body: r.col("body")?,
    })
}
