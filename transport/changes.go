package transport

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// sendTimeout bounds the write of each message of a stream: a watcher that
// takes nothing for this long (once the connection's buffers are full) is
// gone, and its stream ends rather than hold a goroutine and a
// subscription for ever.
const sendTimeout = 10 * time.Second

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

// NewChangeServiceHandler mounts the ChangeService handler as the
// generated constructor does, and lets its streams set write deadlines.
func NewChangeServiceHandler(s *ChangeServer, opts ...connect.HandlerOption) (string, http.Handler) {
	path, h := tenantregistryv1connect.NewChangeServiceHandler(s, opts...)
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), responseControllerKey{}, http.NewResponseController(w))
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

type responseControllerKey struct{}

// WatchChanges streams changes until the caller goes or the server drains.
func (s *ChangeServer) WatchChanges(ctx context.Context, _ *v1.WatchChangesRequest, stream *connect.ServerStream[v1.WatchChangesResponse]) error {
	select {
	case <-s.stop:
		// Draining: the watcher should reconnect to another replica.
		return connect.NewError(connect.CodeUnavailable, errors.New("the server is shutting down; reconnect"))
	default:
	}
	rc, _ := ctx.Value(responseControllerKey{}).(*http.ResponseController)
	if rc != nil {
		// An HTTP/1.1 connection outlives the stream, and its next
		// response must not inherit the stream's last deadline.
		defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	}
	return s.changes.Watch(ctx, s.stop, streamWatcher{stream: stream, rc: rc})
}

// Close ends every watch cleanly and refuses new ones: the server is
// draining, and http.Server.Shutdown waits for no stream.
func (s *ChangeServer) Close() { s.once.Do(func() { close(s.stop) }) }

// streamWatcher sends a watch's messages on the stream, each within
// sendTimeout when the connection lets a deadline be set.
type streamWatcher struct {
	stream *connect.ServerStream[v1.WatchChangesResponse]
	rc     *http.ResponseController
}

func (w streamWatcher) send(m *v1.WatchChangesResponse) error {
	if w.rc != nil {
		_ = w.rc.SetWriteDeadline(time.Now().Add(sendTimeout)) // not every writer supports it; then Send waits as it would
	}
	return w.stream.Send(m)
}

func (w streamWatcher) Change(c domain.Change) error {
	if c.Kind == domain.ChangeReset {
		return w.send(&v1.WatchChangesResponse{Message: &v1.WatchChangesResponse_Reset_{Reset_: &v1.ChangeReset{}}})
	}
	return w.send(&v1.WatchChangesResponse{Message: &v1.WatchChangesResponse_Change{Change: &v1.Change{
		Kind: changeKinds[c.Kind], TenantId: c.TenantID, ApiKeyId: c.KeyID, Product: c.Product,
	}}})
}

func (w streamWatcher) Heartbeat(h domain.Heartbeat) error {
	hb := &v1.ChangeHeartbeat{}
	if h.Known {
		hb.Staleness = durationpb.New(h.Staleness)
	}
	return w.send(&v1.WatchChangesResponse{Message: &v1.WatchChangesResponse_Heartbeat{Heartbeat: hb}})
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
	domain.ChangeKeyDisabled:        v1.ChangeKind_CHANGE_KIND_API_KEY_DISABLED,
	domain.ChangeKeyEnabled:         v1.ChangeKind_CHANGE_KIND_API_KEY_ENABLED,
	domain.ChangeKeyUpdated:         v1.ChangeKind_CHANGE_KIND_API_KEY_UPDATED,
	domain.ChangeProductChanged:     v1.ChangeKind_CHANGE_KIND_PRODUCT_CHANGED,
}
