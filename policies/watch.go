package policies

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce collects bursts of file events (an editor's write-rename-chmod,
// a ConfigMap's symlink swap) into one reload.
const debounce = 100 * time.Millisecond

// Watcher reloads an Engine's policies when their files change.
type Watcher struct {
	e *Engine
	w *fsnotify.Watcher // nil for embedded policies: nothing to watch
}

// Watch sets up watches on every file and directory under Options.Paths,
// before it returns, so no change made after it returns is missed.
// Directories are watched recursively; for a file its parent directory is
// watched, so atomic renames and Kubernetes ConfigMap symlink swaps are seen.
// Run starts reloading.
func (e *Engine) Watch() (*Watcher, error) {
	if len(e.opts.Paths) == 0 {
		return &Watcher{e: e}, nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("policies: watch: %w", err)
	}
	if err := addWatches(w, e.opts.Paths); err != nil {
		w.Close()
		return nil, err
	}
	return &Watcher{e: e, w: w}, nil
}

// Run reloads the policies on every burst of changes until ctx is done, then
// releases the watches and returns nil.
func (wt *Watcher) Run(ctx context.Context) error {
	if wt.w == nil {
		<-ctx.Done()
		return nil
	}
	defer wt.w.Close()
	e, w := wt.e, wt.w
	var (
		timer   = time.NewTimer(time.Hour)
		pending bool
	)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) {
				// A new directory (or a ConfigMap's new timestamped dir)
				// must be watched too.
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					_ = addTree(w, ev.Name)
				}
			}
			if !pending {
				pending = true
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			e.log.Warn("policy watch error", "error", err)
		case <-timer.C:
			pending = false
			if err := e.Reload(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				e.log.Error("policy reload failed; keeping the last good policy", "error", err, "revision", e.Revision())
				continue
			}
			e.log.Info("policy reloaded", "revision", e.Revision())
		}
	}
}

func addWatches(w *fsnotify.Watcher, paths []string) error {
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("policies: watch: %w", err)
		}
		if fi.IsDir() {
			if err := addTree(w, p); err != nil {
				return err
			}
			continue
		}
		if err := w.Add(filepath.Dir(p)); err != nil {
			return fmt.Errorf("policies: watch %s: %w", filepath.Dir(p), err)
		}
	}
	return nil
}

func addTree(w *fsnotify.Watcher, root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if err := w.Add(p); err != nil {
				return fmt.Errorf("policies: watch %s: %w", p, err)
			}
		}
		return nil
	})
}
