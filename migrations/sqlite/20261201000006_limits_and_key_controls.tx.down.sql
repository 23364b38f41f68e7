ALTER TABLE api_keys DROP COLUMN metadata;
--bun:split
ALTER TABLE api_keys DROP COLUMN disable_time;
--bun:split
ALTER TABLE entitlements DROP COLUMN limits;
--bun:split
ALTER TABLE products DROP COLUMN trial_limits;
--bun:split
ALTER TABLE products DROP COLUMN default_limits;
