package ratelimit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/ledgertest"
)

// settleEnv is a store under test with its ledger and its time: the memory
// store's fake clock, or real waiting for Redis (whose TIME rules) with a
// short settle timeout.
type settleEnv struct {
	store   ratelimit.Store
	src     ledger.Source
	eng     *ratelimit.Engine
	advance func(time.Duration)
	timeout time.Duration
}

// settleStores runs f on the memory store, one Redis and a 3-master Cluster.
func settleStores(t *testing.T, f func(t *testing.T, e *settleEnv)) {
	run := func(t *testing.T, s ratelimit.Store, src ledger.Source, advance func(time.Duration), timeout time.Duration) {
		eng, err := ratelimit.NewEngine(s, ratelimit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		f(t, &settleEnv{store: s, src: src, eng: eng, advance: advance, timeout: timeout})
	}
	t.Run("memory", func(t *testing.T) {
		c := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
		m := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: c.Now, SettleTimeout: time.Minute})
		run(t, m, m, c.Advance, time.Minute)
	})
	const redisTimeout = 300 * time.Millisecond
	t.Run("redis", func(t *testing.T) {
		r := ratelimit.NewRedisStore(redistest.Start(t).Client(), time.Second)
		r.SetLedgerMaxLen(0)
		r.SetSettleTimeout(redisTimeout)
		run(t, r, r, time.Sleep, redisTimeout)
	})
	t.Run("cluster", func(t *testing.T) {
		r := ratelimit.NewRedisStore(redistest.StartCluster(t, 3).Client(), time.Second)
		r.SetLedgerMaxLen(0)
		r.SetSettleTimeout(redisTimeout)
		run(t, r, r, time.Sleep, redisTimeout)
	})
}

// reserving is a request that reserves credits of account under id, with a
// monthly quota.
func reserving(account, id string, credits int64) *ratelimit.Request {
	return &ratelimit.Request{
		Limits:      []ratelimit.Limit{quota("monthly", account, 100, ratelimit.Month)},
		Charge:      &ratelimit.Charge{Account: account, Credits: credits, Settle: ratelimit.SettleDelivery},
		Reservation: id,
		Consumer:    account,
	}
}

func (e *settleEnv) settle(t *testing.T, account, id string, capture bool, want ratelimit.SettleResult) {
	t.Helper()
	got, err := e.eng.Settle(context.Background(), account, id, capture)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("Settle(%s, %s, capture=%v) = %s, want %s", account, id, capture, got, want)
	}
}

func (e *settleEnv) wantBalance(t *testing.T, account string, want int64) {
	t.Helper()
	if got := balance(t, e.store, account); got != want {
		t.Errorf("balance of %s = %d, want %d", account, got, want)
	}
}

// TestSettleCaptureAndRelease: a reserving Take holds the credits (the
// balance goes down at once); capture keeps them, release gives them back;
// each settles once, and a settle of an id never reserved does nothing.
func TestSettleCaptureAndRelease(t *testing.T) {
	settleStores(t, func(t *testing.T, e *settleEnv) {
		ctx := context.Background()
		credit(t, e.store, "acme", 10)
		out, err := e.eng.Take(ctx, reserving("acme", "req-1", 3))
		if err != nil || !out.Allowed || !out.Reserved || out.Charged != 3 || out.Balance != 7 {
			t.Fatalf("reserving Take = %+v, %v; want allowed, reserved 3, balance 7", out, err)
		}
		e.wantBalance(t, "acme", 7)
		e.settle(t, "acme", "req-1", true, ratelimit.Captured)
		e.wantBalance(t, "acme", 7)
		e.settle(t, "acme", "req-1", true, ratelimit.AlreadySettled)
		e.settle(t, "acme", "req-1", false, ratelimit.AlreadySettled)
		e.wantBalance(t, "acme", 7)

		if out, err := e.eng.Take(ctx, reserving("acme", "req-2", 4)); err != nil || !out.Reserved {
			t.Fatalf("second reserving Take = %+v, %v", out, err)
		}
		e.wantBalance(t, "acme", 3)
		e.settle(t, "acme", "req-2", false, ratelimit.Released)
		e.wantBalance(t, "acme", 7)
		e.settle(t, "acme", "req-2", false, ratelimit.AlreadySettled)
		e.settle(t, "acme", "req-2", true, ratelimit.AlreadySettled)
		e.wantBalance(t, "acme", 7)

		e.settle(t, "acme", "never-reserved", true, ratelimit.Unknown)
		e.settle(t, "globex", "req-1", true, ratelimit.Unknown) // another account's id
		e.wantBalance(t, "acme", 7)
	})
}

// TestDuplicateReservationRefused: a reservation id in use for an account
// (pending, or settled within the settle timeout) is refused with
// ErrDuplicateReservation and takes nothing, so no request rides on
// another's reservation; another account may use the same id.
func TestDuplicateReservationRefused(t *testing.T) {
	settleStores(t, func(t *testing.T, e *settleEnv) {
		ctx := context.Background()
		credit(t, e.store, "acme", 10)
		credit(t, e.store, "globex", 10)
		if out, err := e.eng.Take(ctx, reserving("acme", "dup", 2)); err != nil || !out.Reserved {
			t.Fatalf("first Take = %+v, %v", out, err)
		}
		if out, err := e.eng.Take(ctx, reserving("acme", "dup", 2)); !errors.Is(err, ratelimit.ErrDuplicateReservation) {
			t.Fatalf("repeated id while pending = %+v, %v; want ErrDuplicateReservation", out, err)
		}
		e.wantBalance(t, "acme", 8)
		if used := quotaUsed(t, e.store, "acme"); used != 1 {
			t.Errorf("quota used %d, want 1 (the refused repeat takes nothing)", used)
		}
		e.settle(t, "acme", "dup", true, ratelimit.Captured)
		if _, err := e.eng.Take(ctx, reserving("acme", "dup", 2)); !errors.Is(err, ratelimit.ErrDuplicateReservation) {
			t.Fatalf("repeated id just settled: %v; want ErrDuplicateReservation", err)
		}
		if out, err := e.eng.Take(ctx, reserving("globex", "dup", 2)); err != nil || !out.Reserved {
			t.Fatalf("same id, another account = %+v, %v; want reserved", out, err)
		}
		e.wantBalance(t, "acme", 8)
		e.wantBalance(t, "globex", 8)
	})
}

// TestRefusedTakeReservesNothing: a reserving Take that the balance or a
// limit refuses holds nothing and leaves no reservation.
func TestRefusedTakeReservesNothing(t *testing.T) {
	settleStores(t, func(t *testing.T, e *settleEnv) {
		ctx := context.Background()
		credit(t, e.store, "acme", 2)
		out, err := e.eng.Take(ctx, reserving("acme", "too-dear", 3))
		if err != nil || out.Allowed || out.Reserved || out.Denied != ratelimit.DeniedByCharge {
			t.Fatalf("Take beyond the balance = %+v, %v; want denied by the charge", out, err)
		}
		req := reserving("acme", "over-limit", 1)
		req.Limits[0].Limit, req.Limits[0].Cost = 1, 2
		if out, err := e.eng.Take(ctx, req); err != nil || out.Allowed || out.Reserved {
			t.Fatalf("Take beyond its quota = %+v, %v; want denied", out, err)
		}
		e.wantBalance(t, "acme", 2)
		e.settle(t, "acme", "too-dear", true, ratelimit.Unknown)
		e.settle(t, "acme", "over-limit", true, ratelimit.Unknown)
		if n, err := e.eng.ExpireReservations(ctx); err != nil || n != 0 {
			t.Errorf("ExpireReservations = %d, %v; want nothing to release", n, err)
		}
		// The refused id was never reserved, so it may be used.
		if out, err := e.eng.Take(ctx, reserving("acme", "too-dear", 2)); err != nil || !out.Reserved {
			t.Fatalf("retry of the refused id = %+v, %v; want reserved", out, err)
		}
	})
}

// TestReservationExpires: a reservation that no settle reaches within the
// settle timeout is released by the sweeper (once, however many sweep);
// a late settle then finds it settled, and later the tombstone is forgotten.
func TestReservationExpires(t *testing.T) {
	settleStores(t, func(t *testing.T, e *settleEnv) {
		ctx := context.Background()
		credit(t, e.store, "acme", 10)
		if out, err := e.eng.Take(ctx, reserving("acme", "lost-log", 3)); err != nil || !out.Reserved {
			t.Fatalf("Take = %+v, %v", out, err)
		}
		if out, err := e.eng.Take(ctx, reserving("acme", "delivered", 1)); err != nil || !out.Reserved {
			t.Fatalf("Take = %+v, %v", out, err)
		}
		e.settle(t, "acme", "delivered", true, ratelimit.Captured)
		if n, err := e.eng.ExpireReservations(ctx); err != nil || n != 0 {
			t.Fatalf("before the timeout: ExpireReservations = %d, %v; want 0", n, err)
		}
		e.advance(e.timeout + e.timeout/2)
		// Two replicas sweeping at once release it once.
		total := 0
		for range 2 {
			n, err := e.eng.ExpireReservations(ctx)
			if err != nil {
				t.Fatal(err)
			}
			total += n
		}
		if total != 1 {
			t.Errorf("released %d reservations, want 1", total)
		}
		e.wantBalance(t, "acme", 9) // the captured credit stays taken
		e.settle(t, "acme", "lost-log", true, ratelimit.AlreadySettled)
		e.wantBalance(t, "acme", 9)
		e.advance(e.timeout + e.timeout/2)
		if n, err := e.eng.ExpireReservations(ctx); err != nil || n != 0 {
			t.Fatalf("forgetting tombstones: ExpireReservations = %d, %v; want 0 released", n, err)
		}
		e.settle(t, "acme", "lost-log", true, ratelimit.Unknown)
		e.settle(t, "acme", "delivered", false, ratelimit.Unknown)
		e.wantBalance(t, "acme", 9)
	})
}

// TestGoneCallerReleasesReservation: a reserving Take whose caller has gone
// releases what it reserved (the memory store's Take runs and its
// reservation is released; go-redis never sends it).
func TestGoneCallerReleasesReservation(t *testing.T) {
	settleStores(t, func(t *testing.T, e *settleEnv) {
		credit(t, e.store, "acme", 10)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if out, err := e.eng.Take(ctx, reserving("acme", "gone", 3)); !errors.Is(err, context.Canceled) {
			t.Fatalf("Take for a gone caller = %+v, %v; want context.Canceled", out, err)
		}
		e.wantBalance(t, "acme", 10)
		if _, err := e.eng.Take(context.Background(), reserving("acme", "gone", 3)); err != nil && !errors.Is(err, ratelimit.ErrDuplicateReservation) {
			t.Fatal(err)
		}
	})
}

// TestVoidReleasesReservation: in Redis, voiding a reserving Take whose
// reply was lost releases its reservation (once) and gives back the quota
// it counted, unless the access log captured it first.
func TestVoidReleasesReservation(t *testing.T) {
	r := ratelimit.NewRedisStore(redistest.Start(t).Client(), time.Second)
	ctx := context.Background()
	if _, err := r.Credit(ctx, "acme", 10, "seed"); err != nil {
		t.Fatal(err)
	}
	req := reserving("acme", "lost-reply", 3)
	req.ID = "attempt-1"
	if out := take(t, r, req); !out.Reserved {
		t.Fatalf("Take = %+v, want reserved", out)
	}
	for i, want := range []int64{3, 0} {
		if n, err := r.Void(ctx, req, "void"); err != nil || n != want {
			t.Errorf("Void #%d = %d, %v; want %d", i+1, n, err, want)
		}
	}
	if b, used := balance(t, r, "acme"), quotaUsed(t, r, "acme"); b != 10 || used != 0 {
		t.Errorf("balance %d, quota used %d; want 10 and 0", b, used)
	}
	if res, err := r.Settle(ctx, "acme", "lost-reply", true, "delivered"); err != nil || res != ratelimit.AlreadySettled {
		t.Errorf("Settle after the void = %s, %v; want already_settled", res, err)
	}

	// Captured first: the void gives nothing back.
	req = reserving("acme", "captured-first", 2)
	req.ID = "attempt-2"
	take(t, r, req)
	if res, err := r.Settle(ctx, "acme", "captured-first", true, "delivered"); err != nil || res != ratelimit.Captured {
		t.Fatalf("Settle = %s, %v", res, err)
	}
	if n, err := r.Void(ctx, req, "void"); err != nil || n != 0 {
		t.Errorf("Void of a captured reservation = %d, %v; want 0", n, err)
	}
	if b, used := balance(t, r, "acme"), quotaUsed(t, r, "acme"); b != 8 || used != 1 {
		t.Errorf("balance %d, quota used %d; want 8 and 1 (captured: delivered)", b, used)
	}
}

// TestVoidRestoresQuotas: in Redis, voiding a Take charged at Check
// refunds it and gives back the quotas it counted (their period's counter
// being there); its rate limits stay counted. A void before the Take ran
// gives back nothing.
func TestVoidRestoresQuotas(t *testing.T) {
	r := ratelimit.NewRedisStore(redistest.Start(t).Client(), time.Second)
	ctx := context.Background()
	if _, err := r.Credit(ctx, "acme", 10, "seed"); err != nil {
		t.Fatal(err)
	}
	req := &ratelimit.Request{
		ID: "attempt-1",
		Limits: []ratelimit.Limit{
			rate("per_minute", "acme", 10, time.Minute, 0),
			quota("monthly", "acme", 100, ratelimit.Month),
			quota("daily|odd:name", "acme", 100, ratelimit.Day),
		},
		Charge: &ratelimit.Charge{Account: "acme", Credits: 2},
	}
	req.Limits[1].Cost = 3
	take(t, r, paidRequest("acme")) // another request's quota stays
	take(t, r, req)
	if n, err := r.Void(ctx, req, "void"); err != nil || n != 2 {
		t.Fatalf("Void = %d, %v; want 2 refunded", n, err)
	}
	a, err := r.Account(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]int64{}
	for _, q := range a.Quotas {
		used[q.Name] = q.Used
	}
	if a.Balance != 9 || used["monthly"] != 1 || used["daily|odd:name"] != 0 {
		t.Errorf("after the void: balance %d, quotas %v; want 9, monthly 1 (the other request's), daily 0", a.Balance, used)
	}
	if st := peek(t, r, "acme", rate("per_minute", "acme", 10, time.Minute, 0)); st[0].Remaining != 9 {
		t.Errorf("per_minute remaining %d, want 9 (rates stay counted)", st[0].Remaining)
	}
	if n, err := r.Void(ctx, req, "void"); err != nil || n != 0 {
		t.Errorf("second Void = %d, %v; want 0", n, err)
	}
	if got := quotaUsed(t, r, "acme"); got != 1 {
		t.Errorf("monthly used %d after a second void, want 1", got)
	}
	never := paidRequest("acme")
	never.ID = "never-ran"
	never.Deadline = time.Now().Add(-time.Second) // refused by Redis: it never runs
	if _, err := r.Take(ctx, never); !errors.Is(err, ratelimit.ErrDeadline) {
		t.Fatalf("Take past its deadline: %v, want ErrDeadline", err)
	}
	if n, err := r.Void(ctx, never, "void"); err != nil || n != 0 {
		t.Errorf("Void of a Take that never ran = %d, %v; want 0", n, err)
	}
	if got := quotaUsed(t, r, "acme"); got != 1 {
		t.Errorf("monthly used %d, want 1", got)
	}
}

// TestSettleLedgerSumsToBalance: reserve, capture, release, expire and a
// plain charge each leave their ledger entry in the same step; shipped,
// each account's ledger sums to its balance.
func TestSettleLedgerSumsToBalance(t *testing.T) {
	settleStores(t, func(t *testing.T, e *settleEnv) {
		ctx := context.Background()
		accounts := []string{"acme", "globex", "initech", "umbrella", "hooli"}
		for _, a := range accounts {
			credit(t, e.store, a, 20)
			for i, id := range []string{"cap", "rel", "exp"} {
				if out, err := e.eng.Take(ctx, reserving(a, id, int64(i+1))); err != nil || !out.Reserved {
					t.Fatalf("%s %s: %+v, %v", a, id, out, err)
				}
			}
			if out, err := e.eng.Take(ctx, paidRequest(a)); err != nil || !out.Allowed {
				t.Fatalf("%s charge: %+v, %v", a, out, err)
			}
			e.settle(t, a, "cap", true, ratelimit.Captured)
			e.settle(t, a, "rel", false, ratelimit.Released)
		}
		e.advance(e.timeout + e.timeout/2)
		if n, err := e.eng.ExpireReservations(ctx); err != nil || n != len(accounts) {
			t.Fatalf("ExpireReservations = %d, %v; want %d", n, err, len(accounts))
		}
		book := ledgertest.NewBook()
		ledgertest.ShipAll(t, e.src, book, 7)
		sums, kinds := book.Sums()
		for _, a := range accounts {
			bal := balance(t, e.store, a)
			if bal != 20-1-1 { // one captured credit, one charged
				t.Errorf("%s: balance %d, want 18", a, bal)
			}
			if sums[a] != bal {
				t.Errorf("%s: ledger sums to %d, balance is %d", a, sums[a], bal)
			}
		}
		n := len(accounts)
		if kinds[ledger.Reserve] != 3*n || kinds[ledger.Capture] != n || kinds[ledger.Release] != 2*n || kinds[ledger.Charge] != n {
			t.Errorf("entries by kind %v; want %d reserve, %d capture, %d release, %d charge", kinds, 3*n, n, 2*n, n)
		}
	})
}

// TestReleaseRestoresQuotas: in every store, a released or expired
// reservation gives back the quota its request counted, a captured one
// keeps it, and a charge refunded because its caller had gone gives back
// its quota too.
func TestReleaseRestoresQuotas(t *testing.T) {
	settleStores(t, func(t *testing.T, e *settleEnv) {
		ctx := context.Background()
		credit(t, e.store, "acme", 100)
		for _, id := range []string{"captured", "released", "expired"} {
			if _, err := e.eng.Take(ctx, reserving("acme", id, 1)); err != nil {
				t.Fatal(err)
			}
		}
		if used := quotaUsed(t, e.store, "acme"); used != 3 {
			t.Fatalf("quota used %d after three reservations, want 3", used)
		}
		e.settle(t, "acme", "captured", true, ratelimit.Captured)
		e.settle(t, "acme", "released", false, ratelimit.Released)
		e.settle(t, "acme", "released", false, ratelimit.AlreadySettled)
		if used := quotaUsed(t, e.store, "acme"); used != 2 {
			t.Errorf("quota used %d after a capture and a release, want 2", used)
		}
		e.advance(e.timeout + 50*time.Millisecond)
		if n, err := e.eng.ExpireReservations(ctx); err != nil || n != 1 {
			t.Fatalf("ExpireReservations = %d, %v; want 1", n, err)
		}
		if used := quotaUsed(t, e.store, "acme"); used != 1 {
			t.Errorf("quota used %d after the expiry, want 1 (the captured request's)", used)
		}
		e.wantBalance(t, "acme", 99)

		gone, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := e.eng.Take(gone, paidRequest("acme")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Take for a gone caller: %v, want context.Canceled", err)
		}
		if used := quotaUsed(t, e.store, "acme"); used != 1 {
			t.Errorf("quota used %d after a gone caller's refund, want 1", used)
		}
		e.wantBalance(t, "acme", 99)
	})
}
