package policies

import (
	"context"

	"github.com/tollgate-dev/tollgate/internal/filewatch"
)

// Watcher reloads an Engine's policies when their files change.
type Watcher struct {
	e  *Engine
	fw *filewatch.Watcher // nil for embedded policies: nothing to watch
}

// Watch sets up watches on every file and directory under Options.Paths
// before it returns, so no change made after it returns is missed (see
// filewatch). Run starts reloading.
func (e *Engine) Watch() (*Watcher, error) {
	if len(e.opts.Paths) == 0 {
		return &Watcher{e: e}, nil
	}
	fw, err := filewatch.New(e.opts.Paths, e.log)
	if err != nil {
		return nil, err
	}
	return &Watcher{e: e, fw: fw}, nil
}

// Run reloads the policies on every burst of changes until ctx is done.
// A failed reload keeps the last good policy (see Engine.Reload).
func (w *Watcher) Run(ctx context.Context) error {
	if w.fw == nil {
		<-ctx.Done()
		return nil
	}
	return w.fw.Run(ctx, func(ctx context.Context) {
		if err := w.e.Reload(ctx); err != nil {
			if ctx.Err() == nil {
				w.e.log.Error("policy reload failed; keeping the last good policy", "error", err, "revision", w.e.Revision())
			}
			return
		}
		w.e.log.Info("policy reloaded", "revision", w.e.Revision())
	})
}

// Close releases the watches of a Watcher that will not Run.
func (w *Watcher) Close() error {
	if w.fw == nil {
		return nil
	}
	return w.fw.Close()
}
