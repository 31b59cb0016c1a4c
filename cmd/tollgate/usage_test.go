package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	dlogpg "github.com/tollgate-dev/tollgate/internal/decisionlog/pgsink"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// TestUsageCmd: usage prints the server's report as JSON or CSV, passes
// the flags as the query, and fails with the server's detail.
func TestUsageCmd(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	pool := db.Pool()
	if err := dlogpg.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := pgsink.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	sink := dlogpg.New(pool, 0)
	err := sink.Write(ctx, []*decisionlog.Record{
		{ID: "d1", Service: decisionlog.ServiceAuthz, Time: at, Method: "GET", Path: "/v1/x", Consumer: "acme", Plan: "pro", Allow: true,
			Charge: &ratelimit.Charge{Account: "acme", Credits: 4}, Outcome: &ratelimit.Outcome{Allowed: true, Denied: -1, Charged: 4, ChargeID: "c1"}},
		{ID: "d2", Service: decisionlog.ServiceAuthz, Time: at, Method: "GET", Path: "/v1/x", Consumer: "globex", Plan: "free", Reason: "unauthenticated"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pgsink.New(pool).Write(ctx, []ledger.Entry{{ID: "e1", Account: "acme", Consumer: "acme", Kind: ledger.Charge, Amount: -4, RequestID: "c1", Time: at}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.UsageHandler(sink, adminTokens(t), slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", testAdminToken)
	run := func(args ...string) (string, string, error) {
		return runCmd(t, append([]string{"usage"}, append(args, "--admin", srv.URL)...)...)
	}

	out, _, err := run("--csv", "--from", "2026-11-30", "--to", "2026-11-30")
	if err != nil {
		t.Fatal(err)
	}
	got, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"consumer", "period", "method", "path", "plan", "allowed", "denied", "denied:unauthenticated", "charged", "refunded", "credits"},
		{"acme", "2026-11-30", "GET", "/v1/x", "pro", "1", "0", "0", "4", "0", "4"},
		{"globex", "2026-11-30", "GET", "/v1/x", "free", "0", "1", "1", "0", "0", "0"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("usage --csv:\n got %q\nwant %q", got, want)
	}

	out, _, err = run("--consumer", "acme", "--period", "month", "--from", "2026-11-01T00:00:00Z", "--to", "2026-12-01T00:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	var report struct {
		Consumer, Period string
		Rows             []struct {
			Consumer, Period string
			Credits          int64
		}
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("usage: %v\n%s", err, out)
	}
	if report.Consumer != "acme" || report.Period != "month" || len(report.Rows) != 1 || report.Rows[0].Period != "2026-11" || report.Rows[0].Credits != 4 {
		t.Errorf("usage --consumer acme --period month: %+v", report)
	}

	if _, _, err = run("--from", "2020-01-01", "--to", "2026-01-01"); err == nil || !strings.Contains(err.Error(), "longer than 366 days") {
		t.Errorf("a range of six years: %v, want the server's detail", err)
	}
	if _, _, err = run("acme"); !errors.Is(err, errUsage) {
		t.Errorf("a positional argument: %v, want a usage error", err)
	}
}
