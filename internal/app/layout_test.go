package app_test

import (
	"go/build"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tollgate-dev/tollgate"

// TestImportDirection: imports point from the adapters (ext_authz, RLS,
// xDS, admin, CLI) to the cores (decision contract, limit engine, policy
// engine), never between adapters; only the app wiring and the CLI import
// the ext_authz adapter. Checked on the non-test imports, transitively.
func TestImportDirection(t *testing.T) {
	deps := moduleImports(t)
	closure := func(pkg string) []string {
		seen := map[string]bool{}
		var walk func(string)
		walk = func(p string) {
			for _, d := range deps[p] {
				if !seen[d] {
					seen[d] = true
					walk(d)
				}
			}
		}
		walk(pkg)
		return slices.Sorted(func(yield func(string) bool) {
			for d := range seen {
				if !yield(d) {
					return
				}
			}
		})
	}
	rules := []struct {
		pkgs      string   // a package path prefix, relative to the module
		forbidden []string // package path prefixes it must not depend on
	}{
		{"ratelimit", []string{"authz", "xds", "internal/app", "internal/admin", "cmd"}},
		{"policies", []string{"authz", "ratelimit/rls", "xds", "internal/app", "internal/admin", "cmd"}},
		{"authz", []string{"ratelimit/rls", "xds", "internal/app", "internal/admin", "cmd"}},
		// The access log service completes what ext_authz reserved, through
		// the limit engine and the wire vocabulary, not through ext_authz.
		{"authz/accesslog", []string{"authz", "policies", "ratelimit/rls", "xds", "internal/app", "internal/admin", "cmd"}},
		{"xds", []string{"authz", "ratelimit", "policies", "internal/app", "internal/admin", "cmd"}},
		{"internal/admin", []string{"authz", "ratelimit/rls", "xds", "internal/app", "cmd"}},
		{"internal/wire", []string{""}}, // imports nothing of the module
	}
	checked := 0
	for pkg := range deps {
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
		for _, r := range rules {
			if rel != r.pkgs && !strings.HasPrefix(rel, r.pkgs+"/") {
				continue
			}
			checked++
			for _, d := range closure(pkg) {
				drel := strings.TrimPrefix(strings.TrimPrefix(d, module), "/")
				for _, f := range r.forbidden {
					if f == "" || drel == f || strings.HasPrefix(drel, f+"/") {
						t.Errorf("%s depends on %s", rel, drel)
					}
				}
			}
		}
		if rel != "internal/app" && rel != "cmd/tollgate" && slices.Contains(deps[pkg], module+"/authz") {
			t.Errorf("%s imports authz; only internal/app and cmd/tollgate may", rel)
		}
	}
	if checked < len(rules) {
		t.Fatalf("only %d packages matched %d rules: the module layout changed", checked, len(rules))
	}
}

// moduleImports maps each package of the module to the packages of the
// module its non-test files import.
func moduleImports(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	deps := map[string][]string{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if name := d.Name(); p != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "examples") {
			return filepath.SkipDir
		}
		bp, err := build.ImportDir(p, 0)
		if err != nil {
			return nil // no Go files here
		}
		rel, _ := filepath.Rel(root, p)
		path := module
		if rel != "." {
			path += "/" + filepath.ToSlash(rel)
		}
		for _, imp := range bp.Imports {
			if strings.HasPrefix(imp, module+"/") {
				deps[path] = append(deps[path], imp)
			}
		}
		if _, ok := deps[path]; !ok {
			deps[path] = nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return deps
}
