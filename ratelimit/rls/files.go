package rls

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/reload"
	"github.com/tollgate-dev/tollgate/ratelimit/rls/rlsconfig"
)

// FilesOptions configure NewFiles.
type FilesOptions struct {
	// Paths are envoyproxy/ratelimit configuration files (.yaml, .yml) and
	// directories of them.
	Paths []string
	// Watch reloads them when they change, while the Reloader runs.
	Watch bool
	// Logger receives reload results; slog.Default() when nil.
	Logger *slog.Logger
	// Registerer receives tollgate_reloads_total{component="ratelimit"};
	// none when nil.
	Registerer prometheus.Registerer
}

// FilesDetail is what /status shows of the configuration in force.
type FilesDetail struct {
	Domains []string `json:"domains"`
}

// NewFiles loads the configuration files into rls and returns their
// reloader: a broken change keeps the last good configuration, is logged
// with file:line, counted and shown in its Status. The first load must
// succeed.
func NewFiles(ctx context.Context, rls *Server, opts FilesOptions) (*reload.Reloader, error) {
	paths := slices.Clone(opts.Paths)
	return reload.New(ctx, reload.Options{
		Component:  "ratelimit",
		Paths:      paths,
		Match:      isYAML,
		Build:      func(context.Context) (*reload.Built, error) { return buildFiles(rls, paths) },
		Watch:      opts.Watch,
		Logger:     opts.Logger,
		Registerer: opts.Registerer,
	})
}

// buildFiles reads and validates every file; publishing sets the
// configuration of rls.
func buildFiles(rls *Server, paths []string) (*reload.Built, error) {
	files, err := readConfigFiles(paths)
	if err != nil {
		return nil, fmt.Errorf("ratelimit config: %w", err)
	}
	cfg, err := rlsconfig.Load(files)
	if err != nil {
		return nil, fmt.Errorf("ratelimit config: %w", err)
	}
	names := slices.Sorted(maps.Keys(files))
	h := sha256.New()
	for _, name := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(files[name]))
		h.Write(files[name])
	}
	return &reload.Built{
		Revision: hex.EncodeToString(h.Sum(nil))[:16],
		Files:    names,
		Detail:   FilesDetail{Domains: cfg.Domains()},
		Publish: func(context.Context) error {
			rls.SetConfig(cfg)
			return nil
		},
	}, nil
}

func isYAML(path string) bool {
	return strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")
}

// readConfigFiles reads .yaml/.yml files; directories (a symlink to one
// included) are walked, hidden entries (a ConfigMap's "..data" and
// timestamped directories) skipped.
func readConfigFiles(paths []string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, root := range paths {
		fi, err := os.Stat(root)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			if !isYAML(root) {
				return nil, fmt.Errorf("%s: not a .yaml or .yml file", root)
			}
			if files[root], err = os.ReadFile(root); err != nil {
				return nil, err
			}
			continue
		}
		err = fs.WalkDir(os.DirFS(root), ".", func(rel string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if rel != "." && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() || !isYAML(rel) {
				return nil
			}
			p := filepath.Join(root, filepath.FromSlash(rel))
			b, err := os.ReadFile(p) // follows the ConfigMap's file symlinks
			if err != nil {
				return err
			}
			files[p] = b
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", root, err)
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .yaml or .yml file in %s", strings.Join(paths, ", "))
	}
	return files, nil
}
