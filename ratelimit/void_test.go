package ratelimit_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/ledgertest"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// TestVoidWindow: once it has read Redis's clock, the store knows within
// a few tens of ms when each Take ran (the window a void searches is about
// the store timeout wide, not twice the clock skew), and every Take's
// ledger time lies inside its window.
func TestVoidWindow(t *testing.T) {
	srv := redistest.Start(t)
	timeout := 200 * time.Millisecond // a Take must not time out on a busy machine
	store := ratelimit.NewRedisStore(srv.Client(), timeout)
	ctx := context.Background()
	if _, err := store.Credit(ctx, "acme", 1000, "seed"); err != nil {
		t.Fatal(err)
	}
	take(t, store, paidRequest("acme")) // reads Redis's clock
	windows := map[string][2]int64{}
	for i := range 50 { // of the monthly quota of 100
		req := paidRequest("acme")
		req.ID = "w" + strconv.Itoa(i)
		take(t, store, req)
		lo, hi := ratelimit.VoidWindow(req)
		if w := time.Duration(hi-lo) * time.Microsecond; w > timeout+100*time.Millisecond {
			t.Fatalf("Take %d: window %v wide, want about the store timeout (%v)", i, w, timeout)
		}
		windows[req.ID] = [2]int64{lo, hi}
	}
	entries, err := srv.Client().XRange(ctx, "tollgate:{ledger}:ledger", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range entries {
		w, ok := windows[e.Values["r"].(string)]
		if !ok {
			continue
		}
		seen++
		at, _ := strconv.ParseInt(e.Values["t"].(string), 10, 64)
		if at < w[0] || at > w[1] {
			t.Errorf("Take %s ran at %d, outside its window [%d, %d]", e.Values["r"], at, w[0], w[1])
		}
	}
	if seen != len(windows) {
		t.Errorf("found %d of %d Takes in the ledger", seen, len(windows))
	}
}

// TestVoidAsksDurableLedger: a lost Take whose ledger entries were
// shipped to PostgreSQL and trimmed from Redis before its void ran is
// found in PostgreSQL and refunded once; one that never ran is not
// refunded; without a durable ledger the void says it cannot tell.
func TestVoidAsksDurableLedger(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	if err := pgsink.Migrate(ctx, db.Pool()); err != nil {
		t.Fatal(err)
	}
	book := pgsink.New(db.Pool())
	l := newLostVoids(t)
	l.store.SetLedgerMaxLen(0)
	l.store.SetTrimLag(0)
	reg := prometheus.NewPedanticRegistry()
	eng, err := ratelimit.NewEngine(l.store, ratelimit.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	lost := paid5()
	l.takeLost(t, eng, paid5(), lost)
	never := paid5()
	never.ID = "never-ran"
	never.Deadline = time.Now().Add(-time.Second)
	if _, err := l.store.Take(ctx, never); !errors.Is(err, ratelimit.ErrDeadline) {
		t.Fatalf("Take past its deadline: %v", err)
	}
	// Shipped and trimmed (lag 0) before the voids run; one more charge
	// afterwards, so the stream is not empty.
	ledgertest.ShipAll(t, l.store, book, 0)
	l.proxy.dropNextReply.Store(false)
	l.voids.refuse.Store(false)
	take(t, l.store, paid5())
	ledgertest.ShipAll(t, l.store, book, 0)
	if b := balance(t, l.store, "acme"); b != 5 {
		t.Fatalf("balance %d, want 5 (three charges of 5)", b)
	}

	// Without the durable ledger: it cannot tell.
	if _, err := l.store.Void(ctx, lost, "void"); !errors.Is(err, ratelimit.ErrVoidUnresolved) {
		t.Fatalf("Void with the window trimmed and no durable ledger: %v, want ErrVoidUnresolved", err)
	}
	l.store.SetDurableLedger(book.FindCharge)
	for i := range 2 {
		if n, err := l.store.Void(ctx, lost, "void"); err != nil || n != 5*int64(1-i) {
			t.Errorf("Void #%d of the lost Take = %d, %v; want %d", i+1, n, err, 5*(1-i))
		}
	}
	if n, err := l.store.Void(ctx, never, "void"); err != nil || n != 0 {
		t.Errorf("Void of the Take that never ran = %d, %v; want 0", n, err)
	}
	if b := balance(t, l.store, "acme"); b != 10 {
		t.Errorf("balance %d, want 10 (the lost Take refunded once)", b)
	}
}

// TestPoolTimeoutIsNotVoided: a Take that never left the process (no
// connection free in the pool) is refused without a void: there is nothing
// to undo, and the void path stays free for Takes that may have run.
func TestPoolTimeoutIsNotVoided(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 1, PoolTimeout: 20 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	reg := prometheus.NewPedanticRegistry()
	eng, err := ratelimit.NewEngine(ratelimit.NewRedisStore(client, 50*time.Millisecond), ratelimit.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// The only connection waits in BLPOP until released.
	blocked := make(chan error, 1)
	go func() { blocked <- client.BLPop(context.Background(), 0, "release").Err() }()
	for {
		if n, err := srv.Client().ClientList(context.Background()).Result(); err == nil && countBlocked(n) == 1 {
			break
		}
	}
	if _, err := eng.Take(context.Background(), paid5()); !errors.Is(err, ratelimit.ErrStoreUnavailable) || !errors.Is(err, redis.ErrPoolTimeout) {
		t.Fatalf("Take with no connection free: %v, want ErrStoreUnavailable from a pool timeout", err)
	}
	if got := gaugeValue(t, reg, "tollgate_voids_pending"); got != 0 {
		t.Errorf("tollgate_voids_pending = %v, want 0 (nothing was sent)", got)
	}
	if err := srv.Client().RPush(context.Background(), "release", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
}

// countBlocked counts the clients of a CLIENT LIST blocked in a command.
func countBlocked(list string) int {
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, "cmd=blpop") {
			n++
		}
	}
	return n
}

// TestMemoryVoidRealClock: with the real clock (sub-µs times), the memory
// store's refund of a gone caller's charge finds the quota period it
// counted and gives it back.
func TestMemoryVoidRealClock(t *testing.T) {
	m := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	eng, err := ratelimit.NewEngine(m, ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	credit(t, m, "acme", 10)
	take(t, m, paidRequest("acme"))
	for range 20 {
		gone, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := eng.Take(gone, paidRequest("acme")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Take for a gone caller: %v", err)
		}
	}
	if b, used := balance(t, m, "acme"), quotaUsed(t, m, "acme"); b != 9 || used != 1 {
		t.Errorf("balance %d, quota used %d; want 9 and 1 (20 gone callers refunded, quotas given back)", b, used)
	}
}

// TestVoidFindsTakeAddedLate: a Take whose script began inside its window
// but added its ledger entry much later (Redis stopped mid-script, as a
// SIGSTOP, a VM pause or swapping do) is found by its void and refunded:
// the void goes by when the entry's script began ("t"), not by the
// entry's id. The fault test's Redis pauses found this: one charge in
// about 7,000 stayed charged for a refused request.
func TestVoidFindsTakeAddedLate(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	store := ratelimit.NewRedisStore(c, time.Second)
	ctx := context.Background()
	if _, err := store.Credit(ctx, "acme", 100, "seed"); err != nil {
		t.Fatal(err)
	}
	take(t, store, paidRequest("acme")) // reads Redis's clock
	req := paidRequest("acme")
	req.ID = "added-late"
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if _, err := store.Take(tctx, req); err != nil {
		t.Fatal(err)
	}
	cancel()
	lo, hi := ratelimit.VoidWindow(req)
	const stream = "tollgate:{ledger}:ledger"
	entries, err := c.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var charge redis.XMessage
	for _, e := range entries {
		if e.Values["r"] == "added-late" {
			charge = e
		}
	}
	at, _ := strconv.ParseInt(charge.Values["t"].(string), 10, 64)
	if charge.ID == "" || at < lo || at > hi {
		t.Fatalf("the Take's entry %v, began at %d: want one within [%d, %d]", charge, at, lo, hi)
	}
	// The same entry, as if added 1.5 s after its script began, behind 20
	// other requests' entries that began within the window too (the void
	// reads past the window a few at a time: it must page to reach it).
	late := strconv.FormatInt(hi/1000+1500, 10) + "-0"
	if err := c.XDel(ctx, stream, charge.ID).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		other := map[string]any{}
		for k, v := range charge.Values {
			other[k] = v
		}
		other["r"] = "other-" + strconv.Itoa(i)
		id := strconv.FormatInt(hi/1000+1000, 10) + "-" + strconv.Itoa(i+1)
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: id, Values: other}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: late, Values: charge.Values}).Err(); err != nil {
		t.Fatal(err)
	}
	ratelimit.ForgetOutcome(req) // its reply was lost
	var refunded int64
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Too early until Redis's clock passes hi, the latest the Take
		// could have begun.
		if refunded, err = store.Void(ctx, req, "test"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Void: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if refunded != 1 {
		t.Errorf("Void refunded %d, want the 1 credit the Take charged", refunded)
	}
	if b := balance(t, store, "acme"); b != 99 {
		t.Errorf("balance %d, want 99 (the first Take charged, the late one refunded)", b)
	}
}

// TestMemoryRefundsKeepOneExpiryItem: a quota given back to 0 by a refund
// keeps its counter (and its one expiry item): Take-then-refund cycles do
// not grow the expiry heap, which only the end of the period would empty.
func TestMemoryRefundsKeepOneExpiryItem(t *testing.T) {
	m := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	eng, err := ratelimit.NewEngine(m, ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	credit(t, m, "acme", 10)
	for range 1000 {
		gone, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := eng.Take(gone, paidRequest("acme")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Take for a gone caller: %v", err)
		}
	}
	if n := m.ExpiryItems(); n > 2 {
		t.Errorf("%d expiry items after 1,000 refunded Takes of one quota, want at most 2", n)
	}
	if used := quotaUsed(t, m, "acme"); used != 0 {
		t.Errorf("quota used %d after refunds only, want 0", used)
	}
}
