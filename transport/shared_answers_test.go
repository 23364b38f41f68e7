package transport

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
)

// TestSharedAnswersEncodeOnce checks both codecs: a shared answer is
// encoded as the protobuf libraries encode it, once; one too large to
// keep, and an answer not shared, are encoded at every call; and the
// entries of answers no longer used go.
func TestSharedAnswersEncodeOnce(t *testing.T) {
	type appender interface {
		MarshalAppend([]byte, any) ([]byte, error)
	}
	for _, tc := range []struct {
		name   string
		codec  connect.Codec
		encode func(proto.Message) ([]byte, error)
	}{
		{"json", strictJSON{"json"}, func(m proto.Message) ([]byte, error) { return protojson.Marshal(m) }},
		{"binary", binaryProto{}, func(m proto.Message) ([]byte, error) { return proto.Marshal(m) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			codec := tc.codec.(appender)
			encoded := func(m proto.Message) []byte {
				t.Helper()
				b, err := codec.MarshalAppend([]byte("prefix"), m)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(b, []byte("prefix")) {
					t.Fatalf("MarshalAppend dropped what dst held: %q", b)
				}
				return b[len("prefix"):]
			}
			want := func(m proto.Message) []byte {
				t.Helper()
				b, err := tc.encode(m)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}

			a := shareAnswer(&v1.VerifyApiKeyResponse{Valid: true, KeyId: "key-a", Scopes: []string{"registry:keys.verify"}})
			b := shareAnswer(&v1.CheckEntitlementResponse{Entitled: true, Limits: map[string]int64{"seats": 5}})
			first := want(a)
			for range 3 {
				if got := encoded(a); !bytes.Equal(got, first) {
					t.Fatalf("shared answer encoded as %q, want %q", got, first)
				}
			}
			if got := encoded(b); !bytes.Equal(got, want(b)) {
				t.Fatalf("second shared answer encoded as %q, want %q", got, want(b))
			}
			// A shared answer never changes; were it changed, its first
			// encoding would still be sent: proof that it is kept.
			a.KeyId = "key-changed"
			if got := encoded(a); !bytes.Equal(got, first) {
				t.Fatalf("shared answer encoded again: %q, want the first encoding %q", got, first)
			}

			// One too large to keep is encoded at every call.
			large := shareAnswer(&v1.VerifyApiKeyResponse{Valid: true, KeyId: "key-large", Metadata: map[string]string{"note": strings.Repeat("x", maxKeptEncoding)}})
			encoded(large)
			large.KeyId = "key-large-changed"
			if got := encoded(large); !bytes.Equal(got, want(large)) {
				t.Fatalf("shared answer of %d bytes kept, want it encoded at every call past %d", len(got), maxKeptEncoding)
			}

			own := &v1.VerifyApiKeyResponse{Valid: true, KeyId: "key-own"}
			encoded(own)
			own.KeyId = "key-own-changed"
			if got := encoded(own); !bytes.Equal(got, want(own)) {
				t.Fatalf("answer not shared encoded as %q, want %q: it must be encoded at every call", got, want(own))
			}
		})
	}

	t.Run("entries of collected answers go", func(t *testing.T) {
		before := countShared()
		for i := range 1000 {
			encodingsOf(shareAnswer(&v1.VerifyApiKeyResponse{KeyId: fmt.Sprint("key-", i)}))
		}
		deadline := time.Now().Add(10 * time.Second)
		for countShared() > before+10 {
			if time.Now().After(deadline) {
				t.Fatalf("%d shared answers still kept after their answers were dropped, %d before", countShared(), before)
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func countShared() int {
	n := 0
	sharedAnswers.Range(func(any, any) bool { n++; return true })
	return n
}
