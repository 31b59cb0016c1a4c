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
