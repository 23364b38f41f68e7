package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/transport"
)

// TestLargeAnswersHoldBoundedMemory gives a tenant 100 API keys of the
// largest metadata (a page of them is about 1.8 MB) and lists them as the
// tenant's own key would, never taking the answers, over HTTP/1.1 and
// over h2c with a flow-control window of zero. The answers held for one
// tenant stop at MaxHeldAnswerBytesPerTenant, another tenant's large
// answers still go out, and the tenant lists again once its held answers
// are closed.
func TestLargeAnswersHoldBoundedMemory(t *testing.T) {
	for _, d := range databases {
		t.Run(d.name, func(t *testing.T) {
			env, admin := keyedEnv(t, d.url(t))
			srv := serve(t, env)
			hoarder, hoarderKey, largeKey := seedLargeKeys(t, srv, admin, "key-hoarder", 100)
			bystander, bystanderKey, _ := seedLargeKeys(t, srv, admin, "key-bystander", 10)
			listProcedure, getProcedure := tenantregistryv1connect.ApiKeyServiceListApiKeysProcedure, tenantregistryv1connect.ApiKeyServiceGetApiKeyProcedure
			page := fmt.Sprintf(`{"tenantId":%q,"pageSize":100}`, hoarder)
			one := fmt.Sprintf(`{"id":%q}`, largeKey)
			list := func(tenantID, key string) error {
				keys := tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, srv.baseURL, withBearer(key))
				_, err := keys.ListApiKeys(context.Background(), &v1.ListApiKeysRequest{TenantId: tenantID, PageSize: 100})
				return err
			}
			pageBytes := largeKeyBytes * 100

			for _, tc := range []struct {
				name string
				// brims: one key's answer (17 kB) stalls too, so the bound
				// can be filled to within one. Over HTTP/1.1 the kernel
				// takes such an answer whole.
				brims bool
				stall func(procedure, body string) (c net.Conn, status string) // a call as the hoarder whose answer is not taken
			}{
				{"http/1.1", false, func(procedure, body string) (net.Conn, string) {
					c, status := stallRequest(t, srv, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: registry\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
						procedure, hoarderKey, len(body), body))
					return c, strings.Fields(status)[1]
				}},
				{"h2c", true, func() func(string, string) (net.Conn, string) {
					var c *h2Client
					id := uint32(1)
					return func(procedure, body string) (net.Conn, string) {
						if c == nil { // one connection, a stream per answer, none of which may receive a byte of it
							c = dialH2(t, srv, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
						}
						status := c.stalledCall(id, procedure, hoarderKey, body)
						id += 2
						return c.conn, status
					}
				}()},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := liveHeap()
					conns := map[net.Conn]bool{}
					t.Cleanup(func() {
						for c := range conns {
							c.Close()
						}
					})
					held := 0
					for {
						c, status := tc.stall(listProcedure, page)
						conns[c] = true
						if status == "429" {
							break
						}
						if status != "200" {
							t.Fatalf("list: status %s", status)
						}
						if held++; held*pageBytes > transport.MaxHeldAnswerBytesPerTenant {
							t.Fatalf("%d answers of about %d bytes held for one tenant, want them refused past %d MiB", held, pageBytes, transport.MaxHeldAnswerBytesPerTenant>>20)
						}
					}
					grown := liveHeap() - before
					t.Logf("%d answers not taken hold %.1f MB", held, float64(grown)/1e6)
					if held < 2 {
						t.Errorf("%d answers held before one was refused, want the tenant's %d MiB to hold more", held, transport.MaxHeldAnswerBytesPerTenant>>20)
					}
					if bound := int64(transport.MaxHeldAnswerBytesPerTenant) * 3; grown > bound {
						t.Errorf("held answers hold %d bytes, want at most %d", grown, bound)
					}
					// Answers of one large key fill what is left of the bound.
					for small := 0; tc.brims; small++ {
						c, status := tc.stall(getProcedure, one)
						conns[c] = true
						if status == "429" {
							break
						}
						if status != "200" || small*largeKeyBytes > pageBytes {
							t.Fatalf("answer of one key after %d: status %s, want 429 before a page's worth of them", small, status)
						}
					}
					err := list(hoarder, hoarderKey)
					if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "tenant") {
						t.Errorf("list with the tenant's answers held: %v, want resource_exhausted naming the tenant's bound", err)
					}
					if err := list(bystander, bystanderKey); err != nil {
						t.Errorf("another tenant's list while this one's answers are held: %v", err)
					}
					// A change's answer (a key of the largest metadata) is not refused.
					keys := tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, srv.baseURL, withBearer(hoarderKey))
					renamed := "renamed-" + tc.name
					if _, err := keys.UpdateApiKey(context.Background(), &v1.UpdateApiKeyRequest{Id: largeKey, Name: renamed, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}); err != nil {
						t.Errorf("a change while the tenant's answers are held: %v", err)
					}
					// Changes whose answers are not taken count too: past the
					// bound the next change is refused before it is made.
					updateProcedure := tenantregistryv1connect.ApiKeyServiceUpdateApiKeyProcedure
					for changes := 0; tc.brims; changes++ {
						name := fmt.Sprint("stalled-", changes)
						_, status := tc.stall(updateProcedure, fmt.Sprintf(`{"id":%q,"name":%q,"updateMask":"name"}`, largeKey, name))
						if status == "429" {
							got, err := keys.GetApiKey(context.Background(), &v1.GetApiKeyRequest{Id: largeKey})
							if err == nil && got.GetApiKey().GetName() == name {
								t.Errorf("the refused change %q was made", name)
							}
							break
						}
						if status != "200" || changes > 1 {
							t.Fatalf("change %d with the tenant's bound held: status %s, want 429 from the second", changes, status)
						}
					}
					for c := range conns {
						c.Close()
					}
					servedAgain(t, func() error { return list(hoarder, hoarderKey) })
				})
			}

			// Tenants that each hold their own bound's worth spend the
			// replica's: the fifth is refused before its own is full.
			t.Run("replica bound", func(t *testing.T) {
				var conns []net.Conn
				t.Cleanup(func() {
					for _, c := range conns {
						c.Close()
					}
				})
				held := 0
				for crowd := 0; ; crowd++ {
					if crowd == transport.MaxHeldAnswerBytes/transport.MaxHeldAnswerBytesPerTenant+1 {
						t.Fatalf("%d tenants hold %d pages of about %d bytes, and none was refused by the replica's %d MiB", crowd, held, pageBytes, transport.MaxHeldAnswerBytes>>20)
					}
					tenantID, key, _ := seedLargeKeys(t, srv, admin, fmt.Sprintf("key-crowd-%d", crowd), 100)
					c := dialH2(t, srv, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
					conns = append(conns, c.conn)
					for id := uint32(1); c.stalledCall(id, listProcedure, key, fmt.Sprintf(`{"tenantId":%q,"pageSize":100}`, tenantID)) == "200"; id += 2 {
						if held++; held*pageBytes > transport.MaxHeldAnswerBytes {
							t.Fatalf("%d pages of about %d bytes held, want them refused past %d MiB", held, pageBytes, transport.MaxHeldAnswerBytes>>20)
						}
					}
					err := list(tenantID, key)
					if connect.CodeOf(err) != connect.CodeResourceExhausted {
						t.Fatalf("list of tenant %d with its answers held: %v, want resource_exhausted", crowd, err)
					}
					if strings.Contains(err.Error(), "on this server") {
						t.Logf("%d pages held by %d tenants when the replica's bound refused one", held, crowd+1)
						if crowd < transport.MaxHeldAnswerBytes/transport.MaxHeldAnswerBytesPerTenant-1 {
							t.Errorf("the replica's bound refused tenant %d, want %d tenants' bounds to fit in it", crowd, transport.MaxHeldAnswerBytes/transport.MaxHeldAnswerBytesPerTenant)
						}
						if err := list(hoarder, hoarderKey); connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "on this server") {
							t.Errorf("a page of a tenant holding nothing while the replica's bound is spent: %v, want resource_exhausted naming the replica's bound", err)
						}
						for _, c := range conns {
							c.Close()
						}
						servedAgain(t, func() error { return list(tenantID, key) })
						return
					}
				}
			})
		})
	}
}

// servedAgain waits for call, refused with resource_exhausted while
// what is held goes, to succeed.
func servedAgain(t *testing.T, call func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := call()
		if err == nil {
			return
		}
		if connect.CodeOf(err) != connect.CodeResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("once what was held was closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// largeKeyBytes is about what a key of the largest metadata adds to an
// answer: 32 entries of a 40-byte key and a 500-byte value.
const largeKeyBytes = domain.MaxMetadataKeys * (domain.MaxMetadataKeyLen + domain.MaxMetadataValueLen)

// seedLargeKeys creates, as the holder of admin, a tenant and n keys of
// the largest metadata for it, and returns its id, the plaintext of a key of its own that manages
// its keys, and the id of one of the large keys.
func seedLargeKeys(t *testing.T, srv *running, admin, slug string, n int) (tenantID, key, largeKeyID string) {
	t.Helper()
	ctx := context.Background()
	tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL, withBearer(admin))
	tn, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: slug, DisplayName: slug})
	if err != nil {
		t.Fatal(err)
	}
	tenantID = tn.GetTenant().GetId()
	keys := tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, srv.baseURL, withBearer(admin))
	metadata := make(map[string]string, domain.MaxMetadataKeys)
	for i := range domain.MaxMetadataKeys {
		name := fmt.Sprintf("k%02d", i)
		metadata[name+strings.Repeat("x", domain.MaxMetadataKeyLen-len(name))] = strings.Repeat("v", domain.MaxMetadataValueLen)
	}
	for i := range n {
		created, err := keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tenantID, Name: fmt.Sprintf("large-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		largeKeyID = created.GetApiKey().GetId()
		_, err = keys.UpdateApiKey(ctx, &v1.UpdateApiKeyRequest{Id: largeKeyID, Metadata: metadata, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"metadata"}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	own, err := keys.CreateApiKey(ctx, &v1.CreateApiKeyRequest{TenantId: tenantID, Name: "lister", Scopes: []string{domain.ScopeKeysManage}})
	if err != nil {
		t.Fatal(err)
	}
	return tenantID, own.GetPlaintextKey(), largeKeyID
}

// stalledCall starts a Connect JSON call of procedure with body as the
// holder of key on stream id, and returns the answer's status once its
// headers came; the window of zero keeps every byte of its body back.
func (c *h2Client) stalledCall(id uint32, procedure, key, body string) string {
	c.t.Helper()
	c.hbuf.Reset()
	for _, h := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", "registry"}, {":path", procedure},
		{"content-type", "application/json"}, {"authorization", "Bearer " + key}, {"content-length", fmt.Sprint(len(body))},
	} {
		_ = c.enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
	if err := c.fr.WriteData(id, true, []byte(body)); err != nil {
		c.t.Fatal(err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(margin))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("waiting for the headers of stream %d: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return f.PseudoValue("status")
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = c.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			c.t.Fatalf("the server closed the connection: %v", f.ErrCode)
		}
	}
}
