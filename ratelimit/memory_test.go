package ratelimit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
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
	quiet := slog.New(slog.DiscardHandler)
	store := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now, MaxKeys: maxKeys, Shards: 4, Logger: quiet})
	reg := prometheus.NewPedanticRegistry()
	eng, err := ratelimit.NewEngine(store, ratelimit.Options{Registerer: reg, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(store.Collectors()...)
	ctx := context.Background()
	perIP := func(ip int) *ratelimit.Request {
		return &ratelimit.Request{Limits: []ratelimit.Limit{rate("per_ip", fmt.Sprintf("10.0.%d.%d", ip/256, ip%256), 2, time.Second, 0)}}
	}
	legit := &ratelimit.Request{Limits: []ratelimit.Limit{rate("per_consumer", "new-consumer", 2, time.Second, 0)}}

	// The flood: every 100 ms, maxKeys new addresses send one request.
	ip, floodDegraded := 0, 0
	flood := func() {
		for range maxKeys {
			ip++
			out, err := eng.Take(ctx, perIP(ip))
			if err != nil {
				t.Fatal(err)
			}
			if out.Degraded {
				floodDegraded++ // found the store full of live counters
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
	// The flood's own new keys, past what expires, found the store full of
	// live counters: refused, so their limits (fail open) let them through
	// uncounted — and counted as refused.
	if got := counter(t, reg, "tollgate_memory_store_refused_total"); floodDegraded == 0 || got != float64(floodDegraded) {
		t.Errorf("tollgate_memory_store_refused_total = %v, want %d (the flood's degraded requests, some)", got, floodDegraded)
	}
	if got := counter(t, reg, "tollgate_store_errors_total"); got != float64(floodDegraded) {
		t.Errorf("tollgate_store_errors_total = %v, want %d", got, floodDegraded)
	}
	if got := counter(t, reg, "tollgate_memory_store_evicted_total"); got < 30*maxKeys/10 {
		t.Errorf("tollgate_memory_store_evicted_total = %v, want at least %d (the expired flood counters replaced)", got, 30*maxKeys/10)
	}
	if n := store.Len(); n > maxKeys {
		t.Errorf("%d counters kept, want at most %d", n, maxKeys)
	}
}

// TestMemoryFullOfLiveQuotas: live quota counters and balances are never
// evicted. A store full of them refuses a new key — a store error, so a
// fail-open limit lets the request through degraded and a fail-closed one
// refuses it — counts the refusals and logs them once per interval; the
// expired rate counters among them are evicted first.
func TestMemoryFullOfLiveQuotas(t *testing.T) {
	c := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	var logs syncBuffer
	store := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now, MaxKeys: 8, Shards: 1,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), LogInterval: time.Hour})
	reg := prometheus.NewPedanticRegistry()
	eng, err := ratelimit.NewEngine(store, ratelimit.Options{Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(store.Collectors()...)
	ctx := context.Background()
	paid := func(i int) *ratelimit.Request {
		a := fmt.Sprint("consumer-", i)
		return &ratelimit.Request{Limits: []ratelimit.Limit{quota("daily", a, 10, ratelimit.Day)},
			Charge: &ratelimit.Charge{Account: a, Credits: 3}}
	}
	// Four consumers with a balance and a live daily quota, four addresses
	// with a rate counter that expires in half a second.
	for i := range 4 {
		credit(t, store, fmt.Sprint("consumer-", i), 100)
		if out, err := eng.Take(ctx, paid(i)); err != nil || !out.Allowed || out.Degraded {
			t.Fatalf("consumer %d: %+v %v", i, out, err)
		}
		take(t, store, &ratelimit.Request{Limits: []ratelimit.Limit{rate("per_ip", fmt.Sprint("10.0.0.", i), 2, time.Second, 0)}})
	}
	if n := store.Len(); n != 8 {
		t.Fatalf("%d counters, want 8 (full)", n)
	}
	c.Advance(time.Hour)
	// Four new consumers take the expired rate counters' room.
	for i := 4; i < 8; i++ {
		if out, err := eng.Take(ctx, &ratelimit.Request{Limits: []ratelimit.Limit{quota("daily", fmt.Sprint("consumer-", i), 10, ratelimit.Day)}}); err != nil || !out.Allowed || out.Degraded {
			t.Fatalf("consumer %d: %+v %v, want counted (an expired rate counter evicted)", i, out, err)
		}
	}
	// Now only live quotas: new keys are refused, by their failure mode.
	for i := range 3 {
		out, err := eng.Take(ctx, &ratelimit.Request{Limits: []ratelimit.Limit{quota("daily", fmt.Sprint("open-", i), 10, ratelimit.Day)}})
		if err != nil || !out.Allowed || !out.Degraded {
			t.Fatalf("fail-open limit, store full: %+v %v, want allowed and degraded", out, err)
		}
	}
	closed := quota("daily", "closed", 10, ratelimit.Day)
	closed.FailOpen = false
	if _, err := eng.Take(ctx, &ratelimit.Request{Limits: []ratelimit.Limit{closed}}); !errors.Is(err, ratelimit.ErrStoreUnavailable) || !errors.Is(err, ratelimit.ErrMemoryFull) {
		t.Fatalf("fail-closed limit, store full: %v, want ErrStoreUnavailable (ErrMemoryFull)", err)
	}
	// A charged request of a new consumer, whose charge fails closed.
	credit(t, store, "consumer-8", 100)
	if _, err := eng.Take(ctx, paid(8)); !errors.Is(err, ratelimit.ErrStoreUnavailable) {
		t.Fatalf("charged request of a new consumer, store full: %v, want ErrStoreUnavailable", err)
	}
	for name, want := range map[string]float64{
		"tollgate_memory_store_evicted_total": 4,
		"tollgate_memory_store_refused_total": 5,
		"tollgate_store_errors_total":         5,
	} {
		if got := counter(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if n := strings.Count(logs.String(), "memory store is full"); n != 1 {
		t.Errorf("%d log lines say the store is full, want 1 (once per interval):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "evicted_total=") || !strings.Contains(logs.String(), "max_keys=8") {
		t.Errorf("the log line lacks the counts:\n%s", logs.String())
	}
	// The live quotas and balances are intact, and still enforced.
	for i := range 4 {
		a := fmt.Sprint("consumer-", i)
		acct, err := store.Account(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if acct.Balance != 97 || len(acct.Quotas) != 1 || acct.Quotas[0].Used != 1 {
			t.Errorf("%s: balance %d, quotas %+v, want 97 and daily used 1", a, acct.Balance, acct.Quotas)
		}
		if out, err := eng.Take(ctx, paid(i)); err != nil || !out.Allowed || out.Degraded || out.Balance != 94 || out.Limits[0].Remaining != 8 {
			t.Errorf("%s after the refusals: %+v %v, want counted (balance 94, 8 left)", a, out, err)
		}
	}
	// The next day the periods have ended: their counters make room.
	c.Advance(24 * time.Hour)
	if out, err := eng.Take(ctx, &ratelimit.Request{Limits: []ratelimit.Limit{closed}}); err != nil || !out.Allowed {
		t.Fatalf("next day: %+v %v, want counted (an ended period evicted)", out, err)
	}
	if got := counter(t, reg, "tollgate_memory_store_evicted_total"); got != 5 {
		t.Errorf("tollgate_memory_store_evicted_total = %v, want 5", got)
	}
}

// TestMemoryEvictRewritten: making room in a full store may evict an
// expired counter the same request then writes again; it stays within
// max_keys and is reclaimed when it expires again.
func TestMemoryEvictRewritten(t *testing.T) {
	c := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now, MaxKeys: 2, Shards: 1, Logger: slog.New(slog.DiscardHandler)})
	a, b, n := rate("a", "k", 10, time.Second, 0), rate("b", "k", 10, time.Second, 0), rate("n", "k", 10, time.Second, 0)
	take(t, s, &ratelimit.Request{Limits: []ratelimit.Limit{a}})
	c.Advance(time.Millisecond)
	take(t, s, &ratelimit.Request{Limits: []ratelimit.Limit{b}})
	c.Advance(time.Second) // both expired, a first
	if out, err := s.Take(context.Background(), &ratelimit.Request{Limits: []ratelimit.Limit{a, n}}); err != nil || !out.Allowed {
		t.Fatalf("a and a new counter in a store full of expired ones: %+v %v", out, err)
	}
	if got := s.Len(); got > 2 {
		t.Errorf("%d counters, want at most 2 (max_keys)", got)
	}
	c.Advance(time.Second)
	s.Sweep()
	if got := s.Len(); got != 0 {
		t.Errorf("%d counters left after they all expired and a sweep, want 0 (each in the expiry heap)", got)
	}
}

// TestMemoryPressureRandom: random rate and quota takes over few keys,
// releases that give quotas back (deleting counters), reservations, time
// passing and sweeps, in a store a few keys small. The bound always holds,
// every counter is found again by the expiry heap (nothing is left once
// all have expired), and no live quota is ever lost: the usage the store
// reports is what was taken and not given back.
func TestMemoryPressureRandom(t *testing.T) {
	c := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	const maxKeys = 12
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now, MaxKeys: maxKeys, Shards: 2, Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	accounts := []string{"a", "b", "c"}
	for _, a := range accounts {
		credit(t, s, a, 1_000_000)
	}
	used := map[string]int64{} // account → daily quota units held, today
	day := c.Now().Truncate(24 * time.Hour)
	type res struct {
		account, id string
		day         time.Time
	}
	var pending []res // reservations not settled
	for i := range 5000 {
		switch op := r.IntN(10); {
		case op < 4: // the rate counters of some address and its network
			ip := r.IntN(40)
			req := &ratelimit.Request{Limits: []ratelimit.Limit{rate("per_ip", fmt.Sprint("10.0.0.", ip), 5, time.Second, 0),
				rate("per_net", fmt.Sprint("10.0.", ip%5), 50, time.Second, 0)}}
			if _, err := s.Take(ctx, req); err != nil && !errors.Is(err, ratelimit.ErrMemoryFull) {
				t.Fatal(err)
			}
		case op < 7: // a reserved paid request with a daily quota
			a := accounts[r.IntN(len(accounts))]
			id := fmt.Sprint("r", i)
			req := &ratelimit.Request{ID: id, Reservation: id, Limits: []ratelimit.Limit{quota("daily", a, 1_000_000, ratelimit.Day)},
				Charge: &ratelimit.Charge{Account: a, Credits: 1, Settle: ratelimit.SettleDelivery}}
			out, err := s.Take(ctx, req)
			switch {
			case errors.Is(err, ratelimit.ErrMemoryFull):
			case err != nil || !out.Reserved:
				t.Fatalf("reserve: %+v %v", out, err)
			default:
				used[a]++
				pending = append(pending, res{a, id, day})
			}
		case op < 8 && len(pending) > 0: // settled: captured or released
			j := r.IntN(len(pending))
			p := pending[j]
			pending = slices.Delete(pending, j, j+1)
			capture := r.IntN(2) == 0
			got, err := s.Settle(ctx, p.account, p.id, capture, "test")
			if err != nil || got == ratelimit.Unknown || got == ratelimit.AlreadySettled {
				t.Fatalf("settle: %v %v", got, err)
			}
			if !capture && p.day.Equal(day) {
				used[p.account]-- // given back (a past day's period has ended)
			}
		case op < 9:
			c.Advance(time.Duration(r.IntN(400)) * time.Millisecond)
		default:
			if r.IntN(20) == 0 {
				c.Advance(time.Duration(r.IntN(6)) * time.Hour)
				pending = nil // released when they expire (not by this test)
			}
			s.Sweep()
		}
		if d := c.Now().Truncate(24 * time.Hour); !d.Equal(day) { // a new period
			day, used = d, map[string]int64{}
		}
		if n := s.Len(); n > maxKeys {
			t.Fatalf("op %d: %d counters, want at most %d", i, n, maxKeys)
		}
		for _, a := range accounts {
			acct, err := s.Account(ctx, a)
			if err != nil {
				t.Fatal(err)
			}
			var got int64
			for _, q := range acct.Quotas {
				got += q.Used
			}
			if got != used[a] {
				t.Fatalf("op %d: %s's daily quota used %d, want %d (a live quota lost?)", i, a, got, used[a])
			}
		}
	}
	if s.Evicted() == 0 || s.Refused() == 0 {
		t.Errorf("evicted %d, refused %d: the store was not under pressure", s.Evicted(), s.Refused())
	}
	c.Advance(48 * time.Hour)
	s.Sweep()
	if n := s.Len(); n != 0 {
		t.Errorf("%d counters left once all expired and swept, want 0 (each in the expiry heap)", n)
	}
}

// syncBuffer is a bytes.Buffer for a logger shared by goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
