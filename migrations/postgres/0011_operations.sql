-- What the admin listener's metrics count at each scrape, each from an index of its own
-- rather than a scan (issue 14): deliveries in flight and dead letters per agency, and
-- referrals overdue now per agency that owes the answer. The undelivered count per agency
-- is read from outbox_undelivered.
CREATE INDEX outbox_leased ON outbox (agency) WHERE state = 'leased';
CREATE INDEX outbox_dead ON outbox (agency) WHERE state = 'dead';
CREATE INDEX referrals_overdue_now ON referrals (to_agency)
    WHERE overdue_notified = 1
    AND status NOT IN ('REFERRAL_STATUS_COMPLETED', 'REFERRAL_STATUS_REJECTED', 'REFERRAL_STATUS_WITHDRAWN', 'REFERRAL_STATUS_FAILED');
-- The readiness probe's write while the writer is failing: one row per node.
CREATE TABLE writer_probe (
    node  TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
