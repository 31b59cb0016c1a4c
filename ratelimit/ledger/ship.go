package ledger

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Checkpointer is a Sink that keeps, in the same step as each batch, how
// far each stream has been shipped, so a shipper resumes exactly there.
type Checkpointer interface {
	// Checkpoints returns the position last shipped of each stream.
	Checkpoints(ctx context.Context) (map[string]string, error)
	// WriteFrom records entries of stream (exactly once, by ID) and the
	// stream's new checkpoint, position, atomically; it reports how many
	// entries were new.
	WriteFrom(ctx context.Context, stream string, entries []Entry, position string) (int64, error)
}

// ShipOptions configure a Shipper.
type ShipOptions struct {
	// Batch is how many entries of a stream one write carries (default 500).
	Batch int
	// Interval is the pause when there is nothing to ship, or after a
	// failure (default 1s).
	Interval time.Duration
	Logger   *slog.Logger
	// Registerer receives the shipper's metrics; none when nil.
	Registerer prometheus.Registerer
}

// Shipper delivers a store's entries to a Checkpointer at least once, in
// order per stream, and then trims them from the store. A restart resumes
// at the checkpoints; an entry delivered twice is recorded once.
type Shipper struct {
	flushBy atomic.Int64 // unix ns: Run's last pass ends by then (0: a second)
	src     Source
	dst     Checkpointer
	opts    ShipOptions
	after   map[string]string // nil until the checkpoints are read
	shipped prometheus.Counter
	failed  prometheus.Counter
	lag     prometheus.Gauge
}

// NewShipper ships src to dst.
func NewShipper(src Source, dst Checkpointer, opts ShipOptions) (*Shipper, error) {
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Shipper{src: src, dst: dst, opts: opts,
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_ledger_shipped_total",
			Help: "Ledger entries written to the durable ledger (PostgreSQL).",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_ledger_ship_failures_total",
			Help: "Ledger shipping passes that failed (retried; nothing is lost).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_ledger_lag_seconds",
			Help: "Age of the oldest ledger entry not yet durable (0 when none).",
		}),
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{s.shipped, s.failed, s.lag} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Once ships what is there now, up to one batch per stream, and reports
// how many entries it wrote. A failed write leaves its stream where it
// was, to be shipped again.
func (s *Shipper) Once(ctx context.Context) (int, error) {
	if s.after == nil {
		cps, err := s.dst.Checkpoints(ctx)
		if err != nil {
			return 0, err
		}
		s.after = make(map[string]string, len(s.src.Streams()))
		for _, name := range s.src.Streams() {
			s.after[name] = cps[name]
		}
	}
	batches, err := s.src.Read(ctx, s.after, s.opts.Batch)
	if err != nil {
		return 0, err
	}
	oldest := time.Time{}
	for _, entries := range batches {
		if t := entries[0].Time; oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	if oldest.IsZero() {
		s.lag.Set(0)
	} else {
		s.lag.Set(time.Since(oldest).Seconds())
	}
	n := 0
	through := make(map[string]string, len(batches))
	for stream, entries := range batches {
		pos := Position(entries[len(entries)-1].ID)
		if _, err := s.dst.WriteFrom(ctx, stream, entries, pos); err != nil {
			return n, err
		}
		s.after[stream] = pos
		through[stream] = pos
		n += len(entries)
		s.shipped.Add(float64(len(entries)))
	}
	if len(through) > 0 {
		if err := s.src.Trim(ctx, through); err != nil {
			// Shipped and durable; trimmed on a later pass.
			s.opts.Logger.Warn("could not trim shipped ledger entries", "error", err)
		}
	}
	return n, nil
}

// FlushBy bounds Run's last pass, once its context ends, by the process's
// shutdown deadline.
func (s *Shipper) FlushBy(deadline time.Time) { s.flushBy.Store(deadline.UnixNano()) }

// Run ships until ctx is done, then ships what is there once more (by the
// FlushBy deadline); it never gives up on an entry: what is left waits in
// the store for the next start.
func (s *Shipper) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			by := time.Now().Add(time.Second)
			if d := s.flushBy.Load(); d != 0 {
				by = time.Unix(0, d)
			}
			last, cancel := context.WithDeadline(context.WithoutCancel(ctx), by)
			defer cancel()
			for {
				if n, err := s.Once(last); err != nil || n == 0 {
					return nil
				}
			}
		case <-t.C:
		}
		n, err := s.Once(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.failed.Inc()
			s.opts.Logger.Error("ledger shipping failed; retrying", "error", err, "in", s.opts.Interval)
			t.Reset(s.opts.Interval)
		case n > 0:
			t.Reset(0) // more may be waiting
		default:
			t.Reset(s.opts.Interval)
		}
	}
}
