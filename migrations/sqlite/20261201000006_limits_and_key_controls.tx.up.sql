-- Products declare limits (seats, projects, …) with defaults, and their
-- trials may have others; a grant may override them per tenant. Keys can be
-- disabled and carry metadata for the products that verify them.
ALTER TABLE products ADD COLUMN default_limits TEXT NOT NULL DEFAULT '{}';
--bun:split
ALTER TABLE products ADD COLUMN trial_limits TEXT NOT NULL DEFAULT '{}';
--bun:split
ALTER TABLE entitlements ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
--bun:split
ALTER TABLE api_keys ADD COLUMN disable_time TIMESTAMP;
--bun:split
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
