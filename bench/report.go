package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
)

// row is one line of the results.
type row struct {
	Key             string  `json:"key"`
	Name            string  `json:"name"`
	Protocol        string  `json:"protocol"`
	Server          string  `json:"server"`
	Requests        uint64  `json:"requests"`
	Errors          uint64  `json:"errors"`
	RPS             float64 `json:"requests_per_second"`
	EventsPerSecond float64 `json:"events_per_second,omitempty"`
	P50ms           float64 `json:"p50_ms"`
	P99ms           float64 `json:"p99_ms,omitempty"`
	MaxMs           float64 `json:"max_ms,omitempty"`
	// CPUPerRequestUs is the server's CPU time (user + system) per request
	// during the row: steadier than requests/s when the machine is shared.
	// For the in-process rows the harness is the server.
	CPUPerRequestUs float64 `json:"server_cpu_us_per_request,omitempty"`
	// GeneratorCPUPerRequestUs is the load generator's, which competes
	// with the server for the same cores: wrk's or h2load's process, or
	// the harness's own for the rows it drives with vegeta.
	GeneratorCPUPerRequestUs float64 `json:"load_generator_cpu_us_per_request,omitempty"`
	// DatabaseCPUPerRequestUs is that of the PostgreSQL backends serving
	// the run's database, when PostgreSQL runs on this machine: a lower
	// bound, since a backend that exits during a slice takes its time along.
	DatabaseCPUPerRequestUs float64 `json:"database_cpu_us_per_request,omitempty"`
	// VsBare is requests/s ÷ that of the bare connect-go baseline row of
	// the same procedure and protocol (BareKey); VsOwnStack the same
	// against the service's own stack answering a constant (OwnStackKey).
	VsBare      *float64 `json:"requests_per_second_vs_bare,omitempty"`
	BareKey     string   `json:"bare,omitempty"`
	VsOwnStack  *float64 `json:"requests_per_second_vs_own_stack,omitempty"`
	OwnStackKey string   `json:"own_stack,omitempty"`
	PeakRSSMB   float64  `json:"peak_rss_mb"`
	// OthersP99ms, in the retention rows, is the p99 of the appends to
	// the logs other than the one whose month is dropped.
	OthersP99ms float64 `json:"others_p99_ms,omitempty"`
	Note        string  `json:"note,omitempty"`
	ErrorSample string  `json:"error_sample,omitempty"`
}

// target is one goal, judged on rows of one run.
type target struct {
	Name  string   `json:"name"`
	Value *float64 `json:"value,omitempty"` // nil: a row it needs did not run
	Unit  string   `json:"unit,omitempty"`
	Goal  string   `json:"goal,omitempty"` // empty: reported, not judged
	Pass  *bool    `json:"pass,omitempty"`
	Of    string   `json:"of"` // how the value is computed
	Note  string   `json:"note,omitempty"`
}

// Goals, on the project's 2-core machine shared by load generators,
// servers and PostgreSQL.
const (
	warmVsBareMin   = 0.8  // × the bare connect-go handler's requests/s
	warmCPUMax      = 1.25 // × the bare handler's server CPU per request
	warmVerifyRSS   = 100  // MB
	coldVerifyMin   = 0.7  // × the bare PK SELECT's requests/s
	singleAppendMin = 0.3  // single appends' events/s × batches of 100's
	deepListMax     = 2    // × the p50 latency with 1k events
	proofP50Max     = 5    // ms
	dropP99Max      = 2    // × append p99 before the drop
	propagationMax  = 1000 // ms
	productMin      = 0.9  // × the product's requests/s without authentication
)

// bareOf and ownStackOf name each row's baselines: the bare connect-go
// server's row of the same procedure and protocol (or the bare SQL query
// for rows that read the database), and the own stack's constant.
var (
	bareOf = map[string]string{
		"limit-json": "bare-verify-json", "verify-warm-json": "bare-verify-json",
		"limit-grpc": "bare-verify-grpc", "verify-warm-grpc": "bare-verify-grpc",
		"limit-check-json": "bare-check-json", "check-entitlement-json": "bare-check-json",
		"pk-select-json": "bare-pk-select-json", "verify-cold-json": "bare-pk-select-json",
		"tenant-by-slug-json": "bare-pk-select-json", "tenant-by-slug-get": "bare-pk-select-json",
		"tree-append-100": "plain-insert-100", "tree-append-1": "plain-insert-1",
	}
	ownStackOf = map[string]string{
		"verify-warm-json": "limit-json", "verify-warm-grpc": "limit-grpc",
		"check-entitlement-json": "limit-check-json", "verify-cold-json": "pk-select-json",
	}
)

// judge fills in each row's ratios to its baselines and returns the targets.
func judge(rows []*row) []target {
	by := map[string]*row{}
	for _, r := range rows {
		by[r.Key] = r
	}
	rate := func(r *row) float64 {
		if r.EventsPerSecond > 0 {
			return r.EventsPerSecond
		}
		return r.RPS
	}
	for _, r := range rows {
		if b := by[bareOf[r.Key]]; b != nil && rate(b) > 0 {
			v := rate(r) / rate(b)
			r.VsBare, r.BareKey = &v, b.Key
		}
		if b := by[ownStackOf[r.Key]]; b != nil && b.RPS > 0 {
			v := r.RPS / b.RPS
			r.VsOwnStack, r.OwnStackKey = &v, b.Key
		}
	}
	var out []target
	// add judges value against a goal (ok says whether it is met); rows
	// are those the value comes from: errors in any invalidate it.
	add := func(t target, value func() (float64, bool), ok func(float64) bool, rows ...string) {
		var errs []string
		for _, k := range rows {
			r := by[k]
			if r == nil {
				t.Note = strings.TrimPrefix(t.Note+"; not run", "; ")
				out = append(out, t)
				return
			}
			if r.Errors > 0 {
				errs = append(errs, k)
			}
		}
		v, valid := value()
		if !valid {
			t.Note = strings.TrimPrefix(t.Note+"; no figure", "; ")
			out = append(out, t)
			return
		}
		t.Value = &v
		if ok != nil {
			pass := ok(v) && len(errs) == 0
			t.Pass = &pass
		}
		if len(errs) > 0 {
			t.Note = strings.TrimPrefix(t.Note+"; errors in "+strings.Join(errs, ", ")+" invalidate it", "; ")
		}
		out = append(out, t)
	}
	ratio := func(a, b string, f func(*row) float64) func() (float64, bool) {
		return func() (float64, bool) {
			x, y := f(by[a]), f(by[b])
			return x / y, y > 0
		}
	}
	rps := func(r *row) float64 { return r.RPS }
	events := func(r *row) float64 { return r.EventsPerSecond }
	cpu := func(r *row) float64 { return r.CPUPerRequestUs }
	p50 := func(r *row) float64 { return r.P50ms }
	atLeast := func(min float64) func(float64) bool { return func(v float64) bool { return v >= min } }
	atMost := func(max float64) func(float64) bool { return func(v float64) bool { return v <= max } }

	for _, p := range []struct{ proto, gen string }{{"json", "Connect JSON, wrk"}, {"grpc", "gRPC, h2load"}} {
		warm, base := "verify-warm-"+p.proto, "bare-verify-"+p.proto
		add(target{Name: "warm VerifyApiKey ÷ bare connect-go handler (" + p.gen + ")", Unit: "× requests/s",
			Goal: fmt.Sprintf("≥ %.2f", warmVsBareMin), Of: "requests/s ÷ " + base},
			ratio(warm, base, rps), atLeast(warmVsBareMin), warm, base)
	}
	for _, p := range []struct{ proto, gen string }{{"json", "Connect JSON"}, {"grpc", "gRPC"}} {
		warm, base := "verify-warm-"+p.proto, "bare-verify-"+p.proto
		add(target{Name: "server CPU µs/request: warm VerifyApiKey ÷ bare handler (" + p.gen + ")", Unit: "× CPU µs/request",
			Goal: fmt.Sprintf("≤ %.2f", warmCPUMax), Of: "server CPU µs/request ÷ " + base},
			ratio(warm, base, cpu), atMost(warmCPUMax), warm, base)
	}
	add(target{Name: "warm CheckEntitlement ÷ bare connect-go handler (Connect JSON, wrk)", Unit: "× requests/s",
		Goal: fmt.Sprintf("≥ %.2f", warmVsBareMin), Of: "requests/s ÷ bare-check-json"},
		ratio("check-entitlement-json", "bare-check-json", rps), atLeast(warmVsBareMin), "check-entitlement-json", "bare-check-json")
	add(target{Name: "RecordAuditEvent single (in flight: --concurrency) ÷ RecordAuditEvents ×100", Unit: "× events/s",
		Goal: fmt.Sprintf("≥ %.2f", singleAppendMin), Of: "events/s ÷ audit-batch100-json"},
		ratio("audit-single-json", "audit-batch100-json", events), atLeast(singleAppendMin), "audit-single-json", "audit-batch100-json")
	add(target{Name: "peak RSS of the service under the verify rows", Unit: "MB", Goal: fmt.Sprintf("≤ %d", warmVerifyRSS),
		Of: "max VmHWM of the processes serving verify-warm-json and verify-warm-grpc"},
		func() (float64, bool) {
			var m float64
			for _, k := range []string{"verify-warm-json", "verify-warm-grpc"} {
				if r := by[k]; r != nil {
					m = max(m, r.PeakRSSMB)
				}
			}
			return m, m > 0
		}, atMost(warmVerifyRSS), "verify-warm-json", "verify-warm-grpc")
	add(target{Name: "VerifyApiKey cold ÷ bare PK SELECT", Unit: "× requests/s", Goal: fmt.Sprintf("≥ %.2f", coldVerifyMin),
		Of: "requests/s ÷ bare-pk-select-json"},
		ratio("verify-cold-json", "bare-pk-select-json", rps), atLeast(coldVerifyMin), "verify-cold-json", "bare-pk-select-json")
	for _, b := range []string{"100", "1"} {
		tree, plain := "tree-append-"+b, "plain-insert-"+b
		add(target{Name: "audit log Append (tree) ÷ plain INSERT of the same rows, batches of " + b, Unit: "× events/s",
			Of: "events/s ÷ " + plain, Note: "reported, no goal: the chain this tree replaced is gone"},
			ratio(tree, plain, events), nil, tree, plain)
		add(target{Name: "CPU per event, audit log Append ÷ plain INSERT, batches of " + b, Unit: "× (harness + database) CPU µs/event",
			Of: "(harness + database CPU) per event ÷ the same of " + plain},
			func() (float64, bool) {
				t, p := by[tree], by[plain]
				n := func(r *row) float64 {
					return (r.CPUPerRequestUs + r.DatabaseCPUPerRequestUs) * r.RPS / max(r.EventsPerSecond, 1)
				}
				return n(t) / n(p), n(p) > 0
			}, nil, tree, plain)
	}
	for _, page := range []string{"first", "deep"} {
		big, small := "list-"+page+"-big", "list-"+page+"-1k"
		name := "ListAuditEvents " + page + " page, large log ÷ 1k"
		if r := by[big]; r != nil {
			name = strings.Replace(r.Name, ", ", " ", 1) + " ÷ 1k"
		}
		add(target{Name: name, Unit: "× p50", Goal: fmt.Sprintf("≤ %d", deepListMax), Of: "p50 ÷ " + small},
			ratio(big, small, p50), atMost(deepListMax), big, small)
	}
	add(target{Name: "RecordAuditEvent to one large log ÷ to one of 1k", Unit: "× requests/s", Goal: fmt.Sprintf("≥ %.2f", 1.0/deepListMax),
		Of: "requests/s ÷ append-chain-1k", Note: "a guard: an append's cost must not grow with its log"},
		ratio("append-chain-big", "append-chain-1k", rps), atLeast(1.0/deepListMax), "append-chain-big", "append-chain-1k")
	for _, k := range []string{"proof-event-1M", "proof-consistency-1M"} {
		name := k
		if r := by[k]; r != nil {
			name = r.Name + ", p50"
		}
		add(target{Name: name, Unit: "ms", Goal: fmt.Sprintf("≤ %d", proofP50Max), Of: "p50 of " + k},
			func() (float64, bool) { return by[k].P50ms, by[k].P50ms > 0 }, atMost(proofP50Max), k)
	}
	add(target{Name: "RecordAuditEvent p99 while a month is dropped ÷ before", Unit: "× p99", Goal: fmt.Sprintf("≤ %d", dropP99Max),
		Of: "p99 of drop-during ÷ p99 of drop-before"},
		func() (float64, bool) {
			return by["drop-during"].P99ms / by["drop-before"].P99ms, by["drop-before"].P99ms > 0
		}, atMost(dropP99Max), "drop-during", "drop-before")
	add(target{Name: "the same, appends to the other logs only", Unit: "× p99",
		Of: "p99 of drop-during ÷ p99 of drop-before, leaving out the appends to the log whose month is dropped"},
		func() (float64, bool) {
			return by["drop-during"].OthersP99ms / by["drop-before"].OthersP99ms, by["drop-before"].OthersP99ms > 0
		}, nil, "drop-during", "drop-before")
	add(target{Name: "product with the SDK's middleware ÷ without authentication", Unit: "× requests/s", Goal: fmt.Sprintf("≥ %.2f", productMin),
		Of: "requests/s ÷ product-noauth"},
		ratio("product-sdk", "product-noauth", rps), atLeast(productMin), "product-sdk", "product-noauth")
	for _, k := range []string{"revocation-propagation", "revocation-at-product"} {
		name := k
		if r := by[k]; r != nil {
			name = r.Name + ", max"
		}
		add(target{Name: name, Unit: "ms", Goal: fmt.Sprintf("≤ %d", propagationMax), Of: "max of " + k},
			func() (float64, bool) { return by[k].MaxMs, true }, atMost(propagationMax), k)
	}
	// Only the targets whose rows ran.
	var ran []target
	for _, t := range out {
		if !strings.HasSuffix(t.Note, "not run") {
			ran = append(ran, t)
		}
	}
	return ran
}

// summary is the JSON written beside the table.
type summary struct {
	Date              string   `json:"date"`
	Machine           string   `json:"machine"`
	GoVersion         string   `json:"go_version"`
	LoadAverageBefore string   `json:"load_average_before"`
	LoadAverageAfter  string   `json:"load_average_after"`
	Duration          string   `json:"duration_per_row"`
	Warmup            string   `json:"warmup_per_row"`
	Concurrency       int      `json:"concurrency"`
	AuditEvents       int      `json:"audit_events"`
	Rows              []*row   `json:"rows"`
	Targets           []target `json:"targets"`
}

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s/%s, load generator and servers on the same machine", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH)
}

// write prints the tables to w and writes summary.txt and summary.json
// into dir.
func (s summary) write(w io.Writer, dir string) error {
	var table strings.Builder
	fmt.Fprintf(&table, "tenant-registry benchmark, %s\n%s; load average %s before, %s after\n"+
		"%s per row, in %d slices interleaved with the other rows of its group, after %s warm-up; %d requests in flight\n\n",
		s.Date, s.Machine, s.LoadAverageBefore, s.LoadAverageAfter, s.Duration, rounds, s.Warmup, s.Concurrency)
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "row\tprotocol\treq/s\tevents/s\tp50 ms\tp99 ms\terrors\t÷ bare\t÷ own stack\tCPU µs/req server\tdatabase\tload gen.\tRSS MB\t")
	f2 := func(v *float64) string {
		if v == nil {
			return ""
		}
		return fmt.Sprintf("%.2f", *v)
	}
	for _, r := range s.Rows {
		events, p99 := "", fmt.Sprintf("%.2f", r.P99ms)
		if r.EventsPerSecond > 0 {
			events = fmt.Sprintf("%.0f", r.EventsPerSecond)
		}
		if r.MaxMs > 0 && r.P99ms == 0 {
			p99 = fmt.Sprintf("max %.2f", r.MaxMs)
		}
		rps := fmt.Sprintf("%.0f", r.RPS)
		cpu, db, gen := fmt.Sprintf("%.0f", r.CPUPerRequestUs), fmt.Sprintf("%.0f", r.DatabaseCPUPerRequestUs), fmt.Sprintf("%.0f", r.GeneratorCPUPerRequestUs)
		if r.CPUPerRequestUs == 0 && r.DatabaseCPUPerRequestUs == 0 {
			cpu, db, gen = "", "", ""
		}
		if r.RPS == 0 {
			rps = ""
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%.1f\t\n",
			r.Name, r.Protocol, rps, events, r.P50ms, p99, r.Errors, f2(r.VsBare), f2(r.VsOwnStack), cpu, db, gen, r.PeakRSSMB)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	table.WriteString("\n÷ bare: requests/s (events/s for appends) ÷ the outside baseline's row: the bare connect-go handler of the same procedure and protocol,\n" +
		"  a PK SELECT via database/sql for database reads, a plain INSERT for the audit log's Append\n" +
		"÷ own stack: requests/s ÷ the service's own stack (bench/baseline) answering the same procedure with a constant\n" +
		"CPU µs/req: user + system time per request of the server process (the harness for in-process rows), of PostgreSQL's backends, of the load generator\n" +
		"RSS: peak of the process serving the row; rows on the same process share it\n\n")
	tw = tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tvalue\tgoal\tresult\tof\t")
	for _, t := range s.Targets {
		value, result := "", ""
		if t.Value != nil {
			value = fmt.Sprintf("%.2f %s", *t.Value, t.Unit)
		}
		if t.Pass != nil {
			result = map[bool]string{true: "PASS", false: "FAIL"}[*t.Pass]
		}
		of := t.Of
		if t.Note != "" {
			of += " (" + t.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", t.Name, value, t.Goal, result, of)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	table.WriteString("\n")
	for _, r := range s.Rows {
		if r.Note != "" || r.ErrorSample != "" {
			fmt.Fprintf(&table, "%s: %s %s\n", r.Key, r.Note, r.ErrorSample)
		}
	}
	fmt.Fprint(w, "\n"+table.String())
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(table.String()), 0o644); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwrote %s and %s\n", filepath.Join(dir, "summary.txt"), filepath.Join(dir, "summary.json"))
	return nil
}
