-- Which entries name which target id (an exchange, a document): QueryAuditEvents by target
-- walks this index instead of scanning every entry's targets column.
CREATE TABLE audit_targets (
    log_id     TEXT NOT NULL,
    target_id  TEXT NOT NULL,
    leaf_index BIGINT NOT NULL,
    PRIMARY KEY (log_id, target_id, leaf_index)
);
-- Entries written before this table existed.
INSERT INTO audit_targets (log_id, target_id, leaf_index)
SELECT DISTINCT log_id, target, leaf_index
FROM audit_entries, regexp_split_to_table(btrim(targets), ' ') AS target
WHERE targets <> '' AND target <> '';
-- Time bounds are resolved to leaf positions by a binary search (an entry's time never
-- precedes the one before it), so no index on time costs every append a page.
DROP INDEX audit_entries_by_time;
