-- Idempotency keys of audit appends, in a table of their own (as on
-- PostgreSQL, where the events table is partitioned and a unique index
-- must hold the partition key). A key lives as long as its event:
-- retention deletes both.
CREATE TABLE audit_external_ids (
    tenant_id    TEXT NOT NULL,
    product      TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    receive_time TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, product, external_id)
);
--bun:split
INSERT INTO audit_external_ids (tenant_id, product, external_id, seq, receive_time)
SELECT tenant_id, product, external_id, seq, receive_time FROM audit_events WHERE external_id <> '';
--bun:split
-- Per log, how many days events are kept ('' is the platform's log); a log
-- without a row keeps AUDIT_RETENTION_DAYS. 0 keeps them forever.
CREATE TABLE audit_retention (
    tenant_id TEXT PRIMARY KEY,
    days      INTEGER NOT NULL CHECK (days >= 0)
);
--bun:split
-- The events keyed as on PostgreSQL, where the key must hold the
-- partition key (receive_time). SQLite has no partitions: expiry deletes.
CREATE TABLE audit_events_keyed (
    id           TEXT NOT NULL,
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
    hash         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq, receive_time)
);
--bun:split
INSERT INTO audit_events_keyed SELECT id, tenant_id, seq, product, action, crud, actor_id, actor_name, actor_type,
    target_id, target_type, target_name, source_ip, description, is_failure, is_anonymous, fields,
    occur_time, receive_time, external_id, hash FROM audit_events;
--bun:split
DROP TABLE audit_events;
--bun:split
ALTER TABLE audit_events_keyed RENAME TO audit_events;
--bun:split
CREATE INDEX audit_events_product_idx ON audit_events (tenant_id, product, seq);
--bun:split
CREATE INDEX audit_events_actor_idx ON audit_events (tenant_id, actor_id, seq);
--bun:split
CREATE INDEX audit_events_action_idx ON audit_events (tenant_id, action, seq);
--bun:split
CREATE INDEX audit_events_target_idx ON audit_events (tenant_id, target_id, seq);
