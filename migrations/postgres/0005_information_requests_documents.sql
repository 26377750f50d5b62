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
    body             BYTEA NOT NULL
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

-- Events of information requests join the referral event feed (one cursor for both).
ALTER TABLE referral_events ALTER COLUMN referral_id DROP NOT NULL;
ALTER TABLE referral_events ADD COLUMN information_request_id TEXT REFERENCES information_requests (id);
CREATE INDEX referral_events_by_information_request ON referral_events (information_request_id, seq);
