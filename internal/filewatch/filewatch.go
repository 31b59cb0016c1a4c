// Package filewatch reports changes to files and directories, the way
// configuration is changed in practice: editors that write and rename,
// and Kubernetes ConfigMap volumes that swap a "..data" symlink.
package filewatch

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Debounce collects a burst of events (write, rename, chmod; a ConfigMap
// swap) into one change.
const Debounce = 100 * time.Millisecond

// Watcher watches a set of paths.
type Watcher struct {
	w   *fsnotify.Watcher
	log *slog.Logger
}

// New sets up the watches before it returns, so no change made after it
// returns is missed. Directories are watched recursively; for a file, its
// parent directory is watched, so atomic renames and symlink swaps are seen.
func New(paths []string, log *slog.Logger) (*Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("watch: %w", err)
		}
		if fi.IsDir() {
			err = addTree(w, p)
		} else {
			err = w.Add(filepath.Dir(p))
		}
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("watch %s: %w", p, err)
		}
	}
	return &Watcher{w: w, log: log}, nil
}

// Run calls onChange after each burst of changes until ctx is done, then
// releases the watches and returns nil.
func (fw *Watcher) Run(ctx context.Context, onChange func(context.Context)) error {
	defer fw.w.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) {
				// A new directory (or a ConfigMap's new timestamped one)
				// is watched too.
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					_ = addTree(fw.w, ev.Name)
				}
			}
			if !pending {
				pending = true
				timer.Reset(Debounce)
			}
		case err, ok := <-fw.w.Errors:
			if !ok {
				return nil
			}
			fw.log.Warn("file watch error", "error", err)
		case <-timer.C:
			pending = false
			if ctx.Err() == nil {
				onChange(ctx)
			}
		}
	}
}

// Close releases the watches of a Watcher that will not Run.
func (fw *Watcher) Close() error { return fw.w.Close() }

func addTree(w *fsnotify.Watcher, root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return w.Add(p)
		}
		return nil
	})
}
