package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stream is a one-stream Source over a slice; Trim records what it was
// told it may forget.
type stream struct {
	entries []ledger.Entry
	mu      sync.Mutex
	trimmed string
}

func (s *stream) trimmedOnce() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trimmed
}

func (s *stream) Streams() []string { return []string{"s"} }

func (s *stream) Read(_ context.Context, after map[string]string, n int) (map[string][]ledger.Entry, error) {
	from := 0
	if p := after["s"]; p != "" {
		from, _ = strconv.Atoi(p)
	}
	if from >= len(s.entries) {
		return nil, nil
	}
	return map[string][]ledger.Entry{"s": s.entries[from:min(from+n, len(s.entries))]}, nil
}

func (s *stream) Trim(_ context.Context, through map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trimmed = through["s"]
	return nil
}

// flaky is a Checkpointer whose writes fail while fail is set.
type flaky struct {
	rows map[string]ledger.Entry
	cps  map[string]string
	fail bool
}

func (f *flaky) Checkpoints(context.Context) (map[string]string, error) {
	return maps.Clone(f.cps), nil
}

func (f *flaky) WriteFrom(_ context.Context, name string, entries []ledger.Entry, pos string) (int64, error) {
	if f.fail {
		return 0, errors.New("database down")
	}
	for _, e := range entries {
		f.rows[e.ID] = e
	}
	f.cps[name] = pos
	return int64(len(entries)), nil
}

// TestShipperRetriesAndResumes: a failed write leaves the stream where it
// was and nothing trimmed; the next pass ships it; a new shipper resumes at
// the checkpoint.
func TestShipperRetriesAndResumes(t *testing.T) {
	src := &stream{}
	for i := 1; i <= 7; i++ {
		src.entries = append(src.entries, ledger.Entry{ID: fmt.Sprintf("s/%d", i), Account: "a", Amount: -1, Time: time.Now()})
	}
	dst := &flaky{rows: map[string]ledger.Entry{}, cps: map[string]string{}, fail: true}
	sh, err := ledger.NewShipper(src, dst, ledger.ShipOptions{Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := sh.Once(context.Background()); err == nil || n != 0 || src.trimmedOnce() != "" || len(dst.rows) != 0 {
		t.Fatalf("failing sink: shipped %d, err %v, trimmed %q, rows %d; want an error and nothing moved", n, err, src.trimmedOnce(), len(dst.rows))
	}
	dst.fail = false
	if n, err := sh.Once(context.Background()); err != nil || n != 3 || src.trimmedOnce() != "3" || dst.cps["s"] != "3" {
		t.Fatalf("after recovery: shipped %d, err %v, trimmed %q, checkpoint %q; want 3, 3, 3", n, err, src.trimmedOnce(), dst.cps["s"])
	}
	resumed, err := ledger.NewShipper(src, dst, ledger.ShipOptions{Batch: 10})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := resumed.Once(context.Background()); err != nil || n != 4 || len(dst.rows) != 7 {
		t.Fatalf("a new shipper: shipped %d, err %v, rows %d; want the 4 left after the checkpoint, 7 rows", n, err, len(dst.rows))
	}
}

// TestShipperRunStops: Run ships what is there and returns when its
// context ends.
func TestShipperRunStops(t *testing.T) {
	src := &stream{entries: []ledger.Entry{{ID: "s/1", Time: time.Now()}}}
	dst := &flaky{rows: map[string]ledger.Entry{}, cps: map[string]string{}}
	sh, err := ledger.NewShipper(src, dst, ledger.ShipOptions{Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for src.trimmedOnce() != "1" {
		if time.Now().After(deadline) {
			t.Fatal("Run never shipped the entry")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPosition(t *testing.T) {
	for id, want := range map[string]string{"l12/1733-0": "1733-0", "m1x/42": "42", "plain": "plain"} {
		if got := ledger.Position(id); got != want {
			t.Errorf("Position(%q) = %q, want %q", id, got, want)
		}
	}
}
