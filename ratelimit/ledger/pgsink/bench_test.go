package pgsink_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// benchWrite times write of batches of n new entries (their IDs are set
// outside the timer).
func benchWrite(b *testing.B, n int, write func(context.Context, *pgxpool.Pool, []ledger.Entry) error) {
	pool := pgtest.New(b).Pool()
	newSink(b, pool)
	ctx := context.Background()
	batch := entries("acme", 0, n)
	next := 0
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for i := range batch {
			batch[i].ID = "e" + strconv.Itoa(next)
			next++
		}
		b.StartTimer()
		if err := write(ctx, pool, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite is the Sink's Write: the batch as ten arrays, unnested by
// the server in one INSERT ... ON CONFLICT DO NOTHING.
func BenchmarkWrite(b *testing.B) {
	for _, n := range []int{1, 500} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			benchWrite(b, n, func(ctx context.Context, pool *pgxpool.Pool, es []ledger.Entry) error {
				return pgsink.New(pool).Write(ctx, es)
			})
		})
	}
}

// BenchmarkWriteFrom adds the checkpoint to the same statement.
func BenchmarkWriteFrom(b *testing.B) {
	for _, n := range []int{1, 500} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			benchWrite(b, n, func(ctx context.Context, pool *pgxpool.Pool, es []ledger.Entry) error {
				_, err := pgsink.New(pool).WriteFrom(ctx, "s", es, "1-1")
				return err
			})
		})
	}
}

// The designs Write was measured against, kept to repeat the measure.

// BenchmarkWriteCopy: COPY into a temporary table, then INSERT ... SELECT
// ON CONFLICT DO NOTHING, in one transaction (five round trips).
func BenchmarkWriteCopy(b *testing.B) {
	cols := []string{"id", "account", "consumer", "kind", "amount", "balance_after", "request_id", "reason", "policy_revision", "time"}
	for _, n := range []int{1, 500} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			benchWrite(b, n, func(ctx context.Context, pool *pgxpool.Pool, es []ledger.Entry) error {
				return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS ledger_in (LIKE tollgate_ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`); err != nil {
						return err
					}
					_, err := tx.CopyFrom(ctx, pgx.Identifier{"ledger_in"}, cols, pgx.CopyFromSlice(len(es), func(i int) ([]any, error) {
						e := &es[i]
						return []any{e.ID, e.Account, e.Consumer, string(e.Kind), e.Amount, e.BalanceAfter, e.RequestID, e.Reason, e.PolicyRevision, e.Time}, nil
					}))
					if err != nil {
						return err
					}
					_, err = tx.Exec(ctx, `INSERT INTO tollgate_ledger SELECT * FROM ledger_in ORDER BY id ON CONFLICT (id) DO NOTHING`)
					return err
				})
			})
		})
	}
}

// BenchmarkWriteValues: one multi-row INSERT ... VALUES with ten
// parameters a row (a statement text, and a prepared plan, per size).
func BenchmarkWriteValues(b *testing.B) {
	for _, n := range []int{1, 500} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			benchWrite(b, n, func(ctx context.Context, pool *pgxpool.Pool, es []ledger.Entry) error {
				var sql strings.Builder
				sql.WriteString(`INSERT INTO tollgate_ledger (id, account, consumer, kind, amount, balance_after, request_id, reason, policy_revision, time) VALUES `)
				args := make([]any, 0, 10*len(es))
				for i := range es {
					e := &es[i]
					if i > 0 {
						sql.WriteByte(',')
					}
					p := len(args)
					fmt.Fprintf(&sql, "($%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d)", p+1, p+2, p+3, p+4, p+5, p+6, p+7, p+8, p+9, p+10)
					args = append(args, e.ID, e.Account, e.Consumer, string(e.Kind), e.Amount, e.BalanceAfter, e.RequestID, e.Reason, e.PolicyRevision, e.Time)
				}
				sql.WriteString(` ON CONFLICT (id) DO NOTHING`)
				_, err := pool.Exec(ctx, sql.String(), args...)
				return err
			})
		})
	}
}
