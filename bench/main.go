// Command bench measures tenant-registry against the limit of the machine
// it runs on: every figure is read beside a baseline measured in the same
// run, by the same load generator, against a server with the same settings,
// because absolute numbers drift on shared machines and ratios do not.
//
//	go run . run --database-url postgres://… [--duration 10s] [--out bench-results]
//	go run . seed-audit --database-url postgres://… --tenant ID --events 1000000
//
// run builds the service and two baseline servers (bench/bare, a bare
// connect-go handler, and bench/baseline, the service's own stack answering
// constants), starts each as a process of its own against a fresh
// PostgreSQL database (dropped at the end unless --keep), drives them with
// wrk (Connect JSON over HTTP/1.1), h2load (gRPC over h2c) and, where each
// request must differ, vegeta, and writes a table and a JSON summary to
// --out. See README.md, "Benchmarks".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tenant-registry/tenant-registry/persistence"
)

const usage = `usage:
  go run . run --database-url URL [--duration 10s] [--warmup 2s] [--concurrency 32]
               [--out bench-results] [--audit-events 1000000] [--trials 50]
               [--only groups] [--database NAME] [--keep] [--profile DIR]
               [--proof-concurrency 1] [--drop-events 1000000] [--drop-concurrency 8]
  go run . seed-audit --database-url URL --tenant ID [--events 1000000] [--batch 5000] [--external-ids]

URL is a PostgreSQL server's URL (any database on it: run creates its own);
BENCH_DATABASE_URL is the default.`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCommand(ctx, os.Args[2:])
	case "seed-audit":
		err = seedCommand(ctx, os.Args[2:])
	case "help", "-h", "--help":
		fmt.Println(usage)
	default:
		err = fmt.Errorf("unknown command %q\n%s", os.Args[1], usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func defaultDatabaseURL() string {
	if v := os.Getenv("BENCH_DATABASE_URL"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// options are run's flags.
type options struct {
	DatabaseURL string
	Database    string // use (or create) this database instead of a fresh one
	Keep        bool
	Duration    time.Duration
	Warmup      time.Duration
	Concurrency int
	Out         string
	AuditEvents int
	Trials      int
	Only        map[string]bool
	ProfileDir  string
	// ProofConcurrency is the proof rows' requests in flight.
	ProofConcurrency int
	// DropEvents are the events of the old month the retention row drops,
	// DropConcurrency the appends in flight meanwhile.
	DropEvents, DropConcurrency int
}

func (o options) wants(group string) bool { return len(o.Only) == 0 || o.Only[group] }

func (o options) wantsAny(groups []string) bool {
	for _, g := range groups {
		if o.wants(g) {
			return true
		}
	}
	return false
}

// rowGroups name what --only selects.
var rowGroups = []string{"bare", "limit", "verify", "cold", "reads", "audit", "chains", "tree", "proofs", "retention", "product", "propagation"}

func runCommand(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var o options
	var only string
	fs.StringVar(&o.DatabaseURL, "database-url", defaultDatabaseURL(), "PostgreSQL server to run against (run creates a database of its own on it)")
	fs.StringVar(&o.Database, "database", "", "use this database (created when missing) instead of a fresh one; implies --keep; its seed is reused")
	fs.BoolVar(&o.Keep, "keep", false, "keep the database at the end")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time of each row")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "unmeasured load before each row")
	fs.IntVar(&o.Concurrency, "concurrency", 32, "requests in flight (vegeta workers, ghz workers)")
	fs.StringVar(&o.Out, "out", "bench-results", "directory for summary.json and summary.txt")
	fs.IntVar(&o.AuditEvents, "audit-events", 1_000_000, "events in the large audit chain")
	fs.IntVar(&o.Trials, "trials", 50, "revocation propagation trials")
	fs.StringVar(&only, "only", "", "comma-separated row groups to run: "+strings.Join(rowGroups, ","))
	fs.StringVar(&o.ProfileDir, "profile", "", "capture CPU and heap profiles of the service under each row into this directory (PPROF_ADDR)")
	fs.IntVar(&o.ProofConcurrency, "proof-concurrency", 1, "requests in flight in the proof rows (their figure is latency)")
	fs.IntVar(&o.DropEvents, "drop-events", 1_000_000, "events of the old month the retention row seeds and drops")
	fs.IntVar(&o.DropConcurrency, "drop-concurrency", 8, "appends in flight while the retention row drops a month")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run takes no arguments, got %q", fs.Args())
	}
	if only != "" {
		o.Only = map[string]bool{}
		for _, g := range strings.Split(only, ",") {
			g = strings.TrimSpace(g)
			if !slices.Contains(rowGroups, g) {
				return fmt.Errorf("--only: unknown row group %q; want some of %s", g, strings.Join(rowGroups, ","))
			}
			o.Only[g] = true
		}
	}
	if o.Duration < time.Second || o.Concurrency < 1 || o.AuditEvents < 1000 || o.Trials < 1 ||
		o.ProofConcurrency < 1 || o.DropEvents < 1000 || o.DropConcurrency < 1 {
		return fmt.Errorf("want --duration ≥ 1s, --concurrency ≥ 1, --audit-events ≥ 1000, --trials ≥ 1, " +
			"--proof-concurrency ≥ 1, --drop-events ≥ 1000, --drop-concurrency ≥ 1")
	}
	if o.Database != "" {
		o.Keep = true
	}
	return run(ctx, o)
}

func seedCommand(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("seed-audit", flag.ContinueOnError)
	dbURL := fs.String("database-url", defaultDatabaseURL(), "the service's database (migrated, e.g. by a server started on it)")
	tenant := fs.String("tenant", "", "id of the tenant whose log grows")
	events := fs.Int("events", 1_000_000, "events to append")
	batch := fs.Int("batch", seedBatch, "events per transaction")
	keys := fs.Bool("external-ids", false, "give each event an idempotency key, as products do")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tenant == "" || fs.NArg() > 0 {
		return fmt.Errorf("usage: seed-audit --database-url URL --tenant ID [--events N] [--batch N] [--external-ids]")
	}
	db, err := persistence.Open(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	start := time.Now()
	if err := seedAudit(ctx, db, *tenant, *events, seedOptions{Batch: *batch, ExternalIDs: *keys, DatabaseURL: *dbURL}, os.Stderr); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "appended %d events in %s\n", *events, time.Since(start).Round(time.Millisecond))
	return nil
}
