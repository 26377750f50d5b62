-- Referrals. Filterable fields are columns; the rest of the referral is its protobuf
-- encoding (jisr.v1.Referral as submitted) in body.
CREATE TABLE referrals (
    id           TEXT PRIMARY KEY,
    from_agency  TEXT NOT NULL,
    to_agency    TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    service_code TEXT NOT NULL,
    category     TEXT NOT NULL,
    priority     TEXT NOT NULL,
    status       TEXT NOT NULL,
    due_at       BIGINT,            -- unix milliseconds
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    body         BLOB NOT NULL
);
CREATE INDEX referrals_by_sender ON referrals (from_agency, id);
CREATE INDEX referrals_by_recipient ON referrals (to_agency, id);

-- Every event of every referral, in commit order. It is both the status history and
-- the feed WatchReferralEvents resumes from (the cursor is seq).
CREATE TABLE referral_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    referral_id  TEXT NOT NULL REFERENCES referrals (id),
    from_agency  TEXT NOT NULL,
    to_agency    TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL,
    actor_agency TEXT NOT NULL,
    reason_code  TEXT NOT NULL,
    note         TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    occurred_at  BIGINT NOT NULL
);
CREATE INDEX referral_events_by_referral ON referral_events (referral_id, seq);
CREATE INDEX referral_events_by_sender ON referral_events (from_agency, seq);
CREATE INDEX referral_events_by_recipient ON referral_events (to_agency, seq);

-- Idempotency: the first response to each (agency, request_id), replayed on retry.
CREATE TABLE idempotency_keys (
    agency         TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    method         TEXT NOT NULL,
    request_sha256 BLOB NOT NULL,
    response       BLOB NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (agency, request_id)
);
