// Package ledgertest helps tests check the ledger: Book, a
// ledger.Checkpointer in memory (the durable side, one entry per ID), and
// ShipAll, which ships a store's ledger into it.
package ledgertest

import (
	"context"
	"maps"
	"sync"
	"testing"

	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
)

// Book is a ledger.Checkpointer in memory: one entry per ID, with the
// checkpoints written in the same step.
type Book struct {
	mu      *sync.Mutex
	entries map[string]ledger.Entry
	cps     map[string]string
}

var _ ledger.Checkpointer = (*Book)(nil)

// NewBook returns an empty book.
func NewBook() *Book {
	return &Book{mu: &sync.Mutex{}, entries: map[string]ledger.Entry{}, cps: map[string]string{}}
}

// Restarted shares b's entries but starts with no checkpoints (a lost
// checkpoint table).
func (b *Book) Restarted() *Book {
	return &Book{mu: b.mu, entries: b.entries, cps: map[string]string{}}
}

// Checkpoints implements ledger.Checkpointer.
func (b *Book) Checkpoints(context.Context) (map[string]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.cps), nil
}

// WriteFrom implements ledger.Checkpointer: an entry already recorded is
// kept as it was.
func (b *Book) WriteFrom(_ context.Context, stream string, entries []ledger.Entry, pos string) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := int64(0)
	for _, e := range entries {
		if _, ok := b.entries[e.ID]; !ok {
			b.entries[e.ID] = e
			n++
		}
	}
	b.cps[stream] = pos
	return n, nil
}

// Sums returns each account's ledger sum and the entry count by kind.
func (b *Book) Sums() (map[string]int64, map[ledger.Kind]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sum, kinds := map[string]int64{}, map[ledger.Kind]int{}
	for _, e := range b.entries {
		sum[e.Account] += e.Amount
		kinds[e.Kind]++
	}
	return sum, kinds
}

// ShipAll ships src into dst in batches of batch (0: the shipper's
// default) until a pass finds nothing.
func ShipAll(t testing.TB, src ledger.Source, dst ledger.Checkpointer, batch int) {
	t.Helper()
	s, err := ledger.NewShipper(src, dst, ledger.ShipOptions{Batch: batch})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		n, err := s.Once(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("shipping never ended")
}
