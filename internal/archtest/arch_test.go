// Package archtest checks that dependencies point inward, as the layout
// promises: domain imports no Connect and no Bun; transport does not import
// persistence.
package archtest

import (
	"os/exec"
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
