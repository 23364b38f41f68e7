-- The key whose disabling disabled this one, when a key's disabling
-- reached the keys it created: enabling that key enables exactly these,
-- and a key disabled on its own stays disabled.
ALTER TABLE api_keys ADD COLUMN disabled_with_key uuid;
