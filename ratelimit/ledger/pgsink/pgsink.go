// Package pgsink is the ledger's PostgreSQL side: a ledger.Sink that
// records each entry exactly once (by its ID, the table's primary key),
// with the position a shipper reached in its stream moved in the same
// statement, and the reads that verify and page through an account's
// entries.
package pgsink

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/pg"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Component names the ledger's migrations in tollgate_schema_migrations.
const Component = "ledger"

// Migrate creates or upgrades the ledger's tables (tollgate_ledger,
// tollgate_ledger_checkpoints). Run it once at start-up, before New.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pg.MigrateDir(ctx, pool, Component, migrationFiles, "migrations")
}

// Sink records ledger entries in PostgreSQL. It is safe for concurrent
// use; it does not own the pool.
type Sink struct {
	pool *pgxpool.Pool
}

var _ ledger.Sink = (*Sink)(nil)

// New returns a Sink on a pool whose database Migrate has prepared.
func New(pool *pgxpool.Pool) *Sink { return &Sink{pool: pool} }

// The entries as columns, unnested into rows by the server: one statement
// (one round trip, one plan cached by pgx) for any batch size. Rows go in
// ID order, so writers of overlapping batches wait on each other's IDs in
// the same order and never deadlock.
const insertEntries = `INSERT INTO tollgate_ledger
	(id, account, consumer, kind, amount, balance_after, request_id, reason, policy_revision, time)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
	$7::text[], $8::text[], $9::text[], $10::timestamptz[]) ORDER BY 1
ON CONFLICT (id) DO NOTHING`

// writeFrom moves the checkpoint forward only: a batch delivered late (or
// by a second shipper) never takes it back.
const writeFrom = `WITH ins AS (` + insertEntries + ` RETURNING 1
), cp AS (
	INSERT INTO tollgate_ledger_checkpoints AS c (stream, last_id, last_ms, last_seq) VALUES ($11, $12, $13, $14)
	ON CONFLICT (stream) DO UPDATE SET last_id = excluded.last_id, last_ms = excluded.last_ms,
		last_seq = excluded.last_seq, updated_at = now()
	WHERE (c.last_ms, c.last_seq) < (excluded.last_ms, excluded.last_seq)
)
SELECT count(*) FROM ins`

// Write records entries, each once: an entry whose ID is recorded already
// (a redelivery) is skipped. It is one statement: on error nothing of the
// batch is recorded, and the caller retries it whole.
func (s *Sink) Write(ctx context.Context, entries []ledger.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	cols, err := columnsOf(entries)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, insertEntries, cols.args()...); err != nil {
		return fmt.Errorf("ledger: write %d entries: %w", len(entries), err)
	}
	return nil
}

// WriteFrom records entries as Write does and, in the same statement,
// moves stream's checkpoint to lastID, the stream ID (Redis's
// "<ms>-<seq>") of the last entry the batch covers. Either both are
// recorded or neither, so a shipper that resumes from Checkpoint neither
// skips nor (beyond the redeliveries that the IDs absorb) repeats. The
// checkpoint only moves forward. entries may be empty (entries the
// shipper skipped still move it). It returns how many entries were new.
func (s *Sink) WriteFrom(ctx context.Context, stream string, entries []ledger.Entry, lastID string) (inserted int64, err error) {
	ms, seq, err := parseStreamID(lastID)
	if err != nil {
		return 0, err
	}
	if stream == "" {
		return 0, errors.New("ledger: empty stream name")
	}
	cols, err := columnsOf(entries)
	if err != nil {
		return 0, err
	}
	args := append(cols.args(), stream, lastID, ms, seq)
	if err := s.pool.QueryRow(ctx, writeFrom, args...).Scan(&inserted); err != nil {
		return 0, fmt.Errorf("ledger: write %d entries from %s up to %s: %w", len(entries), stream, lastID, err)
	}
	return inserted, nil
}

// Checkpoint returns the stream ID up to which stream has been recorded;
// "" when nothing has been.
func (s *Sink) Checkpoint(ctx context.Context, stream string) (lastID string, err error) {
	err = s.pool.QueryRow(ctx, `SELECT last_id FROM tollgate_ledger_checkpoints WHERE stream = $1`, stream).Scan(&lastID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ledger: checkpoint of %s: %w", stream, err)
	}
	return lastID, nil
}

// Accounts returns up to limit (1 to MaxPage) accounts that have ledger
// entries, in order, after the account after ("": from the first).
func (s *Sink) Accounts(ctx context.Context, after string, limit int) ([]string, error) {
	if limit < 1 || limit > MaxPage {
		return nil, fmt.Errorf("ledger: limit %d is out of range (allowed: 1 to %d)", limit, MaxPage)
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT account FROM tollgate_ledger WHERE account > $1 ORDER BY account LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: accounts: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, fmt.Errorf("ledger: accounts: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: accounts: %w", err)
	}
	return out, nil
}

// Checkpoints returns every stream's checkpoint (ledger.Checkpointer), in
// one query: a Cluster's ledger has a stream per hash slot.
func (s *Sink) Checkpoints(ctx context.Context) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT stream, last_id FROM tollgate_ledger_checkpoints`)
	if err != nil {
		return nil, fmt.Errorf("ledger: checkpoints: %w", err)
	}
	out := map[string]string{}
	for rows.Next() {
		var stream, last string
		if err := rows.Scan(&stream, &last); err != nil {
			return nil, fmt.Errorf("ledger: checkpoints: %w", err)
		}
		out[stream] = last
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: checkpoints: %w", err)
	}
	return out, nil
}

var _ ledger.Checkpointer = (*Sink)(nil)

// SetCheckpoint moves stream's checkpoint to lastID, forward only, with no
// entries: WriteFrom with none.
func (s *Sink) SetCheckpoint(ctx context.Context, stream, lastID string) error {
	_, err := s.WriteFrom(ctx, stream, nil, lastID)
	return err
}

// Sum returns the sum of the amounts of account's entries and their
// number, to check a balance against its ledger.
func (s *Sink) Sum(ctx context.Context, account string) (sum, count int64, err error) {
	err = s.pool.QueryRow(ctx, `SELECT coalesce(sum(amount), 0)::bigint, count(*) FROM tollgate_ledger WHERE account = $1`, account).Scan(&sum, &count)
	if err != nil {
		return 0, 0, fmt.Errorf("ledger: sum of %s: %w", account, err)
	}
	return sum, count, nil
}

// Cursor is a position in an account's entries, ordered by (Time, ID);
// the zero Cursor is before the first.
type Cursor struct {
	Time time.Time
	ID   string
}

// IsZero reports whether c is the start.
func (c Cursor) IsZero() bool { return c.Time.IsZero() && c.ID == "" }

// MaxPage is the most entries Entries returns at once.
const MaxPage = 1000

// Entries returns up to limit (1 to MaxPage) of account's entries after
// the cursor, oldest first, and the cursor of the next page: zero when
// this page is the last. Times are in UTC, to the microsecond (what
// PostgreSQL keeps).
func (s *Sink) Entries(ctx context.Context, account string, after Cursor, limit int) ([]ledger.Entry, Cursor, error) {
	if limit < 1 || limit > MaxPage {
		return nil, Cursor{}, fmt.Errorf("ledger: page size %d is out of range (allowed: 1 to %d)", limit, MaxPage)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, account, consumer, kind, amount, balance_after, request_id, reason, policy_revision, time
FROM tollgate_ledger WHERE account = $1 AND (time, id) > ($2, $3) ORDER BY time, id LIMIT $4`,
		account, after.Time, after.ID, limit)
	if err != nil {
		return nil, Cursor{}, fmt.Errorf("ledger: entries of %s: %w", account, err)
	}
	out := make([]ledger.Entry, 0, min(limit, 64))
	var e ledger.Entry
	_, err = pgx.ForEachRow(rows, []any{&e.ID, &e.Account, &e.Consumer, &e.Kind, &e.Amount, &e.BalanceAfter, &e.RequestID, &e.Reason, &e.PolicyRevision, &e.Time}, func() error {
		e.Time = e.Time.UTC()
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, Cursor{}, fmt.Errorf("ledger: entries of %s: %w", account, err)
	}
	var next Cursor
	if len(out) == limit {
		last := out[len(out)-1]
		next = Cursor{Time: last.Time, ID: last.ID}
	}
	return out, next, nil
}

// columns are entries turned into the arrays insertEntries unnests.
type columns struct {
	id, account, consumer, kind       []string
	amount, balanceAfter              []int64
	requestID, reason, policyRevision []string
	time                              []time.Time
}

func columnsOf(entries []ledger.Entry) (*columns, error) {
	n := len(entries)
	c := &columns{
		id: make([]string, n), account: make([]string, n), consumer: make([]string, n), kind: make([]string, n),
		amount: make([]int64, n), balanceAfter: make([]int64, n),
		requestID: make([]string, n), reason: make([]string, n), policyRevision: make([]string, n),
		time: make([]time.Time, n),
	}
	for i, e := range entries {
		switch {
		case e.ID == "":
			return nil, fmt.Errorf("ledger: entry %d of %d has no ID", i, n)
		case e.Account == "":
			return nil, fmt.Errorf("ledger: entry %s has no account", e.ID)
		case e.Kind == "":
			return nil, fmt.Errorf("ledger: entry %s has no kind", e.ID)
		case e.Time.IsZero():
			return nil, fmt.Errorf("ledger: entry %s has no time", e.ID)
		}
		c.id[i], c.account[i], c.consumer[i], c.kind[i] = e.ID, e.Account, e.Consumer, string(e.Kind)
		c.amount[i], c.balanceAfter[i] = e.Amount, e.BalanceAfter
		c.requestID[i], c.reason[i], c.policyRevision[i] = e.RequestID, e.Reason, e.PolicyRevision
		c.time[i] = e.Time
	}
	return c, nil
}

func (c *columns) args() []any {
	return []any{c.id, c.account, c.consumer, c.kind, c.amount, c.balanceAfter, c.requestID, c.reason, c.policyRevision, c.time}
}

// parseStreamID reads a Redis stream ID, "<ms>-<seq>".
func parseStreamID(id string) (ms, seq int64, err error) {
	a, b, ok := strings.Cut(id, "-")
	if ok {
		ms, err = strconv.ParseInt(a, 10, 64)
		if err == nil {
			seq, err = strconv.ParseInt(b, 10, 64)
		}
	}
	if !ok || err != nil || ms < 0 || seq < 0 {
		return 0, 0, fmt.Errorf("ledger: checkpoint %q is not a stream ID (allowed: <ms>-<seq> such as 1700000000000-0)", id)
	}
	return ms, seq, nil
}
