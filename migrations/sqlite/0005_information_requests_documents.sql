-- Information requests. Filterable fields are columns; the request itself (as sent, and
-- once answered or declined, with its response) is its protobuf encoding in body.
CREATE TABLE information_requests (
    id               TEXT PRIMARY KEY,
    from_agency      TEXT NOT NULL,
    to_agency        TEXT NOT NULL,
    request_id       TEXT NOT NULL,
    referral_id      TEXT NOT NULL,          -- '' when the request stands alone
    status           TEXT NOT NULL,
    due_at           BIGINT NOT NULL,        -- unix milliseconds
    overdue_notified BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    body             BLOB NOT NULL
);
CREATE INDEX information_requests_by_sender ON information_requests (from_agency, id);
CREATE INDEX information_requests_by_recipient ON information_requests (to_agency, id);
CREATE INDEX information_requests_open_by_due ON information_requests (due_at)
    WHERE status = 'INFORMATION_REQUEST_STATUS_OPEN';

-- Documents, content-addressed: one row (and one stored copy of the bytes) per SHA-256.
CREATE TABLE documents (
    id         TEXT PRIMARY KEY,             -- 'sha256:' + 64 lowercase hex digits
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Who may read a document: its uploaders, and the parties to every exchange that references
-- it. Each agency sees the metadata of the upload it knows the document from.
CREATE TABLE document_grants (
    document_id TEXT NOT NULL REFERENCES documents (id),
    agency      TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    title       TEXT NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_at BIGINT NOT NULL,
    via         TEXT NOT NULL,               -- 'upload', or the referral / information request id
    granted_at  BIGINT NOT NULL,
    PRIMARY KEY (document_id, agency)
);

-- Events of information requests join the referral event feed (one cursor for both): the
-- table is rebuilt with referral_id optional and information_request_id added, keeping seq.
CREATE TABLE referral_events_new (
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
    referral_id            TEXT REFERENCES referrals (id),
    information_request_id TEXT REFERENCES information_requests (id),
    from_agency            TEXT NOT NULL,
    to_agency              TEXT NOT NULL,
    event_type             TEXT NOT NULL,
    status                 TEXT NOT NULL,
    actor_agency           TEXT NOT NULL,
    reason_code            TEXT NOT NULL,
    note                   TEXT NOT NULL,
    outcome                TEXT NOT NULL,
    occurred_at            BIGINT NOT NULL
);
INSERT INTO referral_events_new (seq, referral_id, information_request_id, from_agency, to_agency,
    event_type, status, actor_agency, reason_code, note, outcome, occurred_at)
    SELECT seq, referral_id, NULL, from_agency, to_agency, event_type, status, actor_agency,
           reason_code, note, outcome, occurred_at FROM referral_events;
DROP TABLE referral_events;
ALTER TABLE referral_events_new RENAME TO referral_events;
CREATE INDEX referral_events_by_referral ON referral_events (referral_id, seq);
CREATE INDEX referral_events_by_sender ON referral_events (from_agency, seq);
CREATE INDEX referral_events_by_recipient ON referral_events (to_agency, seq);
CREATE INDEX referral_events_by_information_request ON referral_events (information_request_id, seq);
