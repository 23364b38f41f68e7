-- Each tenant's audit events are the leaves of a Merkle tree in the form of
-- golang.org/x/mod/sumdb/tlog: every stored hash of the tree, by its index.
-- The rows outlive the events whose bodies retention deletes, so proofs and
-- checkpoints of what remains still verify.
CREATE TABLE audit_tree_hashes (
    tenant_id text NOT NULL,
    idx       bigint NOT NULL,
    hash      bytea NOT NULL,
    PRIMARY KEY (tenant_id, idx)
);
--bun:split
-- A head's hash is now the root of its tree (the migration after this one
-- rebuilds the trees of existing logs); expired_through is the highest seq
-- whose body retention deleted.
ALTER TABLE audit_chain_heads ADD COLUMN expired_through bigint NOT NULL DEFAULT 0;
