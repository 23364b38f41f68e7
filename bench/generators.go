package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// The throughput rows of constant requests are driven by load generators
// written in C, which spend a fraction of the server's CPU per request:
// wrk for Connect over HTTP/1.1, h2load (nghttp2) for gRPC over cleartext
// HTTP/2. Both run as processes of their own for each slice; their CPU
// time is counted as the load generator's.

// generatorCPU is the CPU time a finished generator process used.
func generatorCPU(cmd *exec.Cmd) time.Duration {
	if cmd.ProcessState == nil {
		return 0
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// wholeSeconds rounds d to whole seconds, at least one: wrk takes no less.
func wholeSeconds(d time.Duration) int {
	return max(1, int(math.Round(d.Seconds())))
}

// scriptFiles numbers the scripts and bodies the loads write.
var scriptFiles atomic.Uint64

// writeTemp writes b to a new file in dir named after name.
func writeTemp(dir, name string, b []byte) (string, error) {
	p := filepath.Join(dir, fmt.Sprintf("%03d-%s", scriptFiles.Add(1), name))
	return p, os.WriteFile(p, b, 0o644)
}

// wrkLoad drives one request, sent again and again, with wrk: one thread,
// connections keep-alive connections each with one request in flight
// (closed loop, as vegeta's workers were). A Lua script sets the request
// and, at the end, prints the run's counts and its latency histogram.
type wrkLoad struct {
	connections int
	url         string
	script      string // path of the Lua script
	// The request, for the probe.
	method string
	header http.Header
	body   []byte
}

// newWrkLoad writes the script of a request into dir; extra is Lua the
// script runs after setting the request (a request function, to build
// each request anew).
func newWrkLoad(dir string, connections int, method, url string, header http.Header, body []byte, extra string) (wrkLoad, error) {
	l := wrkLoad{connections: connections, url: url, method: method, header: header, body: body}
	var s strings.Builder
	fmt.Fprintf(&s, "wrk.method = %q\n", method)
	if len(body) > 0 {
		bodyPath, err := writeTemp(dir, "body", body)
		if err != nil {
			return l, err
		}
		fmt.Fprintf(&s, "local f = assert(io.open(%q, \"rb\"))\nwrk.body = f:read(\"*a\")\nf:close()\n", bodyPath)
	}
	for k, vs := range header {
		fmt.Fprintf(&s, "wrk.headers[%q] = %q\n", k, strings.Join(vs, ", "))
	}
	s.WriteString(extra)
	s.WriteString(`done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d %d\n", summary.duration, summary.requests,
    e.connect, e.read, e.write, e.status, e.timeout))
  local parts = {}
  for i = 1, #latency do
    local v, c = latency(i)
    parts[#parts + 1] = string.format("%d:%d", v, c)
  end
  io.write("HIST " .. table.concat(parts, " ") .. "\n")
end
`)
	var err error
	l.script, err = writeTemp(dir, "wrk.lua", []byte(s.String()))
	return l, err
}

// runID is a token that tells one run of a load from the others.
func runID() string { return strconv.FormatInt(time.Now().UnixNano(), 36) }

// newWrkAppendLoad writes the script of appends of n events each, one
// tenant of tenants after another: the script builds every request's
// body as auditBody does (an external id of its own for every event), so
// that the load generator, which shares the machine, spends little CPU on
// them. Like Connect's clients, it accepts gzip.
func newWrkAppendLoad(dir string, connections int, url string, tenants []string, n int) (wrkLoad, error) {
	pieces := auditTemplates(tenants)
	var s strings.Builder
	s.WriteString("local pieces = {\n")
	for _, p := range pieces {
		s.WriteString("  {")
		for k, piece := range p {
			if k > 0 {
				s.WriteString(", ")
			}
			s.WriteString(luaString(piece))
		}
		s.WriteString("},\n")
	}
	open, end := auditEnvelope(n)
	fmt.Fprintf(&s, `}
local events, open, close = %d, %s, %s
local run, i = "", 0
local places = {}
for j = 1, events do places[j] = tostring(j - 1) end
init = function(args) run = args[1] end
request = function()
  i = i + 1
  local p = pieces[(i %% #pieces) + 1]
  local prefix = run .. "-" .. i .. "-"
  local parts, n = {open}, 1
  for j = 1, events do
    if j > 1 then n = n + 1; parts[n] = "," end
    local id = prefix .. places[j]
    for k = 1, #p do
      if k > 1 then n = n + 1; parts[n] = id end
      n = n + 1; parts[n] = p[k]
    end
  end
  parts[n + 1] = close
  return wrk.format(nil, nil, nil, table.concat(parts))
end
`, n, luaString([]byte(open)), luaString([]byte(end)))
	header := http.Header{"Content-Type": {"application/json"}, "Accept-Encoding": {"gzip"}}
	return newWrkLoad(dir, connections, http.MethodPost, url, header, auditBody(pieces, n, "probe-"+runID(), 0), s.String())
}

// luaString quotes b as a Lua string literal, every byte escaped as a
// decimal, so that no byte of it can end the literal.
func luaString(b []byte) string {
	var s strings.Builder
	s.WriteByte('"')
	for _, c := range b {
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			s.WriteByte(c)
			continue
		}
		fmt.Fprintf(&s, "\\%03d", c)
	}
	s.WriteByte('"')
	return s.String()
}

// request is the load's request, for a probe.
func (l wrkLoad) request() (*http.Request, error) {
	req, err := http.NewRequest(l.method, l.url, bytes.NewReader(l.body))
	if err != nil {
		return nil, err
	}
	req.Header = l.header.Clone()
	return req, nil
}

func (l wrkLoad) run(d time.Duration) (slice, error) {
	secs := wholeSeconds(d)
	// The script's init gets a token of this run, for ids of its own.
	cmd := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(l.connections), "-d"+strconv.Itoa(secs)+"s",
		"--timeout", "30s", "-s", l.script, l.url, "--", runID())
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return slice{}, fmt.Errorf("wrk: %w: %s", err, stderr.String())
	}
	s := slice{generatorCPU: generatorCPU(cmd)}
	var counts [7]uint64
	found := false
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "BENCH "); ok {
			f := strings.Fields(rest)
			if len(f) != len(counts) {
				return s, fmt.Errorf("wrk: unexpected summary %q", line)
			}
			for i := range f {
				n, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					return s, fmt.Errorf("wrk: %q: %w", line, err)
				}
				counts[i] = n
			}
			found = true
		}
		if rest, ok := strings.CutPrefix(line, "HIST "); ok {
			for _, pair := range strings.Fields(rest) {
				v, c, _ := strings.Cut(pair, ":")
				us, err1 := strconv.ParseFloat(v, 64)
				n, err2 := strconv.Atoi(c)
				if err1 != nil || err2 != nil {
					return s, fmt.Errorf("wrk: bad histogram entry %q", pair)
				}
				lat := time.Duration(us * float64(time.Microsecond))
				for range n {
					s.latencies = append(s.latencies, lat)
				}
			}
		}
	}
	if !found {
		return s, fmt.Errorf("wrk printed no summary: %s %s", out.String(), stderr.String())
	}
	duration, requests, connErr, readErr, writeErr, status, timeout := counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6]
	s.elapsed = time.Duration(duration) * time.Microsecond
	s.requests = requests + connErr + readErr + writeErr + timeout
	s.errors = status + connErr + readErr + writeErr + timeout
	s.ok = requests - min(requests, status)
	if s.errors > 0 {
		s.errorMsg = fmt.Sprintf("wrk: %d non-2xx/3xx, %d connect, %d read, %d write errors, %d timeouts", status, connErr, readErr, writeErr, timeout)
	}
	// The histogram holds every completed request, errors included; they
	// are few when any (and make the row fail).
	if s.ok == 0 {
		return s, fmt.Errorf("no request succeeded (%s)", s.errorMsg)
	}
	return s, nil
}

// h2loadLoad drives one gRPC request with h2load over cleartext HTTP/2
// (prior knowledge, as gRPC clients connect): one connection with streams
// requests in flight, as a gRPC client of the service would send them.
// h2load cannot read trailers, where gRPC puts its status, so each slice
// checks instead that every answer carried a response message as large
// as the probe's (a gRPC error has none), and the probe checks one answer
// in full.
type h2loadLoad struct {
	streams   int
	url       string // http://host:port/package.Service/Method
	body      string // path of the framed request message
	frameSize int    // bytes of the response's gRPC frame, from the probe
	logDir    string
}

// grpcFrame frames a message as gRPC sends it: uncompressed, with its length.
func grpcFrame(m []byte) []byte {
	b := make([]byte, 5, 5+len(m))
	binary.BigEndian.PutUint32(b[1:], uint32(len(m)))
	return append(b, m...)
}

// newH2loadLoad writes the request of a gRPC call into dir, and sends it
// once with connect-go's gRPC client to check the answer and learn its size.
func newH2loadLoad[Req, Res any](ctx context.Context, dir string, streams int, baseURL, procedure string, req *Req, check func(*Res) error) (h2loadLoad, error) {
	l := h2loadLoad{streams: streams, url: baseURL + procedure, logDir: dir}
	m, ok := any(req).(proto.Message)
	if !ok {
		return l, errors.New("request is not a protobuf message")
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return l, err
	}
	if l.body, err = writeTemp(dir, "grpc-request", grpcFrame(b)); err != nil {
		return l, err
	}
	client := connect.NewClient[Req, Res](&http.Client{Transport: &http.Transport{Protocols: h2cOnly()}}, baseURL+procedure, connect.WithGRPC())
	res, err := client.CallUnary(ctx, connect.NewRequest(req))
	if err != nil {
		return l, fmt.Errorf("probe gRPC %s: %w", procedure, err)
	}
	if err := check(res.Msg); err != nil {
		return l, fmt.Errorf("probe gRPC %s: %w", procedure, err)
	}
	out, err := proto.Marshal(any(res.Msg).(proto.Message))
	if err != nil {
		return l, err
	}
	l.frameSize = 5 + len(out)
	return l, nil
}

func h2cOnly() *http.Protocols {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return p
}

// h2loadTraffic reads "traffic: … (N) total, … (N) headers …, … (N) data".
var h2loadTraffic = regexp.MustCompile(`traffic: .*\((\d+)\) total, .*\((\d+)\) headers .*\((\d+)\) data`)

// h2loadRequests reads "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout".
var h2loadRequests = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)

func (l h2loadLoad) run(d time.Duration) (slice, error) {
	log, err := os.CreateTemp(l.logDir, "h2load-*.log")
	if err != nil {
		return slice{}, err
	}
	log.Close()
	defer os.Remove(log.Name())
	cmd := exec.Command("h2load", "-t1", "-c1", "-m"+strconv.Itoa(l.streams), "-D", strconv.FormatInt(d.Milliseconds(), 10)+"ms",
		"-d", l.body, "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file="+log.Name(), l.url)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return slice{}, fmt.Errorf("h2load: %w: %s %s", err, out.String(), stderr.String())
	}
	m := h2loadRequests.FindStringSubmatch(out.String())
	t := h2loadTraffic.FindStringSubmatch(out.String())
	if m == nil || t == nil {
		return slice{}, fmt.Errorf("h2load: unexpected output: %s", out.String())
	}
	num := func(v string) uint64 { n, _ := strconv.ParseUint(v, 10, 64); return n }
	started, done, succeeded := num(m[2]), num(m[3]), num(m[4])
	failed, errored, timeout := num(m[5]), num(m[6]), num(m[7])
	data := num(t[3])
	// The log has each answer's start and latency: the same steady window
	// as the other loads' (the ramp left out) counts from it.
	type answer struct {
		end     time.Time
		latency time.Duration
	}
	var answers []answer
	first := time.Time{}
	f, err := os.Open(log.Name())
	if err != nil {
		return slice{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 3 {
			continue
		}
		startUs, err1 := strconv.ParseInt(cols[0], 10, 64)
		us, err2 := strconv.ParseInt(cols[2], 10, 64)
		if err1 != nil || err2 != nil || cols[1] != "200" {
			continue
		}
		begin := time.UnixMicro(startUs)
		if first.IsZero() || begin.Before(first) {
			first = begin
		}
		lat := time.Duration(us) * time.Microsecond
		answers = append(answers, answer{begin.Add(lat), lat})
	}
	w := window{from: first.Add(time.Duration(ramp * float64(d))), to: first.Add(d)}
	s := slice{generatorCPU: generatorCPU(cmd), elapsed: w.to.Sub(w.from), latencies: make([]time.Duration, 0, len(answers))}
	for _, a := range answers {
		w.add(&s, a.end, a.latency, true, "")
	}
	s.requests = started
	// Every answer must have carried a whole response message: a gRPC
	// error carries none.
	bad := failed + errored + timeout
	if want := succeeded * uint64(l.frameSize); data < want {
		short := (want - data + uint64(l.frameSize) - 1) / uint64(l.frameSize)
		bad += short
		s.errorMsg = fmt.Sprintf("h2load: %d bytes of response messages for %d answers of %d bytes: about %d answers were gRPC errors", data, succeeded, l.frameSize, short)
	}
	s.errors = bad
	if bad > 0 && s.errorMsg == "" {
		s.errorMsg = fmt.Sprintf("h2load: %d done, %d succeeded, %d failed, %d errored, %d timeout", done, succeeded, failed, errored, timeout)
	}
	if s.ok == 0 {
		return s, fmt.Errorf("h2load: no request succeeded in the slice's window: %s", out.String())
	}
	return s, nil
}
