package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// readmeExample is one curl or grpcurl command of the README and the
// substrings its output must contain (its "# expect:" lines).
type readmeExample struct {
	command string
	expect  []string
}

// readmeCommands are the beginnings of the README's commands the test
// runs: calls of the running server, and the offline audit commands.
var readmeCommands = []string{"curl ", "grpcurl ", "go run ./cmd/tenant-registry audit "}

// readmeExamples extracts the commands of the README's sh blocks that
// readmeCommands name, joining continuation lines.
func readmeExamples(t *testing.T, path string) []readmeExample {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []readmeExample
	inSh, cont := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```sh"):
			inSh = true
			continue
		case strings.HasPrefix(line, "```"):
			inSh = false
			continue
		case !inSh:
			continue
		}
		trimmed := strings.TrimSpace(line)
		switch {
		case cont:
			out[len(out)-1].command += " " + strings.TrimSuffix(trimmed, `\`)
		case slices.ContainsFunc(readmeCommands, func(p string) bool { return strings.HasPrefix(trimmed, p) }):
			out = append(out, readmeExample{command: strings.TrimSuffix(trimmed, `\`)})
		case strings.HasPrefix(trimmed, "# expect: ") && len(out) > 0:
			out[len(out)-1].expect = append(out[len(out)-1].expect, strings.TrimPrefix(trimmed, "# expect: "))
		}
		cont = strings.HasSuffix(trimmed, `\`)
	}
	return out
}

// TestReadmeExamples runs every curl and grpcurl command of the README, as
// written, against a freshly started server (the README's address is
// replaced by the test server's), and checks each answer.
func TestReadmeExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grpcurl and starts a server")
	}
	root, _ := filepath.Abs("../..")
	examples := readmeExamples(t, filepath.Join(root, "README.md"))
	if len(examples) < 8 {
		t.Fatalf("found %d examples in the README, want at least 8", len(examples))
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-modfile=tools/go.mod", "-o", filepath.Join(bin, "grpcurl"), "github.com/fullstorydev/grpcurl/cmd/grpcurl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the pinned grpcurl: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed to run the README's examples")
	}

	// The binary stands for `go run ./cmd/tenant-registry`; every command
	// runs in one scratch directory, where the examples' downloads land.
	binary := filepath.Join(bin, "tenant-registry")
	build = exec.Command("go", "build", "-o", binary, "./cmd/tenant-registry")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tenant-registry: %v\n%s", err, out)
	}
	work := t.TempDir()
	addr := readmeServer(t)
	for _, ex := range examples {
		if len(ex.expect) == 0 {
			t.Errorf("example has no '# expect:' line: %s", ex.command)
			continue
		}
		command := strings.ReplaceAll(ex.command, "localhost:8090", addr)
		command = strings.ReplaceAll(command, "go run ./cmd/tenant-registry ", binary+" ")
		cmd := exec.Command("bash", "-c", command)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s\nfailed: %v\n%s", ex.command, err, out)
			continue
		}
		for _, want := range ex.expect {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s\nanswered %s\nwant it to contain %s", ex.command, out, want)
			}
		}
		if strings.HasPrefix(ex.command, "curl") && strings.HasPrefix(strings.TrimSpace(string(out)), "{") {
			var v map[string]any
			if err := json.Unmarshal(out, &v); err != nil {
				t.Errorf("%s\nanswered non-JSON %q", ex.command, out)
			}
			if _, isErr := v["code"]; isErr && !strings.Contains(strings.Join(ex.expect, " "), `"code"`) {
				t.Errorf("%s\nanswered an unexpected error: %s", ex.command, out)
			}
		}
	}
}

// readmeServer starts the service as the README's first command does (dev,
// embedded SQLite), on a free port, and returns its address.
func readmeServer(t *testing.T) string {
	t.Helper()
	srv := serve(t, map[string]string{"DATABASE_URL": "sqlite:" + filepath.Join(t.TempDir(), "readme.db")})
	return strings.TrimPrefix(srv.baseURL, "http://")
}
