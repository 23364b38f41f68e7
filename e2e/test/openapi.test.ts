// The generated OpenAPI description (gen/openapi) against the contract as the
// client package sees it: every unary RPC is there as a JSON POST, and every
// side-effect-free one also as a GET, as the server answers them.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import type { DescService } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { ApiKeyService, AuditService, CatalogService, EntitlementService, TenantService } from "@tenant-registry/client";

const spec = readFileSync(
  join(dirname(fileURLToPath(import.meta.url)), "..", "..", "gen", "openapi", "tenantregistry.openapi.yaml"),
  "utf8",
);

/** The operations (get, post) of one path of the YAML document. */
function operations(path: string): string[] {
  const lines = spec.split("\n");
  const start = lines.indexOf(`  ${path}:`);
  if (start < 0) {
    return [];
  }
  const ops: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === "") {
      continue; // a blank line inside a multi-line description
    }
    if (!line.startsWith("    ")) {
      break; // the next path
    }
    const m = /^ {4}(get|post|put|delete|patch):$/.exec(line);
    if (m) {
      ops.push(m[1]);
    }
  }
  return ops.sort();
}

test("OpenAPI 3.1 describes every unary RPC of the contract", () => {
  assert.match(spec, /^openapi: 3\.1\.0$/m);
  const services: DescService[] = [TenantService, CatalogService, EntitlementService, ApiKeyService, AuditService];
  let unary = 0;
  for (const service of services) {
    for (const method of service.methods) {
      if (method.methodKind !== "unary") {
        continue;
      }
      unary++;
      const path = `/${service.typeName}/${method.name}`;
      const want =
        method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS ? ["get", "post"] : ["post"];
      assert.deepEqual(operations(path), want, path);
    }
  }
  assert.ok(unary >= 28, `${unary} unary RPCs`);
  assert.match(spec, /application\/json/);
  assert.match(spec, /connect\.error/, "the Connect error shape is described");
});
