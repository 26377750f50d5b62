//! What operators watch, read from the database: is it reachable, can the writer write,
//! how deep is each agency's outbox, how many exchanges are overdue. Each count walks an
//! index of its own (migration 0011), on the read connections, never through the writer.

use super::sql::{q, Row as _};
use super::{Reads, Store, StoreError};
use crate::common::time::now_ms;

/// Undelivered and dead-lettered outbox rows of one agency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub agency: String,
    pub pending: i64,
    pub leased: i64,
    pub dead: i64,
}

impl Reads {
    /// A trivial query: the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        q("SELECT 1 AS one").fetch_one(self.scan()).await?;
        Ok(())
    }

    /// Each agency's outbox rows not delivered, by state.
    pub async fn outbox_depth(&self) -> Result<Vec<OutboxDepth>, StoreError> {
        let mut by_agency = std::collections::BTreeMap::<String, OutboxDepth>::new();
        for (sql, column) in [
            (
                "SELECT agency, COUNT(*) AS n FROM outbox WHERE state IN ('pending', 'leased') GROUP BY agency",
                0,
            ),
            (
                "SELECT agency, COUNT(*) AS n FROM outbox WHERE state = 'leased' GROUP BY agency",
                1,
            ),
            (
                "SELECT agency, COUNT(*) AS n FROM outbox WHERE state = 'dead' GROUP BY agency",
                2,
            ),
        ] {
            for row in q(sql).fetch_all(self.scan()).await? {
                let agency: String = row.col("agency")?;
                let n: i64 = row.col("n")?;
                let depth = by_agency.entry(agency.clone()).or_insert(OutboxDepth {
                    agency,
                    ..Default::default()
                });
                match column {
                    0 => depth.pending += n,
                    1 => {
                        depth.leased = n;
                        depth.pending -= n;
                    }
                    _ => depth.dead = n,
                }
            }
        }
        Ok(by_agency.into_values().collect())
    }

    /// Exchanges past their expected time frame and not answered, by the agency that owes
    /// the answer: referrals marked overdue and not final, open information requests past
    /// their due date.
    pub async fn overdue_by_agency(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut by_agency = std::collections::BTreeMap::<String, i64>::new();
        let referrals = q(
            "SELECT to_agency, COUNT(*) AS n FROM referrals WHERE overdue_notified = 1 \
             AND status NOT IN ('REFERRAL_STATUS_COMPLETED', 'REFERRAL_STATUS_REJECTED', \
             'REFERRAL_STATUS_WITHDRAWN', 'REFERRAL_STATUS_FAILED') GROUP BY to_agency",
        )
        .fetch_all(self.scan())
        .await?;
        let requests = q("SELECT to_agency, COUNT(*) AS n FROM information_requests \
             WHERE status = 'INFORMATION_REQUEST_STATUS_OPEN' AND due_at < $1 GROUP BY to_agency")
        .bind(now_ms())
        .fetch_all(self.scan())
        .await?;
        for row in referrals.iter().chain(&requests) {
            *by_agency.entry(row.col("to_agency")?).or_default() += row.col::<i64>("n")?;
        }
        Ok(by_agency.into_iter().collect())
    }
}

impl Store {
    /// A small real write through the writer (one row per node in `writer_probe`): can
    /// the database take writes again (the disk has room, PostgreSQL is back)?
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let node = self.log_id().to_string();
        self.write(None, move |tx| {
            Box::pin(async move {
                q("INSERT INTO writer_probe (node, at_ms) VALUES ($1, $2) \
                   ON CONFLICT (node) DO UPDATE SET at_ms = excluded.at_ms")
                .bind(node)
                .bind(now_ms())
                .execute(tx.conn())
                .await?;
                Ok::<_, StoreError>(())
            })
        })
        .await
        .map(|_| ())
    }
}
