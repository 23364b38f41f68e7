DROP INDEX api_keys_created_by_key_idx;
--bun:split
ALTER TABLE api_keys DROP COLUMN created_by_key;
