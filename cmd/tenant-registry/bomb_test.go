package main

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
)

// gzipBomb returns a gzip body of about size/1000 bytes that inflates to
// size bytes of zeros: one compressed member of 16 MiB, repeated (gzip
// readers read concatenated members as one stream), so that building a
// 2 GiB bomb takes milliseconds, not the seconds compressing 2 GiB would.
func gzipBomb(t *testing.T, size int64) []byte {
	t.Helper()
	const member = 16 << 20
	var one bytes.Buffer
	w, err := gzip.NewWriterLevel(&one, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, member)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.Repeat(one.Bytes(), int(size/member))
}

// envelope frames a message as gRPC, gRPC-Web and Connect streaming do.
func envelope(flags byte, msg []byte) []byte {
	out := make([]byte, 5, 5+len(msg))
	out[0] = flags
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

// rawCall is one request as a protocol frames it, sent without a Connect
// client (which would compress a real message, not send a bomb).
type rawCall struct {
	name    string
	h2c     bool
	method  string
	path    string
	header  map[string]string
	body    func(msg []byte, compressed bool) []byte
	getForm func(msg []byte) url.Values // for Connect GET: the message goes in the query
}

const createTenantPath = "/" + tenantregistryv1connect.TenantServiceName + "/CreateTenant"

// rawCalls are the ways a request body can reach the server: Connect
// unary, Connect streaming (the export), gRPC over h2c and gRPC-Web.
var rawCalls = []rawCall{
	{name: "connect unary", method: http.MethodPost, path: createTenantPath,
		header: map[string]string{"Content-Type": "application/proto", "Connect-Protocol-Version": "1"},
		body:   func(msg []byte, _ bool) []byte { return msg }},
	{name: "connect streaming", method: http.MethodPost, path: tenantregistryv1connect.AuditServiceExportAuditEventsProcedure,
		header: map[string]string{"Content-Type": "application/connect+proto", "Connect-Protocol-Version": "1"},
		body:   func(msg []byte, compressed bool) []byte { return envelope(flagOf(compressed), msg) }},
	{name: "grpc", h2c: true, method: http.MethodPost, path: createTenantPath,
		header: map[string]string{"Content-Type": "application/grpc", "Te": "trailers"},
		body:   func(msg []byte, compressed bool) []byte { return envelope(flagOf(compressed), msg) }},
	{name: "grpc-web", method: http.MethodPost, path: createTenantPath,
		header: map[string]string{"Content-Type": "application/grpc-web+proto"},
		body:   func(msg []byte, compressed bool) []byte { return envelope(flagOf(compressed), msg) }},
}

func flagOf(compressed bool) byte {
	if compressed {
		return 1
	}
	return 0
}

// do sends msg (gzip-compressed when compressed) as c frames it and returns
// the Connect code of the answer ("ok" for success).
func (c rawCall) do(t *testing.T, srv *running, msg []byte, compressed bool) string {
	t.Helper()
	var req *http.Request
	var err error
	if c.getForm != nil {
		req, err = http.NewRequest(http.MethodGet, srv.baseURL+c.path+"?"+c.getForm(msg).Encode(), nil)
	} else {
		req, err = http.NewRequest(c.method, srv.baseURL+c.path, bytes.NewReader(c.body(msg, compressed)))
	}
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	if compressed && c.getForm == nil {
		switch {
		case c.name == "connect unary":
			req.Header.Set("Content-Encoding", "gzip")
		case strings.HasPrefix(c.name, "connect"):
			req.Header.Set("Connect-Content-Encoding", "gzip")
		default:
			req.Header.Set("Grpc-Encoding", "gzip")
		}
	}
	transport := testserver.HTTP1.Transport
	if c.h2c {
		transport = testserver.H2C.Transport
	}
	res, err := (&http.Client{Transport: transport, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s: read the answer: %v", c.name, err)
	}
	return answerCode(t, res, body)
}

// grpcCodes are the names of the gRPC status numbers these tests meet.
var grpcCodes = map[string]string{
	"0": "ok", "3": "invalid_argument", "4": "deadline_exceeded", "8": "resource_exhausted", "16": "unauthenticated",
}

// answerCode reads the code of an answer in whichever protocol it came.
func answerCode(t *testing.T, res *http.Response, body []byte) string {
	t.Helper()
	if s := res.Header.Get("Grpc-Status"); s != "" {
		return grpcCodes[s]
	}
	if s := res.Trailer.Get("Grpc-Status"); s != "" {
		return grpcCodes[s]
	}
	ct := res.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/grpc-web"):
		for len(body) >= 5 {
			n := binary.BigEndian.Uint32(body[1:5])
			if body[0]&0x80 != 0 {
				for _, line := range strings.Split(string(body[5:5+n]), "\r\n") {
					if v, ok := strings.CutPrefix(strings.ToLower(line), "grpc-status:"); ok {
						return grpcCodes[strings.TrimSpace(v)]
					}
				}
			}
			body = body[5+n:]
		}
	case strings.HasPrefix(ct, "application/connect+"):
		for len(body) >= 5 {
			n := binary.BigEndian.Uint32(body[1:5])
			if body[0]&0x02 != 0 {
				var end struct {
					Error *struct{ Code string } `json:"error"`
				}
				if err := json.Unmarshal(body[5:5+n], &end); err != nil {
					t.Fatalf("end of stream %q: %v", body[5:5+n], err)
				}
				if end.Error == nil {
					return "ok"
				}
				return end.Error.Code
			}
			body = body[5+n:]
		}
	case res.StatusCode == http.StatusOK:
		return "ok"
	default:
		var e struct{ Code string }
		if err := json.Unmarshal(body, &e); err == nil && e.Code != "" {
			return e.Code
		}
	}
	t.Fatalf("no code in the answer: HTTP %d %s %q", res.StatusCode, ct, body)
	return ""
}

// cpuTime is the CPU this process (server and client alike) has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestGzipBombIsRefusedAtTheLimit sends a 2 MB gzip body that inflates to
// 2 GiB through every protocol. Each must be refused with
// ResourceExhausted, and the refusals together must cost about what the
// same requests cost with a plain body of the limit's size, not the
// seconds of CPU that inflating 2 GiB takes.
func TestGzipBombIsRefusedAtTheLimit(t *testing.T) {
	const limit = 4 << 20
	env := devEnv("sqlite:" + filepath.Join(t.TempDir(), "registry.db"))
	env["MAX_MESSAGE_BYTES"] = "4194304"
	env["LOG_LEVEL"] = "info"
	srv := serve(t, env)
	bomb := gzipBomb(t, 2<<30)
	plain := make([]byte, limit) // zeros: not a valid message, refused after reading
	const rounds = 3

	// Warm up connections and code paths, so neither measurement pays for them.
	for _, c := range rawCalls {
		c.do(t, srv, []byte{}, false)
	}
	spent := func(msg []byte, compressed bool, want string) time.Duration {
		start := cpuTime(t)
		for range rounds {
			for _, c := range rawCalls {
				if got := c.do(t, srv, msg, compressed); got != want {
					t.Errorf("%s, %d-byte body (compressed %v): %s, want %s", c.name, len(msg), compressed, got, want)
				}
			}
		}
		return cpuTime(t) - start
	}
	plainCPU := spent(plain, false, "invalid_argument")
	bombCPU := spent(bomb, true, "resource_exhausted")
	t.Logf("CPU for %d requests: plain %d-byte bodies %v, %d-byte bombs inflating to 2 GiB %v",
		rounds*len(rawCalls), limit, plainCPU, len(bomb), bombCPU)
	if bombCPU > 5*plainCPU {
		t.Errorf("the bombs cost %v of CPU, more than 5 × the %v of plain bodies of the limit's size", bombCPU, plainCPU)
	}

	// A Connect GET carries its (compressed) message in the query: the
	// same decompressor, the same cap.
	get := rawCall{name: "connect get", path: "/" + tenantregistryv1connect.TenantServiceName + "/GetTenantBySlug",
		getForm: func(msg []byte) url.Values {
			return url.Values{"encoding": {"proto"}, "base64": {"1"}, "compression": {"gzip"}, "connect": {"v1"},
				"message": {base64.RawURLEncoding.EncodeToString(msg)}}
		}}
	if got := get.do(t, srv, gzipBomb(t, 32<<20), true); got != "resource_exhausted" {
		t.Errorf("a gzip bomb in a Connect GET query: %s, want resource_exhausted", got)
	}
}
