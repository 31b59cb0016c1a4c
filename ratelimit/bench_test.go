package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// benchRequest is a typical paid request: per-second rate, daily and
// monthly quotas, and a credit charge.
func benchRequest() *ratelimit.Request {
	return &ratelimit.Request{

		Limits: []ratelimit.Limit{
			rate("per_second", "acme", 1_000_000, time.Second, 0),
			quota("daily", "acme", 1_000_000_000, ratelimit.Day),
			quota("monthly", "acme", 1_000_000_000, ratelimit.Month),
		},
		Charge: &ratelimit.Charge{Account: "acme", Credits: 1, Overdraft: 1_000_000_000_000},
	}
}

func benchTake(b *testing.B, s ratelimit.Store) {
	req := benchRequest()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		out, err := s.Take(ctx, req)
		if err != nil || !out.Allowed {
			b.Fatalf("%+v %v", out, err)
		}
	}
}

// BenchmarkTakeMemory: 3 limits and a charge, memory store.
func BenchmarkTakeMemory(b *testing.B) {
	benchTake(b, ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}))
}

// BenchmarkTakeRedis: 3 limits and a charge in one EVALSHA round trip to a
// local redis-server.
func BenchmarkTakeRedis(b *testing.B) {
	srv := redistest.Start(b)
	benchTake(b, ratelimit.NewRedisStore(srv.Client(), time.Second))
}

// BenchmarkRedisPing is one round trip to the same redis-server doing
// nothing: the floor under BenchmarkTakeRedis.
func BenchmarkRedisPing(b *testing.B) {
	srv := redistest.Start(b)
	c := srv.Client()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
