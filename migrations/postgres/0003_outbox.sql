-- The transactional outbox: every message an agency must receive, written in the same
-- transaction as the change that caused it, then delivered by the dispatcher (or pulled).
CREATE TABLE outbox (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     TEXT NOT NULL UNIQUE,   -- stable across attempts; receivers de-duplicate on it
    agency          TEXT NOT NULL,          -- the receiving agency
    kind            TEXT NOT NULL,          -- referral | status_update
    subject_id      TEXT NOT NULL,          -- the referral: its deliveries to one agency go in order
    payload         BYTEA NOT NULL,          -- jisr.adapter.v1.Delivery (payload only)
    traceparent     TEXT NOT NULL,
    state           TEXT NOT NULL,          -- pending | leased | delivered | dead
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,        -- unix ms; for leased rows, when the lease ends
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    last_error      TEXT NOT NULL,
    receipt_id      TEXT NOT NULL
);
-- Only undelivered rows, oldest first per agency: claiming reads the head of this index and
-- stops, however long the history of delivered rows grows.
CREATE INDEX outbox_undelivered ON outbox (agency, seq) WHERE state IN ('pending', 'leased');
CREATE INDEX outbox_undelivered_by_age ON outbox (created_at) WHERE state IN ('pending', 'leased');
CREATE INDEX outbox_by_subject ON outbox (subject_id, agency, seq);
