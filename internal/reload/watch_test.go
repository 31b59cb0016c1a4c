package reload

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestWatchedBeforeFirstBuild: the directories a build reads through
// symlinks (a ConfigMap's "..data" target) are watched before the first
// build, so Run need not build again at once to catch a change made
// meanwhile.
func TestWatchedBeforeFirstBuild(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "..2026_11_25_a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "..2026_11_25_a", "a.conf"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_11_25_a", filepath.Join(root, "..data")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "a.conf")
	if err := os.Symlink(filepath.Join("..data", "a.conf"), file); err != nil {
		t.Fatal(err)
	}
	r, err := New(context.Background(), Options{
		Component: "test", Paths: []string{root}, Watch: true,
		Build: func(context.Context) (*Built, error) { return &Built{Revision: "1", Files: []string{file}}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.stale {
		t.Errorf("directories were added after the first build; watched: %v", slices.Sorted(func(yield func(string) bool) {
			for d := range r.w.dirs {
				if !yield(d) {
					return
				}
			}
		}))
	}
}
