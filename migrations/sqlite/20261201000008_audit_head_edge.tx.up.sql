-- Each log's head keeps its tree's right edge (the roots of the perfect
-- subtrees the tree is made of, hex, concatenated, largest first): all an
-- append needs of the tree, so appends read no stored hashes. Empty for
-- heads written before; the hashes are then read once, at the next append.
ALTER TABLE audit_chain_heads ADD COLUMN edge TEXT NOT NULL DEFAULT '';
