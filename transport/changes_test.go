package transport_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

// watch is one WatchChanges stream, received into memory.
type watch struct {
	mu     sync.Mutex
	msgs   []*v1.WatchChangesResponse
	at     []time.Time
	ended  chan struct{}
	err    error
	cancel context.CancelFunc
}

func startWatch(t *testing.T, ctx context.Context, c tenantregistryv1connect.ChangeServiceClient) *watch {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.WatchChanges(ctx, &v1.WatchChangesRequest{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &watch{ended: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(w.ended)
		for stream.Receive() {
			w.mu.Lock()
			w.msgs, w.at = append(w.msgs, stream.Msg()), append(w.at, time.Now())
			w.mu.Unlock()
		}
		w.err = stream.Err()
		stream.Close()
	}()
	t.Cleanup(func() {
		cancel()
		<-w.ended
	})
	return w
}

func (w *watch) messages() []*v1.WatchChangesResponse {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

// heartbeatTimes returns when each heartbeat arrived.
func (w *watch) heartbeatTimes() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Time
	for i, m := range w.msgs {
		if m.GetHeartbeat() != nil {
			out = append(out, w.at[i])
		}
	}
	return out
}

// waitFor polls until cond holds for the messages received, for up to 5 s.
func (w *watch) waitFor(t *testing.T, what string, cond func([]*v1.WatchChangesResponse) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(w.messages()) {
		select {
		case <-w.ended:
			if !cond(w.messages()) {
				t.Fatalf("%s: the stream ended (%v) first, after %v", what, w.err, w.messages())
			}
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s; received %v", what, w.messages())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// change is what a stream is expected to tell: a kind and the id it names.
type change struct {
	kind v1.ChangeKind
	id   string // the key id for key changes, else the tenant id
}

func changesOf(msgs []*v1.WatchChangesResponse) []change {
	var out []change
	for _, m := range msgs {
		if c := m.GetChange(); c != nil {
			id := c.GetApiKeyId()
			if id == "" {
				id = c.GetTenantId()
			}
			out = append(out, change{c.GetKind(), id})
		}
	}
	return out
}

// inOrder reports whether want appears in got in this order, perhaps with
// other changes between.
func inOrder(got, want []change) bool {
	i := 0
	for _, c := range got {
		if i < len(want) && c == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestWatchChanges watches over every protocol at once, on SQLite (one
// process) and PostgreSQL (through LISTEN/NOTIFY): each stream starts with
// a reset, beats at least every 250 ms, and tells every kind of change in
// commit order, by ids only.
func TestWatchChanges(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		srv := testserver.Start(t, db)
		c := newClients(srv.URL)
		var watches []*watch
		for _, p := range testserver.Protocols {
			w := startWatch(t, ctx, tenantregistryv1connect.NewChangeServiceClient(p.HTTP, srv.URL, p.Options...))
			w.waitFor(t, p.Name+" reset then heartbeat", func(m []*v1.WatchChangesResponse) bool {
				return len(m) >= 2 && m[1].GetHeartbeat() != nil
			})
			if m := w.messages(); m[0].GetReset_() == nil {
				t.Fatalf("%s: first message %v, want a reset", p.Name, m[0])
			}
			watches = append(watches, w)
		}

		if _, err := c.catalog.CreateProduct(ctx, &v1.CreateProductRequest{Key: "reports", DisplayName: "Reports", TrialDays: proto.Int32(14)}); err != nil {
			t.Fatal(err)
		}
		tn, err := c.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "watched", DisplayName: "Watched"})
		if err != nil {
			t.Fatal(err)
		}
		tenant := tn.GetTenant().GetId()
		var secrets []string // plaintexts and their digests, which must never be sent
		newKey := func() string {
			res, err := c.keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tenant, Name: "k"})
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(res.GetPlaintextKey()))
			secrets = append(secrets, res.GetPlaintextKey(), hex.EncodeToString(sum[:]))
			return res.GetApiKey().GetId()
		}
		k1, k2 := newKey(), newKey()
		if _, err := c.keys.RevokeApiKey(ctx, &v1.RevokeApiKeyRequest{Id: k1}); err != nil {
			t.Fatal(err)
		}
		rotated, err := c.keys.RotateApiKey(ctx, &v1.RotateApiKeyRequest{Id: k2})
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(rotated.GetPlaintextKey()))
		secrets = append(secrets, rotated.GetPlaintextKey(), hex.EncodeToString(sum[:]))
		steps := []func() error{
			func() error {
				_, err := c.catalog.StartTrial(ctx, &v1.StartTrialRequest{TenantId: tenant, Product: "reports"})
				return err
			},
			func() error {
				_, err := c.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: tenant, Product: "reports"})
				return err
			},
			func() error {
				_, err := c.entitlements.GrantEntitlement(ctx, &v1.GrantEntitlementRequest{TenantId: tenant, Product: "reports",
					ExpireTime: timestamppb.New(srv.Clock.Now().Add(time.Hour))})
				return err
			},
			func() error {
				_, err := c.entitlements.RevokeEntitlement(ctx, &v1.RevokeEntitlementRequest{TenantId: tenant, Product: "reports"})
				return err
			},
			func() error { _, err := c.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tenant}); return err },
			func() error {
				_, err := c.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tenant})
				return err
			},
		}
		for _, step := range steps {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		want := []change{
			{v1.ChangeKind_CHANGE_KIND_API_KEY_CREATED, k1},
			{v1.ChangeKind_CHANGE_KIND_API_KEY_CREATED, k2},
			{v1.ChangeKind_CHANGE_KIND_API_KEY_REVOKED, k1},
			{v1.ChangeKind_CHANGE_KIND_API_KEY_CREATED, rotated.GetApiKey().GetId()},
			{v1.ChangeKind_CHANGE_KIND_API_KEY_ROTATED, k2},
			{v1.ChangeKind_CHANGE_KIND_ENTITLEMENT_GRANTED, tenant}, // the trial
			{v1.ChangeKind_CHANGE_KIND_ENTITLEMENT_GRANTED, tenant}, // the trial made a grant
			{v1.ChangeKind_CHANGE_KIND_ENTITLEMENT_CHANGED, tenant}, // the grant given an end
			{v1.ChangeKind_CHANGE_KIND_ENTITLEMENT_REVOKED, tenant},
			{v1.ChangeKind_CHANGE_KIND_TENANT_FROZEN, tenant},
			{v1.ChangeKind_CHANGE_KIND_TENANT_ACTIVATED, tenant},
		}
		for i, w := range watches {
			name := testserver.Protocols[i].Name
			w.waitFor(t, name+" every change", func(m []*v1.WatchChangesResponse) bool { return inOrder(changesOf(m), want) })
			w.waitFor(t, name+" five heartbeats", func(m []*v1.WatchChangesResponse) bool { return len(w.heartbeatTimes()) >= 5 })
			for _, m := range w.messages() {
				if ch := m.GetChange(); ch != nil && ch.GetTenantId() != tenant {
					t.Errorf("%s: change %v names no tenant, or another", name, ch)
				}
				if ch := m.GetChange(); ch != nil && strings.Contains(ch.GetKind().String(), "ENTITLEMENT") && ch.GetProduct() != "reports" {
					t.Errorf("%s: entitlement change %v does not name its product", name, ch)
				}
				text := protojson.Format(m)
				for _, s := range secrets {
					if strings.Contains(text, s) {
						t.Fatalf("%s: a message carries a key or its hash: %s", name, text)
					}
				}
			}
			beats := w.heartbeatTimes()
			var gaps []time.Duration
			for j := 1; j < len(beats); j++ {
				gaps = append(gaps, beats[j].Sub(beats[j-1]))
			}
			slices.Sort(gaps)
			if median := gaps[len(gaps)/2]; median > 250*time.Millisecond {
				t.Errorf("%s: heartbeats every %v (median), want at most 250 ms", name, median)
			}
			last := w.messages()
			for j := len(last) - 1; j >= 0; j-- {
				if hb := last[j].GetHeartbeat(); hb != nil {
					if hb.GetStaleness() == nil || hb.GetStaleness().AsDuration() > time.Second {
						t.Errorf("%s: the last heartbeat vouches for %v, want a staleness under 1 s", name, hb.GetStaleness())
					}
					break
				}
			}
		}
	})
}

// TestWatchChangesStartsWithAReset: every stream, a reconnection's too,
// starts with a reset, and what was committed before it is not replayed.
func TestWatchChangesStartsWithAReset(t *testing.T) {
	db := testdb.MustOpen(t, "sqlite")
	srv := testserver.Start(t, db)
	c := newClients(srv.URL)
	ctx := context.Background()
	first := startWatch(t, ctx, c.changes)
	first.waitFor(t, "the first stream's reset", func(m []*v1.WatchChangesResponse) bool { return len(m) > 0 })
	first.cancel()
	<-first.ended
	tn, err := c.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "between", DisplayName: "Between"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tn.GetTenant().GetId()}); err != nil {
		t.Fatal(err)
	}
	again := startWatch(t, ctx, c.changes)
	again.waitFor(t, "the reconnection's reset and heartbeat", func(m []*v1.WatchChangesResponse) bool { return len(m) >= 2 })
	m := again.messages()
	if m[0].GetReset_() == nil || m[1].GetHeartbeat() == nil {
		t.Fatalf("the reconnection began with %v, want a reset then a heartbeat", m[:2])
	}
	if got := changesOf(m); len(got) != 0 {
		t.Errorf("the reconnection replayed %v", got)
	}
}

// TestWatchChangesEndsCleanlyOnShutdown: shutting the server down ends
// every stream, over every protocol, with no error, and does not wait for
// the shutdown grace period.
func TestWatchChangesEndsCleanlyOnShutdown(t *testing.T) {
	db := testdb.MustOpen(t, "sqlite")
	srv := testserver.Start(t, db)
	var watches []*watch
	for _, p := range testserver.Protocols {
		w := startWatch(t, context.Background(), tenantregistryv1connect.NewChangeServiceClient(p.HTTP, srv.URL, p.Options...))
		w.waitFor(t, p.Name+" started", func(m []*v1.WatchChangesResponse) bool { return len(m) >= 2 })
		watches = append(watches, w)
	}
	start := time.Now()
	if err := srv.Stop(); err != nil {
		t.Fatalf("shutdown with streams open: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v: it waited for the streams instead of ending them", d)
	}
	for i, w := range watches {
		select {
		case <-w.ended:
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: the stream did not end with the server", testserver.Protocols[i].Name)
		}
		if w.err != nil {
			t.Errorf("%s: the stream ended with %v, want a clean end", testserver.Protocols[i].Name, w.err)
		}
	}
}

// TestWatchEndsWhenItsKeyIsRevoked: a product's stream opened with its
// service key ends, Unauthenticated, when that key is revoked, disabled,
// updated (its scopes may no longer allow watching) or expires; another
// tenant's admin may not open one.
func TestWatchEndsWhenItsKeyIsRevoked(t *testing.T) {
	db := testdb.MustOpen(t, "sqlite")
	iss := newIssuer(t)
	srv := testserver.StartWith(t, db, &transport.OIDCConfig{Issuer: iss.url, Audience: "tenant-registry", TenantClaim: "tenant_id"})
	c := newClients(srv.URL)
	as := func(tok string) context.Context { return context.WithValue(context.Background(), tokenKey{}, tok) }
	admin := as(iss.token(t, "admin-1", "", "tenant-registry", time.Now().Add(time.Hour), "platform-admin"))
	endings := []struct {
		name   string
		expire time.Duration
		end    func(id string) error
	}{
		{"revoked", 0, func(id string) error {
			_, err := c.keys.RevokeApiKey(admin, &v1.RevokeApiKeyRequest{Id: id})
			return err
		}},
		{"disabled", 0, func(id string) error {
			_, err := c.keys.DisableApiKey(admin, &v1.DisableApiKeyRequest{Id: id})
			return err
		}},
		{"updated", 0, func(id string) error {
			_, err := c.keys.UpdateApiKey(admin, &v1.UpdateApiKeyRequest{Id: id, Scopes: []string{"registry:audit.write"}, UpdateMask: mask("scopes")})
			return err
		}},
		{"expired", 500 * time.Millisecond, func(string) error { return nil }},
	}
	for _, e := range endings {
		req := &v1.CreateApiKeyRequest{TenantId: domain.PlatformTenantID, Name: "reports product", Scopes: []string{"registry:verify"}}
		if e.expire > 0 {
			req.ExpireTime = timestamppb.New(srv.Clock.Now().Add(e.expire))
		}
		created, err := c.keys.CreateApiKey(admin, req)
		if err != nil {
			t.Fatal(err)
		}
		w := startWatch(t, as(created.GetPlaintextKey()), c.changes)
		w.waitFor(t, "the product's stream", func(m []*v1.WatchChangesResponse) bool { return len(m) >= 2 })
		if err := e.end(created.GetApiKey().GetId()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-w.ended:
		case <-time.After(3 * time.Second):
			t.Fatalf("the stream of a key %s goes on", e.name)
		}
		if connect.CodeOf(w.err) != connect.CodeUnauthenticated {
			t.Errorf("the stream of a key %s ended with %v, want Unauthenticated", e.name, w.err)
		}
	}
	tn, err := c.tenants.CreateTenant(admin, &v1.CreateTenantRequest{Slug: "watcher", DisplayName: "Watcher"})
	if err != nil {
		t.Fatal(err)
	}
	tenantAdmin := startWatch(t, as(iss.token(t, "alice", tn.GetTenant().GetId(), "tenant-registry", time.Now().Add(time.Hour), "tenant-admin")), c.changes)
	<-tenantAdmin.ended
	if connect.CodeOf(tenantAdmin.err) != connect.CodePermissionDenied {
		t.Errorf("a tenant admin's stream: %v, want PermissionDenied", tenantAdmin.err)
	}
}

// TestWatchChangesRefusesBadInput sends WatchChanges what a confused or
// hostile client might: each is refused with a caller's-fault code and a
// message, never Internal, and a good request still gets its stream.
func TestWatchChangesRefusesBadInput(t *testing.T) {
	db := testdb.MustOpen(t, "sqlite")
	srv := testserver.Start(t, db)
	frame := func(flags byte, payload []byte) []byte {
		return append([]byte{flags, byte(len(payload) >> 24), byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload))}, payload...)
	}
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		header            map[string]string
		want              connect.Code // 0: the stream starts
	}{
		{"good JSON", "application/connect+json", frame(0, []byte(`{}`)), nil, 0},
		{"good binary", "application/connect+proto", frame(0, nil), nil, 0},
		{"malformed JSON", "application/connect+json", frame(0, []byte(`{"a":`)), nil, connect.CodeInvalidArgument},
		{"unknown JSON field", "application/connect+json", frame(0, []byte(`{"noSuchField":1}`)), nil, connect.CodeInvalidArgument},
		{"JSON array", "application/connect+json", frame(0, []byte(`[1]`)), nil, connect.CodeInvalidArgument},
		{"binary garbage", "application/connect+proto", frame(0, []byte{0xff, 0xff, 0xff}), nil, connect.CodeInvalidArgument},
		{"frame longer than the body", "application/connect+proto", []byte{0, 0, 0, 0, 100, 1}, nil, connect.CodeInvalidArgument},
		{"gzip garbage", "application/connect+json", frame(1, []byte("not gzip")), map[string]string{"Connect-Content-Encoding": "gzip"}, connect.CodeInvalidArgument},
		{"bad Connect-Timeout-Ms", "application/connect+json", frame(0, []byte(`{}`)), map[string]string{"Connect-Timeout-Ms": "abc"}, connect.CodeInvalidArgument},
		{"unsupported compression", "application/connect+json", frame(1, []byte(`{}`)), map[string]string{"Connect-Content-Encoding": "br"}, connect.CodeUnimplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+tenantregistryv1connect.ChangeServiceWatchChangesProcedure, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.contentType)
			req.Header.Set("Connect-Protocol-Version", "1")
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			res, err := testserver.HTTP1.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			head := make([]byte, 5)
			if _, err := io.ReadFull(res.Body, head); err != nil {
				t.Fatalf("HTTP %d, no frame: %v", res.StatusCode, err)
			}
			data := make([]byte, binary.BigEndian.Uint32(head[1:]))
			if _, err := io.ReadFull(res.Body, data); err != nil {
				t.Fatal(err)
			}
			var end struct {
				Error *struct{ Code, Message string } `json:"error"`
			}
			if head[0]&2 != 0 {
				if err := json.Unmarshal(data, &end); err != nil {
					t.Fatalf("end-stream frame %q: %v", data, err)
				}
			}
			switch {
			case tc.want == 0 && end.Error != nil:
				t.Fatalf("a good request was refused: %+v", end.Error)
			case tc.want == 0:
				return // the first message of a live stream
			case end.Error == nil:
				t.Fatalf("accepted, want %v", tc.want)
			}
			var got connect.Code
			if err := got.UnmarshalText([]byte(end.Error.Code)); err != nil || got != tc.want || end.Error.Message == "" {
				t.Errorf("refused with %q %q, want %v with a message", end.Error.Code, end.Error.Message, tc.want)
			}
		})
	}
	if logs := srv.Logs.String(); strings.Contains(logs, "level=ERROR") {
		t.Errorf("the server logged errors:\n%s", logs)
	}
}
