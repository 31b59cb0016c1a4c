package pgsink_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/decisionlog/pgsink"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	ledgerpg "github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// UsageFixture writes a known set of decisions and ledger entries:
//
//	acme, Nov 30:  GET /v1/things pro: 3 allowed (req a1, a2, a3 charged 2 each; a3 refunded on Dec 1),
//	               1 denied rate_limited, 2 denied insufficient_credits
//	               POST /v1/orders pro: 1 allowed (req a4 charged 5)
//	acme, Dec 1:   GET /v1/things pro: 1 allowed (req a5 charged 2)
//	               a charge of 7 whose decision was not logged (req lost)
//	               POST /v1/orders pro: 3 allowed, two settled on delivery
//	               (rsv6 reserved 5 and captured; rsv7 reserved 5 and
//	               released), one earlier whose x-request-id rsv6 repeats
//	globex, Nov 30: GET /v1/things free: 1 denied unauthenticated
//	a top-up to acme on Nov 30 (not usage)
func usageFixture(t *testing.T) *pgsink.Sink {
	t.Helper()
	ctx := context.Background()
	pool := pgtest.New(t).Pool()
	s := newSink(t, pool)
	nov30, dec1 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	dec := func(id, consumer, plan, method, path string, at time.Time, allow bool, reason string) *decisionlog.Record {
		r := record(id, at)
		r.RequestID, r.Consumer, r.Plan, r.Method, r.Path, r.Allow, r.Reason = id, consumer, plan, method, path, allow, reason
		r.Outcome.ChargeID = id // the ledger entries' request_id
		if !allow {
			r.Status, r.Outcome, r.Charge = 429, nil, nil
		}
		return r
	}
	recs := []*decisionlog.Record{
		dec("a1", "acme", "pro", "GET", "/v1/things", nov30, true, ""),
		dec("a2", "acme", "pro", "GET", "/v1/things", nov30.Add(time.Minute), true, ""),
		dec("a3", "acme", "pro", "GET", "/v1/things", nov30.Add(2*time.Minute), true, ""),
		dec("d1", "acme", "pro", "GET", "/v1/things", nov30.Add(3*time.Minute), false, "rate_limited"),
		dec("d2", "acme", "pro", "GET", "/v1/things", nov30.Add(4*time.Minute), false, "insufficient_credits"),
		dec("d3", "acme", "pro", "GET", "/v1/things", nov30.Add(5*time.Minute), false, "insufficient_credits"),
		dec("a4", "acme", "pro", "POST", "/v1/orders", nov30.Add(6*time.Minute), true, ""),
		dec("a5", "acme", "pro", "GET", "/v1/things", dec1, true, ""),
		dec("g1", "globex", "free", "GET", "/v1/things", nov30, false, "unauthenticated"),
		dec("rsv6", "acme", "pro", "POST", "/v1/orders", dec1.Add(2*time.Minute), true, ""),
		// An earlier request that reused x-request-id rsv6 (a client's own
		// id): its charge id repeats, the entries still count once.
		func() *decisionlog.Record {
			r := dec("rsv6-earlier", "acme", "pro", "POST", "/v1/orders", dec1.Add(time.Minute), true, "")
			r.Outcome.ChargeID = "rsv6"
			return r
		}(),
		dec("rsv7", "acme", "pro", "POST", "/v1/orders", dec1.Add(3*time.Minute), true, ""),
	}
	// The RLS logged a1 too: its ext_authz record gives the route.
	rl := dec("a1-rls", "acme", "pro", "", "", nov30, true, "")
	rl.Service, rl.RequestID = decisionlog.ServiceRateLimit, "a1"
	recs = append(recs, rl)
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	entry := func(id string, kind ledger.Kind, amount int64, req string, at time.Time) ledger.Entry {
		return ledger.Entry{ID: id, Account: "acme", Consumer: "acme", Kind: kind, Amount: amount, RequestID: req, Time: at}
	}
	// Refunds and releases are recorded without the consumer (void.lua,
	// settle.lua): usage finds it through their decision.
	noConsumer := func(e ledger.Entry) ledger.Entry { e.Consumer = ""; return e }
	top := entry("e0", ledger.TopUp, 100, "invoice-1", nov30)
	top.Consumer = ""
	err := ledgerpg.New(pool).Write(ctx, []ledger.Entry{
		top,
		entry("e1", ledger.Charge, -2, "a1", nov30),
		entry("e2", ledger.Charge, -2, "a2", nov30.Add(time.Minute)),
		entry("e3", ledger.Charge, -2, "a3", nov30.Add(2*time.Minute)),
		entry("e4", ledger.Charge, -5, "a4", nov30.Add(6*time.Minute)),
		noConsumer(entry("e5", ledger.Refund, 2, "a3", dec1.Add(-time.Hour))),
		entry("e6", ledger.Charge, -2, "a5", dec1),
		entry("e7", ledger.Charge, -7, "lost", dec1.Add(time.Minute)),
		entry("e8", ledger.Reserve, -5, "rsv6", dec1.Add(2*time.Minute)),
		entry("e9", ledger.Capture, 0, "rsv6", dec1.Add(3*time.Minute)),
		entry("e10", ledger.Reserve, -5, "rsv7", dec1.Add(3*time.Minute)),
		noConsumer(entry("e11", ledger.Release, 5, "rsv7", dec1.Add(4*time.Minute))),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	nov30 = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	dec1  = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	nov1  = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
)

func TestUsage(t *testing.T) {
	s := usageFixture(t)
	none := map[string]int64{}
	tests := []struct {
		name string
		q    pgsink.UsageQuery
		want []pgsink.UsageRow
	}{
		{"by day", pgsink.UsageQuery{From: nov30, To: dec1.Add(24 * time.Hour), Period: pgsink.PeriodDay, Limit: 100}, []pgsink.UsageRow{
			{Consumer: "acme", Period: nov30, Method: "GET", Path: "/v1/things", Plan: "pro", Allowed: 3,
				Denied: map[string]int64{"rate_limited": 1, "insufficient_credits": 2}, Charged: 6, Credits: 6},
			{Consumer: "acme", Period: nov30, Method: "POST", Path: "/v1/orders", Plan: "pro", Allowed: 1, Denied: none, Charged: 5, Credits: 5},
			// No decision for request "lost": its charge has no route.
			{Consumer: "acme", Period: dec1, Denied: none, Charged: 7, Credits: 7},
			// a3's refund counts on the day it was recorded, on a3's route.
			{Consumer: "acme", Period: dec1, Method: "GET", Path: "/v1/things", Plan: "pro", Allowed: 1, Denied: none, Charged: 2, Refunded: 2, Credits: 0},
			// Settled on delivery: reserved, then captured (5) or released (0).
			{Consumer: "acme", Period: dec1, Method: "POST", Path: "/v1/orders", Plan: "pro", Allowed: 3, Denied: none, Charged: 10, Refunded: 5, Credits: 5},
			{Consumer: "globex", Period: nov30, Method: "GET", Path: "/v1/things", Plan: "free", Denied: map[string]int64{"unauthenticated": 1}},
		}},
		{"by month, one consumer", pgsink.UsageQuery{Consumer: "acme", From: nov1, To: dec1.AddDate(0, 1, 0), Period: pgsink.PeriodMonth, Limit: 100}, []pgsink.UsageRow{
			{Consumer: "acme", Period: nov1, Method: "GET", Path: "/v1/things", Plan: "pro", Allowed: 3,
				Denied: map[string]int64{"rate_limited": 1, "insufficient_credits": 2}, Charged: 6, Credits: 6},
			{Consumer: "acme", Period: nov1, Method: "POST", Path: "/v1/orders", Plan: "pro", Allowed: 1, Denied: none, Charged: 5, Credits: 5},
			{Consumer: "acme", Period: dec1, Denied: none, Charged: 7, Credits: 7},
			{Consumer: "acme", Period: dec1, Method: "GET", Path: "/v1/things", Plan: "pro", Allowed: 1, Denied: none, Charged: 2, Refunded: 2},
			{Consumer: "acme", Period: dec1, Method: "POST", Path: "/v1/orders", Plan: "pro", Allowed: 3, Denied: none, Charged: 10, Refunded: 5, Credits: 5},
		}},
		{"range excludes To", pgsink.UsageQuery{Consumer: "acme", From: nov30, To: dec1, Period: pgsink.PeriodDay, Limit: 100}, []pgsink.UsageRow{
			{Consumer: "acme", Period: nov30, Method: "GET", Path: "/v1/things", Plan: "pro", Allowed: 3,
				Denied: map[string]int64{"rate_limited": 1, "insufficient_credits": 2}, Charged: 6, Credits: 6},
			{Consumer: "acme", Period: nov30, Method: "POST", Path: "/v1/orders", Plan: "pro", Allowed: 1, Denied: none, Charged: 5, Credits: 5},
		}},
		{"nobody", pgsink.UsageQuery{Consumer: "initech", From: nov30, To: dec1, Period: pgsink.PeriodDay, Limit: 100}, []pgsink.UsageRow{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Usage(context.Background(), tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Usage:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestUsageLimit(t *testing.T) {
	s := usageFixture(t)
	q := pgsink.UsageQuery{From: nov30, To: dec1.Add(24 * time.Hour), Period: pgsink.PeriodDay, Limit: 6}
	if rows, err := s.Usage(context.Background(), q); err != nil || len(rows) != 6 {
		t.Fatalf("Usage with limit 6 of 6 groups: %d rows, %v", len(rows), err)
	}
	q.Limit = 5
	_, err := s.Usage(context.Background(), q)
	var tooMany *pgsink.TooManyRowsError
	if !errors.As(err, &tooMany) || tooMany.Limit != 5 {
		t.Errorf("Usage with limit 5 of 6 groups: %v, want TooManyRowsError{5}", err)
	}
	for _, bad := range []pgsink.UsageQuery{{Period: "week", Limit: 1}, {Period: "day", Limit: 0}, {Period: "day", Limit: pgsink.MaxUsageRows + 1}} {
		if _, err := s.Usage(context.Background(), bad); err == nil {
			t.Errorf("Usage(%+v) succeeded", bad)
		}
	}
}
