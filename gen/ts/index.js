// Every generated file of tenantregistry.v1, so that a portal imports the
// services and messages from the package root. A test in e2e/ fails when a
// generated file is missing here.
export * from "./dist/tenantregistry/v1/api_key_pb.js";
export * from "./dist/tenantregistry/v1/audit_pb.js";
export * from "./dist/tenantregistry/v1/change_pb.js";
export * from "./dist/tenantregistry/v1/catalog_pb.js";
export * from "./dist/tenantregistry/v1/entitlement_pb.js";
export * from "./dist/tenantregistry/v1/tenant_pb.js";
export * from "./errors.js";
