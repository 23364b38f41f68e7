-- One row per tenant and product: the tenant's right to use it. EXPIRED is
-- never stored; it is computed from expire_time when read.
CREATE TABLE entitlements (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    product     text NOT NULL REFERENCES products (key),
    status      text NOT NULL CHECK (status IN ('TRIAL', 'ACTIVE', 'REVOKED')),
    source      text NOT NULL CHECK (source IN ('TRIAL', 'GRANT')),
    start_time  timestamptz NOT NULL,
    expire_time timestamptz,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, product)
);
--bun:split
-- Every trial ever started. Rows are never removed: the primary key is what
-- makes "one trial per tenant and product, ever" hold under concurrency.
CREATE TABLE trials (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    product    text NOT NULL REFERENCES products (key),
    start_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, product)
);
--bun:split
CREATE TABLE product_requests (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    product      text NOT NULL REFERENCES products (key),
    note         text NOT NULL DEFAULT '',
    status       text NOT NULL CHECK (status IN ('OPEN', 'CLOSED')),
    requested_by text NOT NULL DEFAULT '',
    create_time  timestamptz NOT NULL
);
--bun:split
-- At most one open request per tenant and product, even under concurrency.
CREATE UNIQUE INDEX product_requests_open_key ON product_requests (tenant_id, product) WHERE status = 'OPEN';
--bun:split
CREATE INDEX product_requests_status_id_idx ON product_requests (status, id);
