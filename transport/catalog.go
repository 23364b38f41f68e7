package transport

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// CatalogServer serves tenantregistry.v1.CatalogService.
type CatalogServer struct{ catalog *domain.CatalogService }

var _ tenantregistryv1connect.CatalogServiceHandler = (*CatalogServer)(nil)

// NewCatalogServer returns the CatalogService handler over the domain service.
func NewCatalogServer(catalog *domain.CatalogService) *CatalogServer {
	return &CatalogServer{catalog: catalog}
}

// ListProducts returns the whole catalog, by key.
func (s *CatalogServer) ListProducts(ctx context.Context, _ *v1.ListProductsRequest) (*v1.ListProductsResponse, error) {
	products, err := s.catalog.ListProducts(ctx)
	if err != nil {
		return nil, err
	}
	out := &v1.ListProductsResponse{Products: make([]*v1.Product, len(products))}
	for i, p := range products {
		out.Products[i] = productProto(p)
	}
	return out, nil
}

// CreateProduct adds a product to the catalog.
func (s *CatalogServer) CreateProduct(ctx context.Context, req *v1.CreateProductRequest) (*v1.CreateProductResponse, error) {
	p, err := s.catalog.CreateProduct(ctx, domain.CreateProduct{
		Key: req.GetKey(), DisplayName: req.GetDisplayName(), Description: req.GetDescription(),
		TrialDays: intIn(req.TrialDays), DefaultLimits: req.GetDefaultLimits(), TrialLimits: req.GetTrialLimits(),
	})
	if err != nil {
		return nil, err
	}
	return &v1.CreateProductResponse{Product: productProto(p)}, nil
}

// UpdateProduct changes the fields of a product that the request sets.
func (s *CatalogServer) UpdateProduct(ctx context.Context, req *v1.UpdateProductRequest) (*v1.UpdateProductResponse, error) {
	p, err := s.catalog.UpdateProduct(ctx, domain.UpdateProduct{
		Key: req.GetKey(), DisplayName: req.DisplayName, Description: req.Description,
		TrialDays: intIn(req.TrialDays), DefaultLimits: req.GetDefaultLimits(), TrialLimits: req.GetTrialLimits(),
		Mask: maskIn(req.GetUpdateMask()), Etag: req.GetEtag(),
	})
	if err != nil {
		return nil, err
	}
	return &v1.UpdateProductResponse{Product: productProto(p)}, nil
}

// RequestProduct stores a tenant's request for a product.
func (s *CatalogServer) RequestProduct(ctx context.Context, req *v1.RequestProductRequest) (*v1.RequestProductResponse, error) {
	r, err := s.catalog.RequestProduct(ctx, domain.RequestProduct{
		TenantID: req.GetTenantId(), Product: req.GetProduct(), Note: req.GetNote(),
	})
	if err != nil {
		return nil, err
	}
	return &v1.RequestProductResponse{Request: productRequestProto(r)}, nil
}

// ListProductRequests returns one page of product requests, oldest first.
func (s *CatalogServer) ListProductRequests(ctx context.Context, req *v1.ListProductRequestsRequest) (*v1.ListProductRequestsResponse, error) {
	status, err := productRequestStatusDomain("status", req.GetStatus())
	if err != nil {
		return nil, err
	}
	page, err := s.catalog.ListProductRequests(ctx, status,
		domain.PageRequest{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	out := &v1.ListProductRequestsResponse{
		NextPageToken: page.NextPageToken, Requests: make([]*v1.ProductRequest, len(page.Items)),
	}
	for i, r := range page.Items {
		out.Requests[i] = productRequestProto(r)
	}
	return out, nil
}

// StartTrial starts a tenant's self-serve trial of a product.
func (s *CatalogServer) StartTrial(ctx context.Context, req *v1.StartTrialRequest) (*v1.StartTrialResponse, error) {
	e, err := s.catalog.StartTrial(ctx, req.GetTenantId(), req.GetProduct())
	if err != nil {
		return nil, err
	}
	return &v1.StartTrialResponse{Entitlement: entitlementProto(e)}, nil
}

// intIn converts an optional proto int32; int32 always fits an int.
func intIn(n *int32) *int {
	if n == nil {
		return nil
	}
	v := int(*n)
	return &v
}

var productRequestStatuses = map[domain.ProductRequestStatus]v1.ProductRequestStatus{
	domain.RequestOpen:   v1.ProductRequestStatus_PRODUCT_REQUEST_STATUS_OPEN,
	domain.RequestClosed: v1.ProductRequestStatus_PRODUCT_REQUEST_STATUS_CLOSED,
}

// productRequestStatusDomain converts a status filter; UNSPECIFIED means
// any, and a number outside the enum is invalid input.
func productRequestStatusDomain(field string, s v1.ProductRequestStatus) (domain.ProductRequestStatus, error) {
	if s == v1.ProductRequestStatus_PRODUCT_REQUEST_STATUS_UNSPECIFIED {
		return "", nil
	}
	for d, p := range productRequestStatuses {
		if p == s {
			return d, nil
		}
	}
	return "", domain.Violations{{Field: field, Description: "must be PRODUCT_REQUEST_STATUS_OPEN or PRODUCT_REQUEST_STATUS_CLOSED"}}.Err()
}

func productProto(p *domain.Product) *v1.Product {
	return &v1.Product{
		Key: p.Key, DisplayName: p.DisplayName, Description: p.Description, TrialDays: int32(p.TrialDays),
		CreateTime: timestamppb.New(p.CreateTime), UpdateTime: timestamppb.New(p.UpdateTime),
		DefaultLimits: p.DefaultLimits, TrialLimits: p.TrialLimits, Etag: p.Etag(),
	}
}

func productRequestProto(r *domain.ProductRequest) *v1.ProductRequest {
	return &v1.ProductRequest{
		Id: r.ID, TenantId: r.TenantID, Product: r.Product, Note: r.Note,
		Status: productRequestStatuses[r.Status], RequestedBy: r.RequestedBy, CreateTime: timestamppb.New(r.CreateTime),
	}
}
