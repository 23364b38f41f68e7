-- One row per chain (tenant; '' for platform events): the last seq and hash.
-- Appends lock it, so a chain grows in one order across every replica.
CREATE TABLE audit_chain_heads (
    tenant_id TEXT PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      TEXT NOT NULL
);
--bun:split
CREATE TABLE audit_events (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    product      TEXT NOT NULL,
    action       TEXT NOT NULL,
    crud         TEXT NOT NULL CHECK (crud IN ('c', 'r', 'u', 'd')),
    actor_id     TEXT NOT NULL DEFAULT '',
    actor_name   TEXT NOT NULL DEFAULT '',
    actor_type   TEXT NOT NULL DEFAULT '',
    target_id    TEXT NOT NULL DEFAULT '',
    target_type  TEXT NOT NULL DEFAULT '',
    target_name  TEXT NOT NULL DEFAULT '',
    source_ip    TEXT NOT NULL DEFAULT '',
    description  TEXT NOT NULL DEFAULT '',
    is_failure   BOOLEAN NOT NULL DEFAULT 0,
    is_anonymous BOOLEAN NOT NULL DEFAULT 0,
    fields       TEXT NOT NULL DEFAULT '{}',
    occur_time   TIMESTAMP NOT NULL,
    receive_time TIMESTAMP NOT NULL,
    external_id  TEXT NOT NULL DEFAULT '',
    hash         TEXT NOT NULL
);
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
