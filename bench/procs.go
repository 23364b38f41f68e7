package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/uptrace/bun/driver/pgdriver"
)

// binaries are the servers under test, built once per run.
type binaries struct {
	service  string // the real tenant-registry
	baseline string // bench/baseline: the service's own stack, constant handlers
	bare     string // bench/bare: a bare connect-go server, the outside baseline
	product  string // bench/product: a product on the Go SDK
}

// build compiles the service in its own module (so the benchmark's
// dependencies cannot change what is measured) and the baseline here.
func build(ctx context.Context, dir string) (binaries, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return binaries{}, err
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "tenant-registry")); err != nil {
		return binaries{}, errors.New("run the harness from the bench directory of the repository (cd bench)")
	}
	b := binaries{service: filepath.Join(dir, "tenant-registry"), baseline: filepath.Join(dir, "baseline"),
		bare: filepath.Join(dir, "bare"), product: filepath.Join(dir, "product")}
	for _, step := range []struct{ dir, out, pkg string }{
		{root, b.service, "./cmd/tenant-registry"},
		{".", b.baseline, "./baseline"},
		{".", b.bare, "./bare"},
		{".", b.product, "./product"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", step.out, step.pkg)
		cmd.Dir = step.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return binaries{}, fmt.Errorf("go build %s: %w\n%s", step.pkg, err, out)
		}
	}
	return b, nil
}

// database is the PostgreSQL database a run works in.
type database struct {
	admin *sql.DB // connected to the URL given, to create and drop
	name  string
	url   string // the run's own database
}

// createDatabase creates name on the server of serverURL, unless reuse and
// it exists already.
func createDatabase(ctx context.Context, serverURL, name string, reuse bool) (*database, error) {
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("--database-url: want postgres://…, got %q", serverURL)
	}
	admin := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(serverURL)))
	var exists bool
	if err := admin.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		admin.Close()
		return nil, fmt.Errorf("connect to %s: %w", u.Redacted(), err)
	}
	if exists && !reuse {
		admin.Close()
		return nil, fmt.Errorf("database %s exists", name)
	}
	if !exists {
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(name)); err != nil {
			admin.Close()
			return nil, fmt.Errorf("create database %s: %w", name, err)
		}
	}
	u.Path = "/" + name
	return &database{admin: admin, name: name, url: u.String()}, nil
}

func (d *database) drop(ctx context.Context) error {
	defer d.admin.Close()
	_, err := d.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(d.name)+" WITH (FORCE)")
	return err
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// process is a server under test.
type process struct {
	name      string
	cmd       *exec.Cmd
	url       string // http://127.0.0.1:PORT
	addr      string // 127.0.0.1:PORT, for ghz
	pprofAddr string // set when profiles were asked for
	done      chan error
	logPath   string
	noAuthURL string     // a product's baseline port
	deps      []*process // stopped after this one: a product's registry
	// self marks the harness itself, which serves the in-process rows.
	self bool
}

// self is the harness's own process, as the server of in-process rows.
func self() *process { return &process{name: "harness", self: true} }

func (p *process) pid() int {
	if p.self {
		return os.Getpid()
	}
	return p.cmd.Process.Pid
}

// start runs bin with env added to the harness's environment, on a free
// port, logging to logDir, and waits until it answers /readyz.
func start(ctx context.Context, name, bin string, env []string, logDir string, pprof bool) (*process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := &process{name: name, url: "http://" + addr, addr: addr, done: make(chan error, 1)}
	env = append(env, "ADDR="+addr, "SHUTDOWN_GRACE=2s")
	if pprof {
		if p.pprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		env = append(env, "PPROF_ADDR="+p.pprofAddr)
	}
	p.logPath = filepath.Join(logDir, name+".log")
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.done <- p.cmd.Wait(); logFile.Close() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-p.done:
			p.done <- err
			return nil, fmt.Errorf("%s exited at start (%v); its log:\n%s", name, err, tail(p.logPath))
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if res, err := http.Get(p.url + "/readyz"); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s not ready after 60s; its log:\n%s", name, tail(p.logPath))
		}
	}
}

// peakRSS is the process's peak resident set size so far (VmHWM), in bytes.
func (p *process) peakRSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// cpuTime is the CPU time the process has used so far, user and system.
// Per request it is a figure that other load on a shared machine hardly
// moves, unlike requests/s.
func (p *process) cpuTime() (time.Duration, error) { return cpuTime(p.pid()) }

// cpuTime reads a process's CPU time from /proc.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after it. utime and stime are fields 14 and 15, in clock ticks.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const ticksPerSecond = 100 // USER_HZ, 100 on every Linux platform Go supports
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// backendTimes are the CPU times used so far by the PostgreSQL backends
// serving a database, by process id, when PostgreSQL runs on this machine
// (none when it does not): their process titles read "postgres: … USER
// DATABASE HOST…".
type backendTimes map[int]time.Duration

func databaseBackends(name string) backendTimes {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	out := backendTimes{}
	for _, dir := range dirs {
		title, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || !bytes.HasPrefix(title, []byte("postgres: ")) {
			continue
		}
		if !slices.Contains(strings.Fields(string(title)), name) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		if t, err := cpuTime(pid); err == nil {
			out[pid] = t
		}
	}
	return out
}

// since is the CPU time the backends used after the reading before: for
// a backend in both, the difference; for one that started since, all of
// its time. A backend that exited in between took its time along, so the
// figure is a lower bound: it is read while the server under test keeps
// its pool open.
func (now backendTimes) since(before backendTimes) time.Duration {
	var total time.Duration
	for pid, t := range now {
		total += t - before[pid]
	}
	return total
}

// stop ends the process with SIGTERM, as an orchestrator would, and waits;
// then the processes it depends on.
func (p *process) stop() {
	if p.self {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		p.done <- <-p.done
	}
	for _, d := range p.deps {
		d.stop()
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tail returns the end of a log file, for errors.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
