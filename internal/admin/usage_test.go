package admin_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/decisionlog/pgsink"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	ledgerpg "github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// usageServer serves the usage API over decisions and ledger entries in a
// database of the test's own: acme on 2026-11-30 made two allowed GETs of
// /v1/a,b (each charged 3 credits, one refunded) and one denied
// rate_limited; globex one denied "no, \"quota\"" (a reason to quote).
func usageServer(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	pool := pgtest.New(t).Pool()
	if err := pgsink.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := ledgerpg.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	rec := func(id, consumer string, allow bool, reason string) *decisionlog.Record {
		r := &decisionlog.Record{ID: id, Service: decisionlog.ServiceAuthz, RequestID: id, Time: at,
			Method: "GET", Path: "/v1/a,b", Consumer: consumer, Plan: "pro", Allow: allow, Reason: reason}
		if allow {
			r.Charge = &ratelimit.Charge{Account: consumer, Credits: 3}
			r.Outcome = &ratelimit.Outcome{Allowed: true, Denied: -1, Charged: 3, ChargeID: "ch-" + id}
		}
		return r
	}
	s := pgsink.New(pool, 0)
	if err := s.Write(ctx, []*decisionlog.Record{
		rec("r1", "acme", true, ""), rec("r2", "acme", true, ""), rec("r3", "acme", false, "rate_limited"),
		rec("r4", "globex", false, `no, "quota"`),
	}); err != nil {
		t.Fatal(err)
	}
	e := func(id string, kind ledger.Kind, amount int64, req string) ledger.Entry {
		return ledger.Entry{ID: id, Account: "acme", Consumer: "acme", Kind: kind, Amount: amount, RequestID: req, Time: at}
	}
	if err := ledgerpg.New(pool).Write(ctx, []ledger.Entry{e("e1", ledger.Charge, -3, "ch-r1"), e("e2", ledger.Charge, -3, "ch-r2"), e("e3", ledger.Refund, 3, "ch-r2")}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.UsageHandler(s, allScopes(t, token), discard))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestUsageJSON(t *testing.T) {
	base := usageServer(t)
	r := do(t, base, call{method: "GET", path: "/v1/usage?from=2026-11-01&to=2026-11-30&period=month"})
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, %s: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	var got struct {
		From, To time.Time
		Period   string
		Rows     []map[string]any
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	if !got.From.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) || !got.To.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || got.Period != "month" {
		t.Errorf("from %s to %s period %s, want 2026-11-01 to 2026-12-01 (the date's whole day) by month", got.From, got.To, got.Period)
	}
	want := []map[string]any{
		{"consumer": "acme", "period": "2026-11", "method": "GET", "path": "/v1/a,b", "plan": "pro", "allowed": 2.0,
			"denied": map[string]any{"rate_limited": 1.0}, "charged": 6.0, "refunded": 3.0, "credits": 3.0},
		{"consumer": "globex", "period": "2026-11", "method": "GET", "path": "/v1/a,b", "plan": "pro", "allowed": 0.0,
			"denied": map[string]any{`no, "quota"`: 1.0}, "charged": 0.0, "refunded": 0.0, "credits": 0.0},
	}
	if !reflect.DeepEqual(got.Rows, want) {
		t.Errorf("rows:\n got %v\nwant %v", got.Rows, want)
	}
}

func TestUsageCSV(t *testing.T) {
	base := usageServer(t)
	r := do(t, base, call{method: "GET", path: "/v1/usage?from=2026-11-30T00:00:00Z&to=2026-12-01T00:00:00Z&format=csv"})
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") {
		t.Fatalf("status %d, %s: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if !strings.Contains(string(r.body), "\r\n") || !strings.Contains(string(r.body), `"/v1/a,b"`) {
		t.Errorf("not RFC 4180 (CRLF, quoted commas): %q", r.body)
	}
	got, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"consumer", "period", "method", "path", "plan", "allowed", "denied", `denied:no, "quota"`, "denied:rate_limited", "charged", "refunded", "credits"},
		{"acme", "2026-11-30", "GET", "/v1/a,b", "pro", "2", "1", "0", "1", "6", "3", "3"},
		{"globex", "2026-11-30", "GET", "/v1/a,b", "pro", "0", "1", "1", "0", "0", "0", "0"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CSV:\n got %q\nwant %q", got, want)
	}
	// One consumer; a limit the report fits in.
	r = do(t, base, call{method: "GET", path: "/v1/usage?consumer=globex&from=2026-11-30&to=2026-11-30&format=csv&limit=1"})
	if got, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll(); err != nil || len(got) != 2 || got[1][0] != "globex" {
		t.Errorf("consumer=globex: %v %q", err, got)
	}
}

func TestUsageBadRequest(t *testing.T) {
	base := usageServer(t)
	tests := []struct {
		name, query string
		status      int
		reason      string
		detail      string
	}{
		{"range too long", "from=2025-01-01&to=2026-01-02", 400, "invalid_request", "longer than 366 days"},
		{"from after to", "from=2026-11-30&to=2026-11-01", 400, "invalid_request", "is not before to"},
		{"bad from", "from=yesterday", 400, "invalid_request", `from "yesterday" is not an RFC 3339 time or a date`},
		{"bad to", "to=2026-13-01", 400, "invalid_request", `to "2026-13-01" is not an RFC 3339 time or a date`},
		{"bad period", "period=week", 400, "invalid_request", `period "week" is not a period (allowed: day, month)`},
		{"bad format", "format=xml", 400, "invalid_request", `format "xml" is not a format (allowed: json, csv)`},
		{"bad limit", "limit=0", 400, "invalid_request", "limit \"0\" is not a whole number from 1 to 10000"},
		{"unknown parameter", "account=acme", 400, "invalid_request", `unknown parameter "account"`},
		{"too many groups", "from=2026-11-30&to=2026-11-30&limit=1", 400, "result_too_large", "more than 1 groups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := wantProblem(t, do(t, base, call{method: "GET", path: "/v1/usage?" + tt.query}), tt.status)
			if p.Reason != tt.reason || !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("problem %s: %q, want %s: %q", p.Reason, p.Detail, tt.reason, tt.detail)
			}
		})
	}
	wantProblem(t, do(t, base, call{method: "GET", path: "/v1/usage", auth: "-"}), 401)
	wantProblem(t, do(t, base, call{method: "POST", path: "/v1/usage"}), 405)
}

func TestUsageOff(t *testing.T) {
	srv := httptest.NewServer(admin.UsageHandler(nil, allScopes(t, token), discard))
	t.Cleanup(srv.Close)
	p := wantProblem(t, do(t, srv.URL, call{method: "GET", path: "/v1/usage"}), 404)
	if p.Reason != "usage_off" || !strings.Contains(p.Detail, "sink: postgres") {
		t.Errorf("problem %s: %q, want usage_off saying to configure postgres and decision_logs.sink", p.Reason, p.Detail)
	}
}
