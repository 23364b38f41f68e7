-- The platform tenant holds the platform keys, the only keys whose
-- platform scopes count. It exists in every database; its slug is reserved.
INSERT INTO tenants (id, slug, display_name, status, external_id, metadata, create_time, update_time, search)
VALUES ('00000000-0000-0000-0000-000000000000', 'platform', 'Platform', 'ACTIVE', '', '{}',
        '2026-12-01 00:00:00+00:00', '2026-12-01 00:00:00+00:00', 'platform' || char(10) || 'platform')
ON CONFLICT DO NOTHING;
--bun:split
-- Keys of ordinary tenants lose the platform scopes they were once given:
-- the policy ignores them on such keys anyway, and a key should say what
-- it can do.
UPDATE api_keys
SET scopes = (
    SELECT coalesce(json_group_array(value), '[]')
    FROM (SELECT value FROM json_each(api_keys.scopes)
          WHERE value NOT IN ('registry:admin', 'registry:verify', 'registry:audit.write', 'registry:entitlements.read')
            AND value NOT LIKE 'product:%'
          ORDER BY value)
)
WHERE tenant_id <> '00000000-0000-0000-0000-000000000000'
  AND EXISTS (
    SELECT 1 FROM json_each(api_keys.scopes)
    WHERE value IN ('registry:admin', 'registry:verify', 'registry:audit.write', 'registry:entitlements.read')
       OR value LIKE 'product:%'
  );
