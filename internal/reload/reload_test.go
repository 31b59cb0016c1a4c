package reload_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/reload"
	"github.com/tollgate-dev/tollgate/internal/reload/reloadtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// confs is a component that loads every *.conf file of its paths (files or
// directories, hidden entries skipped, as the real components do) and
// publishes their concatenated contents. A file holding "bad" fails the
// build with file:line.
type confs struct {
	paths     []string
	current   atomic.Pointer[string]
	publishes atomic.Int64
}

func isConf(p string) bool { return strings.HasSuffix(p, ".conf") }

func (c *confs) build(context.Context) (*reload.Built, error) {
	var files []string
	for _, root := range c.paths {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p != root && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if p == root && d.Type()&os.ModeSymlink != 0 {
				// A symlinked root: walk what it points at, under its name.
				fi, err := os.Stat(p)
				if err != nil {
					return err
				}
				if fi.IsDir() {
					entries, err := os.ReadDir(p)
					if err != nil {
						return err
					}
					for _, e := range entries {
						if !strings.HasPrefix(e.Name(), ".") && isConf(e.Name()) {
							files = append(files, filepath.Join(p, e.Name()))
						}
					}
					return nil
				}
			}
			if !d.IsDir() && isConf(p) {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.Sort(files)
	var all strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if strings.Contains(string(b), "bad") {
			return nil, errors.New(f + ":1: bad content")
		}
		all.Write(b)
	}
	content := all.String()
	sum := sha256.Sum256([]byte(content))
	return &reload.Built{
		Revision: hex.EncodeToString(sum[:8]),
		Files:    files,
		Detail:   map[string]int{"files": len(files)},
		Publish: func(context.Context) error {
			c.current.Store(&content)
			c.publishes.Add(1)
			return nil
		},
	}, nil
}

func (c *confs) content() string { return *c.current.Load() }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start loads paths with watching on and runs the reloader until the test
// ends.
func start(t *testing.T, reg prometheus.Registerer, paths ...string) (*reload.Reloader, *confs) {
	t.Helper()
	c := &confs{paths: paths}
	r, err := reload.New(context.Background(), reload.Options{
		Component: "test", Paths: paths, Match: isConf, Build: c.build,
		Watch: true, Logger: quiet(), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	return r, c
}

// startDir watches a new directory holding a.conf with content.
func startDir(t *testing.T, content string) (string, *reload.Reloader, *confs) {
	t.Helper()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.conf"), content)
	r, c := start(t, nil, dir)
	return dir, r, c
}

// write replaces path's content the way editors and kubectl do: write a
// temporary file, rename it over the old one.
func write(t *testing.T, path, content string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	must(t, os.WriteFile(tmp, []byte(content), 0o644))
	must(t, os.Rename(tmp, path))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// reloadsTo waits until the published content is want and the status says
// so without an error.
func reloadsTo(t *testing.T, r *reload.Reloader, c *confs, want string) {
	t.Helper()
	reloadtest.WaitFor(t, "content "+want, func() bool { return c.content() == want })
	if st := r.Status(); st.LastError != "" {
		t.Errorf("status after loading %q: last_error %q", want, st.LastError)
	}
}

func TestFirstLoadMustSucceed(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.conf"), "bad")
	c := &confs{paths: []string{dir}}
	_, err := reload.New(context.Background(), reload.Options{Component: "test", Paths: c.paths, Build: c.build, Watch: true})
	if err == nil || !strings.Contains(err.Error(), "a.conf:1") {
		t.Fatalf("New error = %v, want the build's error with file:line", err)
	}
	// goleak (TestMain) checks that the watches were released.
}

// TestReloadResults: a failure keeps the last good state, an unchanged
// revision publishes nothing, and tollgate_reloads_total counts each
// result per component, every series present at 0 from the start.
func TestReloadResults(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a.conf")
	write(t, file, "v1")
	reg := prometheus.NewPedanticRegistry()
	c := &confs{paths: []string{dir}}
	r, err := reload.New(context.Background(), reload.Options{Component: "test", Paths: c.paths, Build: c.build, Logger: quiet(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// A second component shares the metric.
	other := &confs{paths: []string{dir}}
	if _, err := reload.New(context.Background(), reload.Options{Component: "other", Paths: other.paths, Build: other.build, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"test/success": 1, "test/failure": 0, "test/unchanged": 0,
		"other/success": 1, "other/failure": 0, "other/unchanged": 0,
	}
	checkMetric(t, reg, want)

	write(t, file, "bad")
	if err := r.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "a.conf:1") {
		t.Fatalf("Reload error = %v, want one naming a.conf:1", err)
	}
	st := r.Status()
	if c.content() != "v1" || st.Failures != 1 || !strings.Contains(st.LastError, "a.conf:1") || st.FailedAt.IsZero() || st.Reloads != 1 {
		t.Errorf("after a failed reload: content %q, status %+v; want v1 kept and the failure recorded", c.content(), st)
	}
	rev1 := st.Revision

	write(t, file, "v1") // back to what is in force
	if err := r.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = r.Status()
	if c.publishes.Load() != 1 || st.Unchanged != 1 || st.Reloads != 1 || st.LastError != "" || !st.FailedAt.IsZero() || st.Revision != rev1 {
		t.Errorf("after an unchanged reload: %d publishes, status %+v; want nothing published, unchanged 1, error cleared", c.publishes.Load(), st)
	}

	write(t, file, "v2")
	if err := r.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = r.Status()
	if c.content() != "v2" || st.Reloads != 2 || st.Revision == rev1 || st.LoadedAt.IsZero() {
		t.Errorf("after a good reload: content %q, status %+v", c.content(), st)
	}
	if !slices.Equal(st.Files, []string{file}) || st.Detail == nil || st.Watching {
		t.Errorf("status files %v detail %v watching %v, want [%s], a detail, not watching", st.Files, st.Detail, st.Watching, file)
	}
	want["test/success"], want["test/failure"], want["test/unchanged"] = 2, 1, 1
	checkMetric(t, reg, want)
}

func checkMetric(t *testing.T, reg *prometheus.Registry, want map[string]float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "tollgate_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["component"]+"/"+labels["result"]] = m.GetCounter().GetValue()
		}
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("tollgate_reloads_total %s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

func TestRunWithoutWatching(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.conf"), "v1")
	c := &confs{paths: []string{dir}}
	r, err := reload.New(context.Background(), reload.Options{Component: "test", Paths: c.paths, Build: c.build})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Errorf("Run = %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

// TestCloseWithoutRun: a watching reloader that never runs releases its
// watches on Close (goleak checks).
func TestCloseWithoutRun(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.conf"), "v1")
	c := &confs{paths: []string{dir}}
	r, err := reload.New(context.Background(), reload.Options{Component: "test", Paths: c.paths, Build: c.build, Watch: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

// TestWatchEdits: edits, new files and removed files in a watched
// directory are loaded; a broken edit keeps the last good state.
func TestWatchEdits(t *testing.T) {
	dir, r, c := startDir(t, "a1")

	write(t, filepath.Join(dir, "a.conf"), "a2")
	reloadsTo(t, r, c, "a2")

	write(t, filepath.Join(dir, "b.conf"), "b1")
	reloadsTo(t, r, c, "a2b1")

	write(t, filepath.Join(dir, "sub", "c.conf"), "c1")
	reloadsTo(t, r, c, "a2b1c1")

	write(t, filepath.Join(dir, "b.conf"), "bad")
	reloadtest.WaitFor(t, "the broken edit to be refused", func() bool { return r.Status().Failures == 1 })
	if got := c.content(); got != "a2b1c1" {
		t.Errorf("after a broken edit the content is %q, want the last good a2b1c1", got)
	}
	if st := r.Status(); !strings.Contains(st.LastError, "b.conf:1") {
		t.Errorf("last_error %q, want file:line", st.LastError)
	}

	must(t, os.Remove(filepath.Join(dir, "b.conf")))
	reloadsTo(t, r, c, "a2c1")
}

// TestWatchConfigMapSwap mimics a Kubernetes ConfigMap volume: the files are
// symlinks through "..data", which kubelet swaps to a new directory.
func TestWatchConfigMapSwap(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "..2026_11_25_a", "a.conf"), "cm1")
	must(t, os.Symlink("..2026_11_25_a", filepath.Join(root, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "a.conf"), filepath.Join(root, "a.conf")))
	r, c := start(t, nil, root)

	for i, v := range []string{"cm2", "cm3"} {
		dir := "..2026_11_25_" + string(rune('b'+i))
		write(t, filepath.Join(root, dir, "a.conf"), v)
		must(t, os.Symlink(dir, filepath.Join(root, "..data_tmp")))
		must(t, os.Rename(filepath.Join(root, "..data_tmp"), filepath.Join(root, "..data")))
		must(t, os.RemoveAll(filepath.Join(root, "..2026_11_25_"+string(rune('a'+i)))))
		reloadsTo(t, r, c, v)
	}
	if st := r.Status(); st.Failures != 0 || st.Reloads != 3 {
		t.Errorf("status %+v, want 3 loads and no failure", st)
	}
}

// TestWatchSymlinkedRoot: a configured path that is a symlink to a
// directory (current -> releases/v1) is followed: edits in the release are
// loaded, and so is the symlink being repointed, by ln -sfn (remove and
// create) or by renaming a new symlink over it.
func TestWatchSymlinkedRoot(t *testing.T) {
	base := t.TempDir()
	for _, v := range []string{"v1", "v2", "v3"} {
		write(t, filepath.Join(base, "releases", v, "a.conf"), v)
	}
	current := filepath.Join(base, "current")
	must(t, os.Symlink(filepath.Join("releases", "v1"), current))
	r, c := start(t, nil, current)
	if st := r.Status(); !st.Watching || st.WatchError != "" {
		t.Fatalf("status %+v, want watching without error", st)
	}

	write(t, filepath.Join(base, "releases", "v1", "a.conf"), "v1-edited")
	reloadsTo(t, r, c, "v1-edited")

	// ln -sfn releases/v2 current
	must(t, os.Remove(current))
	must(t, os.Symlink(filepath.Join("releases", "v2"), current))
	reloadsTo(t, r, c, "v2")

	write(t, filepath.Join(base, "releases", "v2", "a.conf"), "v2-edited")
	reloadsTo(t, r, c, "v2-edited")

	// An atomic switch: a new symlink renamed over the old one.
	must(t, os.Symlink(filepath.Join("releases", "v3"), current+".new"))
	must(t, os.Rename(current+".new", current))
	reloadsTo(t, r, c, "v3")

	write(t, filepath.Join(base, "releases", "v3", "b.conf"), "-more")
	reloadsTo(t, r, c, "v3-more")

	// The old release is no longer what is loaded: its edits change nothing.
	before := r.Status()
	reloadtest.WriteUnrelated(t, 3, filepath.Join(base, "releases", "v1", "a.conf"))
	write(t, filepath.Join(base, "releases", "v3", "a.conf"), "v3b")
	reloadsTo(t, r, c, "v3b-more")
	reloadtest.OneReload(t, before, r.Status())
}

// TestWatchDirectoryReplaced: the watched directory is replaced by rename
// (mv conf conf.old; mv new conf); the new one is loaded and its later
// edits too, again after a second replacement.
func TestWatchDirectoryReplaced(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "conf")
	write(t, filepath.Join(dir, "a.conf"), "r1")
	r, c := start(t, nil, dir)

	for i, v := range []string{"r2", "r3"} {
		next := filepath.Join(base, "next")
		write(t, filepath.Join(next, "a.conf"), v)
		old := filepath.Join(base, "old"+string(rune('0'+i)))
		must(t, os.Rename(dir, old))
		must(t, os.Rename(next, dir))
		reloadsTo(t, r, c, v)

		write(t, filepath.Join(dir, "a.conf"), v+"-edited")
		reloadsTo(t, r, c, v+"-edited")
		write(t, filepath.Join(dir, "sub", "b.conf"), "+sub")
		reloadsTo(t, r, c, v+"-edited+sub")

		// The old directory is not loaded any more.
		write(t, filepath.Join(old, "a.conf"), "stale")
	}
	// Replaced by a directory that was removed first (rm -r; mv).
	next := filepath.Join(base, "next")
	write(t, filepath.Join(next, "a.conf"), "r4")
	must(t, os.RemoveAll(dir))
	must(t, os.Rename(next, dir))
	reloadsTo(t, r, c, "r4")
	write(t, filepath.Join(dir, "a.conf"), "r4-edited")
	reloadsTo(t, r, c, "r4-edited")

	// Removed and made again in place (rm -r; mkdir): it may get the same
	// inode number, but the old watch went with the old directory.
	must(t, os.RemoveAll(dir))
	write(t, filepath.Join(dir, "a.conf"), "r5")
	reloadsTo(t, r, c, "r5")
	write(t, filepath.Join(dir, "a.conf"), "r5-edited")
	reloadsTo(t, r, c, "r5-edited")
}

// TestWatchIgnoresUnrelatedFiles: files written next to the configuration
// (a log file beside a routes file, notes in a policy directory, an
// editor's swap file) cause no reload. To prove the negative without
// sleeping, the unrelated writes come first, each round waited for by a
// control reloader watching them, then one real change: once that is
// loaded, exactly one build happened.
func TestWatchIgnoresUnrelatedFiles(t *testing.T) {
	for _, tt := range []struct {
		name      string
		root      func(dir string) string // the configured path
		unrelated []string
	}{
		{name: "file root", root: func(dir string) string { return filepath.Join(dir, "a.conf") },
			unrelated: []string{"app.log", "b.conf", "a.conf.swp"}},
		{name: "directory root", root: func(dir string) string { return dir },
			unrelated: []string{"app.log", "notes.txt", ".a.conf.swp", filepath.Join(".git", "index")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "a.conf"), "v1")
			r, c := start(t, nil, tt.root(dir))
			before := r.Status()

			var unrelated []string
			for _, name := range tt.unrelated {
				unrelated = append(unrelated, filepath.Join(dir, name))
			}
			reloadtest.WriteUnrelated(t, 5, unrelated...)
			write(t, filepath.Join(dir, "a.conf"), "v2")
			reloadsTo(t, r, c, "v2")

			reloadtest.OneReload(t, before, r.Status())
			if n := c.publishes.Load(); n != 2 {
				t.Errorf("%d publishes, want 2 (the first load and the change)", n)
			}
		})
	}
}

// TestWatchUnchangedContent: rewriting a file with the same content builds
// but publishes nothing.
func TestWatchUnchangedContent(t *testing.T) {
	dir, r, c := startDir(t, "same")
	write(t, filepath.Join(dir, "a.conf"), "same")
	reloadtest.WaitFor(t, "the rewrite to be looked at", func() bool { return r.Status().Unchanged >= 1 })
	if n := c.publishes.Load(); n != 1 {
		t.Errorf("%d publishes, want only the first", n)
	}
}

// TestReloadConcurrentWithRun: explicit reloads while the watcher reloads
// are serialised (run with -race).
func TestReloadConcurrentWithRun(t *testing.T) {
	dir, r, c := startDir(t, "v0")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			_ = r.Reload(context.Background())
			_ = r.Status()
		}
	}()
	write(t, filepath.Join(dir, "a.conf"), "v1")
	wg.Wait()
	reloadsTo(t, r, c, "v1")
}

// TestFailedPublishRepublishes: a publish that fails may have put part of
// the new state in force (xDS: some fleets), so the next build is published
// even when its revision equals the one recorded as in force.
func TestFailedPublishRepublishes(t *testing.T) {
	var publishes, fail atomic.Int64
	var rev atomic.Pointer[string]
	setRev := func(s string) { rev.Store(&s) }
	setRev("r1")
	build := func(context.Context) (*reload.Built, error) {
		return &reload.Built{Revision: *rev.Load(), Publish: func(context.Context) error {
			publishes.Add(1)
			if fail.Load() != 0 {
				return errors.New("partly published")
			}
			return nil
		}}, nil
	}
	r, err := reload.New(context.Background(), reload.Options{Component: "test", Build: build, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(context.Background()); err != nil || publishes.Load() != 1 || r.Status().Unchanged != 1 {
		t.Fatalf("same revision: %v, %d publishes, status %+v; want it skipped", err, publishes.Load(), r.Status())
	}
	setRev("r2")
	fail.Store(1)
	if err := r.Reload(context.Background()); err == nil || publishes.Load() != 2 || r.Status().Revision != "r1" {
		t.Fatalf("failing publish of r2: %v, %d publishes, status %+v", err, publishes.Load(), r.Status())
	}
	setRev("r1") // the files are back to what the status says is in force
	fail.Store(0)
	if err := r.Reload(context.Background()); err != nil || publishes.Load() != 3 {
		t.Fatalf("after a failed publish: %v, %d publishes; want r1 published again", err, publishes.Load())
	}
	if err := r.Reload(context.Background()); err != nil || publishes.Load() != 3 {
		t.Fatalf("after the republish: %v, %d publishes; want the unchanged revision skipped again", err, publishes.Load())
	}
}
