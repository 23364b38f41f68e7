package transport_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

type auditClients struct {
	srv     *testserver.Server
	tenants tenantregistryv1connect.TenantServiceClient
	audit   tenantregistryv1connect.AuditServiceClient
}

func startAudit(t *testing.T, db *persistence.DB) auditClients {
	return auditClientsOn(testserver.Start(t, db))
}

func auditClientsOn(srv *testserver.Server) auditClients {
	return auditClients{
		srv:     srv,
		tenants: tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.URL),
		audit:   tenantregistryv1connect.NewAuditServiceClient(testserver.HTTP1, srv.URL),
	}
}

func (c auditClients) createTenant(t *testing.T, slug string) *v1.Tenant {
	t.Helper()
	res, err := c.tenants.CreateTenant(context.Background(), &v1.CreateTenantRequest{Slug: slug, DisplayName: "Tenant " + slug})
	if err != nil {
		t.Fatal(err)
	}
	return res.GetTenant()
}

func (c auditClients) count(t *testing.T) int {
	t.Helper()
	n, err := c.srv.DB.Bun().NewSelect().Table("audit_events").Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func productEvent(tenantID, action string) *v1.AuditEvent {
	return &v1.AuditEvent{
		TenantId: tenantID, Product: "analytics", Action: action, Crud: "C",
		Actor:    &v1.AuditActor{Id: "user-1", Name: "Ada", Type: "user"},
		Target:   &v1.AuditTarget{Id: "dash-1", Type: "dashboard", Name: "Revenue"},
		SourceIp: "::ffff:192.0.2.7", Fields: map[string]string{"k": "v"},
	}
}

func TestRecordAuditEvent(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startAudit(t, db)
		tn := c.createTenant(t, "acme-audit")

		res, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: productEvent(tn.Id, "dashboard.created")})
		if err != nil {
			t.Fatal(err)
		}
		e := res.GetEvent()
		if e.GetCrud() != "c" || e.GetSourceIp() != "192.0.2.7" || e.GetSeq() != 2 || len(e.GetHash()) != 64 ||
			e.GetOccurTime().AsTime() != c.srv.Clock.Now() || e.GetId() == "" {
			t.Fatalf("stored event: %v", e)
		}

		// Idempotent by (tenant, product, external_id).
		withID := productEvent(tn.Id, "dashboard.deleted")
		withID.ExternalId = "ext-1"
		first, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: withID})
		if err != nil {
			t.Fatal(err)
		}
		withID.Description = "a retry"
		again, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: withID})
		if err != nil {
			t.Fatal(err)
		}
		if again.GetEvent().GetId() != first.GetEvent().GetId() || again.GetEvent().GetDescription() != "" {
			t.Fatalf("retry stored a second event: %v vs %v", again.GetEvent(), first.GetEvent())
		}
		before := c.count(t)

		long := strings.Repeat("x", 1<<20)
		manyFields := map[string]string{}
		for i := range 10000 {
			manyFields[fmt.Sprint("f", i)] = "v"
		}
		bad := []struct {
			name  string
			edit  func(e *v1.AuditEvent)
			field string
		}{
			{"no action", func(e *v1.AuditEvent) { e.Action = "" }, "event.action"},
			{"no crud", func(e *v1.AuditEvent) { e.Crud = "" }, "event.crud"},
			{"crud outside CRUD", func(e *v1.AuditEvent) { e.Crud = "x" }, "event.crud"},
			{"no actor", func(e *v1.AuditEvent) { e.Actor = nil }, "event.actor.id"},
			{"source ip not an ip", func(e *v1.AuditEvent) { e.SourceIp = "10.0.0.300" }, "event.source_ip"},
			{"10000 fields", func(e *v1.AuditEvent) { e.Fields = manyFields }, "event.fields"},
			{"1 MB description", func(e *v1.AuditEvent) { e.Description = long }, "event.description"},
			{"no product", func(e *v1.AuditEvent) { e.Product = "" }, "event.product"},
			{"bad tenant id", func(e *v1.AuditEvent) { e.TenantId = "1; DROP TABLE audit_events" }, "event.tenant_id"},
			{"future occur time", func(e *v1.AuditEvent) { e.OccurTime = timestamppb.New(time.Now().Add(24 * time.Hour)) }, "event.occur_time"},
			{"invalid occur time", func(e *v1.AuditEvent) { e.OccurTime = &timestamppb.Timestamp{Seconds: -1 << 62} }, "event.occur_time"},
			{"NUL in actor", func(e *v1.AuditEvent) { e.Actor.Name = "a\x00b" }, "event.actor.name"},
		}
		for _, tc := range bad {
			e := productEvent(tn.Id, "x.y")
			tc.edit(e)
			_, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: e})
			assertViolation(t, tc.name, err, tc.field)
		}
		_, err = c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: productEvent("01a20000-0000-7000-8000-000000000000", "x.y")})
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("unknown tenant: %v, want NotFound", err)
		}
		// Anonymous events need no actor.
		anon := productEvent(tn.Id, "page.viewed")
		anon.Actor, anon.IsAnonymous, anon.Crud = nil, true, "r"
		if _, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: anon}); err != nil {
			t.Fatalf("anonymous event: %v", err)
		}
		if got := c.count(t); got != before+1 {
			t.Fatalf("refused events changed the log: %d events, want %d", got, before+1)
		}
	})
}

func assertViolation(t *testing.T, name string, err error, field string) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("%s: got %v, want InvalidArgument", name, err)
		return
	}
	var ce *connect.Error
	errors.As(err, &ce)
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if br, ok := v.(*errdetails.BadRequest); ok && derr == nil {
			for _, fv := range br.GetFieldViolations() {
				if fv.GetField() == field {
					return
				}
			}
		}
	}
	t.Errorf("%s: no violation names %s: %v", name, field, err)
}

func TestRecordAuditEventsBatch(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startAudit(t, db)
		a, b := c.createTenant(t, "batch-a"), c.createTenant(t, "batch-b")
		var events []*v1.AuditEvent
		for i := range 300 {
			tenant := a.Id
			if i%3 == 0 {
				tenant = b.Id
			}
			events = append(events, productEvent(tenant, "row.imported"))
		}
		dup := productEvent(a.Id, "row.imported")
		dup.ExternalId = "same"
		events = append(events, dup, dup)
		res, err := c.audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: events})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(res.GetEvents()); n != 302 || res.GetEvents()[300].GetId() != res.GetEvents()[301].GetId() {
			t.Fatalf("batch answered %d events; duplicates by external id must be one event", n)
		}
		before := c.count(t)

		// All or nothing: one bad event refuses the whole batch.
		events[150] = &v1.AuditEvent{TenantId: a.Id, Product: "analytics", Action: "x.y", Crud: "c"}
		_, err = c.audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: events})
		assertViolation(t, "one bad event", err, "events[150].actor.id")
		tooMany := make([]*v1.AuditEvent, 501)
		for i := range tooMany {
			tooMany[i] = productEvent(a.Id, "x.y")
		}
		_, err = c.audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: tooMany})
		assertViolation(t, "501 events", err, "events")
		_, err = c.audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{})
		assertViolation(t, "no events", err, "events")
		if got := c.count(t); got != before {
			t.Fatalf("refused batches wrote %d events", got-before)
		}
		for _, tn := range []*v1.Tenant{a, b} {
			r, err := c.audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: tn.Id})
			if err != nil || !r.GetOk() {
				t.Fatalf("chain of %s: %v %v", tn.Slug, r, err)
			}
		}
	})
}

func TestListAuditEvents(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startAudit(t, db)
		tn := c.createTenant(t, "lister") // seq 1: tenant.created
		other := c.createTenant(t, "other-tenant")
		actions := []string{"api_key.created", "api_key.revoked", "user.login", "api_key.rotated", "api_keys.listed"}
		for i, a := range actions {
			e := productEvent(tn.Id, a)
			e.OccurTime = timestamppb.New(c.srv.Clock.Now().Add(time.Duration(i-10) * time.Minute))
			if i == 2 {
				e.Actor.Id, e.Target.Id, e.Product = "user-2", "dash-2", "helpdesk"
			}
			if _, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: e}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: productEvent(other.Id, "api_key.created")}); err != nil {
			t.Fatal(err)
		}
		base := c.srv.Clock.Now()
		tests := []struct {
			name string
			req  *v1.ListAuditEventsRequest
			want []string
		}{
			{"all, newest first", &v1.ListAuditEventsRequest{TenantId: tn.Id}, []string{"api_keys.listed", "api_key.rotated", "user.login", "api_key.revoked", "api_key.created", "tenant.created"}},
			{"action prefix", &v1.ListAuditEventsRequest{TenantId: tn.Id, Action: "api_key.*"}, []string{"api_key.rotated", "api_key.revoked", "api_key.created"}},
			{"exact action", &v1.ListAuditEventsRequest{TenantId: tn.Id, Action: "user.login"}, []string{"user.login"}},
			{"product", &v1.ListAuditEventsRequest{TenantId: tn.Id, Product: "helpdesk"}, []string{"user.login"}},
			{"actor", &v1.ListAuditEventsRequest{TenantId: tn.Id, ActorId: "user-2"}, []string{"user.login"}},
			{"target", &v1.ListAuditEventsRequest{TenantId: tn.Id, TargetId: "dash-2"}, []string{"user.login"}},
			{"since and until", &v1.ListAuditEventsRequest{TenantId: tn.Id, Since: timestamppb.New(base.Add(-9 * time.Minute)), Until: timestamppb.New(base.Add(-7 * time.Minute))}, []string{"user.login", "api_key.revoked"}},
		}
		for _, tc := range tests {
			res, err := c.audit.ListAuditEvents(ctx, tc.req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			var got []string
			for _, e := range res.GetEvents() {
				if e.GetTenantId() != tn.Id {
					t.Fatalf("%s: event of another tenant listed", tc.name)
				}
				got = append(got, e.GetAction())
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}

		// Paging collects every event once, newest first.
		var seqs []int64
		req := &v1.ListAuditEventsRequest{TenantId: tn.Id, PageSize: 4}
		for {
			res, err := c.audit.ListAuditEvents(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range res.GetEvents() {
				seqs = append(seqs, e.GetSeq())
			}
			if res.GetNextPageToken() == "" {
				break
			}
			req.PageToken = res.GetNextPageToken()
		}
		if fmt.Sprint(seqs) != "[6 5 4 3 2 1]" {
			t.Fatalf("paged seqs %v", seqs)
		}
		first, _ := c.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: tn.Id, PageSize: 2})
		bad := []struct {
			name  string
			req   *v1.ListAuditEventsRequest
			field string
		}{
			{"token from another query", &v1.ListAuditEventsRequest{TenantId: tn.Id, Action: "api_key.*", PageToken: first.GetNextPageToken()}, "page_token"},
			{"token edited by hand", &v1.ListAuditEventsRequest{TenantId: tn.Id, PageToken: "x" + first.GetNextPageToken()}, "page_token"},
			{"since after until", &v1.ListAuditEventsRequest{TenantId: tn.Id, Since: timestamppb.New(base), Until: timestamppb.New(base.Add(-time.Hour))}, "since"},
			{"bad action filter", &v1.ListAuditEventsRequest{TenantId: tn.Id, Action: "*"}, "action"},
			{"page size", &v1.ListAuditEventsRequest{TenantId: tn.Id, PageSize: 501}, "page_size"},
			{"tenant id", &v1.ListAuditEventsRequest{TenantId: "nope"}, "tenant_id"},
		}
		for _, tc := range bad {
			_, err := c.audit.ListAuditEvents(ctx, tc.req)
			assertViolation(t, tc.name, err, tc.field)
		}
	})
}

func TestExportAuditEvents(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startAudit(t, db)
		tn := c.createTenant(t, "exporter")
		var events []*v1.AuditEvent
		for range 1200 { // more than one internal page of the export
			events = append(events, productEvent(tn.Id, "row.exported"))
		}
		for i := 0; i < len(events); i += 500 {
			if _, err := c.audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: events[i:min(i+500, len(events))]}); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range testserver.Protocols {
			client := tenantregistryv1connect.NewAuditServiceClient(p.HTTP, c.srv.URL, p.Options...)
			stream, err := client.ExportAuditEvents(ctx, &v1.ExportAuditEventsRequest{TenantId: tn.Id})
			if err != nil {
				t.Fatalf("%s: %v", p.Name, err)
			}
			n, last := 0, int64(1<<62)
			for stream.Receive() {
				seq := stream.Msg().GetEvent().GetSeq()
				if seq >= last {
					t.Fatalf("%s: export not newest first", p.Name)
				}
				last = seq
				n++
			}
			if err := stream.Err(); err != nil || n != 1201 {
				t.Fatalf("%s: exported %d events, err %v; want 1201", p.Name, n, err)
			}
			bad, err := client.ExportAuditEvents(ctx, &v1.ExportAuditEventsRequest{TenantId: tn.Id, Action: "*"})
			if err == nil {
				for bad.Receive() {
				}
				err = bad.Err()
			}
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("%s: bad export filter: %v", p.Name, err)
			}
		}
	})
}

func TestVerifyAuditChainFindsTampering(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startAudit(t, db)
		tn := c.createTenant(t, "tamper")
		for range 9 {
			if _, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: productEvent(tn.Id, "x.y")}); err != nil {
				t.Fatal(err)
			}
		}
		verify := func() *v1.VerifyAuditChainResponse {
			r, err := c.audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: tn.Id})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		if r := verify(); !r.GetOk() || r.GetEventsChecked() != 10 {
			t.Fatalf("untouched chain: %v", r)
		}
		exec := func(q string, args ...any) {
			if _, err := db.Bun().ExecContext(ctx, q, args...); err != nil {
				t.Fatal(err)
			}
		}
		exec("UPDATE audit_events SET description = 'nothing happened' WHERE tenant_id = ? AND seq = 7", tn.Id)
		if r := verify(); r.GetOk() || r.GetFirstBrokenSeq() != 7 {
			t.Fatalf("edited event: %v", r)
		}
		exec("DELETE FROM audit_events WHERE tenant_id = ? AND seq = 4", tn.Id)
		if r := verify(); r.GetOk() || r.GetFirstBrokenSeq() != 4 || r.GetEventsChecked() != 3 {
			t.Fatalf("deleted event: %v", r)
		}
		exec("DELETE FROM audit_events WHERE tenant_id = ? AND seq >= 4", tn.Id)
		if r := verify(); r.GetOk() || r.GetFirstBrokenSeq() != 4 {
			t.Fatalf("deleted tail: %v", r)
		}
		_, err := c.audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: "01a20000-0000-7000-8000-000000000000"})
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("unknown tenant: %v", err)
		}
	})
}

func TestConcurrentAppendsKeepTheChain(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startAudit(t, db)
		tn := c.createTenant(t, "concurrent")
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			wg.Go(func() {
				e := productEvent(tn.Id, "x.y")
				if i%2 == 0 {
					e.ExternalId = fmt.Sprint("dup-", i%4) // concurrent retries of two events
				}
				_, err := c.audit.RecordAuditEvent(ctx, &v1.RecordAuditEventRequest{Event: e})
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		r, err := c.audit.VerifyAuditChain(ctx, &v1.VerifyAuditChainRequest{TenantId: tn.Id})
		if err != nil || !r.GetOk() || r.GetEventsChecked() != 1+20+2 {
			t.Fatalf("chain after concurrent appends: %v %v", r, err)
		}
	})
}

// TestTenantChangesAreAudited checks that every state-changing tenant RPC
// writes exactly one event in its transaction, and that refused changes
// and no-ops write none.
func TestTenantChangesAreAudited(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		c := startAudit(t, db)
		tn := c.createTenant(t, "audited")
		name := "Audited Inc"
		steps := []struct {
			name   string
			call   func() error
			action string // "" when no event may be written
		}{
			{"create", func() error { return nil }, "tenant.created"},
			{"update", func() error {
				_, err := c.tenants.UpdateTenant(ctx, &v1.UpdateTenantRequest{Id: tn.Id, DisplayName: &name})
				return err
			}, "tenant.updated"},
			{"no-op update", func() error {
				_, err := c.tenants.UpdateTenant(ctx, &v1.UpdateTenantRequest{Id: tn.Id, DisplayName: &name})
				return err
			}, ""},
			{"activate", func() error {
				_, err := c.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tn.Id})
				return err
			}, "tenant.activated"},
			{"activate again", func() error {
				_, err := c.tenants.ActivateTenant(ctx, &v1.ActivateTenantRequest{Id: tn.Id})
				return err
			}, ""},
			{"cancel", func() error {
				_, err := c.tenants.CancelTenant(ctx, &v1.CancelTenantRequest{Id: tn.Id})
				return err
			}, "tenant.canceled"},
			{"refused create", func() error {
				_, err := c.tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "audited", DisplayName: "dup"})
				if connect.CodeOf(err) != connect.CodeAlreadyExists {
					return fmt.Errorf("duplicate create: %v", err)
				}
				return nil
			}, ""},
		}
		seen := 0
		for _, s := range steps {
			if err := s.call(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			res, err := c.audit.ListAuditEvents(ctx, &v1.ListAuditEventsRequest{TenantId: tn.Id, PageSize: 100})
			if err != nil {
				t.Fatal(err)
			}
			want := seen
			if s.action != "" {
				want++
			}
			if len(res.GetEvents()) != want {
				t.Fatalf("%s: %d events, want %d", s.name, len(res.GetEvents()), want)
			}
			seen = want
			if s.action == "" {
				continue
			}
			e := res.GetEvents()[0]
			if e.GetAction() != s.action || e.GetProduct() != "tenant-registry" || e.GetActor().GetId() != "dev" ||
				e.GetTarget().GetId() != tn.Id || e.GetTarget().GetType() != "tenant" || e.GetSourceIp() != "127.0.0.1" {
				t.Fatalf("%s: event %v", s.name, e)
			}
		}
	})
}
