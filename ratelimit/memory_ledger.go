package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
)

// memLedger is the memory store's ledger: a bounded ring of entries, one
// stream named after the store's start, so entry IDs stay unique across
// restarts. When the ring is full the oldest entry is dropped (and
// counted): with nothing shipping it, the ledger is the recent history.
type memLedger struct {
	mu      sync.Mutex
	stream  string
	next    uint64         // position of the next entry (1-based)
	ring    []ledger.Entry // the entries at positions first .. next-1
	head    int            // index in ring of position first
	first   uint64
	max     int
	dropped uint64
}

func newMemLedger(max int) *memLedger {
	return &memLedger{stream: "m" + strconv.FormatInt(time.Now().UnixNano(), 36), next: 1, first: 1, max: max}
}

// add records e (its ID is set here).
func (l *memLedger) add(e ledger.Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.ID = l.stream + "/" + strconv.FormatUint(l.next, 10) + "-0" // shaped like a Redis stream ID
	l.next++
	if len(l.ring) < l.max {
		l.ring = append(l.ring, e)
		return
	}
	l.ring[l.head] = e // the oldest goes
	l.head = (l.head + 1) % len(l.ring)
	l.first++
	l.dropped++
}

// Streams implements ledger.Source.
func (s *MemoryStore) Streams() []string { return []string{s.ledger.stream} }

// Read implements ledger.Source.
func (s *MemoryStore) Read(_ context.Context, after map[string]string, n int) (map[string][]ledger.Entry, error) {
	l := s.ledger
	pos, ok := after[l.stream]
	if !ok {
		return nil, nil
	}
	from := uint64(0)
	if pos != "" {
		p, err := strconv.ParseUint(strings.TrimSuffix(pos, "-0"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("memory ledger: position %q is not <number>-0", pos)
		}
		from = p
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	start := max(from+1, l.first)
	var out []ledger.Entry
	for p := start; p < l.next && len(out) < n; p++ {
		out = append(out, l.ring[(l.head+int(p-l.first))%len(l.ring)])
	}
	if len(out) == 0 {
		return nil, nil
	}
	return map[string][]ledger.Entry{l.stream: out}, nil
}

// Trim implements ledger.Source; the ring forgets by itself.
func (s *MemoryStore) Trim(context.Context, map[string]string) error { return nil }

// LedgerDropped is how many entries the ring dropped before they were read.
func (s *MemoryStore) LedgerDropped() uint64 {
	s.ledger.mu.Lock()
	defer s.ledger.mu.Unlock()
	return s.ledger.dropped
}

var _ ledger.Source = (*MemoryStore)(nil)
