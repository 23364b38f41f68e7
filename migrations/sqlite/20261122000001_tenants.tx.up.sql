CREATE TABLE tenants (
    id           TEXT PRIMARY KEY,
    slug         TEXT NOT NULL,
    display_name TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('TRIAL', 'ACTIVE', 'FROZEN')),
    external_id  TEXT NOT NULL DEFAULT '',
    metadata     TEXT NOT NULL DEFAULT '{}',
    create_time  TIMESTAMP NOT NULL,
    update_time  TIMESTAMP NOT NULL,
    -- slug and display name lower-cased in Go (Unicode-aware on both
    -- dialects), for case-insensitive search
    search       TEXT NOT NULL DEFAULT ''
);
--bun:split
CREATE UNIQUE INDEX tenants_slug_key ON tenants (slug);
--bun:split
CREATE INDEX tenants_status_id_idx ON tenants (status, id);
