-- The roots of the audit log's perfect subtrees of 256 leaves and more (level >= 8: the
-- subtree of 2^level leaves starting at leaf idx << level), written with the entries that
-- complete them, so an inclusion or consistency proof reads O(log n) rows instead of every
-- leaf. Logs written before this table have none for their older part; proofs there fall
-- back to the leaves.
CREATE TABLE audit_nodes (
    log_id TEXT NOT NULL,
    level  INTEGER NOT NULL,
    idx    BIGINT NOT NULL,
    hash   BYTEA NOT NULL,
    PRIMARY KEY (log_id, level, idx)
);
