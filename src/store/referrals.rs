//! Referral rows and their events.

use super::sql::{q, Conn, Param, Query, Row, Table};

use super::{Arg, SqlBuilder, Store, StoreError, WriteTx};
pub use crate::domain::records::{EventRow, NewEvent, ReferralRow};

/// Statuses no referral leaves; overdue never applies to them.
const FINAL_STATUSES: [&str; 4] = [
    "REFERRAL_STATUS_COMPLETED",
    "REFERRAL_STATUS_REJECTED",
    "REFERRAL_STATUS_WITHDRAWN",
    "REFERRAL_STATUS_FAILED",
];

/// Which referrals `list_referrals` returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub agency: String,
    pub sent: bool,
    pub received: bool,
    pub statuses: Vec<String>,
    pub category: Option<String>,
    pub priority: Option<String>,
    /// Only those past due_at (unix ms) and not final.
    pub overdue_at: Option<i64>,
    /// Keyset pagination: only ids below this one.
    pub before_id: Option<String>,
    pub limit: i64,
}

const REFERRAL_COLUMNS: &str = "id, from_agency, to_agency, request_id, service_code, category, \
     priority, status, due_at, created_at, updated_at, body";
const EVENT_COLUMNS: &str = "seq, COALESCE(referral_id, '') AS referral_id, \
     COALESCE(information_request_id, '') AS information_request_id, \
     COALESCE(application_id, '') AS application_id, clearance_agency, clearance_status, \
     from_agency, to_agency, event_type, status, actor_agency, reason_code, note, outcome, \
     occurred_at";

/// A referral's row.
static REFERRALS: Table = Table::new("referrals", REFERRAL_COLUMNS, None, 0);

/// An event: numbered in commit order, after the exchange it belongs to.
static EVENTS: Table = Table::new(
    "referral_events",
    "referral_id, information_request_id, application_id, clearance_agency, \
              clearance_status, from_agency, to_agency, event_type, status, actor_agency, \
              reason_code, note, outcome, occurred_at",
    Some("seq"),
    1,
);

/// Referrals past due at `now`, not final and not yet told overdue, by due date: the
/// overdue sweep. Its WHERE is the predicate of the partial index it walks
/// (`referrals_awaiting_overdue`, migration 0009), which holds only such referrals.
pub(super) fn overdue_query(now: i64, limit: i64) -> Query {
    let finals: Vec<String> = FINAL_STATUSES.iter().map(|s| format!("'{s}'")).collect();
    q(format!(
        "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE overdue_notified = 0 AND due_at IS NOT NULL \
         AND status NOT IN ({}) AND due_at < $1 ORDER BY due_at LIMIT $2",
        finals.join(", ")
    ))
    .bind(now)
    .bind(limit)
}

impl WriteTx {
    pub async fn insert_referral(&mut self, r: &ReferralRow) -> Result<(), StoreError> {
        let row = vec![
            Param::from(&r.id),
            Param::from(&r.from_agency),
            Param::from(&r.to_agency),
            Param::from(&r.request_id),
            Param::from(&r.service_code),
            Param::from(&r.category),
            Param::from(&r.priority),
            Param::from(&r.status),
            Param::from(r.due_at),
            Param::from(r.created_at),
            Param::from(r.updated_at),
            Param::from(r.body.clone()),
        ];
        // Deferred with the batch's other rows: its id is new (a ULID minted for it), so
        // its insert cannot fail.
        self.conn().insert(&REFERRALS, row).await?;
        Ok(())
    }

    /// The referral as this transaction sees it (writers are serialized, so it cannot
    /// change before commit).
    pub async fn referral(&mut self, id: &str) -> Result<Option<ReferralRow>, StoreError> {
        fetch_referral(self.conn(), id).await
    }

    pub async fn set_referral_status(
        &mut self,
        id: &str,
        status: &str,
        updated_at: i64,
    ) -> Result<(), StoreError> {
        q("UPDATE referrals SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status)
            .bind(updated_at)
            .bind(id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Appends an event and returns its sequence number.
    pub async fn insert_event(&mut self, e: &NewEvent<'_>) -> Result<i64, StoreError> {
        let row = vec![
            Param::from((!e.referral_id.is_empty()).then_some(e.referral_id)),
            Param::from((!e.information_request_id.is_empty()).then_some(e.information_request_id)),
            Param::from((!e.application_id.is_empty()).then_some(e.application_id)),
            Param::from(e.clearance_agency),
            Param::from(e.clearance_status),
            Param::from(e.from_agency),
            Param::from(e.to_agency),
            Param::from(e.event_type),
            Param::from(e.status),
            Param::from(e.actor_agency),
            Param::from(e.reason_code),
            Param::from(e.note),
            Param::from(e.outcome),
            Param::from(e.occurred_at),
        ];
        let seq = self
            .conn()
            .insert(&EVENTS, row)
            .await?
            .ok_or_else(|| StoreError::Corrupt("an event without a sequence number".into()))?;
        self.last_event = Some(seq);
        Ok(seq)
    }

    /// Referrals past due_at, not final, whose OVERDUE event was not emitted yet; each is
    /// marked as notified.
    pub async fn take_newly_overdue(
        &mut self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<ReferralRow>, StoreError> {
        let rows = overdue_query(now, limit).fetch_all(self.conn()).await?;
        let rows = rows
            .iter()
            .map(referral_row)
            .collect::<Result<Vec<_>, _>>()?;
        for r in &rows {
            q("UPDATE referrals SET overdue_notified = 1 WHERE id = $1")
                .bind(&r.id)
                .execute(self.conn())
                .await?;
        }
        Ok(rows)
    }

    pub async fn referral_history(
        &mut self,
        referral_id: &str,
    ) -> Result<Vec<EventRow>, StoreError> {
        fetch_history(self.conn(), &[referral_id.to_string()]).await
    }
}

impl Store {
    pub async fn referral(&self, id: &str) -> Result<Option<ReferralRow>, StoreError> {
        fetch_referral(self.point_reads(), id).await
    }

    /// The events of these referrals, in order.
    pub async fn referral_history(&self, ids: &[String]) -> Result<Vec<EventRow>, StoreError> {
        fetch_history(self.point_reads(), ids).await
    }

    pub async fn list_referrals(&self, f: &ListFilter) -> Result<Vec<ReferralRow>, StoreError> {
        let rows = list_query(f).fetch_all(self.scans()).await?;
        rows.iter().map(referral_row).collect()
    }

    /// Events of referrals and information requests `agency` is party to, after
    /// `after_seq`, oldest first.
    pub async fn events_after(
        &self,
        agency: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let rows = events_after_query(agency, after_seq, limit)
            .fetch_all(self.scans())
            .await?;
        rows.iter().map(event_row).collect()
    }

    pub async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        super::latest_event_seq(&self.pool).await
    }
}

async fn fetch_referral(ex: impl Conn, id: &str) -> Result<Option<ReferralRow>, StoreError> {
    let row = q(format!(
        "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(ex)
    .await?;
    row.as_ref().map(referral_row).transpose()
}

async fn fetch_history(ex: impl Conn, ids: &[String]) -> Result<Vec<EventRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = history_query(ids).fetch_all(ex).await?;
    rows.iter().map(event_row).collect()
}

pub(super) fn list_query(f: &ListFilter) -> Query {
    let mut q = SqlBuilder::default();
    let mut sql = q.and_in("status", &f.statuses);
    if let Some(c) = &f.category {
        sql += &format!(" AND category = {}", q.bind(Arg::Text(c.clone())));
    }
    if let Some(p) = &f.priority {
        sql += &format!(" AND priority = {}", q.bind(Arg::Text(p.clone())));
    }
    if let Some(now) = f.overdue_at {
        let finals: Vec<_> = FINAL_STATUSES
            .iter()
            .map(|s| q.bind(Arg::Text(s.to_string())))
            .collect();
        sql += &format!(
            " AND due_at IS NOT NULL AND due_at < {} AND status NOT IN ({})",
            q.bind(Arg::Int(now)),
            finals.join(", ")
        );
    }
    q.newest_page(
        &format!("SELECT {REFERRAL_COLUMNS} FROM referrals"),
        &f.agency,
        (f.sent, f.received),
        sql,
        (f.before_id.as_ref(), f.limit),
    )
}

pub(super) fn events_after_query(agency: &str, after_seq: i64, limit: i64) -> Query {
    let mut q = SqlBuilder::default();
    let after = format!(" AND seq > {}", q.bind(Arg::Int(after_seq)));
    let order = format!(" ORDER BY seq LIMIT {}", q.bind(Arg::Int(limit)));
    let sql = q.party_rows(
        &format!("SELECT {EVENT_COLUMNS} FROM referral_events"),
        agency,
        (false, false),
        &after,
        &order,
    );
    q.query(&sql)
}

pub(super) fn history_query(ids: &[String]) -> Query {
    let mut q = SqlBuilder::default();
    let list: Vec<_> = ids.iter().map(|id| q.bind(Arg::Text(id.clone()))).collect();
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM referral_events WHERE referral_id IN ({}) \
         AND information_request_id IS NULL ORDER BY seq",
        list.join(", ")
    );
    q.query(&sql)
}

fn referral_row(r: &impl Row) -> Result<ReferralRow, StoreError> {
    Ok(ReferralRow {
        id: r.col("id")?,
        from_agency: r.col("from_agency")?,
        to_agency: r.col("to_agency")?,
        request_id: r.col("request_id")?,
        service_code: r.col("service_code")?,
        category: r.col("category")?,
        priority: r.col("priority")?,
        status: r.col("status")?,
        due_at: r.col("due_at")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
        body: r.col("body")?,
    })
}

fn event_row(r: &impl Row) -> Result<EventRow, StoreError> {
    Ok(EventRow {
        seq: r.col("seq")?,
        referral_id: r.col("referral_id")?,
        information_request_id: r.col("information_request_id")?,
        application_id: r.col("application_id")?,
        clearance_agency: r.col("clearance_agency")?,
        clearance_status: r.col("clearance_status")?,
        from_agency: r.col("from_agency")?,
        to_agency: r.col("to_agency")?,
        event_type: r.col("event_type")?,
        status: r.col("status")?,
        actor_agency: r.col("actor_agency")?,
        reason_code: r.col("reason_code")?,
        note: r.col("note")?,
        outcome: r.col("outcome")?,
        occurred_at: r.col("occurred_at")?,
    })
}
