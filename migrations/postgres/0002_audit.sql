-- The audit log: one row per RPC, one log per gateway node (log_id = node id).
-- entry is the canonical encoding (docs/audit.md); leaf_hash = SHA-256(0x00 || entry).
-- The other columns repeat fields of entry for queries; `jisr audit verify` checks they agree.
CREATE TABLE audit_entries (
    log_id        TEXT NOT NULL,
    leaf_index    BIGINT NOT NULL,
    time_ms       BIGINT NOT NULL,
    caller_agency TEXT NOT NULL,
    method        TEXT NOT NULL,
    decision      TEXT NOT NULL,
    targets       TEXT NOT NULL,    -- ' id1 id2 ' (space-delimited, for target filters)
    entry         BYTEA NOT NULL,
    leaf_hash     BYTEA NOT NULL,
    PRIMARY KEY (log_id, leaf_index)
);
CREATE INDEX audit_entries_by_time ON audit_entries (log_id, time_ms);

-- Signed checkpoints (C2SP signed notes) of each log.
CREATE TABLE audit_checkpoints (
    log_id    TEXT NOT NULL,
    tree_size BIGINT NOT NULL,
    root_hash BYTEA NOT NULL,
    time_ms   BIGINT NOT NULL,
    note      TEXT NOT NULL,
    PRIMARY KEY (log_id, tree_size)
);
