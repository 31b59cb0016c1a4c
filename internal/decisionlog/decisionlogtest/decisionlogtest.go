// Package decisionlogtest helps tests read decision logs: a sink that
// hands over each record as its JSON line, and can be made to block.
package decisionlogtest

import (
	"context"
	"sync"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
)

// Sink sends each record it is given, encoded, to Lines.
type Sink struct {
	// Lines receives one JSON line per record; Write waits for room.
	Lines chan string
	// Block, when set, makes Write wait until it is closed (or its
	// context is done, then it fails with the context's error).
	Block chan struct{}
	// Entered, when set, is told (if it has room) when a Write begins.
	Entered chan struct{}
	closed  bool
	mu      sync.Mutex
}

var _ decisionlog.Sink = (*Sink)(nil)

// NewSink returns a Sink whose Lines holds n lines.
func NewSink(n int) *Sink { return &Sink{Lines: make(chan string, n)} }

// Write implements decisionlog.Sink.
func (s *Sink) Write(ctx context.Context, rs []*decisionlog.Record) error {
	if s.Entered != nil {
		select {
		case s.Entered <- struct{}{}:
		default:
		}
	}
	if s.Block != nil {
		select {
		case <-s.Block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, r := range rs {
		b, err := r.MarshalJSON()
		if err != nil {
			return err
		}
		s.Lines <- string(b)
	}
	return nil
}

// Close implements decisionlog.Sink.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Closed reports whether Close was called.
func (s *Sink) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Drain returns the lines written so far.
func (s *Sink) Drain() []string {
	var out []string
	for {
		select {
		case l := <-s.Lines:
			out = append(out, l)
		default:
			return out
		}
	}
}

// Run builds a Logger from opts and runs it until stop is called or the
// test ends; stop returns once Run has (the buffer flushed).
func Run(t testing.TB, opts decisionlog.Options) (l *decisionlog.Logger, stop func()) {
	t.Helper()
	l, err := decisionlog.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := l.Run(ctx); err != nil {
			t.Errorf("decision log Run: %v", err)
		}
	})
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return l, stop
}
