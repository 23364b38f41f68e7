package transport_test

// The bad-input battery: hundreds of hostile requests to every RPC of the
// contract, over Connect JSON, Connect binary and gRPC, built from the
// service descriptors so that a new RPC or field is covered without
// touching this file. Every request must be refused with a code that puts
// the fault with the caller and a message naming the problem (or, for a
// read, answered without harm); none may change the database, and the
// server must stay up.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/internal/testserver"
	"github.com/tenant-registry/tenant-registry/persistence"
	"github.com/tenant-registry/tenant-registry/transport"
)

// batteryMinPerRPC is how many hostile requests each RPC gets at least,
// over the three wire formats together.
const batteryMinPerRPC = 210

// batteryMaxBytes is the test server's MaxMessageBytes: the default.
var batteryMaxBytes = transport.DefaultConfig().MaxMessageBytes

// wire is one way of putting a request on the wire.
type wire int

const (
	connectJSON  wire = iota // Connect protocol, JSON, HTTP/1.1
	connectProto             // Connect protocol, binary protobuf, HTTP/1.1
	grpcProto                // gRPC, binary protobuf, cleartext HTTP/2
)

var wires = []wire{connectJSON, connectProto, grpcProto}

func (w wire) String() string { return [...]string{"connect-json", "connect-proto", "grpc"}[w] }

func (w wire) binary() bool { return w != connectJSON }

// batteryRPC is one method of the contract, as the battery sees it.
type batteryRPC struct {
	procedure string
	input     protoreflect.MessageType
	streaming bool
	// readOnly RPCs may answer a hostile request successfully (a search for
	// "'; DROP TABLE tenants;--" finds nothing); VerifyApiKey always answers
	// OK with a code, by design.
	readOnly bool
	get      bool // NO_SIDE_EFFECTS: the Connect protocol also takes it as GET
}

// hostile is one request of the battery.
type hostile struct {
	name string
	wire wire
	// payload is the request message as encoded for wire; the battery
	// frames it for streams and gRPC. rawBody, when set, is the whole
	// HTTP body instead, as is.
	payload []byte
	rawBody []byte
	// contentType, method, query and header override what wire implies.
	contentType string
	method      string
	query       string
	header      http.Header
	// unsupported requests use a codec, compression, HTTP method or
	// number of messages the procedure does not offer. HTTP 415 and 405
	// (which Connect answers before any codec is agreed, so with no Connect
	// code) and Unimplemented (which the gRPC status table prescribes for
	// unsupported compression and for a request cardinality violation) are
	// right answers for them: they tell the caller it spoke the wrong way,
	// and gRPC clients do not retry them. For any other request they would
	// hide a routing bug, so there they count as failures.
	unsupported bool
}

// outcome is what the server answered.
type outcome struct {
	status  int
	code    connect.Code // 0 for OK or an HTTP-level refusal
	message string
	ok      bool
}

// callerFaults are the codes that say the caller's request is wrong, the
// "4xx class": none of them invites a retry of the same request, and none
// blames the server or the database.
var callerFaults = []connect.Code{
	connect.CodeInvalidArgument, connect.CodeOutOfRange, connect.CodeNotFound, connect.CodeAlreadyExists,
	connect.CodeFailedPrecondition, connect.CodePermissionDenied, connect.CodeUnauthenticated,
	connect.CodeResourceExhausted, connect.CodeAborted, // a stale etag: the caller read an old version
}

func batteryRPCs() []batteryRPC {
	var out []batteryRPC
	for _, file := range []protoreflect.FileDescriptor{
		v1.File_tenantregistry_v1_tenant_proto, v1.File_tenantregistry_v1_catalog_proto,
		v1.File_tenantregistry_v1_entitlement_proto, v1.File_tenantregistry_v1_api_key_proto,
		v1.File_tenantregistry_v1_audit_proto,
	} {
		services := file.Services()
		for i := range services.Len() {
			methods := services.Get(i).Methods()
			for j := range methods.Len() {
				md := methods.Get(j)
				mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
				if err != nil {
					panic(err)
				}
				opts, _ := md.Options().(*descriptorpb.MethodOptions)
				noSideEffects := opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
				out = append(out, batteryRPC{
					procedure: "/" + string(services.Get(i).FullName()) + "/" + string(md.Name()),
					input:     mt,
					streaming: md.IsStreamingServer(),
					readOnly:  noSideEffects || md.Name() == "VerifyApiKey",
					get:       noSideEffects && !md.IsStreamingServer(),
				})
			}
		}
	}
	return out
}

// badUTF8Marker is replaced on the wire by badUTF8: the Go marshallers
// refuse to write invalid UTF-8, other clients do not. Same length, so
// protobuf lengths stay right.
const (
	badUTF8Marker = "~#~#"
	badUTF8       = "\xff\xfe\xc0\x80"
)

// hostileStrings go into every string field, element and map key or value.
var hostileStrings = []struct{ name, value string }{
	{"NUL byte", "a\x00b"},
	{"only NUL", "\x00"},
	{"invalid UTF-8", "x" + badUTF8Marker},
	{"1 MB string", strings.Repeat("x", 1<<20)},
	{"64k two-byte characters", strings.Repeat("é", 1<<15)},
	{"SQL drop", "'; DROP TABLE tenants;--"},
	{"SQL tautology", "\" OR 1=1 --"},
	{"SQL LIKE wildcards", "%' OR '1'='1"},
	{"not a UUID", "not-a-uuid"},
	{"UUID with a bad digit", "0190f5c2-7d3e-7a00-8000-00000000000g"},
	{"braced UUID", "{0190f5c2-7d3e-7a00-8000-000000000000}"},
	{"URN UUID", "urn:uuid:0190f5c2-7d3e-7a00-8000-000000000000"},
	{"unknown UUID", "0190f5c2-7d3e-7a00-8000-000000000000"},
	{"ANSI escape", "\x1b[31mred\x1b[0m"},
	{"right-to-left override", "abc\u202edef"},
	{"CRLF header injection", "a\r\nX-Injected: 1"},
	{"path traversal", "../../../etc/passwd"},
	{"wildcards", "*%_"},
	{"blank", "   "},
	{"huge number", "999999999999999999999999999999"},
	{"highest code point", "\U0010FFFF"},
}

// nestedSample names the hostile strings that also go into the string
// fields of nested messages.
var nestedSample = map[string]bool{
	"NUL byte": true, "invalid UTF-8": true, "1 MB string": true, "SQL drop": true, "not a UUID": true, "ANSI escape": true,
}

// hostileInts go into every integer field.
var hostileInts = []struct {
	name  string
	value int64
}{
	{"-1", -1}, {"min int32", math.MinInt32}, {"max int32", math.MaxInt32}, {"501", 501}, {"1e9", 1e9},
}

// saneInts are the integer fields for which a hostile value is a right
// one, by field and value: 501 is just past every page size, but a fine
// number of days to keep audit events.
var saneInts = map[protoreflect.FullName]int64{
	"tenantregistry.v1.SetAuditRetentionRequest.retention_days": 501,
}

// hostileTimes are Timestamp and Duration values outside what protobuf
// allows, or far from anything sensible.
var hostileTimes = []struct {
	name           string
	seconds, nanos int64
}{
	{"before year 1", -62135596801, 0}, {"after year 9999", 253402300800, 0}, {"negative nanos", 0, -1},
	{"nanos over a second", 0, 1e9}, {"1969", -1, 0}, {"max seconds", math.MaxInt64, 0}, {"mixed signs", 1, -1},
}

// batteryFixture is what the battery needs from the database: real page
// tokens to edit and to replay against other queries.
type batteryFixture struct {
	tenantToken string // a real next_page_token of ListTenants
}

// casesFor returns the battery's requests for r, the salt-th RPC.
func casesFor(r batteryRPC, salt int, fx batteryFixture, rng *rand.Rand) []hostile {
	var cases []hostile
	for _, leaf := range leaves(r.input.Descriptor(), nil, 0) {
		cases = append(cases, leafCases(r, leaf, fx)...)
	}
	cases = append(cases, jsonCases(r)...)
	cases = append(cases, binaryCases(r)...)
	cases = append(cases, envelopeCases(r)...)
	cases = spreadHeavy(cases, salt)
	// Top up with random bodies, so that even an RPC without fields (the
	// catalog's ListProducts) gets its share.
	for i := 0; len(cases) < batteryMinPerRPC; i++ {
		w := wires[i%len(wires)]
		b := make([]byte, 1+rng.IntN(64))
		for j := range b {
			b[j] = byte(rng.UintN(256))
		}
		if w == connectJSON && i%2 == 0 {
			b = randomJSON(rng)
		}
		cases = append(cases, hostile{name: fmt.Sprintf("random body %d", i), wire: w, payload: b})
	}
	return cases
}

// heavyCases are the megabyte-sized requests. Each goes to every RPC, but
// over one wire format only, a different one from RPC to RPC: the server
// reads, decodes and validates them the same way whatever the wire, and
// sending each over all three made the battery far too slow under the
// race detector.
var heavyCases = []string{"1 MB", "64k", "10000", "body over the maximum", "gzip bomb"}

func spreadHeavy(cases []hostile, salt int) []hostile {
	heavy := func(c hostile) bool {
		return slices.ContainsFunc(heavyCases, func(h string) bool { return strings.Contains(c.name, h) })
	}
	count := map[string]int{}
	for _, c := range cases {
		if heavy(c) {
			count[c.name]++
		}
	}
	seen := map[string]int{}
	return slices.DeleteFunc(cases, func(c hostile) bool {
		if !heavy(c) {
			return false
		}
		n := seen[c.name]
		seen[c.name]++
		return n != (salt+len(c.name))%count[c.name] // keep one of its encodings, a different one per RPC
	})
}

// leaf is a field reachable from the request message: the path of fields
// leading to it (through singular messages and the first element of
// repeated ones).
type leaf []protoreflect.FieldDescriptor

func (l leaf) String() string {
	names := make([]string, len(l))
	for i, fd := range l {
		names[i] = string(fd.Name())
	}
	return strings.Join(names, ".")
}

func isWKT(md protoreflect.MessageDescriptor) bool {
	return md.FullName() == "google.protobuf.Timestamp" || md.FullName() == "google.protobuf.Duration"
}

func leaves(md protoreflect.MessageDescriptor, path leaf, depth int) []leaf {
	var out []leaf
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		p := append(slices.Clone(path), fd)
		out = append(out, p)
		if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() && !isWKT(fd.Message()) && depth < 2 {
			out = append(out, leaves(fd.Message(), p, depth+1)...)
		}
	}
	return out
}

// set returns a new request with the leaf set by fn, which gets the
// message holding the leaf's field.
func set(r batteryRPC, l leaf, fn func(m protoreflect.Message, fd protoreflect.FieldDescriptor)) proto.Message {
	root := r.input.New()
	m := root
	for _, fd := range l[:len(l)-1] {
		if fd.IsList() {
			m = m.Mutable(fd).List().AppendMutable().Message()
		} else {
			m = m.Mutable(fd).Message()
		}
	}
	fn(m, l[len(l)-1])
	return root.Interface()
}

// encodings turns a message into one case per wire format.
func encodings(name string, msg proto.Message, wires ...wire) []hostile {
	var out []hostile
	for _, w := range wires {
		var b []byte
		var err error
		if w.binary() {
			b, err = proto.Marshal(msg)
		} else {
			b, err = protojson.Marshal(msg)
		}
		if err != nil {
			continue // protojson cannot write some values (out-of-range times); binary can
		}
		out = append(out, hostile{name: name, wire: w, payload: bytes.ReplaceAll(b, []byte(badUTF8Marker), []byte(badUTF8))})
	}
	return out
}

func leafCases(r batteryRPC, l leaf, fx batteryFixture) []hostile {
	fd := l[len(l)-1]
	var out []hostile
	add := func(what string, fn func(m protoreflect.Message, fd protoreflect.FieldDescriptor)) {
		out = append(out, encodings(l.String()+": "+what, set(r, l, fn), wires...)...)
	}
	switch {
	case fd.IsMap():
		// A fine value of the map's kind: strings, or counts (limits).
		fine := protoreflect.ValueOfString("v")
		if fd.MapValue().Kind() == protoreflect.Int64Kind {
			fine = protoreflect.ValueOfInt64(1)
			for _, n := range []int64{-1, math.MinInt64} {
				add(fmt.Sprintf("value %d", n), func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
					m.Mutable(fd).Map().Set(protoreflect.ValueOfString("seats").MapKey(), protoreflect.ValueOfInt64(n))
				})
			}
		}
		for _, s := range hostileStrings {
			add("key "+s.name, func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				m.Mutable(fd).Map().Set(protoreflect.ValueOfString(s.value).MapKey(), fine)
			})
			if fd.MapValue().Kind() == protoreflect.StringKind {
				add("value "+s.name, func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
					m.Mutable(fd).Map().Set(protoreflect.ValueOfString("k").MapKey(), protoreflect.ValueOfString(s.value))
				})
			}
		}
		for _, n := range []int{33, 51, 10000} {
			add(fmt.Sprintf("%d entries", n), func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				mp := m.Mutable(fd).Map()
				for i := range n {
					mp.Set(protoreflect.ValueOfString(fmt.Sprintf("key-%05d", i)).MapKey(), fine)
				}
			})
		}
	case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
		// Elements' fields are leaves of their own; here the list itself.
		for _, n := range []int{501, 10000} {
			add(fmt.Sprintf("%d empty elements", n), func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				list := m.Mutable(fd).List()
				for range n {
					list.AppendMutable()
				}
			})
		}
		add("one empty element", func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
			m.Mutable(fd).List().AppendMutable()
		})
	case fd.IsList() && fd.Kind() == protoreflect.StringKind:
		for _, s := range hostileStrings {
			add("element "+s.name, func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				m.Mutable(fd).List().Append(protoreflect.ValueOfString(s.value))
			})
		}
		for _, n := range []int{51, 10000} {
			add(fmt.Sprintf("%d elements", n), func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				list := m.Mutable(fd).List()
				for i := range n {
					list.Append(protoreflect.ValueOfString(fmt.Sprintf("scope-%d", i)))
				}
			})
		}
	case fd.Kind() == protoreflect.StringKind:
		values := slices.Clone(hostileStrings)
		if len(l) > 1 {
			// Fields of nested messages (an audit event's actor, an imported
			// key) go through the same checks as top-level ones: a sample.
			values = slices.DeleteFunc(values, func(s struct{ name, value string }) bool { return !nestedSample[s.name] })
		}
		if fd.Name() == "page_token" {
			values = append(values, pageTokens(r, fx)...)
		}
		for _, s := range values {
			add(s.name, func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				m.Set(fd, protoreflect.ValueOfString(s.value))
			})
		}
	case fd.Kind() == protoreflect.EnumKind:
		for _, n := range []protoreflect.EnumNumber{99, -1, math.MaxInt32} {
			add(fmt.Sprintf("enum %d", n), func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				if fd.IsList() {
					m.Mutable(fd).List().Append(protoreflect.ValueOfEnum(n))
				} else {
					m.Set(fd, protoreflect.ValueOfEnum(n))
				}
			})
		}
	case fd.Kind() == protoreflect.Int32Kind || fd.Kind() == protoreflect.Int64Kind:
		for _, n := range hostileInts {
			if v, ok := saneInts[fd.FullName()]; ok && v == n.value {
				continue
			}
			add(n.name, func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				if fd.Kind() == protoreflect.Int32Kind {
					m.Set(fd, protoreflect.ValueOfInt32(int32(n.value)))
				} else {
					m.Set(fd, protoreflect.ValueOfInt64(n.value))
				}
			})
		}
		if fd.Kind() == protoreflect.Int64Kind {
			add("min int64", func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				m.Set(fd, protoreflect.ValueOfInt64(math.MinInt64))
			})
		}
	case fd.Kind() == protoreflect.BoolKind:
		add("true", func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfBool(true))
		})
	case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.FieldMask":
		for _, path := range []string{"no_such_field", "id", "metadata.plan", "", "DISPLAY_NAME", strings.Repeat("x", 10000)} {
			add(fmt.Sprintf("mask path %.20q", path), func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				mask := m.Mutable(fd).Message()
				mask.Mutable(mask.Descriptor().Fields().ByName("paths")).List().Append(protoreflect.ValueOfString(path))
			})
		}
	case fd.Kind() == protoreflect.MessageKind && isWKT(fd.Message()):
		for _, tv := range hostileTimes {
			add(tv.name, func(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
				t := m.Mutable(fd).Message()
				fs := t.Descriptor().Fields()
				t.Set(fs.ByName("seconds"), protoreflect.ValueOfInt64(tv.seconds))
				t.Set(fs.ByName("nanos"), protoreflect.ValueOfInt32(int32(tv.nanos)))
			})
		}
	case fd.Kind() == protoreflect.MessageKind:
		add("empty message", func(m protoreflect.Message, fd protoreflect.FieldDescriptor) { m.Mutable(fd) })
	}
	return out
}

// forgeToken makes a page token the way the server does. The checksum
// only catches accidents; anybody who reads the source can do this, so
// what a token decodes to must be checked like any other input.
func forgeToken(query string, after ...string) string {
	fp := sha256.Sum256([]byte(query))
	b, _ := json.Marshal(struct {
		Q string   `json:"q"`
		A []string `json:"a"`
	}{base64.RawURLEncoding.EncodeToString(fp[:9]), after})
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(append(b, sum[:8]...))
}

// pageTokens are page_token values beyond the hostile strings: garbage,
// real tokens edited or replayed against another query, and forged ones
// with a valid checksum for the right query but a hostile position.
func pageTokens(r batteryRPC, fx batteryFixture) []struct{ name, value string } {
	tok := fx.tenantToken
	out := []struct{ name, value string }{
		{"token: random base64", base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdefghijklmnopqrstuvwxyz"))},
		{"token: garbage", "garbage!"},
		{"token: edited", tok[:len(tok)/2] + string(rune('A'+(tok[len(tok)/2]+1)%26)) + tok[len(tok)/2+1:]},
		{"token: truncated", tok[:len(tok)-3]},
		{"token: lengthened", tok + "AAAA"},
		{"token: padded base64", tok + "=="},
		{"token: of another query", forgeToken("tenants|FROZEN|", "0190f5c2-7d3e-7a00-8000-000000000000")},
	}
	if !strings.HasSuffix(r.procedure, "/ListTenants") {
		out = append(out, struct{ name, value string }{"token: of ListTenants", tok})
	}
	// The queries an empty request of each list makes (see domain's List
	// methods); ListApiKeys needs a tenant id and is refused before.
	query := map[string]string{
		"/tenantregistry.v1.TenantService/ListTenants":          "tenants||",
		"/tenantregistry.v1.CatalogService/ListProductRequests": "product_requests|",
		"/tenantregistry.v1.AuditService/ListAuditEvents":       "audit||||||0001-01-01T00:00:00Z|0001-01-01T00:00:00Z",
	}[r.procedure]
	if query != "" {
		for _, pos := range [][]string{
			{"'; DROP TABLE tenants;--"}, {"not-a-uuid"}, {""}, {"-1"}, {"0"}, {"9223372036854775808"},
			{"1e3"}, {"ffffffff-ffff-ffff-ffff-ffffffffffff"}, {}, {"a", "b"}, {strings.Repeat("9", 10000)},
		} {
			out = append(out, struct{ name, value string }{fmt.Sprintf("token: forged at %.20q", pos), forgeToken(query, pos...)})
		}
	}
	return out
}

// jsonCases break the JSON itself, or give fields values of the wrong type.
func jsonCases(r batteryRPC) []hostile {
	bodies := []struct{ name, body string }{
		{"malformed JSON", `{"a":`}, {"unbalanced braces", `{}}`}, {"trailing garbage", `{} {}`},
		{"JSON array", `[1,2]`}, {"JSON null", `null`}, {"JSON string", `"x"`}, {"JSON number", `42`},
		{"JSON true", `true`}, {"empty body", ``}, {"whitespace body", " \n\t "}, {"byte order mark", "\ufeff{}"},
		{"invalid UTF-8 outside strings", "{\xff}"}, {"lone surrogate escape", `{"\ud800":1}`},
		{"unknown field", `{"noSuchField":1}`}, {"NaN", `{"x":NaN}`}, {"single quotes", `{'a':1}`},
		{"comment", `{/* hi */}`}, {"10000 nested arrays", strings.Repeat("[", 10000) + strings.Repeat("]", 10000)},
		{"1000 nested objects", strings.Repeat(`{"a":`, 1000) + "1" + strings.Repeat("}", 1000)},
		{"NUL before the object", "\x00{}"}, {"UTF-16 body", "\xff\xfe{\x00}\x00"},
	}
	var out []hostile
	for _, b := range bodies {
		out = append(out, hostile{name: b.name, wire: connectJSON, payload: []byte(b.body)})
	}
	fields := r.input.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		var wrong []string
		switch {
		case fd.IsMap():
			wrong = []string{`[]`, `"x"`, `{"k":1}`, `{"k":{}}`}
		case fd.IsList():
			wrong = []string{`"x"`, `{}`, `[[]]`, `[1,{}]`}
		case fd.Kind() == protoreflect.StringKind:
			wrong = []string{`123`, `true`, `{}`, `[]`, `"\ud800"`}
		case fd.Kind() == protoreflect.EnumKind:
			wrong = []string{`"NOT_A_VALUE"`, `99`, `1.5`, `true`, `""`}
		case fd.Kind() == protoreflect.BoolKind:
			wrong = []string{`"yes"`, `1`, `"true"`}
		case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Timestamp":
			wrong = []string{`"not-a-time"`, `"10000-01-01T00:00:00Z"`, `"2026-13-01T00:00:00Z"`, `12`, `"2026-01-01"`}
		case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Duration":
			wrong = []string{`"abc"`, `"1h"`, `"-315576000001s"`, `3600`}
		case fd.Kind() == protoreflect.MessageKind:
			wrong = []string{`"x"`, `1`, `[]`, `true`}
		default: // numbers
			wrong = []string{`"abc"`, `1.5`, `1e99`, `true`, `""`, `2147483648`, `-9223372036854775809`}
		}
		for _, v := range wrong {
			out = append(out, hostile{
				name: fmt.Sprintf("%s as %s", fd.Name(), v), wire: connectJSON,
				payload: []byte(fmt.Sprintf(`{%q:%s}`, fd.JSONName(), v)),
			})
		}
		out = append(out, hostile{
			name: string(fd.Name()) + " twice", wire: connectJSON,
			payload: []byte(fmt.Sprintf(`{%q:null,%q:null}`, fd.JSONName(), fd.Name())),
		})
	}
	return out
}

// binaryCases break the protobuf encoding.
func binaryCases(r batteryRPC) []hostile {
	var bodies []struct {
		name string
		body []byte
	}
	add := func(name string, b []byte) {
		bodies = append(bodies, struct {
			name string
			body []byte
		}{name, b})
	}
	add("garbage", []byte("\xff\xff\xff"))
	add("varint overflow", append([]byte{0x08}, bytes.Repeat([]byte{0xff}, 11)...))
	add("field number 0", []byte{0x00, 0x01})
	add("wire type 6", []byte{0x0e})
	add("wire type 7", []byte{0x0f})
	add("unterminated group", []byte{0x0b})
	add("unmatched end group", []byte{0x0c})
	add("length past the end", append(protowire.AppendTag(nil, 1, protowire.BytesType), 0x7f, 'x'))
	add("negative-looking length", append(protowire.AppendTag(nil, 1, protowire.BytesType), 0xff, 0xff, 0xff, 0xff, 0x0f))
	add("huge unknown field number", protowire.AppendVarint(protowire.AppendTag(nil, protowire.MaxValidNumber, protowire.VarintType), 1))
	add("1000 nested groups", append(bytes.Repeat([]byte{0x9b, 0x06}, 1000), bytes.Repeat([]byte{0x9c, 0x06}, 1000)...))
	fields := r.input.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		n := fd.Number()
		// The wrong wire type for the field: varints where bytes belong and
		// bytes where varints belong.
		if fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.MessageKind {
			add(string(fd.Name())+" as a varint", protowire.AppendVarint(protowire.AppendTag(nil, n, protowire.VarintType), 1))
			add(string(fd.Name())+" as fixed32", protowire.AppendFixed32(protowire.AppendTag(nil, n, protowire.Fixed32Type), 1))
			add(string(fd.Name())+" truncated", append(protowire.AppendTag(nil, n, protowire.BytesType), 5, 'a', 'b'))
		} else {
			add(string(fd.Name())+" as bytes", protowire.AppendString(protowire.AppendTag(nil, n, protowire.BytesType), "not a number"))
			add(string(fd.Name())+" as fixed64", protowire.AppendFixed64(protowire.AppendTag(nil, n, protowire.Fixed64Type), 1))
		}
		if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() {
			add(string(fd.Name())+" holding garbage", protowire.AppendBytes(protowire.AppendTag(nil, n, protowire.BytesType), []byte{0xff, 0xff}))
		}
	}
	var out []hostile
	for _, b := range bodies {
		for _, w := range []wire{connectProto, grpcProto} {
			out = append(out, hostile{name: b.name, wire: w, payload: b.body})
		}
	}
	return out
}

// bigBodies are built once: a JSON and a protobuf message just over the
// maximum size, and a gzip bomb (16 MiB of zeros once inflated).
var bigBodies = sync.OnceValue(func() (b struct{ json, proto, bomb []byte }) {
	big := bytes.Repeat([]byte("x"), batteryMaxBytes+1024)
	b.json = append(append([]byte(`{"x":"`), big...), `"}`...)
	b.proto = protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), big)
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	_, _ = zw.Write(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), make([]byte, 16<<20)))
	_ = zw.Close()
	b.bomb = gz.Bytes()
	return b
})

// envelopeCases break what is around the message: content types, sizes,
// compression, framing, timeouts, HTTP methods.
func envelopeCases(r batteryRPC) []hostile {
	big := bigBodies()
	jsonBig, protoBig, bomb := big.json, big.proto, big.bomb

	var out []hostile
	for _, w := range wires {
		payload := []byte("{}")
		if w.binary() {
			payload = nil
		}
		over := jsonBig
		if w.binary() {
			over = protoBig
		}
		out = append(out,
			hostile{name: "body over the maximum", wire: w, payload: over},
			hostile{name: "content type text/plain", wire: w, payload: payload, contentType: "text/plain", unsupported: true},
			hostile{name: "content type application/xml", wire: w, payload: payload, contentType: "application/xml", unsupported: true},
			hostile{name: "form content type", wire: w, payload: payload, contentType: "application/x-www-form-urlencoded", unsupported: true},
			hostile{name: "no content type", wire: w, payload: payload, contentType: "-", unsupported: true},
			hostile{name: "PUT", wire: w, payload: payload, method: http.MethodPut, unsupported: true},
			hostile{name: "DELETE", wire: w, payload: payload, method: http.MethodDelete, unsupported: true},
		)
		if w == grpcProto {
			out = append(out,
				hostile{name: "unknown gRPC codec", wire: w, payload: payload, contentType: "application/grpc+xml", unsupported: true},
				hostile{name: "unsupported gRPC compression", wire: w, rawBody: frame(1, payload), header: hdr("Grpc-Encoding", "br"), unsupported: true},
				hostile{name: "compressed flag without an encoding", wire: w, rawBody: frame(1, []byte("xx"))},
				hostile{name: "gzip garbage", wire: w, rawBody: frame(1, []byte("not gzip")), header: hdr("Grpc-Encoding", "gzip")},
				hostile{name: "gzip bomb", wire: w, rawBody: frame(1, bomb), header: hdr("Grpc-Encoding", "gzip")},
				hostile{name: "frame longer than the body", wire: w, rawBody: append([]byte{0, 0, 0, 0, 100}, 1, 2, 3)},
				hostile{name: "frame declaring 2 GiB", wire: w, rawBody: []byte{0, 0x7f, 0xff, 0xff, 0xff}},
				hostile{name: "truncated frame header", wire: w, rawBody: []byte{0, 0, 0}},
				hostile{name: "reserved frame flags", wire: w, rawBody: frame(0x7e, payload)},
				hostile{name: "no message", wire: w, rawBody: []byte{}, unsupported: true},
				hostile{name: "bad grpc-timeout", wire: w, payload: payload, header: hdr("Grpc-Timeout", "abc")},
				hostile{name: "grpc-timeout with a bad unit", wire: w, payload: payload, header: hdr("Grpc-Timeout", "1Z")},
				hostile{name: "grpc-timeout too long", wire: w, payload: payload, header: hdr("Grpc-Timeout", "123456789H")},
			)
			if !r.streaming {
				out = append(out, hostile{name: "two messages", wire: w, rawBody: append(frame(0, payload), frame(0, payload)...), unsupported: true})
			}
			continue
		}
		out = append(out,
			hostile{name: "bad Connect-Timeout-Ms", wire: w, payload: payload, header: hdr("Connect-Timeout-Ms", "abc")},
			hostile{name: "negative Connect-Timeout-Ms", wire: w, payload: payload, header: hdr("Connect-Timeout-Ms", "-1")},
			hostile{name: "Connect-Timeout-Ms too long", wire: w, payload: payload, header: hdr("Connect-Timeout-Ms", "99999999999")},
			hostile{name: "Connect-Protocol-Version 2", wire: w, payload: payload, header: hdr("Connect-Protocol-Version", "2")},
		)
		encodingHeader := "Content-Encoding"
		if r.streaming {
			encodingHeader = "Connect-Content-Encoding"
		}
		if r.streaming {
			out = append(out,
				hostile{name: "unsupported compression", wire: w, rawBody: frame(1, payload), header: hdr(encodingHeader, "br"), unsupported: true},
				hostile{name: "gzip garbage", wire: w, rawBody: frame(1, []byte("not gzip")), header: hdr(encodingHeader, "gzip")},
				hostile{name: "gzip bomb", wire: w, rawBody: frame(1, bomb), header: hdr(encodingHeader, "gzip")},
				hostile{name: "frame longer than the body", wire: w, rawBody: []byte{0, 0, 0, 0, 100, 1}},
				hostile{name: "frame declaring 2 GiB", wire: w, rawBody: []byte{0, 0x7f, 0xff, 0xff, 0xff}},
				hostile{name: "end-stream flag on the request", wire: w, rawBody: frame(2, payload)},
				hostile{name: "no message", wire: w, rawBody: []byte{}, unsupported: true},
			)
			continue
		}
		out = append(out,
			hostile{name: "unsupported compression", wire: w, payload: payload, header: hdr(encodingHeader, "br"), unsupported: true},
			hostile{name: "gzip garbage", wire: w, rawBody: []byte("not gzip"), header: hdr(encodingHeader, "gzip")},
			hostile{name: "gzip bomb", wire: w, rawBody: bomb, header: hdr(encodingHeader, "gzip")},
		)
		codec := "json"
		if w.binary() {
			codec = "proto"
		}
		if !r.get {
			out = append(out, hostile{name: "GET of a write", wire: w, method: http.MethodGet,
				query: "connect=v1&encoding=" + codec + "&message=" + url.QueryEscape(string(payload)), unsupported: true})
			continue
		}
		// Reads also come as GET, with the message in the query string.
		msgJSON := url.QueryEscape("{}")
		out = append(out,
			hostile{name: "GET without message", wire: w, method: http.MethodGet, query: "connect=v1&encoding=" + codec},
			hostile{name: "GET without encoding", wire: w, method: http.MethodGet, query: "connect=v1&message=" + msgJSON, unsupported: true},
			hostile{name: "GET with encoding xml", wire: w, method: http.MethodGet, query: "connect=v1&encoding=xml&message=" + msgJSON, unsupported: true},
			hostile{name: "GET with bad base64", wire: w, method: http.MethodGet, query: "connect=v1&encoding=" + codec + "&base64=1&message=!!!"},
			hostile{name: "GET with connect=v2", wire: w, method: http.MethodGet, query: "connect=v2&encoding=" + codec + "&message=" + msgJSON},
			hostile{name: "GET with gzip garbage", wire: w, method: http.MethodGet, query: "connect=v1&encoding=" + codec + "&compression=gzip&base64=1&message=bm90IGd6aXA"},
			hostile{name: "GET with unknown compression", wire: w, method: http.MethodGet, query: "connect=v1&encoding=" + codec + "&compression=br&message=" + msgJSON, unsupported: true},
			hostile{name: "GET with a body", wire: w, method: http.MethodGet, query: "connect=v1&encoding=" + codec + "&message=" + msgJSON, rawBody: []byte("{}"), unsupported: true},
			hostile{name: "GET with 1 MB message", wire: w, method: http.MethodGet, query: "connect=v1&encoding=json&message=" + strings.Repeat("x", 1<<20)},
		)
		if codec == "json" {
			out = append(out,
				hostile{name: "GET with malformed JSON", wire: w, method: http.MethodGet, query: "connect=v1&encoding=json&message=" + url.QueryEscape(`{"a":`)},
				hostile{name: "GET with unknown field", wire: w, method: http.MethodGet, query: "connect=v1&encoding=json&message=" + url.QueryEscape(`{"noSuchField":1}`)},
			)
		} else {
			out = append(out, hostile{name: "GET with garbage proto", wire: w, method: http.MethodGet, query: "connect=v1&encoding=proto&base64=1&message=__8"})
		}
	}
	return out
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// frame is one length-prefixed message of a stream or of gRPC.
func frame(flags byte, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// randomJSON is a random, mostly well-formed JSON object with random keys
// and values.
func randomJSON(rng *rand.Rand) []byte {
	var b strings.Builder
	b.WriteString("{")
	for i := range 1 + rng.IntN(4) {
		if i > 0 {
			b.WriteString(",")
		}
		keys := []string{"id", "tenantId", "slug", "pageSize", "pageToken", "status", "event", "product", "key", "x"}
		fmt.Fprintf(&b, "%q:", keys[rng.IntN(len(keys))])
		switch rng.IntN(5) {
		case 0:
			fmt.Fprintf(&b, "%d", rng.Int64()-math.MaxInt64/2)
		case 1:
			fmt.Fprintf(&b, "%q", strings.Repeat(string(rune(rng.IntN(0x3000))), rng.IntN(8)))
		case 2:
			b.WriteString("[]")
		case 3:
			b.WriteString(`{"id":null}`)
		default:
			b.WriteString("true")
		}
	}
	if rng.IntN(4) == 0 {
		return []byte(b.String()) // unterminated
	}
	b.WriteString("}")
	return []byte(b.String())
}

// request builds the HTTP request of c for r.
func (c hostile) request(baseURL string, r batteryRPC) (*http.Request, error) {
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	target := baseURL + r.procedure
	if c.query != "" {
		target += "?" + c.query
	}
	body := c.rawBody
	if body == nil && method != http.MethodGet {
		body = c.payload
		if r.streaming || c.wire == grpcProto {
			body = frame(0, c.payload)
		}
	}
	req, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	contentType := map[wire]string{connectJSON: "application/json", connectProto: "application/proto", grpcProto: "application/grpc"}[c.wire]
	if r.streaming && c.wire != grpcProto {
		contentType = map[wire]string{connectJSON: "application/connect+json", connectProto: "application/connect+proto"}[c.wire]
	}
	if c.contentType != "" {
		contentType = c.contentType
	}
	if method != http.MethodGet && contentType != "-" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.wire == grpcProto {
		req.Header.Set("Te", "trailers")
	} else {
		req.Header.Set("Connect-Protocol-Version", "1")
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	return req, nil
}

// answer reads what the server said, in whichever protocol it said it.
func answer(res *http.Response, c hostile, r batteryRPC) (outcome, error) {
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return outcome{}, err
	}
	o := outcome{status: res.StatusCode}
	if c.wire == grpcProto && res.StatusCode == http.StatusOK {
		status := res.Trailer.Get("Grpc-Status")
		if status == "" {
			status = res.Header.Get("Grpc-Status") // trailers-only answer
		}
		var n int
		if _, err := fmt.Sscanf(status, "%d", &n); err != nil {
			return o, fmt.Errorf("no grpc-status in %v / %v", res.Header, res.Trailer)
		}
		msg := res.Trailer.Get("Grpc-Message") + res.Header.Get("Grpc-Message")
		o.message, _ = url.PathUnescape(msg)
		o.code, o.ok = connect.Code(n), n == 0
		return o, nil
	}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if res.StatusCode == http.StatusOK && r.streaming && c.wire != grpcProto {
		// The error of a Connect stream is in its end-stream frame.
		for len(body) >= 5 {
			n := binary.BigEndian.Uint32(body[1:5])
			if int(n) > len(body)-5 {
				return o, fmt.Errorf("truncated stream frame")
			}
			if body[0]&2 != 0 {
				data := body[5 : 5+n]
				if body[0]&1 != 0 { // compressed, as the request was
					zr, err := gzip.NewReader(bytes.NewReader(data))
					if err != nil {
						return o, fmt.Errorf("compressed end-stream frame: %v", err)
					}
					if data, err = io.ReadAll(zr); err != nil {
						return o, fmt.Errorf("compressed end-stream frame: %v", err)
					}
				}
				var end struct {
					Error *struct {
						Code    string `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if err := json.Unmarshal(data, &end); err != nil {
					return o, fmt.Errorf("end-stream frame %q: %v", data, err)
				}
				if end.Error == nil {
					o.ok = true
					return o, nil
				}
				e.Code, e.Message = end.Error.Code, end.Error.Message
				break
			}
			body = body[5+n:]
		}
		if e.Code == "" {
			return o, fmt.Errorf("stream without an end-stream frame")
		}
	} else if res.StatusCode == http.StatusOK {
		o.ok = true
		return o, nil
	} else if json.Unmarshal(body, &e) != nil || e.Code == "" {
		// An HTTP-level refusal: no codec was agreed, so no Connect error.
		o.message = http.StatusText(res.StatusCode) + " " + res.Header.Get("Accept-Post") + res.Header.Get("Allow")
		return o, nil
	}
	if err := o.code.UnmarshalText([]byte(e.Code)); err != nil {
		return o, fmt.Errorf("unknown code %q", e.Code)
	}
	o.message = e.Message
	return o, nil
}

// judge says what is wrong with o as the answer to c, if anything.
func judge(o outcome, c hostile, r batteryRPC) string {
	switch {
	case o.ok && !r.readOnly:
		return "a hostile request to a write succeeded"
	case o.ok:
		return ""
	case o.code == 0 && (o.status == http.StatusUnsupportedMediaType || o.status == http.StatusMethodNotAllowed) && c.unsupported:
		return ""
	case o.code == 0 && (o.status == http.StatusRequestEntityTooLarge || o.status == http.StatusRequestHeaderFieldsTooLarge):
		return "" // net/http refuses an oversized request line or header before Connect runs
	case o.code == 0:
		return fmt.Sprintf("HTTP %d without a Connect code", o.status)
	case o.code == connect.CodeUnimplemented && c.unsupported:
		return ""
	case !slices.Contains(callerFaults, o.code):
		return fmt.Sprintf("code %v does not put the fault with the caller", o.code)
	case strings.TrimSpace(o.message) == "":
		return "no message names the problem"
	}
	return ""
}

// rowCounter counts the rows of every table in one prepared query: the
// battery counts after each of its thousands of requests, and planning the
// eight sub-selects each time would cost more than the requests.
type rowCounter struct{ stmt *sql.Stmt }

func newRowCounter(t *testing.T, db *persistence.DB) rowCounter {
	t.Helper()
	stmt, err := db.Bun().DB.PrepareContext(context.Background(), `SELECT
		(SELECT count(*) FROM tenants), (SELECT count(*) FROM products), (SELECT count(*) FROM product_requests),
		(SELECT count(*) FROM entitlements), (SELECT count(*) FROM trials), (SELECT count(*) FROM api_keys),
		(SELECT count(*) FROM audit_events), (SELECT count(*) FROM audit_chain_heads)`)
	if err != nil {
		t.Fatalf("prepare the row count: %v", err)
	}
	t.Cleanup(func() { stmt.Close() })
	return rowCounter{stmt}
}

func (c rowCounter) counts(t *testing.T) [8]int64 {
	t.Helper()
	var n [8]int64
	if err := c.stmt.QueryRowContext(context.Background()).Scan(&n[0], &n[1], &n[2], &n[3], &n[4], &n[5], &n[6], &n[7]); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

func TestBadInputBattery(t *testing.T) {
	rpcs := batteryRPCs()
	if len(rpcs) < 29 {
		t.Fatalf("found %d RPCs in the descriptors, want every RPC of the contract", len(rpcs))
	}
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		srv := testserver.Start(t, db)
		ctx := context.Background()
		fx := batteryFixture{}
		tenants := tenantregistryv1connect.NewTenantServiceClient(testserver.HTTP1, srv.URL)
		for _, slug := range []string{"battery-one", "battery-two", "battery-three"} {
			if _, err := tenants.CreateTenant(ctx, &v1.CreateTenantRequest{Slug: slug, DisplayName: slug}); err != nil {
				t.Fatal(err)
			}
		}
		page, err := tenants.ListTenants(ctx, &v1.ListTenantsRequest{PageSize: 1})
		if err != nil || page.GetNextPageToken() == "" {
			t.Fatalf("ListTenants for a real page token: %v, %v", page, err)
		}
		fx.tenantToken = page.GetNextPageToken()

		rng := rand.New(rand.NewPCG(1, 2))
		rows := newRowCounter(t, db)
		before := rows.counts(t)
		total, accepted := 0, 0
		start := time.Now()
		for i, r := range rpcs {
			cases := casesFor(r, i, fx, rng)
			perWire := map[wire]int{}
			for _, c := range cases {
				perWire[c.wire]++
				client := testserver.HTTP1
				if c.wire == grpcProto {
					client = testserver.H2C
				}
				req, err := c.request(srv.URL, r)
				if err != nil {
					t.Fatalf("%s %s %s: %v", r.procedure, c.wire, c.name, err)
				}
				res, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s %s %s: the server did not answer: %v", r.procedure, c.wire, c.name, err)
				}
				o, err := answer(res, c, r)
				res.Body.Close()
				if err != nil {
					t.Errorf("%s %s %s: unreadable answer (HTTP %d): %v", r.procedure, c.wire, c.name, res.StatusCode, err)
					continue
				}
				if problem := judge(o, c, r); problem != "" {
					t.Errorf("%s %s %q: %s (HTTP %d, code %v, message %.200q)", r.procedure, c.wire, c.name, problem, o.status, o.code, o.message)
				}
				if o.ok {
					accepted++
				}
				if after := rows.counts(t); after != before {
					t.Fatalf("%s %s %q changed the database: rows %v → %v", r.procedure, c.wire, c.name, before, after)
				}
			}
			if len(cases) < batteryMinPerRPC {
				t.Errorf("%s: %d requests, want at least %d", r.procedure, len(cases), batteryMinPerRPC)
			}
			t.Logf("%-58s %4d requests (connect-json %d, connect-proto %d, grpc %d)", r.procedure, len(cases),
				perWire[connectJSON], perWire[connectProto], perWire[grpcProto])
			total += len(cases)
		}
		t.Logf("%d hostile requests to %d RPCs in %v; %d reads answered without harm, the rest refused",
			total, len(rpcs), time.Since(start).Round(time.Millisecond), accepted)

		res, err := testserver.HTTP1.Get(srv.URL + "/healthz")
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("after the battery /healthz: %v, %v", res, err)
		}
		res.Body.Close()
		if logs := srv.Logs.String(); strings.Contains(logs, "level=ERROR") {
			t.Errorf("the server logged errors during the battery:\n%s", grepLines(logs, "level=ERROR", 20))
		}
	})
}

// grepLines returns up to n lines of s containing substr.
func grepLines(s, substr string, n int) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) && len(out) < n {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
