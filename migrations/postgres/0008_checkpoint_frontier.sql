-- The Merkle tree's frontier at each checkpoint (the roots of its perfect subtrees, largest
-- first, 32 bytes each), so a restarting writer reads only the entries after the last
-- checkpoint instead of every leaf. NULL for checkpoints written before this column.
ALTER TABLE audit_checkpoints ADD COLUMN frontier BYTEA;
