//! Applications for joint services and their clearances' rows. Their events share the
//! referral event feed (`referrals`).

use super::sql::{q, Conn, Query, Row};

use super::{Arg, SqlBuilder, Store, StoreError, WriteTx};
pub use crate::domain::records::{ApplicationRow, ClearanceRow};

/// Which applications `list_applications` returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct ApplicationFilter {
    pub agency: String,
    /// Those the agency leads.
    pub led: bool,
    /// Those with a clearance of the agency's.
    pub clearing: bool,
    pub statuses: Vec<String>,
    pub service_code: Option<String>,
    /// Keyset pagination: only ids below this one.
    pub before_id: Option<String>,
    pub limit: i64,
}

const COLUMNS: &str =
    "id, lead_agency, request_id, service_code, status, due_at, created_at, updated_at, body";
const JOINED_COLUMNS: &str = "a.id, a.lead_agency, a.request_id, a.service_code, a.status, \
     a.due_at, a.created_at, a.updated_at, a.body";

impl WriteTx {
    pub async fn insert_application(
        &mut self,
        r: &ApplicationRow,
        clearances: &[ClearanceRow],
    ) -> Result<(), StoreError> {
        q(format!(
            "INSERT INTO applications ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&r.id)
        .bind(&r.lead_agency)
        .bind(&r.request_id)
        .bind(&r.service_code)
        .bind(&r.status)
        .bind(r.due_at)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.body.clone())
        .execute(self.conn())
        .await?;
        for c in clearances {
            q("INSERT INTO clearances (application_id, agency, status, due_at, awaiting_deadline) \
               VALUES ($1, $2, $3, $4, $5)")
            .bind(&c.application_id)
            .bind(&c.agency)
            .bind(&c.status)
            .bind(c.due_at)
            .bind(i64::from(c.awaiting_deadline))
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    /// The application as this transaction sees it (writers are serialized).
    pub async fn application(&mut self, id: &str) -> Result<Option<ApplicationRow>, StoreError> {
        fetch(self.conn(), id).await
    }

    /// The new body and status, and each clearance's row. A clearance keeps awaiting its
    /// deadline while open unless the sweep has taken it; one just requested (it was
    /// WAITING) starts awaiting.
    pub async fn update_application(
        &mut self,
        r: &ApplicationRow,
        clearances: &[ClearanceRow],
    ) -> Result<(), StoreError> {
        q("UPDATE applications SET status = $1, body = $2, updated_at = $3 WHERE id = $4")
            .bind(&r.status)
            .bind(r.body.clone())
            .bind(r.updated_at)
            .bind(&r.id)
            .execute(self.conn())
            .await?;
        for c in clearances {
            q(
                "UPDATE clearances SET awaiting_deadline = CASE WHEN $1 = 1 AND \
               (awaiting_deadline = 1 OR status = 'CLEARANCE_STATUS_WAITING') THEN 1 ELSE 0 END, \
               status = $2, due_at = $3 WHERE application_id = $4 AND agency = $5",
            )
            .bind(i64::from(c.awaiting_deadline))
            .bind(&c.status)
            .bind(c.due_at)
            .bind(&c.application_id)
            .bind(&c.agency)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    /// Clearances awaiting their deadline that passed before `now`, by due date; each is
    /// taken (it awaits no more).
    pub async fn take_clearances_due(
        &mut self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<ClearanceRow>, StoreError> {
        let rows = due_query(now, limit).fetch_all(self.conn()).await?;
        let rows = rows
            .iter()
            .map(clearance_row)
            .collect::<Result<Vec<_>, _>>()?;
        for c in &rows {
            q("UPDATE clearances SET awaiting_deadline = 0 WHERE application_id = $1 AND agency = $2")
                .bind(&c.application_id)
                .bind(&c.agency)
                .execute(self.conn())
                .await?;
        }
        Ok(rows)
    }
}

/// The deadline sweep: its WHERE is the partial index's predicate
/// (`clearances_awaiting_deadline`), which holds only clearances still awaiting.
pub(super) fn due_query(now: i64, limit: i64) -> Query {
    q(
        "SELECT application_id, agency, status, due_at, awaiting_deadline FROM clearances \
       WHERE awaiting_deadline = 1 AND due_at < $1 ORDER BY due_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
}

impl Store {
    pub async fn application(&self, id: &str) -> Result<Option<ApplicationRow>, StoreError> {
        fetch(self.point_reads(), id).await
    }

    pub async fn list_applications(
        &self,
        f: &ApplicationFilter,
    ) -> Result<Vec<ApplicationRow>, StoreError> {
        let rows = list_query(f).fetch_all(self.scans()).await?;
        rows.iter().map(row).collect()
    }
}

/// A page, newest first: those the agency leads (by `applications_by_lead`), those it
/// clears (by `clearances_by_agency`), or both, merged as `party_rows` merges senders and
/// recipients: each side an index walk that stops at the limit.
pub(super) fn list_query(f: &ApplicationFilter) -> Query {
    let mut b = SqlBuilder::default();
    let agency = b.bind(Arg::Text(f.agency.clone()));
    let mut filters = b.and_in("a.status", &f.statuses);
    if let Some(code) = &f.service_code {
        filters += &format!(" AND a.service_code = {}", b.bind(Arg::Text(code.clone())));
    }
    let before = f.before_id.as_ref().map(|id| b.bind(Arg::Text(id.clone())));
    let limit = b.bind(Arg::Int(f.limit));
    let led = format!(
        "SELECT {JOINED_COLUMNS} FROM applications a WHERE a.lead_agency = {agency}{filters}{} \
         ORDER BY a.id DESC LIMIT {limit}",
        before
            .as_ref()
            .map(|p| format!(" AND a.id < {p}"))
            .unwrap_or_default()
    );
    let clearing = |not_led: &str| {
        format!(
            "SELECT {JOINED_COLUMNS} FROM clearances c JOIN applications a ON a.id = c.application_id \
             WHERE c.agency = {agency}{not_led}{filters}{} ORDER BY c.application_id DESC LIMIT {limit}",
            before
                .as_ref()
                .map(|p| format!(" AND c.application_id < {p}"))
                .unwrap_or_default()
        )
    };
    let sql = match (f.led, f.clearing) {
        (true, false) => led,
        (false, true) => clearing(""),
        _ => format!(
            "SELECT * FROM ({led}) AS led UNION ALL SELECT * FROM ({}) AS clearing \
             ORDER BY id DESC LIMIT {limit}",
            clearing(&format!(" AND a.lead_agency <> {agency}"))
        ),
    };
    b.query(&sql)
}

async fn fetch(ex: impl Conn, id: &str) -> Result<Option<ApplicationRow>, StoreError> {
    let r = q(format!("SELECT {COLUMNS} FROM applications WHERE id = $1"))
        .bind(id)
        .fetch_optional(ex)
        .await?;
    r.as_ref().map(row).transpose()
}

fn row(r: &impl Row) -> Result<ApplicationRow, StoreError> {
    Ok(ApplicationRow {
        id: r.col("id")?,
        lead_agency: r.col("lead_agency")?,
        request_id: r.col("request_id")?,
        service_code: r.col("service_code")?,
        status: r.col("status")?,
        due_at: r.col("due_at")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
        body: r.col("body")?,
    })
}

fn clearance_row(r: &impl Row) -> Result<ClearanceRow, StoreError> {
    Ok(ClearanceRow {
        application_id: r.col("application_id")?,
        agency: r.col("agency")?,
        status: r.col("status")?,
        due_at: r.col("due_at")?,
        awaiting_deadline: r.col::<i64>("awaiting_deadline")? == 1,
    })
}
