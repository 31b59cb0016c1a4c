package directory_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/directory"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
)

// startResolver runs a Resolver over store until the test ends, and
// waits until it is ready.
func startResolver(t testing.TB, store directory.Store, opts directory.ResolverOptions) (*directory.Resolver, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	r, err := directory.NewResolver(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, 10*time.Second, "the resolver to be ready", r.Ready)
	return r, reg
}

// waitFor polls cond every millisecond and reports how long it took.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// lookups reads tollgate_directory_lookups_total{result}.
func lookups(t testing.TB, reg *prometheus.Registry, result string) float64 {
	return metric(t, reg, "tollgate_directory_lookups_total", result)
}

func metric(t testing.TB, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != result) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func resolves(r *directory.Resolver, key string) bool {
	_, ok := r.Resolve(context.Background(), key)
	return ok
}

func randomKey() string {
	return "tg_" + rand.Text()
}

// TestResolver: what keys resolve to, and how changes made on the store
// reach a running resolver (the poll interval is an hour: through the
// store's Watch).
func TestResolver(t *testing.T) {
	stores(t, testResolver)
}

func testResolver(t *testing.T, s directory.Store) {
	ctx := context.Background()
	if _, err := s.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	k1, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme", Name: "one"})
	if err != nil {
		t.Fatal(err)
	}
	r, reg := startResolver(t, s, directory.ResolverOptions{PollInterval: time.Hour})

	v, ok := r.Resolve(ctx, k1.Plaintext)
	if !ok || v.Consumer.ID != "acme" || v.Consumer.Plan != "pro" || v.Key.ID != k1.Key.ID || v.Key.Name != "one" {
		t.Fatalf("Resolve(k1) = %+v, %v", v, ok)
	}
	if v2, ok := r.Resolve(ctx, k1.Plaintext); !ok || v2 != v {
		t.Errorf("second Resolve(k1) = %p, %v; want the cached %p", v2, ok, v)
	}
	if got := [2]float64{lookups(t, reg, "miss"), lookups(t, reg, "hit")}; got != [2]float64{1, 1} {
		t.Errorf("miss, hit = %v; want 1, 1", got)
	}
	if resolves(r, randomKey()) {
		t.Error("a random key resolved")
	}
	if got := lookups(t, reg, "filtered"); got != 1 {
		t.Errorf("filtered = %g, want 1", got)
	}

	// A plan change and a suspension reach the cached entry.
	plan, suspended := "enterprise", directory.StatusSuspended
	if _, err := s.UpdateConsumer(ctx, directory.Meta{}, "acme", directory.ConsumerUpdate{Plan: &plan, Status: &suspended}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the plan change", func() bool {
		v, ok := r.Resolve(ctx, k1.Plaintext)
		return ok && v.Consumer.Plan == plan && v.Consumer.Status == suspended
	})
	// A key created after the start resolves once its change is applied.
	k2, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme", Name: "two"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the new key", func() bool { return resolves(r, k2.Plaintext) })
	// Revoked and expired keys do not resolve.
	if _, err := s.RevokeKey(ctx, directory.Meta{}, k1.Key.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the revocation", func() bool { return !resolves(r, k1.Plaintext) })
	past := time.Now().Add(-time.Second)
	if _, err := s.SetExpiry(ctx, directory.Meta{}, k2.Key.ID, &past); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the expiry", func() bool { return !resolves(r, k2.Plaintext) })
	// ...and a key that expires while cached stops resolving on time.
	soon := time.Now().Add(100 * time.Millisecond)
	k3, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme", ExpiresAt: &soon})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the third key", func() bool { return resolves(r, k3.Plaintext) })
	time.Sleep(time.Until(soon))
	if resolves(r, k3.Plaintext) {
		t.Error("a cached key resolved after it expired")
	}
	// An expiry set again in the future brings it back.
	later := time.Now().Add(time.Hour)
	if _, err := s.SetExpiry(ctx, directory.Meta{}, k3.Key.ID, &later); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the new expiry", func() bool { return resolves(r, k3.Plaintext) })
}

// TestResolverSeeded: a resolver over a memory store seeded from a file.
func TestResolverSeeded(t *testing.T) {
	file := t.TempDir() + "/seed.json"
	writeFile(t, file, `{"consumers": [{"id": "acme", "plan": "pro", "keys": [{"key": "tg_demo_acme"}]},
{"id": "initech", "plan": "free", "status": "suspended", "keys": [{"key": "tg_demo_initech"}]}]}`)
	s, err := directory.LoadMemory(file, directory.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := startResolver(t, s, directory.ResolverOptions{})
	for _, tc := range []struct{ key, consumer, status string }{
		{"tg_demo_acme", "acme", "active"},
		{"tg_demo_initech", "initech", "suspended"},
		{"tg_demo_nobody", "", ""},
	} {
		v, ok := r.Resolve(context.Background(), tc.key)
		switch {
		case tc.consumer == "" && ok:
			t.Errorf("%s resolved to %+v", tc.key, v.Consumer)
		case tc.consumer != "" && (!ok || v.Consumer.ID != tc.consumer || v.Consumer.Status != tc.status):
			t.Errorf("%s = %+v, %v; want %s (%s)", tc.key, v, ok, tc.consumer, tc.status)
		}
	}
}

// pgReplica is one replica's store, on a pool of its own.
func pgReplica(t testing.TB, dsn string, reg prometheus.Registerer) *directory.PGStore {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s, err := directory.NewPG(pool, directory.PGOptions{MaxBackoff: 200 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// migrated returns a new, migrated database.
func migrated(t testing.TB) *pgtest.DB {
	t.Helper()
	db := pgtest.New(t)
	if err := directory.Migrate(context.Background(), db.Pool()); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestRevocationTwoReplicas: a revocation made through one replica's
// store is refused by two replicas (two pools, two listeners) within a
// second, without polling (the poll interval is an hour).
func TestRevocationTwoReplicas(t *testing.T) {
	ctx := context.Background()
	db := migrated(t)
	admin := pgReplica(t, db.DSN, nil)
	if _, err := admin.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	opts := directory.ResolverOptions{PollInterval: time.Hour}
	a, _ := startResolver(t, pgReplica(t, db.DSN, nil), opts)
	b, _ := startResolver(t, pgReplica(t, db.DSN, nil), opts)
	var worst time.Duration
	for round := range 5 {
		nk, err := admin.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		created := time.Now()
		waitFor(t, time.Second, "the new key on both replicas", func() bool { return resolves(a, nk.Plaintext) && resolves(b, nk.Plaintext) })
		seen := time.Since(created)
		if _, err := admin.RevokeKey(ctx, directory.Meta{}, nk.Key.ID); err != nil {
			t.Fatal(err)
		}
		revoked := time.Now()
		var la, lb time.Duration
		waitFor(t, time.Second, "the revocation on both replicas", func() bool {
			if la == 0 && !resolves(a, nk.Plaintext) {
				la = time.Since(revoked)
			}
			if lb == 0 && !resolves(b, nk.Plaintext) {
				lb = time.Since(revoked)
			}
			return la > 0 && lb > 0
		})
		worst = max(worst, la, lb)
		t.Logf("round %d: new key resolvable on both replicas after %s; revocation seen after %s (replica a) and %s (replica b)", round, seen, la, lb)
	}
	if worst >= time.Second {
		t.Errorf("revocation took %s to reach both replicas; want < 1s", worst)
	}
}

// TestReplayAfterDroppedListener: the listener's backend is terminated
// while changes are made; the resolver reconnects and applies every
// change it missed (the poll interval is an hour: only the replay can
// explain them).
func TestReplayAfterDroppedListener(t *testing.T) {
	ctx := context.Background()
	db := migrated(t)
	admin := pgReplica(t, db.DSN, nil)
	if _, err := admin.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	old, err := admin.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	store := pgReplica(t, db.DSN, reg)
	r, _ := startResolver(t, store, directory.ResolverOptions{PollInterval: time.Hour})
	if v, ok := r.Resolve(ctx, old.Plaintext); !ok || v.Consumer.Plan != "pro" {
		t.Fatalf("Resolve(old) = %+v, %v", v, ok)
	}
	pool := db.Pool()
	whileDown := 0 // rounds whose changes were all made with no listener connected
	for round := range 3 {
		var killed bool
		waitFor(t, 5*time.Second, "the listener to connect", func() bool {
			err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) > 0 FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`,
				directory.ListenerApplicationName).Scan(&killed)
			return err == nil && killed
		})
		seq := r.Seq()
		// Changes made while the listener is down (it waits 100ms and
		// more before reconnecting).
		plan := fmt.Sprintf("plan-%d", round)
		if _, err := admin.UpdateConsumer(ctx, directory.Meta{}, "acme", directory.ConsumerUpdate{Plan: &plan}); err != nil {
			t.Fatal(err)
		}
		nk, err := admin.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		var listening int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`,
			directory.ListenerApplicationName).Scan(&listening); err != nil {
			t.Fatal(err)
		}
		if listening == 0 {
			whileDown++
		}
		took := waitFor(t, 5*time.Second, "the changes to be replayed", func() bool {
			v, ok := r.Resolve(ctx, old.Plaintext)
			return ok && v.Consumer.Plan == plan && resolves(r, nk.Plaintext)
		})
		if r.Seq() < seq+2 {
			t.Errorf("seq %d after replay, want at least %d", r.Seq(), seq+2)
		}
		t.Logf("round %d: changes made while the listener was down applied %s after they were made", round, took)
	}
	if whileDown == 0 {
		t.Error("in no round were the changes made while the listener was disconnected")
	}
	if got := metric(t, reg, "tollgate_directory_listener_reconnects_total", ""); got < 3 {
		t.Errorf("reconnects = %g, want 3 or more", got)
	}
}

// countingStore counts the lookups that reach the store.
type countingStore struct {
	directory.Store
	n atomic.Int64
}

func (s *countingStore) LookupHash(ctx context.Context, h [32]byte) (directory.Consumer, directory.Key, error) {
	s.n.Add(1)
	return s.Store.LookupHash(ctx, h)
}

// loadKeys adds consumers c0...c(n/10) with n keys between them, written
// with COPY (no change rows: a resolver reads them at load), and returns
// the keys.
func loadKeys(t testing.TB, pool *pgxpool.Pool, n int) []string {
	t.Helper()
	ctx := context.Background()
	consumers := max(1, n/10)
	_, err := pool.CopyFrom(ctx, pgx.Identifier{"tollgate_consumers"}, []string{"id", "plan"},
		pgx.CopyFromFunc(func() func() ([]any, error) {
			i := 0
			return func() ([]any, error) {
				if i == consumers {
					return nil, nil
				}
				i++
				return []any{fmt.Sprintf("c%d", i-1), "pro"}, nil
			}
		}()))
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, n)
	i := 0
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"tollgate_keys"}, []string{"id", "hash", "prefix", "consumer"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			plain, hash, display := directory.GenerateKey("tg_")
			keys[i] = plain
			i++
			return []any{fmt.Sprintf("key_%d", i-1), hash[:], display, fmt.Sprintf("c%d", (i-1)%consumers)}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestFlood: 100,000 random unknown keys, mixed with the known ones,
// send about the filter's false-positive rate of queries to PostgreSQL,
// and the known keys keep resolving from the cache.
func TestFlood(t *testing.T) {
	db := migrated(t)
	known := loadKeys(t, db.Pool(), 1000)
	store := &countingStore{Store: pgReplica(t, db.DSN, nil)}
	// The filter is built for twice the keys at 1% (about 0.03% false
	// positives with half of that in it), and the cache has room for
	// little more than them.
	r, reg := startResolver(t, store, directory.ResolverOptions{FilterCapacity: len(known), CacheSize: 2 * len(known), PollInterval: time.Hour})
	for _, k := range known {
		if !resolves(r, k) {
			t.Fatalf("known key %s does not resolve", k)
		}
	}
	warm := store.n.Load()
	hitsBefore := lookups(t, reg, "hit")
	const flood = 100_000
	for i := range flood {
		if resolves(r, randomKey()) {
			t.Fatal("a random key resolved")
		}
		if i%100 == 0 {
			if !resolves(r, known[(i/100)%len(known)]) {
				t.Fatalf("known key refused during the flood")
			}
		}
	}
	queries := store.n.Load() - warm
	knownHits := lookups(t, reg, "hit") - hitsBefore
	t.Logf("flood of %d unknown keys: %d store queries (%.2f%%), %g filtered, %g not found; known keys: %g of %d from the cache",
		flood, queries, 100*float64(queries)/flood, lookups(t, reg, "filtered"), lookups(t, reg, "not_found"), knownHits, flood/100)
	if queries > flood/50 {
		t.Errorf("%d queries reached the store, want at most %d (2%%)", queries, flood/50)
	}
	if knownHits != flood/100 {
		t.Errorf("known keys: %g cache hits of %d lookups; want all", knownHits, flood/100)
	}
	// After the flood every known key is still a hit.
	hitsBefore = lookups(t, reg, "hit")
	for _, k := range known {
		resolves(r, k)
	}
	if got := lookups(t, reg, "hit") - hitsBefore; got != float64(len(known)) {
		t.Errorf("after the flood: %g of %d known keys from the cache", got, len(known))
	}
	if store.n.Load() != warm+queries {
		t.Errorf("known keys queried the store after the flood")
	}
}

// TestDatabaseDown: with PostgreSQL unreachable, cached keys resolve,
// others are refused and counted as db_error (or filtered), quickly; when
// it is back, everything resolves again.
func TestDatabaseDown(t *testing.T) {
	ctx := context.Background()
	db := migrated(t)
	admin := pgReplica(t, db.DSN, nil)
	if _, err := admin.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	var keys [3]directory.NewKey
	for i := range keys {
		var err error
		if keys[i], err = admin.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"}); err != nil {
			t.Fatal(err)
		}
	}
	proxy := db.Proxy()
	r, reg := startResolver(t, pgReplica(t, proxy.DSN, nil), directory.ResolverOptions{DownFor: 200 * time.Millisecond, LookupTimeout: 500 * time.Millisecond})
	if !resolves(r, keys[0].Plaintext) {
		t.Fatal("key 0 does not resolve")
	}
	proxy.Cut()
	start := time.Now()
	for range 100 {
		if !resolves(r, keys[0].Plaintext) {
			t.Fatal("a cached key was refused while the database is down")
		}
		if resolves(r, keys[1].Plaintext) || resolves(r, keys[2].Plaintext) {
			t.Fatal("a key not cached resolved while the database is down")
		}
		if resolves(r, randomKey()) {
			t.Fatal("a random key resolved")
		}
	}
	took := time.Since(start)
	dbErrors := lookups(t, reg, "db_error")
	t.Logf("database down: 100 rounds in %s; db_error %g, filtered %g, hit %g", took, dbErrors, lookups(t, reg, "filtered"), lookups(t, reg, "hit"))
	if dbErrors != 200 {
		t.Errorf("db_error = %g, want 200 (two keys not cached, 100 times)", dbErrors)
	}
	if took > 2*time.Second {
		t.Errorf("refusals took %s: the lookups of an unreachable store should not wait each time", took)
	}
	proxy.Restore()
	waitFor(t, 5*time.Second, "key 1 to resolve again", func() bool { return resolves(r, keys[1].Plaintext) })
}

func TestResolverConcurrent(t *testing.T) {
	ctx := context.Background()
	s := directory.NewMemory(directory.MemoryOptions{})
	if _, err := s.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	var keys []directory.NewKey
	for range 50 {
		nk, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, nk)
	}
	r, _ := startResolver(t, s, directory.ResolverOptions{CacheSize: 16})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				k := keys[(g*7+i)%len(keys)]
				resolves(r, k.Plaintext)
				resolves(r, randomKey())
			}
		})
	}
	for i := range 20 {
		plan := fmt.Sprintf("p%d", i)
		if _, err := s.UpdateConsumer(ctx, directory.Meta{}, "acme", directory.ConsumerUpdate{Plan: &plan}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	waitFor(t, time.Second, "the last plan", func() bool {
		v, ok := r.Resolve(ctx, keys[0].Plaintext)
		return ok && v.Consumer.Plan == "p19"
	})
}

// TestFilterGrows: a resolver whose filter was sized for fewer keys
// rebuilds it for twice as many as keys are created, and keeps resolving
// every one of them and refusing random ones.
func TestFilterGrows(t *testing.T) {
	ctx := context.Background()
	s := directory.NewMemory(directory.MemoryOptions{})
	if _, err := s.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	r, reg := startResolver(t, s, directory.ResolverOptions{FilterCapacity: 1000})
	if got := metric(t, reg, "tollgate_directory_filter_capacity", ""); got != 1024 {
		t.Fatalf("filter capacity %g, want 1024 (the least)", got)
	}
	var keys []string
	for range 3000 {
		nk, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, nk.Plaintext)
	}
	waitFor(t, 5*time.Second, "the filter to grow", func() bool {
		return r.Seq() == 3001 && metric(t, reg, "tollgate_directory_filter_capacity", "") >= 2*1024
	})
	t.Logf("filter capacity %g after 3000 keys", metric(t, reg, "tollgate_directory_filter_capacity", ""))
	for _, k := range keys {
		if !resolves(r, k) {
			t.Fatal("a key does not resolve after the filter was rebuilt")
		}
	}
	for range 10_000 {
		if resolves(r, randomKey()) {
			t.Fatal("a random key resolved")
		}
	}
	if got := lookups(t, reg, "filtered"); got < 9700 {
		t.Errorf("%g of 10,000 random keys filtered, want about 99%%", got)
	}
}

// TestLastUsed: keys resolved are recorded as used, coarsely, on both
// stores; keys not resolved are not.
func TestLastUsed(t *testing.T) {
	stores(t, func(t *testing.T, s directory.Store) {
		ctx := context.Background()
		if _, err := s.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme"}); err != nil {
			t.Fatal(err)
		}
		used, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme", Name: "used"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme", Name: "idle"}); err != nil {
			t.Fatal(err)
		}
		r, _ := startResolver(t, s, directory.ResolverOptions{TouchInterval: 20 * time.Millisecond})
		before := time.Now().Add(-time.Second)
		if !resolves(r, used.Plaintext) {
			t.Fatal("key does not resolve")
		}
		var keys []directory.Key
		waitFor(t, 5*time.Second, "the key's last use to be recorded", func() bool {
			keys, err = s.ListKeys(ctx, "acme")
			return err == nil && keys[0].LastUsedAt != nil
		})
		if at := keys[0].LastUsedAt; at.Before(before) || at.After(time.Now()) {
			t.Errorf("last_used_at %s, want about now", at)
		}
		if keys[1].LastUsedAt != nil {
			t.Errorf("a key never resolved has last_used_at %s", keys[1].LastUsedAt)
		}
		// Within the minute, further use does not write it again.
		first := *keys[0].LastUsedAt
		resolves(r, used.Plaintext)
		time.Sleep(100 * time.Millisecond)
		if keys, _ = s.ListKeys(ctx, "acme"); !keys[0].LastUsedAt.Equal(first) {
			t.Errorf("last_used_at moved from %s to %s within a minute", first, keys[0].LastUsedAt)
		}
	})
}

// slowStore answers a lookup with what it read, but only when released:
// a lookup in flight while a change is applied.
type slowStore struct {
	directory.Store
	read, release chan struct{}
}

func (s *slowStore) LookupHash(ctx context.Context, h [32]byte) (directory.Consumer, directory.Key, error) {
	c, k, err := s.Store.LookupHash(ctx, h)
	s.read <- struct{}{}
	<-s.release
	return c, k, err
}

// TestInFlightLookupNotCached: a lookup that read a key before its
// revocation was applied answers its own request, but its stale answer is
// not cached: the next Resolve refuses the key.
func TestInFlightLookupNotCached(t *testing.T) {
	ctx := context.Background()
	mem := directory.NewMemory(directory.MemoryOptions{})
	if _, err := mem.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	nk, err := mem.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	s := &slowStore{Store: mem, read: make(chan struct{}), release: make(chan struct{})}
	r, _ := startResolver(t, s, directory.ResolverOptions{})
	answered := make(chan bool)
	go func() { answered <- resolves(r, nk.Plaintext) }()
	<-s.read
	seq := r.Seq()
	if _, err := mem.RevokeKey(ctx, directory.Meta{}, nk.Key.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the revocation to be applied", func() bool { return r.Seq() > seq })
	close(s.release)
	if !<-answered {
		t.Error("the lookup in flight answered false; it read the key before the revocation")
	}
	go func() { // a later lookup reaches the store: let it through
		for range s.read {
		}
	}()
	defer close(s.read)
	if resolves(r, nk.Plaintext) {
		t.Error("the revoked key resolved: the stale answer of the lookup in flight was cached")
	}
}

func TestNewResolverOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts directory.ResolverOptions
		want string
	}{
		{"defaults", directory.ResolverOptions{}, ""},
		{"rate too high", directory.ResolverOptions{FalsePositiveRate: 0.9}, "false_positive_rate 0.9: want between 1e-9 and 0.5"},
		{"rate negative", directory.ResolverOptions{FalsePositiveRate: -0.01}, "false_positive_rate -0.01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := directory.NewResolver(directory.NewMemory(directory.MemoryOptions{}), tc.opts)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestResolveBeforeReady: before Run has loaded the filter, keys are
// looked up in the store (correct answers, no filter yet).
func TestResolveBeforeReady(t *testing.T) {
	ctx := context.Background()
	s := directory.NewMemory(directory.MemoryOptions{})
	if _, err := s.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	nk, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := directory.NewResolver(s, directory.ResolverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Ready() {
		t.Error("ready before Run")
	}
	if !resolves(r, nk.Plaintext) || resolves(r, randomKey()) {
		t.Error("wrong answers before Run")
	}
}
