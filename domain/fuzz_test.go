package domain

// Fuzz targets for the parsers and encoders that see caller input before
// any database does. Their seeds run with every `go test`; fuzz one with
//
//	go test -run='^$' -fuzz='^FuzzParseKey$' -fuzztime=5m ./domain/

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

// validKeyFrom builds a key of the current format from arbitrary bytes,
// the way NewPlaintextKey does from random ones.
func validKeyFrom(seed []byte) string {
	b := make([]byte, 32)
	copy(b, seed)
	s := KeyPrefix + encodeBase62(new(big.Int).SetBytes(b), keyBodyLen)
	return s + keyChecksum(s)
}

func FuzzParseKey(f *testing.F) {
	f.Add("", []byte{}, uint(0), byte('x'))
	f.Add(NewPlaintextKey(), []byte("0123456789abcdef0123456789abcdef"), uint(3), byte('A'))
	f.Add("bp_"+strings.Repeat("A", 22), []byte{0xff}, uint(51), byte('0'))
	f.Add("bp_"+strings.Repeat("+", 22), bytes.Repeat([]byte{0xff}, 32), uint(10), byte(0))
	f.Add("bp_"+strings.Repeat("z", 49), []byte{1, 2, 3}, uint(100), byte(0xff))
	f.Add("BP_abc", []byte(nil), uint(0), byte('b'))
	f.Add("bp_\x00\xff'; DROP TABLE api_keys;--", []byte("x"), uint(7), byte('\n'))
	f.Fuzz(func(t *testing.T, key string, seed []byte, pos uint, c byte) {
		// Any string: classified without panicking, and only shapes that
		// match the documented formats are accepted.
		switch parseKey(key) {
		case keyCurrent:
			if len(key) != keyLen || !strings.HasPrefix(key, KeyPrefix) || !isBase62(key[len(KeyPrefix):]) {
				t.Fatalf("parseKey(%q) = current for a key of the wrong shape", key)
			}
			if keyChecksum(key[:keyLen-keyChecksumLen]) != key[keyLen-keyChecksumLen:] {
				t.Fatalf("parseKey(%q) = current with a wrong checksum", key)
			}
			_ = displayPrefix(key)
		case keyLegacy:
			if len(key) != legacyKeyLen || !strings.HasPrefix(key, KeyPrefix) || !isBase64(key[len(KeyPrefix):]) {
				t.Fatalf("parseKey(%q) = legacy for a key of the wrong shape", key)
			}
			_ = displayPrefix(key)
		case keyMalformed:
		default:
			t.Fatalf("parseKey(%q) returned an unknown shape", key)
		}

		// A well-formed key round-trips, and any single changed byte makes
		// it fail the checksum (CRC-32 finds every single-byte error, and
		// the six base62 digits encode it one-to-one).
		valid := validKeyFrom(seed)
		if parseKey(valid) != keyCurrent {
			t.Fatalf("key %q built from %x is not accepted", valid, seed)
		}
		if p := int(pos % uint(len(valid))); valid[p] != c {
			edited := valid[:p] + string([]byte{c}) + valid[p+1:]
			if parseKey(edited) == keyCurrent {
				t.Fatalf("key %q with byte %d changed to %q is still accepted", valid, p, c)
			}
		}
	})
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add("", "tenants||", uint8(1), "0190f5c2-7d3e-7a00-8000-000000000000", "")
	f.Add(encodeCursor("tenants||", "x"), "tenants||", uint8(1), "x", "y")
	f.Add(encodeCursor("q", "a", "b"), "q", uint8(2), "a", "b")
	f.Add("!!!", "q", uint8(0), "", "")
	f.Add("YWJj", "q", uint8(3), "\x00", "\xff")
	f.Add("eyJxIjoiIiwiYSI6WyJ4Il19AAAAAAAAAAA", "", uint8(1), "'; DROP TABLE tenants;--", "<>&\u2028")
	f.Fuzz(func(t *testing.T, token, query string, parts uint8, a, b string) {
		n := int(parts % 4)
		// Any token: refused with exactly one violation on page_token, or
		// decoded to exactly the number of parts asked for.
		var v Violations
		got := decodeCursor(&v, token, query, n)
		switch {
		case token == "":
			if got != nil || len(v) != 0 {
				t.Fatalf("empty token: %v, %v", got, v)
			}
		case len(v) == 0:
			if len(got) != n {
				t.Fatalf("token %q accepted with %d parts, want %d", token, len(got), n)
			}
		case len(v) != 1 || v[0].Field != "page_token" || got != nil:
			t.Fatalf("token %q refused with %v, %v; want one page_token violation", token, got, v)
		}

		// A token round-trips for the query it was made for and for no
		// other. Positions are ids and numbers, always valid UTF-8 (JSON
		// would replace invalid bytes).
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return
		}
		tok := encodeCursor(query, a, b)
		v = nil
		if got := decodeCursor(&v, tok, query, 2); len(v) != 0 || !slices.Equal(got, []string{a, b}) {
			t.Fatalf("round trip of (%q, %q) for %q: %v, %v", a, b, query, got, v)
		}
		v = nil
		if got := decodeCursor(&v, tok, query+"x", 2); len(v) != 1 || got != nil {
			t.Fatalf("token of query %q accepted for %q", query, query+"x")
		}
		// An edited token is refused, or (when the edit only touches the
		// unused low bits of the last base64 digit) means the same position.
		p := int(parts) % len(tok)
		edited := tok[:p] + string(rune('A'+(tok[p]+1)%26)) + tok[p+1:]
		if edited != tok {
			v = nil
			if got := decodeCursor(&v, edited, query, 2); len(v) == 0 && !slices.Equal(got, []string{a, b}) {
				t.Fatalf("edited token %q decoded to another position %q", edited, got)
			}
		}
	})
}

// slugRule is the documented slug rule, written independently of the
// regular expression: 3 to 63 characters of a-z, 0-9 and '-', starting and
// ending with a letter or digit, and not reserved.
func slugRule(s string) bool {
	if len(s) < 3 || len(s) > 63 || reservedSlugs[s] {
		return false
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	for i := 0; i < len(s); i++ {
		if !alnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return alnum(s[0]) && alnum(s[len(s)-1])
}

func FuzzCheckSlug(f *testing.F) {
	for _, s := range []string{"", "acme", "a1b", "ab", "-acme", "acme-", "Acme", "admin", "a--b", "acme\n",
		"acme\x00", "acmé", "\xff\xfe", strings.Repeat("a", 63), strings.Repeat("a", 64), "'; DROP TABLE tenants;--"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, slug string) {
		var v Violations
		checkSlug(&v, "slug", slug)
		if ok := len(v) == 0; ok != slugRule(slug) {
			t.Fatalf("checkSlug(%q) accepted=%v, the documented rule says %v (%v)", slug, ok, !ok, v)
		}
		if len(v) > 1 || len(v) == 1 && v[0].Field != "slug" {
			t.Fatalf("checkSlug(%q) = %v, want at most one violation on slug", slug, v)
		}
		if len(v) == 1 && !utf8.ValidString(v[0].Description) {
			t.Fatalf("checkSlug(%q) describes the problem in invalid UTF-8: %q", slug, v[0].Description)
		}
	})
}

// textRule is the documented rule for a single-line text value: valid
// UTF-8, at most max characters, no control characters.
func textRule(s string, max int) bool {
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > max {
		return false
	}
	return !strings.ContainsFunc(s, unicode.IsControl)
}

func FuzzCheckMetadata(f *testing.F) {
	f.Add("plan", "starter", "", "", uint8(0))
	f.Add("", "v", "k", "v", uint8(0))
	f.Add("k\x00", "v", "k2", "a\x00b", uint8(3))
	f.Add("\xff", "v", "ключ", strings.Repeat("é", 500), uint8(30))
	f.Add(strings.Repeat("k", 41), "v", "k", strings.Repeat("v", 501), uint8(31))
	f.Add("a", "b", "c", "d", uint8(40))
	f.Add("line", "a\nb", "tab", "a\tb", uint8(1))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, filler uint8) {
		md := map[string]string{k1: v1, k2: v2}
		for i := range int(filler % 40) {
			md[fmt.Sprintf("filler-%02d", i)] = "x"
		}
		want := len(md) <= MaxMetadataKeys
		for k, val := range md {
			want = want && k != "" && textRule(k, MaxMetadataKeyLen) && textRule(val, MaxMetadataValueLen)
		}
		var v Violations
		checkMetadata(&v, md)
		if ok := len(v) == 0; ok != want {
			t.Fatalf("checkMetadata(%q) accepted=%v, the documented bounds say %v (%v)", md, ok, want, v)
		}
		for _, x := range v {
			if !strings.HasPrefix(x.Field, "metadata") {
				t.Fatalf("violation names field %q, want metadata…", x.Field)
			}
		}
		// The error a caller gets must itself be valid UTF-8, or it could
		// not be sent back (protobuf strings must be valid UTF-8).
		if err := v.Err(); err != nil && !utf8.ValidString(err.Error()) {
			t.Fatalf("error message is not valid UTF-8: %q", err.Error())
		}
	})
}

// decodeCanonical reads back what Canonical wrote. That it can, and gets
// the event again, proves the encoding injective: two events with one
// encoding would decode to the same event.
func decodeCanonical(b []byte) (*AuditEvent, error) {
	r := bytes.NewReader(b)
	var err error
	str := func() string {
		n, e := binary.ReadUvarint(r)
		if e != nil || n > uint64(r.Len()) {
			err = fmt.Errorf("bad string length")
			return ""
		}
		s := make([]byte, n)
		_, _ = r.Read(s)
		return string(s)
	}
	num := func() int64 {
		n, e := binary.ReadVarint(r)
		if e != nil {
			err = e
		}
		return n
	}
	flag := func() bool {
		c, e := r.ReadByte()
		if e != nil || c > 1 {
			err = fmt.Errorf("bad flag")
		}
		return c == 1
	}
	if v, e := r.ReadByte(); e != nil || v != 1 {
		return nil, fmt.Errorf("bad version")
	}
	e := &AuditEvent{}
	e.ID, e.TenantID, e.Seq = str(), str(), num()
	e.Product, e.Action, e.CRUD = str(), str(), str()
	e.Actor = AuditActor{ID: str(), Name: str(), Type: str()}
	e.Target = AuditTarget{ID: str(), Type: str(), Name: str()}
	e.SourceIP, e.Description = str(), str()
	e.IsFailure, e.IsAnonymous = flag(), flag()
	n := num()
	if n < 0 || n > int64(len(b)) {
		return nil, fmt.Errorf("bad field count %d", n)
	}
	e.Fields = map[string]string{}
	prev := ""
	for i := range n {
		k := str()
		if i > 0 && k <= prev {
			return nil, fmt.Errorf("field keys not sorted and unique")
		}
		e.Fields[k], prev = str(), k
	}
	e.OccurTime, e.ReceiveTime = time.UnixMicro(num()).UTC(), time.UnixMicro(num()).UTC()
	e.ExternalID = str()
	if err != nil {
		return nil, err
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%d bytes left over", r.Len())
	}
	return e, nil
}

func FuzzCanonical(f *testing.F) {
	f.Add("0190f5c2-7d3e-7a00-8000-000000000000", "00000000-0000-0000-0000-000000000001", int64(1),
		"tenant-registry", "tenant.created", "c", "dev", "dev platform admin", "dev", "t1", "tenant", "Acme",
		"127.0.0.1", "Tenant created", true, false, "k", "v", int64(1790000000000000), int64(1790000000000001), "ext-1")
	f.Add("", "", int64(0), "", "", "", "", "", "", "", "", "", "", "", false, false, "", "", int64(0), int64(0), "")
	f.Add("a", "b", int64(-1), "ab", "", "c", "\x00", "\xff", "\x01\x00", "x", "", "xx", "::1", "a\nb", false, true,
		"", "\x00", int64(-1<<62), int64(1<<62), "\x80")
	f.Fuzz(func(t *testing.T, id, tenant string, seq int64, product, action, crud, actorID, actorName, actorType,
		targetID, targetType, targetName, sourceIP, description string, failure, anonymous bool,
		fieldKey, fieldValue string, occur, receive int64, externalID string) {
		e := &AuditEvent{
			ID: id, TenantID: tenant, Seq: seq, Product: product, Action: action, CRUD: crud,
			Actor:    AuditActor{ID: actorID, Name: actorName, Type: actorType},
			Target:   AuditTarget{ID: targetID, Type: targetType, Name: targetName},
			SourceIP: sourceIP, Description: description, IsFailure: failure, IsAnonymous: anonymous,
			Fields:    map[string]string{fieldKey: fieldValue, fieldKey + "\x00": fieldValue + "x"},
			OccurTime: time.UnixMicro(occur).UTC(), ReceiveTime: time.UnixMicro(receive).UTC(), ExternalID: externalID,
		}
		enc := e.Canonical()
		got, err := decodeCanonical(enc)
		if err != nil {
			t.Fatalf("Canonical(%+v) = %x does not decode: %v", e, enc, err)
		}
		if !equalEvents(got, e) {
			t.Fatalf("Canonical round trip:\n got %+v\nwant %+v", got, e)
		}
		// Map order must not matter: the same fields inserted the other way.
		same := *e
		same.Fields = maps.Clone(e.Fields)
		if !bytes.Equal(same.Canonical(), enc) {
			t.Fatal("Canonical depends on map order")
		}
		// Every field is covered: changing any one changes the encoding.
		for name, edit := range canonicalEdits {
			changed := *e
			changed.Fields = maps.Clone(e.Fields)
			edit(&changed)
			if bytes.Equal(changed.Canonical(), enc) {
				t.Fatalf("changing %s leaves the encoding unchanged", name)
			}
		}
		// And the leaf hash is tlog's record hash of exactly this encoding.
		if e.LeafHash() != tlog.RecordHash(enc) {
			t.Fatal("the leaf hash is not the record hash of the canonical encoding")
		}
	})
}

var canonicalEdits = map[string]func(*AuditEvent){
	"id":           func(e *AuditEvent) { e.ID += "x" },
	"tenant_id":    func(e *AuditEvent) { e.TenantID += "x" },
	"seq":          func(e *AuditEvent) { e.Seq ^= 1 },
	"product":      func(e *AuditEvent) { e.Product += "x" },
	"action":       func(e *AuditEvent) { e.Action += "x" },
	"crud":         func(e *AuditEvent) { e.CRUD += "x" },
	"actor.id":     func(e *AuditEvent) { e.Actor.ID += "x" },
	"actor.name":   func(e *AuditEvent) { e.Actor.Name += "x" },
	"actor.type":   func(e *AuditEvent) { e.Actor.Type += "x" },
	"target.id":    func(e *AuditEvent) { e.Target.ID += "x" },
	"target.type":  func(e *AuditEvent) { e.Target.Type += "x" },
	"target.name":  func(e *AuditEvent) { e.Target.Name += "x" },
	"source_ip":    func(e *AuditEvent) { e.SourceIP += "x" },
	"description":  func(e *AuditEvent) { e.Description += "x" },
	"is_failure":   func(e *AuditEvent) { e.IsFailure = !e.IsFailure },
	"is_anonymous": func(e *AuditEvent) { e.IsAnonymous = !e.IsAnonymous },
	"fields: add": func(e *AuditEvent) {
		k := "new"
		for hasKey(e.Fields, k) {
			k += "x"
		}
		e.Fields[k] = ""
	},
	"fields: value": func(e *AuditEvent) {
		k := slices.Sorted(maps.Keys(e.Fields))[0]
		e.Fields[k] += "x"
	},
	"fields: key/value boundary": func(e *AuditEvent) {
		// ("ab" → "c") must differ from ("a" → "bc").
		k := slices.Sorted(maps.Keys(e.Fields))[len(e.Fields)-1] // never empty: two distinct keys
		v := e.Fields[k]
		delete(e.Fields, k)
		e.Fields[k[:len(k)-1]] = k[len(k)-1:] + v
	},
	"occur_time":   func(e *AuditEvent) { e.OccurTime = e.OccurTime.Add(time.Microsecond) },
	"receive_time": func(e *AuditEvent) { e.ReceiveTime = e.ReceiveTime.Add(-time.Microsecond) },
	"external_id":  func(e *AuditEvent) { e.ExternalID += "x" },
	"string boundary": func(e *AuditEvent) {
		// Moving a byte from one field to the next must change the encoding.
		switch {
		case e.ID != "":
			e.ID, e.TenantID = e.ID[:len(e.ID)-1], e.ID[len(e.ID)-1:]+e.TenantID
		case e.TenantID != "":
			e.ID, e.TenantID = e.TenantID[:1], e.TenantID[1:]
		default:
			e.ID = "x"
		}
	},
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

func equalEvents(a, b *AuditEvent) bool {
	return a.ID == b.ID && a.TenantID == b.TenantID && a.Seq == b.Seq && a.Product == b.Product &&
		a.Action == b.Action && a.CRUD == b.CRUD && a.Actor == b.Actor && a.Target == b.Target &&
		a.SourceIP == b.SourceIP && a.Description == b.Description && a.IsFailure == b.IsFailure &&
		a.IsAnonymous == b.IsAnonymous && maps.Equal(a.Fields, b.Fields) &&
		a.OccurTime.Equal(b.OccurTime) && a.ReceiveTime.Equal(b.ReceiveTime) && a.ExternalID == b.ExternalID
}
