// Starts the real tenant-registry binary for a test, the way it is deployed:
// configured through its environment, on a free loopback port, over a fresh
// SQLite file or a fresh PostgreSQL database.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export interface RunningServer {
  /** Base URL, for example http://127.0.0.1:40123. */
  url: string;
  /** Everything the server wrote to stdout and stderr so far. */
  logs(): string;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1, for a server to listen on next. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", resolve);
  });
  const address = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  if (address === null || typeof address === "string") {
    throw new Error("no port");
  }
  return address.port;
}

/**
 * The server binary: the one scripts/test.js built for this run, or one
 * built now when a test file is run on its own.
 */
let built: string | undefined;
function binary(): string {
  if (process.env.TENANT_REGISTRY_BIN) {
    return process.env.TENANT_REGISTRY_BIN;
  }
  if (built === undefined) {
    const dir = mkdtempSync(join(tmpdir(), "tenant-registry-e2e-"));
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
    built = join(dir, "tenant-registry");
    const res = spawnSync("go", ["build", "-o", built, "./cmd/tenant-registry"], {
      cwd: repoRoot,
      stdio: "inherit",
    });
    if (res.status !== 0) {
      throw new Error("go build ./cmd/tenant-registry failed");
    }
  }
  return built;
}

/**
 * Starts the server with env (DATABASE_URL, CORS_ALLOWED_ORIGINS, ...) on a
 * free port and resolves once /readyz answers 200.
 */
export async function startServer(env: Record<string, string>): Promise<RunningServer> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(binary(), [], {
    cwd: repoRoot,
    env: { ...process.env, APP_ENV: "dev", LOG_LEVEL: "debug", ...env, ADDR: `127.0.0.1:${port}` },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (b: Buffer) => (output += b.toString()));
  child.stderr.on("data", (b: Buffer) => (output += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
  };

  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`the server exited with ${child.exitCode} before it was ready:\n${output}`);
    }
    try {
      const res = await fetch(`${url}/readyz`);
      if (res.status === 200) {
        break;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the server was not ready within 60 s:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { url, logs: () => output, stop };
}

/** A throwaway database for one server. */
export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/** A fresh SQLite file in a temporary folder. */
export function sqliteDatabase(): TestDatabase {
  const dir = mkdtempSync(join(tmpdir(), "tenant-registry-e2e-db-"));
  return {
    url: `sqlite:${join(dir, "registry.db")}`,
    drop: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Where the tests find PostgreSQL, as the Go tests do. */
const adminURL =
  process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

function psql(sql: string): { ok: boolean; output: string } {
  const res = spawnSync("psql", [adminURL, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], {
    encoding: "utf8",
    timeout: 30_000,
  });
  return { ok: res.status === 0, output: `${res.error ?? ""}${res.stdout ?? ""}${res.stderr ?? ""}` };
}

/**
 * Why PostgreSQL cannot be used here, or undefined when it can. Tests skip
 * their PostgreSQL half on a reason, except with CI=true, where a missing
 * PostgreSQL is a failure.
 */
export function postgresUnavailable(): string | undefined {
  const res = psql("SELECT 1");
  if (res.ok) {
    return undefined;
  }
  const reason = `PostgreSQL at ${adminURL} is not reachable with psql: ${res.output.trim()}`;
  if (process.env.CI === "true") {
    throw new Error(`${reason} (CI=true: PostgreSQL is required)`);
  }
  return reason;
}

/** A fresh PostgreSQL database on the server at TEST_DATABASE_URL. */
export function postgresDatabase(): TestDatabase {
  const name = `tenant_registry_e2e_${randomBytes(6).toString("hex")}`;
  const created = psql(`CREATE DATABASE ${name}`);
  if (!created.ok) {
    throw new Error(`CREATE DATABASE ${name}: ${created.output}`);
  }
  const url = new URL(adminURL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const dropped = psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      if (!dropped.ok) {
        throw new Error(`DROP DATABASE ${name}: ${dropped.output}`);
      }
    },
  };
}

/** A slug no other test uses. */
export function uniqueSlug(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}
