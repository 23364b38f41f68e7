CREATE TABLE tenants (
    id           uuid PRIMARY KEY,
    slug         text NOT NULL,
    display_name text NOT NULL,
    status       text NOT NULL CHECK (status IN ('TRIAL', 'ACTIVE', 'FROZEN')),
    external_id  text NOT NULL DEFAULT '',
    metadata     jsonb NOT NULL DEFAULT '{}',
    create_time  timestamptz NOT NULL,
    update_time  timestamptz NOT NULL,
    -- slug and display name lower-cased in Go (Unicode-aware on both
    -- dialects), for case-insensitive search
    search       text NOT NULL DEFAULT ''
);
--bun:split
CREATE UNIQUE INDEX tenants_slug_key ON tenants (slug);
--bun:split
CREATE INDEX tenants_status_id_idx ON tenants (status, id);
