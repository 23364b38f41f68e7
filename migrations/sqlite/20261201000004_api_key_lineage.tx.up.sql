-- The key that created a key, when a key did (a tenant's automation with
-- registry:keys.manage): revoking a key revokes the keys it created.
ALTER TABLE api_keys ADD COLUMN created_by_key TEXT;
--bun:split
CREATE INDEX api_keys_created_by_key_idx ON api_keys (created_by_key) WHERE created_by_key IS NOT NULL;
