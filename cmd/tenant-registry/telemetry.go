package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/extra/bunotel"
	"github.com/uptrace/opentelemetry-go-extra/otelsql"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprometheus "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	otelpropagation "go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// serviceName names this service in every span and metric; OTEL_SERVICE_NAME
// and OTEL_RESOURCE_ATTRIBUTES may override it.
const serviceName = "tenant-registry"

// instrumentationName is the meter of the service's own metrics.
const instrumentationName = "github.com/tenant-registry/tenant-registry"

// telemetry is the service's OpenTelemetry wiring. A provider exists only
// for a signal that goes somewhere: spans with an OTLP endpoint (or a
// test's exporter), metrics with an OTLP endpoint or METRICS_ADDR. With
// neither, the server gets no OpenTelemetry interceptor and the database no
// query hook, so an unobserved server does no telemetry work at all.
type telemetry struct {
	tracer *sdktrace.TracerProvider // nil: no tracing
	meter  *sdkmetric.MeterProvider // nil: no metrics
	// metrics is what /metrics serves; nil without METRICS_ADDR.
	metrics http.Handler
}

// newTelemetry sets up the providers cfg asks for. spans, when not nil,
// receives every span as it ends, beside OTLP: tests pass an in-memory
// exporter to see the spans of the real wiring.
func newTelemetry(ctx context.Context, cfg Config, spans sdktrace.SpanExporter) (*telemetry, error) {
	t := &telemetry{}
	if !cfg.OTLPTraces && !cfg.OTLPMetrics && cfg.MetricsAddr == "" && spans == nil {
		return t, nil
	}
	fail := func(err error) (*telemetry, error) {
		_ = t.shutdown(context.WithoutCancel(ctx)) // the setup error is the one to report
		return nil, err
	}
	res, err := newResource(ctx)
	if err != nil {
		return nil, err
	}

	var traceOpts []sdktrace.TracerProviderOption
	if cfg.OTLPTraces {
		exp, err := otlpSpanExporter(ctx, cfg.OTLPProtocol)
		if err != nil {
			return fail(fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: trace exporter: %w", err))
		}
		traceOpts = append(traceOpts, sdktrace.WithBatcher(exp))
	}
	if spans != nil {
		traceOpts = append(traceOpts, sdktrace.WithSyncer(spans)) // a test sees each span as soon as it ends
	}
	if len(traceOpts) > 0 {
		// The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based,
		// always on), which the SDK reads itself.
		t.tracer = sdktrace.NewTracerProvider(append(traceOpts, sdktrace.WithResource(res))...)
	}

	var readers []sdkmetric.Option
	if cfg.OTLPMetrics {
		exp, err := otlpMetricExporter(ctx, cfg.OTLPProtocol)
		if err != nil {
			return fail(fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: metric exporter: %w", err))
		}
		// The interval comes from OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	if cfg.MetricsAddr != "" {
		// A registry of its own, not Prometheus' global one: nothing else in
		// the process registers there, and tests run several servers.
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprometheus.New(otelprometheus.WithRegisterer(reg))
		if err != nil {
			return fail(fmt.Errorf("METRICS_ADDR: prometheus exporter: %w", err))
		}
		readers = append(readers, sdkmetric.WithReader(exp))
		t.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	}
	if len(readers) > 0 {
		t.meter = sdkmetric.NewMeterProvider(append(readers, sdkmetric.WithResource(res))...)
	}
	return t, nil
}

// newResource describes this process: the service's name and version, the
// SDK's, the host's, and whatever OTEL_RESOURCE_ATTRIBUTES and
// OTEL_SERVICE_NAME add or override.
func newResource(ctx context.Context) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceName(serviceName)}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		attrs = append(attrs, semconv.ServiceVersion(info.Main.Version))
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithFromEnv(), // last: the operator's settings win
	)
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return res, nil
}

// The exporters take their endpoint, headers, TLS and timeouts from the
// standard OTEL_EXPORTER_OTLP_* variables; they connect lazily, so a
// collector that is down does not keep the server from starting.
func otlpSpanExporter(ctx context.Context, protocol string) (sdktrace.SpanExporter, error) {
	if protocol == "grpc" {
		return otlptracegrpc.New(ctx)
	}
	return otlptracehttp.New(ctx)
}

func otlpMetricExporter(ctx context.Context, protocol string) (sdkmetric.Exporter, error) {
	if protocol == "grpc" {
		return otlpmetricgrpc.New(ctx)
	}
	return otlpmetrichttp.New(ctx)
}

// interceptors returns the OpenTelemetry interceptor for the server, or
// none when neither spans nor metrics go anywhere.
func (t *telemetry) interceptors() ([]connect.Interceptor, error) {
	if t.tracer == nil && t.meter == nil {
		return nil, nil
	}
	opts := []otelconnect.Option{
		otelconnect.WithPropagator(otelpropagation.NewCompositeTextMapPropagator(otelpropagation.TraceContext{}, otelpropagation.Baggage{})),
		// The callers are the platform's own products: their spans are the
		// parents of ours, so one trace shows a request across services.
		otelconnect.WithTrustRemote(),
	}
	if t.tracer != nil {
		opts = append(opts, otelconnect.WithTracerProvider(t.tracer))
	} else {
		opts = append(opts, otelconnect.WithoutTracing())
	}
	if t.meter != nil {
		opts = append(opts, otelconnect.WithMeterProvider(t.meter))
	} else {
		opts = append(opts, otelconnect.WithoutMetrics())
	}
	i, err := otelconnect.NewInterceptor(opts...)
	if err != nil {
		return nil, fmt.Errorf("OpenTelemetry interceptor: %w", err)
	}
	return []connect.Interceptor{i}, nil
}

// instrumentDB gives every query made while serving a traced request a
// span (its statement with placeholders, never the values), and reports
// query timings and the connection pool's state as metrics.
func (t *telemetry) instrumentDB(db *persistence.DB) {
	if t.tracer == nil && t.meter == nil {
		return
	}
	var opts []bunotel.Option
	if t.tracer != nil {
		opts = append(opts, bunotel.WithTracerProvider(t.tracer))
	}
	if t.meter != nil {
		opts = append(opts, bunotel.WithMeterProvider(t.meter))
	}
	// Added before the server serves: Bun's hook list is not meant to
	// change under concurrent queries.
	db.Bun().AddQueryHook(childQuerySpans{bunotel.NewQueryHook(append(opts, bunotel.WithFormattedQueries(false))...)})
	if t.meter != nil {
		otelsql.ReportDBStatsMetrics(db.Bun().DB, otelsql.WithMeterProvider(t.meter),
			otelsql.WithAttributes(attribute.String("db.system", db.Dialect())))
	}
}

// childQuerySpans passes queries to bunotel only inside a span: the
// background work (last-use writes, invalidation polling) would otherwise
// make a one-span trace of every query, every few seconds. The hook's Init
// is not passed on either: it reports pool metrics to the global meter
// provider, which instrumentDB does with the service's own instead.
type childQuerySpans struct{ hook *bunotel.QueryHook }

func (h childQuerySpans) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return h.hook.BeforeQuery(ctx, e)
}

// AfterQuery always runs bunotel's: it records the query's timing, and ends
// the span only when BeforeQuery started one (ctx then holds it).
func (h childQuerySpans) AfterQuery(ctx context.Context, e *bun.QueryEvent) {
	h.hook.AfterQuery(ctx, e)
}

// observe reports the service's own metrics: the key-verification cache's
// hit ratio and lookups, whether its change feed is current, and the audit
// events appended, read when metrics are collected so that the hot paths
// only bump the counters they keep anyway.
func (t *telemetry) observe(cache *domain.KeyCache, feed *domain.ChangeFeed, auditAppended func() uint64) error {
	if t.meter == nil {
		return nil
	}
	m := t.meter.Meter(instrumentationName)
	hitRatio, err1 := m.Float64ObservableGauge("tenant_registry.key_cache.hit_ratio", metric.WithUnit("1"),
		metric.WithDescription("Share of API key verifications answered from the in-process cache since start"))
	lookups, err2 := m.Int64ObservableCounter("tenant_registry.key_cache.lookups", metric.WithUnit("{lookup}"),
		metric.WithDescription("API key verifications that looked in the in-process cache"))
	appended, err3 := m.Int64ObservableCounter("tenant_registry.audit.events_appended", metric.WithUnit("{event}"),
		metric.WithDescription("Audit events appended (committed; idempotent repeats excluded)"))
	current, err4 := m.Int64ObservableGauge("tenant_registry.change_feed.current",
		metric.WithDescription("1 while the change feed is current and the key cache answers; 0 while verifications read the database"))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		ratio, n := cache.HitRatio()
		o.ObserveFloat64(hitRatio, ratio)
		o.ObserveInt64(lookups, int64(n))
		o.ObserveInt64(appended, int64(auditAppended()))
		o.ObserveInt64(current, map[bool]int64{true: 1}[feed.Current()])
		return nil
	}, hitRatio, lookups, appended, current)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// observeLogs reports how many log lines sampling has left out, so that
// a flood that the log only summarises still shows in the metrics.
func (t *telemetry) observeLogs(suppressed func() uint64) error {
	if t.meter == nil {
		return nil
	}
	m := t.meter.Meter(instrumentationName)
	lines, err := m.Int64ObservableCounter("tenant_registry.log.lines_suppressed", metric.WithUnit("{line}"),
		metric.WithDescription("Log lines left out by sampling (each kind is summarised in a \"log lines sampled\" line)"))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if _, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(lines, int64(suppressed()))
		return nil
	}, lines); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// serveMetrics serves /metrics on ln until ctx ends.
func (t *telemetry) serveMetrics(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", t.metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving Prometheus metrics", "addr", ln.Addr().String(), "path", "/metrics")
	select {
	case err := <-errc:
		return fmt.Errorf("METRICS_ADDR: %w", err)
	case <-ctx.Done():
	}
	// A scrape takes milliseconds; no need to wait long for one.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx) // a scrape cut short is harmless
	<-errc
	return nil
}

// shutdown flushes what the exporters still hold and stops them.
func (t *telemetry) shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a collector that is down must not hold up the exit
	defer cancel()
	var errs []error
	if t.tracer != nil {
		errs = append(errs, t.tracer.Shutdown(ctx))
	}
	if t.meter != nil {
		errs = append(errs, t.meter.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
