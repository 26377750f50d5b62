-- Which entries name which target id (an exchange, a document): QueryAuditEvents by target
-- walks this index instead of scanning every entry's targets column.
CREATE TABLE audit_targets (
    log_id     TEXT NOT NULL,
    target_id  TEXT NOT NULL,
    leaf_index BIGINT NOT NULL,
    PRIMARY KEY (log_id, target_id, leaf_index)
) WITHOUT ROWID;
-- Entries written before this table existed.
INSERT INTO audit_targets (log_id, target_id, leaf_index)
WITH RECURSIVE split(log_id, leaf_index, rest, target) AS (
    SELECT log_id, leaf_index, ltrim(targets), NULL FROM audit_entries WHERE targets <> ''
    UNION ALL
    SELECT log_id, leaf_index, ltrim(substr(rest, instr(rest, ' '))), substr(rest, 1, instr(rest, ' ') - 1)
    FROM split WHERE rest <> ''
)
SELECT DISTINCT log_id, target, leaf_index FROM split WHERE target IS NOT NULL AND target <> '';
-- Time bounds are resolved to leaf positions by a binary search (an entry's time never
-- precedes the one before it), so no index on time costs every append a page.
DROP INDEX audit_entries_by_time;
