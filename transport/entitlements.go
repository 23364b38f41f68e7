package transport

import (
	"context"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// EntitlementServer serves tenantregistry.v1.EntitlementService.
type EntitlementServer struct{ entitlements *domain.EntitlementService }

var _ tenantregistryv1connect.EntitlementServiceHandler = (*EntitlementServer)(nil)

// NewEntitlementServer returns the EntitlementService handler over the
// domain service.
func NewEntitlementServer(entitlements *domain.EntitlementService) *EntitlementServer {
	return &EntitlementServer{entitlements: entitlements}
}

// ListEntitlements returns every entitlement of a tenant, as read now.
func (s *EntitlementServer) ListEntitlements(ctx context.Context, req *v1.ListEntitlementsRequest) (*v1.ListEntitlementsResponse, error) {
	ents, err := s.entitlements.List(ctx, req.GetTenantId())
	if err != nil {
		return nil, err
	}
	out := &v1.ListEntitlementsResponse{Entitlements: make([]*v1.Entitlement, len(ents))}
	for i, e := range ents {
		out.Entitlements[i] = entitlementProto(e)
	}
	return out, nil
}

// CheckEntitlement says whether a tenant may use a product now.
func (s *EntitlementServer) CheckEntitlement(ctx context.Context, req *v1.CheckEntitlementRequest) (*v1.CheckEntitlementResponse, error) {
	c, err := s.entitlements.Check(ctx, req.GetTenantId(), req.GetProduct())
	if err != nil {
		return nil, err
	}
	// The same answer serves many calls: it is converted, and encoded,
	// once, and no layer changes a response once its handler returned it.
	return c.Rendered(checkProto).(*v1.CheckEntitlementResponse), nil
}

func checkProto(c *domain.Check) any {
	out := &v1.CheckEntitlementResponse{Entitled: c.Entitled, Reason: checkReasons[c.Reason], Limits: c.Limits}
	if c.Entitlement != nil {
		out.Entitlement = entitlementProto(c.Entitlement)
	}
	return shareAnswer(out)
}

// GrantEntitlement makes a tenant's entitlement for a product ACTIVE.
func (s *EntitlementServer) GrantEntitlement(ctx context.Context, req *v1.GrantEntitlementRequest) (*v1.GrantEntitlementResponse, error) {
	var v domain.Violations
	expire := timeIn(&v, "expire_time", req.GetExpireTime())
	if err := v.Err(); err != nil {
		return nil, err
	}
	e, err := s.entitlements.Grant(ctx, domain.GrantEntitlement{
		TenantID: req.GetTenantId(), Product: req.GetProduct(), ExpireTime: expire,
		Limits: req.GetLimits(), Etag: req.GetEtag(),
	})
	if err != nil {
		return nil, err
	}
	return &v1.GrantEntitlementResponse{Entitlement: entitlementProto(e)}, nil
}

// RevokeEntitlement revokes a tenant's entitlement for a product.
func (s *EntitlementServer) RevokeEntitlement(ctx context.Context, req *v1.RevokeEntitlementRequest) (*v1.RevokeEntitlementResponse, error) {
	e, err := s.entitlements.Revoke(ctx, req.GetTenantId(), req.GetProduct(), req.GetEtag())
	if err != nil {
		return nil, err
	}
	return &v1.RevokeEntitlementResponse{Entitlement: entitlementProto(e)}, nil
}

var entitlementStatuses = map[domain.EntitlementStatus]v1.EntitlementStatus{
	domain.EntitlementTrial:   v1.EntitlementStatus_ENTITLEMENT_STATUS_TRIAL,
	domain.EntitlementActive:  v1.EntitlementStatus_ENTITLEMENT_STATUS_ACTIVE,
	domain.EntitlementExpired: v1.EntitlementStatus_ENTITLEMENT_STATUS_EXPIRED,
	domain.EntitlementRevoked: v1.EntitlementStatus_ENTITLEMENT_STATUS_REVOKED,
}

var entitlementSources = map[domain.EntitlementSource]v1.EntitlementSource{
	domain.SourceTrial: v1.EntitlementSource_ENTITLEMENT_SOURCE_TRIAL,
	domain.SourceGrant: v1.EntitlementSource_ENTITLEMENT_SOURCE_GRANT,
}

var checkReasons = map[domain.CheckReason]v1.EntitlementCheckReason{
	domain.CheckOK:             v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_OK,
	domain.CheckNoEntitlement:  v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_NO_ENTITLEMENT,
	domain.CheckExpired:        v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_EXPIRED,
	domain.CheckRevoked:        v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_REVOKED,
	domain.CheckTenantFrozen:   v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_TENANT_FROZEN,
	domain.CheckUnknownProduct: v1.EntitlementCheckReason_ENTITLEMENT_CHECK_REASON_UNKNOWN_PRODUCT,
}

// entitlementProto converts an entitlement as read (its status computed).
func entitlementProto(e *domain.Entitlement) *v1.Entitlement {
	return &v1.Entitlement{
		TenantId: e.TenantID, Product: e.Product, Status: entitlementStatuses[e.Status],
		Source: entitlementSources[e.Source], StartTime: timeOut(e.StartTime), ExpireTime: timeOut(e.ExpireTime),
		Limits: e.EffectiveLimits(), LimitOverrides: e.Limits, Etag: e.Etag(),
	}
}
