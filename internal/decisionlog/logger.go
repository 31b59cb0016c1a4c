// Package decisionlog writes one JSON record per ext_authz Check and per
// rate limit service call (OPA's decision logs, opt-in): who asked for
// what, what was decided and why, the limits' states and the charge.
//
// Logging never slows a request down: Log puts the record, built of values
// and references only, in a bounded buffer and returns; Run, a background
// runner, masks, encodes and writes the records to a Sink. When the buffer
// is full the record is dropped and counted. Credentials are never written:
// the query string is cut from the path, and Authorization, cookies, API
// keys and the configured header names (or descriptor keys) are masked.
package decisionlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	randv2 "math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/throttle"
)

// Sink writes records. Write is called from one goroutine at a time, with
// records already masked and in the order they were logged; it may keep
// nothing after it returns. A failed Write drops its batch (counted).
type Sink interface {
	Write(ctx context.Context, records []*Record) error
	Close() error
}

// Options configure a Logger.
type Options struct {
	Sink Sink
	// Buffer is how many records may wait for the sink (default 10000).
	Buffer int
	// Sample is the fraction of allowed decisions logged, 0 to 1 (0 logs
	// denials only). Denials and failures are always logged.
	Sample float64
	// Rand returns a number in [0, 1) for sampling; math/rand/v2's
	// Float64 when nil (tests inject their own).
	Rand func() float64
	// Mask adds header names (case-insensitive) and RLS descriptor keys
	// whose values are masked, to DefaultMask.
	Mask []string
	// Revision is the policy revision in force, stamped on each record
	// when it is logged; none when nil.
	Revision func() string
	// FlushTimeout bounds the writing of what is buffered once Run's
	// context has ended (default 5s); what is left then is dropped.
	FlushTimeout time.Duration
	// Registerer receives tollgate_decision_logs_written_total and
	// tollgate_decision_logs_dropped_total{reason}; none when nil.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// maxBatch is the most records handed to one Sink.Write.
const maxBatch = 256

// Logger buffers records and writes them to its sink from Run.
type Logger struct {
	sink     Sink
	ch       chan *Record
	sample   float64
	rand     func() float64
	mask     map[string]bool
	revision func() string
	flush    time.Duration
	flushBy  atomic.Int64 // unix ns; 0: none (see FlushBy)
	log      *slog.Logger
	prefix   string // of the decision ids
	seq      uint64 // written by Run only
	errLog   throttle.Every

	written            prometheus.Counter
	dropFull, dropSink prometheus.Counter
}

// New returns a Logger writing to opts.Sink once Run runs.
func New(opts Options) (*Logger, error) {
	if opts.Sink == nil {
		return nil, errors.New("decisionlog: no sink")
	}
	if opts.Sample < 0 || opts.Sample > 1 {
		return nil, fmt.Errorf("decisionlog: sample %v is out of range (allowed: 0 to 1)", opts.Sample)
	}
	if opts.Buffer < 0 {
		return nil, fmt.Errorf("decisionlog: buffer %d is negative", opts.Buffer)
	}
	var id [4]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	l := &Logger{
		sink:     opts.Sink,
		ch:       make(chan *Record, cmpOr(opts.Buffer, 10000)),
		sample:   opts.Sample,
		rand:     opts.Rand,
		mask:     make(map[string]bool, len(DefaultMask)+len(opts.Mask)),
		revision: opts.Revision,
		flush:    cmpOr(opts.FlushTimeout, 5*time.Second),
		log:      opts.Logger,
		prefix:   hex.EncodeToString(id[:]),
	}
	if l.rand == nil {
		l.rand = randv2.Float64
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	for _, n := range append(DefaultMask, opts.Mask...) {
		l.mask[strings.ToLower(n)] = true
	}
	written := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_decision_logs_written_total",
		Help: "Decision log records written to the sink.",
	})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_decision_logs_dropped_total",
		Help: "Decision log records dropped: reason buffer_full (the sink is behind; the request was not slowed) or sink_error (the sink failed, or had not written them when the flush timeout at shutdown passed).",
	}, []string{"reason"})
	l.written, l.dropFull, l.dropSink = written, dropped.WithLabelValues("buffer_full"), dropped.WithLabelValues("sink_error")
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{written, dropped} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Log queues r unless sampling leaves an allowed decision out; it never
// blocks: with the buffer full, r is dropped and counted. r belongs to the
// Logger from then on.
func (l *Logger) Log(r *Record) {
	if r.Allow && l.sample < 1 && l.rand() >= l.sample {
		return
	}
	if l.revision != nil {
		r.Revision = l.revision()
	}
	select {
	case l.ch <- r:
	default:
		l.dropFull.Inc()
	}
}

// FlushBy bounds the flush that follows Run's context ending by a deadline
// too (the process's one shutdown deadline); call it before ending Run.
func (l *Logger) FlushBy(deadline time.Time) { l.flushBy.Store(deadline.UnixNano()) }

// Run writes the queued records until ctx is done, then writes what is
// still buffered, giving up (and counting the rest as dropped) when the
// flush timeout has passed since ctx ended. It returns nil. Only one Run
// may run at a time.
func (l *Logger) Run(ctx context.Context) error {
	// Writes are not cancelled when ctx is: the batch in hand and the
	// buffer still go to the sink, until the flush timeout cancels wctx.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	quit, done := make(chan struct{}), make(chan struct{})
	stopTimer := context.AfterFunc(ctx, func() {
		defer close(done)
		wait := l.flush
		if by := l.flushBy.Load(); by != 0 {
			wait = min(wait, time.Until(time.Unix(0, by)))
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-quit:
		}
	})
	defer func() {
		if !stopTimer() { // the timer goroutine runs: end it and wait
			close(quit)
			<-done
		}
	}()
	batch := make([]*Record, 0, maxBatch)
	for {
		select {
		case r := <-l.ch:
			batch = l.fill(append(batch[:0], r))
			l.write(wctx, batch)
		case <-ctx.Done():
			// After the flush timeout, what is still buffered (at most one
			// buffer's worth, so late Logs cannot keep Run here) is dropped
			// and counted.
			left := cap(l.ch)
			for left > 0 {
				if batch = l.fill(batch[:0]); len(batch) == 0 {
					return nil
				}
				if wctx.Err() != nil {
					left -= len(batch)
					l.dropSink.Add(float64(len(batch)))
					clear(batch)
					continue
				}
				l.write(wctx, batch)
			}
			return nil
		}
	}
}

// fill adds what is buffered to batch, up to maxBatch records.
func (l *Logger) fill(batch []*Record) []*Record {
	for len(batch) < maxBatch {
		select {
		case r := <-l.ch:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

func (l *Logger) write(ctx context.Context, batch []*Record) {
	for _, r := range batch {
		l.seq++
		r.ID = appendID(l.prefix, l.seq)
		r.mask(l.mask)
	}
	if err := l.sink.Write(ctx, batch); err != nil {
		l.dropSink.Add(float64(len(batch)))
		l.logOnce("decision log sink failed; records dropped", err)
	} else {
		l.written.Add(float64(len(batch)))
	}
	clear(batch) // let the records go
}

// logOnce logs at most once per 10 s.
func (l *Logger) logOnce(msg string, err error) {
	if !l.errLog.Allow(10 * time.Second) {
		return
	}
	l.log.Error(msg+" (logged once per 10 s)", "error", err)
}

// Close closes the sink. Call it after Run has returned.
func (l *Logger) Close() error { return l.sink.Close() }
