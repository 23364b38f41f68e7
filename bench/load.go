package main

import (
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

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
	// generatorCPU is the CPU time of a load generator running as a
	// process of its own (wrk, h2load); the harness's own is read apart.
	generatorCPU time.Duration
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
	m.generatorCPU += s.generatorCPU
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

// funcLoad calls f from workers goroutines of the harness itself, closed
// loop, for rows whose work runs in the harness against the database (the
// audit log's append code beside a plain INSERT): then the harness is the
// "server" whose CPU is counted.
type funcLoad struct {
	workers int
	f       func(worker int, i uint64) error
}

func (l funcLoad) run(d time.Duration) (slice, error) {
	start := time.Now()
	w := window{from: start.Add(time.Duration(ramp * float64(d))), to: start.Add(d)}
	results := make([]slice, l.workers)
	var n atomic.Uint64
	done := make(chan struct{})
	for k := range l.workers {
		go func() {
			defer func() { done <- struct{}{} }()
			s := &results[k]
			for time.Now().Before(w.to) {
				t0 := time.Now()
				err := l.f(k, n.Add(1))
				end := time.Now()
				msg := ""
				if err != nil {
					msg = err.Error()
				}
				w.add(s, end, end.Sub(t0), err == nil, msg)
			}
		}()
	}
	for range l.workers {
		<-done
	}
	s := slice{elapsed: w.to.Sub(w.from)}
	for _, r := range results {
		s.ok += r.ok
		s.errors += r.errors
		s.requests += r.requests
		s.latencies = append(s.latencies, r.latencies...)
		if s.errorMsg == "" {
			s.errorMsg = r.errorMsg
		}
	}
	if s.ok == 0 {
		return s, fmt.Errorf("no call completed in the slice's window (%d made, %d errors: %s)", s.requests, s.errors, s.errorMsg)
	}
	return s, nil
}
