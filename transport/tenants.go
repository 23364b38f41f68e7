package transport

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// TenantServer serves tenantregistry.v1.TenantService.
type TenantServer struct{ tenants *domain.TenantService }

var _ tenantregistryv1connect.TenantServiceHandler = (*TenantServer)(nil)

// NewTenantServer returns the TenantService handler over the domain service.
func NewTenantServer(tenants *domain.TenantService) *TenantServer {
	return &TenantServer{tenants: tenants}
}

// CreateTenant creates a TRIAL tenant.
func (s *TenantServer) CreateTenant(ctx context.Context, req *v1.CreateTenantRequest) (*v1.CreateTenantResponse, error) {
	t, err := s.tenants.Create(ctx, domain.CreateTenant{
		Slug: req.GetSlug(), DisplayName: req.GetDisplayName(), ExternalID: req.GetExternalId(), Metadata: req.GetMetadata(),
	})
	if err != nil {
		return nil, err
	}
	return &v1.CreateTenantResponse{Tenant: tenantProto(t)}, nil
}

// GetTenant returns a tenant by id.
func (s *TenantServer) GetTenant(ctx context.Context, req *v1.GetTenantRequest) (*v1.GetTenantResponse, error) {
	t, err := s.tenants.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &v1.GetTenantResponse{Tenant: tenantProto(t)}, nil
}

// GetTenantBySlug returns a tenant by slug.
func (s *TenantServer) GetTenantBySlug(ctx context.Context, req *v1.GetTenantBySlugRequest) (*v1.GetTenantBySlugResponse, error) {
	t, err := s.tenants.GetBySlug(ctx, req.GetSlug())
	if err != nil {
		return nil, err
	}
	return &v1.GetTenantBySlugResponse{Tenant: tenantProto(t)}, nil
}

// ListTenants returns one page of tenants.
func (s *TenantServer) ListTenants(ctx context.Context, req *v1.ListTenantsRequest) (*v1.ListTenantsResponse, error) {
	status, err := tenantStatusDomain("status", req.GetStatus())
	if err != nil {
		return nil, err
	}
	page, err := s.tenants.List(ctx, domain.TenantFilter{Status: status, Query: req.GetQuery()},
		domain.PageRequest{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	out := &v1.ListTenantsResponse{NextPageToken: page.NextPageToken, Tenants: make([]*v1.Tenant, len(page.Items))}
	for i, t := range page.Items {
		out.Tenants[i] = tenantProto(t)
	}
	return out, nil
}

// UpdateTenant changes a tenant's display name and metadata.
func (s *TenantServer) UpdateTenant(ctx context.Context, req *v1.UpdateTenantRequest) (*v1.UpdateTenantResponse, error) {
	t, err := s.tenants.Update(ctx, domain.UpdateTenant{
		ID: req.GetId(), DisplayName: req.DisplayName, Metadata: req.GetMetadata(),
		Mask: maskIn(req.GetUpdateMask()), Etag: req.GetEtag(),
	})
	if err != nil {
		return nil, err
	}
	return &v1.UpdateTenantResponse{Tenant: tenantProto(t)}, nil
}

// ActivateTenant moves a tenant to ACTIVE.
func (s *TenantServer) ActivateTenant(ctx context.Context, req *v1.ActivateTenantRequest) (*v1.ActivateTenantResponse, error) {
	t, err := s.tenants.Activate(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &v1.ActivateTenantResponse{Tenant: tenantProto(t)}, nil
}

// CancelTenant freezes a tenant.
func (s *TenantServer) CancelTenant(ctx context.Context, req *v1.CancelTenantRequest) (*v1.CancelTenantResponse, error) {
	t, err := s.tenants.Cancel(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &v1.CancelTenantResponse{Tenant: tenantProto(t)}, nil
}

var tenantStatuses = map[domain.TenantStatus]v1.TenantStatus{
	domain.TenantTrial:  v1.TenantStatus_TENANT_STATUS_TRIAL,
	domain.TenantActive: v1.TenantStatus_TENANT_STATUS_ACTIVE,
	domain.TenantFrozen: v1.TenantStatus_TENANT_STATUS_FROZEN,
}

// tenantStatusDomain converts a status filter; UNSPECIFIED means any, and
// a number outside the enum (proto enums are open) is invalid input.
func tenantStatusDomain(field string, s v1.TenantStatus) (domain.TenantStatus, error) {
	if s == v1.TenantStatus_TENANT_STATUS_UNSPECIFIED {
		return "", nil
	}
	for d, p := range tenantStatuses {
		if p == s {
			return d, nil
		}
	}
	return "", domain.Violations{{Field: field, Description: "must be TENANT_STATUS_TRIAL, TENANT_STATUS_ACTIVE or TENANT_STATUS_FROZEN"}}.Err()
}

func tenantProto(t *domain.Tenant) *v1.Tenant {
	return &v1.Tenant{
		Id: t.ID, Slug: t.Slug, DisplayName: t.DisplayName, Status: tenantStatuses[t.Status],
		ExternalId: t.ExternalID, Metadata: t.Metadata, Etag: t.Etag(),
		CreateTime: timestamppb.New(t.CreateTime), UpdateTime: timestamppb.New(t.UpdateTime),
	}
}
