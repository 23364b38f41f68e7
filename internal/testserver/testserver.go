// Package testserver starts the real server for tests: the one
// transport.NewServer the binary starts, with the binary's default limits,
// over a real database, on a free loopback port, with a clock the test
// moves.
package testserver

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

// Clock is a clock that moves only when told to.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{now: t.UTC().Truncate(time.Microsecond)} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Server is a running server.
type Server struct {
	URL      string
	DB       *persistence.DB
	Clock    *Clock
	Verifier *domain.KeyVerifier
	Logs     *Logs // everything the server logged
	stop     func() error
}

// Stop shuts the server down as SIGTERM does and returns what Serve
// returned; the test's end does the same if Stop was not called.
func (s *Server) Stop() error { return s.stop() }

// Logs collects log output safely across goroutines.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns what was logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Start serves every service over db until t ends, with authentication
// off (every call acts as the dev platform admin). The server is set up as
// transport.DefaultConfig says, listening on a free loopback port, and
// then as each of configure changes it.
func Start(t testing.TB, db *persistence.DB, configure ...func(*transport.Config)) *Server {
	t.Helper()
	clock := NewClock(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC))
	logs := &Logs{}
	verifier := db.KeyVerifier(clock.Now, domain.DefaultKeyCacheConfig)
	cfg := transport.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.ShutdownGrace = 5 * time.Second // a test that leaves a request hanging ends in seconds
	cfg.Ready = db.Ready
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, c := range configure {
		c(&cfg)
	}
	srv, err := transport.NewServer(cfg, transport.Backend{
		Store: db.Store(), Clock: clock.Now, Verifier: verifier, Changes: db.Changes(), Audit: AuditSettings(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close) // registered before stop's cleanup, so run after the server stopped
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	var served error
	stop := func() error {
		once.Do(func() {
			// A connection a client dialled but never used counts as busy
			// for five seconds during shutdown: drop such connections first.
			HTTP1.CloseIdleConnections()
			H2C.CloseIdleConnections()
			cancel()
			served = <-done
		})
		return served
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &Server{URL: "http://" + srv.Addr(), DB: db, Clock: clock, Verifier: verifier, Logs: logs, stop: stop}
}

// StartWith is Start with authentication on: callers present OIDC access
// tokens of oidcCfg's issuer or service keys.
func StartWith(t testing.TB, db *persistence.DB, oidcCfg *transport.OIDCConfig) *Server {
	t.Helper()
	return Start(t, db, func(cfg *transport.Config) { cfg.OIDC = oidcCfg })
}

// AuditSettings are the default audit settings with a checkpoint signer
// of their own.
func AuditSettings(t testing.TB) domain.AuditSettings {
	return domain.AuditSettings{Checkpoints: CheckpointSigner(t), RetentionDays: domain.DefaultAuditRetentionDays}
}

// CheckpointSigner returns a signer of audit checkpoints with a key of
// its own.
func CheckpointSigner(t testing.TB) *domain.CheckpointSigner {
	t.Helper()
	skey, _, err := domain.GenerateCheckpointKey("registry.test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := domain.NewCheckpointSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Protocol is one way a client can talk to the server.
type Protocol struct {
	Name    string
	HTTP    *http.Client
	Options []connect.ClientOption
}

// HTTP1 is a client speaking HTTP/1.1, as browsers and curl do for Connect
// and gRPC-Web; H2C speaks cleartext HTTP/2 only, as gRPC needs.
var (
	HTTP1 = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	H2C   = &http.Client{Transport: h2cTransport()}
)

// Protocols are every protocol the server speaks.
var Protocols = []Protocol{
	{"connect-json", HTTP1, []connect.ClientOption{connect.WithProtoJSON()}},
	{"connect-proto", HTTP1, nil},
	{"grpc", H2C, []connect.ClientOption{connect.WithGRPC()}},
	{"grpc-web", HTTP1, []connect.ClientOption{connect.WithGRPCWeb()}},
}

func h2cTransport() *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: protocols}
}
