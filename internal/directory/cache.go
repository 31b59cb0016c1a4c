package directory

import (
	"encoding/binary"
	"sync"
)

// cache is a bounded map from key hashes to resolutions, in shards that
// each evict by the clock algorithm (second chance): a hit only sets a
// bit, and a full shard evicts the first entry not used since the hand
// last passed it. Values are shared, read-only.
type cache struct {
	shards []cacheShard
	mask   uint64
}

type cacheShard struct {
	mu    sync.Mutex
	index map[[32]byte]int32
	slots []cacheSlot
	free  []int32
	hand  int
	limit int
	_     [40]byte // keeps shards' locks off each other's cache lines
}

type cacheSlot struct {
	hash    [32]byte
	val     *Resolved // nil: the slot is free
	used    bool      // since the clock hand passed
	touched bool      // since the last takeTouched
}

// newCache holds at most about size entries: each shard holds a share
// and a tenth more (hashes do not spread evenly: with 100,000 entries in
// 64 shards a share is 1,563 ± 39), so that size keys in use fit.
func newCache(size, shards int) *cache {
	c := &cache{shards: make([]cacheShard, shards), mask: uint64(shards - 1)}
	per := max(1, (size+shards-1)/shards)
	per += per/10 + 8
	for i := range c.shards {
		c.shards[i] = cacheShard{index: make(map[[32]byte]int32), limit: per}
	}
	return c
}

func (c *cache) shard(h *[32]byte) *cacheShard {
	// Bytes 16-23: the filter probes with 0-15.
	return &c.shards[binary.LittleEndian.Uint64(h[16:24])&c.mask]
}

func (c *cache) get(h *[32]byte) (*Resolved, bool) {
	s := c.shard(h)
	s.mu.Lock()
	i, ok := s.index[*h]
	var v *Resolved
	if ok {
		s.slots[i].used = true
		s.slots[i].touched = true
		v = s.slots[i].val
	}
	s.mu.Unlock()
	return v, ok
}

// put adds or replaces h's entry when keep (called under the shard's
// lock) says so.
func (c *cache) put(h [32]byte, v *Resolved, keep func() bool) {
	s := c.shard(&h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if keep != nil && !keep() {
		return
	}
	if i, ok := s.index[h]; ok {
		s.slots[i].val = v
		return
	}
	var i int32
	switch {
	case len(s.free) > 0:
		i = s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
	case len(s.slots) < s.limit:
		s.slots = append(s.slots, cacheSlot{})
		i = int32(len(s.slots) - 1)
	default:
		for s.slots[s.hand].used {
			s.slots[s.hand].used = false
			s.hand = (s.hand + 1) % len(s.slots)
		}
		i = int32(s.hand)
		delete(s.index, s.slots[i].hash)
		s.hand = (s.hand + 1) % len(s.slots)
	}
	s.slots[i] = cacheSlot{hash: h, val: v, touched: true}
	s.index[h] = i
}

// remove drops h's entry, if any.
func (c *cache) remove(h *[32]byte) {
	s := c.shard(h)
	s.mu.Lock()
	if i, ok := s.index[*h]; ok {
		delete(s.index, *h)
		s.slots[i] = cacheSlot{}
		s.free = append(s.free, i)
	}
	s.mu.Unlock()
}

// update replaces each entry for which f returns a new value (nil: keep
// it as it is).
func (c *cache) update(f func(*Resolved) *Resolved) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			if v := s.slots[j].val; v != nil {
				if nv := f(v); nv != nil {
					s.slots[j].val = nv
				}
			}
		}
		s.mu.Unlock()
	}
}

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}

// replace sets h's entry to v if there is one.
func (c *cache) replace(h [32]byte, v *Resolved) {
	s := c.shard(&h)
	s.mu.Lock()
	if i, ok := s.index[h]; ok {
		s.slots[i].val = v
	}
	s.mu.Unlock()
}

// takeTouched returns the key ids of the entries used since the last call
// (at most limit), and forgets that they were.
func (c *cache) takeTouched(limit int) []string {
	var ids []string
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			if len(ids) == limit {
				break
			}
			if sl := &s.slots[j]; sl.touched && sl.val != nil {
				sl.touched = false
				ids = append(ids, sl.val.Key.ID)
			}
		}
		s.mu.Unlock()
	}
	return ids
}
