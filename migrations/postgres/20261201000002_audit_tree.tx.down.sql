ALTER TABLE audit_chain_heads DROP COLUMN expired_through;
--bun:split
DROP TABLE audit_tree_hashes;
