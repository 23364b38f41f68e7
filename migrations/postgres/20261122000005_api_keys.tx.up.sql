CREATE TABLE api_keys (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    name           text NOT NULL,
    prefix         text NOT NULL,
    hash           text NOT NULL,
    scopes         jsonb NOT NULL DEFAULT '[]',
    create_time    timestamptz NOT NULL,
    update_time    timestamptz NOT NULL,
    expire_time    timestamptz,
    revoke_time    timestamptz,
    last_used_time timestamptz
);
--bun:split
CREATE UNIQUE INDEX api_keys_hash_key ON api_keys (hash);
--bun:split
CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id, id);
--bun:split
CREATE INDEX api_keys_legacy_prefix_idx ON api_keys (prefix) WHERE hash LIKE 'argon2id|%';
