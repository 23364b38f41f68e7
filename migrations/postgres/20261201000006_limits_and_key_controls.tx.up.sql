-- Products declare limits (seats, projects, …) with defaults, and their
-- trials may have others; a grant may override them per tenant. Keys can be
-- disabled and carry metadata for the products that verify them.
ALTER TABLE products ADD COLUMN default_limits jsonb NOT NULL DEFAULT '{}';
--bun:split
ALTER TABLE products ADD COLUMN trial_limits jsonb NOT NULL DEFAULT '{}';
--bun:split
ALTER TABLE entitlements ADD COLUMN limits jsonb NOT NULL DEFAULT '{}';
--bun:split
ALTER TABLE api_keys ADD COLUMN disable_time timestamptz;
--bun:split
ALTER TABLE api_keys ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';
--bun:split
-- The verification query (persistence.verificationQuery) now also reads
-- the key's disable time and metadata, and each entitlement's limits with
-- its product's.
DROP FUNCTION api_key_verification(text);
--bun:split
CREATE FUNCTION api_key_verification(key_hash text)
RETURNS TABLE (
    id uuid, tenant_id uuid, name text, prefix text, hash text, scopes jsonb,
    create_time timestamptz, update_time timestamptz, expire_time timestamptz,
    revoke_time timestamptz, last_used_time timestamptz, disable_time timestamptz, metadata jsonb,
    tenant_slug text, tenant_status text,
    e_product text, e_status text, e_source text, e_start_time timestamptz, e_expire_time timestamptz,
    e_limits jsonb, p_default_limits jsonb, p_trial_limits jsonb
)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT k.id, k.tenant_id, k.name, k.prefix, k.hash, k.scopes, k.create_time, k.update_time,
           k.expire_time, k.revoke_time, k.last_used_time, k.disable_time, k.metadata,
           t.slug, t.status,
           e.product, e.status, e.source, e.start_time, e.expire_time,
           e.limits, p.default_limits, p.trial_limits
    FROM api_keys AS k
    JOIN tenants AS t ON t.id = k.tenant_id
    LEFT JOIN entitlements AS e ON e.tenant_id = k.tenant_id
    LEFT JOIN products AS p ON p.key = e.product
    WHERE k.hash = key_hash;
END
$$;
