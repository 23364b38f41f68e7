package transport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// oldContract is the contract as released before limits, key controls and
// etags (`buf build -o`); `task lint` also runs buf breaking against it.
func oldContract(t *testing.T) *protoregistry.Files {
	t.Helper()
	raw, err := os.ReadFile("testdata/contract-before-limits.binpb")
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet // a buf image is one, with extras
	if err := proto.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// oldClient calls the server as a client generated from the old contract:
// it sends and decodes the old messages, discarding what it does not know
// as generated Connect clients do.
type oldClient struct {
	t     *testing.T
	files *protoregistry.Files
	url   string
	proto testserver.Protocol
}

// call sends the old request written as JSON to service/method and
// returns the old response as JSON.
func (c oldClient) call(service, method, request string) (string, error) {
	c.t.Helper()
	d, err := c.files.FindDescriptorByName(protoreflect.FullName("tenantregistry.v1." + service))
	if err != nil {
		c.t.Fatal(err)
	}
	m := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(method))
	req := dynamicpb.NewMessage(m.Input())
	if err := protojson.Unmarshal([]byte(request), req); err != nil {
		c.t.Fatalf("%s request: %v", method, err)
	}
	opts := append([]connect.ClientOption{connect.WithResponseInitializer(func(_ connect.Spec, msg any) error {
		*msg.(*dynamicpb.Message) = *dynamicpb.NewMessage(m.Output())
		return nil
	})}, c.proto.Options...)
	client := connect.NewClient[dynamicpb.Message, dynamicpb.Message](c.proto.HTTP, c.url+"/tenantregistry.v1."+service+"/"+method, opts...)
	res, err := client.CallUnary(context.Background(), connect.NewRequest(req))
	if err != nil {
		return "", err
	}
	out, err := protojson.Marshal(res.Msg)
	if err != nil {
		c.t.Fatal(err)
	}
	return string(out), nil
}

func (c oldClient) must(service, method, request string) string {
	c.t.Helper()
	out, err := c.call(service, method, request)
	if err != nil {
		c.t.Fatalf("an old client's %s: %v", method, err)
	}
	return out
}

// field reads one top-level field of an old response.
func field(t *testing.T, res, path string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(res), &m); err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Split(path, ".") {
		switch v := m[p].(type) {
		case map[string]any:
			m = v
		case nil:
			return ""
		default:
			return fmt.Sprint(v)
		}
	}
	return "object"
}

// TestOldClientsKeepWorking plays a client built from the contract before
// limits, key controls and etags against today's server, on every
// protocol: its requests mean what they meant (an update without a mask
// changes the fields it names, a write without an etag is not refused),
// today's responses decode with the old types, and a key disabled today is
// refused to it as not valid.
func TestOldClientsKeepWorking(t *testing.T) {
	files := oldContract(t)
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		srv := testserver.Start(t, db)
		ctx := context.Background()
		keys := tenantregistryv1connect.NewApiKeyServiceClient(testserver.HTTP1, srv.URL)
		catalog := tenantregistryv1connect.NewCatalogServiceClient(testserver.HTTP1, srv.URL)
		entitlements := tenantregistryv1connect.NewEntitlementServiceClient(testserver.HTTP1, srv.URL)
		for _, p := range testserver.Protocols {
			t.Run(p.Name, func(t *testing.T) {
				old := oldClient{t: t, files: files, url: srv.URL, proto: p}
				slug := "old-" + p.Name
				tenant := old.must("TenantService", "CreateTenant", `{"slug":"`+slug+`","displayName":"Old"}`)
				tenantID := field(t, tenant, "tenant.id")
				product := "old" + strings.ReplaceAll(p.Name, "-", "")
				old.must("CatalogService", "CreateProduct", `{"key":"`+product+`","displayName":"Old product"}`)
				// Today's operator gives the product limits the old client does not know.
				if _, err := catalog.UpdateProduct(ctx, &v1.UpdateProductRequest{Key: product, DefaultLimits: map[string]int64{"seats": 3}}); err != nil {
					t.Fatal(err)
				}
				old.must("EntitlementService", "GrantEntitlement", `{"tenantId":"`+tenantID+`","product":"`+product+`"}`)
				check := old.must("EntitlementService", "CheckEntitlement", `{"tenantId":"`+tenantID+`","product":"`+product+`"}`)
				if field(t, check, "entitled") != "true" {
					t.Errorf("old CheckEntitlement: %s", check)
				}

				updated := old.must("TenantService", "UpdateTenant", `{"id":"`+tenantID+`","displayName":"Renamed"}`)
				if field(t, updated, "tenant.displayName") != "Renamed" || field(t, updated, "tenant.slug") != slug {
					t.Errorf("an old partial UpdateTenant: %s", updated)
				}
				renamed := old.must("CatalogService", "UpdateProduct", `{"key":"`+product+`","description":"still limited"}`)
				if field(t, renamed, "product.description") != "still limited" {
					t.Errorf("an old UpdateProduct: %s", renamed)
				}
				if got, err := entitlements.CheckEntitlement(ctx, &v1.CheckEntitlementRequest{TenantId: tenantID, Product: product}); err != nil || got.GetLimits()["seats"] != 3 {
					t.Errorf("an old UpdateProduct, which knows no limits, changed them: %v, %v", got, err)
				}

				created := old.must("ApiKeyService", "CreateApiKey", `{"tenantId":"`+tenantID+`","name":"old"}`)
				key, keyID := field(t, created, "plaintextKey"), field(t, created, "apiKey.id")
				verify := `{"key":"` + key + `","product":"` + product + `"}`
				if res := old.must("ApiKeyService", "VerifyApiKey", verify); field(t, res, "valid") != "true" || field(t, res, "code") != "API_KEY_VERIFICATION_CODE_VALID" {
					t.Errorf("old VerifyApiKey of a good key: %s", res)
				}
				if _, err := keys.DisableApiKey(ctx, &v1.DisableApiKeyRequest{Id: keyID}); err != nil {
					t.Fatal(err)
				}
				res := old.must("ApiKeyService", "VerifyApiKey", verify)
				if field(t, res, "valid") == "true" || field(t, res, "code") == "API_KEY_VERIFICATION_CODE_VALID" || field(t, res, "tenantId") != "" {
					t.Errorf("old VerifyApiKey of a disabled key: %s", res)
				}
				if res := old.must("ApiKeyService", "GetApiKey", `{"id":"`+keyID+`"}`); field(t, res, "apiKey.status") == "API_KEY_STATUS_ACTIVE" {
					t.Errorf("old GetApiKey calls a disabled key active: %s", res)
				}
				if _, err := old.call("ApiKeyService", "RevokeApiKey", `{"id":"`+keyID+`"}`); err != nil {
					t.Errorf("old RevokeApiKey of a disabled key: %v", err)
				}
			})
		}
	})
}
