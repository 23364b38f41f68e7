package main

import (
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/bojand/ghz/runner"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// slice is what one stretch of load gives. Only answers that arrive in
// its steady window count toward ok, elapsed and latencies: the window
// leaves out the ramp at the start, while the closed loop fills up, and
// the drain at the end, while the last requests in flight come back.
type slice struct {
	ok, errors uint64
	requests   uint64        // every request sent, counted or not
	elapsed    time.Duration // the steady window
	latencies  []time.Duration
	errorMsg   string // a sample, when there were errors
}

// ramp is the share of a slice left out at its start.
const ramp = 0.2

// window counts the requests that ended in [from, to].
type window struct{ from, to time.Time }

func (w window) add(s *slice, end time.Time, latency time.Duration, ok bool, errMsg string) {
	s.requests++
	if !ok {
		s.errors++
		if s.errorMsg == "" {
			s.errorMsg = errMsg
		}
		return
	}
	if end.Before(w.from) || end.After(w.to) {
		return
	}
	s.ok++
	s.latencies = append(s.latencies, latency)
}

// measurement accumulates the slices of one row.
type measurement struct {
	slice
}

func (m *measurement) add(s slice) {
	m.ok += s.ok
	m.errors += s.errors
	m.requests += s.requests
	m.elapsed += s.elapsed
	m.latencies = append(m.latencies, s.latencies...)
	if m.errorMsg == "" {
		m.errorMsg = s.errorMsg
	}
}

// rps is successful requests per second of load.
func (m *measurement) rps() float64 {
	if m.elapsed <= 0 {
		return 0
	}
	return float64(m.ok) / m.elapsed.Seconds()
}

// quantile returns the q-quantile of the latencies (nearest rank).
func (m *measurement) quantile(q float64) time.Duration {
	if len(m.latencies) == 0 {
		return 0
	}
	slices.Sort(m.latencies)
	i := int(q*float64(len(m.latencies))+0.5) - 1
	return m.latencies[min(max(i, 0), len(m.latencies)-1)]
}

// load is one way of putting load on a server for a while.
type load interface {
	run(d time.Duration) (slice, error)
}

// httpLoad drives Connect over HTTP/1.1 with vegeta, closed loop: a fixed
// number of workers each send their next request as soon as the previous
// answer is read, so the figure is the most the server gives at that
// concurrency rather than a rate the generator picked. Its client, and so
// its connections, last across the slices of a row.
type httpLoad struct {
	concurrency int
	client      *http.Client
	next        func(*vegeta.Target) error
}

// newHTTPClient returns a client for n workers over HTTP/1.1 keep-alive
// connections; like Connect's clients, it accepts gzip.
func newHTTPClient(n int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: n,
			MaxConnsPerHost:     n,
			IdleConnTimeout:     time.Minute,
		},
	}
}

func (l httpLoad) run(d time.Duration) (slice, error) {
	c := uint64(l.concurrency)
	atk := vegeta.NewAttacker(
		vegeta.Client(l.client), vegeta.Workers(c), vegeta.MaxWorkers(c),
		vegeta.MaxBody(0), // bodies are checked once before the run, not per request
	)
	start := time.Now()
	w := window{from: start.Add(time.Duration(ramp * float64(d))), to: start.Add(d)}
	s := slice{elapsed: w.to.Sub(w.from)}
	for res := range atk.Attack(vegeta.Targeter(l.next), vegeta.ConstantPacer{}, d, "") {
		ok := res.Error == "" && res.Code >= 200 && res.Code < 400 // vegeta's own rule
		w.add(&s, res.Timestamp.Add(res.Latency), res.Latency, ok, res.Error)
	}
	if s.ok == 0 {
		return s, fmt.Errorf("no request completed in the slice's window (%d sent, %d errors: %s)", s.requests, s.errors, s.errorMsg)
	}
	return s, nil
}

// connectPost returns a target function posting JSON bodies from body(i)
// to a Connect procedure.
func connectPost(baseURL, procedure string, body func(i uint64) []byte) func(*vegeta.Target) error {
	var n atomic.Uint64
	header := http.Header{"Content-Type": {"application/json"}}
	return func(t *vegeta.Target) error {
		t.Method, t.URL, t.Header = http.MethodPost, baseURL+procedure, header
		t.Body = body(n.Add(1))
		return nil
	}
}

// constant is a body that never changes.
func constant(s string) func(uint64) []byte {
	b := []byte(s)
	return func(uint64) []byte { return b }
}

// connectGet returns a target function sending the same GET.
func connectGet(rawURL string) func(*vegeta.Target) error {
	return func(t *vegeta.Target) error {
		t.Method, t.URL, t.Header, t.Body = http.MethodGet, rawURL, nil, nil
		return nil
	}
}

// getWithKey returns a target function sending the same GET with key as a
// bearer token, as a product's callers do.
func getWithKey(rawURL, key string) func(*vegeta.Target) error {
	header := http.Header{"Authorization": {"Bearer " + key}}
	return func(t *vegeta.Target) error {
		t.Method, t.URL, t.Header, t.Body = http.MethodGet, rawURL, header, nil
		return nil
	}
}

// grpcLoad drives gRPC with ghz, finding the method by server reflection.
// ghz's workers are closed loop like vegeta's; they share one HTTP/2
// connection, as a gRPC client of the service would.
type grpcLoad struct {
	concurrency int
	addr        string
	call        string // package.Service.Method
	data        string // the request, as JSON
}

func (l grpcLoad) run(d time.Duration) (slice, error) {
	var s slice
	// ghz's clock starts before it connects and asks for descriptors, which
	// on a busy machine can take most of a short slice: try again then.
	for attempt := 0; ; attempt++ {
		rep, err := runner.Run(l.call, l.addr,
			runner.WithInsecure(true),
			runner.WithConcurrency(uint(l.concurrency)),
			runner.WithConnections(1),
			runner.WithRunDuration(d),
			runner.WithDurationStopAction("ignore"), // requests cut off by the end are not errors
			runner.WithDataFromJSON(l.data),
			runner.WithTimeout(30*time.Second),
		)
		if err != nil {
			return slice{}, fmt.Errorf("ghz %s: %w", l.call, err)
		}
		if len(rep.Details) == 0 && attempt < 3 {
			continue
		}
		// Details carry each call's end; ghz's Total runs from its first
		// call to its stop.
		first := time.Time{}
		for _, r := range rep.Details {
			if begin := r.Timestamp.Add(-r.Latency); first.IsZero() || begin.Before(first) {
				first = begin
			}
		}
		w := window{from: first.Add(time.Duration(ramp * float64(rep.Total))), to: first.Add(rep.Total)}
		s = slice{elapsed: w.to.Sub(w.from), latencies: make([]time.Duration, 0, len(rep.Details))}
		for _, r := range rep.Details {
			w.add(&s, r.Timestamp, r.Latency, r.Error == "" && r.Status == "OK", r.Status+": "+r.Error)
		}
		break
	}
	if s.ok == 0 {
		return s, fmt.Errorf("ghz %s: no request completed in the slice's window (%d sent, %d errors: %s)", l.call, s.requests, s.errors, s.errorMsg)
	}
	return s, nil
}
