-- Idempotency keys of audit appends, in a table of their own: the events
-- table is partitioned by receive time below, and a unique index of a
-- partitioned table must hold the partition key, so it could no longer
-- keep an external id unique across months. A key lives as long as its
-- event: retention deletes both.
CREATE TABLE audit_external_ids (
    tenant_id    text NOT NULL,
    product      text NOT NULL,
    external_id  text NOT NULL,
    seq          bigint NOT NULL,
    receive_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, product, external_id)
);
--bun:split
INSERT INTO audit_external_ids (tenant_id, product, external_id, seq, receive_time)
SELECT tenant_id, product, external_id, seq, receive_time FROM audit_events WHERE external_id <> '';
--bun:split
-- Per log, how many days events are kept ('' is the platform's log); a log
-- without a row keeps AUDIT_RETENTION_DAYS. 0 keeps them forever.
CREATE TABLE audit_retention (
    tenant_id text PRIMARY KEY,
    days      integer NOT NULL CHECK (days >= 0)
);
--bun:split
-- The events, partitioned by month of receive time, so that expiry drops a
-- month instead of deleting its rows. Partitions are named
-- audit_events_YYYYMM: here from the oldest event's month (or last month) to
-- three months ahead; the server keeps creating them ahead of time.
ALTER TABLE audit_events RENAME TO audit_events_unpartitioned;
--bun:split
ALTER INDEX audit_events_chain_key RENAME TO audit_events_unpartitioned_chain_key;
--bun:split
ALTER INDEX audit_events_product_idx RENAME TO audit_events_unpartitioned_product_idx;
--bun:split
ALTER INDEX audit_events_actor_idx RENAME TO audit_events_unpartitioned_actor_idx;
--bun:split
ALTER INDEX audit_events_action_idx RENAME TO audit_events_unpartitioned_action_idx;
--bun:split
ALTER INDEX audit_events_target_idx RENAME TO audit_events_unpartitioned_target_idx;
--bun:split
CREATE TABLE audit_events (LIKE audit_events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
PARTITION BY RANGE (receive_time);
--bun:split
ALTER TABLE audit_events ADD PRIMARY KEY (tenant_id, seq, receive_time);
--bun:split
CREATE INDEX audit_events_product_idx ON audit_events (tenant_id, product, seq);
--bun:split
CREATE INDEX audit_events_actor_idx ON audit_events (tenant_id, actor_id, seq);
--bun:split
CREATE INDEX audit_events_action_idx ON audit_events (tenant_id, action, seq);
--bun:split
CREATE INDEX audit_events_target_idx ON audit_events (tenant_id, target_id, seq);
--bun:split
DO $$
DECLARE
    month timestamptz := date_trunc('month', least(coalesce((SELECT min(receive_time) FROM audit_events_unpartitioned), now()), now() - interval '1 month') AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    last  timestamptz := date_trunc('month', greatest(coalesce((SELECT max(receive_time) FROM audit_events_unpartitioned), now()), now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '3 months';
BEGIN
    WHILE month <= last LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
            'audit_events_' || to_char(month AT TIME ZONE 'UTC', 'YYYYMM'), month, month + interval '1 month');
        month := month + interval '1 month';
    END LOOP;
END
$$;
--bun:split
INSERT INTO audit_events SELECT * FROM audit_events_unpartitioned;
--bun:split
DROP TABLE audit_events_unpartitioned;
