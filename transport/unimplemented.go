package transport

import "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"

// The services below are part of the contract but not built yet: every RPC
// answers Unimplemented until its capability lands. They are the only
// placeholders in the service.
type (
	// CatalogUnimplemented answers Unimplemented for CatalogService.
	CatalogUnimplemented struct {
		tenantregistryv1connect.UnimplementedCatalogServiceHandler
	}
	// EntitlementUnimplemented answers Unimplemented for EntitlementService.
	EntitlementUnimplemented struct {
		tenantregistryv1connect.UnimplementedEntitlementServiceHandler
	}
	// ApiKeyUnimplemented answers Unimplemented for ApiKeyService.
	ApiKeyUnimplemented struct {
		tenantregistryv1connect.UnimplementedApiKeyServiceHandler
	}
)
