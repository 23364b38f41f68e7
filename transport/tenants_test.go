package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"

	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

// harness is the test server, with the tenant tests' own checks and helpers.
type harness struct{ *testserver.Server }

// startServer starts the test server; at the test's end it checks that
// the server logged no error (no input may cause Internal).
func startServer(t *testing.T, db *persistence.DB) *harness {
	t.Helper()
	h := &harness{testserver.Start(t, db)}
	t.Cleanup(func() {
		_ = h.Stop() // testserver reports what Serve returned
		if strings.Contains(h.Logs.String(), "level=ERROR") {
			t.Errorf("the server logged errors (no input may cause Internal)")
		}
	})
	return h
}

// client returns a TenantService client speaking p, and the recorder of the
// HTTP methods it used.
func (h *harness) client(p testserver.Protocol, extra ...connect.ClientOption) (tenantregistryv1connect.TenantServiceClient, *testserver.MethodRecorder) {
	httpClient, rec := p.Recorded()
	opts := append(slices.Clone(p.Options), extra...)
	return tenantregistryv1connect.NewTenantServiceClient(httpClient, h.URL, opts...), rec
}

// tenantCount counts the customers' rows of the tenants table (the
// platform tenant every database holds aside), bypassing the service.
func (h *harness) tenantCount(t *testing.T) int {
	t.Helper()
	n, err := h.DB.Bun().NewSelect().Table("tenants").Where("id <> ?", domain.PlatformTenantID).Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (h *harness) mustCreate(t *testing.T, c tenantregistryv1connect.TenantServiceClient, req *v1.CreateTenantRequest) *v1.Tenant {
	t.Helper()
	res, err := c.CreateTenant(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateTenant(%s): %v", req.GetSlug(), err)
	}
	return res.GetTenant()
}

// badRequestFields returns the fields named by the google.rpc.BadRequest
// details of err.
func badRequestFields(t *testing.T, err error) []string {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	var fields []string
	for _, d := range ce.Details() {
		msg, derr := d.Value()
		if derr != nil {
			t.Errorf("undecodable error detail %s: %v", d.Type(), derr)
			continue
		}
		if br, ok := msg.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

// checkError asserts err has code want and, for InvalidArgument, a
// BadRequest detail with a violation of field (or of an entry of it, like
// metadata["k"]).
func checkError(t *testing.T, err error, want connect.Code, field string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %v", want)
	}
	if got := connect.CodeOf(err); got != want {
		t.Fatalf("code %v, want %v (%v)", got, want, err)
	}
	if field == "" {
		return
	}
	fields := badRequestFields(t, err)
	if !slices.ContainsFunc(fields, func(f string) bool { return f == field || strings.HasPrefix(f, field+"[") }) {
		t.Errorf("BadRequest fields %q, want one naming %q (%v)", fields, field, err)
	}
}

func sameTime(t *testing.T, what string, got interface{ AsTime() time.Time }, want time.Time) {
	t.Helper()
	if !got.AsTime().Equal(want) {
		t.Errorf("%s = %v, want %v", what, got.AsTime(), want)
	}
}

func TestCreateAndGetTenant(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startServer(t, db)
		ctx := context.Background()
		for i, p := range testserver.Protocols {
			t.Run(p.Name, func(t *testing.T) {
				c, rec := h.client(p)
				now := h.Clock.Advance(time.Minute)
				slug := fmt.Sprintf("create-%d", i)
				md := map[string]string{"plan": "pro", "ünïcode": "välue €", strings.Repeat("k", 40): strings.Repeat("v", 500)}
				created := h.mustCreate(t, c, &v1.CreateTenantRequest{
					Slug: slug, DisplayName: "  Acme Ltd.  ", ExternalId: "crm-42", Metadata: md,
				})
				id, err := uuid.Parse(created.GetId())
				if err != nil || id.String() != created.GetId() || id.Version() != 7 {
					t.Errorf("id %q is not a canonical UUIDv7 (%v)", created.GetId(), err)
				}
				if created.GetStatus() != v1.TenantStatus_TENANT_STATUS_TRIAL {
					t.Errorf("status %v, want TRIAL", created.GetStatus())
				}
				if created.GetSlug() != slug || created.GetDisplayName() != "Acme Ltd." || created.GetExternalId() != "crm-42" {
					t.Errorf("created %v", created)
				}
				if !maps.Equal(created.GetMetadata(), md) {
					t.Errorf("metadata %v, want %v", created.GetMetadata(), md)
				}
				sameTime(t, "create_time", created.GetCreateTime(), now)
				sameTime(t, "update_time", created.GetUpdateTime(), now)

				reads := []struct {
					name, procedure string
					read            func() (*v1.Tenant, error)
				}{
					{"GetTenant", tenantregistryv1connect.TenantServiceGetTenantProcedure, func() (*v1.Tenant, error) {
						res, err := c.GetTenant(ctx, &v1.GetTenantRequest{Id: created.GetId()})
						return res.GetTenant(), err
					}},
					{"GetTenant upper-case id", tenantregistryv1connect.TenantServiceGetTenantProcedure, func() (*v1.Tenant, error) {
						res, err := c.GetTenant(ctx, &v1.GetTenantRequest{Id: strings.ToUpper(created.GetId())})
						return res.GetTenant(), err
					}},
					{"GetTenantBySlug", tenantregistryv1connect.TenantServiceGetTenantBySlugProcedure, func() (*v1.Tenant, error) {
						res, err := c.GetTenantBySlug(ctx, &v1.GetTenantBySlugRequest{Slug: slug})
						return res.GetTenant(), err
					}},
				}
				for _, r := range reads {
					got, err := r.read()
					if err != nil {
						t.Fatalf("%s: %v", r.name, err)
					}
					if !proto.Equal(got, created) {
						t.Errorf("%s = %v, want %v", r.name, got, created)
					}
				}
				wantRead, wantWrite := http.MethodPost, http.MethodPost
				if p.GET {
					wantRead = http.MethodGet
				}
				for procedure, want := range map[string]string{
					tenantregistryv1connect.TenantServiceCreateTenantProcedure:    wantWrite,
					tenantregistryv1connect.TenantServiceGetTenantProcedure:       wantRead,
					tenantregistryv1connect.TenantServiceGetTenantBySlugProcedure: wantRead,
				} {
					for _, m := range rec.Methods(procedure) {
						if m != want {
							t.Errorf("%s went as %s, want %s", procedure, m, want)
						}
					}
				}
			})
		}
	})
}

func TestListTenants(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startServer(t, db)
		ctx := context.Background()
		admin, _ := h.client(testserver.Protocols[0])
		// Seven tenants in creation order; 2 and 5 ACTIVE, 3 FROZEN, the rest TRIAL.
		var all []*v1.Tenant
		for i := 1; i <= 7; i++ {
			h.Clock.Advance(time.Second)
			name := fmt.Sprintf("Tenant %d", i)
			if i == 7 {
				name = "Über Seven"
			}
			all = append(all, h.mustCreate(t, admin, &v1.CreateTenantRequest{Slug: fmt.Sprintf("tenant-%d", i), DisplayName: name}))
		}
		for _, i := range []int{2, 5} {
			if _, err := admin.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: all[i-1].GetId()}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := admin.CancelTenant(ctx, &v1.CancelTenantRequest{Id: all[2].GetId()}); err != nil {
			t.Fatal(err)
		}
		slugsOf := func(ts []*v1.Tenant) []string {
			out := make([]string, len(ts))
			for i, tn := range ts {
				out[i] = tn.GetSlug()
			}
			return out
		}
		// list collects every page of req, following next_page_token.
		list := func(t *testing.T, c tenantregistryv1connect.TenantServiceClient, req *v1.ListTenantsRequest) (slugs []string, pages int) {
			t.Helper()
			req = proto.CloneOf(req)
			for {
				res, err := c.ListTenants(ctx, req)
				if err != nil {
					t.Fatalf("ListTenants(%v): %v", req, err)
				}
				pages++
				if req.GetPageSize() > 0 && len(res.GetTenants()) > int(req.GetPageSize()) {
					t.Fatalf("page of %d tenants, page_size %d", len(res.GetTenants()), req.GetPageSize())
				}
				slugs = append(slugs, slugsOf(res.GetTenants())...)
				if res.GetNextPageToken() == "" {
					return slugs, pages
				}
				if pages > 20 {
					t.Fatal("paging does not end")
				}
				req.PageToken = res.GetNextPageToken()
			}
		}

		t.Run("paging", func(t *testing.T) {
			for _, p := range testserver.Protocols {
				t.Run(p.Name, func(t *testing.T) {
					c, _ := h.client(p)
					got, pages := list(t, c, &v1.ListTenantsRequest{PageSize: 3})
					if want := slugsOf(all); !slices.Equal(got, want) || pages != 3 {
						t.Errorf("paged %q in %d pages, want %q in 3", got, pages, want)
					}
				})
			}
		})

		t.Run("filters", func(t *testing.T) {
			tests := []struct {
				name string
				req  *v1.ListTenantsRequest
				want []int
			}{
				{"everything", &v1.ListTenantsRequest{}, []int{1, 2, 3, 4, 5, 6, 7}},
				{"active", &v1.ListTenantsRequest{Status: v1.TenantStatus_TENANT_STATUS_ACTIVE}, []int{2, 5}},
				{"frozen", &v1.ListTenantsRequest{Status: v1.TenantStatus_TENANT_STATUS_FROZEN}, []int{3}},
				{"trial, paged by 2", &v1.ListTenantsRequest{Status: v1.TenantStatus_TENANT_STATUS_TRIAL, PageSize: 2}, []int{1, 4, 6, 7}},
				{"query on slug", &v1.ListTenantsRequest{Query: "tenant-4"}, []int{4}},
				{"query ignores case", &v1.ListTenantsRequest{Query: "TENANT 6"}, []int{6}},
				{"query on display name", &v1.ListTenantsRequest{Query: "seven"}, []int{7}},
				{"query ignores case beyond ASCII", &v1.ListTenantsRequest{Query: "über"}, []int{7}},
				{"query ignores case beyond ASCII, upper", &v1.ListTenantsRequest{Query: "ÜBER"}, []int{7}},
				{"query and status", &v1.ListTenantsRequest{Status: v1.TenantStatus_TENANT_STATUS_ACTIVE, Query: "5"}, []int{5}},
				{"query, paged by 1", &v1.ListTenantsRequest{Query: "tenant", PageSize: 1}, []int{1, 2, 3, 4, 5, 6, 7}},
				{"LIKE wildcard % is literal", &v1.ListTenantsRequest{Query: "%"}, nil},
				{"LIKE wildcard _ is literal", &v1.ListTenantsRequest{Query: "tenant_1"}, nil},
				{"no match", &v1.ListTenantsRequest{Query: "nobody"}, nil},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					var want []string
					for _, i := range tc.want {
						want = append(want, all[i-1].GetSlug())
					}
					if got, _ := list(t, admin, tc.req); !slices.Equal(got, want) {
						t.Errorf("got %q, want %q", got, want)
					}
				})
			}
		})

		t.Run("page token of another query", func(t *testing.T) {
			first, err := admin.ListTenants(ctx, &v1.ListTenantsRequest{PageSize: 1})
			if err != nil || first.GetNextPageToken() == "" {
				t.Fatalf("first page: %v, %v", first, err)
			}
			others := []*v1.ListTenantsRequest{
				{Status: v1.TenantStatus_TENANT_STATUS_TRIAL, PageSize: 1},
				{Query: "tenant", PageSize: 1},
			}
			for _, req := range others {
				req.PageToken = first.GetNextPageToken()
				_, err := admin.ListTenants(ctx, req)
				checkError(t, err, connect.CodeInvalidArgument, "page_token")
			}
			// The same query with a different page size may continue.
			res, err := admin.ListTenants(ctx, &v1.ListTenantsRequest{PageSize: 2, PageToken: first.GetNextPageToken()})
			if err != nil || !slices.Equal(slugsOf(res.GetTenants()), []string{"tenant-2", "tenant-3"}) {
				t.Errorf("continuing with another page size: %v, %v", res, err)
			}
		})
	})
}

func TestUpdateTenant(t *testing.T) {
	manyKeys := func(n int, prefix string) map[string]string {
		md := map[string]string{}
		for i := range n {
			md[fmt.Sprintf("%s%02d", prefix, i)] = "v"
		}
		return md
	}
	ptr := func(s string) *string { return &s }
	tests := []struct {
		name      string
		initial   map[string]string
		req       *v1.UpdateTenantRequest // Id is filled in
		wantName  string
		wantMD    map[string]string
		changed   bool
		wantCode  connect.Code // 0: success
		wantField string
	}{
		{
			name: "display name only", initial: map[string]string{"a": "1"},
			req:      &v1.UpdateTenantRequest{DisplayName: ptr("New Name")},
			wantName: "New Name", wantMD: map[string]string{"a": "1"}, changed: true,
		},
		{
			name: "display name is trimmed", initial: map[string]string{"a": "1"},
			req:      &v1.UpdateTenantRequest{DisplayName: ptr("  Spaced  ")},
			wantName: "Spaced", wantMD: map[string]string{"a": "1"}, changed: true,
		},
		{
			name: "metadata merge, empty value deletes", initial: map[string]string{"a": "1", "b": "2"},
			req:      &v1.UpdateTenantRequest{Metadata: map[string]string{"b": "", "c": "3", "a": "1+"}},
			wantName: "Original", wantMD: map[string]string{"a": "1+", "c": "3"}, changed: true,
		},
		{
			name: "no-op: same name", initial: map[string]string{"a": "1"},
			req:      &v1.UpdateTenantRequest{DisplayName: ptr("Original")},
			wantName: "Original", wantMD: map[string]string{"a": "1"},
		},
		{
			name: "no-op: nothing given", initial: map[string]string{"a": "1"},
			req:      &v1.UpdateTenantRequest{},
			wantName: "Original", wantMD: map[string]string{"a": "1"},
		},
		{
			name: "no-op: same values and deleting an absent key", initial: map[string]string{"a": "1"},
			req:      &v1.UpdateTenantRequest{Metadata: map[string]string{"a": "1", "absent": ""}},
			wantName: "Original", wantMD: map[string]string{"a": "1"},
		},
		{
			name: "exactly 32 keys after merge", initial: manyKeys(30, "old"),
			req:      &v1.UpdateTenantRequest{Metadata: manyKeys(2, "new")},
			wantName: "Original", wantMD: func() map[string]string {
				md := manyKeys(30, "old")
				maps.Copy(md, manyKeys(2, "new"))
				return md
			}(), changed: true,
		},
		{
			name: "33 keys after merge", initial: manyKeys(30, "old"),
			req:      &v1.UpdateTenantRequest{DisplayName: ptr("Must Not Stick"), Metadata: manyKeys(3, "new")},
			wantName: "Original", wantMD: manyKeys(30, "old"),
			wantCode: connect.CodeInvalidArgument, wantField: "metadata",
		},
		{
			name: "empty display name", initial: map[string]string{"a": "1"},
			req:      &v1.UpdateTenantRequest{DisplayName: ptr(" "), Metadata: map[string]string{"b": "2"}},
			wantName: "Original", wantMD: map[string]string{"a": "1"},
			wantCode: connect.CodeInvalidArgument, wantField: "display_name",
		},
		{
			name: "long value", initial: map[string]string{"a": "1"},
			req:      &v1.UpdateTenantRequest{Metadata: map[string]string{"a": strings.Repeat("v", 501)}},
			wantName: "Original", wantMD: map[string]string{"a": "1"},
			wantCode: connect.CodeInvalidArgument, wantField: "metadata",
		},
	}
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startServer(t, db)
		ctx := context.Background()
		for i, tc := range tests {
			for _, p := range testserver.Protocols {
				t.Run(tc.name+"/"+p.Name, func(t *testing.T) {
					c, _ := h.client(p)
					created := h.mustCreate(t, c, &v1.CreateTenantRequest{
						Slug: fmt.Sprintf("upd-%d-%s", i, p.Name), DisplayName: "Original", Metadata: tc.initial,
					})
					then := created.GetUpdateTime().AsTime()
					now := h.Clock.Advance(time.Hour)
					req := proto.CloneOf(tc.req)
					req.Id = created.GetId()
					res, err := c.UpdateTenant(ctx, req)
					if tc.wantCode != 0 {
						checkError(t, err, tc.wantCode, tc.wantField)
					} else if err != nil {
						t.Fatalf("UpdateTenant: %v", err)
					}
					stored, err := c.GetTenant(ctx, &v1.GetTenantRequest{Id: created.GetId()})
					if err != nil {
						t.Fatal(err)
					}
					got := stored.GetTenant()
					if tc.wantCode == 0 && !proto.Equal(res.GetTenant(), got) {
						t.Errorf("UpdateTenant returned %v, stored is %v", res.GetTenant(), got)
					}
					if got.GetDisplayName() != tc.wantName || !maps.Equal(got.GetMetadata(), tc.wantMD) {
						t.Errorf("stored name %q metadata %v, want %q %v", got.GetDisplayName(), got.GetMetadata(), tc.wantName, tc.wantMD)
					}
					wantUpdate := then
					if tc.changed {
						wantUpdate = now
					}
					sameTime(t, "update_time", got.GetUpdateTime(), wantUpdate)
					sameTime(t, "create_time", got.GetCreateTime(), created.GetCreateTime().AsTime())
				})
			}
		}
	})
}

func TestTenantLifecycle(t *testing.T) {
	type action int
	const (
		activate action = iota
		cancel
	)
	const (
		trial  = v1.TenantStatus_TENANT_STATUS_TRIAL
		active = v1.TenantStatus_TENANT_STATUS_ACTIVE
		frozen = v1.TenantStatus_TENANT_STATUS_FROZEN
	)
	tests := []struct {
		name    string
		setup   []action // brings a new TRIAL tenant to the starting state
		from    v1.TenantStatus
		do      action
		want    v1.TenantStatus
		changed bool
	}{
		{"TRIAL to ACTIVE", nil, trial, activate, active, true},
		{"ACTIVE to FROZEN", []action{activate}, active, cancel, frozen, true},
		{"FROZEN to ACTIVE", []action{cancel}, frozen, activate, active, true},
		{"TRIAL to FROZEN", nil, trial, cancel, frozen, true},
		{"ACTIVE stays ACTIVE", []action{activate}, active, activate, active, false},
		{"FROZEN stays FROZEN", []action{cancel}, frozen, cancel, frozen, false},
		{"FROZEN, ACTIVE, FROZEN again", []action{cancel, activate}, active, cancel, frozen, true},
	}
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startServer(t, db)
		ctx := context.Background()
		for i, tc := range tests {
			for _, p := range testserver.Protocols {
				t.Run(tc.name+"/"+p.Name, func(t *testing.T) {
					c, _ := h.client(p)
					apply := func(a action, id string) (*v1.Tenant, error) {
						if a == activate {
							res, err := c.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: id})
							return res.GetTenant(), err
						}
						res, err := c.CancelTenant(ctx, &v1.CancelTenantRequest{Id: id})
						return res.GetTenant(), err
					}
					before := h.mustCreate(t, c, &v1.CreateTenantRequest{Slug: fmt.Sprintf("life-%d-%s", i, p.Name), DisplayName: "Life"})
					for _, a := range tc.setup {
						h.Clock.Advance(time.Minute)
						var err error
						if before, err = apply(a, before.GetId()); err != nil {
							t.Fatalf("setup: %v", err)
						}
					}
					if before.GetStatus() != tc.from {
						t.Fatalf("setup left status %v, want %v", before.GetStatus(), tc.from)
					}
					now := h.Clock.Advance(time.Minute)
					after, err := apply(tc.do, before.GetId())
					if err != nil {
						t.Fatalf("transition: %v", err)
					}
					if tc.changed {
						want := proto.CloneOf(before)
						want.Status = tc.want
						sameTime(t, "update_time", after.GetUpdateTime(), now)
						want.UpdateTime = after.GetUpdateTime()
						if after.GetEtag() == before.GetEtag() {
							t.Errorf("a transition kept the etag %s", after.GetEtag())
						}
						want.Etag = after.GetEtag()
						if !proto.Equal(after, want) {
							t.Errorf("got %v, want %v", after, want)
						}
					} else if !proto.Equal(after, before) {
						t.Errorf("same-state transition changed the tenant: got %v, want %v", after, before)
					}
					stored, err := c.GetTenant(ctx, &v1.GetTenantRequest{Id: before.GetId()})
					if err != nil {
						t.Fatal(err)
					}
					if !proto.Equal(stored.GetTenant(), after) {
						t.Errorf("stored %v, returned %v", stored.GetTenant(), after)
					}
				})
			}
		}
	})
}

// utf8Marker is replaced by invalidUTF8 on the wire by invalidUTF8Codec.
// Both are four bytes, so lengths in the protobuf encoding stay right.
const (
	utf8Marker  = "~^~^"
	invalidUTF8 = "\xff\xfe\xfd\xfc"
)

// invalidUTF8Codec marshals like the standard codecs, then replaces
// utf8Marker with invalid UTF-8: the generated client would refuse to
// marshal invalid UTF-8 itself, but other clients can send it.
type invalidUTF8Codec struct{ json bool }

func (c invalidUTF8Codec) Name() string {
	if c.json {
		return "json"
	}
	return "proto"
}

func (c invalidUTF8Codec) Marshal(m any) ([]byte, error) {
	var b []byte
	var err error
	if c.json {
		b, err = protojson.Marshal(m.(proto.Message))
	} else {
		b, err = proto.Marshal(m.(proto.Message))
	}
	return bytes.ReplaceAll(b, []byte(utf8Marker), []byte(invalidUTF8)), err
}

func (c invalidUTF8Codec) Unmarshal(b []byte, m any) error {
	if c.json {
		return protojson.Unmarshal(b, m.(proto.Message))
	}
	return proto.Unmarshal(b, m.(proto.Message))
}

func TestRefusedRequests(t *testing.T) {
	type client = tenantregistryv1connect.TenantServiceClient
	create := func(req *v1.CreateTenantRequest) func(context.Context, client) error {
		return func(ctx context.Context, c client) error { _, err := c.CreateTenant(ctx, req); return err }
	}
	list := func(req *v1.ListTenantsRequest) func(context.Context, client) error {
		return func(ctx context.Context, c client) error { _, err := c.ListTenants(ctx, req); return err }
	}
	get := func(id string) func(context.Context, client) error {
		return func(ctx context.Context, c client) error {
			_, err := c.GetTenant(ctx, &v1.GetTenantRequest{Id: id})
			return err
		}
	}
	bySlug := func(slug string) func(context.Context, client) error {
		return func(ctx context.Context, c client) error {
			_, err := c.GetTenantBySlug(ctx, &v1.GetTenantBySlugRequest{Slug: slug})
			return err
		}
	}
	update := func(req *v1.UpdateTenantRequest) func(context.Context, client) error {
		return func(ctx context.Context, c client) error { _, err := c.UpdateTenant(ctx, req); return err }
	}
	activate := func(id string) func(context.Context, client) error {
		return func(ctx context.Context, c client) error {
			_, err := c.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: id})
			return err
		}
	}
	cancel := func(id string) func(context.Context, client) error {
		return func(ctx context.Context, c client) error {
			_, err := c.CancelTenant(ctx, &v1.CancelTenantRequest{Id: id})
			return err
		}
	}
	keys33 := map[string]string{}
	for i := range 33 {
		keys33[fmt.Sprintf("key-%02d", i)] = "v"
	}
	unknown := "0190f5c2-7d3e-7a00-8000-000000000000" // well-formed, never created
	ok := func(slug string) *v1.CreateTenantRequest {
		return &v1.CreateTenantRequest{Slug: slug, DisplayName: "Fine Name"}
	}
	with := func(req *v1.CreateTenantRequest, edit func(*v1.CreateTenantRequest)) *v1.CreateTenantRequest {
		edit(req)
		return req
	}
	tests := []struct {
		name    string
		call    func(context.Context, client) error
		badUTF8 bool // send through invalidUTF8Codec
		code    connect.Code
		field   string
	}{
		{"bad slug", create(ok("Not_A_Slug")), false, connect.CodeInvalidArgument, "slug"},
		{"short slug", create(ok("ab")), false, connect.CodeInvalidArgument, "slug"},
		{"slug ending in a hyphen", create(ok("acme-")), false, connect.CodeInvalidArgument, "slug"},
		{"reserved slug", create(ok("admin")), false, connect.CodeInvalidArgument, "slug"},
		{"reserved slug www", create(ok("www")), false, connect.CodeInvalidArgument, "slug"},
		{"missing slug", create(ok("")), false, connect.CodeInvalidArgument, "slug"},
		{"missing display name", create(&v1.CreateTenantRequest{Slug: "no-name"}), false, connect.CodeInvalidArgument, "display_name"},
		{"blank display name", create(&v1.CreateTenantRequest{Slug: "no-name", DisplayName: " \t "}), false, connect.CodeInvalidArgument, "display_name"},
		{"NUL in display name", create(&v1.CreateTenantRequest{Slug: "nul-name", DisplayName: "a\x00b"}), false, connect.CodeInvalidArgument, "display_name"},
		{"newline in display name", create(&v1.CreateTenantRequest{Slug: "nl-name", DisplayName: "a\nb"}), false, connect.CodeInvalidArgument, "display_name"},
		{"1 MB display name", create(&v1.CreateTenantRequest{Slug: "big-name", DisplayName: strings.Repeat("x", 1<<20)}), false, connect.CodeInvalidArgument, "display_name"},
		{"201-char display name", create(&v1.CreateTenantRequest{Slug: "long-name", DisplayName: strings.Repeat("é", 201)}), false, connect.CodeInvalidArgument, "display_name"},
		{"201-char external id", create(with(ok("long-ext"), func(r *v1.CreateTenantRequest) { r.ExternalId = strings.Repeat("e", 201) })), false, connect.CodeInvalidArgument, "external_id"},
		{"33 metadata keys", create(with(ok("many-keys"), func(r *v1.CreateTenantRequest) { r.Metadata = keys33 })), false, connect.CodeInvalidArgument, "metadata"},
		{"41-char metadata key", create(with(ok("long-key"), func(r *v1.CreateTenantRequest) { r.Metadata = map[string]string{strings.Repeat("k", 41): "v"} })), false, connect.CodeInvalidArgument, "metadata"},
		{"501-char metadata value", create(with(ok("long-value"), func(r *v1.CreateTenantRequest) { r.Metadata = map[string]string{"k": strings.Repeat("v", 501)} })), false, connect.CodeInvalidArgument, "metadata"},
		{"empty metadata key", create(with(ok("empty-key"), func(r *v1.CreateTenantRequest) { r.Metadata = map[string]string{"": "v"} })), false, connect.CodeInvalidArgument, "metadata"},
		{"NUL in metadata value", create(with(ok("nul-value"), func(r *v1.CreateTenantRequest) { r.Metadata = map[string]string{"k": "a\x00"} })), false, connect.CodeInvalidArgument, "metadata"},
		// Invalid UTF-8 is refused while decoding, before any handler or
		// interceptor runs: Connect answers InvalidArgument naming the
		// problem, but cannot attach a BadRequest detail.
		{"invalid UTF-8 metadata value", create(with(ok("utf8-value"), func(r *v1.CreateTenantRequest) { r.Metadata = map[string]string{"k": utf8Marker} })), true, connect.CodeInvalidArgument, ""},
		{"invalid UTF-8 metadata key", create(with(ok("utf8-key"), func(r *v1.CreateTenantRequest) { r.Metadata = map[string]string{utf8Marker: "v"} })), true, connect.CodeInvalidArgument, ""},
		{"invalid UTF-8 display name", create(&v1.CreateTenantRequest{Slug: "utf8-name", DisplayName: "Acme " + utf8Marker}), true, connect.CodeInvalidArgument, ""},
		{"duplicate slug", create(ok("taken")), false, connect.CodeAlreadyExists, ""},
		{"unknown status filter", list(&v1.ListTenantsRequest{Status: v1.TenantStatus(99)}), false, connect.CodeInvalidArgument, "status"},
		{"negative page size", list(&v1.ListTenantsRequest{PageSize: -1}), false, connect.CodeInvalidArgument, "page_size"},
		{"page size 501", list(&v1.ListTenantsRequest{PageSize: 501}), false, connect.CodeInvalidArgument, "page_size"},
		{"garbage page token", list(&v1.ListTenantsRequest{PageToken: "garbage!"}), false, connect.CodeInvalidArgument, "page_token"},
		{"base64 page token", list(&v1.ListTenantsRequest{PageToken: "eyJxIjoiIiwiYSI6WyJ4Il19AAAAAAAAAAA"}), false, connect.CodeInvalidArgument, "page_token"},
		{"201-char query", list(&v1.ListTenantsRequest{Query: strings.Repeat("q", 201)}), false, connect.CodeInvalidArgument, "query"},
		{"get: id not a UUID", get("not-a-uuid"), false, connect.CodeInvalidArgument, "id"},
		{"get: id a UUID without hyphens", get("0190f5c27d3e7a008000000000000000"), false, connect.CodeInvalidArgument, "id"},
		{"get: id missing", get(""), false, connect.CodeInvalidArgument, "id"},
		{"get: unknown tenant", get(unknown), false, connect.CodeNotFound, ""},
		{"get by slug: bad slug", bySlug("Not A Slug"), false, connect.CodeInvalidArgument, "slug"},
		{"get by slug: missing slug", bySlug(""), false, connect.CodeInvalidArgument, "slug"},
		{"get by slug: unknown tenant", bySlug("nobody-here"), false, connect.CodeNotFound, ""},
		{"update: id not a UUID", update(&v1.UpdateTenantRequest{Id: "x"}), false, connect.CodeInvalidArgument, "id"},
		{"update: unknown tenant", update(&v1.UpdateTenantRequest{Id: unknown, Metadata: map[string]string{"a": "b"}}), false, connect.CodeNotFound, ""},
		{"activate: id not a UUID", activate("1"), false, connect.CodeInvalidArgument, "id"},
		{"activate: id missing", activate(""), false, connect.CodeInvalidArgument, "id"},
		{"activate: unknown tenant", activate(unknown), false, connect.CodeNotFound, ""},
		{"cancel: id not a UUID", cancel("'; DROP TABLE tenants;--"), false, connect.CodeInvalidArgument, "id"},
		{"cancel: unknown tenant", cancel(unknown), false, connect.CodeNotFound, ""},
	}
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startServer(t, db)
		setup, _ := h.client(testserver.Protocols[0])
		h.mustCreate(t, setup, ok("taken"))
		h.mustCreate(t, setup, ok("other"))
		for _, p := range testserver.Protocols {
			for _, tc := range tests {
				t.Run(p.Name+"/"+tc.name, func(t *testing.T) {
					var c client
					if tc.badUTF8 {
						c, _ = h.client(p, connect.WithCodec(invalidUTF8Codec{json: p.JSON}))
					} else {
						c, _ = h.client(p)
					}
					before := h.tenantCount(t)
					err := tc.call(context.Background(), c)
					if after := h.tenantCount(t); after != before {
						t.Errorf("tenants went from %d to %d", before, after)
					}
					checkError(t, err, tc.code, tc.field)
					if tc.badUTF8 && !strings.Contains(err.Error(), "UTF-8") {
						t.Errorf("error %q does not say what is wrong (UTF-8)", err)
					}
				})
			}
		}
	})
}

func TestConcurrentCreateSameSlug(t *testing.T) {
	const n = 50
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startServer(t, db)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			c, _ := h.client(testserver.Protocols[i%len(testserver.Protocols)])
			wg.Go(func() {
				_, errs[i] = c.CreateTenant(context.Background(), &v1.CreateTenantRequest{
					Slug: "contested", DisplayName: fmt.Sprintf("Contender %d", i),
				})
			})
		}
		wg.Wait()
		codes := map[connect.Code]int{}
		for _, err := range errs {
			if err == nil {
				codes[0]++
			} else {
				codes[connect.CodeOf(err)]++
			}
		}
		if codes[0] != 1 || codes[connect.CodeAlreadyExists] != n-1 {
			t.Errorf("outcomes %v (0 = success), want 1 success and %d AlreadyExists", codes, n-1)
		}
		if got := h.tenantCount(t); got != 1 {
			t.Errorf("%d tenants stored, want 1", got)
		}
	})
}

func TestRawConnectHTTP(t *testing.T) {
	const (
		create = "/" + tenantregistryv1connect.TenantServiceName + "/CreateTenant"
		list   = "/" + tenantregistryv1connect.TenantServiceName + "/ListTenants"
	)
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		wantStatus  int
		wantCode    string // Connect error code in the JSON body; "" for none
	}{
		{"well-formed JSON", http.MethodPost, create, "application/json", `{"slug":"raw-ok","displayName":"Raw"}`, 200, ""},
		{"malformed JSON", http.MethodPost, create, "application/json", `{"slug":`, 400, "invalid_argument"},
		{"JSON array", http.MethodPost, create, "application/json", `[1,2]`, 400, "invalid_argument"},
		{"empty body", http.MethodPost, create, "application/json", ``, 400, "invalid_argument"},
		{"wrong content type", http.MethodPost, create, "text/plain", `{"slug":"raw-text","displayName":"Raw"}`, 415, ""},
		{"body over MaxMessageBytes", http.MethodPost, create, "application/json",
			`{"slug":"raw-big","displayName":"` + strings.Repeat("x", transport.DefaultConfig().MaxMessageBytes) + `"}`, 429, "resource_exhausted"},
		{"string where a number is expected", http.MethodPost, list, "application/json", `{"pageSize":"three"}`, 400, "invalid_argument"},
		{"number out of int32 range", http.MethodPost, list, "application/json", `{"pageSize":4294967296}`, 400, "invalid_argument"},
		{"unknown enum number", http.MethodPost, list, "application/json", `{"status":99}`, 400, "invalid_argument"},
		{"invalid UTF-8 in JSON", http.MethodPost, create, "application/json", "{\"slug\":\"raw-utf8\",\"displayName\":\"\xff\"}", 400, "invalid_argument"},
		{"garbage binary proto", http.MethodPost, create, "application/proto", "\xff\xff\xff", 400, "invalid_argument"},
		// An enum name the server does not know must not be dropped
		// silently: the filter would widen to every status.
		{"unknown enum name", http.MethodPost, list, "application/json", `{"status":"TENANT_STATUS_DELETED"}`, 400, "invalid_argument"},
		{"short enum name", http.MethodPost, list, "application/json", `{"status":"FROZEN"}`, 400, "invalid_argument"},
		// A misspelt field must not be ignored silently.
		{"unknown JSON field", http.MethodPost, create, "application/json", `{"slug":"raw-unknown","displayName":"Raw","colour":"red"}`, 400, "invalid_argument"},
		{"GET of a write", http.MethodGet, create + "?encoding=json&message=%7B%7D&connect=v1", "", "", 405, ""},
		{"GET with a malformed message", http.MethodGet, list + "?encoding=json&message=%7B&connect=v1", "", "", 400, "invalid_argument"},
	}
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		h := startServer(t, db)
		httpClient := testserver.HTTP1
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				before := h.tenantCount(t)
				req, err := http.NewRequest(tc.method, h.URL+tc.path, strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				if tc.contentType != "" {
					req.Header.Set("Content-Type", tc.contentType)
				}
				req.Header.Set("Connect-Protocol-Version", "1")
				res, err := httpClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				body, err := io.ReadAll(res.Body)
				if err != nil {
					t.Fatal(err)
				}
				var e struct {
					Code string `json:"code"`
				}
				_ = json.Unmarshal(body, &e)
				if res.StatusCode != tc.wantStatus {
					t.Errorf("HTTP %d, want %d; body %q", res.StatusCode, tc.wantStatus, body)
				}
				if res.StatusCode >= 500 {
					t.Errorf("server error for caller input: HTTP %d", res.StatusCode)
				}
				if e.Code != tc.wantCode {
					t.Errorf("code %q, want %q; body %q", e.Code, tc.wantCode, body)
				}
				if e.Code == "internal" || e.Code == "unknown" {
					t.Errorf("caller input answered with %q", e.Code)
				}
				want := before
				if res.StatusCode == http.StatusOK && tc.path == create {
					want++
				}
				if after := h.tenantCount(t); after != want {
					t.Errorf("tenants went from %d to %d, want %d", before, after, want)
				}
			})
		}
	})
}
