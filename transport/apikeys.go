package transport

import (
	"context"
	"strconv"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// ApiKeyServer serves tenantregistry.v1.ApiKeyService.
type ApiKeyServer struct {
	keys *domain.ApiKeyService
	now  domain.Clock
}

var _ tenantregistryv1connect.ApiKeyServiceHandler = (*ApiKeyServer)(nil)

// NewApiKeyServer returns the ApiKeyService handler.
func NewApiKeyServer(keys *domain.ApiKeyService, now domain.Clock) *ApiKeyServer {
	return &ApiKeyServer{keys: keys, now: now}
}

// CreateApiKey issues a key; its plaintext is in this answer only.
func (s *ApiKeyServer) CreateApiKey(ctx context.Context, req *v1.CreateApiKeyRequest) (*v1.CreateApiKeyResponse, error) {
	var v domain.Violations
	expire := timeIn(&v, "expire_time", req.GetExpireTime())
	if err := v.Err(); err != nil {
		return nil, err
	}
	k, plaintext, err := s.keys.Create(ctx, domain.CreateApiKey{
		TenantID: req.GetTenantId(), Name: req.GetName(), Scopes: req.GetScopes(), ExpireTime: expire,
	})
	if err != nil {
		return nil, err
	}
	return &v1.CreateApiKeyResponse{ApiKey: s.apiKeyOut(k), PlaintextKey: plaintext}, nil
}

// ListApiKeys returns one page of a tenant's keys (metadata only).
func (s *ApiKeyServer) ListApiKeys(ctx context.Context, req *v1.ListApiKeysRequest) (*v1.ListApiKeysResponse, error) {
	page, err := s.keys.List(ctx, req.GetTenantId(), domain.PageRequest{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	res := &v1.ListApiKeysResponse{NextPageToken: page.NextPageToken, ApiKeys: make([]*v1.ApiKey, len(page.Items))}
	for i, k := range page.Items {
		res.ApiKeys[i] = s.apiKeyOut(k)
	}
	return res, nil
}

// GetApiKey returns a key's metadata.
func (s *ApiKeyServer) GetApiKey(ctx context.Context, req *v1.GetApiKeyRequest) (*v1.GetApiKeyResponse, error) {
	k, err := s.keys.Get(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &v1.GetApiKeyResponse{ApiKey: s.apiKeyOut(k)}, nil
}

// RevokeApiKey revokes a key; repeating it changes nothing.
func (s *ApiKeyServer) RevokeApiKey(ctx context.Context, req *v1.RevokeApiKeyRequest) (*v1.RevokeApiKeyResponse, error) {
	k, err := s.keys.Revoke(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &v1.RevokeApiKeyResponse{ApiKey: s.apiKeyOut(k)}, nil
}

// RotateApiKey issues a successor key; the old one expires after the grace period.
func (s *ApiKeyServer) RotateApiKey(ctx context.Context, req *v1.RotateApiKeyRequest) (*v1.RotateApiKeyResponse, error) {
	var grace time.Duration
	if d := req.GetGracePeriod(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, domain.Violations{{Field: "grace_period", Description: "is not a valid duration"}}.Err()
		}
		grace = d.AsDuration()
	}
	fresh, plaintext, old, err := s.keys.Rotate(ctx, req.GetId(), grace)
	if err != nil {
		return nil, err
	}
	return &v1.RotateApiKeyResponse{ApiKey: s.apiKeyOut(fresh), PlaintextKey: plaintext, PreviousApiKey: s.apiKeyOut(old)}, nil
}

var verifyCodes = map[domain.VerifyCode]v1.ApiKeyVerificationCode{
	domain.VerifyValid:             v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_VALID,
	domain.VerifyMalformed:         v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_MALFORMED,
	domain.VerifyNotFound:          v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_FOUND,
	domain.VerifyRevoked:           v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_REVOKED,
	domain.VerifyExpired:           v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_EXPIRED,
	domain.VerifyTenantFrozen:      v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_TENANT_FROZEN,
	domain.VerifyInsufficientScope: v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_INSUFFICIENT_SCOPE,
	domain.VerifyNotEntitled:       v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_NOT_ENTITLED,
	domain.VerifyDisabled:          v1.ApiKeyVerificationCode_API_KEY_VERIFICATION_CODE_DISABLED,
}

// VerifyApiKey says whether a key is good, and for whom. Key problems are
// answers (valid=false and a code), never errors.
func (s *ApiKeyServer) VerifyApiKey(ctx context.Context, req *v1.VerifyApiKeyRequest) (*v1.VerifyApiKeyResponse, error) {
	r, err := s.keys.Verify(ctx, req.GetKey(), req.GetProduct(), req.GetRequiredScopes())
	if err != nil {
		return nil, err
	}
	// The same answer serves many calls: it is converted, and encoded,
	// once, and no layer changes a response once its handler returned it.
	return r.Rendered(verificationProto).(*v1.VerifyApiKeyResponse), nil
}

func verificationProto(r *domain.Verification) any {
	res := &v1.VerifyApiKeyResponse{
		Valid: r.Valid(), Code: verifyCodes[r.Code], KeyId: r.KeyID, TenantId: r.TenantID,
		TenantSlug: r.TenantSlug, Scopes: r.Scopes, Products: r.Products, ValidUntil: timeOut(r.Until),
		Metadata: r.Metadata,
	}
	for _, e := range r.Entitlements {
		res.Entitlements = append(res.Entitlements, entitlementProto(e))
	}
	return shareAnswer(res)
}

// DisableApiKey disables a key until EnableApiKey.
func (s *ApiKeyServer) DisableApiKey(ctx context.Context, req *v1.DisableApiKeyRequest) (*v1.DisableApiKeyResponse, error) {
	k, err := s.keys.Disable(ctx, req.GetId(), req.GetEtag())
	if err != nil {
		return nil, err
	}
	return &v1.DisableApiKeyResponse{ApiKey: s.apiKeyOut(k)}, nil
}

// EnableApiKey enables a disabled key again.
func (s *ApiKeyServer) EnableApiKey(ctx context.Context, req *v1.EnableApiKeyRequest) (*v1.EnableApiKeyResponse, error) {
	k, err := s.keys.Enable(ctx, req.GetId(), req.GetEtag())
	if err != nil {
		return nil, err
	}
	return &v1.EnableApiKeyResponse{ApiKey: s.apiKeyOut(k)}, nil
}

// UpdateApiKey changes the fields of a key its mask names.
func (s *ApiKeyServer) UpdateApiKey(ctx context.Context, req *v1.UpdateApiKeyRequest) (*v1.UpdateApiKeyResponse, error) {
	var v domain.Violations
	expire := timeIn(&v, "expire_time", req.GetExpireTime())
	if err := v.Err(); err != nil {
		return nil, err
	}
	k, err := s.keys.Update(ctx, domain.UpdateApiKey{
		ID: req.GetId(), Name: req.GetName(), Scopes: req.GetScopes(), ExpireTime: expire, Metadata: req.GetMetadata(),
		Mask: maskIn(req.GetUpdateMask()), Etag: req.GetEtag(),
	})
	if err != nil {
		return nil, err
	}
	return &v1.UpdateApiKeyResponse{ApiKey: s.apiKeyOut(k)}, nil
}

// ImportApiKeys stores keys of the previous implementation, all or nothing.
func (s *ApiKeyServer) ImportApiKeys(ctx context.Context, req *v1.ImportApiKeysRequest) (*v1.ImportApiKeysResponse, error) {
	var v domain.Violations
	in := make([]domain.ImportedApiKey, len(req.GetKeys()))
	for i, k := range req.GetKeys() {
		if i >= domain.MaxImportBatch {
			break
		}
		f := "keys[" + strconv.Itoa(i) + "]."
		in[i] = domain.ImportedApiKey{
			TenantID: k.GetTenantId(), Name: k.GetName(), Prefix: k.GetPrefix(), Hash: k.GetHash(), Scopes: k.GetScopes(),
			CreateTime: timeIn(&v, f+"create_time", k.GetCreateTime()), ExpireTime: timeIn(&v, f+"expire_time", k.GetExpireTime()),
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	keys, err := s.keys.Import(ctx, in)
	if err != nil {
		return nil, err
	}
	res := &v1.ImportApiKeysResponse{ApiKeys: make([]*v1.ApiKey, len(keys))}
	for i, k := range keys {
		res.ApiKeys[i] = s.apiKeyOut(k)
	}
	return res, nil
}

var apiKeyStatuses = map[domain.ApiKeyStatus]v1.ApiKeyStatus{
	domain.ApiKeyActive:   v1.ApiKeyStatus_API_KEY_STATUS_ACTIVE,
	domain.ApiKeyRevoked:  v1.ApiKeyStatus_API_KEY_STATUS_REVOKED,
	domain.ApiKeyExpired:  v1.ApiKeyStatus_API_KEY_STATUS_EXPIRED,
	domain.ApiKeyDisabled: v1.ApiKeyStatus_API_KEY_STATUS_DISABLED,
}

// apiKeyOut converts a key's metadata; the hash never leaves the server.
func (s *ApiKeyServer) apiKeyOut(k *domain.ApiKey) *v1.ApiKey {
	kind := v1.ApiKeyKind_API_KEY_KIND_TENANT
	if k.IsPlatform() {
		kind = v1.ApiKeyKind_API_KEY_KIND_PLATFORM
	}
	return &v1.ApiKey{
		Kind: kind,
		Id:   k.ID, TenantId: k.TenantID, Name: k.Name, Prefix: k.Prefix, Scopes: k.Scopes,
		Status: apiKeyStatuses[k.StatusAt(s.now())], CreateTime: timeOut(k.CreateTime), ExpireTime: timeOut(k.ExpireTime),
		RevokeTime: timeOut(k.RevokeTime), LastUsedTime: timeOut(k.LastUsedTime),
		DisableTime: timeOut(k.DisableTime), Metadata: k.Metadata, Etag: k.Etag(),
	}
}
