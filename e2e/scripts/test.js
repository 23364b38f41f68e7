// Runs the end-to-end tests: builds the server binary once, then runs every
// test file with node's test runner, each file starting the binary as it
// needs (its own port, its own database).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const e2e = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = mkdtempSync(join(tmpdir(), "tenant-registry-e2e-"));
let status = 1;
try {
  const server = join(bin, "tenant-registry");
  const build = spawnSync("go", ["build", "-o", server, "./cmd/tenant-registry"], {
    cwd: join(e2e, ".."),
    stdio: "inherit",
  });
  if (build.status !== 0) {
    throw new Error("go build ./cmd/tenant-registry failed");
  }
  const files = readdirSync(join(e2e, "test"))
    .filter((f) => f.endsWith(".test.ts"))
    .map((f) => join("test", f));
  const run = spawnSync(
    process.execPath,
    ["--import", "tsx", "--test", ...process.argv.slice(2), ...files],
    { cwd: e2e, stdio: "inherit", env: { ...process.env, TENANT_REGISTRY_BIN: server } },
  );
  status = run.status ?? 1;
} finally {
  rmSync(bin, { recursive: true, force: true });
}
process.exit(status);
