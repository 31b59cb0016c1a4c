// Package throttle limits how often something is done: a failure that
// recurs on every request is logged once per interval, not once per
// request.
package throttle

import (
	"sync/atomic"
	"time"
)

// Every lets one event through per interval; safe for concurrent use. The
// zero value lets the first event through.
type Every struct{ last atomic.Int64 }

// Allow reports whether interval has passed since the last event let
// through, and if so lets this one through.
func (e *Every) Allow(interval time.Duration) bool {
	now := time.Now().UnixNano()
	last := e.last.Load()
	return now-last >= int64(interval) && e.last.CompareAndSwap(last, now)
}
