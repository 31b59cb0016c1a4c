package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/throttle"
)

// Request is everything one API request consumes: its limits and its
// charge, applied all or nothing.
type Request struct {
	Limits []Limit
	Charge *Charge
	// Tag, when set, is the Redis Cluster hash tag of every counter of the
	// request (the rate limit service uses its domain). Empty: each counter
	// is tagged by its own key and the balance by its account, so a counter
	// is the same whichever request touches it; in a Cluster the keys of
	// one request must then share a slot (they do when the limits' keys and
	// the account are the consumer).
	Tag string
	// ID identifies this attempt so that a Take whose reply was lost can be
	// voided (its charge refunded) exactly once. The engine sets it.
	ID string
	// Consumer and Revision (the policy's) are recorded in the ledger with
	// the request's charge.
	Consumer, Revision string
	// Reservation is the id a charge settled later (Charge.Reserves) is
	// reserved under, unique per account while pending (Envoy's
	// x-request-id); Settle captures or releases it.
	Reservation string
	// Deadline is when the caller stops waiting (zero: never). A store
	// that would apply the request later refuses it with ErrDeadline and
	// takes nothing; Engine.Take sets it from the context's deadline.
	Deadline time.Time
	// void is what the store needs to void this request's Take.
	void voidRecord
}

// voidRecord is what a store needs to void a Take: the window of its own
// time in which the Take ran if it ran at all (Lo, Hi: µs; it can never
// run after Hi), or, once its outcome is known, what it took.
type voidRecord struct {
	Lo, Hi  int64
	Known   bool
	Credits int64
	// Mark is the quotas it counted (take.lua's format), made from the
	// limit states and the store's time (at, µs) when first needed: only
	// voids need it. tags: its keys are the tags (the memory store).
	Mark   string
	at     int64
	states []LimitState
	tags   bool
}

// known records that the Take ran at the store's time at (µs) and took
// credits, with states its limits' states.
func (r *voidRecord) known(credits, at int64, states []LimitState, tags bool) {
	r.Known, r.Credits, r.at, r.states, r.tags = true, credits, at, states, tags
}

// mark returns the quotas the Take of req counted (see voidRecord.Mark):
// each quota with room was counted, in the period that ends Reset after
// the Take's time and is Window long.
func (r *voidRecord) mark(req *Request) string {
	if r.Mark != "" || r.states == nil {
		return r.Mark
	}
	var b []byte
	for i := range req.Limits {
		l, st := &req.Limits[i], &r.states[i]
		if l.IsRate() || st.Exceeded || st.Overage || l.Cost <= 0 {
			continue
		}
		key := req.tag(l)
		if !r.tags {
			key = quotaKey(key)
		}
		stop := r.at + st.Reset.Microseconds()
		field := quotaField(l) + ":" + strconv.FormatInt(stop-st.Window.Microseconds(), 10) + ":" + strconv.FormatInt(stop, 10)
		b = appendMark(b, key, field, l.Cost)
	}
	r.Mark, r.states = string(b), nil
	return r.Mark
}

// voidState encodes the void record of req for a PendingStore: "u:<lo>:<hi>"
// or "k:<credits>:<mark>".
func (req *Request) voidState() string {
	r := &req.void
	if r.Known {
		return "k:" + strconv.FormatInt(r.Credits, 10) + ":" + r.mark(req)
	}
	return "u:" + strconv.FormatInt(r.Lo, 10) + ":" + strconv.FormatInt(r.Hi, 10)
}

// parseVoidRecord reads String's encoding back (the zero record, which
// voids nothing, for anything else).
func parseVoidRecord(s string) voidRecord {
	kind, rest, _ := strings.Cut(s, ":")
	a, b, ok := strings.Cut(rest, ":")
	x, err := strconv.ParseInt(a, 10, 64)
	if !ok || err != nil {
		return voidRecord{}
	}
	switch kind {
	case "k":
		return voidRecord{Known: true, Credits: x, Mark: b}
	case "u":
		if y, err := strconv.ParseInt(b, 10, 64); err == nil {
			return voidRecord{Lo: x, Hi: y}
		}
	}
	return voidRecord{}
}

// ErrVoidUnresolved: a void cannot tell whether its Take ran (the ledger
// entries of its window were trimmed, and no durable ledger holds them).
var ErrVoidUnresolved = errors.New("ratelimit: cannot tell whether the voided request was charged: the ledger entries of its time were trimmed and no durable ledger is configured")

// errNotSent: a Take failed before it reached the store (nothing to void).
var errNotSent = errors.New("not sent")

// errVoidEarly: the Take being voided may still run; retry after.
type errVoidEarly struct{ after time.Duration }

func (e errVoidEarly) Error() string {
	return "ratelimit: too early to void: the request may still be applied for " + e.after.String()
}

func voidEarly(ms int64) error { return errVoidEarly{after: time.Duration(ms) * time.Millisecond} }

// tag returns the hash tag of a limit's counter.
func (r *Request) tag(l *Limit) string {
	if r.Tag != "" {
		return r.Tag
	}
	return l.Key
}

// Outcome is the result of one Take.
type Outcome struct {
	// Allowed is true when every limit had room and the charge was paid;
	// then (and only then) everything was consumed.
	Allowed bool
	// Denied is the index in Request.Limits of the first limit that
	// refused, DeniedByCharge when the balance was short, or -1.
	Denied int
	// Limits has one state per Request.Limits entry.
	Limits []LimitState
	// Charged is the credits taken (0 when the charge was not due); with
	// Reserved, the credits held until the reservation is settled.
	Charged int64
	// Reserved reports that the charge was reserved under
	// Request.Reservation (taken from the balance, to be captured or
	// released by Settle).
	Reserved bool
	// Balance is the account's balance after the request (with a charge).
	Balance int64
	// RetryAfter is how long until every exceeded limit has room again
	// (0 when allowed or when only the balance was short).
	RetryAfter time.Duration
	// Degraded is set when the store failed and every limit failed open:
	// nothing was counted and the limit states are unknown.
	Degraded bool
	// ChargeID is the request's id in the ledger (its entries'
	// request_id) when it had a charge: the decision log records it, so
	// usage reports tie credits to the request's route.
	ChargeID string
}

// DeniedByCharge is Outcome.Denied when the balance could not pay.
const DeniedByCharge = -2

// LimitState is one limit after a Take.
type LimitState struct {
	// Remaining is how many units are left now (after this request if it
	// was allowed).
	Remaining int64
	// Reset is how long until the limit is fully available again.
	Reset time.Duration
	// Window is the limit's window, or the length of the current period.
	Window time.Duration
	// Exceeded reports that this limit refused the request.
	Exceeded bool
	// Overage reports an exhausted quota that the charge paid for.
	Overage bool
}

// Store applies requests atomically and keeps balances. Implementations:
// MemoryStore (one replica) and RedisStore (shared).
type Store interface {
	// Take applies all limits and the charge of req atomically, using the
	// store's clock. An error means nothing was consumed.
	Take(ctx context.Context, req *Request) (*Outcome, error)
	// Credit adds amount to account's balance once per idempotency key.
	Credit(ctx context.Context, account string, amount int64, idempotencyKey string) (*Credit, error)
	// Account reports an account's balance and period quota usage.
	Account(ctx context.Context, account string) (*Account, error)
	// Kind names the store in metrics ("memory", "redis").
	Kind() string
	// Settle captures (the held credits are kept) or releases (given back)
	// the pending reservation id of account, once: a second settle, or one
	// of an id never reserved, changes nothing. The ledger records it with
	// reason.
	Settle(ctx context.Context, account, id string, capture bool, reason string) (SettleResult, error)
	// ExpireReservations releases the reservations pending longer than the
	// store's settle timeout and forgets settled ones past it; it returns
	// how many it released. Safe to run on several replicas at once.
	ExpireReservations(ctx context.Context) (released int, err error)
}

// SettleResult is what a settle did.
type SettleResult string

// Settle results.
const (
	Captured       SettleResult = "captured"
	Released       SettleResult = "released"
	AlreadySettled SettleResult = "already_settled"
	Unknown        SettleResult = "unknown" // never reserved, or settled so long ago that it is forgotten
)

// DefaultSettleTimeout is how long a reservation may wait for its access
// log entry before it is released: longer than the longest route or
// stream timeout of the Envoys in front (Envoy logs a request when it
// ends).
const DefaultSettleTimeout = 5 * time.Minute

// Credit is the result of a top-up.
type Credit struct {
	Balance int64 `json:"balance"`
	// Applied is false when the idempotency key had been used already.
	Applied bool `json:"applied"`
}

// Account is an account's balance and quota usage.
type Account struct {
	Account string       `json:"account"`
	Balance int64        `json:"balance"`
	Quotas  []QuotaUsage `json:"quotas"`
}

// QuotaUsage is the usage of one period quota in its current period.
type QuotaUsage struct {
	Name  string    `json:"name"`
	Key   string    `json:"key"`
	Used  int64     `json:"used"`
	Start time.Time `json:"period_start"`
	End   time.Time `json:"period_end"`
}

// Errors callers branch on.
var (
	// ErrStoreUnavailable: the store failed and a limit or charge of the
	// request fails closed. Nothing was consumed.
	ErrStoreUnavailable = errors.New("ratelimit: store unavailable")
	// ErrIdempotencyConflict: the idempotency key was used for another
	// amount.
	ErrIdempotencyConflict = errors.New("ratelimit: idempotency key already used with a different amount")
	// ErrBalanceOverflow: the top-up would take the balance past MaxCredits.
	ErrBalanceOverflow = errors.New("ratelimit: balance would exceed the maximum")
	// ErrDuplicateReservation: the request's reservation id is pending (or
	// was settled within the settle timeout) for its account. Nothing was
	// taken.
	ErrDuplicateReservation = errors.New("ratelimit: the reservation id is already in use for this account")
	// ErrDeadline: the store reached the request after its deadline (the
	// caller had given up) and took nothing.
	ErrDeadline = errors.New("ratelimit: the request's deadline passed before the store applied it; nothing was taken")
)

// Options configure an Engine.
type Options struct {
	Logger *slog.Logger
	// Registerer receives the limit and store metrics; none when nil.
	Registerer prometheus.Registerer
	// ErrorLogInterval limits store error logs to one per interval
	// (default 10s); every error is counted.
	ErrorLogInterval time.Duration
	// PendingVoids bounds the voids waiting to be retried (default
	// 100,000); see Engine.Run.
	PendingVoids int
	// Pending keeps the voids and settles Run retries across restarts;
	// nil: they are kept in memory only.
	Pending PendingStore
	// AnswerMargin: a charged request taken with less than this left
	// before its caller's deadline is refunded and refused, since its
	// answer would likely arrive too late (0: none).
	AnswerMargin time.Duration
}

// Engine carries out requests on a Store, applying each limit's failure
// mode when the store fails, and keeps the metrics.
type Engine struct {
	store     Store
	log       *slog.Logger
	interval  time.Duration
	lastLog   throttle.Every
	decisions *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	voids     *voidQueue
	pending   PendingStore // nil: none
	flushBy   atomic.Int64 // unix ns: Run's last pass ends by then (0: a second)
	margin    time.Duration
	settles   *prometheus.CounterVec
	expired   prometheus.Counter
}

// NewEngine returns an engine over store.
func NewEngine(store Store, opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ErrorLogInterval == 0 {
		opts.ErrorLogInterval = 10 * time.Second
	}
	e := &Engine{
		store:    store,
		log:      opts.Logger,
		interval: opts.ErrorLogInterval,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_limit_decisions_total",
			Help: "Limit and charge outcomes by kind (rate, quota, credits) and result (allowed, exceeded, shadow_exceeded, overage, store_error, expired: the store reached the request after its deadline and took nothing).",
		}, []string{"limit_kind", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_store_duration_seconds",
			Help:    "Time of one store operation (take: all limits and the charge of a request).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}, []string{"store", "op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_store_errors_total",
			Help: "Store operations that failed or timed out.",
		}, []string{"store"}),
		settles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_settle_total",
			Help: "Settles of reserved charges by result (captured, released, already_settled, unknown, error).",
		}, []string{"result"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_settle_expired_total",
			Help: "Reservations released because no settle came within the settle timeout (the customer was not charged).",
		}),
	}
	e.voids = newVoidQueue(opts.PendingVoids)
	e.pending = opts.Pending
	e.margin = opts.AnswerMargin
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{e.decisions, e.duration, e.errors, e.voids.pending, e.voids.results, e.settles, e.expired} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("ratelimit: register metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Store returns the engine's store.
func (e *Engine) Store() Store { return e.store }

// ErrInvalidRequest is returned by Take for a request whose limits or
// charge break the engine's invariants (see Limit.Validate); nothing is
// consumed.
var ErrInvalidRequest = errors.New("ratelimit: invalid request")

// Take applies req. When the store fails, the request is allowed without
// counting if every limit and the charge fail open (Outcome.Degraded), and
// refused with ErrStoreUnavailable otherwise.
func (e *Engine) Take(ctx context.Context, req *Request) (*Outcome, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if req.Charge != nil && req.ID == "" {
		req.ID = newID()
	}
	if d, ok := ctx.Deadline(); ok && (req.Deadline.IsZero() || d.Before(req.Deadline)) {
		req.Deadline = d
	}
	start := time.Now()
	out, err := e.store.Take(ctx, req)
	e.duration.WithLabelValues(e.store.Kind(), "take").Observe(time.Since(start).Seconds())
	if errors.Is(err, ErrDuplicateReservation) {
		// A denial, not a failure: nothing was taken.
		e.decisions.WithLabelValues("credits", "duplicate").Inc()
		return nil, err
	}
	if errors.Is(err, ErrDeadline) {
		// The caller has given up and nothing was taken: no failure mode
		// applies, there is no one to answer. Many of these mean store
		// pauses, or clocks that disagree (see RedisStore.SetClockSkew).
		e.count(req, "expired")
		e.logError("take", err)
		return nil, err
	}
	if err == nil && ctx.Err() != nil {
		// Taken, but the caller has given up: the answer cannot be
		// delivered, so the request must not cost anything.
		e.refund(ctx, req, out)
		return nil, ctx.Err()
	}
	if err == nil && e.margin > 0 && out.Charged > 0 && !req.Deadline.IsZero() && time.Until(req.Deadline) < e.margin {
		// Taken, but too close to the caller's deadline for the answer to
		// reach it in time: refunded and refused rather than charged for
		// an answer the caller may never see.
		e.refund(ctx, req, out)
		e.count(req, "expired")
		return nil, ErrDeadline
	}
	if err != nil {
		e.errors.WithLabelValues(e.store.Kind()).Inc()
		e.logError("take", err)
		e.count(req, "store_error")
		// The Take may still run in the store (its reply was lost, or it
		// waits in a paused server): void it, whatever the failure mode —
		// a request let through degraded is not charged either.
		if !errors.Is(err, errNotSent) {
			e.void(ctx, req, reasonVoid)
		}
		if !failsOpen(req) {
			return nil, fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
		}
		return &Outcome{Allowed: true, Denied: -1, Degraded: true}, nil
	}
	for i := range req.Limits {
		result := "allowed"
		switch st := out.Limits[i]; {
		case st.Exceeded && req.Limits[i].Shadow:
			result = "shadow_exceeded"
		case st.Exceeded:
			result = "exceeded"
		case st.Overage:
			result = "overage"
		}
		e.decisions.WithLabelValues(req.Limits[i].Kind(), result).Inc()
	}
	if req.Charge != nil {
		result := "allowed"
		if out.Denied == DeniedByCharge {
			result = "exceeded"
		}
		e.decisions.WithLabelValues("credits", result).Inc()
		if out.Allowed && (out.Charged > 0 || out.Reserved) { // only what the ledger recorded
			out.ChargeID = req.ID
			if req.Reservation != "" {
				out.ChargeID = req.Reservation // a reservation's entries carry its id
			}
		}
	}
	return out, nil
}

// Credit tops up an account (see Store.Credit).
func (e *Engine) Credit(ctx context.Context, account string, amount int64, idempotencyKey string) (*Credit, error) {
	start := time.Now()
	c, err := e.store.Credit(ctx, account, amount, idempotencyKey)
	e.duration.WithLabelValues(e.store.Kind(), "credit").Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, ErrIdempotencyConflict) && !errors.Is(err, ErrBalanceOverflow) {
		e.errors.WithLabelValues(e.store.Kind()).Inc()
		e.logError("credit", err)
	}
	return c, err
}

// Account reports an account (see Store.Account).
func (e *Engine) Account(ctx context.Context, account string) (*Account, error) {
	a, err := e.store.Account(ctx, account)
	if err != nil {
		e.errors.WithLabelValues(e.store.Kind()).Inc()
		e.logError("account", err)
	}
	return a, err
}

// Settle captures or releases the pending reservation id of account (see
// Store.Settle), and counts the result.
func (e *Engine) Settle(ctx context.Context, account, id string, capture bool) (SettleResult, error) {
	reason := reasonNotDelivered
	if capture {
		reason = reasonDelivered
	}
	start := time.Now()
	res, err := e.store.Settle(ctx, account, id, capture, reason)
	e.duration.WithLabelValues(e.store.Kind(), "settle").Observe(time.Since(start).Seconds())
	if err != nil {
		e.errors.WithLabelValues(e.store.Kind()).Inc()
		e.settles.WithLabelValues("error").Inc()
		e.logError("settle", err)
		// Retried by Run until the store acknowledges it (before the
		// reservation's settle timeout, normally): a delivered request
		// is charged even when the store failed as its log arrived.
		if !e.voids.add(pendingVoid{settle: &pendingSettle{account: account, id: id, capture: capture}}) {
			e.log.Error("could not settle a reservation, and too many are pending to retry it; it will expire uncharged",
				"account", account, "reservation", id, "error", err)
		}
		return "", err
	}
	e.settles.WithLabelValues(string(res)).Inc()
	return res, nil
}

// retrySettle settles a reservation whose settle failed before.
func (e *Engine) retrySettle(ctx context.Context, p *pendingSettle) error {
	reason := reasonNotDelivered
	if p.capture {
		reason = reasonDelivered
	}
	res, err := e.store.Settle(ctx, p.account, p.id, p.capture, reason)
	if err != nil {
		return err
	}
	e.settles.WithLabelValues(string(res)).Inc()
	return nil
}

// ExpireReservations releases reservations whose settle timeout has
// passed (see Store.ExpireReservations), and counts them.
func (e *Engine) ExpireReservations(ctx context.Context) (int, error) {
	n, err := e.store.ExpireReservations(ctx)
	e.expired.Add(float64(n))
	if n > 0 {
		e.log.Warn("released reservations that no access log entry settled within the settle timeout; their requests were not charged", "released", n)
	}
	if err != nil {
		e.errors.WithLabelValues(e.store.Kind()).Inc()
		e.logError("expire reservations", err)
	}
	return n, err
}

// RunSweeper expires reservations every interval until ctx is done. A
// failed pass is logged and retried at the next tick; it returns nil.
func (e *Engine) RunSweeper(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			pass, cancel := context.WithTimeout(ctx, interval) // a stuck pass gives way to the next
			_, _ = e.ExpireReservations(pass)
			cancel()
		}
	}
}

// voider is a store that can undo the charge of a Take whose outcome was
// lost (a timeout after the request was sent): the Take either ran and is
// refunded, or is marked void so that it cannot run later.
type voider interface {
	// Void refunds a charge, or releases a reservation (with reason), and
	// returns the credits given back.
	Void(ctx context.Context, req *Request, reason string) (refunded int64, err error)
}

// count counts one result for every limit and the charge of req.
func (e *Engine) count(req *Request, result string) {
	for i := range req.Limits {
		e.decisions.WithLabelValues(req.Limits[i].Kind(), result).Inc()
	}
	if req.Charge != nil {
		e.decisions.WithLabelValues("credits", result).Inc()
	}
}

// Reasons recorded in the ledger with a refund.
const (
	reasonVoid = "void"        // refused after a store failure: its reply was lost
	reasonGone = "caller_gone" // taken, but its caller had gone: the answer could not be delivered
	// Settles of reservations.
	reasonDelivered    = "delivered"     // Envoy forwarded the request (and, for success, the upstream answered below 500)
	reasonNotDelivered = "not_delivered" // Envoy answered it itself, or the upstream failed (success)
	reasonExpired      = "expired"       // no settle within the settle timeout
)

// refund gives back what a request took (its credits, and the quotas it
// counted; rate limits stay consumed) when its answer cannot be delivered.
func (e *Engine) refund(ctx context.Context, req *Request, out *Outcome) {
	if req.Charge == nil || out.Charged == 0 {
		return
	}
	e.void(ctx, req, reasonGone) // its outcome is known; idempotent by request id
}

// void runs when a request is refused because the store failed, or taken
// after its caller had gone: whatever the store did with it must not cost
// the customer.
func (e *Engine) void(ctx context.Context, req *Request, reason string) {
	v, ok := e.store.(voider)
	if !ok || req.Charge == nil {
		return
	}
	// One quick try on the request path; Run retries it until the store
	// acknowledges it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 100*time.Millisecond)
	defer cancel()
	refunded, err := v.Void(ctx, req, reason)
	var early errVoidEarly
	switch {
	case errors.Is(err, ErrVoidUnresolved):
		e.voids.results.WithLabelValues("unresolved").Inc()
		e.log.Error("could not void a charge whose outcome is unknown; the account may have been charged for a refused request",
			"account", req.Charge.Account, "credits", req.Charge.Credits, "request_id", req.ID, "error", err)
	case err != nil:
		// Retried by Run: at once if it was only too early (the Take may
		// still run, until a few ms from now), else until the store answers.
		_ = errors.As(err, &early)
		if !e.voids.add(pendingVoid{req: voidable(req), reason: reason}) {
			e.log.Error("could not void a charge whose outcome is unknown, and too many voids are pending to retry it; the account may have been charged for a refused request",
				"account", req.Charge.Account, "credits", req.Charge.Credits, "request_id", req.ID, "error", err)
		}
	case refunded > 0:
		e.voids.results.WithLabelValues("refunded").Inc()
		e.log.Warn("refunded the charge of a refused request", "account", req.Charge.Account, "credits", refunded, "request_id", req.ID, "reason", reason)
	default:
		e.voids.results.WithLabelValues("nothing_taken").Inc()
		e.log.Debug("void: the request's Take took nothing", "request_id", req.ID, "lo", req.void.Lo, "hi", req.void.Hi, "known", req.void.Known)
	}
}

// voidable is a copy of req for a later void: its charge, id, reservation
// and limits.
func voidable(req *Request) *Request {
	c := *req.Charge
	r := *req
	r.Charge = &c
	r.Limits = append([]Limit(nil), req.Limits...) // the void gives back the quotas it counted
	return &r
}

// Run retries, until ctx is done, the voids that failed on the request
// path (the store was down or saturated), each until the store
// acknowledges it. A Take whose outcome was unknown is then either
// refunded or can no longer run. Pending voids are kept in memory: a
// restart forgets them (they are counted and logged at shutdown).
func (e *Engine) Run(ctx context.Context) error {
	v, ok := e.store.(voider)
	if !ok {
		<-ctx.Done()
		return nil
	}
	e.loadPending(ctx)
	backoff := 100 * time.Millisecond
	t := time.NewTimer(backoff)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// One last pass, by the shutdown deadline (FlushBy), for the
			// voids and settles of the calls that drained meanwhile.
			by := time.Now().Add(time.Second)
			if d := e.flushBy.Load(); d != 0 {
				by = time.Unix(0, d)
			}
			last, cancel := context.WithDeadline(context.WithoutCancel(ctx), by)
			e.retryVoids(last, v)
			cancel()
			if n := e.voids.len(); n > 0 {
				e.log.Error("shutting down with voids or settles pending: those accounts may have been charged for refused requests, or not charged for delivered ones", "pending", n)
			}
			return nil
		case <-t.C:
		}
		if e.retryVoids(ctx, v) {
			backoff = 100 * time.Millisecond
		} else {
			backoff = min(2*backoff, 5*time.Second)
		}
		t.Reset(backoff)
	}
}

// loadPending queues the voids and settles a PendingStore kept (from an
// earlier run, or another replica's).
func (e *Engine) loadPending(ctx context.Context) {
	if e.pending == nil {
		return
	}
	items, err := e.pending.LoadPending(ctx)
	if err != nil {
		e.log.Error("could not load the pending voids and settles; they wait for the next start", "error", err)
		return
	}
	for _, r := range items {
		e.voids.add(fromRecord(r))
	}
	if len(items) > 0 {
		e.log.Info("retrying voids and settles pending from an earlier run", "pending", len(items))
	}
}

// persist deletes from the PendingStore what went through, and saves what
// waits and is not kept yet.
func (e *Engine) persist(ctx context.Context, done []Pending) {
	if e.pending == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if len(done) > 0 {
		if err := e.pending.DeletePending(ctx, done); err != nil {
			e.logError("delete pending", err) // retried harmlessly after a restart: idempotent
		}
	}
	if items := e.voids.unsaved(); len(items) > 0 {
		if err := e.pending.SavePending(ctx, items); err != nil {
			e.voids.unsave(items)
			e.logError("save pending", err)
		}
	}
}

// FlushBy bounds Run's last pass, once its context ends, by the process's
// shutdown deadline.
func (e *Engine) FlushBy(deadline time.Time) { e.flushBy.Store(deadline.UnixNano()) }

// retryVoids tries every pending void once; it reports whether all that
// were tried succeeded.
func (e *Engine) retryVoids(ctx context.Context, v voider) bool {
	ok := true
	var done []Pending // saved ones that went through
	defer func() { e.persist(ctx, done) }()
	taken := e.voids.take()
	failures := 0 // in a row
	for i, p := range taken {
		if failures == 3 {
			// The store is down: put the rest back untried, rather than
			// wait a timeout for each (a pass stays short when thousands
			// are pending; the failed ones went to the back, so every
			// one gets its turn).
			for _, rest := range taken[i:] {
				e.voids.add(rest)
				e.voids.done()
			}
			return false
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		var refunded int64
		var err error
		if p.settle != nil {
			err = e.retrySettle(cctx, p.settle)
		} else {
			refunded, err = v.Void(cctx, p.req, p.reason)
		}
		cancel()
		var early errVoidEarly
		switch {
		case errors.As(err, &early):
			// Not a failure: the Take may still run for a few ms.
			e.voids.add(p)
			e.voids.done()
			ok = false
			continue
		case errors.Is(err, ErrVoidUnresolved):
			e.voids.results.WithLabelValues("unresolved").Inc()
			e.log.Error("could not void a charge whose outcome is unknown; the account may have been charged for a refused request",
				"account", p.req.Charge.Account, "credits", p.req.Charge.Credits, "request_id", p.req.ID, "error", err)
			err = nil
			refunded = -1
		}
		if err == nil && p.saved {
			done = append(done, p.record())
		}
		if err == nil && p.settle != nil {
			failures = 0
			e.voids.done()
			continue
		}
		if err != nil {
			// Add back before done, so it is never uncounted.
			e.voids.add(p)
			failures++
		} else {
			failures = 0
		}
		e.voids.done()
		switch {
		case err != nil:
			ok = false
		case refunded < 0: // unresolved, counted above
		case refunded > 0:
			e.voids.results.WithLabelValues("refunded").Inc()
			e.log.Warn("refunded the charge of a refused request after retrying its void", "account", p.req.Charge.Account, "credits", refunded, "request_id", p.req.ID, "reason", p.reason)
		default:
			e.voids.results.WithLabelValues("nothing_taken").Inc()
			e.log.Debug("void: the request's Take took nothing", "request_id", p.req.ID, "lo", p.req.void.Lo, "hi", p.req.void.Hi, "known", p.req.void.Known)
		}
	}
	return ok
}

func (e *Engine) logError(op string, err error) {
	if !e.lastLog.Allow(e.interval) {
		return
	}
	e.log.Error("limit store failed; limits follow their failure mode (this message is logged once per interval)",
		"store", e.store.Kind(), "op", op, "error", err, "interval", e.interval)
}

func failsOpen(req *Request) bool {
	for i := range req.Limits {
		if !req.Limits[i].FailOpen {
			return false
		}
	}
	return req.Charge == nil || req.Charge.FailOpen
}

// newID returns a random request id (uniqueness, not secrecy).
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validateCredit checks a top-up before it reaches a store.
func validateCredit(account string, amount int64, key string) error {
	switch {
	case account == "":
		return errors.New("ratelimit: empty account")
	case amount <= 0 || amount > MaxCredits:
		return fmt.Errorf("ratelimit: amount %d is not between 1 and %d", amount, int64(MaxCredits))
	case key == "":
		return errors.New("ratelimit: empty idempotency key")
	}
	if err := ledgerText(account); err != nil {
		return fmt.Errorf("ratelimit: account: %w", err)
	}
	if err := ledgerText(key); err != nil {
		return fmt.Errorf("ratelimit: idempotency key: %w", err)
	}
	return nil
}

// EscapeKey keeps ":" the separator of key parts ("a:b"+"c" ≠ "a"+"b:c")
// and keeps "{" and "}" out of Redis hash tags. The RLS builds its
// counter keys from escaped descriptor entries.
func EscapeKey(s string) string {
	if !strings.ContainsAny(s, ":%{}") {
		return s
	}
	return keyEscaper.Replace(s)
}

var (
	keyEscaper   = strings.NewReplacer("%", "%25", ":", "%3A", "{", "%7B", "}", "%7D")
	keyUnescaper = strings.NewReplacer("%3A", ":", "%7B", "{", "%7D", "}", "%25", "%")
)

func unescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	return keyUnescaper.Replace(s)
}

// Key layout, shared by the stores. The part in braces is the Redis
// Cluster hash tag: a counter's tag is its key (or the request's Tag), a
// balance's its account.
func rateKey(tag string, l *Limit) string {
	return "tollgate:{" + EscapeKey(tag) + "}:r:" + EscapeKey(l.Name) + ":" + EscapeKey(l.Key)
}
func quotaKey(tag string) string       { return "tollgate:{" + EscapeKey(tag) + "}:q" }
func quotaField(l *Limit) string       { return EscapeKey(l.Name) + ":" + EscapeKey(l.Key) }
func balanceKey(account string) string { return "tollgate:{" + EscapeKey(account) + "}:credits" }
func topupKey(account, key string) string {
	return "tollgate:{" + EscapeKey(account) + "}:topup:" + EscapeKey(key)
}

// voidKey marks a voided request (only voided ones), so that its void
// gives back once.
func voidKey(account, id string) string {
	return "tollgate:{" + EscapeKey(account) + "}:void:" + id
}

// reservationsKey is the hash of an account's reservations (field: the
// reservation id).
func reservationsKey(account string) string { return "tollgate:{" + EscapeKey(account) + "}:res" }

// reservationMember is a reservation's member in the expiry index.
func reservationMember(account, id string) string { return EscapeKey(account) + ":" + id }

// parseReservationMember reads a member of the expiry index back.
func parseReservationMember(m string) (account, id string, ok bool) {
	a, id, ok := strings.Cut(m, ":")
	return unescape(a), id, ok && a != "" && id != ""
}

// IdempotencyTTL is how long a top-up's idempotency key is remembered.
const IdempotencyTTL = 30 * 24 * time.Hour

// gcra returns the emission interval and the burst tolerance of a rate
// limit, in microseconds, and its capacity (the most it takes at once).
// The tolerance saturates instead of overflowing.
func gcra(l *Limit) (interval, tolerance, capacity int64) {
	interval = max(l.Window.Microseconds()/l.Limit, 1)
	capacity = Capacity(l)
	if capacity > math.MaxInt64/4/interval {
		return interval, math.MaxInt64 / 4, capacity
	}
	return interval, interval * capacity, capacity
}
