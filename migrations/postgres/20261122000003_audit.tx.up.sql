-- One row per chain (tenant; '' for platform events): the last seq and hash.
-- Appends lock it, so a chain grows in one order across every replica.
CREATE TABLE audit_chain_heads (
    tenant_id text PRIMARY KEY,
    seq       bigint NOT NULL,
    hash      text NOT NULL
);
--bun:split
CREATE TABLE audit_events (
    id           uuid PRIMARY KEY,
    tenant_id    text NOT NULL,
    seq          bigint NOT NULL,
    product      text NOT NULL,
    action       text COLLATE "C" NOT NULL,
    crud         text NOT NULL CHECK (crud IN ('c', 'r', 'u', 'd')),
    actor_id     text NOT NULL DEFAULT '',
    actor_name   text NOT NULL DEFAULT '',
    actor_type   text NOT NULL DEFAULT '',
    target_id    text NOT NULL DEFAULT '',
    target_type  text NOT NULL DEFAULT '',
    target_name  text NOT NULL DEFAULT '',
    source_ip    text NOT NULL DEFAULT '',
    description  text NOT NULL DEFAULT '',
    is_failure   boolean NOT NULL DEFAULT false,
    is_anonymous boolean NOT NULL DEFAULT false,
    fields       jsonb NOT NULL DEFAULT '{}',
    occur_time   timestamptz NOT NULL,
    receive_time timestamptz NOT NULL,
    external_id  text NOT NULL DEFAULT '',
    hash         text NOT NULL
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
