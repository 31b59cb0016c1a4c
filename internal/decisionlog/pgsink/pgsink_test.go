package pgsink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/decisionlog/pgsink"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	ledgerpg "github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// TestMain fails the package's tests when any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// newSink migrates the decision log's and the ledger's tables in pool's
// database and returns a Sink on it.
func newSink(t testing.TB, pool *pgxpool.Pool) *pgsink.Sink {
	t.Helper()
	ctx := context.Background()
	if err := pgsink.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := ledgerpg.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pgsink.New(pool, 0)
}

// record is an allowed GET /v1/things by acme, charged 2 credits.
func record(id string, at time.Time) *decisionlog.Record {
	return &decisionlog.Record{
		ID: id, Service: decisionlog.ServiceAuthz, RequestID: "req-" + id, Time: at, Latency: 150 * time.Microsecond,
		Revision: "rev1", Method: "GET", Host: "api.example.com", Path: "/v1/things",
		Headers:  map[string]string{":path": "/v1/things", "x-api-key": decisionlog.Masked},
		Consumer: "acme", Plan: "pro", Allow: true, Status: 200,
		Limits: []ratelimit.Limit{{Name: "per_second", Limit: 50, Window: time.Second, Cost: 1}},
		Charge: &ratelimit.Charge{Account: "acme", Credits: 2},
		Outcome: &ratelimit.Outcome{Charged: 2, Balance: 98, ChargeID: "ch-" + id,
			Limits: []ratelimit.LimitState{{Remaining: 49, Reset: time.Second}}},
	}
}

func count(t *testing.T, pool *pgxpool.Pool, where string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM tollgate_decisions WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestWriteRecordsLand: every column and the rest of the record as jsonb.
func TestWriteRecordsLand(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t).Pool()
	s := newSink(t, pool)
	denied := record("p-2", t0.Add(time.Second))
	denied.Allow, denied.Status, denied.Reason, denied.Limit = false, 429, "rate_limited", "per_second"
	denied.Outcome, denied.Charge = nil, nil
	if err := s.Write(ctx, []*decisionlog.Record{record("p-1", t0), denied}); err != nil {
		t.Fatal(err)
	}
	var (
		service, requestID, consumer, plan, method, host, path, reason, limit, revision string
		at                                                                              time.Time
		latency                                                                         int64
		allow                                                                           bool
		status                                                                          int
		charged, balance                                                                *int64
		doc                                                                             []byte
	)
	row := pool.QueryRow(ctx, `SELECT service, request_id, time, latency_us, consumer, plan, method, host, path, allow, status, reason, "limit", charged, balance, revision, doc
FROM tollgate_decisions WHERE decision_id = 'p-1' AND charge_id = 'ch-p-1'`)
	if err := row.Scan(&service, &requestID, &at, &latency, &consumer, &plan, &method, &host, &path, &allow, &status, &reason, &limit, &charged, &balance, &revision, &doc); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(service, requestID, at.UTC(), latency, consumer, plan, method, host, path, allow, status, reason, limit, *charged, *balance, revision)
	want := fmt.Sprint("authz", "req-p-1", t0, int64(150), "acme", "pro", "GET", "api.example.com", "/v1/things", true, 200, "", "", int64(2), int64(98), "rev1")
	if got != want {
		t.Errorf("row p-1 = %s, want %s", got, want)
	}
	var rest struct {
		Request struct {
			Headers map[string]string `json:"headers"`
		} `json:"request"`
		Decision struct {
			Limits []decisionlog.DocLimit `json:"limits"`
			Charge *decisionlog.DocCharge `json:"charge"`
		} `json:"decision"`
	}
	if err := json.Unmarshal(doc, &rest); err != nil {
		t.Fatal(err)
	}
	if rest.Request.Headers["x-api-key"] != decisionlog.Masked || len(rest.Decision.Limits) != 1 ||
		*rest.Decision.Limits[0].Remaining != 49 || rest.Decision.Charge == nil || rest.Decision.Charge.Credits != 2 {
		t.Errorf("doc = %s, want the headers, the limit's state and the charge", doc)
	}
	if n := count(t, pool, `decision_id = 'p-2' AND NOT allow AND status = 429 AND reason = 'rate_limited' AND "limit" = 'per_second' AND charged IS NULL AND balance IS NULL`); n != 1 {
		t.Errorf("denied row: %d rows match, want 1", n)
	}
}

// TestWriteDuplicatesIgnored: a batch written again, or a record twice in
// one batch, is one row, as first written.
func TestWriteDuplicatesIgnored(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t).Pool()
	s := newSink(t, pool)
	batch := []*decisionlog.Record{record("p-1", t0), record("p-2", t0)}
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	again := record("p-1", t0)
	again.Path = "/changed"
	if err := s.Write(ctx, []*decisionlog.Record{again, record("p-3", t0), record("p-3", t0)}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, "true"); n != 3 {
		t.Errorf("%d rows, want 3", n)
	}
	if n := count(t, pool, "path = '/changed'"); n != 0 {
		t.Errorf("a duplicate overwrote the first write")
	}
	if err := s.Write(ctx, nil); err != nil {
		t.Errorf("Write(nil) = %v", err)
	}
	if err := s.Write(ctx, []*decisionlog.Record{record("", t0)}); err == nil {
		t.Error("a record without an id was written")
	}
}

// TestRetentionDeletesOnlyOldRows: rows older than the retention go, in
// batches smaller than their number; the rest stay.
func TestRetentionDeletesOnlyOldRows(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t).Pool()
	s := newSink(t, pool)
	now := t0.Add(30 * 24 * time.Hour)
	var batch []*decisionlog.Record
	for i := range 25 {
		batch = append(batch, record(fmt.Sprintf("old-%d", i), t0.Add(-time.Duration(i)*time.Minute)))
	}
	for i := range 5 {
		batch = append(batch, record(fmt.Sprintf("new-%d", i), t0.Add(time.Second+time.Duration(i)*time.Hour)))
	}
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteBefore(ctx, now.Add(-30*24*time.Hour+time.Second), 10)
	if err != nil {
		t.Fatal(err)
	}
	if n != 25 {
		t.Errorf("DeleteBefore deleted %d rows, want 25", n)
	}
	if old, kept := count(t, pool, "decision_id LIKE 'old-%'"), count(t, pool, "decision_id LIKE 'new-%'"); old != 0 || kept != 5 {
		t.Errorf("after retention: %d old rows, %d new rows; want 0 and 5", old, kept)
	}

	// The runner: one pass at start, then every tick, until ctx ends.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() {
		done <- s.Retention(pgsink.RetentionOptions{Retention: 24 * time.Hour, Every: time.Hour, Batch: 2,
			Now: func() time.Time { return t0.Add(24*time.Hour + 2*time.Hour + time.Minute) }})(rctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for count(t, pool, "true") != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Retention runner: %v", err)
	}
	if n := count(t, pool, "true"); n != 2 {
		t.Errorf("runner left %d rows, want 2 (new-3, new-4)", n)
	}
}

// TestOutageFailsTheBatch: with the database cut, Write fails and writes
// nothing; the Logger counts the batch as dropped (sink_error) and goes on
// once the database is back.
func TestOutageFailsTheBatch(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	newSink(t, db.Pool())
	proxy := db.Proxy()
	pool := proxy.Pool()
	s := pgsink.New(pool, time.Second)
	proxy.Cut()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := s.Write(wctx, []*decisionlog.Record{record("p-1", t0)})
	cancel()
	if err == nil {
		t.Fatal("Write through a cut connection succeeded")
	}
	proxy.Restore()
	if n := count(t, db.Pool(), "true"); n != 0 {
		t.Errorf("%d rows after a failed write, want 0", n)
	}

	reg := prometheus.NewRegistry()
	l, err := decisionlog.New(decisionlog.Options{Sink: s, Sample: 1, Registerer: reg, FlushTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- l.Run(lctx) }()
	l.Log(record("", t0))
	dropped := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "tollgate_decision_logs_dropped_total" {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == "sink_error" {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for dropped() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := dropped(); got != 1 {
		t.Errorf("sink_error drops = %v, want 1", got)
	}
	proxy.Restore()
	l.Log(record("", t0))
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := count(t, db.Pool(), "true"); n != 1 {
		t.Errorf("%d rows after the outage, want 1 (the record logged once it was over)", n)
	}
}
