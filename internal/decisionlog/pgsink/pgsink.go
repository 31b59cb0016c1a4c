// Package pgsink is the decision logs' PostgreSQL sink: each record once
// (by its decision id) in tollgate_decisions, a batch per statement; the
// retention runner that deletes old rows in bounded batches; and the
// usage report billing reads, joined with the ledger.
package pgsink

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/pg"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Component names the decision logs' migrations in
// tollgate_schema_migrations.
const Component = "decisionlog"

// Migrate creates or upgrades tollgate_decisions. Run it once at
// start-up, before New.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pg.MigrateDir(ctx, pool, Component, migrationFiles, "migrations")
}

// Sink writes decision log records to tollgate_decisions. The Logger calls
// Write from one goroutine; Close does not close the pool, which the
// caller owns.
type Sink struct {
	pool    *pgxpool.Pool
	timeout time.Duration
	cols    columns // reused by each Write (one goroutine)
}

var _ decisionlog.Sink = (*Sink)(nil)

// DefaultWriteTimeout bounds one Write unless New is told otherwise.
const DefaultWriteTimeout = 5 * time.Second

// New returns a Sink on a pool whose database Migrate has prepared. Each
// Write gives up after timeout (DefaultWriteTimeout when 0), so a database
// that hangs costs a batch, not the writer: the Logger counts the batch as
// dropped and goes on.
func New(pool *pgxpool.Pool, timeout time.Duration) *Sink {
	if timeout <= 0 {
		timeout = DefaultWriteTimeout
	}
	return &Sink{pool: pool, timeout: timeout}
}

// The batch as columns unnested by the server: one statement, one round
// trip and one cached plan for any batch size (BenchmarkWrite measures it
// against COPY). A decision id written already (a retried batch) is
// skipped.
const insertDecisions = `INSERT INTO tollgate_decisions
	(decision_id, service, request_id, time, latency_us, consumer, plan, method, host, path,
	 allow, status, reason, "limit", charge_id, charged, balance, revision, doc)
SELECT d, s, rq, t, l, c, p, m, h, pa, a, st, r, li, ci, ch, b, rv, doc::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[], $6::text[], $7::text[],
	$8::text[], $9::text[], $10::text[], $11::boolean[], $12::integer[], $13::text[], $14::text[],
	$15::text[], $16::bigint[], $17::bigint[], $18::text[], $19::text[])
	AS u(d, s, rq, t, l, c, p, m, h, pa, a, st, r, li, ci, ch, b, rv, doc)
ON CONFLICT (decision_id) DO NOTHING`

// Write inserts the records in one statement: all of them or, on error,
// none (the Logger counts them as dropped, reason sink_error).
func (s *Sink) Write(ctx context.Context, records []*decisionlog.Record) error {
	if len(records) == 0 {
		return nil
	}
	c := &s.cols
	c.reset()
	for _, r := range records {
		if err := c.add(r); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, insertDecisions, c.args()...); err != nil {
		return fmt.Errorf("decision log: write %d records: %w", len(records), err)
	}
	return nil
}

// Close does nothing: the pool is the caller's.
func (s *Sink) Close() error { return nil }

// rest is what a row keeps of a record beyond its columns.
type rest struct {
	Request struct {
		Headers     map[string]string        `json:"headers,omitempty"`
		Domain      string                   `json:"domain,omitempty"`
		Descriptors [][]decisionlog.DocEntry `json:"descriptors,omitempty"`
	} `json:"request"`
	Decision struct {
		Limits []decisionlog.DocLimit `json:"limits,omitempty"`
		Charge *decisionlog.DocCharge `json:"charge,omitempty"`
	} `json:"decision"`
}

// columns are records turned into the arrays insertDecisions unnests.
type columns struct {
	id, service, requestID             []string
	time                               []time.Time
	latency                            []int64
	consumer, plan, method, host, path []string
	allow                              []bool
	status                             []int32
	reason, limit, chargeID            []string
	charged, balance                   []*int64
	revision, doc                      []string
}

func (c *columns) reset() {
	c.id, c.service, c.requestID = c.id[:0], c.service[:0], c.requestID[:0]
	c.time, c.latency = c.time[:0], c.latency[:0]
	c.consumer, c.plan, c.method, c.host, c.path = c.consumer[:0], c.plan[:0], c.method[:0], c.host[:0], c.path[:0]
	c.allow, c.status, c.reason, c.limit, c.chargeID = c.allow[:0], c.status[:0], c.reason[:0], c.limit[:0], c.chargeID[:0]
	c.charged, c.balance, c.revision, c.doc = c.charged[:0], c.balance[:0], c.revision[:0], c.doc[:0]
}

func (c *columns) add(r *decisionlog.Record) error {
	if r.ID == "" {
		return errors.New("decision log: a record has no decision id")
	}
	d := r.Document()
	var x rest
	x.Request.Headers, x.Request.Domain, x.Request.Descriptors = d.Request.Headers, d.Request.Domain, d.Request.Descriptors
	x.Decision.Limits, x.Decision.Charge = d.Decision.Limits, d.Decision.Charge
	doc, err := json.Marshal(&x)
	if err != nil {
		return fmt.Errorf("decision log: record %s: %w", r.ID, err)
	}
	var charged, balance *int64
	var chargeID string
	if ch := d.Decision.Charge; ch != nil {
		chargeID, charged, balance = ch.ID, ch.Charged, ch.Balance
	}
	c.id, c.service, c.requestID = append(c.id, r.ID), append(c.service, r.Service), append(c.requestID, r.RequestID)
	c.time, c.latency = append(c.time, r.Time), append(c.latency, d.LatencyUS)
	c.consumer, c.plan = append(c.consumer, r.Consumer), append(c.plan, r.Plan)
	c.method, c.host, c.path = append(c.method, r.Method), append(c.host, r.Host), append(c.path, r.Path)
	c.allow, c.status = append(c.allow, r.Allow), append(c.status, int32(r.Status))
	c.reason, c.limit, c.chargeID = append(c.reason, r.Reason), append(c.limit, r.Limit), append(c.chargeID, chargeID)
	c.charged, c.balance = append(c.charged, charged), append(c.balance, balance)
	c.revision, c.doc = append(c.revision, r.Revision), append(c.doc, string(doc))
	return nil
}

func (c *columns) args() []any {
	return []any{c.id, c.service, c.requestID, c.time, c.latency, c.consumer, c.plan, c.method, c.host, c.path,
		c.allow, c.status, c.reason, c.limit, c.chargeID, c.charged, c.balance, c.revision, c.doc}
}

// DeleteBatch is the most rows one retention statement deletes: each
// statement is short, so it never holds locks long.
const DeleteBatch = 5000

// DeleteBefore deletes the records older than before, batch rows per
// statement (DeleteBatch when 0 or less), until none is left or ctx ends.
// It returns how many it deleted.
func (s *Sink) DeleteBefore(ctx context.Context, before time.Time, batch int) (int64, error) {
	if batch <= 0 {
		batch = DeleteBatch
	}
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM tollgate_decisions WHERE decision_id IN (
	SELECT decision_id FROM tollgate_decisions WHERE time < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`, before, batch)
		if err != nil {
			return total, fmt.Errorf("decision log: retention: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

// RetentionOptions configure Retention.
type RetentionOptions struct {
	// Retention is how long a record is kept.
	Retention time.Duration
	// Every is how often old rows are deleted (default 10m).
	Every time.Duration
	// Batch bounds each DELETE (default DeleteBatch).
	Batch  int
	Now    func() time.Time // time.Now when nil
	Logger *slog.Logger
}

// Retention returns a runner deleting the records older than
// opts.Retention at start and then every opts.Every, until ctx ends. A
// failed pass is logged and tried again at the next tick; it never ends
// the runner.
func (s *Sink) Retention(opts RetentionOptions) func(context.Context) error {
	every := opts.Every
	if every <= 0 {
		every = 10 * time.Minute
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return func(ctx context.Context) error {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			n, err := s.DeleteBefore(ctx, now().Add(-opts.Retention), opts.Batch)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				log.Warn("decision log retention failed; retrying at the next pass", "error", err, "deleted", n)
			case n > 0:
				log.Info("decision log retention", "deleted", n, "older_than", opts.Retention)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}
}
