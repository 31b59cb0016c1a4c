package pgsink_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/decisionlog/pgsink"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	ledgerpg "github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// benchWrite times write of batches of n new records (their ids are set
// outside the timer).
func benchWrite(b *testing.B, n int, write func(context.Context, *pgxpool.Pool, []*decisionlog.Record) error) {
	pool := pgtest.New(b).Pool()
	newSink(b, pool)
	ctx := context.Background()
	batch := make([]*decisionlog.Record, n)
	for i := range batch {
		batch[i] = record("", t0)
	}
	next := 0
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for _, r := range batch {
			r.ID = "b-" + strconv.Itoa(next)
			next++
		}
		b.StartTimer()
		if err := write(ctx, pool, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite is the Sink's Write: the batch as 18 arrays unnested by
// the server in one INSERT ... ON CONFLICT DO NOTHING (one round trip).
func BenchmarkWrite(b *testing.B) {
	for _, n := range []int{1, 256} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var s *pgsink.Sink
			benchWrite(b, n, func(ctx context.Context, pool *pgxpool.Pool, rs []*decisionlog.Record) error {
				if s == nil {
					s = pgsink.New(pool, 0)
				}
				return s.Write(ctx, rs)
			})
		})
	}
}

// BenchmarkWriteCopy, the design Write was measured against: COPY into a
// temporary table, then INSERT ... SELECT ON CONFLICT DO NOTHING, in one
// transaction (several round trips).
func BenchmarkWriteCopy(b *testing.B) {
	cols := []string{"decision_id", "service", "request_id", "time", "latency_us", "consumer", "plan", "method", "host", "path",
		"allow", "status", "reason", "limit", "charged", "balance", "revision", "doc"}
	for _, n := range []int{1, 256} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			benchWrite(b, n, func(ctx context.Context, pool *pgxpool.Pool, rs []*decisionlog.Record) error {
				return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS decisions_in (LIKE tollgate_decisions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`); err != nil {
						return err
					}
					_, err := tx.CopyFrom(ctx, pgx.Identifier{"decisions_in"}, cols, pgx.CopyFromSlice(len(rs), func(i int) ([]any, error) {
						r := rs[i]
						d := r.Document()
						doc, err := r.MarshalJSON()
						if err != nil {
							return nil, err
						}
						return []any{r.ID, r.Service, r.RequestID, r.Time, d.LatencyUS, r.Consumer, r.Plan, r.Method, r.Host, r.Path,
							r.Allow, int32(r.Status), r.Reason, r.Limit, d.Decision.Charge.Charged, d.Decision.Charge.Balance, r.Revision, string(doc)}, nil
					}))
					if err != nil {
						return err
					}
					_, err = tx.Exec(ctx, `INSERT INTO tollgate_decisions SELECT * FROM decisions_in ON CONFLICT (decision_id) DO NOTHING`)
					return err
				})
			})
		})
	}
}

// BenchmarkUsage is a month's report over 100,000 decisions (50 consumers,
// 20 paths, a tenth denied) and their 90,000 charges.
func BenchmarkUsage(b *testing.B) {
	pool := pgtest.New(b).Pool()
	s := newSink(b, pool)
	ctx := context.Background()
	const n = 100_000
	batch := make([]*decisionlog.Record, 0, 256)
	var entries []ledger.Entry
	flush := func() {
		if err := s.Write(ctx, batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range n {
		at := t0.Add(-time.Duration(i) * 20 * time.Second) // 23 days back
		r := record("u-"+strconv.Itoa(i), at)
		r.Consumer = "c" + strconv.Itoa(i%50)
		r.Path = "/v1/things/" + strconv.Itoa(i%20)
		r.Outcome.ChargeID = "ch-" + strconv.Itoa(i)
		if i%10 == 0 {
			r.Allow, r.Reason, r.Outcome, r.Charge = false, "rate_limited", nil, nil
		} else {
			entries = append(entries, ledger.Entry{ID: "e-" + strconv.Itoa(i), Account: r.Consumer, Consumer: r.Consumer,
				Kind: ledger.Charge, Amount: -2, RequestID: "ch-" + strconv.Itoa(i), Time: at})
		}
		if batch = append(batch, r); len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	book := ledgerpg.New(pool)
	for i := 0; i < len(entries); i += 1000 {
		if err := book.Write(ctx, entries[i:min(i+1000, len(entries))]); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, "ANALYZE"); err != nil {
		b.Fatal(err)
	}
	q := pgsink.UsageQuery{From: t0.AddDate(0, -1, 0), To: t0.Add(time.Hour), Period: pgsink.PeriodMonth, Limit: pgsink.MaxUsageRows}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rows, err := s.Usage(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		if len(rows) != 100 { // lcm(50, 20) consumer-path pairs, one month
			b.Fatalf("%d groups", len(rows))
		}
	}
}
