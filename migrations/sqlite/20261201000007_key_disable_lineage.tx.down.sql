ALTER TABLE api_keys DROP COLUMN disabled_with_key;
