package rls

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/filewatch"
	"github.com/tollgate-dev/tollgate/ratelimit/rls/rlsconfig"
)

// Files loads envoyproxy/ratelimit configuration files (.yaml, .yml)
// from files and directories into an RLS, and reloads them when they
// change. A broken change keeps the last good configuration, is logged
// with file:line, counted and shown in Status.
type Files struct {
	rls     *Server
	paths   []string
	log     *slog.Logger
	reloads *prometheus.CounterVec

	mu     sync.Mutex
	status FilesStatus
}

// FilesStatus is shown on the admin /status endpoint.
type FilesStatus struct {
	Paths     []string  `json:"paths"`
	Files     []string  `json:"files,omitempty"`
	Domains   []string  `json:"domains,omitempty"`
	LoadedAt  time.Time `json:"loaded_at,omitzero"`
	Reloads   int       `json:"reloads"`
	Failures  int       `json:"failures"`
	LastError string    `json:"last_error,omitempty"`
}

// NewFiles loads paths into rls; the first load must succeed.
func NewFiles(rls *Server, paths []string, log *slog.Logger, reg prometheus.Registerer) (*Files, error) {
	if log == nil {
		log = slog.Default()
	}
	f := &Files{rls: rls, paths: slices.Clone(paths), log: log,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_ratelimit_config_reloads_total",
			Help: "Rate limit configuration loads by result (success or failure). A failure keeps the last good configuration.",
		}, []string{"result"}),
	}
	f.status.Paths = f.paths
	if reg != nil {
		if err := reg.Register(f.reloads); err != nil {
			return nil, err
		}
	}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload reads every file again and publishes the result only if all of
// it is valid.
func (f *Files) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	files, err := readConfigFiles(f.paths)
	var cfg *rlsconfig.Config
	if err == nil {
		cfg, err = rlsconfig.Load(files)
	}
	if err != nil {
		f.reloads.WithLabelValues("failure").Inc()
		f.status.Failures++
		f.status.LastError = err.Error()
		return fmt.Errorf("ratelimit config: %w", err)
	}
	f.rls.SetConfig(cfg)
	f.reloads.WithLabelValues("success").Inc()
	f.status.Reloads++
	f.status.LastError = ""
	f.status.LoadedAt = time.Now()
	f.status.Files = slices.Sorted(func(yield func(string) bool) {
		for name := range files {
			if !yield(name) {
				return
			}
		}
	})
	f.status.Domains = cfg.Domains()
	return nil
}

// Status returns a copy of the current status.
func (f *Files) Status() FilesStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status
	s.Files = slices.Clone(s.Files)
	s.Domains = slices.Clone(s.Domains)
	return s
}

// Watch sets up watches on the paths (before it returns); the returned
// watcher reloads on every change while it runs.
func (f *Files) Watch() (*filewatch.Watcher, func(context.Context), error) {
	w, err := filewatch.New(f.paths, f.log)
	if err != nil {
		return nil, nil, err
	}
	return w, func(context.Context) {
		if err := f.Reload(); err != nil {
			f.log.Error("rate limit config reload failed; keeping the last good configuration", "error", err)
			return
		}
		f.log.Info("rate limit config reloaded", "domains", f.Status().Domains)
	}, nil
}

// readConfigFiles reads .yaml/.yml files; directories are walked, hidden
// entries (a ConfigMap's "..data" and timestamped directories) skipped.
func readConfigFiles(paths []string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p != root && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
				if p == root && !d.IsDir() {
					return fmt.Errorf("%s: not a .yaml or .yml file", p)
				}
				return nil
			}
			b, err := os.ReadFile(p) // follows the ConfigMap's file symlinks
			if err != nil {
				return err
			}
			files[p] = b
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .yaml or .yml file in %s", strings.Join(paths, ", "))
	}
	return files, nil
}
