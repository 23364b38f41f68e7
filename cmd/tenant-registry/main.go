// Command tenant-registry is the control plane's registry of tenants,
// entitlements, products, API keys and audit events.
//
//	tenant-registry [serve]                  serve on ADDR (default :8090)
//	tenant-registry migrate up|down|status   manage the database schema
//	tenant-registry migrate create NAME      add an empty migration for both dialects
//	tenant-registry keys bootstrap           print a first platform-admin service key
//	tenant-registry audit keygen|key|verify  audit checkpoint keys; check an export offline
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

const usage = `usage:
  tenant-registry [serve]                  serve Connect, gRPC and gRPC-Web on ADDR
  tenant-registry migrate up               apply pending migrations
  tenant-registry migrate down             roll back the last group of migrations
  tenant-registry migrate status           list migrations and whether they are applied
  tenant-registry migrate create NAME      add empty migrations for both dialects under ./migrations
  tenant-registry keys bootstrap           create a platform-admin service key and print it once
  tenant-registry audit keygen NAME        make an audit checkpoint signing key
  tenant-registry audit key                print the configured signing key's verifier key
  tenant-registry audit verify --checkpoint FILE --export FILE --key VERIFIER_KEY
Configuration comes from the environment; see README.md.`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tenant-registry:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	case "serve", "migrate", "keys", "audit":
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("bad configuration:\n%w", err)
	}
	log := newLogger(cfg, stderr)
	switch cmd {
	case "migrate":
		return migrateCommand(ctx, cfg, args, stdout)
	case "keys":
		return keysCommand(ctx, cfg, log, args, stdout, stderr)
	case "audit":
		return auditCommand(cfg, log, args, stdout, stderr)
	}
	if len(args) > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", strings.Join(args, " "))
	}
	m := &Main{Config: cfg, Logger: log}
	if err := m.Open(ctx); err != nil {
		return err
	}
	defer m.Close()
	if err := m.Listen(); err != nil {
		return err
	}
	if cfg.PprofAddr != "" {
		stopPprof, err := servePprof(cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	log.Info("serving Connect, gRPC and gRPC-Web", "addr", m.Server.Addr(), "env", cfg.Env, "database", m.DB.Dialect())
	return m.Serve(ctx)
}

// newLogger logs in cfg's format; every line logged while serving a
// request carries the request's id, procedure, principal and tenant (and
// trace id when traced), whichever package logs it.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(transport.LogHandler(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(transport.LogHandler(slog.NewTextHandler(w, opts)))
}

// Main wires the service together: database, domain services, transport.
type Main struct {
	Config Config
	Logger *slog.Logger
	Clock  domain.Clock // nil: the system clock

	DB          *persistence.DB
	Server      *transport.Server
	KeyCache    *domain.KeyCache
	Verifier    *domain.KeyVerifier
	Checkpoints *domain.CheckpointSigner

	// SpanExporter, when set, receives every span as it ends, beside any
	// OTLP export: a test's in-memory exporter sees the real wiring's spans.
	SpanExporter sdktrace.SpanExporter

	telemetry *telemetry
	readiness func(context.Context) error // the database answers and its schema is current
	metricsLn net.Listener                // METRICS_ADDR's listener, until Serve serves it
}

// Open connects to the database, brings or checks its schema, seeds dev
// data and sets up what the server will serve: the key verifier, the
// audit checkpoint signer and telemetry. Listen then assembles the
// server. On error nothing stays open; Close releases what Open and
// Listen opened.
func (m *Main) Open(ctx context.Context) (err error) {
	if m.Clock == nil {
		m.Clock = domain.SystemClock
	}
	tel, err := newTelemetry(ctx, m.Config, m.SpanExporter)
	if err != nil {
		return err
	}
	m.telemetry = tel
	defer func() {
		if err != nil {
			_ = tel.shutdown(context.WithoutCancel(ctx)) // the setup error is the one to report
			m.telemetry = nil
		}
	}()
	db, err := persistence.Open(ctx, m.Config.DatabaseURL, m.dbOptions()...)
	if err != nil {
		return err
	}
	m.DB = db
	defer func() {
		if err != nil {
			db.Close()
			m.DB = nil
		}
	}()
	tel.instrumentDB(db)
	migrator, err := db.Migrator()
	if err != nil {
		return err
	}
	// A database no other replica uses cannot be migrated under one's feet.
	if !db.Shared() || m.Config.Env == "dev" {
		applied, err := migrator.Up(ctx)
		if err != nil {
			return fmt.Errorf("apply migrations: %w", err)
		}
		if len(applied) > 0 {
			m.Logger.Info("applied migrations", "migrations", applied)
		}
	} else if err := schemaCurrent(ctx, migrator); err != nil {
		return err
	}
	// The coming months' audit partitions exist before the first append.
	if err := db.EnsureAuditPartitions(ctx, m.Clock()); err != nil {
		return err
	}
	if m.Config.Env == "dev" {
		if err := db.SeedDev(ctx, m.Clock()); err != nil {
			return fmt.Errorf("seed dev data: %w", err)
		}
	}
	if m.Checkpoints, err = checkpointSigner(m.Config, m.Logger); err != nil {
		return err
	}
	cacheCfg := domain.DefaultKeyCacheConfig
	cacheCfg.Disabled = !m.Config.KeyCache
	// The cache answers only while the database's change feed is current:
	// on PostgreSQL from when the listener has heard its first heartbeat.
	m.Verifier = db.KeyVerifier(m.Clock, cacheCfg)
	m.KeyCache = m.Verifier.Cache()
	if err := tel.observe(m.KeyCache, db.Changes(), db.AuditEventsAppended); err != nil {
		return err
	}
	m.readiness = func(ctx context.Context) error { return ready(ctx, db, migrator) }
	return nil
}

// Listen assembles the server over what Open set up and opens its
// listeners: METRICS_ADDR's, when set, and ADDR's, here rather than in
// Serve so that a taken port stops the start. On error Close releases
// what was opened.
func (m *Main) Listen() error {
	interceptors, err := m.telemetry.interceptors()
	if err != nil {
		return err
	}
	var oidc *transport.OIDCConfig // nil: authentication off
	if m.Config.Issuer != "" {
		oidc = &transport.OIDCConfig{
			Issuer: m.Config.Issuer, Audience: m.Config.Audience, TenantClaim: m.Config.TenantClaim,
			FetchTimeout: m.Config.OIDCFetchTimeout,
		}
	} else {
		m.Logger.Warn("APP_ENV=dev without KEYCLOAK_ISSUER: authentication is off, every caller acts as a platform admin")
	}
	if m.telemetry.metrics != nil {
		if m.metricsLn, err = net.Listen("tcp", m.Config.MetricsAddr); err != nil {
			return fmt.Errorf("METRICS_ADDR: listen on %s: %w", m.Config.MetricsAddr, err)
		}
	}
	m.Server, err = transport.NewServer(transport.Config{
		Addr:                  m.Config.Addr,
		OIDC:                  oidc,
		AllowedOrigins:        m.Config.CORSOrigins,
		AllowLocalhostOrigins: m.Config.Env == "dev" && len(m.Config.CORSOrigins) == 0,
		TrustedProxies:        m.Config.TrustedProxies,
		MaxMessageBytes:       m.Config.MaxMessageBytes,
		ReadHeaderTimeout:     m.Config.ReadHeaderTimeout,
		BodyReadTimeout:       m.Config.BodyReadTimeout,
		MaxConcurrentStreams:  m.Config.MaxStreams,
		RequestTimeout:        m.Config.RequestTimeout,
		ShutdownGrace:         m.Config.ShutdownGrace,
		ShutdownDelay:         m.Config.ShutdownDelay,
		Ready:                 m.readiness,
		Logger:                m.Logger,
		Interceptors:          interceptors,
	}, transport.Backend{
		Store: m.DB.Store(), Clock: m.Clock, Verifier: m.Verifier, Changes: m.DB.Changes(),
		Audit: domain.AuditSettings{Checkpoints: m.Checkpoints, RetentionDays: m.Config.AuditRetentionDays},
	})
	if err != nil {
		return fmt.Errorf("ADDR: %w", err)
	}
	return m.telemetry.observeLogs(m.Server.SuppressedLogLines)
}

// dbOptions bound the connection pool, and let no statement outlive the
// longest request it can serve (REQUEST_TIMEOUT, and a second for the
// driver to notice the deadline first and answer DeadlineExceeded).
func (m *Main) dbOptions() []persistence.Option {
	opts := []persistence.Option{persistence.WithMaxConns(m.Config.DBMaxConns), persistence.WithLogger(m.Logger)}
	if m.Config.RequestTimeout > 0 {
		opts = append(opts, persistence.WithStatementTimeout(m.Config.RequestTimeout+time.Second))
	}
	return opts
}

// MetricsAddr returns the address /metrics is served on, or "" without
// METRICS_ADDR.
func (m *Main) MetricsAddr() string {
	if m.metricsLn == nil {
		return ""
	}
	return m.metricsLn.Addr().String()
}

// Serve runs the server Listen assembled, with the last-use writer beside
// it, until ctx ends. (The database's change listener runs from Open to
// Close.)
func (m *Main) Serve(ctx context.Context) error {
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		m.Verifier.Run(bg, 5*time.Second, func(err error) { m.Logger.Warn("record key last use", "error", err) })
	})
	wg.Go(func() { m.maintainAudit(bg) })
	if m.metricsLn != nil {
		// Scrapes go on while the server drains; they stop with bg.
		wg.Go(func() {
			if err := m.telemetry.serveMetrics(bg, m.metricsLn, m.Logger); err != nil {
				m.Logger.Warn("metrics listener stopped", "error", err)
			}
		})
	}
	err := m.Server.Serve(ctx)
	stop() // after the server drained: the last uses of its requests get written
	wg.Wait()
	return err
}

// auditMaintenanceInterval is how often the audit log's partitions are
// created ahead and its retention applied.
const auditMaintenanceInterval = time.Hour

// maintainAudit applies audit retention and creates partitions ahead, at
// once and then every auditMaintenanceInterval, until ctx ends.
func (m *Main) maintainAudit(ctx context.Context) {
	t := time.NewTicker(auditMaintenanceInterval)
	defer t.Stop()
	for {
		e, ran, err := m.DB.MaintainAudit(ctx, m.Clock(), m.Config.AuditRetentionDays)
		switch {
		case err != nil && ctx.Err() == nil:
			m.Logger.Warn("audit maintenance", "error", err)
		case ran && e.Events > 0:
			m.Logger.Info("audit retention applied", "events_deleted", e.Events, "partitions_dropped", e.PartitionsDropped)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close flushes telemetry and releases the database.
func (m *Main) Close() error {
	var errs []error
	if m.metricsLn != nil {
		m.metricsLn.Close() // closed already when Serve ran; else it is released here
	}
	if m.Server != nil {
		m.Server.Close()
	}
	if m.telemetry != nil {
		if err := m.telemetry.shutdown(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("flush telemetry: %w", err))
		}
		m.telemetry = nil
	}
	if m.DB != nil {
		errs = append(errs, m.DB.Close())
	}
	return errors.Join(errs...)
}

// schemaCurrent refuses a database whose schema is behind this binary.
func schemaCurrent(ctx context.Context, migrator *persistence.Migrator) error {
	pending, err := migrator.Pending(ctx)
	if err != nil {
		return fmt.Errorf("read migration status: %w", err)
	}
	if len(pending) > 0 {
		return fmt.Errorf("the database schema is behind: %d migration(s) pending (first: %s_%s); run `tenant-registry migrate up` with the same DATABASE_URL",
			len(pending), pending[0].Name, pending[0].Comment)
	}
	return nil
}

// ready is the readiness check: the database answers and its schema is current.
func ready(ctx context.Context, db *persistence.DB, migrator *persistence.Migrator) error {
	if err := db.Ready(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	behind, err := migrator.Behind(ctx)
	if err != nil {
		return fmt.Errorf("migration status: %w", err)
	}
	if behind > 0 {
		return errors.New("schema is behind")
	}
	return nil
}

func migrateCommand(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("migrate needs up, down, status or create NAME")
	}
	if args[0] == "create" {
		if len(args) != 2 {
			return errors.New("usage: tenant-registry migrate create NAME")
		}
		paths, err := persistence.CreateMigration("migrations", args[1], time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "created:\n  "+strings.Join(paths, "\n  "))
		return nil
	}
	if len(args) != 1 {
		return fmt.Errorf("migrate %s takes no arguments", args[0])
	}
	db, err := persistence.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	migrator, err := db.Migrator()
	if err != nil {
		return err
	}
	switch args[0] {
	case "up", "down":
		step := migrator.Up
		if args[0] == "down" {
			step = migrator.Down
		}
		names, err := step(ctx)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", args[0], err)
		}
		if len(names) == 0 {
			fmt.Fprintln(stdout, "nothing to do")
		}
		for _, n := range names {
			fmt.Fprintf(stdout, "%s %s\n", map[string]string{"up": "applied", "down": "rolled back"}[args[0]], n)
		}
	case "status":
		states, err := migrator.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range states {
			state := "pending"
			if s.Applied {
				state = "applied"
			}
			fmt.Fprintf(stdout, "%-8s %s_%s\n", state, s.Name, s.Comment)
		}
	default:
		return fmt.Errorf("unknown migrate command %q: want up, down, status or create NAME", args[0])
	}
	return nil
}

// bootstrapPrincipal is the actor of the bootstrap key's audit event.
var bootstrapPrincipal = domain.Principal{
	ID: "bootstrap", Name: "tenant-registry keys bootstrap", Type: "bootstrap", Roles: []string{domain.RolePlatformAdmin},
}

// keysCommand runs "keys bootstrap": it creates a platform key (a key of
// the platform tenant) with the registry:admin scope and prints it once.
func keysCommand(ctx context.Context, cfg Config, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 || args[0] != "bootstrap" {
		return errors.New("usage: tenant-registry keys bootstrap")
	}
	cfg.MetricsAddr = "" // a one-shot command: nothing to scrape
	m := &Main{Config: cfg, Logger: log}
	if err := m.Open(ctx); err != nil {
		return err
	}
	defer m.Close()
	keys := domain.NewApiKeyService(m.DB.Store(), m.Clock, m.Verifier)
	ctx = domain.WithCaller(ctx, domain.Caller{Principal: bootstrapPrincipal})
	k, plaintext, err := keys.Create(ctx, domain.CreateApiKey{
		TenantID: domain.PlatformTenantID, Name: "bootstrap admin key", Scopes: []string{domain.ScopeAdmin},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "created service key %s (%s) with scope %s; it is shown once, store it now:\n", k.ID, k.Prefix, domain.ScopeAdmin)
	fmt.Fprintln(stdout, plaintext)
	return nil
}
