package transport

import (
	"context"
	"errors"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// ChangeServer serves tenantregistry.v1.ChangeService: the change stream.
type ChangeServer struct {
	changes *domain.ChangeService
	stop    chan struct{} // closed when the server starts draining
	once    sync.Once
}

var _ tenantregistryv1connect.ChangeServiceHandler = (*ChangeServer)(nil)

// NewChangeServer returns the ChangeService handler over the domain service.
func NewChangeServer(changes *domain.ChangeService) *ChangeServer {
	return &ChangeServer{changes: changes, stop: make(chan struct{})}
}

// WatchChanges streams changes until the caller goes or the server drains.
func (s *ChangeServer) WatchChanges(ctx context.Context, _ *v1.WatchChangesRequest, stream *connect.ServerStream[v1.WatchChangesResponse]) error {
	select {
	case <-s.stop:
		// Draining: the watcher should reconnect to another replica.
		return connect.NewError(connect.CodeUnavailable, errors.New("the server is shutting down; reconnect"))
	default:
	}
	return s.changes.Watch(ctx, s.stop, streamWatcher{stream})
}

// Close ends every watch cleanly and refuses new ones: the server is
// draining, and http.Server.Shutdown waits for no stream.
func (s *ChangeServer) Close() { s.once.Do(func() { close(s.stop) }) }

// streamWatcher sends a watch's messages on the stream.
type streamWatcher struct {
	stream *connect.ServerStream[v1.WatchChangesResponse]
}

func (w streamWatcher) Change(c domain.Change) error {
	if c.Kind == domain.ChangeReset {
		return w.stream.Send(&v1.WatchChangesResponse{Message: &v1.WatchChangesResponse_Reset_{Reset_: &v1.ChangeReset{}}})
	}
	return w.stream.Send(&v1.WatchChangesResponse{Message: &v1.WatchChangesResponse_Change{Change: &v1.Change{
		Kind: changeKinds[c.Kind], TenantId: c.TenantID, ApiKeyId: c.KeyID, Product: c.Product,
	}}})
}

func (w streamWatcher) Heartbeat(h domain.Heartbeat) error {
	hb := &v1.ChangeHeartbeat{}
	if h.Known {
		hb.Staleness = durationpb.New(h.Staleness)
	}
	return w.stream.Send(&v1.WatchChangesResponse{Message: &v1.WatchChangesResponse_Heartbeat{Heartbeat: hb}})
}

// changeKinds maps the domain's change kinds to the contract's. Reset and
// unknown changes go out as resets (see domain.ChangeService.Watch).
var changeKinds = map[domain.ChangeKind]v1.ChangeKind{
	domain.ChangeKeyCreated:         v1.ChangeKind_CHANGE_KIND_API_KEY_CREATED,
	domain.ChangeKeyRevoked:         v1.ChangeKind_CHANGE_KIND_API_KEY_REVOKED,
	domain.ChangeKeyRotated:         v1.ChangeKind_CHANGE_KIND_API_KEY_ROTATED,
	domain.ChangeTenantFrozen:       v1.ChangeKind_CHANGE_KIND_TENANT_FROZEN,
	domain.ChangeTenantActivated:    v1.ChangeKind_CHANGE_KIND_TENANT_ACTIVATED,
	domain.ChangeEntitlementGranted: v1.ChangeKind_CHANGE_KIND_ENTITLEMENT_GRANTED,
	domain.ChangeEntitlementChanged: v1.ChangeKind_CHANGE_KIND_ENTITLEMENT_CHANGED,
	domain.ChangeEntitlementRevoked: v1.ChangeKind_CHANGE_KIND_ENTITLEMENT_REVOKED,
}
