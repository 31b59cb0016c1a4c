package ratelimit_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
)

// book is a ledger.Checkpointer in memory: the durable side of a test, one
// entry per ID, with the checkpoints written in the same step.
type book struct {
	mu      sync.Mutex
	entries map[string]ledger.Entry
	order   []string
	cps     map[string]string
	fail    error // returned by WriteFrom while set
}

func newBook() *book { return &book{entries: map[string]ledger.Entry{}, cps: map[string]string{}} }

func (b *book) Checkpoints(context.Context) (map[string]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.cps), nil
}

func (b *book) WriteFrom(_ context.Context, stream string, entries []ledger.Entry, pos string) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return 0, b.fail
	}
	n := int64(0)
	for _, e := range entries {
		if _, ok := b.entries[e.ID]; !ok {
			b.entries[e.ID] = e
			b.order = append(b.order, e.ID)
			n++
		}
	}
	b.cps[stream] = pos
	return n, nil
}

// sums returns each account's ledger sum and entry count by kind.
func (b *book) sums() (map[string]int64, map[ledger.Kind]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sum, kinds := map[string]int64{}, map[ledger.Kind]int{}
	for _, e := range b.entries {
		sum[e.Account] += e.Amount
		kinds[e.Kind]++
	}
	return sum, kinds
}

// shipAll ships until a pass finds nothing.
func shipAll(t *testing.T, s *ledger.Shipper) {
	t.Helper()
	for range 100 {
		n, err := s.Once(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("shipping never ended")
}

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

		book := newBook()
		sh, err := ledger.NewShipper(src, book, ledger.ShipOptions{Batch: 3})
		if err != nil {
			t.Fatal(err)
		}
		shipAll(t, sh)
		sums, kinds := book.sums()
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
		again, err := ledger.NewShipper(src, newBookFrom(book), ledger.ShipOptions{})
		if err != nil {
			t.Fatal(err)
		}
		shipAll(t, again)
		if s2, _ := book.sums(); fmt.Sprint(s2) != fmt.Sprint(sums) {
			t.Errorf("after shipping again: %v, want %v", s2, sums)
		}
		// What was shipped is trimmed from Redis.
		left, err := src.Read(ctx, allFromStart(src), 10)
		if err != nil {
			t.Fatal(err)
		}
		if _, isMemory := store.(*ratelimit.MemoryStore); !isMemory && len(left) != 0 {
			t.Errorf("shipped entries still in the store: %v", left)
		}
	})
}

// newBookFrom shares b's entries but starts with no checkpoints.
func newBookFrom(b *book) *book {
	return &book{entries: b.entries, cps: map[string]string{}, order: b.order}
}

func allFromStart(src ledger.Source) map[string]string {
	m := map[string]string{}
	for _, s := range src.Streams() {
		m[s] = ""
	}
	return m
}
