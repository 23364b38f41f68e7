-- The platform tenant holds the platform keys, the only keys whose
-- platform scopes count. It exists in every database; its slug is reserved.
INSERT INTO tenants (id, slug, display_name, status, external_id, metadata, create_time, update_time, search)
VALUES ('00000000-0000-0000-0000-000000000000', 'platform', 'Platform', 'ACTIVE', '', '{}',
        '2026-12-01T00:00:00Z', '2026-12-01T00:00:00Z', E'platform\nplatform')
ON CONFLICT DO NOTHING;
--bun:split
-- Keys of ordinary tenants lose the platform scopes they were once given:
-- the policy ignores them on such keys anyway, and a key should say what
-- it can do.
UPDATE api_keys
SET scopes = (
    SELECT coalesce(jsonb_agg(s ORDER BY s), '[]'::jsonb)
    FROM jsonb_array_elements_text(api_keys.scopes) AS s
    WHERE s NOT IN ('registry:admin', 'registry:verify', 'registry:audit.write', 'registry:entitlements.read')
      AND s NOT LIKE 'product:%'
)
WHERE tenant_id <> '00000000-0000-0000-0000-000000000000'
  AND EXISTS (
    SELECT 1 FROM jsonb_array_elements_text(api_keys.scopes) AS s
    WHERE s IN ('registry:admin', 'registry:verify', 'registry:audit.write', 'registry:entitlements.read')
       OR s LIKE 'product:%'
  );
