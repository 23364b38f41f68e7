package auditlog

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// memoryLog is a tlog tree kept in memory, the way the registry stores
// one: every stored hash by index.
type memoryLog struct {
	hashes map[int64]tlog.Hash
	size   int64
}

func (m *memoryLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := m.hashes[idx]
		if !ok {
			return nil, fmt.Errorf("no hash %d", idx)
		}
		out[i] = h
	}
	return out, nil
}

func (m *memoryLog) append(t *testing.T, leaf tlog.Hash) {
	t.Helper()
	added, err := tlog.StoredHashesForRecordHash(m.size, leaf, m)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range added {
		m.hashes[tlog.StoredHashIndex(0, m.size)+int64(i)] = h
	}
	m.size++
}

// TestTreeMatchesTlog: the streaming root and the right edge agree with
// tlog's own tree at every size.
func TestTreeMatchesTlog(t *testing.T) {
	m := &memoryLog{hashes: map[int64]tlog.Hash{}}
	var tree Tree
	for n := int64(0); n <= 300; n++ {
		want, err := tlog.TreeHash(n, m)
		if err != nil {
			t.Fatal(err)
		}
		if got := tree.Root(); got != want || tree.Size() != n {
			t.Fatalf("size %d: root %s, tlog's %s", n, got, want)
		}
		var asked []int64
		_, _ = tlog.TreeHash(n, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			asked = idx
			return make([]tlog.Hash, len(idx)), nil
		}))
		if got := EdgeIndexes(n); fmt.Sprint(got) != fmt.Sprint(asked) && !(len(got) == 0 && len(asked) == 0) {
			t.Fatalf("size %d: edge %v, tlog reads %v", n, got, asked)
		}
		leaf := tlog.RecordHash([]byte(fmt.Sprint("leaf ", n)))
		m.append(t, leaf)
		tree.Append(leaf)
	}
}

func testKey(t *testing.T, name string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func TestCheckpointSignAndOpen(t *testing.T) {
	signer, verifier := testKey(t, "registry.example.com")
	_, other := testKey(t, "registry.example.com")
	c := Checkpoint{Origin: Origin("registry.example.com", "t-1"), Size: 42, Root: tlog.RecordHash([]byte("x"))}
	signed, err := Sign(c, signer)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Open(signed, verifier); err != nil || got != c {
		t.Fatalf("Open = %+v, %v", got, err)
	}
	if _, err := Open(signed, other); err == nil {
		t.Error("a checkpoint opened with another key")
	}
	edited := bytes.Replace(signed, []byte("\n42\n"), []byte("\n43\n"), 1)
	if _, err := Open(edited, verifier); err == nil {
		t.Error("an edited checkpoint opened")
	}
	for _, bad := range []string{"", "origin\n", "origin\nx\nAAAA\n", "origin\n-1\n" + strings.Repeat("A", 44) + "\n", "origin\n01\n" + strings.Repeat("A", 44) + "\n", "origin\n1\nnot base64\n"} {
		if _, err := ParseCheckpoint(bad); err == nil {
			t.Errorf("ParseCheckpoint(%q) succeeded", bad)
		}
	}
	if tenant, err := TenantOf(Checkpoint{Origin: Origin("k", "")}); err != nil || tenant != "" {
		t.Errorf("platform origin: %q, %v", tenant, err)
	}
}

// exportLine writes e as the registry's NDJSON export does (protojson).
func exportLine(e *Event, hash string) string {
	m := map[string]any{
		"id": e.ID, "product": e.Product, "action": e.Action, "crud": e.CRUD,
		"actor":     map[string]string{"id": e.ActorID},
		"fields":    e.Fields,
		"occurTime": e.OccurTime.Format(time.RFC3339Nano), "receiveTime": e.ReceiveTime.Format(time.RFC3339Nano),
		"seq": fmt.Sprint(e.Seq), "hash": hash,
	}
	if e.TenantID != "" {
		m["tenantId"] = e.TenantID
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// TestVerifyExport builds a log of 37 events, signs its checkpoint, and
// checks an export of it, then tampers with it in every way an operator
// might: each is caught.
func TestVerifyExport(t *testing.T) {
	signer, verifier := testKey(t, "registry.example.com")
	const tenant = "0190f5c2-7d3e-7a00-8000-000000000001"
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 123456000, time.UTC)
	var tree Tree
	var lines []string // newest first
	for seq := int64(1); seq <= 37; seq++ {
		e := &Event{
			ID: fmt.Sprint("id-", seq), TenantID: tenant, Seq: seq, Product: "analytics", Action: "report.viewed", CRUD: "r",
			ActorID: "u-1", Fields: map[string]string{"n": fmt.Sprint(seq)}, OccurTime: t0, ReceiveTime: t0.Add(time.Duration(seq) * time.Second),
		}
		leaf := e.LeafHash()
		tree.Append(leaf)
		lines = append([]string{exportLine(e, hex.EncodeToString(leaf[:]))}, lines...)
	}
	signed, err := Sign(Checkpoint{Origin: Origin("registry.example.com", tenant), Size: 30, Root: rootOf(t, lines[7:])}, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(signed, verifier)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(lines []string) (Result, error) {
		return VerifyExport(strings.NewReader(strings.Join(lines, "\n")+"\n"), c)
	}
	if res, err := verify(lines); err != nil || res.Checked != 30 || res.Newer != 7 {
		t.Fatalf("the untouched export: %+v, %v", res, err)
	}
	clone := func() []string { return append([]string(nil), lines...) }
	cases := map[string]func() []string{
		"one byte of a body edited": func() []string {
			l := clone()
			l[20] = strings.Replace(l[20], `"report.viewed"`, `"report.viewes"`, 1)
			return l
		},
		"a body and its hash edited": func() []string {
			l := clone()
			l[20] = strings.Replace(l[20], `"hash":`, `"x":`, 1) // as if recomputed: no stored hash to compare
			l[20] = strings.Replace(l[20], `"report.viewed"`, `"report.deleted"`, 1)
			return l
		},
		"the last event of the checkpoint dropped": func() []string {
			l := clone()
			return append(l[:7], l[8:]...)
		},
		"the newest events cut off": func() []string { return clone()[10:] },
		"two events swapped":        func() []string { l := clone(); l[12], l[13] = l[13], l[12]; return l },
		"the first event dropped":   func() []string { return clone()[:len(lines)-1] },
		"an event of another tenant": func() []string {
			l := clone()
			l[3] = strings.Replace(l[3], tenant, "0190f5c2-7d3e-7a00-8000-000000000002", 1)
			return l
		},
		"not JSON": func() []string { l := clone(); l[5] = "{"; return l },
	}
	for name, tamper := range cases {
		_, err := verify(tamper())
		var brk *Break
		if err == nil {
			t.Errorf("%s: not caught", name)
		} else if !errors.As(err, &brk) && name != "not JSON" {
			t.Errorf("%s: %v is not a Break", name, err)
		}
	}
	// The streaming RPC's lines wrap each event.
	wrapped := make([]string, len(lines))
	for i, l := range lines {
		wrapped[i] = `{"event":` + l + `}`
	}
	if _, err := verify(wrapped); err != nil {
		t.Errorf("an export of the streaming RPC: %v", err)
	}
}

func rootOf(t *testing.T, newestFirst []string) tlog.Hash {
	t.Helper()
	var tree Tree
	for i := len(newestFirst) - 1; i >= 0; i-- {
		e, _, err := parseEvent([]byte(newestFirst[i]))
		if err != nil {
			t.Fatal(err)
		}
		tree.Append(e.LeafHash())
	}
	return tree.Root()
}
