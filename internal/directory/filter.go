package directory

import (
	"encoding/binary"
	"math"
	"math/bits"
	"sync/atomic"
)

// filter is a Bloom filter of key hashes: Has is never false for a hash
// that was added, and true for another with about the false-positive rate
// it was sized for while it holds at most its capacity. Keys are SHA-256
// hashes already, uniform: the probe positions come from their bytes with
// no hashing (double hashing, Kirsch and Mitzenmacher). Add and Has are
// safe together without a lock.
type filter struct {
	words    []atomic.Uint64
	m        uint64 // bits
	k        uint64 // probes
	capacity int
	count    atomic.Int64 // hashes added (not counting those it had)
}

// newFilter sizes a filter for capacity hashes at false-positive rate p.
func newFilter(capacity int, p float64) *filter {
	capacity = max(capacity, 1024)
	m := uint64(math.Ceil(-float64(capacity) * math.Log(p) / (math.Ln2 * math.Ln2)))
	m = (m + 63) &^ 63
	k := uint64(max(1, math.Round(float64(m)/float64(capacity)*math.Ln2)))
	return &filter{words: make([]atomic.Uint64, m/64), m: m, k: k, capacity: capacity}
}

func probes(h *[32]byte) (uint64, uint64) {
	return binary.LittleEndian.Uint64(h[0:8]), binary.LittleEndian.Uint64(h[8:16]) | 1
}

// add records h. A hash the filter has already (added before, or a
// false positive) is not counted again, so that the changes of one key
// do not fill the filter. One goroutine at a time adds.
func (f *filter) add(h [32]byte) {
	if f.has(&h) {
		return
	}
	a, b := probes(&h)
	for i := uint64(0); i < f.k; i++ {
		bit, _ := bits.Mul64(a+i*b, f.m) // a position in [0, m), without a division
		f.words[bit/64].Or(1 << (bit % 64))
	}
	f.count.Add(1)
}

// has reports whether h may have been added.
func (f *filter) has(h *[32]byte) bool {
	a, b := probes(h)
	for i := uint64(0); i < f.k; i++ {
		bit, _ := bits.Mul64(a+i*b, f.m)
		if f.words[bit/64].Load()&(1<<(bit%64)) == 0 {
			return false
		}
	}
	return true
}

// full reports whether the filter holds more than its capacity, so its
// false-positive rate is above the one it was sized for.
func (f *filter) full() bool { return f.count.Load() > int64(f.capacity) }

// bytes is the filter's size in memory.
func (f *filter) bytes() int { return len(f.words) * 8 }
