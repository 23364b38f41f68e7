// The registry's clients as a portal's backend creates them: connect-es over
// a transport, with the user's bearer token added by an interceptor.
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  ApiKeyService,
  AuditService,
  CatalogService,
  EntitlementService,
  TenantService,
} from "@tenant-registry/client";

export interface Registry {
  tenants: Client<typeof TenantService>;
  catalog: Client<typeof CatalogService>;
  entitlements: Client<typeof EntitlementService>;
  apiKeys: Client<typeof ApiKeyService>;
  audit: Client<typeof AuditService>;
}

export function registry(transport: Transport): Registry {
  return {
    tenants: createClient(TenantService, transport),
    catalog: createClient(CatalogService, transport),
    entitlements: createClient(EntitlementService, transport),
    apiKeys: createClient(ApiKeyService, transport),
    audit: createClient(AuditService, transport),
  };
}

/** Sends `Authorization: Bearer <token>` with every call. */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("Authorization", `Bearer ${token}`);
    return next(req);
  };
}
