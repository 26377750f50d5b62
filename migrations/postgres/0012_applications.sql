-- Applications for joint services (issue 15). Filterable fields are columns; the
-- application itself, with every clearance's state, is its protobuf encoding in body.
CREATE TABLE applications (
    id           TEXT PRIMARY KEY,
    lead_agency  TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    service_code TEXT NOT NULL,
    status       TEXT NOT NULL,
    due_at       BIGINT NOT NULL,        -- the expected completion at submission, unix ms
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    body         BYTEA NOT NULL
);
CREATE INDEX applications_by_lead ON applications (lead_agency, id);

-- One row per clearance: who clears which application (ListApplications for a clearing
-- agency), and the deadline sweep's work list.
CREATE TABLE clearances (
    application_id TEXT NOT NULL REFERENCES applications (id),
    agency         TEXT NOT NULL,
    status         TEXT NOT NULL,
    due_at         BIGINT,               -- set once requested
    -- 1 while requested, open, and not yet handled at its deadline (told overdue, or
    -- deemed approved): the rows the sweep looks at.
    awaiting_deadline BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (application_id, agency)
);
CREATE INDEX clearances_by_agency ON clearances (agency, application_id);
CREATE INDEX clearances_awaiting_deadline ON clearances (due_at) WHERE awaiting_deadline = 1;

-- Events of applications join the one feed (one cursor for every exchange).
ALTER TABLE referral_events ADD COLUMN application_id TEXT;
ALTER TABLE referral_events ADD COLUMN clearance_agency TEXT NOT NULL DEFAULT '';
ALTER TABLE referral_events ADD COLUMN clearance_status TEXT NOT NULL DEFAULT '';
