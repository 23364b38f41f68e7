-- One row per tenant and product: the tenant's right to use it. EXPIRED is
-- never stored; it is computed from expire_time when read.
CREATE TABLE entitlements (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    product     TEXT NOT NULL REFERENCES products (key),
    status      TEXT NOT NULL CHECK (status IN ('TRIAL', 'ACTIVE', 'REVOKED')),
    source      TEXT NOT NULL CHECK (source IN ('TRIAL', 'GRANT')),
    start_time  TIMESTAMP NOT NULL,
    expire_time TIMESTAMP,
    create_time TIMESTAMP NOT NULL,
    update_time TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, product)
);
--bun:split
-- Every trial ever started. Rows are never removed: the primary key is what
-- makes "one trial per tenant and product, ever" hold under concurrency.
CREATE TABLE trials (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    product    TEXT NOT NULL REFERENCES products (key),
    start_time TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, product)
);
--bun:split
CREATE TABLE product_requests (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    product      TEXT NOT NULL REFERENCES products (key),
    note         TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL CHECK (status IN ('OPEN', 'CLOSED')),
    requested_by TEXT NOT NULL DEFAULT '',
    create_time  TIMESTAMP NOT NULL
);
--bun:split
-- At most one open request per tenant and product, even under concurrency.
CREATE UNIQUE INDEX product_requests_open_key ON product_requests (tenant_id, product) WHERE status = 'OPEN';
--bun:split
CREATE INDEX product_requests_status_id_idx ON product_requests (status, id);
