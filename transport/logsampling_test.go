package transport

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// TestLogSampler checks the sampler's accounting: each kind is written up
// to its budget and counted beyond it, kinds are independent, a flush
// writes one summary per kind that lost lines and starts it afresh.
func TestLogSampler(t *testing.T) {
	var buf bytes.Buffer
	s := newLogSampler(slog.New(slog.NewJSONHandler(&buf, nil)))
	a := sampleKey{msg: "rpc", code: "unauthenticated"}
	b := sampleKey{msg: "http", code: "404"}
	steps := []struct {
		key    sampleKey
		budget int
		calls  int
		want   int // how many are allowed
	}{
		{a, 3, 5, 3},
		{b, 3, 2, 2},
		{b, 3, 2, 1},
		{a, 3, 1, 0},
	}
	for _, st := range steps {
		got := 0
		for range st.calls {
			if s.allow(st.key, st.budget, slog.LevelInfo) {
				got++
			}
		}
		if got != st.want {
			t.Errorf("%v: %d of %d allowed, want %d", st.key, got, st.calls, st.want)
		}
	}
	if s.suppressed() != 4 {
		t.Errorf("suppressed %d lines, want 4", s.suppressed())
	}
	s.flush()
	summaries := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		summaries[l["line"].(string)+" "+l["code"].(string)] = l
	}
	for kind, want := range map[string][2]float64{"rpc unauthenticated": {3, 3}, "http 404": {3, 1}} {
		if l := summaries[kind]; l == nil || l["msg"] != "log lines sampled" || l["logged"] != want[0] || l["suppressed"] != want[1] {
			t.Errorf("summary of %s: %v, want logged %v, suppressed %v", kind, l, want[0], want[1])
		}
	}
	if len(summaries) != 2 {
		t.Errorf("%d summaries, want 2: %v", len(summaries), summaries)
	}
	if !s.allow(a, 3, slog.LevelInfo) {
		t.Error("after its summary, a kind gets its budget again")
	}
}
