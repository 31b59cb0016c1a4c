package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// TestLedgerCmd: ledger show pages an account's entries from PostgreSQL;
// ledger verify says ok when they sum to the balance and fails on drift.
func TestLedgerCmd(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	if err := pgsink.Migrate(ctx, db.Pool()); err != nil {
		t.Fatal(err)
	}
	sink := pgsink.New(db.Pool())
	store := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	eng, err := ratelimit.NewEngine(store, ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range []string{"acme", "acme", "globex"} {
		if _, err := eng.Credit(ctx, a, 10, "k"+string(rune('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	sh, err := ledger.NewShipper(store, sink, ledger.ShipOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := sh.Once(ctx); err != nil || n != 3 {
		t.Fatalf("shipped %d, %v; want 3", n, err)
	}
	srv := httptest.NewServer(admin.AccountsHandler(eng, adminTokens(t), slog.New(slog.DiscardHandler), sink))
	t.Cleanup(srv.Close)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", testAdminToken)
	run := func(args ...string) (string, string, error) {
		return runCmd(t, append([]string{"ledger"}, append(args, "--admin", srv.URL)...)...)
	}

	out, _, err := run("show", "acme", "--limit", "1")
	if err != nil || strings.Count(out, `"kind": "topup"`) != 1 || !strings.Contains(out, `"next"`) {
		t.Errorf("show --limit 1: %v\n%s", err, out)
	}
	if out, _, err = run("verify", "acme", "globex"); err != nil || strings.Count(out, "ok ") != 2 {
		t.Errorf("verify: %v\n%s", err, out)
	}
	// No account: every account in the ledger.
	if out, _, err = run("verify"); err != nil || !strings.Contains(out, "ok     acme:") || !strings.Contains(out, "ok     globex:") {
		t.Errorf("verify (all accounts): %v\n%s", err, out)
	}

	// An entry with no balance change behind it: the ledger drifts.
	tries, pause := verifyTries, verifyPause
	t.Cleanup(func() { verifyTries, verifyPause = tries, pause })
	verifyTries, verifyPause = 2, time.Millisecond
	if err := sink.Write(ctx, []ledger.Entry{{ID: "x/1-0", Account: "globex", Kind: ledger.TopUp, Amount: 5, BalanceAfter: 15, Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	out, _, err = run("verify", "acme", "globex")
	if !errors.Is(err, errDrift) || !strings.Contains(out, "DRIFT  globex: balance 10, ledger 15 (2 entries), drift -5") {
		t.Errorf("verify with drift: %v\n%s", err, out)
	}
}

// TestLedgerVerifyLostWrites: a replica is promoted (REPLICAOF NO ONE)
// while the old primary goes on acknowledging charges, as during a
// SENTINEL FAILOVER, and Tollgate then follows the new primary. The
// charges the shipper had already taken to PostgreSQL from the old primary
// show as a positive drift — the ledger records changes the balance lacks
// — exactly their sum; a charge lost before it was shipped leaves no
// trace in either, and verify cannot see it.
func TestLedgerVerifyLostWrites(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	if err := pgsink.Migrate(ctx, db.Pool()); err != nil {
		t.Fatal(err)
	}
	sink := pgsink.New(db.Pool())
	primary := redistest.Start(t)
	replica := redistest.StartReplica(t, primary)
	engine := func(s *ratelimit.RedisStore) *ratelimit.Engine {
		eng, err := ratelimit.NewEngine(s, ratelimit.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return eng
	}
	ship := func(s *ratelimit.RedisStore) {
		t.Helper()
		sh, err := ledger.NewShipper(s, sink, ledger.ShipOptions{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		for {
			n, err := sh.Once(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				return
			}
		}
	}
	charge := func(eng *ratelimit.Engine, credits int64, n int) {
		t.Helper()
		for range n {
			out, err := eng.Take(ctx, &ratelimit.Request{Charge: &ratelimit.Charge{Account: "acme", Credits: credits}})
			if err != nil || !out.Allowed || out.Charged != credits {
				t.Fatalf("charge of %d: %+v, %v", credits, out, err)
			}
		}
	}

	old := ratelimit.NewRedisStore(primary.Client(), time.Second)
	oldEng := engine(old)
	if _, err := oldEng.Credit(ctx, "acme", 1000, "topup-1"); err != nil {
		t.Fatal(err)
	}
	charge(oldEng, 10, 3)
	ship(old)
	if n, err := primary.Client().Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}

	// The replica is promoted; the old primary goes on acknowledging.
	if err := replica.Client().SlaveOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	charge(oldEng, 20, 5) // acknowledged, shipped, lost
	ship(old)
	charge(oldEng, 7, 1) // acknowledged, lost before it was shipped

	// Tollgate follows the new primary, which goes on charging.
	cur := ratelimit.NewRedisStore(replica.Client(), time.Second)
	curEng := engine(cur)
	charge(curEng, 1, 2)
	ship(cur)

	srv := httptest.NewServer(admin.AccountsHandler(curEng, adminTokens(t), slog.New(slog.DiscardHandler), sink))
	t.Cleanup(srv.Close)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", testAdminToken)
	tries, pause := verifyTries, verifyPause
	t.Cleanup(func() { verifyTries, verifyPause = tries, pause })
	verifyTries, verifyPause = 2, time.Millisecond
	out, _, err := runCmd(t, "ledger", "verify", "acme", "--admin", srv.URL)
	// Balance: 1000 − 30 − 2; the ledger also has the 100 lost after shipping.
	if !errors.Is(err, errDrift) || !strings.Contains(out, "DRIFT  acme: balance 968, ledger 868 (11 entries), drift 100") {
		t.Errorf("verify after lost writes: %v\n%s", err, out)
	}
	if !strings.Contains(out, "lost") {
		t.Errorf("verify does not say what a positive drift means:\n%s", out)
	}
	t.Logf("ledger verify:\n%s", out)
}
