CREATE TABLE audit_events_partitioned_copy AS SELECT * FROM audit_events;
--bun:split
DROP TABLE audit_events;
--bun:split
ALTER TABLE audit_events_partitioned_copy RENAME TO audit_events;
--bun:split
ALTER TABLE audit_events ADD PRIMARY KEY (id);
--bun:split
ALTER TABLE audit_events ALTER COLUMN tenant_id SET NOT NULL;
--bun:split
CREATE UNIQUE INDEX audit_events_chain_key ON audit_events (tenant_id, seq);
--bun:split
CREATE UNIQUE INDEX audit_events_external_id_key ON audit_events (tenant_id, product, external_id) WHERE external_id <> '';
--bun:split
CREATE INDEX audit_events_product_idx ON audit_events (tenant_id, product, seq);
--bun:split
CREATE INDEX audit_events_actor_idx ON audit_events (tenant_id, actor_id, seq);
--bun:split
CREATE INDEX audit_events_action_idx ON audit_events (tenant_id, action, seq);
--bun:split
CREATE INDEX audit_events_target_idx ON audit_events (tenant_id, target_id, seq);
--bun:split
DROP TABLE audit_retention;
--bun:split
DROP TABLE audit_external_ids;
