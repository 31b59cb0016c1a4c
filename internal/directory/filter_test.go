package directory

import (
	"crypto/rand"
	"testing"
)

func randomHash() [32]byte {
	var h [32]byte
	_, _ = rand.Read(h[:])
	return h
}

// TestFilter: no false negatives, and about the false-positive rate it
// was sized for when it holds its capacity.
func TestFilter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int
		p        float64
	}{
		{"1k at 1%", 1024, 0.01},
		{"100k at 1%", 100_000, 0.01},
		{"100k at 0.1%", 100_000, 0.001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFilter(tc.capacity, tc.p)
			added := make([][32]byte, tc.capacity)
			for i := range added {
				added[i] = randomHash()
				f.add(added[i])
			}
			for _, h := range added {
				if !f.has(&h) {
					t.Fatal("a hash added is not in the filter")
				}
			}
			if f.full() {
				t.Error("full at its capacity")
			}
			const trials = 200_000
			fp := 0
			for range trials {
				h := randomHash()
				if f.has(&h) {
					fp++
				}
			}
			rate := float64(fp) / trials
			t.Logf("%d hashes in %d bytes (%d probes): false positives %.3f%%", tc.capacity, f.bytes(), f.k, 100*rate)
			if rate > 1.5*tc.p {
				t.Errorf("false-positive rate %.4f, want about %.4f", rate, tc.p)
			}
			f.add(added[0])
			if f.full() {
				t.Error("full after a hash it had was added again")
			}
			for !f.full() { // one more, unless it is a false positive
				f.add(randomHash())
			}
		})
	}
}

// TestCacheKeepsWhatIsUsed: a full shard evicts entries not used since
// the clock hand last passed, never the one in use.
func TestCacheKeepsWhatIsUsed(t *testing.T) {
	c := newCache(8, 1)
	hot := randomHash()
	v := &Resolved{}
	c.put(hot, v, nil)
	for range 10_000 {
		c.put(randomHash(), v, nil)
		if _, ok := c.get(&hot); !ok {
			t.Fatal("the entry in use was evicted")
		}
	}
	if n := c.len(); n > 8+8/10+8 {
		t.Errorf("%d entries, want at most %d", n, 8+8/10+8)
	}
	c.remove(&hot)
	if _, ok := c.get(&hot); ok {
		t.Error("removed entry still there")
	}
}
