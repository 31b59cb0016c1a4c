package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/directory"
)

// keyDirectory, when directory.enabled, builds the key directory: its
// store (PostgreSQL, migrated, when postgres is configured; else memory,
// seeded from directory.seed_file) and the Resolver that ext_authz asks,
// which runs among the runners. Call it after shipLedger (which opens
// the pool).
func (a *App) keyDirectory(ctx context.Context, reg prometheus.Registerer) error {
	c := a.cfg.Directory
	if !c.Enabled {
		return nil
	}
	log := a.log.With("component", "directory")
	switch {
	case a.pool != nil:
		if err := directory.Migrate(ctx, a.pool); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		st, err := directory.NewPG(a.pool, directory.PGOptions{KeyPrefix: c.KeyPrefix, Logger: a.log, Registerer: reg})
		if err != nil {
			return err
		}
		a.dirStore = st
		a.runners = append(a.runners, runner{name: "directory idempotency purge", run: func(ctx context.Context) error {
			purgeIdempotency(ctx, st, log)
			return nil
		}})
	case c.SeedFile != "":
		st, err := directory.LoadMemory(c.SeedFile, directory.MemoryOptions{KeyPrefix: c.KeyPrefix})
		if err != nil {
			return fmt.Errorf("directory.seed_file: %w", err)
		}
		a.dirStore = st
	default:
		a.dirStore = directory.NewMemory(directory.MemoryOptions{KeyPrefix: c.KeyPrefix})
	}
	if !a.dirStore.Durable() {
		log.Warn("the key directory is in memory: changes are lost on restart and other replicas do not see them (configure postgres for a shared, durable directory)")
	}
	r, err := directory.NewResolver(a.dirStore, directory.ResolverOptions{
		CacheSize:         c.CacheSize,
		NegativeCacheSize: c.NegativeCacheSize,
		FilterCapacity:    c.FilterCapacity,
		PollInterval:      time.Duration(c.PollInterval),
		LookupTimeout:     time.Duration(c.LookupTimeout),
		Logger:            a.log,
		Registerer:        reg,
	})
	if err != nil {
		return err
	}
	a.resolver = r
	a.runners = append(a.runners, runner{name: "key directory", run: r.Run})
	return nil
}

// Idempotency keys of directory writes are kept idempotencyRetention, and
// the older ones purged every idempotencyPurgeEvery.
const (
	idempotencyRetention  = 7 * 24 * time.Hour
	idempotencyPurgeEvery = time.Hour
)

// purgeIdempotency forgets the directory's old idempotency keys, hourly,
// until ctx is done; a failure is logged and tried again next time.
func purgeIdempotency(ctx context.Context, st *directory.PGStore, log *slog.Logger) {
	t := time.NewTicker(idempotencyPurgeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := st.PurgeIdempotency(ctx, time.Now().Add(-idempotencyRetention)); err != nil && ctx.Err() == nil {
			log.Warn("key directory: cannot purge old idempotency keys; retrying in an hour", "error", err)
		}
	}
}

// directoryStatus is the key directory in /status.
type directoryStatus struct {
	Store   string `json:"store"` // postgres | memory
	Durable bool   `json:"durable"`
	// Ready: the filter of every key hash is loaded (until then /readyz
	// answers 503).
	Ready bool `json:"ready"`
	// Seq is the position in the change log this replica has applied.
	Seq int64 `json:"seq"`
}

func (a *App) directoryStatus() *directoryStatus {
	if a.resolver == nil {
		return nil
	}
	st := &directoryStatus{Store: "memory", Durable: a.dirStore.Durable(), Ready: a.resolver.Ready(), Seq: a.resolver.Seq()}
	if st.Durable {
		st.Store = "postgres"
	}
	return st
}
