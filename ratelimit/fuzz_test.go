package ratelimit_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// TestTakeRefusesInvalid: limits that would make the stores divide by zero
// or panic are refused by Take with ErrInvalidRequest, on both stores.
func TestTakeRefusesInvalid(t *testing.T) {
	rdb := redistest.Start(t)
	stores := map[string]ratelimit.Store{
		"memory": ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}),
		"redis":  ratelimit.NewRedisStore(rdb.Client(), time.Second),
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  ratelimit.Request
		want string
	}{
		{"unknown period", ratelimit.Request{Limits: []ratelimit.Limit{{Name: "q", Key: "k", Limit: 5, Period: "fortnight"}}}, `"fortnight" is not a period`},
		{"zero limit", ratelimit.Request{Limits: []ratelimit.Limit{{Name: "r", Key: "k", Limit: 0, Window: time.Second}}}, `"limit" must be a positive integer`},
		{"negative window", ratelimit.Request{Limits: []ratelimit.Limit{{Name: "r", Key: "k", Limit: 1, Window: -time.Second}}}, `must be positive`},
		{"window and period", ratelimit.Request{Limits: []ratelimit.Limit{{Name: "r", Key: "k", Limit: 1, Window: time.Second, Period: ratelimit.Day}}}, `set exactly one of`},
		{"neither window nor period", ratelimit.Request{Limits: []ratelimit.Limit{{Name: "r", Key: "k", Limit: 1}}}, `set exactly one of`},
		{"no name", ratelimit.Request{Limits: []ratelimit.Limit{{Key: "k", Limit: 1, Window: time.Second}}}, `"name" is required`},
		{"negative cost", ratelimit.Request{Limits: []ratelimit.Limit{{Name: "r", Key: "k", Limit: 1, Window: time.Second, Cost: -1}}}, `"cost" must not be negative`},
		{"burst on a quota", ratelimit.Request{Limits: []ratelimit.Limit{{Name: "q", Key: "k", Limit: 1, Period: ratelimit.Day, Burst: 2}}}, `"burst" applies to rate limits`},
		{"time zone on a rate", ratelimit.Request{Limits: []ratelimit.Limit{{Name: "r", Key: "k", Limit: 1, Window: time.Second, Location: berlin}}}, `"timezone" applies to period quotas only`},
		{"zero credits", ratelimit.Request{Charge: &ratelimit.Charge{Account: "a", Credits: 0}}, `must be at least 1`},
		{"no account", ratelimit.Request{Charge: &ratelimit.Charge{Credits: 1}}, `"account" is required`},
		{"negative overdraft", ratelimit.Request{Charge: &ratelimit.Charge{Account: "a", Credits: 1, Overdraft: -1}}, `must not be negative`},
		{"account not UTF-8", ratelimit.Request{Charge: &ratelimit.Charge{Account: "bad\xff", Credits: 1}}, `account: "bad\xff" is not valid UTF-8 text without NUL`},
		{"consumer with NUL", ratelimit.Request{Charge: &ratelimit.Charge{Account: "a", Credits: 1}, Consumer: "c\x00"}, `consumer: "c\x00" is not valid UTF-8`},
	}
	for name, store := range stores {
		eng, err := ratelimit.NewEngine(store, ratelimit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				req := tt.req
				out, err := eng.Take(context.Background(), &req)
				if !errors.Is(err, ratelimit.ErrInvalidRequest) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Take = %+v, %v; want ErrInvalidRequest containing %q", out, err, tt.want)
				}
			})
		}
	}
}

// FuzzTake feeds arbitrary limits and charges to Take on both stores: an
// invalid request is refused with ErrInvalidRequest, a valid one is
// answered by each store without an error or a panic, with one state per
// limit, and an allowed request is never marked denied. A request that is
// not allowed takes nothing: the account's balance and quota usage (the
// account is the limit's key) are what they were.
func FuzzTake(f *testing.F) {
	rdb := redistest.Start(f)
	mem := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	red := ratelimit.NewRedisStore(rdb.Client(), 5*time.Second)
	engines := map[string]*ratelimit.Engine{}
	for name, s := range map[string]ratelimit.Store{"memory": mem, "redis": red} {
		eng, err := ratelimit.NewEngine(s, ratelimit.Options{})
		if err != nil {
			f.Fatal(err)
		}
		engines[name] = eng
	}
	f.Add("per_second", "acme", int64(5), int64(time.Second), "", int64(10), int64(1), false, false, int64(0), int64(0))
	f.Add("monthly", "acme", int64(100), int64(0), "month", int64(0), int64(3), true, false, int64(2), int64(5))
	f.Add("q", "k", int64(5), int64(0), "fortnight", int64(0), int64(1), false, false, int64(0), int64(0))
	f.Add("r", "k", int64(0), int64(time.Second), "", int64(0), int64(1), false, true, int64(1), int64(0))
	f.Add("r", "{k}:x%", int64(1<<53-1), int64(366*24*time.Hour), "", int64(1<<53-1), int64(1<<53-1), false, false, int64(1<<53-1), int64(1<<53-1))
	// A limit that refuses (cost above capacity) with a charge that could
	// be paid from the overdraft: nothing may be taken.
	f.Add("r", "payer", int64(1), int64(time.Second), "", int64(0), int64(2), false, false, int64(1), int64(10))
	f.Add("q", "payer", int64(1), int64(0), "day", int64(0), int64(2), false, false, int64(1), int64(10))
	f.Add("", "", int64(-1), int64(-1), "day", int64(-1), int64(-1), true, true, int64(-1), int64(-1))
	f.Fuzz(func(t *testing.T, name, key string, limit, window int64, period string, burst, cost int64, overage, shadow bool, credits, overdraft int64) {
		req := ratelimit.Request{Limits: []ratelimit.Limit{{
			Name: name, Key: key, Limit: limit, Window: time.Duration(window), Period: ratelimit.Period(period),
			Burst: burst, Cost: cost, Overage: overage, Shadow: shadow,
		}}}
		if credits != 0 {
			req.Charge = &ratelimit.Charge{Account: key, Credits: credits, Overdraft: overdraft}
		}
		valid := req.Validate() == nil
		ctx := context.Background()
		for name, eng := range engines {
			var before *ratelimit.Account
			if key != "" {
				var err error
				if before, err = eng.Account(ctx, key); err != nil {
					t.Fatalf("%s: Account(%q): %v", name, key, err)
				}
			}
			r := req
			r.Limits = append([]ratelimit.Limit(nil), req.Limits...)
			out, err := eng.Take(ctx, &r)
			if before != nil && (err != nil || !out.Allowed) {
				after, aerr := eng.Account(ctx, key)
				if aerr != nil {
					t.Fatalf("%s: Account(%q): %v", name, key, aerr)
				}
				if after.Balance != before.Balance || !slices.Equal(after.Quotas, before.Quotas) {
					t.Fatalf("%s: refused request %+v (%v) changed the account: %+v → %+v", name, req, err, before, after)
				}
			}
			switch {
			case !valid:
				if !errors.Is(err, ratelimit.ErrInvalidRequest) {
					t.Fatalf("%s: invalid request %+v: Take = %+v, %v; want ErrInvalidRequest", name, req, out, err)
				}
			case err != nil || out.Degraded:
				t.Fatalf("%s: valid request %+v: Take = %+v, %v", name, req, out, err)
			case len(out.Limits) != len(r.Limits):
				t.Fatalf("%s: %d limit states for %d limits", name, len(out.Limits), len(r.Limits))
			case out.Allowed && out.Denied != -1:
				t.Fatalf("%s: allowed but Denied = %d", name, out.Denied)
			}
		}
	})
}
