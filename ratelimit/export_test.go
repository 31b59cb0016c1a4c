package ratelimit

// VoidWindow is the window of Redis time a Take of r ran in if at all
// (set by RedisStore.Take), for tests.
func VoidWindow(r *Request) (lo, hi int64) { return r.void.Lo, r.void.Hi }

// ForgetOutcome makes r's void look for its Take in the ledger, as after
// a lost reply, for tests.
func ForgetOutcome(r *Request) { r.void.Known = false }

// ExpiryItems counts the items of the memory store's expiry heaps, for
// tests.
func (s *MemoryStore) ExpiryItems() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.expiry)
		sh.mu.Unlock()
	}
	return n
}
