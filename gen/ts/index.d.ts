// Types of index.js: every generated file of tenantregistry.v1.
export * from "./dist/tenantregistry/v1/api_key_pb.js";
export * from "./dist/tenantregistry/v1/audit_pb.js";
export * from "./dist/tenantregistry/v1/change_pb.js";
export * from "./dist/tenantregistry/v1/catalog_pb.js";
export * from "./dist/tenantregistry/v1/entitlement_pb.js";
export * from "./dist/tenantregistry/v1/tenant_pb.js";
export * from "./errors.js";
