// A customer portal's journey through the registry with the generated
// connect-es client in Node (connect-node), over the Connect protocol (reads
// as HTTP GET) and over gRPC-Web, against the real server on SQLite and on
// PostgreSQL.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { toJsonString } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import {
  ApiKeySchema,
  ApiKeyStatus,
  ApiKeyVerificationCode,
  EntitlementCheckReason,
  EntitlementSource,
  EntitlementStatus,
  TenantStatus,
  fieldViolations,
  type ApiKey,
  type AuditEvent,
} from "@tenant-registry/client";

import { bearer, registry, type Registry } from "../lib/clients.js";
import {
  postgresDatabase,
  postgresUnavailable,
  sqliteDatabase,
  startServer,
  uniqueSlug,
  type RunningServer,
  type TestDatabase,
} from "../lib/server.js";

// In dev mode authentication is off and the token is not checked; it is sent
// anyway, as the portal always sends the user's token.
const token = "portal-user-access-token";

const transports: Record<string, (baseUrl: string) => Transport> = {
  connect: (baseUrl) =>
    createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      useHttpGet: true,
      interceptors: [bearer(token)],
    }),
  "grpc-web": (baseUrl) =>
    createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer(token)] }),
};

const databases: Record<string, { unavailable: () => string | undefined; open: () => TestDatabase }> = {
  sqlite: { unavailable: () => undefined, open: sqliteDatabase },
  postgres: { unavailable: postgresUnavailable, open: postgresDatabase },
};

for (const [dbName, database] of Object.entries(databases)) {
  const skip = database.unavailable();
  describe(`${dbName}`, { skip }, () => {
    let db: TestDatabase;
    let server: RunningServer;
    before(async () => {
      db = database.open();
      server = await startServer({ DATABASE_URL: db.url });
    });
    after(async () => {
      await server?.stop();
      if (process.env.E2E_SERVER_LOGS) {
        console.log(server?.logs());
      }
      await db?.drop();
    });

    for (const [protocol, transport] of Object.entries(transports)) {
      test(`${protocol}: portal journey`, async () => {
        await portalJourney(registry(transport(server.url)));
      });
      test(`${protocol}: errors are ConnectErrors with codes and field violations`, async () => {
        await errors(registry(transport(server.url)));
      });
    }
  });
}

async function portalJourney(r: Registry) {
  // Sign-up: a new tenant starts in TRIAL.
  const slug = uniqueSlug("journey");
  const { tenant } = await r.tenants.createTenant({
    slug,
    displayName: "Journey Ltd",
    metadata: { plan: "starter" },
  });
  assert.ok(tenant);
  assert.equal(tenant.slug, slug);
  assert.equal(tenant.status, TenantStatus.TRIAL);
  assert.deepEqual(tenant.metadata, { plan: "starter" });
  const tenantId = tenant.id;

  const bySlug = await r.tenants.getTenantBySlug({ slug });
  assert.equal(bySlug.tenant?.id, tenantId);

  // The catalog, then a self-serve trial of a product that offers one.
  const { products } = await r.catalog.listProducts({});
  const product = products.find((p) => p.trialDays > 0);
  assert.ok(product, `the dev catalog offers a trial: ${JSON.stringify(products.map((p) => p.key))}`);
  const { entitlement: trial } = await r.catalog.startTrial({ tenantId, product: product.key });
  assert.ok(trial?.startTime && trial.expireTime);
  assert.equal(trial.status, EntitlementStatus.TRIAL);
  assert.equal(trial.source, EntitlementSource.TRIAL);
  const days =
    (timestampDate(trial.expireTime).getTime() - timestampDate(trial.startTime).getTime()) / 86_400_000;
  assert.equal(days, product.trialDays);

  const { entitlements } = await r.entitlements.listEntitlements({ tenantId });
  assert.deepEqual(
    entitlements.map((e) => [e.product, e.status]),
    [[product.key, EntitlementStatus.TRIAL]],
  );
  const check = await r.entitlements.checkEntitlement({ tenantId, product: product.key });
  assert.equal(check.entitled, true);
  assert.equal(check.reason, EntitlementCheckReason.OK);

  // API keys: created with their plaintext once, listed page by page without it.
  const created = [];
  for (const name of ["ci-deploy", "billing-sync", "warehouse-export"]) {
    const res = await r.apiKeys.createApiKey({ tenantId, name, scopes: [`${product.key}:read`] });
    assert.match(res.plaintextKey, /^bp_[0-9A-Za-z]{40,}$/);
    assert.equal(res.apiKey?.status, ApiKeyStatus.ACTIVE);
    assert.equal(res.apiKey?.prefix, res.plaintextKey.slice(0, 11));
    created.push(res);
  }
  const listed: ApiKey[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await r.apiKeys.listApiKeys({ tenantId, pageSize: 2, pageToken });
    assert.ok(page.apiKeys.length <= 2);
    listed.push(...page.apiKeys);
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken !== "" && pages < 10);
  assert.equal(pages, 2);
  assert.deepEqual(listed.map((k) => k.name).sort(), ["billing-sync", "ci-deploy", "warehouse-export"]);
  const secret = created[0].plaintextKey.slice(11);
  assert.ok(listed.every((k) => !toJsonString(ApiKeySchema, k).includes(secret)), "no plaintext in lists");

  // A product verifies an inbound key in one call.
  const key = created[0].plaintextKey;
  const verified = await r.apiKeys.verifyApiKey({
    key,
    product: product.key,
    requiredScopes: [`${product.key}:read`],
  });
  assert.equal(verified.valid, true);
  assert.equal(verified.code, ApiKeyVerificationCode.VALID);
  assert.equal(verified.tenantId, tenantId);
  assert.equal(verified.tenantSlug, slug);
  assert.equal(verified.keyId, created[0].apiKey?.id);
  assert.deepEqual(verified.products, [product.key]);
  const verdicts = await Promise.all([
    r.apiKeys.verifyApiKey({ key: "bp_not-a-key" }),
    r.apiKeys.verifyApiKey({ key, requiredScopes: ["registry:admin"] }),
    r.apiKeys.verifyApiKey({ key, product: "data-warehouse" }),
  ]);
  assert.deepEqual(
    verdicts.map((v) => [v.valid, v.code]),
    [
      [false, ApiKeyVerificationCode.MALFORMED],
      [false, ApiKeyVerificationCode.INSUFFICIENT_SCOPE],
      [false, ApiKeyVerificationCode.NOT_ENTITLED],
    ],
  );
  await r.apiKeys.revokeApiKey({ id: created[2].apiKey!.id });
  const revoked = await r.apiKeys.verifyApiKey({ key: created[2].plaintextKey });
  assert.deepEqual([revoked.valid, revoked.code], [false, ApiKeyVerificationCode.REVOKED]);

  // Sales converts the trial with a per-tenant limit; products read it from
  // the check and from every verification.
  const { entitlement: granted } = await r.entitlements.grantEntitlement({
    tenantId,
    product: product.key,
    limits: { seats: 25n },
    etag: check.entitlement?.etag ?? "",
  });
  assert.equal(granted?.status, EntitlementStatus.ACTIVE);
  assert.equal(granted?.limitOverrides.seats, 25n);
  const limited = await r.entitlements.checkEntitlement({ tenantId, product: product.key });
  assert.equal(limited.limits.seats, 25n);
  const withLimits = await r.apiKeys.verifyApiKey({ key, product: product.key });
  assert.deepEqual(
    withLimits.entitlements.map((e) => [e.product, e.limits.seats]),
    [[product.key, 25n]],
  );
  // A write made from a stale read is refused, and changes nothing.
  const stale = await rejection(
    r.entitlements.grantEntitlement({ tenantId, product: product.key, limits: { seats: 1n }, etag: check.entitlement?.etag ?? "" }),
  );
  assert.equal(stale.code, Code.Aborted);

  // A key is paused and resumed; unlike revocation, disabling is undone.
  const paused = created[1];
  const { apiKey: disabled } = await r.apiKeys.disableApiKey({ id: paused.apiKey!.id });
  assert.equal(disabled?.status, ApiKeyStatus.DISABLED);
  const refused = await r.apiKeys.verifyApiKey({ key: paused.plaintextKey });
  assert.deepEqual([refused.valid, refused.code], [false, ApiKeyVerificationCode.DISABLED]);
  await r.apiKeys.enableApiKey({ id: paused.apiKey!.id });
  const resumed = await r.apiKeys.verifyApiKey({ key: paused.plaintextKey });
  assert.deepEqual([resumed.valid, resumed.code], [true, ApiKeyVerificationCode.VALID]);

  // The audit log, page by page, newest first: every change above is in it.
  const events: AuditEvent[] = [];
  pageToken = "";
  pages = 0;
  do {
    const page = await r.audit.listAuditEvents({ tenantId, pageSize: 2, pageToken });
    assert.ok(page.events.length <= 2);
    events.push(...page.events);
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken !== "" && pages < 20);
  const actions = events.map((e) => e.action);
  assert.deepEqual(actions, [
    "api_key.enabled",
    "api_key.disabled",
    "entitlement.granted",
    "api_key.revoked",
    "api_key.created",
    "api_key.created",
    "api_key.created",
    "trial.started",
    "tenant.created",
  ]);
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, "no event twice across pages");
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => BigInt(events.length - i)),
    "seq is gapless, newest first",
  );
  assert.ok(events.every((e) => e.tenantId === tenantId && e.product === "tenant-registry"));
  const filtered = await r.audit.listAuditEvents({ tenantId, action: "api_key.*" });
  assert.equal(filtered.events.length, 6);

  // The export streams the same events in the same order.
  const exported: string[] = [];
  for await (const msg of r.audit.exportAuditEvents({ tenantId })) {
    exported.push(msg.event?.id ?? "");
  }
  assert.deepEqual(exported, events.map((e) => e.id));

  const chain = await r.audit.verifyAuditChain({ tenantId });
  assert.equal(chain.ok, true);
  assert.equal(chain.eventsChecked, BigInt(events.length));
}

async function errors(r: Registry) {
  // Invalid input: InvalidArgument, and a readable violation per bad field.
  const invalid = await rejection(r.tenants.createTenant({ slug: "admin", displayName: "" }));
  assert.equal(invalid.code, Code.InvalidArgument);
  assert.deepEqual(
    fieldViolations(invalid).map((v) => v.field),
    ["slug", "display_name"],
  );
  for (const v of fieldViolations(invalid)) {
    assert.ok(v.description.length > 0, `violation of ${v.field} says why`);
  }
  assert.match(invalid.rawMessage, /slug/);

  // Missing, duplicate, wrong state.
  const missing = await rejection(r.tenants.getTenantBySlug({ slug: uniqueSlug("missing") }));
  assert.equal(missing.code, Code.NotFound);
  assert.deepEqual(fieldViolations(missing), []);

  const slug = uniqueSlug("errors");
  const { tenant } = await r.tenants.createTenant({ slug, displayName: "Errors Inc" });
  const duplicate = await rejection(r.tenants.createTenant({ slug, displayName: "Errors Again" }));
  assert.equal(duplicate.code, Code.AlreadyExists);

  await r.tenants.cancelTenant({ id: tenant!.id });
  const frozen = await rejection(r.catalog.startTrial({ tenantId: tenant!.id, product: "analytics" }));
  assert.equal(frozen.code, Code.FailedPrecondition);
}

/** The ConnectError a call rejects with; fails when it resolves. */
async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `want a ConnectError, got ${String(err)}`);
    return err;
  }
  assert.fail("the call succeeded, want an error");
}
