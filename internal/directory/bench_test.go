package directory_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/directory"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// memoryKeys returns a resolver over a memory store of n keys, every key
// resolved once (cached).
func memoryKeys(b *testing.B, n int) (*directory.Resolver, []string) {
	ctx := context.Background()
	s := directory.NewMemory(directory.MemoryOptions{})
	if _, err := s.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme", Plan: "pro", Metadata: map[string]any{"tier": "gold"}}); err != nil {
		b.Fatal(err)
	}
	keys := make([]string, n)
	for i := range keys {
		nk, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = nk.Plaintext
	}
	r, _ := startResolver(b, s, directory.ResolverOptions{Logger: quiet})
	for _, k := range keys {
		if !resolves(r, k) {
			b.Fatal("a key does not resolve")
		}
	}
	return r, keys
}

// BenchmarkResolveHit: a credential whose key is cached (SHA-256 of the
// key, one shard lock, an expiry check), with 1 and 100,000 keys cached.
func BenchmarkResolveHit(b *testing.B) {
	for _, n := range []int{1, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			r, keys := memoryKeys(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, ok := r.Resolve(ctx, keys[i%n]); !ok {
					b.Fatal("refused")
				}
			}
		})
	}
}

// BenchmarkResolveHitParallel is BenchmarkResolveHit from every core.
func BenchmarkResolveHitParallel(b *testing.B) {
	r, keys := memoryKeys(b, 100_000)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := r.Resolve(ctx, keys[i%len(keys)]); !ok {
				b.Error("refused")
				return
			}
			i += 7
		}
	})
}

// BenchmarkResolveUnknown: a random unknown credential, refused by the
// filter (100,000 keys) without a store lookup.
func BenchmarkResolveUnknown(b *testing.B) {
	r, _ := memoryKeys(b, 100_000)
	ctx := context.Background()
	unknown := make([]string, 4096)
	for i := range unknown {
		unknown[i] = randomKey()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r.Resolve(ctx, unknown[i%len(unknown)]) // about 1% reach the negative cache
	}
}

// BenchmarkLoad: a replica starting with 1,000,000 keys in PostgreSQL
// (written with COPY before the timer): NewResolver and Run until Ready,
// then 100,000 keys in active use resolved. Reports the time to ready,
// the heap the filter and the cache keep, and the lookups a second.
func BenchmarkLoad(b *testing.B) {
	const total, active = 1_000_000, 100_000
	db := migrated(b)
	start := time.Now()
	keys := loadKeys(b, db.Pool(), total)
	b.Logf("%d keys written with COPY in %s", total, time.Since(start))
	b.ResetTimer()
	for range b.N {
		store := pgReplica(b, db.DSN, nil)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		r, _ := startResolver(b, store, directory.ResolverOptions{Logger: quiet, PollInterval: time.Hour})
		ready := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		filterHeap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		start = time.Now()
		ctx := context.Background()
		done := make(chan struct{})
		for w := range 4 {
			go func() {
				defer func() { done <- struct{}{} }()
				for i := w; i < active; i += 4 {
					if _, ok := r.Resolve(ctx, keys[i]); !ok {
						b.Errorf("key %d refused", i)
						return
					}
				}
			}()
		}
		for range 4 {
			<-done
		}
		warm := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		b.ReportMetric(ready.Seconds(), "s-to-ready")
		b.ReportMetric(float64(filterHeap)/(1<<20), "MiB-ready")
		b.ReportMetric(float64(heap)/(1<<20), "MiB-100k-active")
		b.ReportMetric(active/warm.Seconds(), "store-lookups/s")
		b.Logf("ready in %s with %d keys (heap +%.1f MiB); %d keys resolved from PostgreSQL in %s (heap +%.1f MiB in all)",
			ready, total, float64(filterHeap)/(1<<20), active, warm, float64(heap)/(1<<20))
		runtime.KeepAlive(r)
	}
}

// BenchmarkHash is the SHA-256 of a key alone, for scale: most of a
// cache hit.
func BenchmarkHash(b *testing.B) {
	key := randomKey()
	b.ReportAllocs()
	for range b.N {
		directory.Hash(key)
	}
}
