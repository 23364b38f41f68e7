DROP FUNCTION api_key_verification(text);
--bun:split
CREATE FUNCTION api_key_verification(key_hash text)
RETURNS TABLE (
    id uuid, tenant_id uuid, name text, prefix text, hash text, scopes jsonb,
    create_time timestamptz, update_time timestamptz, expire_time timestamptz,
    revoke_time timestamptz, last_used_time timestamptz, tenant_slug text, tenant_status text,
    e_product text, e_status text, e_source text, e_start_time timestamptz, e_expire_time timestamptz
)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT k.id, k.tenant_id, k.name, k.prefix, k.hash, k.scopes, k.create_time, k.update_time,
           k.expire_time, k.revoke_time, k.last_used_time, t.slug, t.status,
           e.product, e.status, e.source, e.start_time, e.expire_time
    FROM api_keys AS k
    JOIN tenants AS t ON t.id = k.tenant_id
    LEFT JOIN entitlements AS e ON e.tenant_id = k.tenant_id
    WHERE k.hash = key_hash;
END
$$;
--bun:split
ALTER TABLE api_keys DROP COLUMN metadata;
--bun:split
ALTER TABLE api_keys DROP COLUMN disable_time;
--bun:split
ALTER TABLE entitlements DROP COLUMN limits;
--bun:split
ALTER TABLE products DROP COLUMN trial_limits;
--bun:split
ALTER TABLE products DROP COLUMN default_limits;
