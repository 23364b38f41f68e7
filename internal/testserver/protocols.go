package testserver

import (
	"net/http"
	"slices"
	"sync"

	"connectrpc.com/connect"
)

// Protocol is one way a client can talk to the server.
type Protocol struct {
	Name    string
	HTTP    *http.Client
	Options []connect.ClientOption
	JSON    bool // messages are protojson
	GET     bool // reads (NO_SIDE_EFFECTS) go as HTTP GET
}

// HTTP1 is a client speaking HTTP/1.1, as browsers and curl do for Connect
// and gRPC-Web; H2C speaks cleartext HTTP/2 only, as gRPC needs.
var (
	HTTP1 = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	H2C   = &http.Client{Transport: h2cTransport()}
)

// Protocols are every protocol the server speaks, and Connect's reads as
// GET, as the portal sends them.
var Protocols = []Protocol{
	{Name: "connect-json", HTTP: HTTP1, Options: []connect.ClientOption{connect.WithProtoJSON()}, JSON: true},
	{Name: "connect-proto", HTTP: HTTP1},
	{Name: "connect-get", HTTP: HTTP1, Options: []connect.ClientOption{connect.WithProtoJSON(), connect.WithHTTPGet()}, JSON: true, GET: true},
	{Name: "grpc", HTTP: H2C, Options: []connect.ClientOption{connect.WithGRPC()}},
	{Name: "grpc-web", HTTP: HTTP1, Options: []connect.ClientOption{connect.WithGRPCWeb()}},
}

func h2cTransport() *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: protocols}
}

// Recorded returns a client that speaks as p's does and records the HTTP
// method of every request it sends.
func (p Protocol) Recorded() (*http.Client, *MethodRecorder) {
	rec := &MethodRecorder{next: p.HTTP.Transport}
	return &http.Client{Transport: rec}, rec
}

// MethodRecorder is an http.RoundTripper that passes requests on and
// remembers the HTTP method of each, by path.
type MethodRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen map[string][]string
}

// RoundTrip records req's method and sends it.
func (r *MethodRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	if r.seen == nil {
		r.seen = map[string][]string{}
	}
	r.seen[req.URL.Path] = append(r.seen[req.URL.Path], req.Method)
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// Methods returns the methods of the requests sent to path, in order.
func (r *MethodRecorder) Methods(path string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen[path])
}
