// Package testserver starts the real server for tests: the one
// transport.NewServer the binary starts, with the binary's default limits,
// over a real database, on a free loopback port, with a clock the test
// moves.
package testserver

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

// Server is a running server.
type Server struct {
	URL      string
	DB       *persistence.DB
	Clock    *Clock
	Verifier *domain.KeyVerifier
	Logs     *Logs // everything the server logged, from debug up
	stop     func() error
}

// Stop shuts the server down as SIGTERM does and returns what Serve
// returned; the test's end does the same if Stop was not called.
func (s *Server) Stop() error { return s.stop() }

// Start serves every service over db until t ends, with authentication
// off (every call acts as the dev platform admin). The server is set up as
// transport.DefaultConfig says, listening on a free loopback port, and
// then as each of configure changes it.
func Start(t testing.TB, db *persistence.DB, configure ...func(*transport.Config)) *Server {
	t.Helper()
	clock := NewClock(time.Date(2026, 11, 22, 9, 30, 0, 123456000, time.UTC))
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
	// Registered before Serve's cleanup, so run after the server stopped.
	t.Cleanup(func() {
		srv.Close()
		if t.Failed() && logs.String() != "" {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	stop := Serve(t, srv.Serve)
	return &Server{URL: "http://" + srv.Addr(), DB: db, Clock: clock, Verifier: verifier, Logs: logs, stop: stop}
}

// StartWith is Start with authentication on: callers present OIDC access
// tokens of oidcCfg's issuer or service keys.
func StartWith(t testing.TB, db *persistence.DB, oidcCfg *transport.OIDCConfig) *Server {
	t.Helper()
	return Start(t, db, func(cfg *transport.Config) { cfg.OIDC = oidcCfg })
}

// Serve runs serve, a server's Serve, in the background until the stop it
// returns is called or the test ends. Stop ends serve's context, as
// SIGTERM does, and returns what serve returned; at the test's end an
// error is reported.
func Serve(t testing.TB, serve func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	var once sync.Once
	var served error
	stop = func() error {
		once.Do(func() {
			// A connection a client dialled but never used counts as busy
			// for five seconds during shutdown: drop such connections first.
			HTTP1.CloseIdleConnections()
			H2C.CloseIdleConnections()
			http.DefaultClient.CloseIdleConnections()
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
	return stop
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
