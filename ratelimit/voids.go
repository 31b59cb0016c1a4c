package ratelimit

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// pendingVoid is a void, or a settle, that failed and waits to be
// retried.
type pendingVoid struct {
	req    *Request
	reason string
	settle *pendingSettle // set: a settle, not a void
	saved  bool           // kept in the PendingStore
}

// pendingSettle is a reservation's settle to retry.
type pendingSettle struct {
	account, id string
	capture     bool
}

// voidQueue holds the pending voids, bounded.
type voidQueue struct {
	mu       sync.Mutex
	q        []pendingVoid
	inflight int // taken by a retry pass, not yet done
	max      int
	pending  prometheus.Gauge
	results  *prometheus.CounterVec
}

func newVoidQueue(max int) *voidQueue {
	if max <= 0 {
		max = 100_000
	}
	q := &voidQueue{max: max,
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_voids_pending",
			Help: "Voids of requests whose store outcome is unknown, and settles of reservations that failed, waiting to be retried.",
		}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_voids_total",
			Help: "Voids by result: refunded (the request had been charged), nothing_taken, dropped (too many pending: the account may have been charged), unresolved (its ledger entries were trimmed with no durable ledger to ask: the account may have been charged).",
		}, []string{"result"}),
	}
	for _, r := range []string{"refunded", "nothing_taken", "dropped", "unresolved"} {
		q.results.WithLabelValues(r)
	}
	return q
}

// add queues p; it reports false (and counts a drop) when the queue is full.
func (q *voidQueue) add(p pendingVoid) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.q) >= q.max {
		q.results.WithLabelValues("dropped").Inc()
		return false
	}
	q.q = append(q.q, p)
	q.pending.Set(float64(len(q.q) + q.inflight))
	return true
}

// take empties the queue and returns what it held; they stay counted as
// pending until done.
func (q *voidQueue) take() []pendingVoid {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.q
	q.q = nil
	q.inflight += len(out)
	return out
}

// done ends one taken void's retry (re-add it first if it failed).
func (q *voidQueue) done() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inflight--
	q.pending.Set(float64(len(q.q) + q.inflight))
}

// unsaved marks the queued items not yet kept in the PendingStore as
// saved and returns their records (unmark them with unsave if the save
// fails).
func (q *voidQueue) unsaved() []Pending {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Pending
	for i := range q.q {
		if !q.q[i].saved {
			q.q[i].saved = true
			out = append(out, q.q[i].record())
		}
	}
	return out
}

// unsave marks items as not saved again.
func (q *voidQueue) unsave(items []Pending) {
	keys := make(map[Pending]bool, len(items))
	for _, p := range items {
		keys[p] = true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range q.q {
		if q.q[i].saved && keys[q.q[i].record()] {
			q.q[i].saved = false
		}
	}
}

func (q *voidQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.q) + q.inflight
}
