package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ResolverOptions configure a Resolver.
type ResolverOptions struct {
	// CacheSize bounds the resolved keys kept (default 100,000).
	CacheSize int
	// NegativeCacheSize bounds the unknown, expired or revoked key
	// hashes kept apart from them (default 10,000): the filter's false
	// positives and dead keys asked for again do not query the store
	// again, and never take the place of a good key.
	NegativeCacheSize int
	// FilterCapacity is the fewest keys the membership filter is sized
	// for (default 100,000): it is built for twice the active keys when
	// there are more, and rebuilt so when it holds more than it was built
	// for.
	FilterCapacity int
	// FalsePositiveRate is the filter's (default 0.01): the share of
	// random unknown keys that reach the store.
	FalsePositiveRate float64
	// PollInterval: the change log is read at least this often, even
	// without a notification (default 30s).
	PollInterval time.Duration
	// TouchInterval: every this often, the keys resolved since are
	// recorded as used (Key.LastUsedAt; default 1m; negative: never).
	TouchInterval time.Duration
	// LookupTimeout bounds one store lookup (default 1s).
	LookupTimeout time.Duration
	// DownFor: after a lookup fails for a reason other than the caller's
	// context, keys that are not cached are refused without asking the
	// store for this long (default 1s), so an outage costs no latency.
	DownFor time.Duration
	Logger  *slog.Logger
	// Registerer receives the resolver's metrics; none when nil.
	Registerer prometheus.Registerer
}

// Lookup results, the values of the result label of
// tollgate_directory_lookups_total.
const (
	ResultHit      = "hit"       // resolved from the cache
	ResultMiss     = "miss"      // not cached, resolved from the store
	ResultFiltered = "filtered"  // refused by the filter: no such key, no store query
	ResultNotFound = "not_found" // no such key, or expired or revoked
	ResultDBError  = "db_error"  // not cached and the store did not answer: refused
)

var results = [...]string{ResultHit, ResultMiss, ResultFiltered, ResultNotFound, ResultDBError}

const (
	iHit = iota
	iMiss
	iFiltered
	iNotFound
	iDBError
)

// negative marks a hash in the negative cache.
var negative = &Resolved{}

// Resolver turns presented credentials into consumers. At steady state a
// Resolve makes no store round trip: resolved keys are cached (bounded,
// clock eviction), a membership filter of every active key hash refuses
// unknown keys, and only the filter's false positives and cache misses of
// real keys reach the store. Run follows the store's change log, so a
// change made on any replica is applied here within about a second.
//
// What a credential resolves to:
//   - an active key of an active or suspended consumer: the consumer
//     (with its status: the policy answers a suspended one with 402 or
//     403) and the key;
//   - an unknown, expired or revoked key: nothing (the caller answers
//     401, as for no credential);
//   - when the store does not answer: a cached key still resolves; any
//     other is refused and counted as db_error (fail closed).
//
// A key created on another replica resolves here once its change is
// applied (under a second): until then the filter refuses it. Expiry is
// checked on each Resolve against this replica's clock (expiry times are
// the database's). While the store is down no change arrives: cached keys
// resolve as they were last seen, and every change made meanwhile is
// replayed when it is back.
//
// Run owns the resolver's goroutines (the change listener and the writer
// of keys' last use) and returns when its context is done, after them:
// there is no Close.
type Resolver struct {
	store     Store
	opts      ResolverOptions
	filter    atomic.Pointer[filter]
	pos, neg  *cache
	gen       atomic.Uint64 // bumped before each batch of changes is applied
	seq       atomic.Int64  // the last change applied
	ready     atomic.Bool
	downUntil atomic.Int64 // unix ns

	lookups  [len(results)]prometheus.Counter
	applied  prometheus.Counter
	failures prometheus.Counter
}

// NewResolver returns a Resolver over store; Run loads it and keeps it
// current.
func NewResolver(store Store, opts ResolverOptions) (*Resolver, error) {
	if opts.CacheSize <= 0 {
		opts.CacheSize = 100_000
	}
	if opts.NegativeCacheSize <= 0 {
		opts.NegativeCacheSize = 10_000
	}
	if opts.FilterCapacity <= 0 {
		opts.FilterCapacity = 100_000
	}
	if opts.FalsePositiveRate == 0 {
		opts.FalsePositiveRate = 0.01
	}
	if opts.FalsePositiveRate < 1e-9 || opts.FalsePositiveRate > 0.5 {
		return nil, fmt.Errorf("directory: false_positive_rate %g: want between 1e-9 and 0.5", opts.FalsePositiveRate)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 30 * time.Second
	}
	if opts.TouchInterval == 0 {
		opts.TouchInterval = time.Minute
	}
	if opts.LookupTimeout <= 0 {
		opts.LookupTimeout = time.Second
	}
	if opts.DownFor <= 0 {
		opts.DownFor = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Logger = opts.Logger.With("component", "directory")
	r := &Resolver{store: store, opts: opts,
		pos: newCache(opts.CacheSize, 64),
		neg: newCache(opts.NegativeCacheSize, 16),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_directory_changes_applied_total",
			Help: "Directory changes (consumers, keys) applied to this replica's cache and filter.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_directory_sync_failures_total",
			Help: "Failed reads of the directory's change log or key hashes (retried), and failed writes of keys' last use.",
		}),
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_directory_lookups_total",
		Help: "Credentials resolved, by result: hit (cache), miss (store), filtered (unknown, refused by the filter without a store query), not_found (unknown, expired or revoked), db_error (not cached and the store did not answer: refused).",
	}, []string{"result"})
	for i, res := range results {
		r.lookups[i] = vec.WithLabelValues(res)
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{vec, r.applied, r.failures,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "tollgate_directory_cache_entries",
				Help: "Resolved keys in this replica's cache.",
			}, func() float64 { return float64(r.pos.len()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "tollgate_directory_filter_capacity",
				Help: "Keys the membership filter is sized for (rebuilt for twice as many when exceeded).",
			}, func() float64 {
				if f := r.filter.Load(); f != nil {
					return float64(f.capacity)
				}
				return 0
			}),
		} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// Ready reports whether the filter is loaded (Run got the key hashes
// once): until then Resolve asks the store for every key not cached.
func (r *Resolver) Ready() bool { return r.ready.Load() }

// Seq is the position in the change log this replica has applied.
func (r *Resolver) Seq() int64 { return r.seq.Load() }

// Resolve returns what credential resolves to, or false for an unknown,
// expired or revoked key, or when the store does not answer for a key
// not cached. The result is shared: do not modify it.
func (r *Resolver) Resolve(ctx context.Context, credential string) (*Resolved, bool) {
	h := Hash(credential)
	return r.ResolveHash(ctx, &h)
}

// ResolveHash is Resolve for a hash computed already.
func (r *Resolver) ResolveHash(ctx context.Context, h *[32]byte) (*Resolved, bool) {
	if v, ok := r.pos.get(h); ok {
		// Revoked keys are not cached; the clock is read only for a key
		// that expires.
		if v.Key.ExpiresAt == nil || v.Key.Active(time.Now()) {
			r.lookups[iHit].Inc()
			return v, true
		}
		r.pos.remove(h) // expired since it was cached
		r.lookups[iNotFound].Inc()
		return nil, false
	}
	if f := r.filter.Load(); f != nil && !f.has(h) {
		r.lookups[iFiltered].Inc()
		return nil, false
	}
	if _, ok := r.neg.get(h); ok {
		r.lookups[iNotFound].Inc()
		return nil, false
	}
	now := time.Now()
	if now.UnixNano() < r.downUntil.Load() {
		r.lookups[iDBError].Inc()
		return nil, false
	}
	gen := r.gen.Load()
	keep := func() bool { return r.gen.Load() == gen } // no change applied meanwhile
	lctx, cancel := context.WithTimeout(ctx, r.opts.LookupTimeout)
	c, k, err := r.store.LookupHash(lctx, *h)
	cancel()
	switch {
	case errors.Is(err, ErrNotFound):
		r.neg.put(*h, negative, keep)
		r.lookups[iNotFound].Inc()
		return nil, false
	case err != nil:
		if ctx.Err() == nil {
			if r.downUntil.Swap(time.Now().Add(r.opts.DownFor).UnixNano()) < now.UnixNano() {
				r.opts.Logger.Warn("key directory lookup failed: keys not cached are refused", "error", err, "retry_in", r.opts.DownFor)
			}
		}
		r.lookups[iDBError].Inc()
		return nil, false
	case !k.Active(now):
		r.neg.put(*h, negative, keep)
		r.lookups[iNotFound].Inc()
		return nil, false
	}
	v := &Resolved{Consumer: c, Key: k}
	r.pos.put(*h, v, keep)
	r.lookups[iMiss].Inc()
	return v, true
}

// Run loads the filter (retrying until the store answers), then applies
// every change of the store's change log, and records which keys were
// used, until ctx is done.
func (r *Resolver) Run(ctx context.Context) error {
	if r.opts.TouchInterval > 0 {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			r.recordUse(ctx)
		}()
	}
	return r.follow(ctx)
}

// maxTouch bounds the keys one write records as used.
const maxTouch = 10_000

// recordUse writes, every TouchInterval and once more when ctx is done,
// which keys were resolved since the last time.
func (r *Resolver) recordUse(ctx context.Context) {
	t := time.NewTicker(r.opts.TouchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.flushUse(context.WithoutCancel(ctx))
			return
		case <-t.C:
			r.flushUse(ctx)
		}
	}
}

func (r *Resolver) flushUse(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	now := time.Now()
	for {
		ids := r.pos.takeTouched(maxTouch)
		if len(ids) == 0 {
			return
		}
		if err := r.store.TouchKeys(ctx, ids, now); err != nil {
			r.failures.Inc()
			r.opts.Logger.Warn("key directory: cannot record keys used (last_used_at stays older)", "error", err, "keys", len(ids))
			return
		}
		if len(ids) < maxTouch {
			return
		}
	}
}

// follow loads the filter, then applies the change log until ctx is done.
func (r *Resolver) follow(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for !r.ready.Load() {
		err := r.load(ctx)
		if err == nil {
			break
		}
		r.failures.Inc()
		r.opts.Logger.Warn("key directory: cannot load the key hashes; retrying", "error", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return r.store.Watch(ctx, r.opts.PollInterval, r.sync)
}

// load builds the filter from every active key hash: sized for
// FilterCapacity, or for twice the keys found when there are more.
func (r *Resolver) load(ctx context.Context) error {
	f, seq, err := r.rebuild(ctx)
	if err != nil {
		return err
	}
	r.filter.Store(f)
	r.seq.Store(seq)
	r.ready.Store(true)
	r.opts.Logger.Info("key directory loaded", "keys", f.count.Load(), "filter_bytes", f.bytes(), "seq", seq)
	return nil
}

// rebuild returns a new filter of every active key hash, sized for
// FilterCapacity or twice the keys, whichever is more.
func (r *Resolver) rebuild(ctx context.Context) (*filter, int64, error) {
	var f *filter
	seq, err := r.store.AllHashes(ctx, func(n int) {
		f = newFilter(max(r.opts.FilterCapacity, 2*n), r.opts.FalsePositiveRate)
	}, func(h [32]byte) { f.add(h) })
	return f, seq, err
}

// changeBatch is how many changes one read of the log takes.
const changeBatch = 1000

// sync applies the changes after the last one applied. It runs on Watch's
// goroutine only. A failed read is tried again three times, 100ms, 200ms
// and 400ms later, then at the next call (a notification, a reconnection
// or the poll).
func (r *Resolver) sync(ctx context.Context) {
	for failed := 0; ; {
		changes, err := r.store.ChangesSince(ctx, r.seq.Load(), changeBatch)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.failures.Inc()
			r.opts.Logger.Warn("key directory: cannot read changes", "error", err, "seq", r.seq.Load())
			if failed++; failed > 3 {
				return
			}
			t := time.NewTimer(50 * time.Millisecond << failed)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			continue
		}
		failed = 0
		if len(changes) == 0 {
			return
		}
		r.apply(changes)
		if f := r.filter.Load(); f.full() {
			nf, _, err := r.rebuild(ctx)
			if err != nil {
				r.failures.Inc()
				r.opts.Logger.Warn("key directory: cannot rebuild the filter; keeping the old one", "error", err)
			} else {
				// Changes after the rebuild's snapshot are applied to it
				// again by the next reads: adding is idempotent.
				r.filter.Store(nf)
				r.opts.Logger.Info("key directory filter rebuilt", "capacity", nf.capacity, "filter_bytes", nf.bytes())
			}
		}
		if len(changes) < changeBatch {
			return
		}
	}
}

// apply applies changes, each with the current state of what it changed,
// to the filter and caches.
func (r *Resolver) apply(changes []Change) {
	r.gen.Add(1) // lookups under way do not cache what they read
	now := time.Now()
	f := r.filter.Load()
	consumers := map[string]*Consumer{}
	for _, ch := range changes {
		if ch.Key == nil {
			consumers[ch.Consumer.ID] = ch.Consumer
			continue
		}
		h := ch.Key.Hash
		r.neg.remove(&h)
		if ch.Key.Active(now) {
			f.add(h)
			r.pos.replace(h, &Resolved{Consumer: *ch.Consumer, Key: *ch.Key})
		} else {
			r.pos.remove(&h)
		}
	}
	if len(consumers) > 0 {
		r.pos.update(func(v *Resolved) *Resolved {
			if c, ok := consumers[v.Consumer.ID]; ok {
				return &Resolved{Consumer: *c, Key: v.Key}
			}
			return nil
		})
	}
	r.seq.Store(changes[len(changes)-1].Seq)
	r.applied.Add(float64(len(changes)))
}
