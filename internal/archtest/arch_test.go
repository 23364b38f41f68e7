// Package archtest checks that dependencies point inward, as the layout
// promises: domain imports no Connect and no Bun; transport does not import
// persistence; the Go SDK pulls none of the server's dependencies.
package archtest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tenant-registry/tenant-registry"

func TestDependenciesPointInward(t *testing.T) {
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		{"domain", []string{"connectrpc.com/", "github.com/uptrace/bun", module + "/gen/", module + "/persistence", module + "/transport", "google.golang.org/protobuf"}},
		{"persistence", []string{"connectrpc.com/", module + "/transport", module + "/gen/"}},
		{"transport", []string{"github.com/uptrace/bun", module + "/persistence", "modernc.org/sqlite"}},
	}
	for _, tc := range tests {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"/"+tc.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", tc.pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 2 {
			t.Fatalf("go list %s listed nothing", tc.pkg)
		}
		for _, dep := range deps {
			for _, f := range tc.forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", tc.pkg, dep)
				}
			}
		}
	}
}

// TestSDKPullsNoServerDependencies keeps the Go SDK light for the products
// that import it: its build list holds none of the server's storage or
// telemetry modules, nor the server's module itself, only the generated
// code's.
func TestSDKPullsNoServerDependencies(t *testing.T) {
	list := func(args ...string) []string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = "../../sdk/go"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s in sdk/go: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	modules := list("list", "-m", "-f", "{{.Path}}", "all")
	if !slices.Contains(modules, module+"/gen") || !slices.Contains(modules, "connectrpc.com/connect") {
		t.Fatalf("the SDK's build list %v lacks the generated code or connect: the check below would prove nothing", modules)
	}
	forbidden := []string{"github.com/uptrace/bun", "modernc.org/", "github.com/mattn/go-sqlite3", "github.com/jackc/", "github.com/lib/pq",
		"go.opentelemetry.io/otel/sdk", "go.opentelemetry.io/otel/exporters"}
	for _, m := range modules {
		if m == module || slices.ContainsFunc(forbidden, func(f string) bool { return strings.HasPrefix(m, f) }) {
			t.Errorf("the SDK's build list holds %s", m)
		}
	}
	for _, pkg := range list("list", "-deps", "-f", "{{.ImportPath}}", "./...") {
		for _, own := range []string{"/domain", "/persistence", "/transport", "/internal/"} {
			if strings.HasPrefix(pkg, module+own) {
				t.Errorf("the SDK depends on the server's package %s", pkg)
			}
		}
	}
}
