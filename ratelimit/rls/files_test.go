package rls_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/reload"
	"github.com/tollgate-dev/tollgate/internal/reload/reloadtest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/rls"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func limitConfig(rpu string) string {
	return "domain: golden\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: " + rpu + "}\n"
}

// watchFiles loads paths into a new RLS with watching on and runs the
// reloader until the test ends; limitOf returns the limit in force for
// descriptor k=v.
func watchFiles(t *testing.T, paths ...string) (r *reload.Reloader, limitOf func() uint32) {
	t.Helper()
	eng, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := rls.New(eng, rls.Options{})
	r, err = rls.NewFiles(context.Background(), srv, rls.FilesOptions{Paths: paths, Watch: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, func() uint32 {
		resp, err := srv.ShouldRateLimit(context.Background(), rlsRequest("k", "v"))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Statuses[0].GetCurrentLimit().GetRequestsPerUnit()
	}
}

// TestRLSFilesReload: a ConfigMap-style symlink swap changes the limits; a
// broken file keeps the last good configuration and names file:line.
func TestRLSFilesReload(t *testing.T) {
	root := t.TempDir()
	writeConfig := func(dir, body string) {
		must(t, os.MkdirAll(filepath.Join(root, dir), 0o755))
		must(t, os.WriteFile(filepath.Join(root, dir, "config.yaml"), []byte(body), 0o644))
	}
	writeConfig("..v1", limitConfig("1"))
	must(t, os.Symlink("..v1", filepath.Join(root, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "config.yaml"), filepath.Join(root, "config.yaml")))

	files, limitOf := watchFiles(t, root)
	if got := limitOf(); got != 1 {
		t.Fatalf("initial limit %d, want 1", got)
	}
	if st := files.Status(); len(st.Files) != 1 || st.Detail.(rls.FilesDetail).Domains[0] != "golden" {
		t.Errorf("status %+v, want the file and its domain", st)
	}
	// kubelet's swap
	writeConfig("..v2", limitConfig("7"))
	must(t, os.Symlink("..v2", filepath.Join(root, "..data_tmp")))
	must(t, os.Rename(filepath.Join(root, "..data_tmp"), filepath.Join(root, "..data")))
	must(t, os.RemoveAll(filepath.Join(root, "..v1")))
	eventually(t, "the swapped config", func() bool { return limitOf() == 7 })

	writeConfig("..v3", "domain: golden\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 3}\n")
	must(t, os.Symlink("..v3", filepath.Join(root, "..data_tmp")))
	must(t, os.Rename(filepath.Join(root, "..data_tmp"), filepath.Join(root, "..data")))
	eventually(t, "the broken config to be refused", func() bool { return files.Status().Failures == 1 })
	if got := limitOf(); got != 7 {
		t.Errorf("after a broken change the limit is %d, want the last good 7", got)
	}
	if st := files.Status(); !containsAll(st.LastError, "config.yaml:4", "fortnight") {
		t.Errorf("last error %q does not name file:line and the bad unit", st.LastError)
	}
}

// TestRLSFilesReleaseSymlink: config_paths naming a symlink to a release
// directory loads through it, and repointing it loads the new release;
// files that are not configuration cause no reload.
func TestRLSFilesReleaseSymlink(t *testing.T) {
	base := t.TempDir()
	for v, rpu := range map[string]string{"v1": "1", "v2": "2"} {
		must(t, os.MkdirAll(filepath.Join(base, "releases", v), 0o755))
		must(t, os.WriteFile(filepath.Join(base, "releases", v, "limits.yml"), []byte(limitConfig(rpu)), 0o644))
	}
	current := filepath.Join(base, "current")
	must(t, os.Symlink(filepath.Join("releases", "v1"), current))
	files, limitOf := watchFiles(t, current)
	if got := limitOf(); got != 1 {
		t.Fatalf("initial limit %d, want 1", got)
	}

	must(t, os.Remove(current)) // ln -sfn releases/v2 current
	must(t, os.Symlink(filepath.Join("releases", "v2"), current))
	eventually(t, "the repointed release", func() bool { return limitOf() == 2 })

	before := files.Status()
	reloadtest.WriteUnrelated(t, 5, filepath.Join(base, "releases", "v2", "rls.log"))
	must(t, os.WriteFile(filepath.Join(base, "releases", "v2", "limits.yml"), []byte(limitConfig("3")), 0o644))
	eventually(t, "the edit", func() bool { return limitOf() == 3 })
	reloadtest.OneReload(t, before, files.Status())
}
