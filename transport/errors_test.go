package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/tenant-registry/tenant-registry/domain"
)

// TestErrorsAreShortened: an error that quotes what the caller sent (a
// stale etag of 2 million quotes, which %q doubles) is answered with at
// most maxErrorMessage bytes of message and maxErrorField per violation's
// field and description, cut at a character boundary; short ones are
// answered whole.
func TestErrorsAreShortened(t *testing.T) {
	huge := strings.Repeat(`"`, 2_000_000)
	for _, tc := range []struct {
		name string
		err  error
		want string // the message, when not cut
	}{
		{"short", domain.Errorf(domain.KindAborted, "etag %q is stale", "v1"), `etag "v1" is stale`},
		{"quoted input", domain.Errorf(domain.KindAborted, "etag %q is stale", huge), ""},
		{"multi-byte", domain.Errorf(domain.KindNotFound, "%s", strings.Repeat("ü", maxErrorMessage)), ""},
		{"violations", domain.Violations{{Field: "name" + huge, Description: "must be short: " + huge}}.Err(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ce *connect.Error
			if !errors.As(connectError(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), "/p", tc.err), &ce) {
				t.Fatal("not a Connect error")
			}
			msg := ce.Message()
			switch {
			case tc.want != "" && msg != tc.want:
				t.Errorf("message %q, want %q", msg, tc.want)
			case len(msg) > maxErrorMessage || !utf8.ValidString(msg):
				t.Errorf("message of %d bytes (valid UTF-8: %v), want at most %d", len(msg), utf8.ValidString(msg), maxErrorMessage)
			case tc.want == "" && !strings.HasSuffix(msg, "…") && len(tc.err.Error()) > maxErrorMessage:
				t.Errorf("a cut message does not say so: %q", msg[len(msg)-10:])
			}
			for _, d := range ce.Details() {
				v, err := d.Value()
				if err != nil {
					t.Fatal(err)
				}
				br, ok := v.(*errdetails.BadRequest)
				if !ok {
					continue
				}
				for _, f := range br.GetFieldViolations() {
					if len(f.GetField()) > maxErrorField || len(f.GetDescription()) > maxErrorField {
						t.Errorf("violation of %d and %d bytes, want at most %d each", len(f.GetField()), len(f.GetDescription()), maxErrorField)
					}
				}
			}
		})
	}
}
