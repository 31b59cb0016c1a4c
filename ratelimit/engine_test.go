package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// clock is the memory store's fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// env is one store under test; advance moves its time forward (the fake
// clock of the memory store, real waiting for Redis, whose TIME rules).
type env struct {
	store   ratelimit.Store
	advance func(time.Duration)
	now     func() time.Time // the store's clock
	redis   *redistest.Server
	// twin is a second replica on the same Redis (nil: the memory store).
	twin ratelimit.Store
}

// eachStore runs f against the memory store and against a real Redis.
func eachStore(t *testing.T, f func(t *testing.T, e *env)) {
	t.Run("memory", func(t *testing.T) {
		c := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
		f(t, &env{store: ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now}), advance: c.Advance, now: c.Now})
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		f(t, &env{store: ratelimit.NewRedisStore(srv.Client(), time.Second), advance: time.Sleep, now: time.Now, redis: srv,
			twin: ratelimit.NewRedisStore(srv.Client(), time.Second)})
	})
}

func rate(name, key string, limit int64, window time.Duration, burst int64) ratelimit.Limit {
	return ratelimit.Limit{Name: name, Key: key, Limit: limit, Window: window, Burst: burst, Cost: 1, OnExceed: 429, FailOpen: true}
}

func quota(name, key string, limit int64, p ratelimit.Period) ratelimit.Limit {
	return ratelimit.Limit{Name: name, Key: key, Limit: limit, Period: p, Cost: 1, OnExceed: 402, FailOpen: true}
}

func take(t *testing.T, s ratelimit.Store, req *ratelimit.Request) *ratelimit.Outcome {
	t.Helper()
	out, err := s.Take(context.Background(), req)
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	if len(out.Limits) != len(req.Limits) {
		t.Fatalf("Take returned %d limit states for %d limits", len(out.Limits), len(req.Limits))
	}
	return out
}

// peek reads limits without consuming them (cost 0).
func peek(t *testing.T, s ratelimit.Store, scope string, limits ...ratelimit.Limit) []ratelimit.LimitState {
	t.Helper()
	for i := range limits {
		limits[i].Cost = 0
	}
	_ = scope
	return take(t, s, &ratelimit.Request{Limits: limits}).Limits
}

func credit(t *testing.T, s ratelimit.Store, account string, amount int64) {
	t.Helper()
	if _, err := s.Credit(context.Background(), account, amount, fmt.Sprintf("seed-%d-%d", amount, rand.Int64())); err != nil {
		t.Fatal(err)
	}
}

func balance(t *testing.T, s ratelimit.Store, account string) int64 {
	t.Helper()
	a, err := s.Account(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

func TestRateLimitGCRA(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		l := rate("per_second", "acme", 4, time.Second, 5) // one per 250ms, burst 5
		req := &ratelimit.Request{Limits: []ratelimit.Limit{l}}
		for i := range 5 {
			out := take(t, e.store, req)
			if !out.Allowed || out.Limits[0].Remaining != int64(4-i) {
				t.Fatalf("request %d: allowed=%v remaining=%d, want allowed with %d remaining", i+1, out.Allowed, out.Limits[0].Remaining, 4-i)
			}
		}
		out := take(t, e.store, req)
		if out.Allowed || out.Denied != 0 || !out.Limits[0].Exceeded {
			t.Fatalf("6th request in the burst: %+v, want denied by per_second", out)
		}
		if out.RetryAfter <= 0 || out.RetryAfter > 250*time.Millisecond {
			t.Errorf("RetryAfter = %v, want (0, 250ms]: one emission interval", out.RetryAfter)
		}
		e.advance(out.RetryAfter + 20*time.Millisecond)
		if out := take(t, e.store, req); !out.Allowed {
			t.Errorf("after RetryAfter the request is still denied: %+v", out)
		}
		// Smooth: no window edge lets a second burst through.
		out = take(t, e.store, req)
		if out.Allowed {
			t.Errorf("a second request right after refill was allowed: GCRA must not double at window edges")
		}
		// Once fully drained, exactly one burst is available again.
		e.advance(out.Limits[0].Reset + 20*time.Millisecond)
		for i := range 6 {
			if out := take(t, e.store, req); out.Allowed != (i < 5) {
				t.Fatalf("after a full reset, request %d: allowed=%v, want %v", i+1, out.Allowed, i < 5)
			}
		}
	})
}

func TestWeightedCost(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		q := quota("tokens", "acme", 1000, ratelimit.Month)
		q.Cost = 600
		req := &ratelimit.Request{Limits: []ratelimit.Limit{q}}
		if out := take(t, e.store, req); !out.Allowed || out.Limits[0].Remaining != 400 {
			t.Fatalf("first 600: %+v, want allowed with 400 left", out)
		}
		out := take(t, e.store, req)
		if out.Allowed || out.Limits[0].Remaining != 400 {
			t.Fatalf("second 600: %+v, want denied with 400 still left", out)
		}
		q.Cost = 400
		if out := take(t, e.store, &ratelimit.Request{Limits: []ratelimit.Limit{q}}); !out.Allowed || out.Limits[0].Remaining != 0 {
			t.Fatalf("last 400: %+v, want allowed with 0 left", out)
		}
	})
}

func TestQuota(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		q := quota("monthly", "acme", 3, ratelimit.Month)
		req := &ratelimit.Request{Limits: []ratelimit.Limit{q}}
		for i := range 3 {
			if out := take(t, e.store, req); !out.Allowed || out.Limits[0].Remaining != int64(2-i) {
				t.Fatalf("request %d: %+v", i+1, out)
			}
		}
		out := take(t, e.store, req)
		if out.Allowed || out.Denied != 0 || !out.Limits[0].Exceeded {
			t.Fatalf("4th: %+v, want denied", out)
		}
		if w := out.Limits[0].Window; w < 28*24*time.Hour || w > 31*24*time.Hour {
			t.Errorf("window %v is not a calendar month", w)
		}
		if out.RetryAfter != out.Limits[0].Reset || out.RetryAfter <= 0 {
			t.Errorf("RetryAfter %v, want the time to the period's end %v", out.RetryAfter, out.Limits[0].Reset)
		}
		a, err := e.store.Account(context.Background(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Quotas) != 1 || a.Quotas[0].Name != "monthly" || a.Quotas[0].Used != 3 || a.Quotas[0].Start.Day() != 1 {
			t.Errorf("Account quotas = %+v, want monthly used 3 from the 1st", a.Quotas)
		}
	})
}

// TestAllOrNothing: a request refused by one limit consumes nothing else.
func TestAllOrNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		perSecond := rate("per_second", "acme", 100, time.Second, 0)
		monthly := quota("monthly", "acme", 2, ratelimit.Month)
		charge := &ratelimit.Charge{Account: "acme", Credits: 3}
		credit(t, e.store, "acme", 100)
		req := &ratelimit.Request{Limits: []ratelimit.Limit{perSecond, monthly}, Charge: charge}
		for range 2 {
			if out := take(t, e.store, req); !out.Allowed {
				t.Fatalf("within quota: %+v", out)
			}
		}
		before := peek(t, e.store, "acme", perSecond)[0].Remaining
		out := take(t, e.store, req)
		if out.Allowed || out.Denied != 1 || out.Charged != 0 {
			t.Fatalf("over the monthly quota: %+v, want denied by limit 1 and nothing charged", out)
		}
		if out.Limits[0].Remaining < before {
			t.Errorf("the refusal reports per_second remaining %d, want the untouched %d", out.Limits[0].Remaining, before)
		}
		if after := peek(t, e.store, "acme", perSecond)[0].Remaining; after < before {
			t.Errorf("per_second remaining went from %d to %d: a refused request consumed it", before, after)
		}
		if b := balance(t, e.store, "acme"); b != 94 {
			t.Errorf("balance %d, want 94 (two charges of 3, the refused request not charged)", b)
		}
		// A rate-limited request is not charged either.
		tight := rate("tight", "acme", 1, time.Hour, 1)
		req2 := &ratelimit.Request{Limits: []ratelimit.Limit{tight}, Charge: charge}
		take(t, e.store, req2)
		if out := take(t, e.store, req2); out.Allowed || out.Charged != 0 {
			t.Fatalf("rate limited: %+v", out)
		}
		if b := balance(t, e.store, "acme"); b != 91 {
			t.Errorf("balance %d, want 91", b)
		}
		// And a request the balance cannot pay consumes no limit.
		poor := &ratelimit.Charge{Account: "acme", Credits: 1000}
		m2 := quota("daily", "acme", 10, ratelimit.Day)
		if out := take(t, e.store, &ratelimit.Request{Limits: []ratelimit.Limit{m2}, Charge: poor}); out.Allowed || out.Denied != ratelimit.DeniedByCharge {
			t.Fatalf("short balance: %+v, want denied by the charge", out)
		}
		if got := peek(t, e.store, "acme", m2)[0].Remaining; got != 10 {
			t.Errorf("daily remaining %d after a refused charge, want 10", got)
		}
	})
}

func TestCharge(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		credit(t, e.store, "acme", 10)
		req := &ratelimit.Request{Charge: &ratelimit.Charge{Account: "acme", Credits: 3}}
		for i := range 3 {
			out := take(t, e.store, req)
			if !out.Allowed || out.Charged != 3 || out.Balance != int64(7-3*i) {
				t.Fatalf("charge %d: %+v", i+1, out)
			}
		}
		out := take(t, e.store, req)
		if out.Allowed || out.Denied != ratelimit.DeniedByCharge || out.Balance != 1 {
			t.Fatalf("4th charge with balance 1: %+v, want denied by charge", out)
		}
		req.Charge.Overdraft = 2
		if out := take(t, e.store, req); !out.Allowed || out.Balance != -2 {
			t.Fatalf("with overdraft 2: %+v, want allowed to -2", out)
		}
		if out := take(t, e.store, req); out.Allowed {
			t.Fatalf("past the overdraft: %+v", out)
		}
	})
}

func TestOverage(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		monthly := quota("monthly", "pro", 2, ratelimit.Month)
		monthly.Overage = true
		req := &ratelimit.Request{Limits: []ratelimit.Limit{monthly},
			Charge: &ratelimit.Charge{Account: "pro", Credits: 5, OverageOnly: true}}
		credit(t, e.store, "pro", 7)
		for range 2 {
			if out := take(t, e.store, req); !out.Allowed || out.Charged != 0 {
				t.Fatalf("within the included quota: %+v, want allowed and free", out)
			}
		}
		out := take(t, e.store, req)
		if !out.Allowed || out.Charged != 5 || !out.Limits[0].Overage || out.Balance != 2 {
			t.Fatalf("first overage request: %+v, want allowed, charged 5, balance 2", out)
		}
		out = take(t, e.store, req)
		if out.Allowed || out.Denied != ratelimit.DeniedByCharge {
			t.Fatalf("overage with balance 2: %+v, want denied by the charge", out)
		}
	})
}

func TestCreditIdempotent(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		c, err := e.store.Credit(ctx, "acme", 50, "k1")
		if err != nil || !c.Applied || c.Balance != 50 {
			t.Fatalf("first: %+v %v", c, err)
		}
		c, err = e.store.Credit(ctx, "acme", 50, "k1")
		if err != nil || c.Applied || c.Balance != 50 {
			t.Fatalf("replay: %+v %v, want not applied, balance 50", c, err)
		}
		if _, err := e.store.Credit(ctx, "acme", 60, "k1"); !errors.Is(err, ratelimit.ErrIdempotencyConflict) {
			t.Errorf("same key, other amount: %v, want ErrIdempotencyConflict", err)
		}
		if _, err := e.store.Credit(ctx, "acme", ratelimit.MaxCredits, "k2"); !errors.Is(err, ratelimit.ErrBalanceOverflow) {
			t.Errorf("overflow: %v, want ErrBalanceOverflow", err)
		}
		for _, bad := range []int64{0, -1, ratelimit.MaxCredits + 1} {
			if _, err := e.store.Credit(ctx, "acme", bad, "k3"); err == nil {
				t.Errorf("amount %d accepted", bad)
			}
		}
		if b := balance(t, e.store, "acme"); b != 50 {
			t.Errorf("balance %d, want 50", b)
		}
	})
}

// TestConcurrentExactness: 8 goroutines on each of two engines (two
// Tollgate instances sharing one Redis) hammer one limit of N; exactly N
// get through. Balances never go below zero and every admitted charge is
// accounted for. Top-ups with one idempotency key apply once.
func TestConcurrentExactness(t *testing.T) {
	const n, workers, attempts = 100, 8, 40
	exactness := func(t *testing.T, e *env) {
		stores := []ratelimit.Store{e.store, e.store}
		if e.twin != nil {
			stores[1] = e.twin
		}
		hammer := func(req func() *ratelimit.Request, onAllowed func(*ratelimit.Outcome)) {
			var wg sync.WaitGroup
			for _, s := range stores {
				for range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range attempts {
							out, err := s.Take(context.Background(), req())
							if err != nil {
								t.Error(err)
								return
							}
							if out.Allowed {
								onAllowed(out)
							}
						}
					}()
				}
			}
			wg.Wait()
		}

		for _, l := range []ratelimit.Limit{quota("monthly", "acme", n, ratelimit.Month), rate("hourly_rate", "acme", n, time.Hour, n)} {
			var admitted atomic.Int64
			hammer(func() *ratelimit.Request {
				return &ratelimit.Request{Limits: []ratelimit.Limit{l}}
			}, func(*ratelimit.Outcome) { admitted.Add(1) })
			if got := admitted.Load(); got != n {
				t.Errorf("%s: %d admitted of %d attempts, want exactly %d", l.Name, got, 2*workers*attempts, n)
			}
		}

		const start = 1000
		credit(t, e.store, "wallet", start)
		var spent atomic.Int64
		hammer(func() *ratelimit.Request {
			return &ratelimit.Request{Charge: &ratelimit.Charge{Account: "wallet", Credits: rand.Int64N(7) + 1}}
		}, func(out *ratelimit.Outcome) {
			spent.Add(out.Charged)
			if out.Balance < 0 {
				t.Errorf("balance went to %d", out.Balance)
			}
		})
		final := balance(t, e.store, "wallet")
		if final < 0 || final+spent.Load() != start {
			t.Errorf("final balance %d + admitted charges %d != %d", final, spent.Load(), start)
		}
		if final > 6 {
			t.Errorf("final balance %d: 640 attempts of 1-7 credits should have spent nearly everything", final)
		}

		var applied atomic.Int64
		var wg sync.WaitGroup
		for _, s := range stores {
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := s.Credit(context.Background(), "topup", 25, "invoice-42")
					if err != nil {
						t.Error(err)
						return
					}
					if c.Applied {
						applied.Add(1)
					}
				}()
			}
		}
		wg.Wait()
		if applied.Load() != 1 || balance(t, e.store, "topup") != 25 {
			t.Errorf("one idempotency key from %d callers: applied %d times, balance %d; want once, 25", 2*workers, applied.Load(), balance(t, e.store, "topup"))
		}
	}
	eachStore(t, exactness)
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t, 3)
		exactness(t, &env{store: ratelimit.NewRedisStore(c.Client(), time.Second), twin: ratelimit.NewRedisStore(c.Client(), time.Second),
			advance: time.Sleep, now: time.Now})
	})
}

// TestCalendarMemory crosses month boundaries with a fake clock: January
// into February, February (leap and not) into March, and a zone that is
// not UTC.
func TestCalendarMemory(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		loc       *time.Location
		before    time.Time // just before the boundary
		periodLen time.Duration
	}{
		{"january to february UTC", nil, time.Date(2026, 1, 31, 23, 59, 59, 0, time.UTC), 31 * 24 * time.Hour},
		{"february to march UTC", nil, time.Date(2026, 2, 28, 23, 59, 59, 0, time.UTC), 28 * 24 * time.Hour},
		{"leap february", nil, time.Date(2028, 2, 29, 23, 59, 59, 0, time.UTC), 29 * 24 * time.Hour},
		// Berlin's March has 31 days minus the DST hour.
		{"march to april in Berlin", berlin, time.Date(2026, 3, 31, 23, 59, 59, 0, berlin), 31*24*time.Hour - time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{now: tt.before}
			s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now})
			q := quota("monthly", "acme", 1, ratelimit.Month)
			q.Location = tt.loc
			req := &ratelimit.Request{Limits: []ratelimit.Limit{q}}
			out := take(t, s, req)
			if !out.Allowed || out.Limits[0].Window != tt.periodLen || out.Limits[0].Reset != time.Second {
				t.Fatalf("before the boundary: %+v, want allowed, window %v, reset 1s", out, tt.periodLen)
			}
			if take(t, s, req).Allowed {
				t.Fatal("second request in the same month allowed")
			}
			c.Advance(time.Second)
			if out := take(t, s, req); !out.Allowed {
				t.Fatalf("first request of the new month denied: %+v", out)
			}
		})
	}
	t.Run("UTC boundary is not Berlin's", func(t *testing.T) {
		// 23:30 UTC on Jan 31 is already February in Berlin.
		c := &clock{now: time.Date(2026, 1, 31, 23, 30, 0, 0, time.UTC)}
		s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now})
		utc := quota("utc", "acme", 1, ratelimit.Month)
		local := quota("local", "acme", 1, ratelimit.Month)
		local.Location = berlin
		out := take(t, s, &ratelimit.Request{Limits: []ratelimit.Limit{utc, local}})
		if out.Limits[0].Reset != 30*time.Minute || out.Limits[1].Window != 28*24*time.Hour {
			t.Errorf("UTC resets in %v (want 30m); Berlin's period is %v long (want February, 28 days)", out.Limits[0].Reset, out.Limits[1].Window)
		}
	})
}

// TestCalendarRedisTime crosses a month boundary on Redis's own clock: the
// limit's zone is chosen so that, in it, the month ends two seconds from
// now (a fixed offset; Redis TIME is never faked). Both a 31-day month and
// a leap February are crossed.
func TestCalendarRedisTime(t *testing.T) {
	srv := redistest.Start(t)
	s := ratelimit.NewRedisStore(srv.Client(), time.Second)
	for _, target := range []time.Time{
		time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), // December → January
		time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC), // leap February → March
	} {
		t.Run(target.Format("2006-01"), func(t *testing.T) {
			// Local wall time = now + offset reaches target 2s from now.
			offset := target.Sub(time.Now().Add(2 * time.Second)).Round(time.Second)
			zone := time.FixedZone("boundary", int(offset/time.Second))
			q := quota("monthly-"+target.Format("2006-01"), "acme", 1, ratelimit.Month)
			q.Location = zone
			req := &ratelimit.Request{Limits: []ratelimit.Limit{q}}
			out := take(t, s, req)
			wantLen := target.Sub(time.Date(target.Year(), target.Month()-1, 1, 0, 0, 0, 0, time.UTC))
			if !out.Allowed || out.Limits[0].Window != wantLen || out.Limits[0].Reset > 3*time.Second {
				t.Fatalf("before the boundary: %+v, want allowed, window %v, reset ≤ 3s", out, wantLen)
			}
			if take(t, s, req).Allowed {
				t.Fatal("second request in the same month allowed")
			}
			time.Sleep(out.Limits[0].Reset + 100*time.Millisecond)
			if out := take(t, s, req); !out.Allowed {
				t.Fatalf("first request of the new month (by Redis TIME) denied: %+v", out)
			}
		})
	}
}

// TestStoreFailureModes stops Redis mid-run: fail-open limits allow and
// count the error, a fail-closed charge is refused; once Redis is back the
// same engine enforces again.
func TestStoreFailureModes(t *testing.T) {
	srv := redistest.Start(t)
	reg := prometheus.NewPedanticRegistry()
	eng, err := ratelimit.NewEngine(ratelimit.NewRedisStore(srv.Client(), 100*time.Millisecond), ratelimit.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	open := &ratelimit.Request{Limits: []ratelimit.Limit{quota("monthly", "acme", 1, ratelimit.Month)}}
	charged := &ratelimit.Request{Charge: &ratelimit.Charge{Account: "acme", Credits: 1}}

	if out, err := eng.Take(ctx, open); err != nil || !out.Allowed {
		t.Fatalf("first: %+v %v", out, err)
	}
	srv.Stop()
	for range 3 {
		out, err := eng.Take(ctx, open)
		if err != nil || !out.Allowed || !out.Degraded {
			t.Fatalf("Redis down, fail-open limit: %+v %v, want allowed and degraded", out, err)
		}
	}
	if _, err := eng.Take(ctx, charged); !errors.Is(err, ratelimit.ErrStoreUnavailable) {
		t.Fatalf("Redis down, charge: %v, want ErrStoreUnavailable (fail closed)", err)
	}
	if got := counter(t, reg, "tollgate_store_errors_total"); got != 4 {
		t.Errorf("tollgate_store_errors_total = %v, want 4", got)
	}

	srv.Restart() // empty: counters were in memory only
	if _, err := eng.Store().Credit(ctx, "acme", 1, "after-restart"); err != nil {
		t.Fatalf("credit after restart: %v", err)
	}
	if out, err := eng.Take(ctx, open); err != nil || !out.Allowed || out.Degraded {
		t.Fatalf("after restart: %+v %v", out, err)
	}
	if out, err := eng.Take(ctx, open); err != nil || out.Allowed {
		t.Fatalf("after restart the limit is not enforced: %+v %v", out, err)
	}
	if out, err := eng.Take(ctx, charged); err != nil || !out.Allowed || out.Balance != 0 {
		t.Fatalf("charge after restart: %+v %v", out, err)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestMemoryBounded(t *testing.T) {
	c := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	s := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now, MaxKeys: 4, Shards: 1})
	for i := range 4 {
		take(t, s, &ratelimit.Request{Limits: []ratelimit.Limit{rate(fmt.Sprint(i), "k", 10, time.Second, 0)}})
	}
	if _, err := s.Take(context.Background(), &ratelimit.Request{Limits: []ratelimit.Limit{rate("x", "k", 10, time.Second, 0)}}); !errors.Is(err, ratelimit.ErrMemoryFull) {
		t.Fatalf("5th key: %v, want ErrMemoryFull", err)
	}
	c.Advance(2 * time.Second) // every counter has expired
	if out := take(t, s, &ratelimit.Request{Limits: []ratelimit.Limit{rate("x", "k", 10, time.Second, 0)}}); !out.Allowed {
		t.Fatalf("after expiry: %+v", out)
	}
	// One expired counter was evicted to make room, not all of them: the
	// work per new key is bounded.
	if n, ev := s.Len(), s.Evicted(); n != 4 || ev != 1 {
		t.Errorf("%d counters kept, %d evicted, want 4 kept, 1 evicted", n, ev)
	}
	s.Sweep()
	if n := s.Len(); n != 1 {
		t.Errorf("%d counters kept after the sweep, want 1", n)
	}
}

// TestShadow: an exceeded shadow limit is reported but neither refuses nor
// consumes; the other limits of the request still apply.
func TestShadow(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		shadowRate := rate("shadow_rate", "acme", 1, time.Hour, 1)
		shadowRate.Shadow = true
		shadowQuota := quota("shadow_quota", "acme", 1, ratelimit.Day)
		shadowQuota.Shadow = true
		real := quota("real", "acme", 3, ratelimit.Day)
		req := &ratelimit.Request{Limits: []ratelimit.Limit{shadowRate, shadowQuota, real}}
		for i := range 3 {
			out := take(t, e.store, req)
			if !out.Allowed {
				t.Fatalf("request %d refused: %+v", i+1, out)
			}
			if wantExceeded := i > 0; out.Limits[0].Exceeded != wantExceeded || out.Limits[1].Exceeded != wantExceeded {
				t.Errorf("request %d: shadow exceeded = %v/%v, want %v", i+1, out.Limits[0].Exceeded, out.Limits[1].Exceeded, wantExceeded)
			}
			if out.RetryAfter != 0 {
				t.Errorf("request %d: RetryAfter %v from a shadow limit", i+1, out.RetryAfter)
			}
		}
		if out := take(t, e.store, req); out.Allowed || out.Denied != 2 {
			t.Errorf("4th: %+v, want refused by the real quota", out)
		}
	})
}

// TestCounterIdentity: a counter is the limit's name and key, whichever
// request (consumer, charged account) touches it.
func TestCounterIdentity(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		shared := quota("global", "shared", 1, ratelimit.Month)
		if out := take(t, e.store, &ratelimit.Request{Limits: []ratelimit.Limit{shared}}); !out.Allowed {
			t.Fatalf("first: %+v", out)
		}
		credit(t, e.store, "org", 10)
		out := take(t, e.store, &ratelimit.Request{Limits: []ratelimit.Limit{shared}, Charge: &ratelimit.Charge{Account: "org", Credits: 1}})
		if out.Allowed {
			t.Fatalf("the shared limit was counted separately for another account: %+v", out)
		}
		if b := balance(t, e.store, "org"); b != 10 {
			t.Errorf("balance %d, want 10", b)
		}
	})
}

// TestAwkwardKeys: braces, colons and percent signs in names and keys
// neither collide nor escape the hash tag.
func TestAwkwardKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		keys := []string{"}acme", "{acme}", "a:b", "a%3Ab", "a", "%"}
		for _, k := range keys {
			l := quota("n:}", k, 1, ratelimit.Month)
			if out := take(t, e.store, &ratelimit.Request{Limits: []ratelimit.Limit{l}}); !out.Allowed {
				t.Fatalf("key %q: first request refused (collides with another key): %+v", k, out)
			}
			if out := take(t, e.store, &ratelimit.Request{Limits: []ratelimit.Limit{l}}); out.Allowed {
				t.Fatalf("key %q: second request allowed", k)
			}
		}
		credit(t, e.store, "}acme", 5)
		a, err := e.store.Account(context.Background(), "}acme")
		if err != nil || a.Balance != 5 || len(a.Quotas) != 1 || a.Quotas[0].Key != "}acme" || a.Quotas[0].Name != "n:}" {
			t.Errorf("account }acme = %+v, %v", a, err)
		}
	})
}

// TestHugeCosts: costs beyond what a limit can ever take are refused
// without overflowing, and the counters stay usable.
func TestHugeCosts(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		r := rate("per_second", "acme", 1, time.Second, 0)
		q := quota("monthly", "acme", 10, ratelimit.Month)
		for _, cost := range []int64{ratelimit.MaxCredits, 1 << 40, 11} {
			r.Cost, q.Cost = cost, cost
			for _, l := range []ratelimit.Limit{r, q} {
				out := take(t, e.store, &ratelimit.Request{Limits: []ratelimit.Limit{l}})
				if out.Allowed || out.Limits[0].Remaining < 0 || out.RetryAfter < 0 {
					t.Errorf("%s cost %d: %+v, want refused with sane numbers", l.Name, cost, out)
				}
			}
		}
		r.Cost, q.Cost = 1, 1
		if out := take(t, e.store, &ratelimit.Request{Limits: []ratelimit.Limit{r, q}}); !out.Allowed || out.Limits[1].Remaining != 9 {
			t.Errorf("a normal request after the huge ones: %+v", out)
		}
	})
}

// TestLostReplyIsRefunded: a Take whose reply is lost (Redis ran it, the
// answer never arrived) is refused — and, once it can no longer run, its
// void finds its ledger entry and refunds it, with the quota it counted,
// so a refused request never costs the customer.
func TestLostReplyIsRefunded(t *testing.T) {
	srv := redistest.Start(t)
	proxy := newDropProxy(t, srv.Addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	eng, err := ratelimit.NewEngine(ratelimit.NewRedisStore(client, 500*time.Millisecond), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := eng.Store().Credit(ctx, "acme", 20, "seed"); err != nil {
		t.Fatal(err)
	}
	req := func() *ratelimit.Request {
		return &ratelimit.Request{Limits: []ratelimit.Limit{quota("monthly", "acme", 100, ratelimit.Month)},
			Charge: &ratelimit.Charge{Account: "acme", Credits: 5}}
	}
	if out, err := eng.Take(ctx, req()); err != nil || out.Balance != 15 { // loads the script
		t.Fatalf("first take: %+v %v", out, err)
	}
	proxy.dropNextReply.Store(true)
	_, err = eng.Take(ctx, req())
	if !errors.Is(err, ratelimit.ErrStoreUnavailable) {
		t.Fatalf("Take with its reply dropped: %v, want ErrStoreUnavailable", err)
	}
	if proxy.dropped.Load() != 1 {
		t.Fatalf("the proxy dropped %d replies, want 1", proxy.dropped.Load())
	}
	// Taken, and the void waits until the Take can no longer run (see
	// TestVoidWindow) — unless a slow machine took that long already, when
	// the void may have run: either state, never another.
	if b, used := balance(t, eng.Store(), "acme"), quotaUsed(t, eng.Store(), "acme"); (b != 10 || used != 2) && (b != 15 || used != 1) {
		t.Fatalf("balance %d, quota used %d: want 10 and 2 (taken, not voided yet) or 15 and 1 (voided)", b, used)
	}
	runUntil(t, eng, "the lost Take was never voided", func() bool { return balance(t, eng.Store(), "acme") == 15 })
	if used := quotaUsed(t, eng.Store(), "acme"); used != 1 {
		t.Errorf("quota used %d after the void, want 1 (the lost Take's given back)", used)
	}
}

// TestNoKeyPerRequest: a charged request leaves nothing in Redis but its
// counters, its balance and its ledger entry — no key per request — and a
// void leaves one small marker for the voided request only.
func TestNoKeyPerRequest(t *testing.T) {
	srv := redistest.Start(t)
	store := ratelimit.NewRedisStore(srv.Client(), time.Second)
	ctx := context.Background()
	if _, err := store.Credit(ctx, "acme", 1000, "seed"); err != nil {
		t.Fatal(err)
	}
	keys := func() []string {
		k, err := srv.Client().Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(k)
		return k
	}
	id := 0
	req := func() *ratelimit.Request {
		id++
		return &ratelimit.Request{ID: fmt.Sprint("r", id), Limits: []ratelimit.Limit{
			// A rate whose counter outlives the test however slow the
			// machine: 1,000 per second would let the key expire between
			// two Takes (its TTL is the TAT's distance, 1 ms a Take).
			rate("per_hour", "acme", 10000, time.Hour, 0), quota("monthly", "acme", 1000, ratelimit.Month)},
			Charge: &ratelimit.Charge{Account: "acme", Credits: 1}}
	}
	take(t, store, req())
	before := keys()
	for range 200 {
		take(t, store, req())
	}
	if after := keys(); !slices.Equal(after, before) {
		t.Fatalf("keys after 200 more charged requests: %v, want %v", after, before)
	}
	if n, err := srv.Client().XLen(ctx, "tollgate:{ledger}:ledger").Result(); err != nil || n != 202 {
		t.Errorf("ledger stream holds %d entries (%v), want 202 (a top-up, 201 charges)", n, err)
	}
	r := req()
	take(t, store, r)
	if n, err := store.Void(ctx, r, "test"); err != nil || n != 1 {
		t.Fatalf("Void = %d, %v", n, err)
	}
	if added := len(keys()) - len(before); added != 1 {
		t.Errorf("a void added %d keys, want 1 (its marker)", added)
	}
}

// lostVoids is a Redis store reached through two proxies: Takes through
// one that can drop a reply, voids (their own client) through one that can
// refuse connections.
type lostVoids struct {
	store        *ratelimit.RedisStore
	proxy, voids *dropProxy
}

func newLostVoids(t *testing.T) *lostVoids {
	t.Helper()
	srv := redistest.Start(t)
	l := &lostVoids{proxy: newDropProxy(t, srv.Addr), voids: newDropProxy(t, srv.Addr)}
	client := redis.NewClient(&redis.Options{Addr: l.proxy.addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	voidClient := redis.NewClient(&redis.Options{Addr: l.voids.addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close(); voidClient.Close() })
	l.store = ratelimit.NewRedisStore(client, 500*time.Millisecond)
	l.store.SetVoidClient(voidClient)
	if _, err := l.store.Credit(context.Background(), "acme", 20, "seed"); err != nil {
		t.Fatal(err)
	}
	return l
}

// takeLost runs first (which loads the script), then req with its reply
// dropped and its void refused: req is charged (or reserved) in Redis and
// its void waits in eng's queue.
func (l *lostVoids) takeLost(t *testing.T, eng *ratelimit.Engine, first, req *ratelimit.Request) {
	t.Helper()
	if _, err := eng.Take(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	l.voids.refuse.Store(true)
	l.proxy.dropNextReply.Store(true)
	if _, err := eng.Take(context.Background(), req); !errors.Is(err, ratelimit.ErrStoreUnavailable) {
		t.Fatalf("Take with its reply dropped: %v, want ErrStoreUnavailable", err)
	}
}

// runUntil runs eng.Run until cond holds (failing after 10 s), then stops it.
func runUntil(t *testing.T, eng *ratelimit.Engine, what string, cond func() bool) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			stop()
			<-done
			t.Fatal(what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func paid5() *ratelimit.Request {
	return &ratelimit.Request{Charge: &ratelimit.Charge{Account: "acme", Credits: 5}}
}

// TestFailedVoidIsRetried: the reply of a charged Take is lost and its
// void cannot reach Redis either (its own connection is refused): the void
// waits, Run retries it once Redis can be reached, and the charge is
// refunded.
func TestFailedVoidIsRetried(t *testing.T) {
	l := newLostVoids(t)
	reg := prometheus.NewPedanticRegistry()
	eng, err := ratelimit.NewEngine(l.store, ratelimit.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	l.takeLost(t, eng, paid5(), paid5())
	if b := balance(t, l.store, "acme"); b != 10 {
		t.Fatalf("balance %d: want 10 (charged, the void not through yet)", b)
	}
	if got := gaugeValue(t, reg, "tollgate_voids_pending"); got != 1 {
		t.Fatalf("tollgate_voids_pending = %v, want 1", got)
	}
	l.voids.refuse.Store(false)
	runUntil(t, eng, "the pending void was never retried", func() bool { return balance(t, l.store, "acme") == 15 })
	if got := gaugeValue(t, reg, "tollgate_voids_pending"); got != 0 {
		t.Errorf("tollgate_voids_pending = %v after the retry, want 0", got)
	}
}

// TestFailedVoidReleasesReservation: the same with a reserving Take that
// counts a quota: the retried void (a copy of the request) releases the
// reservation and gives back the quota.
func TestFailedVoidReleasesReservation(t *testing.T) {
	l := newLostVoids(t)
	eng, err := ratelimit.NewEngine(l.store, ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.takeLost(t, eng, reserving("acme", "r0", 5), reserving("acme", "r1", 5))
	if b := balance(t, l.store, "acme"); b != 10 {
		t.Fatalf("balance %d: want 10 (two reservations held, the void not through yet)", b)
	}
	l.voids.refuse.Store(false)
	runUntil(t, eng, "the retried void never released the reservation", func() bool { return balance(t, l.store, "acme") == 15 })
	if used := quotaUsed(t, l.store, "acme"); used != 1 {
		t.Errorf("monthly quota used %d, want 1 (r0's; r1's given back)", used)
	}
}

// TestPendingVoidSurvivesRestart: a void that cannot reach Redis is kept
// in the PendingStore (PostgreSQL); the engine stops with it pending; a
// new engine (a restarted Tollgate) loads it, gets it through and deletes
// it.
func TestPendingVoidSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	if err := pgsink.Migrate(ctx, db.Pool()); err != nil {
		t.Fatal(err)
	}
	book := pgsink.New(db.Pool())
	l := newLostVoids(t)
	first, err := ratelimit.NewEngine(l.store, ratelimit.Options{Pending: book})
	if err != nil {
		t.Fatal(err)
	}
	l.takeLost(t, first, paid5(), paid5())
	kept := func() []ratelimit.Pending {
		items, err := book.LoadPending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return items
	}
	// Runs (failing to void: Redis still refuses it) until the void is kept.
	runUntil(t, first, "the failed void was never kept in PostgreSQL", func() bool { return len(kept()) == 1 })
	if p := kept()[0]; p.Kind != "void" || p.Account != "acme" || p.Credits != 5 || p.ID == "" {
		t.Fatalf("pending kept as %+v", p)
	}
	if b := balance(t, l.store, "acme"); b != 10 {
		t.Fatalf("balance %d, want 10 (charged, not voided yet)", b)
	}

	l.voids.refuse.Store(false)
	second, err := ratelimit.NewEngine(l.store, ratelimit.Options{Pending: book})
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, second, "the restarted engine never voided the pending Take, or kept it after",
		func() bool { return balance(t, l.store, "acme") == 15 && len(kept()) == 0 })
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// dropProxy forwards TCP to Redis and can swallow one reply.
type dropProxy struct {
	addr          string
	dropNextReply atomic.Bool
	dropped       atomic.Int64
	refuse        atomic.Bool // close every new connection at once
}

func newDropProxy(t *testing.T, target string) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.refuse.Load() {
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						if p.dropNextReply.CompareAndSwap(true, false) {
							p.dropped.Add(1)
						} else if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}
