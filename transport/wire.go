package transport

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// guardWire refuses malformed framing with InvalidArgument before Connect
// sees it. Connect answers a truncated or badly flagged gRPC or streaming
// envelope with Internal, and an undecodable base64 GET message with
// Unknown (HTTP 500): both say the server is at fault, page whoever
// watches the error rate, and are logged as errors, for what is a client's
// bug. The gRPC status table does list some of these as INTERNAL; Connect
// already answers InvalidArgument for an unparsable message, and this
// makes the rest of the family agree. Well-formed requests pass untouched
// and unbuffered.
func guardWire(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		contentType := r.Header.Get("Content-Type")
		switch {
		case r.Method == http.MethodGet && r.URL.Query().Get("base64") == "1":
			if err := checkBase64Message(r.URL.Query().Get("message")); err != nil {
				writeConnectError(w, connect.NewError(connect.CodeInvalidArgument, err))
				return
			}
		case strings.HasPrefix(contentType, "application/grpc-web-text"):
			// Base64 text framing: Connect does not serve it and says so.
		case strings.HasPrefix(contentType, "application/grpc"):
			r.Body = &envelopeGuard{body: r.Body, compressed: compressed(r.Header.Get("Grpc-Encoding"))}
		case strings.HasPrefix(contentType, "application/connect+"):
			r.Body = &envelopeGuard{body: r.Body, compressed: compressed(r.Header.Get("Connect-Content-Encoding"))}
		}
		next.ServeHTTP(w, r)
	})
}

func compressed(encoding string) bool { return encoding != "" && encoding != "identity" }

// checkBase64Message decodes a GET request's message the way Connect does:
// URL-safe base64, padded or not.
func checkBase64Message(msg string) error {
	enc := base64.URLEncoding
	if len(msg)%4 != 0 {
		enc = base64.RawURLEncoding
	}
	if _, err := enc.DecodeString(msg); err != nil {
		return fmt.Errorf("the message query parameter is not URL-safe base64: %w", err)
	}
	return nil
}

// writeConnectError answers a Connect unary request with err, as Connect
// itself would.
func writeConnectError(w http.ResponseWriter, err *connect.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, `{"code":%q,"message":%q}`, err.Code().String(), err.Message())
}

// envelopeGuard passes a stream of enveloped messages (a flags byte, a
// four-byte length, the message) through, and fails the read with an
// InvalidArgument *connect.Error, which Connect hands to the caller as it
// is, when an envelope is cut short or carries flags a request may not.
type envelopeGuard struct {
	body       io.ReadCloser
	compressed bool   // the request names a compression: flag 1 is allowed
	pending    []byte // the checked prefix of the current envelope, not yet read
	remaining  int64  // message bytes of the current envelope not yet read
	prefix     [5]byte
}

func malformed(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("malformed request envelope: "+format, args...))
}

func (g *envelopeGuard) Read(p []byte) (int, error) {
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	if g.remaining > 0 {
		if int64(len(p)) > g.remaining {
			p = p[:g.remaining]
		}
		n, err := g.body.Read(p)
		g.remaining -= int64(n)
		if errors.Is(err, io.EOF) {
			if g.remaining > 0 {
				return n, malformed("the body ends %d bytes before the end of the message its envelope announced", g.remaining)
			}
			err = nil // the next read, at an envelope boundary, sees the end
		}
		return n, err
	}
	// At an envelope boundary: the next prefix, or the end.
	n, err := io.ReadFull(g.body, g.prefix[:])
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return 0, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return 0, malformed("the body ends inside an envelope's 5-byte prefix (%d bytes)", n)
	case err != nil:
		return 0, err // a read error of the connection, or the body's size bound
	}
	switch flags := g.prefix[0]; {
	case flags == 1 && !g.compressed:
		return 0, malformed("the message is flagged compressed, but the request names no compression")
	case flags > 1:
		return 0, malformed("flags %#02x are not allowed in a request", flags)
	}
	g.remaining = int64(binary.BigEndian.Uint32(g.prefix[1:]))
	g.pending = g.prefix[:]
	return g.Read(p)
}

func (g *envelopeGuard) Close() error { return g.body.Close() }
