package ratelimit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/ratelimit"
)

// TestMemoryFloodOfShortLivedKeys: a flood of requests from many client
// addresses, each keyed by its IP, fills the store with rate counters that
// carry state for half a second. A new consumer arriving while the flood
// goes on must still be held to its 2/s: the flood's counters whose TAT
// has passed are reclaimed to make room for it.
func TestMemoryFloodOfShortLivedKeys(t *testing.T) {
	c := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	const maxKeys = 1024
	store := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now, MaxKeys: maxKeys, Shards: 4})
	reg := prometheus.NewPedanticRegistry()
	eng, err := ratelimit.NewEngine(store, ratelimit.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	perIP := func(ip int) *ratelimit.Request {
		return &ratelimit.Request{Limits: []ratelimit.Limit{rate("per_ip", fmt.Sprintf("10.0.%d.%d", ip/256, ip%256), 2, time.Second, 0)}}
	}
	legit := &ratelimit.Request{Limits: []ratelimit.Limit{rate("per_consumer", "new-consumer", 2, time.Second, 0)}}

	// The flood: every 100 ms, maxKeys new addresses send one request.
	ip := 0
	flood := func() {
		for range maxKeys {
			ip++
			if _, err := eng.Take(ctx, perIP(ip)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 10 {
		flood()
		c.Advance(100 * time.Millisecond)
	}
	// The new consumer sends 25 requests in 2.5 s, the flood going on.
	allowed := 0
	for range 25 {
		c.Advance(100 * time.Millisecond)
		out, err := eng.Take(ctx, legit)
		if err != nil {
			t.Fatal(err)
		}
		if out.Degraded {
			t.Fatalf("the new consumer's request was let through uncounted: the store is full")
		}
		if out.Allowed {
			allowed++
		}
		flood()
	}
	// Two at once (a 2/s limit's capacity), then one per 500 ms.
	if want := 2 + 2400/500; allowed != want {
		t.Errorf("the new consumer got %d of 25 requests through a 2/s limit, want %d", allowed, want)
	}
}
