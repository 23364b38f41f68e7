CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    name           TEXT NOT NULL,
    prefix         TEXT NOT NULL,
    hash           TEXT NOT NULL,
    scopes         TEXT NOT NULL DEFAULT '[]',
    create_time    TIMESTAMP NOT NULL,
    update_time    TIMESTAMP NOT NULL,
    expire_time    TIMESTAMP,
    revoke_time    TIMESTAMP,
    last_used_time TIMESTAMP
);
--bun:split
CREATE UNIQUE INDEX api_keys_hash_key ON api_keys (hash);
--bun:split
CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id, id);
--bun:split
CREATE INDEX api_keys_legacy_prefix_idx ON api_keys (prefix) WHERE hash LIKE 'argon2id|%';
