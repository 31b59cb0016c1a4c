package reload

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Debounce collects a burst of events (write, rename, chmod; a ConfigMap
// swap) into one reload.
const Debounce = 100 * time.Millisecond

// watcher watches the directories that hold a component's files and tells
// which events concern them. It follows symlinks: the directories watched
// are the real ones, and every symlink on the way to a root or a loaded
// file is watched too (in its own directory), so repointing a "current"
// release symlink or swapping a ConfigMap's "..data" is seen.
//
// It is used by one goroutine at a time (New, then Run).
type watcher struct {
	fs    *fsnotify.Watcher
	roots []string               // absolute, as configured
	match func(path string) bool // new files under a directory root that a build would load

	dirs  map[string]os.FileInfo // watched real directories, as they were when watched
	hot   map[string]bool        // real paths whose events concern the component
	trees []string               // real paths of the roots that are directories
}

func newWatcher(paths []string, match func(string) bool) (*watcher, error) {
	roots := make([]string, 0, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("watch %s: %w", p, err)
		}
		roots = append(roots, abs)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	return &watcher{fs: fw, roots: roots, match: match, dirs: map[string]os.FileInfo{}}, nil
}

func (w *watcher) close() error { return w.fs.Close() }

// update re-resolves the roots and files (the layout on disk may have
// changed: a symlink repointed, a directory replaced by rename) and makes
// the watches match: directories not watched yet, or replaced since they
// were, are (re)watched, and those no longer needed are released. It
// reports whether any directory was newly watched.
func (w *watcher) update(files []string) (added bool, err error) {
	dirs := map[string]bool{}
	hot := map[string]bool{}
	var trees []string
	follow := func(p string) string {
		real, links := resolve(p)
		for _, l := range links {
			hot[l] = true
			dirs[filepath.Dir(l)] = true
		}
		hot[real] = true
		dirs[filepath.Dir(real)] = true
		return real
	}
	// Directory trees to walk: the roots that are directories, and the
	// directories that symlinks inside them lead to (the policy loader
	// follows them), each once, so a symlink loop ends.
	var queue []string
	seen := map[string]bool{}
	enqueue := func(real string) {
		if fi, err := os.Stat(real); err == nil && fi.IsDir() && !seen[real] {
			seen[real] = true
			queue = append(queue, real)
		}
	}
	for _, root := range w.roots {
		enqueue(follow(root))
	}
	for len(queue) > 0 {
		tree := queue[0]
		queue = queue[1:]
		trees = append(trees, tree)
		_ = filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
			switch {
			case err != nil:
				return nil // gone meanwhile
			case p != tree && hidden(d.Name()):
				if d.IsDir() {
					return filepath.SkipDir // a ConfigMap's timestamped directory: reached through its files' symlinks
				}
			case d.IsDir():
				dirs[p] = true
			case d.Type()&fs.ModeSymlink != 0:
				// Where it leads (a ConfigMap's "..data/x"), watched before
				// the first build reads it; a directory is walked too.
				real, links := resolve(p)
				for _, l := range links {
					dirs[filepath.Dir(l)] = true
				}
				dirs[filepath.Dir(real)] = true
				enqueue(real)
			}
			return nil
		})
	}
	for _, f := range files {
		if abs, err := filepath.Abs(f); err == nil {
			follow(abs)
		}
	}
	w.hot, w.trees = hot, trees

	// fsnotify drops the watch of a directory that was removed or moved
	// away; one it still has may yet be on a directory since replaced.
	live := map[string]bool{}
	for _, d := range w.fs.WatchList() {
		live[d] = true
	}
	var errs []error
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() {
			if _, ok := w.dirs[d]; ok {
				_ = w.fs.Remove(d)
				delete(w.dirs, d)
			}
			continue // not there (yet): its parent's events say when it is
		}
		if old, ok := w.dirs[d]; ok {
			if live[d] && os.SameFile(old, fi) {
				continue
			}
			// Replaced (mv new dir) or gone meanwhile: watch it again.
			_ = w.fs.Remove(d)
			delete(w.dirs, d)
		}
		if err := w.fs.Add(d); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("watch %s: %w", d, err))
			}
			continue
		}
		w.dirs[d] = fi
		added = true
	}
	for d := range w.dirs {
		if !dirs[d] {
			_ = w.fs.Remove(d) // may be gone already, with its watch
			delete(w.dirs, d)
		}
	}
	return added, errors.Join(errs...)
}

// concerns reports whether ev may change what a build reads: an event on a
// loaded file, on a symlink leading to one or to a root, on a directory
// holding one (renamed, removed), or on a new file or directory under a
// directory root that the component would load. Anything else (a log file
// written next to a routes file) is not.
func (w *watcher) concerns(ev fsnotify.Event) bool {
	name := filepath.Clean(ev.Name)
	if w.hot[name] {
		return true
	}
	for h := range w.hot {
		if strings.HasPrefix(h, name+string(filepath.Separator)) {
			return true
		}
	}
	for _, t := range w.trees {
		rel, ok := strings.CutPrefix(name, t+string(filepath.Separator))
		if !ok || slices.ContainsFunc(strings.Split(rel, string(filepath.Separator)), hidden) {
			continue
		}
		if ev.Has(fsnotify.Create) {
			if fi, err := os.Stat(name); err == nil && fi.IsDir() {
				return true // a new directory: watched on update, its files read by the build
			}
		}
		if w.match != nil && w.match(name) {
			return true
		}
	}
	return false
}

func hidden(name string) bool { return strings.HasPrefix(name, ".") }

// resolve returns the real path of p (an absolute path) and every symlink
// met on the way, each as a path whose directory is real, which is how
// the events of the directory watches name them. A path that does not
// exist resolves as far as it exists.
func resolve(p string) (real string, links []string) {
	sep := string(filepath.Separator)
	real = filepath.VolumeName(p) + sep
	rest := strings.Split(strings.TrimPrefix(p[len(filepath.VolumeName(p)):], sep), sep)
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			real = filepath.Dir(real)
			continue
		}
		next := filepath.Join(real, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return filepath.Join(append([]string{next}, rest...)...), links
		}
		if fi.Mode()&fs.ModeSymlink == 0 || hops >= 40 {
			real = next
			continue
		}
		target, err := os.Readlink(next)
		if err != nil {
			real = next
			continue
		}
		hops++
		links = append(links, next)
		if filepath.IsAbs(target) {
			real = filepath.VolumeName(target) + sep
			target = target[len(filepath.VolumeName(target)):]
		}
		rest = append(strings.Split(target, sep), rest...)
	}
	return real, links
}
