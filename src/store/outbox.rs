//! The outbox: deliveries waiting for, leased to, or done with their receiving agency.

use sqlx::AnyPool;

use super::sql::{q, Param, Query, Row, Table};

use super::{Arg, SqlBuilder, StoreError, WriteTx};
pub use crate::domain::records::{NewDelivery, OutboxRow, DEAD, DELIVERED, LEASED, PENDING};

const COLUMNS: &str =
    "seq, delivery_id, agency, kind, subject_id, payload, traceparent, state, attempts, \
     next_attempt_at, created_at, updated_at, last_error, receipt_id";

/// A delivery: a fresh id, inserted with the rest of its batch's; its `seq` (the order of
/// delivery) is the order of insertion.
static OUTBOX: Table = Table::new(
    "outbox",
    "delivery_id, agency, kind, subject_id, payload, traceparent, state, attempts, \
              next_attempt_at, created_at, updated_at, last_error, receipt_id",
    None,
    1,
);

impl WriteTx {
    /// Enqueues a delivery and returns its delivery id.
    pub async fn enqueue(&mut self, d: &NewDelivery<'_>, now: i64) -> Result<String, StoreError> {
        let id = ulid::Ulid::new().to_string();
        let row = vec![
            Param::from(&id),
            Param::from(d.agency),
            Param::from(d.kind),
            Param::from(d.subject_id),
            Param::from(d.payload.clone()),
            Param::from(d.traceparent),
            Param::from(PENDING),
            Param::Int(0),
            Param::Int(now),
            Param::Int(now),
            Param::Int(now),
            Param::from(""),
            Param::from(""),
        ];
        self.conn().insert(&OUTBOX, row).await?;
        self.outbox_changed = true;
        Ok(id)
    }

    /// Leases up to `limit` due deliveries of `agency` until `lease_until`, oldest first,
    /// never one whose earlier sibling (same exchange, same agency) is still undelivered.
    pub async fn lease_due(
        &mut self,
        agency: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = q(format!(
            "SELECT {COLUMNS} FROM outbox o WHERE o.agency = $1 AND o.state IN ('pending', 'leased') \
             AND o.next_attempt_at <= $2 AND NOT EXISTS (SELECT 1 FROM outbox p \
             WHERE p.subject_id = o.subject_id AND p.agency = o.agency AND p.seq < o.seq \
             AND p.state IN ('pending', 'leased')) ORDER BY o.seq LIMIT $3"
        ))
        .bind(agency)
        .bind(now)
        .bind(limit)
        .fetch_all(self.conn())
        .await?;
        let mut leased = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut r = outbox_row(row)?;
            q(
                "UPDATE outbox SET state = 'leased', attempts = attempts + 1, next_attempt_at = $1, updated_at = $2 \
                 WHERE seq = $3",
            )
            .bind(lease_until)
            .bind(now)
            .bind(r.seq)
            .execute(self.conn())
            .await?;
            r.state = LEASED.into();
            r.attempts += 1;
            r.next_attempt_at = lease_until;
            leased.push(r);
        }
        Ok(leased)
    }

    /// Undelivered deliveries created before `created_before` that nobody holds a lease on
    /// (never pulled from an inbox, or stuck behind an open breaker): dead-letter candidates.
    pub async fn stale(
        &mut self,
        created_before: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = stale_query(created_before, now, limit)
            .fetch_all(self.conn())
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    pub async fn delivery(&mut self, delivery_id: &str) -> Result<Option<OutboxRow>, StoreError> {
        let row = q(format!(
            "SELECT {COLUMNS} FROM outbox WHERE delivery_id = $1"
        ))
        .bind(delivery_id)
        .fetch_optional(self.conn())
        .await?;
        row.as_ref().map(outbox_row).transpose()
    }

    pub async fn mark_delivered(
        &mut self,
        delivery_id: &str,
        receipt_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        q(
            "UPDATE outbox SET state = 'delivered', receipt_id = $1, last_error = '', updated_at = $2 WHERE delivery_id = $3",
        )
        .bind(receipt_id)
        .bind(now)
        .bind(delivery_id)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Back to pending, to be tried again at `next_attempt_at`.
    pub async fn reschedule(
        &mut self,
        delivery_id: &str,
        error: &str,
        next_attempt_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        q(
            "UPDATE outbox SET state = 'pending', last_error = $1, next_attempt_at = $2, updated_at = $3 WHERE delivery_id = $4",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(now)
        .bind(delivery_id)
        .execute(self.conn())
        .await?;
        self.outbox_changed = true;
        Ok(())
    }

    /// Deliveries back to pending, due now, with their attempts and age reset (`jisr outbox
    /// retry|replay`); only those in one of `from_states`. Returns the ids that moved. Run
    /// by the CLI's writer (another process than the gateway, which picks them up on its
    /// next poll).
    pub async fn requeue(
        &mut self,
        delivery_ids: &[String],
        from_states: &[&str],
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let states: Vec<String> = from_states.iter().map(|s| format!("'{s}'")).collect();
        let mut moved = Vec::new();
        for id in delivery_ids {
            let n = q(format!(
                "UPDATE outbox SET state = 'pending', attempts = 0, last_error = '', next_attempt_at = $1, \
                 updated_at = $1, created_at = $1 WHERE delivery_id = $2 AND state IN ({})",
                states.join(", ")
            ))
            .bind(now)
            .bind(id)
            .execute(self.conn())
            .await?;
            if n > 0 {
                moved.push(id.clone());
            }
        }
        self.outbox_changed = true;
        Ok(moved)
    }

    /// Back to pending without counting the attempt its lease was for (it was never sent),
    /// to be leased again at `next_attempt_at`.
    pub async fn release(
        &mut self,
        delivery_id: &str,
        next_attempt_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        q(
            "UPDATE outbox SET state = 'pending', attempts = attempts - 1, next_attempt_at = $1, updated_at = $2 WHERE delivery_id = $3",
        )
        .bind(next_attempt_at)
        .bind(now)
        .bind(delivery_id)
        .execute(self.conn())
        .await?;
        self.outbox_changed = true;
        Ok(())
    }

    pub async fn mark_dead(
        &mut self,
        delivery_id: &str,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        q("UPDATE outbox SET state = 'dead', last_error = $1, updated_at = $2 WHERE delivery_id = $3")
            .bind(error)
            .bind(now)
            .bind(delivery_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

/// Deliveries in these states (all when empty), oldest first.
pub async fn list(
    pool: &AnyPool,
    states: &[&str],
    agency: Option<&str>,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut q = SqlBuilder::default();
    let mut sql = format!("SELECT {COLUMNS} FROM outbox WHERE 1 = 1");
    if !states.is_empty() {
        let list: Vec<_> = states
            .iter()
            .map(|s| q.bind(Arg::Text(s.to_string())))
            .collect();
        sql += &format!(" AND state IN ({})", list.join(", "));
    }
    if let Some(a) = agency {
        sql += &format!(" AND agency = {}", q.bind(Arg::Text(a.to_string())));
    }
    sql += &format!(" ORDER BY seq LIMIT {}", q.bind(Arg::Int(limit)));
    let rows = q.query(&sql).fetch_all(pool).await?;
    rows.iter().map(outbox_row).collect()
}

fn outbox_row(r: &impl Row) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        seq: r.col("seq")?,
        delivery_id: r.col("delivery_id")?,
        agency: r.col("agency")?,
        kind: r.col("kind")?,
        subject_id: r.col("subject_id")?,
        payload: r.col("payload")?,
        traceparent: r.col("traceparent")?,
        state: r.col("state")?,
        attempts: r.col("attempts")?,
        next_attempt_at: r.col("next_attempt_at")?,
        created_at: r.col("created_at")?,
        updated_at: r.col("updated_at")?,
        last_error: r.col("last_error")?,
        receipt_id: r.col("receipt_id")?,
    })
}

/// Oldest first by creation, so the sweep walks the index of undelivered rows by age and
/// reads none while nothing is old enough, however large the backlog.
pub(super) fn stale_query(created_before: i64, now: i64, limit: i64) -> Query {
    q(format!(
        "SELECT {COLUMNS} FROM outbox WHERE state IN ('pending', 'leased') AND created_at < $1 \
         AND next_attempt_at <= $2 ORDER BY created_at, seq LIMIT $3"
    ))
    .bind(created_before)
    .bind(now)
    .bind(limit)
}
