package policies_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/reload/reloadtest"
	"github.com/tollgate-dev/tollgate/policies"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const decisionPath = "tollgate/decision"

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write then rename, as editors and kubectl do, so a reader never sees
	// a half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func version(n string) string {
	return "package tollgate\n\ndecision := {\"allow\": true, \"reason\": \"" + n + "\"}\n"
}

// reasonOf evaluates the decision and returns its "reason".
func reasonOf(t testing.TB, q *policies.Query) string {
	t.Helper()
	term, err := q.Eval(context.Background(), ast.NewObject())
	if err != nil {
		t.Fatalf("eval: %v", err)
	}
	if term == nil {
		t.Fatal("decision undefined")
	}
	r := term.Value.(ast.Object).Get(ast.StringTerm("reason"))
	if r == nil {
		return ""
	}
	return string(r.Value.(ast.String))
}

func newEngine(t testing.TB, reg prometheus.Registerer, paths ...string) (*policies.Engine, *policies.Query) {
	t.Helper()
	e, err := policies.New(context.Background(), policies.Options{Paths: paths, Queries: []string{decisionPath}, Registerer: reg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	q, err := e.Query(decisionPath)
	if err != nil {
		t.Fatal(err)
	}
	return e, q
}

func TestEmbeddedDemo(t *testing.T) {
	_, q := newEngine(t, nil)
	in := ast.MustInterfaceToValue(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
		"method": "GET", "path": "/v1/invoices", "headers": map[string]any{"x-api-key": "tg_live_3f9a1c0d5e7b4a2c"},
	}}}})
	term, err := q.Eval(context.Background(), in)
	if err != nil || term == nil {
		t.Fatalf("eval: %v, %v", term, err)
	}
	if got := term.Value.(ast.Object).Get(ast.StringTerm("consumer")); got == nil || got.String() != `"acme"` {
		t.Errorf("consumer = %v, want \"acme\" (decision %v)", got, term)
	}
}

func TestLoadSources(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "rego", "policy.rego"), "package tollgate\n\ndecision := {\"allow\": true, \"reason\": data.plans.pro.name}\n")
	write(t, filepath.Join(dir, "rego", "plans", "data.yaml"), "pro:\n  name: from-yaml\n")
	write(t, filepath.Join(dir, "rego", "policy_test.rego"), "package tollgate_test\n\ntest_x if false\n")
	write(t, filepath.Join(dir, "single.rego"), version("single-file"))

	bundlePath := filepath.Join(dir, "b.tar.gz")
	writeBundle(t, bundlePath, map[string]string{
		"/policy.rego":     "package tollgate\n\ndecision := {\"allow\": true, \"reason\": data.plans.pro.name}\n",
		"/plans/data.json": `{"pro": {"name": "from-bundle"}}`,
	})

	tests := []struct {
		name  string
		paths []string
		want  string
	}{
		{"directory with yaml data", []string{filepath.Join(dir, "rego")}, "from-yaml"},
		{"single file", []string{filepath.Join(dir, "single.rego")}, "single-file"},
		{"bundle", []string{bundlePath}, "from-bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, q := newEngine(t, nil, tt.paths...)
			if got := reasonOf(t, q); got != tt.want {
				t.Errorf("reason = %q, want %q", got, tt.want)
			}
			for _, m := range e.Reloader().Status().Detail.(policies.Detail).Modules {
				if strings.HasSuffix(m, "_test.rego") {
					t.Errorf("test module %s loaded for serving", m)
				}
			}
		})
	}
}

func writeBundle(t testing.TB, path string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		query string
		want  []string
	}{
		{
			name:  "parse error names file and line",
			files: map[string]string{"p.rego": "package tollgate\n\ndecision := {\n  \"allow\": true,,\n}\n"},
			want:  []string{"p.rego:4", "rego_parse_error"},
		},
		{
			name:  "type error names file and line",
			files: map[string]string{"p.rego": "package tollgate\n\ndecision := {\"allow\": true}\n\nx := count(1)\n"},
			want:  []string{"p.rego:5", "rego_type_error"},
		},
		{
			name:  "unsafe variable",
			files: map[string]string{"p.rego": "package tollgate\n\ndecision := {\"allow\": y}\n"},
			want:  []string{"p.rego:3", "var y is unsafe"},
		},
		{
			name:  "decision path not defined",
			files: map[string]string{"p.rego": "package envoy.authz\n\nallow := true\n"},
			want:  []string{`decision path "tollgate/decision"`, "no rule defines data.tollgate.decision", "packages loaded: envoy.authz"},
		},
		{
			name:  "malformed json data",
			files: map[string]string{"p.rego": version("x"), "data.json": "{\"a\": }"},
			want:  []string{"data.json:1:7", "invalid character"},
		},
		{
			name:  "malformed yaml data",
			files: map[string]string{"p.rego": version("x"), "data.yaml": "a: [1,\n"},
			want:  []string{"data.yaml", "yaml: line 1"},
		},
		{
			name:  "no modules",
			files: map[string]string{"data.json": "{}"},
			want:  []string{"no .rego module"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				write(t, filepath.Join(dir, name), content)
			}
			_, err := policies.New(context.Background(), policies.Options{Paths: []string{dir}, Queries: []string{decisionPath}})
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	t.Run("missing path", func(t *testing.T) {
		_, err := policies.New(context.Background(), policies.Options{Paths: []string{"/nonexistent/policy"}, Queries: []string{decisionPath}})
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/policy") {
			t.Errorf("error = %v, want it to name the path", err)
		}
	})
}

func TestReloadKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	write(t, file, version("v1"))
	reg := prometheus.NewPedanticRegistry()
	e, q := newEngine(t, reg, dir)
	rev1 := e.Revision()

	write(t, file, "package tollgate\n\ndecision := {\"allow\": true\n") // unterminated
	err := e.Reloader().Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "policy.rego:4") {
		t.Fatalf("Reload error = %v, want one naming policy.rego:4", err)
	}
	if got := reasonOf(t, q); got != "v1" {
		t.Errorf("after a broken reload the decision is %q, want the last good v1", got)
	}
	if e.Revision() != rev1 {
		t.Errorf("revision changed to %s after a failed reload", e.Revision())
	}
	st := e.Reloader().Status()
	if !strings.Contains(st.LastError, "policy.rego:4") || st.Failures != 1 || st.FailedAt.IsZero() {
		t.Errorf("status = %+v, want the failure recorded with file:line", st)
	}
	if got := reloads(t, reg, "failure"); got != 1 {
		t.Errorf("tollgate_reloads_total{component=policy,result=failure} = %v, want 1", got)
	}

	write(t, file, version("v2"))
	if err := e.Reloader().Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := reasonOf(t, q); got != "v2" {
		t.Errorf("decision = %q, want v2", got)
	}
	if st := e.Reloader().Status(); st.LastError != "" || st.Reloads != 2 {
		t.Errorf("status after recovery = %+v, want no error and 2 reloads", st)
	}
	if got := reloads(t, reg, "success"); got != 2 {
		t.Errorf("tollgate_reloads_total{component=policy,result=success} = %v, want 2", got)
	}
}

// reloads reads tollgate_reloads_total{component="policy",result=...} from reg.
func reloads(t testing.TB, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tollgate_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "policy" && m.GetLabel()[1].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// eventually polls cond until it holds (reloadtest.WaitFor).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	reloadtest.WaitFor(t, what, cond)
}

// TestWatchHotReload changes the policy on disk while requests run: a good
// change is picked up, a broken one is refused and the last good policy
// keeps answering every request.
func TestWatchHotReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	write(t, file, version("v1"))
	e, q, watchDone := watchEngine(t, dir)

	// Requests run throughout; none may fail or see an undefined decision.
	var (
		wg       sync.WaitGroup
		stop     atomic.Bool
		failures atomic.Int64
		evals    atomic.Int64
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				term, err := q.Eval(context.Background(), ast.NewObject())
				if err != nil || term == nil {
					failures.Add(1)
				}
				evals.Add(1)
			}
		}()
	}

	write(t, file, version("v2"))
	eventually(t, "v2 to be loaded", func() bool { return reasonOf(t, q) == "v2" })

	before := e.Reloader().Status().Failures
	write(t, file, "package tollgate\n\ndecision := {\"allow\": \n")
	eventually(t, "the broken change to be refused", func() bool { return e.Reloader().Status().Failures > before })
	if got := reasonOf(t, q); got != "v2" {
		t.Errorf("after a broken edit the decision is %q, want the last good v2", got)
	}
	if st := e.Reloader().Status(); !strings.Contains(st.LastError, "policy.rego:") {
		t.Errorf("status.last_error = %q, want file:line", st.LastError)
	}

	write(t, file, version("v3"))
	eventually(t, "v3 to be loaded", func() bool { return reasonOf(t, q) == "v3" })

	stop.Store(true)
	wg.Wait()
	if err := watchDone(); err != nil {
		t.Errorf("Reloader.Run returned %v", err)
	}
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d evaluations failed during reloads", n, evals.Load())
	}
	if evals.Load() == 0 {
		t.Error("no evaluation ran during the reloads")
	}
}

// TestWatchConfigMapSwap mimics a Kubernetes ConfigMap volume: files are
// symlinks through "..data", which is swapped atomically to a new directory.
func TestWatchConfigMapSwap(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "..2026_11_25_a", "policy.rego"), version("cm-1"))
	must(t, os.Symlink("..2026_11_25_a", filepath.Join(root, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "policy.rego"), filepath.Join(root, "policy.rego")))

	e, q, _ := watchEngine(t, root)
	if got := reasonOf(t, q); got != "cm-1" {
		t.Fatalf("initial decision %q, want cm-1", got)
	}

	// kubelet: write the new directory, point ..data_tmp at it, rename over
	// ..data, remove the old directory.
	write(t, filepath.Join(root, "..2026_11_25_b", "policy.rego"), version("cm-2"))
	must(t, os.Symlink("..2026_11_25_b", filepath.Join(root, "..data_tmp")))
	must(t, os.Rename(filepath.Join(root, "..data_tmp"), filepath.Join(root, "..data")))
	must(t, os.RemoveAll(filepath.Join(root, "..2026_11_25_a")))

	eventually(t, "the swapped ConfigMap to be loaded", func() bool { return reasonOf(t, q) == "cm-2" })
	if st := e.Reloader().Status(); st.Failures != 0 {
		t.Errorf("status = %+v, want no failed reload", st)
	}
}

// watchEngine loads paths with watching on (the watches are set up before
// New returns) and runs the reloader until the test ends; the returned
// function stops it and returns its error.
func watchEngine(t testing.TB, paths ...string) (*policies.Engine, *policies.Query, func() error) {
	t.Helper()
	e, err := policies.New(context.Background(), policies.Options{Paths: paths, Queries: []string{decisionPath}, Watch: true})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	q, err := e.Query(decisionPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Reloader().Run(ctx) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() { cancel(); result = <-done })
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return e, q, stop
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestQueryNotPrepared(t *testing.T) {
	e, _ := newEngine(t, nil)
	if _, err := e.Query("other/decision"); err == nil || !strings.Contains(err.Error(), "tollgate/decision") {
		t.Errorf("Query(other) error = %v, want one listing the prepared paths", err)
	}
}

// TestWatchReleaseSymlink: policies configured as a symlink to a release
// directory (current -> releases/v1) are watched through it; repointing
// the symlink loads the new release, and files that are not policies (a
// log written beside them) cause no reload.
func TestWatchReleaseSymlink(t *testing.T) {
	base := t.TempDir()
	write(t, filepath.Join(base, "releases", "v1", "policy.rego"), version("r1"))
	write(t, filepath.Join(base, "releases", "v2", "policy.rego"), version("r2"))
	current := filepath.Join(base, "current")
	must(t, os.Symlink(filepath.Join("releases", "v1"), current))
	e, q, _ := watchEngine(t, current)

	write(t, filepath.Join(base, "releases", "v1", "policy.rego"), version("r1b"))
	eventually(t, "the edit in the release to be loaded", func() bool { return reasonOf(t, q) == "r1b" })

	must(t, os.Symlink(filepath.Join("releases", "v2"), current+".new"))
	must(t, os.Rename(current+".new", current))
	eventually(t, "the repointed release to be loaded", func() bool { return reasonOf(t, q) == "r2" })

	before := e.Reloader().Status()
	reloadtest.WriteUnrelated(t, 5, filepath.Join(base, "releases", "v2", "audit.log"))
	write(t, filepath.Join(base, "releases", "v2", "policy.rego"), version("r2b"))
	eventually(t, "the edit to be loaded", func() bool { return reasonOf(t, q) == "r2b" })
	reloadtest.OneReload(t, before, e.Reloader().Status())
	if st := e.Reloader().Status(); len(st.Files) != 1 || !strings.HasSuffix(st.Files[0], filepath.Join("current", "policy.rego")) {
		t.Errorf("status files %v, want current/policy.rego", st.Files)
	}
}

// TestWatchSymlinkedSubdirectory: a policy directory holding a symlink to
// a shared directory (lib -> ../shared), which the loader follows: an edit
// there and a new module there are both loaded.
func TestWatchSymlinkedSubdirectory(t *testing.T) {
	base := t.TempDir()
	write(t, filepath.Join(base, "pol", "policy.rego"), "package tollgate\n\ndecision := {\"allow\": true, \"reason\": object.get(data.lib, \"extra\", data.lib.reason)}\n")
	write(t, filepath.Join(base, "shared", "lib.rego"), "package lib\n\nreason := \"r1\"\n")
	must(t, os.Symlink(filepath.Join("..", "shared"), filepath.Join(base, "pol", "lib")))
	e, q, _ := watchEngine(t, filepath.Join(base, "pol"))
	if st := e.Reloader().Status(); st.Reloads != 1 || st.Unchanged != 0 {
		t.Errorf("start: status %+v, want one build", st)
	}
	if got := reasonOf(t, q); got != "r1" {
		t.Fatalf("reason %q, want r1", got)
	}

	write(t, filepath.Join(base, "shared", "lib.rego"), "package lib\n\nreason := \"r2\"\n")
	eventually(t, "the edit in the linked directory to be loaded", func() bool { return reasonOf(t, q) == "r2" })

	// A new module in the linked directory: data.lib.extra.
	write(t, filepath.Join(base, "shared", "extra.rego"), "package lib\n\nextra := \"r3\"\n")
	eventually(t, "the new module in the linked directory to be loaded", func() bool { return reasonOf(t, q) == "r3" })
}
