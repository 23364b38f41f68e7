// The browser page of the end-to-end test: a tiny portal built from the
// generated client with connect-web. It runs a fixed list of calls against
// the API named by ?api=, from its own origin, and publishes what happened
// in window.portalResults and in the DOM for the test to read.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuditService, TenantService, fieldViolations } from "@tenant-registry/client";

export interface StepResult {
  name: string;
  ok: boolean;
  /** Code name of the ConnectError, when the call failed. */
  code?: string;
  message?: string;
  violations?: string[];
  data?: Record<string, unknown>;
}

export interface FetchRecord {
  method: string;
  url: string;
  status: number;
  /** Response headers as the page's script can read them (CORS-filtered). */
  headers: Record<string, string>;
}

declare global {
  interface Window {
    portalResults?: { steps: StepResult[]; fetches: FetchRecord[] };
  }
}

const params = new URLSearchParams(location.search);
const baseUrl = params.get("api") ?? "";
const slug = params.get("slug") ?? "";
const token = params.get("token") ?? "";

// Records every request the transports send and the response headers the
// browser lets the page see, to prove GET reads and exposed headers.
const fetches: FetchRecord[] = [];
const recordingFetch: typeof fetch = async (input, init) => {
  const req = new Request(input, init);
  const res = await fetch(req);
  const headers: Record<string, string> = {};
  res.headers.forEach((value, name) => (headers[name] = value));
  fetches.push({ method: req.method, url: req.url, status: res.status, headers });
  return res;
};

// The user's token goes in the Authorization header, which makes every call
// a CORS preflighted one.
const auth: Interceptor = (next) => (req) => {
  req.header.set("Authorization", `Bearer ${token}`);
  return next(req);
};

const connect = createConnectTransport({
  baseUrl,
  useHttpGet: true,
  interceptors: [auth],
  fetch: recordingFetch,
});
const grpcWeb = createGrpcWebTransport({ baseUrl, interceptors: [auth], fetch: recordingFetch });

const tenantsConnect = createClient(TenantService, connect);
const auditConnect = createClient(AuditService, connect);
const tenantsGrpcWeb = createClient(TenantService, grpcWeb);

const steps: StepResult[] = [];

async function step(name: string, fn: () => Promise<Record<string, unknown>>) {
  try {
    steps.push({ name, ok: true, data: await fn() });
  } catch (e) {
    const err = ConnectError.from(e);
    steps.push({
      name,
      ok: false,
      code: Code[err.code],
      message: err.rawMessage,
      violations: fieldViolations(err).map((v) => `${v.field}: ${v.description}`),
    });
  }
}

async function main() {
  let tenantId = "";
  await step("connect-post", async () => {
    const { tenant } = await tenantsConnect.createTenant({ slug, displayName: "Browser Portal Co" });
    tenantId = tenant?.id ?? "";
    return { id: tenantId, status: tenant?.status };
  });
  await step("connect-get", async () => {
    const { tenant } = await tenantsConnect.getTenantBySlug({ slug });
    return { id: tenant?.id };
  });
  await step("connect-invalid", async () => {
    await tenantsConnect.createTenant({ slug: "admin", displayName: "" });
    return {};
  });
  await step("connect-stream", async () => {
    const actions: string[] = [];
    for await (const { event } of auditConnect.exportAuditEvents({ tenantId })) {
      actions.push(event?.action ?? "");
    }
    return { actions };
  });
  await step("grpc-web", async () => {
    const { tenant } = await tenantsGrpcWeb.getTenantBySlug({ slug });
    return { id: tenant?.id };
  });
  await step("grpc-web-not-found", async () => {
    await tenantsGrpcWeb.getTenantBySlug({ slug: `${slug}-missing` });
    return {};
  });
  await step("grpc-web-invalid", async () => {
    await tenantsGrpcWeb.createTenant({ slug: "admin", displayName: "" });
    return {};
  });
}

void main().finally(() => {
  window.portalResults = { steps, fetches };
  const out = document.getElementById("results");
  if (out) {
    out.textContent = JSON.stringify(window.portalResults, null, 2);
  }
});
