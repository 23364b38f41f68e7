package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	CPUPerRequestUs float64 `json:"server_cpu_us_per_request,omitempty"`
	// GeneratorCPUPerRequestUs is the load generator's, which competes
	// with the server for the same cores.
	GeneratorCPUPerRequestUs float64 `json:"load_generator_cpu_us_per_request,omitempty"`
	// DatabaseCPUPerRequestUs is that of the PostgreSQL backends serving
	// the run's database, when PostgreSQL runs on this machine: a lower
	// bound, since a backend that exits during a slice takes its time along.
	DatabaseCPUPerRequestUs float64 `json:"database_cpu_us_per_request,omitempty"`
	// VsLimit is requests/s ÷ the limit's over the same protocol (the
	// constant handler's over gRPC for gRPC rows, over Connect JSON else).
	VsLimit *float64 `json:"ratio_to_limit,omitempty"`
	// Ratio compares the row with the baseline of its target, as RatioOf says.
	Ratio       *float64 `json:"ratio,omitempty"`
	RatioOf     string   `json:"ratio_of,omitempty"`
	PeakRSSMB   float64  `json:"peak_rss_mb"`
	Target      string   `json:"target,omitempty"`
	Pass        *bool    `json:"pass,omitempty"`
	Note        string   `json:"note,omitempty"`
	ErrorSample string   `json:"error_sample,omitempty"`
}

// Targets of the service on its 2-core machine, load generator included.
const (
	warmVerifyMin  = 0.75 // × the limit's requests/s
	warmVerifyRSS  = 100  // MB
	coldVerifyMin  = 0.7  // × the PK-select baseline's requests/s
	batchAppendMin = 10   // × single appends' events/s
	deepListMax    = 2    // × the p50 latency with 1k events
	propagationMax = 1000 // ms
	productMin     = 0.9  // × the product's requests/s without authentication
)

// judge fills in ratios, targets and verdicts.
func judge(rows []*row) {
	by := map[string]*row{}
	for _, r := range rows {
		by[r.Key] = r
	}
	ratio := func(r *row, v float64, of string) {
		r.Ratio, r.RatioOf = &v, of
	}
	verdict := func(r *row, target string, ok bool) {
		if r.Errors > 0 {
			ok = false
			r.Note = strings.TrimPrefix(r.Note+"; errors invalidate the row", "; ")
		}
		r.Target, r.Pass = target, &ok
	}
	vsRPS := func(r *row, base string) bool {
		b := by[base]
		if b == nil || b.RPS == 0 {
			return false
		}
		ratio(r, r.RPS/b.RPS, "requests/s ÷ "+b.Key)
		return true
	}
	for _, r := range rows {
		limit := by["limit-json"]
		if r.Protocol == "grpc" {
			limit = by["limit-grpc"]
		}
		if limit != nil && limit.RPS > 0 && r.RPS > 0 && !strings.HasPrefix(r.Key, "limit-") && r.Server != productSDK {
			v := r.RPS / limit.RPS
			r.VsLimit = &v
		}
		switch r.Key {
		case "verify-warm-json", "verify-warm-grpc":
			base := "limit-json"
			if r.Protocol == "grpc" {
				base = "limit-grpc"
			}
			if vsRPS(r, base) {
				verdict(r, fmt.Sprintf("≥ %.2f × limit, RSS ≤ %d MB", warmVerifyMin, warmVerifyRSS),
					*r.Ratio >= warmVerifyMin && r.PeakRSSMB <= warmVerifyRSS)
			} else {
				verdict(r, fmt.Sprintf("RSS ≤ %d MB (run the limit rows for the ratio)", warmVerifyRSS), r.PeakRSSMB <= warmVerifyRSS)
			}
		case "verify-cold-json":
			if vsRPS(r, "pk-select-json") {
				verdict(r, fmt.Sprintf("≥ %.1f × PK SELECT", coldVerifyMin), *r.Ratio >= coldVerifyMin)
			}
		case "audit-batch100-json":
			if s := by["audit-single-json"]; s != nil && s.EventsPerSecond > 0 {
				ratio(r, r.EventsPerSecond/s.EventsPerSecond, "events/s ÷ audit-single-json")
				verdict(r, fmt.Sprintf("≥ %d × single, in events/s", batchAppendMin), *r.Ratio >= batchAppendMin)
			}
		case "list-first-big", "list-deep-big":
			small := by[strings.Replace(r.Key, "-big", "-1k", 1)]
			if small != nil && small.P50ms > 0 {
				ratio(r, r.P50ms/small.P50ms, "p50 ÷ "+small.Key)
				if small.P99ms > 0 {
					r.Note = fmt.Sprintf("p99 ratio %.2f", r.P99ms/small.P99ms)
				}
				verdict(r, fmt.Sprintf("p50 ≤ %d × with 1k events", deepListMax), *r.Ratio <= deepListMax)
			}
		case "append-chain-big":
			// Not a target of the issue: a guard against appends (their
			// idempotency lookup, say) costing more as a chain grows.
			if vsRPS(r, "append-chain-1k") {
				verdict(r, fmt.Sprintf("≥ %.1f × with 1k events", 1.0/deepListMax), *r.Ratio >= 1.0/deepListMax)
			}
		case "revocation-propagation", "revocation-at-product":
			verdict(r, fmt.Sprintf("max ≤ %d ms", propagationMax), r.MaxMs <= propagationMax)
		case "product-sdk":
			if vsRPS(r, "product-noauth") {
				verdict(r, fmt.Sprintf("≥ %.1f × without authentication", productMin), *r.Ratio >= productMin)
			}
		}
	}
}

// summary is the JSON written beside the table.
type summary struct {
	Date              string `json:"date"`
	Machine           string `json:"machine"`
	GoVersion         string `json:"go_version"`
	LoadAverageBefore string `json:"load_average_before"`
	LoadAverageAfter  string `json:"load_average_after"`
	Duration          string `json:"duration_per_row"`
	Warmup            string `json:"warmup_per_row"`
	Concurrency       int    `json:"concurrency"`
	AuditEvents       int    `json:"audit_events"`
	Rows              []*row `json:"rows"`
}

// write prints the table to w and writes summary.txt and summary.json
// into dir.
func (s summary) write(w io.Writer, dir string) error {
	var table strings.Builder
	fmt.Fprintf(&table, "tenant-registry benchmark, %s\n%s; load average %s before, %s after\n"+
		"%s per row, in %d slices interleaved with the other rows of its group (the first fifth of each, and the drain after it, not counted), after %s warm-up; %d requests in flight\n\n",
		s.Date, s.Machine, s.LoadAverageBefore, s.LoadAverageAfter, s.Duration, rounds, s.Warmup, s.Concurrency)
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "row\tprotocol\treq/s\tevents/s\tp50 ms\tp99 ms\terrors\t÷ limit\tRSS MB\tCPU µs/req\tratio\ttarget\tresult\t")
	for _, r := range s.Rows {
		events, p99, vsLimit, ratio, result := "", fmt.Sprintf("%.2f", r.P99ms), "", "", ""
		if r.VsLimit != nil {
			vsLimit = fmt.Sprintf("%.2f", *r.VsLimit)
		}
		if r.EventsPerSecond > 0 {
			events = fmt.Sprintf("%.0f", r.EventsPerSecond)
		}
		if r.MaxMs > 0 {
			p99 = fmt.Sprintf("max %.2f", r.MaxMs)
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *r.Ratio)
		}
		if r.Pass != nil {
			result = map[bool]string{true: "PASS", false: "FAIL"}[*r.Pass]
		}
		rps, cpu := fmt.Sprintf("%.0f", r.RPS), fmt.Sprintf("%.0f", r.CPUPerRequestUs)
		if r.Key == "revocation-propagation" || r.Key == "revocation-at-product" {
			rps, cpu = "", ""
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%s\t%d\t%s\t%.1f\t%s\t%s\t%s\t%s\t\n",
			r.Name, r.Protocol, rps, events, r.P50ms, p99, r.Errors, vsLimit, r.PeakRSSMB, cpu, ratio, r.Target, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	table.WriteString("\n÷ limit: requests/s ÷ the constant handler's, same protocol (gRPC for gRPC, Connect JSON else)\n" +
		"RSS: peak of the process serving the row; the limit and PK SELECT rows share the baseline's, the reads one, the audit rows one, the list rows one\n" +
		"CPU µs/req: the server process's user + system time per request\nratio: ")
	var notes []string
	for _, r := range s.Rows {
		if r.RatioOf != "" {
			notes = append(notes, fmt.Sprintf("%s = %s", r.Key, r.RatioOf))
		}
	}
	table.WriteString(strings.Join(notes, "; ") + "\n")
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
