// The npm package in gen/ts as a portal gets it: installed from a packed
// copy (e2e/.npmrc sets install-links), importable from its root and by file.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import * as client from "@tenant-registry/client";
import { BadRequestSchema } from "@tenant-registry/client/errors";
import { TenantService } from "@tenant-registry/client/tenantregistry/v1/tenant_pb.js";

const require = createRequire(import.meta.url);
const installed = dirname(require.resolve("@tenant-registry/client/package.json"));
const generated = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "gen", "ts", "dist", "tenantregistry", "v1");

test("the package root re-exports every generated file", () => {
  const index = readFileSync(join(installed, "index.js"), "utf8");
  const files = readdirSync(generated).filter((f) => f.endsWith("_pb.js"));
  assert.ok(files.length >= 5);
  for (const f of files) {
    assert.ok(index.includes(`./dist/tenantregistry/v1/${f}`), `index.js re-exports ${f}`);
  }
  assert.equal(client.TenantService, TenantService, "one module, whichever path imports it");
  assert.equal(client.BadRequestSchema, BadRequestSchema);
  assert.equal(BadRequestSchema.typeName, "google.rpc.BadRequest");
});

test("the installed package is a packed copy with JavaScript and declarations only", () => {
  const top = readdirSync(installed).sort();
  assert.deepEqual(top, ["README.md", "dist", "errors.d.ts", "errors.js", "index.d.ts", "index.js", "package.json"]);
  const shipped = readdirSync(join(installed, "dist", "tenantregistry", "v1"));
  assert.ok(shipped.every((f) => f.endsWith(".js") || f.endsWith(".d.ts")), shipped.join(" "));
  assert.deepEqual(
    shipped.sort(),
    readdirSync(generated).sort(),
    "the installed copy matches gen/ts/dist (run npm ci in e2e after regenerating)",
  );
});
