// The portal in a real browser: a page built from the generated client with
// connect-web (bundled by esbuild), served from an origin other than the
// API's, run in headless Chromium. It calls the API over Connect (POST, GET,
// server streaming) and gRPC-Web with an Authorization header, so CORS
// preflights, exposed headers and gRPC-Web trailers are exercised for real;
// the same page from an origin not in CORS_ALLOWED_ORIGINS is refused.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { TenantService, TenantStatus } from "@tenant-registry/client";
import { build } from "esbuild";
import { chromium, type Browser } from "playwright-core";

import type { StepResult, FetchRecord } from "../browser/page.js";
import { freePort, sqliteDatabase, startServer, uniqueSlug, type RunningServer, type TestDatabase } from "../lib/server.js";

const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const here = dirname(fileURLToPath(import.meta.url));

/** Serves the page (index.html and the bundle) on 127.0.0.1:port. */
async function servePage(port: number, bundle: string): Promise<Server> {
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>portal</title></head>
<body><pre id="results"></pre><script type="module" src="/page.js"></script></body></html>`;
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://page").pathname;
    if (path === "/") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(html);
    } else if (path === "/page.js") {
      res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8" }).end(bundle);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return server;
}

interface PageRun {
  steps: Record<string, StepResult>;
  fetches: FetchRecord[];
  /** CORS preflights Chromium sent, seen through the DevTools protocol. */
  preflights: { url: string; headers: Record<string, string> }[];
}

// Without Chromium the test is skipped, except with CI=true, where it fails.
function chromiumMissing(): string | undefined {
  if (existsSync(chromiumPath)) {
    return undefined;
  }
  const reason = `no Chromium at ${chromiumPath} (install Debian's chromium package or set CHROMIUM_PATH)`;
  if (process.env.CI === "true") {
    throw new Error(`${reason}; CI=true: the browser test is required`);
  }
  return reason;
}

describe("browser (Chromium, connect-web)", { skip: chromiumMissing() }, () => {
  let db: TestDatabase;
  let api: RunningServer;
  let browser: Browser;
  const pages: Server[] = [];
  let allowedOrigin = "";
  let deniedOrigin = "";

  before(async () => {
    const bundled = await build({
      entryPoints: [join(here, "..", "browser", "page.ts")],
      bundle: true,
      format: "esm",
      platform: "browser",
      target: "es2022",
      write: false,
      logLevel: "silent",
    });
    const bundle = bundled.outputFiles[0].text;
    const [allowedPort, deniedPort] = [await freePort(), await freePort()];
    pages.push(await servePage(allowedPort, bundle), await servePage(deniedPort, bundle));
    allowedOrigin = `http://127.0.0.1:${allowedPort}`;
    deniedOrigin = `http://127.0.0.1:${deniedPort}`;

    db = sqliteDatabase();
    api = await startServer({ DATABASE_URL: db.url, CORS_ALLOWED_ORIGINS: allowedOrigin });
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
      ],
    });
  });

  after(async () => {
    await browser?.close();
    for (const p of pages) {
      p.closeAllConnections();
      await new Promise((resolve) => p.close(resolve));
    }
    await api?.stop();
    await db?.drop();
  });

  async function runPage(origin: string, slug: string): Promise<PageRun> {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const preflights: PageRun["preflights"] = [];
      const cdp = await context.newCDPSession(page);
      await cdp.send("Network.enable");
      cdp.on("Network.requestWillBeSent", (e) => {
        if (e.request.method === "OPTIONS") {
          preflights.push({ url: e.request.url, headers: e.request.headers });
        }
      });
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      const query = new URLSearchParams({ api: api.url, slug, token: "portal-user-access-token" });
      await page.goto(`${origin}/?${query}`);
      await page.waitForFunction(() => window.portalResults !== undefined, undefined, { timeout: 30_000 });
      const results = await page.evaluate(() => window.portalResults!);
      if (process.env.E2E_DEBUG) {
        console.log(origin, JSON.stringify(results, null, 1));
      }
      assert.deepEqual(errors, [], "the page threw");
      // The DOM shows the same results the test reads.
      assert.match((await page.textContent("#results")) ?? "", /connect-post/);
      return {
        steps: Object.fromEntries(results.steps.map((s) => [s.name, s])),
        fetches: results.fetches,
        preflights,
      };
    } finally {
      await context.close();
    }
  }

  test("an allowed origin calls every protocol with a bearer token", async () => {
    const slug = uniqueSlug("browser");
    const run = await runPage(allowedOrigin, slug);
    const { steps } = run;
    const failed = Object.values(steps).filter((s) => !s.ok && !s.name.endsWith("-invalid") && !s.name.endsWith("-not-found"));
    assert.deepEqual(failed, [], "calls that should succeed");

    // Connect: a POST for the change, a GET for the read.
    const id = steps["connect-post"].data?.id;
    assert.equal(steps["connect-post"].data?.status, TenantStatus.TRIAL);
    assert.equal(steps["connect-get"].data?.id, id);
    const read = run.fetches.find((f) => f.url.includes(".TenantService/GetTenantBySlug") && f.url.includes("connect=v1"));
    assert.equal(read?.method, "GET", "Connect reads go out as GET");
    assert.equal(read?.status, 200);
    const create = run.fetches.find((f) => f.url.endsWith(".TenantService/CreateTenant"));
    assert.equal(create?.method, "POST");

    // Connect errors: code and field violations from the JSON body.
    assert.equal(steps["connect-invalid"].code, Code[Code.InvalidArgument]);
    assert.deepEqual(steps["connect-invalid"].violations?.map((v) => v.split(":")[0]), ["slug", "display_name"]);

    // Server streaming over fetch.
    assert.deepEqual(steps["connect-stream"].data?.actions, ["tenant.created"]);

    // gRPC-Web: the answer's status comes in a trailer in the body...
    assert.equal(steps["grpc-web"].data?.id, id);
    // ...and an error without a body comes in Grpc-Status, Grpc-Message and
    // Grpc-Status-Details-Bin headers, which the page can read only because
    // CORS exposes them.
    assert.equal(steps["grpc-web-not-found"].code, Code[Code.NotFound]);
    assert.match(steps["grpc-web-not-found"].message ?? "", /tenant/i);
    const notFound = run.fetches.find((f) => f.url.endsWith(".TenantService/GetTenantBySlug") && f.headers["grpc-status"] === "5");
    assert.ok(notFound, `the page read Grpc-Status: ${JSON.stringify(run.fetches.map((f) => [f.url, f.headers]))}`);
    assert.ok(notFound.headers["grpc-message"], "the page read Grpc-Message");
    assert.equal(steps["grpc-web-invalid"].code, Code[Code.InvalidArgument]);
    assert.deepEqual(steps["grpc-web-invalid"].violations?.map((v) => v.split(":")[0]), ["slug", "display_name"]);

    // Every call was preflighted, asking for Authorization.
    assert.ok(run.preflights.length >= 3, `preflights seen: ${run.preflights.length}`);
    for (const p of run.preflights) {
      const requested = p.headers["Access-Control-Request-Headers"] ?? p.headers["access-control-request-headers"] ?? "";
      assert.match(requested, /authorization/, `preflight of ${p.url}`);
    }
  });

  test("an origin not in CORS_ALLOWED_ORIGINS is refused", async () => {
    const slug = uniqueSlug("refused");
    const run = await runPage(deniedOrigin, slug);
    for (const s of Object.values(run.steps)) {
      assert.equal(s.ok, false, `${s.name} must fail`);
      assert.ok(
        s.code === Code[Code.Unknown] || s.code === Code[Code.Unavailable],
        `${s.name}: want a network error (unknown or unavailable), got ${s.code}: ${s.message}`,
      );
    }
    assert.deepEqual(run.fetches, [], "no response reached the page");
    assert.ok(run.preflights.length > 0, "the browser asked, and the server said no");

    // The refused preflight kept the change from being sent at all.
    const tenants = createClient(TenantService, createConnectTransport({ baseUrl: api.url, httpVersion: "1.1" }));
    const err = await tenants.getTenantBySlug({ slug }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConnectError && err.code === Code.NotFound, "the refused page created no tenant");
  });
});
