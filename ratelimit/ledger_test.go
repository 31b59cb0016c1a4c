package ratelimit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/ledgertest"
)

// ledgerStores are the memory store, one Redis and a 3-master Redis Cluster.
func ledgerStores(t *testing.T, f func(t *testing.T, store ratelimit.Store, src ledger.Source)) {
	t.Run("memory", func(t *testing.T) {
		m := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
		f(t, m, m)
	})
	t.Run("redis", func(t *testing.T) {
		r := ratelimit.NewRedisStore(redistest.Start(t).Client(), time.Second)
		r.SetLedgerMaxLen(0)
		f(t, r, r)
	})
	t.Run("cluster", func(t *testing.T) {
		r := ratelimit.NewRedisStore(redistest.StartCluster(t, 3).Client(), time.Second)
		r.SetLedgerMaxLen(0)
		f(t, r, r)
	})
}

// TestLedgerRecordsEveryBalanceChange: top-ups, charges and refunds each
// leave one ledger entry, written with the change; refused requests leave
// none; shipped, each account's ledger sums to its balance, exactly once
// however often it is shipped, and the store forgets what was shipped.
func TestLedgerRecordsEveryBalanceChange(t *testing.T) {
	ledgerStores(t, func(t *testing.T, store ratelimit.Store, src ledger.Source) {
		ctx := context.Background()
		eng, err := ratelimit.NewEngine(store, ratelimit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		accounts := []string{"acme", "globex", "initech", "umbrella", "hooli"} // several slots
		for i, a := range accounts {
			if _, err := eng.Credit(ctx, a, int64(10*(i+1)), "topup-1"); err != nil {
				t.Fatal(err)
			}
			if _, err := eng.Credit(ctx, a, int64(10*(i+1)), "topup-1"); err != nil { // a replay: applied once
				t.Fatal(err)
			}
		}
		charges := 0
		for round := range 3 {
			for _, a := range accounts {
				out, err := eng.Take(ctx, &ratelimit.Request{
					Limits:   []ratelimit.Limit{quota("monthly", a, 100, ratelimit.Month)},
					Charge:   &ratelimit.Charge{Account: a, Credits: 4},
					Consumer: a, Revision: "rev1",
				})
				if err != nil {
					t.Fatal(err)
				}
				if out.Allowed {
					charges++
				} else if round == 0 {
					t.Fatalf("%s: first charge refused: %+v", a, out)
				}
			}
		}
		// A caller gone by the time its request was taken: refunded.
		gone, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := eng.Take(gone, &ratelimit.Request{Charge: &ratelimit.Charge{Account: "acme", Credits: 2}, Consumer: "acme"}); err == nil {
			t.Fatal("Take for a gone caller succeeded")
		}

		book := ledgertest.NewBook()
		ledgertest.ShipAll(t, src, book, 3)
		sums, kinds := book.Sums()
		for _, a := range accounts {
			bal, err := eng.Account(ctx, a)
			if err != nil {
				t.Fatal(err)
			}
			if sums[a] != bal.Balance {
				t.Errorf("%s: ledger sums to %d, balance is %d", a, sums[a], bal.Balance)
			}
		}
		// The gone caller's request: the memory store took it and refunded
		// it; go-redis never sent it (its context was done), so Redis has
		// neither a charge nor a refund.
		wantCharges, wantRefunds := charges, 0
		if _, isMemory := store.(*ratelimit.MemoryStore); isMemory {
			wantCharges, wantRefunds = charges+1, 1
		}
		if kinds[ledger.TopUp] != len(accounts) || kinds[ledger.Charge] != wantCharges || kinds[ledger.Refund] != wantRefunds {
			t.Errorf("entries by kind %v; want %d top-ups, %d charges, %d refunds", kinds, len(accounts), wantCharges, wantRefunds)
		}

		// Shipped again from scratch (a lost checkpoint): nothing twice.
		ledgertest.ShipAll(t, src, book.Restarted(), 0)
		if s2, _ := book.Sums(); fmt.Sprint(s2) != fmt.Sprint(sums) {
			t.Errorf("after shipping again: %v, want %v", s2, sums)
		}
		// What was shipped stays in Redis for the trim lag (voids look
		// there), then is trimmed.
		left, err := src.Read(ctx, allFromStart(src), 10)
		if err != nil {
			t.Fatal(err)
		}
		rs, isRedis := store.(*ratelimit.RedisStore)
		if isRedis && len(left) == 0 {
			t.Errorf("shipped entries trimmed within the trim lag")
		}
		if isRedis {
			rs.SetTrimLag(0)
			if err := src.Trim(ctx, nil); err != nil { // a later pass trims what the lag held back
				t.Fatal(err)
			}
			if left, err = src.Read(ctx, allFromStart(src), 10); err != nil || len(left) != 0 {
				t.Errorf("shipped entries still in the store past the trim lag: %v, %v", left, err)
			}
		}
	})
}

func allFromStart(src ledger.Source) map[string]string {
	m := map[string]string{}
	for _, s := range src.Streams() {
		m[s] = ""
	}
	return m
}
