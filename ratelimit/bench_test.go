package ratelimit_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
// It also reports Redis's own CPU per Take (redis-µs/op, from INFO cpu):
// what one Redis core spends on each charged request.
func BenchmarkTakeRedis(b *testing.B) {
	srv := redistest.Start(b)
	c := srv.Client()
	store := ratelimit.NewRedisStore(c, time.Second)
	store.SetLedgerMaxLen(0) // shipped and trimmed in production
	before := redisCPU(b, c)
	benchTake(b, store)
	b.ReportMetric(float64((redisCPU(b, c)-before).Microseconds())/float64(b.N), "redis-µs/op")
}

// redisCPU is the CPU time redis-server has used (user + system).
func redisCPU(b *testing.B, c redis.UniversalClient) time.Duration {
	b.Helper()
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		for _, k := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					b.Fatal(err)
				}
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second))
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

// BenchmarkTakeRedisReserve: BenchmarkTakeRedis with the charge settled on
// delivery: the Take also stores the reservation and indexes it for
// expiry (each under its own request id); with capture, the settle.lua
// call that captures it follows, as the access log's entry does: the
// whole cost of a request charged on delivery.
func BenchmarkTakeRedisReserve(b *testing.B) {
	for _, capture := range []bool{false, true} {
		name := "reserve"
		if capture {
			name = "reserve+capture"
		}
		b.Run(name, func(b *testing.B) {
			srv := redistest.Start(b)
			c := srv.Client()
			store := ratelimit.NewRedisStore(c, time.Second)
			store.SetLedgerMaxLen(0)
			req := benchRequest()
			req.Charge.Settle = ratelimit.SettleDelivery
			ctx := context.Background()
			before := redisCPU(b, c)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				req.Reservation = "req-" + strconv.Itoa(i)
				out, err := store.Take(ctx, req)
				if err != nil || !out.Reserved {
					b.Fatalf("%+v %v", out, err)
				}
				if !capture {
					continue
				}
				if res, err := store.Settle(ctx, "acme", req.Reservation, true, "delivered"); err != nil || res != ratelimit.Captured {
					b.Fatalf("%s %v", res, err)
				}
			}
			b.ReportMetric(float64((redisCPU(b, c)-before).Microseconds())/float64(b.N), "redis-µs/op")
		})
	}
}

// BenchmarkTakeMemoryFull: a request with a new key when the memory store
// is full (16,384 counters in 16 shards). expired: the counters of a flood
// of one-request keys, half a second each, so the oldest have expired and
// make room; live: daily quotas, which must never be evicted, so the new
// key is refused (and follows its failure mode).
func BenchmarkTakeMemoryFull(b *testing.B) {
	const maxKeys = 16_384
	newStore := func() (*ratelimit.MemoryStore, *benchClock) {
		c := &benchClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
		return ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now, MaxKeys: maxKeys, Shards: 16, Logger: slog.New(slog.DiscardHandler)}), c
	}
	ctx := context.Background()
	b.Run("expired", func(b *testing.B) {
		s, c := newStore()
		req := &ratelimit.Request{Limits: []ratelimit.Limit{rate("per_ip", "", 2, time.Second, 0)}}
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			i++
			req.Limits[0].Key = "10.0.0." + strconv.Itoa(i)
			c.now = c.now.Add(50 * time.Microsecond) // 10,000 live at a time
			if _, err := s.Take(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("live", func(b *testing.B) {
		s, _ := newStore()
		req := &ratelimit.Request{Limits: []ratelimit.Limit{quota("daily", "", 1000, ratelimit.Day)}}
		for i := range 4 * maxKeys { // every shard full
			req.Limits[0].Key = "consumer-" + strconv.Itoa(i)
			if _, err := s.Take(ctx, req); err != nil && !errors.Is(err, ratelimit.ErrMemoryFull) {
				b.Fatal(err)
			}
		}
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			i++
			req.Limits[0].Key = "new-" + strconv.Itoa(i)
			if _, err := s.Take(ctx, req); !errors.Is(err, ratelimit.ErrMemoryFull) {
				b.Fatalf("%v, want ErrMemoryFull", err)
			}
		}
	})
}

// benchClock is a fake clock for one goroutine.
type benchClock struct{ now time.Time }

func (c *benchClock) Now() time.Time { return c.now }
