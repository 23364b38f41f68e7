package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
)

// slowEnv is a server whose request bodies must arrive within bodyTimeout.
func slowEnv(t *testing.T, streams string) map[string]string {
	env := devEnv("sqlite:" + filepath.Join(t.TempDir(), "registry.db"))
	env["BODY_READ_TIMEOUT"] = bodyTimeout.String()
	env["HTTP2_MAX_CONCURRENT_STREAMS"] = streams
	return env
}

const (
	bodyTimeout = 500 * time.Millisecond
	// margin is how much later than the body deadline the server may
	// answer: generous, for a machine shared with other test runs.
	margin = 5 * time.Second
)

// TestSlowBodyOverHTTP1 trickles a chunked request body a byte at a time:
// once BODY_READ_TIMEOUT has passed, the server answers deadline_exceeded
// and closes the connection, however long the client would go on.
func TestSlowBodyOverHTTP1(t *testing.T) {
	srv := serve(t, slowEnv(t, "100"))
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "POST "+createTenantPath+" HTTP/1.1\r\nHost: registry\r\n"+
		"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a byte every 50 ms, until the server hangs up
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := io.WriteString(conn, "1\r\n \r\n"); err != nil {
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(start.Add(bodyTimeout + margin))
	answer, err := io.ReadAll(bufio.NewReader(conn)) // to EOF: the server closed the connection
	took := time.Since(start)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("the connection was still open %v after the body deadline", took-bodyTimeout)
	}
	if took < bodyTimeout {
		t.Errorf("answered after %v, before the body deadline of %v", took, bodyTimeout)
	}
	if !bytes.Contains(answer, []byte(`"code":"deadline_exceeded"`)) {
		t.Errorf("answer %q, want a deadline_exceeded error", answer)
	}
	t.Logf("answered and closed %v after the first byte", took.Round(time.Millisecond))
}

// h2Client speaks HTTP/2 frames by hand, so that it can do what no real
// client library does: keep streams open forever and open more than the
// server allows.
type h2Client struct {
	t       *testing.T
	conn    net.Conn
	fr      *http2.Framer
	hbuf    bytes.Buffer
	enc     *hpack.Encoder
	streams uint32 // SETTINGS_MAX_CONCURRENT_STREAMS the server announced
}

func dialH2(t *testing.T, srv *running, settings ...http2.Setting) *h2Client {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &h2Client{t: t, conn: conn, fr: http2.NewFramer(conn, conn)}
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(margin))
	for c.streams == 0 {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's settings: %v", err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			v, _ := s.Value(http2.SettingMaxConcurrentStreams)
			c.streams = v
			if err := c.fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

// open starts a gRPC CreateTenant stream whose body announces a message of
// 100 bytes and sends the first of them; the rest is for the test to send.
func (c *h2Client) open(id uint32) {
	c.t.Helper()
	c.hbuf.Reset()
	for _, h := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", "registry"}, {":path", createTenantPath},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = c.enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
	if err := c.fr.WriteData(id, false, envelope(0, make([]byte, 100))[:6]); err != nil { // the prefix and one byte
		c.t.Fatal(err)
	}
}

// ping sends a PING and reads frames until its answer: the server has
// processed every frame sent before it.
func (c *h2Client) ping() {
	c.t.Helper()
	data := [8]byte{'p', 'i', 'n', 'g'}
	if err := c.fr.WritePing(false, data); err != nil {
		c.t.Fatal(err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(margin))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("waiting for the PING's answer: %v", err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == data {
			return
		}
	}
}

// ends reads frames until every stream in want has been reset
// (RST_STREAM) or the deadline passes. It returns how each ended: the
// grpc-status of the answer the server completed first, if any, then
// "reset: CODE".
func (c *h2Client) ends(want map[uint32]bool, deadline time.Time) map[uint32]string {
	c.t.Helper()
	answered := map[uint32]string{}
	got := map[uint32]string{}
	status := map[uint32]string{}
	_ = c.conn.SetReadDeadline(deadline)
	for len(got) < len(want) {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Errorf("after %d of %d streams were reset: %v", len(got), len(want), err)
			break
		}
		id := f.Header().StreamID
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" && s != "200" {
				status[id] = "http " + s
			}
			for _, h := range f.RegularFields() {
				if h.Name == "grpc-status" {
					status[id] = "grpc-status " + h.Value
				}
			}
			if f.StreamEnded() {
				answered[id] = status[id] + ", "
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				answered[id] = status[id] + ", "
			}
		case *http2.RSTStreamFrame:
			if want[id] && got[id] == "" {
				got[id] = answered[id] + "reset: " + f.ErrCode.String()
			}
		case *http2.GoAwayFrame:
			c.t.Errorf("the server closed the connection: %v", f.ErrCode)
			return got
		}
	}
	for id := range want {
		if got[id] == "" {
			got[id] = answered[id] + "not reset"
		}
	}
	return got
}

// TestSlowStreamsOverH2C opens more streams on one h2c connection than the
// server allows, each with a body that trickles and never ends. The server announces
// its bound, refuses the streams beyond it, and answers every other one
// with deadline_exceeded (grpc-status 4) once BODY_READ_TIMEOUT has
// passed and resets the unfinished stream, while the connection stays up.
func TestSlowStreamsOverH2C(t *testing.T) {
	const maxStreams = 8
	srv := serve(t, slowEnv(t, "8"))
	c := dialH2(t, srv)
	if c.streams != maxStreams {
		t.Fatalf("the server announced %d concurrent streams, want HTTP2_MAX_CONCURRENT_STREAMS=%d", c.streams, maxStreams)
	}
	start := time.Now()
	held, over := map[uint32]bool{}, map[uint32]bool{}
	for i := range uint32(maxStreams + 2) {
		id := 2*i + 1
		c.open(id)
		if i < maxStreams {
			held[id] = true
		} else {
			over[id] = true
		}
	}
	all := map[uint32]bool{}
	for id := range held {
		all[id] = true
	}
	for id := range over {
		all[id] = true
	}
	// The held streams trickle on, a byte each every 50 ms: 90 of the 99
	// bytes their messages still lack, so none is ever finished.
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		for sent := 0; sent < 90; sent++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			for id := range held {
				if c.fr.WriteData(id, false, []byte{0}) != nil {
					return
				}
			}
		}
	}()
	ended := c.ends(all, start.Add(bodyTimeout+margin))
	close(stop)
	<-trickled
	took := time.Since(start)
	for id := range over {
		if e := ended[id]; e != "reset: REFUSED_STREAM" && e != "reset: PROTOCOL_ERROR" {
			t.Errorf("stream %d, beyond the bound: %q, want it refused", id, e)
		}
	}
	for id := range held {
		if e := ended[id]; e != "grpc-status 4, reset: NO_ERROR" {
			t.Errorf("stream %d with an unfinished body: %q, want grpc-status 4 (deadline_exceeded), then a reset", id, e)
		}
	}
	if took < bodyTimeout {
		t.Errorf("the held streams ended after %v, before the body deadline of %v", took, bodyTimeout)
	}
	t.Logf("%d held streams were answered and reset %v after they opened: %v", len(held), took.Round(time.Millisecond), ended)

	// The server still serves: a real client on a connection of its own.
	tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.H2C, srv.baseURL)
	if _, err := tenants.GetTenant(context.Background(), &v1.GetTenantRequest{Id: seedTenantID}); err != nil {
		t.Errorf("GetTenant after the slow streams: %v", err)
	}
}

// TestAnswersNobodyTakesEnd opens h2c streams whose client announces a
// window of zero and never opens it, so that no answer can be sent: each
// stream is reset once its answer's write deadline (REQUEST_TIMEOUT after
// the body's, for a unary call) has passed, instead of holding its
// handler for as long as the client keeps the connection. Half the calls
// are Connect's, whose answer net/http writes after the handler returned,
// and half gRPC's, whose answer Connect flushes in the handler.
func TestAnswersNobodyTakesEnd(t *testing.T) {
	const requestTimeout = time.Second
	env := slowEnv(t, "100")
	env["REQUEST_TIMEOUT"] = requestTimeout.String()
	srv := serve(t, env)
	c := dialH2(t, srv, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	start := time.Now()
	streams := map[uint32]bool{}
	grpcBody := append([]byte{0, 0, 0, 0, byte(2 + len(seedTenantID)), 0x0a, byte(len(seedTenantID))}, seedTenantID...)
	for i := range uint32(20) {
		id := 2*i + 1
		contentType, body := "application/json", []byte(`{"id":"`+seedTenantID+`"}`)
		if i%2 == 1 {
			contentType, body = "application/grpc", grpcBody
		}
		c.hbuf.Reset()
		for _, h := range [][2]string{
			{":method", "POST"}, {":scheme", "http"}, {":authority", "registry"},
			{":path", "/tenantregistry.v1.TenantService/GetTenant"}, {"content-type", contentType},
		} {
			_ = c.enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
		}
		if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if err := c.fr.WriteData(id, true, body); err != nil {
			t.Fatal(err)
		}
		streams[id] = true
	}
	ended := c.ends(streams, start.Add(requestTimeout+bodyTimeout+margin))
	for id, e := range ended {
		if !strings.HasSuffix(e, "reset: INTERNAL_ERROR") {
			t.Errorf("stream %d, whose answer its client never took: %q, want it reset", id, e)
		}
	}
	if took := time.Since(start); took < requestTimeout {
		t.Errorf("the streams were reset after %v, before the write deadline", took)
	}
}

// smallWindowDialer dials with a 16 kB receive buffer, so that a client
// that stops reading stalls the server's writes after a few megabytes
// (the server's send buffer) rather than after the tens a default
// loopback window takes.
var smallWindowDialer = &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
	return errors.Join(err, serr)
}}

// TestExportOutlivesBodyDeadline streams an export of about 8 MB to a
// client that stops reading for three body deadlines after the first
// event, over HTTP/1.1 (Connect) and h2c (gRPC). The body deadline is for
// request bodies only: the export, whose request was read at once, must
// arrive whole.
func TestExportOutlivesBodyDeadline(t *testing.T) {
	srv := serve(t, slowEnv(t, "100"))
	tenantID, want := seedExport(t, srv)
	for _, p := range exportProtocols() {
		t.Run(p.name, func(t *testing.T) {
			got, err := exportWithPause(t, srv, p, tenantID, 3*bodyTimeout, false)
			if err != nil || got != want {
				t.Errorf("export: %d of %d events, error %v", got, want, err)
			}
		})
	}
}

// TestStalledExportEnds streams the same export to a client that stops
// reading after the first event for longer than REQUEST_TIMEOUT: the
// server's writes stall, and once REQUEST_TIMEOUT has passed since the
// last one began, it closes the HTTP/1.1 connection or resets the h2c
// stream, so the client gets an error and not the whole export. Each
// export runs on a fresh connection, and on one that has just served a
// quick call (net/http clears an HTTP/1.1 connection's write deadline
// after every answer: each answer must set its own).
func TestStalledExportEnds(t *testing.T) {
	const requestTimeout = time.Second
	srv, tenantID, want := serveExport(t, requestTimeout)
	for _, p := range exportProtocols() {
		for _, callFirst := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, after a call %v", p.name, callFirst), func(t *testing.T) {
				got, err := exportWithPause(t, srv, p, tenantID, requestTimeout+margin, callFirst)
				if err == nil || got >= want {
					t.Errorf("export: %d of %d events, error %v; want it ended early with an error", got, want, err)
				}
			})
		}
	}
}

// TestSlowReaderKeepsItsExport reads an export of about 8 MB at about
// 500 kB/s, and at 40 kB/s, for five seconds, five times REQUEST_TIMEOUT,
// then at once,
// over HTTP/1.1 (Connect) and h2c (gRPC). A client that keeps reading is
// not cut, however slowly it reads: an answer's write deadline runs from
// its last write, and a write waits only for about its own bytes to leave
// the server's socket, not for megabytes of kernel buffer to drain.
func TestSlowReaderKeepsItsExport(t *testing.T) {
	const requestTimeout = time.Second
	srv, tenantID, want := serveExport(t, requestTimeout)
	for _, p := range exportProtocols() {
		for _, each := range []time.Duration{8 * time.Millisecond, 100 * time.Millisecond} { // 500 and 40 kB/s
			t.Run(fmt.Sprintf("%s, an event each %s", p.name, each), func(t *testing.T) {
				start := time.Now()
				got, err := exportPaced(t, srv, p, tenantID, false, func(int) time.Duration {
					if time.Since(start) < 5*requestTimeout {
						return each // an event is 4 kB
					}
					return 0
				})
				if err != nil || got != want {
					t.Errorf("export: %d of %d events in %s, error %v; want all of them", got, want, time.Since(start).Round(time.Millisecond), err)
				}
			})
		}
	}
}

// serveExport starts a server whose REQUEST_TIMEOUT is requestTimeout and
// seeds an export on it (see seedExport).
func serveExport(t *testing.T, requestTimeout time.Duration) (srv *running, tenantID string, events int) {
	t.Helper()
	env := slowEnv(t, "100")
	env["REQUEST_TIMEOUT"] = requestTimeout.String()
	srv = serve(t, env)
	tenantID, events = seedExport(t, srv)
	return srv, tenantID, events
}

// seedExport creates a tenant and 2,000 events of 4 kB for it, and returns
// the tenant's id and how many events its export holds.
func seedExport(t *testing.T, srv *running) (tenantID string, events int) {
	t.Helper()
	ctx := context.Background()
	tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.baseURL)
	tn, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: "exporter", DisplayName: "Exporter"})
	if err != nil {
		t.Fatal(err)
	}
	tenantID = tn.GetTenant().GetId()
	audit := tenantregistryv1connect.NewAuditServiceClient(testserver.HTTP1, srv.baseURL)
	const batches, perBatch = 10, 200
	for b := range batches {
		events := make([]*v1.AuditEvent, perBatch)
		for i := range events {
			events[i] = &v1.AuditEvent{
				TenantId: tenantID, Product: "analytics", Action: "report.exported", Crud: "r",
				Actor:       &v1.AuditActor{Id: "user-1", Type: "user"},
				Description: strings.Repeat(fmt.Sprint(b*perBatch+i, " "), 4000)[:4000],
			}
		}
		if _, err := audit.RecordAuditEvents(ctx, &v1.RecordAuditEventsRequest{Events: events}); err != nil {
			t.Fatal(err)
		}
	}
	return tenantID, batches*perBatch + 1 // and the tenant's own creation
}

// exportProtocol is how an export test's client reaches the server.
type exportProtocol struct {
	name string
	http *http.Transport
	opts []connect.ClientOption
}

// exportProtocols are Connect over HTTP/1.1 and gRPC over h2c, each with
// a small receive window, so that a client that stops reading stalls the
// server's writes soon.
func exportProtocols() []exportProtocol {
	h2cProtocols := new(http.Protocols)
	h2cProtocols.SetUnencryptedHTTP2(true)
	return []exportProtocol{
		{"connect over HTTP/1.1", &http.Transport{DialContext: smallWindowDialer.DialContext}, nil},
		{"grpc over h2c", &http.Transport{DialContext: smallWindowDialer.DialContext, Protocols: h2cProtocols}, []connect.ClientOption{connect.WithGRPC()}},
	}
}

// exportWithPause exports the tenant's events, stopping for pause after
// the first, and returns how many arrived and the stream's error. With
// callFirst, the export follows a quick call on the same connection.
func exportWithPause(t *testing.T, srv *running, p exportProtocol, tenantID string, pause time.Duration, callFirst bool) (int, error) {
	t.Helper()
	return exportPaced(t, srv, p, tenantID, callFirst, func(got int) time.Duration {
		if got == 1 {
			return pause // the server's writes stall meanwhile
		}
		return 0
	})
}

// exportPaced exports the tenant's events, waiting wait(n) after the
// n-th, and returns how many arrived and the stream's error.
func exportPaced(t *testing.T, srv *running, p exportProtocol, tenantID string, callFirst bool, wait func(got int) time.Duration) (int, error) {
	t.Helper()
	defer p.http.CloseIdleConnections()
	// Uncompressed, so that the answer is as large as its events.
	opts := append([]connect.ClientOption{connect.WithAcceptCompression("gzip", nil, nil)}, p.opts...)
	hc := &http.Client{Transport: p.http}
	if callFirst {
		tenants := tenantregistryv1connect.NewTenantServiceClient(hc, srv.baseURL, opts...)
		if _, err := tenants.GetTenant(context.Background(), &v1.GetTenantRequest{Id: tenantID}); err != nil {
			t.Fatal(err)
		}
	}
	client := tenantregistryv1connect.NewAuditServiceClient(hc, srv.baseURL, opts...)
	stream, err := client.ExportAuditEvents(context.Background(), &v1.ExportAuditEventsRequest{TenantId: tenantID})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	got := 0
	for stream.Receive() {
		got++
		time.Sleep(wait(got))
	}
	return got, stream.Err()
}
