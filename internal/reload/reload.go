// Package reload keeps a component's state in step with its files, the
// one way for every component (policies, rate limit configuration, xDS
// routes): the component builds and validates a new state from its files;
// the reloader publishes it in one step if its content changed, keeps the
// last good state if the build failed (logged, counted, shown on /status),
// and watches the files to do it again when they change — editors that
// write and rename, Kubernetes ConfigMap volumes that swap a "..data"
// symlink, release directories behind a repointed symlink, directories
// replaced by rename. Only changes to the files a build read (or would
// read) cause a reload.
package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Built is a state that a build made and validated, not yet in force.
type Built struct {
	// Revision identifies the content (a hash of it). When it equals the
	// revision in force, nothing is published.
	Revision string
	// Files are the files the build read. Changes to them, to the
	// symlinks leading to them, and to files Options.Match accepts under a
	// directory of Options.Paths cause a reload; other changes do not.
	Files []string
	// Detail is shown as "detail" on /status (policy modules, rate limit
	// domains, xDS fleets).
	Detail any
	// Publish puts the state in force in one step (an atomic swap). If it
	// fails, the previous state stays and the reload counts as a failure.
	Publish func(context.Context) error
}

// Options configure a Reloader.
type Options struct {
	// Component names the component in the metric and the logs: "policy",
	// "ratelimit", "xds".
	Component string
	// Paths are the files and directories to watch; symlinks are followed.
	Paths []string
	// Sources are shown on /status; Paths when nil.
	Sources []string
	// Match tells which files appearing under a directory of Paths the
	// build would load (by name: "*.rego", "*.yaml"). Nil: only the files
	// a build returned.
	Match func(path string) bool
	// Build reads the files and returns the validated state. Errors in
	// files should name file:line.
	Build func(context.Context) (*Built, error)
	// Watch reloads when the files change (when Run runs).
	Watch bool
	// Logger receives reload results; slog.Default() when nil.
	Logger *slog.Logger
	// Registerer receives tollgate_reloads_total; none when nil. Several
	// reloaders may share one.
	Registerer prometheus.Registerer
}

// Result values of tollgate_reloads_total.
const (
	Success   = "success"   // a new revision was published
	Failure   = "failure"   // the build or publish failed; the last good state stays
	Unchanged = "unchanged" // the files built to the revision in force; nothing published
)

// Status is what /status shows about one component's files.
type Status struct {
	Sources    []string  `json:"sources"`               // the configured paths
	Watching   bool      `json:"watching"`              // changes are watched
	WatchError string    `json:"watch_error,omitempty"` // some files could not be watched
	Revision   string    `json:"revision,omitempty"`    // of the state in force
	Files      []string  `json:"files,omitempty"`       // read by the last good build
	LoadedAt   time.Time `json:"loaded_at,omitzero"`    // when the state in force was published
	Reloads    int       `json:"reloads"`               // publishes, the first load included
	Unchanged  int       `json:"unchanged"`             // builds that matched the revision in force
	Failures   int       `json:"failures"`              // failed builds or publishes
	LastError  string    `json:"last_error,omitempty"`  // of the last build, if it failed (file:line)
	FailedAt   time.Time `json:"failed_at,omitzero"`
	Detail     any       `json:"detail,omitempty"` // the component's: policy modules, RLS domains, xDS fleets
}

// Reloader loads one component's files and, when watching, reloads them.
type Reloader struct {
	opts    Options
	log     *slog.Logger
	results map[string]prometheus.Counter

	mu     sync.Mutex // serialises loads; guards status and files
	status Status
	files  []string // read by the build in force

	// republish: a publish failed, so what is in force may not match
	// status.Revision; the next build is published whatever its revision.
	republish bool

	w     *watcher // nil when not watching
	stale bool     // directories were watched after the first build read them
}

// New sets up the watches (when Options.Watch is set) and then loads the
// files, so no change made after New returns is missed. The first load must
// succeed: there is no last good state to keep yet.
func New(ctx context.Context, opts Options) (*Reloader, error) {
	if opts.Build == nil || opts.Component == "" {
		return nil, errors.New("reload: Component and Build are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	results, err := counters(opts.Registerer, opts.Component)
	if err != nil {
		return nil, err
	}
	r := &Reloader{opts: opts, log: opts.Logger, results: results}
	r.status.Sources = slices.Clone(opts.Sources)
	if r.status.Sources == nil {
		r.status.Sources = slices.Clone(opts.Paths)
	}
	if opts.Watch && len(opts.Paths) > 0 {
		if r.w, err = newWatcher(opts.Paths, opts.Match); err != nil {
			return nil, err
		}
		if _, err := r.w.update(nil); err != nil {
			r.w.close()
			return nil, err
		}
		r.status.Watching = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.load(ctx); err != nil {
		r.Close()
		return nil, err
	}
	if r.w != nil {
		// Watch what the build read; a change made there before this
		// could have been missed, so Run looks once more at once.
		if r.stale, err = r.w.update(r.files); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

func counters(reg prometheus.Registerer, component string) (map[string]prometheus.Counter, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_reloads_total",
		Help: "Loads of a component's files (policy, ratelimit, xds) by result: success (published), failure (the last good state stays), unchanged (same revision, nothing published).",
	}, []string{"component", "result"})
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			var are prometheus.AlreadyRegisteredError
			existing, ok := (*prometheus.CounterVec)(nil), false
			if errors.As(err, &are) {
				existing, ok = are.ExistingCollector.(*prometheus.CounterVec)
			}
			if !ok {
				return nil, fmt.Errorf("reload: register metrics: %w", err)
			}
			vec = existing
		}
	}
	m := map[string]prometheus.Counter{}
	for _, res := range []string{Success, Failure, Unchanged} {
		m[res] = vec.WithLabelValues(component, res) // present at 0 from the start
	}
	return m, nil
}

// Reload builds the state again and publishes it if its revision changed.
// On failure the last good state stays in force and the error is returned,
// counted and shown in Status.
func (r *Reloader) Reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.load(ctx)
}

// load builds and publishes; r.mu is held.
func (r *Reloader) load(ctx context.Context) error {
	first := r.status.Reloads == 0
	b, err := r.opts.Build(ctx)
	if err == nil && b == nil {
		err = errors.New("reload: the build returned no state")
	}
	if err == nil && b.Revision != "" && b.Revision == r.status.Revision && !r.republish {
		r.results[Unchanged].Inc()
		r.status.Unchanged++
		r.status.LastError, r.status.FailedAt = "", time.Time{} // the files are good again
		r.files = b.Files
		r.status.Files = slices.Clone(b.Files)
		r.log.Debug("files unchanged; nothing to publish", "revision", b.Revision)
		return nil
	}
	if err == nil && b.Publish != nil {
		if err = b.Publish(ctx); err != nil {
			// A failed publish may have put part of the state in force
			// (xDS: some fleets): the next build publishes even if its
			// revision is the one recorded as in force.
			r.republish = true
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return err // shutting down: not the files' fault
		}
		r.results[Failure].Inc()
		r.status.Failures++
		r.status.LastError = err.Error()
		r.status.FailedAt = time.Now()
		if !first {
			r.log.Error("reload failed; keeping the last good state", "error", err, "revision", r.status.Revision)
		}
		return err
	}
	r.republish = false
	r.results[Success].Inc()
	r.status.Reloads++
	r.status.Revision = b.Revision
	r.status.Files = slices.Clone(b.Files)
	r.status.Detail = b.Detail
	r.status.LoadedAt = time.Now()
	r.status.LastError, r.status.FailedAt = "", time.Time{}
	r.files = b.Files
	if !first {
		r.log.Info("reloaded", "revision", b.Revision, "files", len(b.Files))
	}
	return nil
}

// watchFiles brings the watches in line with the files in force; r.mu is
// held. It reports whether directories were newly watched.
func (r *Reloader) watchFiles() bool {
	added, err := r.w.update(r.files)
	if err != nil {
		r.status.WatchError = err.Error()
		r.log.Warn("cannot watch every file; changes to them may be missed", "error", err)
	} else {
		r.status.WatchError = ""
	}
	return added
}

// Status returns a copy of the current status.
func (r *Reloader) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	s.Sources = slices.Clone(s.Sources)
	s.Files = slices.Clone(s.Files)
	return s
}

// Run reloads after each burst of changes (Debounce) until ctx is done,
// then releases the watches and returns nil. Without watching it only
// waits for ctx.
func (r *Reloader) Run(ctx context.Context) error {
	if r.w == nil {
		<-ctx.Done()
		return nil
	}
	defer r.w.close()
	timer := time.NewTimer(Debounce)
	if !r.stale {
		timer.Stop()
	}
	pending := r.stale
	defer timer.Stop()
	arm := func() {
		if !pending {
			pending = true
			timer.Reset(Debounce)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-r.w.fs.Events:
			if !ok {
				return nil
			}
			if r.w.concerns(ev) {
				arm()
			}
		case err, ok := <-r.w.fs.Errors:
			if !ok {
				return nil
			}
			r.log.Warn("file watch error; looking at the files again", "error", err)
			arm() // events may have been lost
		case <-timer.C:
			pending = false
			if ctx.Err() == nil && r.refresh(ctx) {
				arm()
			}
		}
	}
}

// refresh re-establishes the watches for the layout now on disk, reloads,
// and watches what the new build read. It reports whether it had to watch
// directories the build read before they were watched: a change there
// could have been missed, so the caller looks once more.
func (r *Reloader) refresh(ctx context.Context) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchFiles()
	_ = r.load(ctx) // a failure is logged, counted and kept in status
	return r.watchFiles()
}

// Close releases the watches of a Reloader that will not Run.
func (r *Reloader) Close() error {
	if r.w == nil {
		return nil
	}
	return r.w.close()
}
