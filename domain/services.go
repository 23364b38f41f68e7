package domain

// Services are the registry's use cases over one store. They share one
// guard, so that the bounds on recorded refusals hold per replica rather
// than per service.
type Services struct {
	Tenants      *TenantService
	Catalog      *CatalogService
	Entitlements *EntitlementService
	ApiKeys      *ApiKeyService
	Audit        *AuditService
	Changes      *ChangeService
}

// NewServices returns every service over store: keys verify through
// verifier; the change stream tells what feed delivers; the audit log is
// kept as audit says.
func NewServices(store Store, now Clock, verifier *KeyVerifier, feed *ChangeFeed, audit AuditSettings) Services {
	g := newGuard(store, now)
	return Services{
		Tenants:      &TenantService{guard: g},
		Catalog:      &CatalogService{guard: g},
		Entitlements: &EntitlementService{guard: g, cache: verifier.Cache()},
		ApiKeys:      &ApiKeyService{guard: g, verifier: verifier},
		Audit:        &AuditService{guard: g, keys: audit.Checkpoints, retention: audit.RetentionDays, singles: &auditGroup{store: store}},
		Changes:      &ChangeService{guard: g, feed: feed},
	}
}
