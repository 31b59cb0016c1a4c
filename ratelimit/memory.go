package ratelimit

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/throttle"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
)

// MemoryStore keeps counters and balances in this process: the embedded
// default for a single replica. It is not durable — balances and counters
// are lost on restart — and not shared: with several replicas use Redis.
//
// Keys are spread over shards by their hash tag, each shard with its own
// lock; a Take locks the shards of all its keys (in order), which makes it
// atomic.
// A shard holds at most MaxKeys/shards counters. When a Take needs a new
// one in a full shard, the shard evicts counters that carry no state any
// more — rate counters whose TAT has passed, quota counters of periods that
// have ended — soonest expired first, from an expiry heap (O(log n) each,
// no scan). Live counters are never evicted, nor balances: that would
// hand out free usage. When nothing can be evicted the Take fails with
// ErrMemoryFull, a store error, so the limits' failure mode decides.
// Evictions and refusals are counted (Collectors) and logged once per
// interval. Expired counters are also reclaimed by Sweep (run by Run).
type MemoryStore struct {
	now    func() time.Time
	seed   maphash.Seed
	shards []memShard
	max    int
	ledger *memLedger
	// settle is how long a reservation waits for its settle, and how long
	// a settled one is remembered (so a repeated id is refused and a late
	// settle reports already_settled).
	settle time.Duration

	log         *slog.Logger
	logInterval time.Duration
	lastLog     throttle.Every
	maxKeys     int
	// evicted and refused count counters evicted to make room and Takes
	// refused because their shard was full of live counters.
	evicted, refused atomic.Uint64
}

type memShard struct {
	mu       sync.Mutex
	counters map[string]memEntry // rate TATs and quota counts
	// expiry orders the counters by expiry, soonest first: each counter
	// has at least one item, whose time is at most the counter's (a rate
	// counter's TAT moves on without its item: the item catches up when
	// it comes to the top). Items of deleted counters are dropped there.
	expiry   expiryHeap
	balances map[string]int64
	topups   map[string]memEntry // idempotency key → amount
	res      map[string]*memRes  // account "\x00" reservation id → reservation
}

// expiryHeap is a min-heap of counters by expiry (unix µs), without
// container/heap's interface boxing: pushing allocates nothing beyond the
// slice's growth.
type expiryHeap []expiryItem

type expiryItem struct {
	at  int64
	key string
}

func (h *expiryHeap) push(at int64, key string) {
	*h = append(*h, expiryItem{at, key})
	h.up(len(*h) - 1)
}

// pop removes the top item.
func (h *expiryHeap) pop() {
	old := *h
	n := len(old) - 1
	old[0] = old[n]
	old[n] = expiryItem{} // the key is not kept alive
	*h = old[:n]
	if n > 0 {
		h.down(0)
	}
}

func (h expiryHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func (h expiryHeap) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if r := c + 1; r < len(h) && h[r].at < h[c].at {
			c = r
		}
		if h[i].at <= h[c].at {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// memRes is a reservation: pending (settled empty) until expires, then a
// tombstone saying how it was settled until expires again.
type memRes struct {
	account, id string
	credits     int64
	quotas      string // the quotas the request counted (its mark)
	expires     int64  // unix µs
	settled     SettleResult
}

type memEntry struct {
	value   int64
	expires int64 // unix µs
}

// MemoryOptions configure a MemoryStore.
type MemoryOptions struct {
	// Now is the clock (time.Now by default; tests use a fake one).
	Now func() time.Time
	// MaxKeys bounds the number of live counters (default 1,000,000).
	MaxKeys int
	// Shards is the number of locks (default 64).
	Shards int
	// LedgerEntries bounds the in-memory ledger (default 100,000).
	LedgerEntries int
	// SettleTimeout is how long a reservation waits for its settle before
	// ExpireReservations releases it (DefaultSettleTimeout when 0).
	SettleTimeout time.Duration
	// Logger receives the message, once per LogInterval (default 10s),
	// that the store is full and what it evicted and refused.
	Logger      *slog.Logger
	LogInterval time.Duration
}

// ErrMemoryFull: the shard of a new counter holds MaxKeys/shards live
// counters and none can be evicted.
var ErrMemoryFull = errors.New("ratelimit: memory store is full of live counters (key limits by authenticated consumer, raise store.memory.max_keys, or use Redis)")

// NewMemoryStore returns an empty store.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxKeys == 0 {
		opts.MaxKeys = 1_000_000
	}
	if opts.Shards == 0 {
		opts.Shards = 64
	}
	if opts.LedgerEntries == 0 {
		opts.LedgerEntries = 100_000
	}
	if opts.SettleTimeout == 0 {
		opts.SettleTimeout = DefaultSettleTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LogInterval == 0 {
		opts.LogInterval = 10 * time.Second
	}
	s := &MemoryStore{now: opts.Now, seed: maphash.MakeSeed(), shards: make([]memShard, opts.Shards), ledger: newMemLedger(opts.LedgerEntries), settle: opts.SettleTimeout,
		log: opts.Logger, logInterval: opts.LogInterval, maxKeys: opts.MaxKeys}
	s.max = max(opts.MaxKeys/opts.Shards, 1)
	for i := range s.shards {
		s.shards[i] = memShard{counters: map[string]memEntry{}, balances: map[string]int64{}, topups: map[string]memEntry{}, res: map[string]*memRes{}}
	}
	return s
}

var _ Store = (*MemoryStore)(nil)

// Kind implements Store.
func (s *MemoryStore) Kind() string { return "memory" }

func (s *MemoryStore) shardIndex(tag string) int {
	return int(maphash.String(s.seed, tag) % uint64(len(s.shards)))
}

func (s *MemoryStore) shard(tag string) *memShard { return &s.shards[s.shardIndex(tag)] }

// lock locks the shards of every key of req, in index order (no deadlock),
// and returns the unlock function.
func (s *MemoryStore) lock(req *Request) func() {
	idx := make([]int, 0, len(req.Limits)+1)
	for i := range req.Limits {
		idx = append(idx, s.shardIndex(req.tag(&req.Limits[i])))
	}
	if req.Charge != nil {
		idx = append(idx, s.shardIndex(req.Charge.Account))
	}
	return s.lockIdx(idx)
}

// lockTags locks the shards of account and of the quotas of mark.
func (s *MemoryStore) lockTags(account, mark string) func() {
	idx := []int{s.shardIndex(account)}
	for _, q := range parseMark(mark) {
		idx = append(idx, s.shardIndex(q.key))
	}
	return s.lockIdx(idx)
}

// lockIdx locks shards idx in order and returns the unlock function.
func (s *MemoryStore) lockIdx(idx []int) func() {
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s.shards[i].mu.Lock()
	}
	return func() {
		for _, i := range idx {
			s.shards[i].mu.Unlock()
		}
	}
}

// Take implements Store.
func (s *MemoryStore) Take(_ context.Context, req *Request) (*Outcome, error) {
	full := false // logged once the shards are unlocked
	defer func() {
		if full {
			s.logFull()
		}
	}()
	defer s.lock(req)()
	now := s.now()
	if !req.Deadline.IsZero() && now.After(req.Deadline) {
		return nil, ErrDeadline
	}
	nowUS := now.UnixMicro()
	reserving := req.Charge != nil && req.Charge.Reserves()
	if reserving {
		if _, ok := s.shard(req.Charge.Account).res[resKey(req.Charge.Account, req.Reservation)]; ok {
			return nil, ErrDuplicateReservation
		}
	}

	out := &Outcome{Allowed: true, Denied: -1, Limits: make([]LimitState, len(req.Limits))}
	// The state of each limit that had room, before this request: what is
	// reported when the request is refused and so consumes nothing.
	before := make([]LimitState, len(req.Limits))
	type write struct {
		sh    *memShard
		key   string
		value int64
		exp   int64
		add   bool
		isNew bool // no counter yet: one more in its shard
	}
	writes := make([]write, 0, len(req.Limits)+1)
	overage := false
	for i := range req.Limits {
		l := &req.Limits[i]
		st := &out.Limits[i]
		sh := s.shard(req.tag(l))
		if l.IsRate() {
			key := rateKey(req.tag(l), l)
			interval, tolerance, capacity := gcra(l)
			tat := nowUS
			if e, ok := sh.counters[key]; ok && e.expires > nowUS && e.value > tat {
				tat = e.value
			}
			st.Window = l.Window
			if l.Cost > capacity { // never fits: refuse without arithmetic
				st.Exceeded = true
				st.Remaining = max((tolerance-(tat-nowUS))/interval, 0)
				st.Reset = time.Duration(tat-nowUS) * time.Microsecond
				continue
			}
			newTAT := tat + l.Cost*interval
			diff := newTAT - nowUS
			if diff > tolerance {
				st.Exceeded = true
				st.Remaining = max((tolerance-(tat-nowUS))/interval, 0)
				st.Reset = time.Duration(tat-nowUS) * time.Microsecond
				if !l.Shadow {
					out.RetryAfter = max(out.RetryAfter, time.Duration(diff-tolerance)*time.Microsecond)
				}
				continue
			}
			st.Remaining = (tolerance - diff) / interval
			st.Reset = time.Duration(diff) * time.Microsecond
			before[i] = LimitState{Remaining: (tolerance - (tat - nowUS)) / interval, Reset: time.Duration(tat-nowUS) * time.Microsecond, Window: l.Window}
			writes = append(writes, write{sh: sh, key: key, value: newTAT, exp: newTAT})
			continue
		}
		start, end := l.PeriodBounds(now)
		key := quotaKey(req.tag(l)) + "\x00" + quotaField(l) + ":" + strconv.FormatInt(start.UnixMicro(), 10) + ":" + strconv.FormatInt(end.UnixMicro(), 10) // memQuotaKey
		var used int64
		if e, ok := sh.counters[key]; ok && e.expires > nowUS {
			used = e.value
		}
		// In whole µs, as the period's bounds in its key (a void finds
		// the period again from them).
		st.Window = time.Duration(end.UnixMicro()-start.UnixMicro()) * time.Microsecond
		st.Reset = time.Duration(end.UnixMicro()-nowUS) * time.Microsecond
		if l.Cost > l.Limit-used {
			if l.Overage && req.Charge != nil {
				st.Overage = true
				overage = true
				continue
			}
			st.Exceeded = true
			st.Remaining = max(l.Limit-used, 0)
			if !l.Shadow {
				out.RetryAfter = max(out.RetryAfter, st.Reset)
			}
			continue
		}
		st.Remaining = l.Limit - used - l.Cost
		before[i] = LimitState{Remaining: l.Limit - used, Reset: st.Reset, Window: st.Window}
		writes = append(writes, write{sh: sh, key: key, value: l.Cost, exp: end.UnixMicro(), add: true})
	}
	for i := range out.Limits {
		if out.Limits[i].Exceeded && !req.Limits[i].Shadow {
			out.Allowed = false
			out.Denied = i
			break
		}
	}
	var bsh *memShard
	if c := req.Charge; c != nil {
		bsh = s.shard(c.Account)
		out.Balance = bsh.balances[c.Account]
		if out.Allowed && (!c.OverageOnly || overage) {
			if out.Balance-c.Credits < -c.Overdraft {
				out.Allowed = false
				out.Denied = DeniedByCharge
			} else {
				out.Charged = c.Credits
			}
		}
	}
	if !out.Allowed {
		out.Charged = 0
		for i := range out.Limits {
			if st := out.Limits[i]; !st.Exceeded && !st.Overage {
				out.Limits[i] = before[i]
			}
		}
		return out, nil
	}
	// Everything has room: check the memory bound, then consume it all.
	// An expired counter counts as new: making room may evict it.
	added := map[*memShard]int{}
	for i := range writes {
		w := &writes[i]
		if e, ok := w.sh.counters[w.key]; !ok || e.expires <= nowUS {
			w.isNew = !ok
			added[w.sh]++
		}
	}
	for sh, n := range added {
		if len(sh.counters)+n > s.max {
			full = true
			if !s.evict(sh, nowUS, n) {
				s.refused.Add(1)
				return nil, ErrMemoryFull
			}
		}
	}
	if full { // what was evicted is new again, and needs its expiry item
		for i := range writes {
			if w := &writes[i]; !w.isNew {
				_, ok := w.sh.counters[w.key]
				w.isNew = !ok
			}
		}
	}
	for _, w := range writes {
		if w.isNew {
			w.sh.expiry.push(w.exp, w.key)
		}
		if w.add {
			e := w.sh.counters[w.key]
			if e.expires <= nowUS {
				e.value = 0
			}
			e.value += w.value
			e.expires = w.exp
			w.sh.counters[w.key] = e
			continue
		}
		w.sh.counters[w.key] = memEntry{value: w.value, expires: w.exp}
	}
	if out.Charged > 0 {
		c := req.Charge
		bsh.balances[c.Account] -= out.Charged
		out.Balance = bsh.balances[c.Account]
		req.void = voidRecord{}
		req.void.known(out.Charged, nowUS, out.Limits, true)
		kind, id := ledger.Charge, req.ID
		if reserving {
			kind, id = ledger.Reserve, req.Reservation
			bsh.res[resKey(c.Account, req.Reservation)] = &memRes{account: c.Account, id: req.Reservation, credits: out.Charged,
				quotas: req.void.mark(req), expires: nowUS + s.settle.Microseconds()}
			out.Reserved = true
		}
		s.ledger.add(ledger.Entry{Account: c.Account, Consumer: req.Consumer, Kind: kind, Amount: -out.Charged,
			BalanceAfter: out.Balance, RequestID: id, PolicyRevision: req.Revision, Time: now})
	}
	return out, nil
}

// resKey is a reservation's key in its shard.
func resKey(account, id string) string { return account + "\x00" + id }

// Settle implements Store.
func (s *MemoryStore) Settle(_ context.Context, account, id string, capture bool, reason string) (SettleResult, error) {
	sh := s.shard(account)
	sh.mu.Lock()
	r, ok := sh.res[resKey(account, id)]
	var quotas string
	if ok {
		quotas = r.quotas
	}
	sh.mu.Unlock()
	// Lock the quotas' shards with the account's (in order), then look
	// again: it may have been settled meanwhile.
	defer s.lockTags(account, quotas)()
	r, ok = sh.res[resKey(account, id)]
	switch {
	case !ok:
		return Unknown, nil
	case r.settled != "":
		return AlreadySettled, nil
	}
	res := Released
	if capture {
		res = Captured
	}
	s.settleLocked(sh, r, res, reason, s.now())
	return res, nil
}

// settleLocked captures or releases the pending reservation r and leaves
// its tombstone, with sh locked.
func (s *MemoryStore) settleLocked(sh *memShard, r *memRes, res SettleResult, reason string, now time.Time) {
	e := ledger.Entry{Account: r.account, Kind: ledger.Capture, RequestID: r.id, Reason: reason, Time: now}
	if res != Captured {
		sh.balances[r.account] += r.credits
		e.Kind, e.Amount = ledger.Release, r.credits
		s.giveback(r.quotas, now.UnixMicro())
	}
	e.BalanceAfter = sh.balances[r.account]
	s.ledger.add(e)
	r.settled = res
	r.expires = now.UnixMicro() + s.settle.Microseconds()
}

// ExpireReservations implements Store.
func (s *MemoryStore) ExpireReservations(context.Context) (int, error) {
	nowUS := s.now().UnixMicro()
	type due struct{ account, id, quotas string }
	released := 0
	for i := range s.shards {
		sh := &s.shards[i]
		var todo []due
		sh.mu.Lock()
		for k, r := range sh.res {
			switch {
			case r.expires > nowUS:
			case r.settled != "":
				delete(sh.res, k) // forgotten
			default:
				todo = append(todo, due{r.account, r.id, r.quotas})
			}
		}
		sh.mu.Unlock()
		// Released with the shards of their quotas locked too.
		for _, d := range todo {
			unlock := s.lockTags(d.account, d.quotas)
			now := s.now()
			if r, ok := sh.res[resKey(d.account, d.id)]; ok && r.settled == "" && r.expires <= now.UnixMicro() {
				s.settleLocked(sh, r, Released, reasonExpired, now)
				released++
			}
			unlock()
		}
	}
	return released, nil
}

var _ voider = (*MemoryStore)(nil)

// Void implements voider: it gives back what req's Take took — its credits
// (or its reservation, unless settled already) and the quotas it counted —
// once per request id, and records it in the ledger. A memory Take has no
// lost replies: one that failed took nothing.
func (s *MemoryStore) Void(ctx context.Context, req *Request, reason string) (int64, error) {
	v := &req.void
	if req.Charge == nil || !v.Known {
		return 0, nil
	}
	account := req.Charge.Account
	if req.Charge.Reserves() {
		if res, err := s.Settle(ctx, account, req.Reservation, false, reason); err != nil || res != Released {
			return 0, err
		}
		return v.Credits, nil
	}
	mark := v.mark(req)
	defer s.lockTags(account, mark)()
	sh := s.shard(account)
	now := s.now()
	rk := topupKey(account, refundKey(req.ID))
	if e, ok := sh.topups[rk]; ok && e.expires > now.UnixMicro() {
		return 0, nil // voided already
	}
	sh.balances[account] += v.Credits
	s.giveback(mark, now.UnixMicro())
	sh.topups[rk] = memEntry{value: v.Credits, expires: now.UnixMicro() + IdempotencyTTL.Microseconds()}
	s.ledger.add(ledger.Entry{Account: account, Kind: ledger.Refund, Amount: v.Credits, BalanceAfter: sh.balances[account],
		RequestID: req.ID, Reason: reason, Time: now})
	return v.Credits, nil
}

// memQuotaKey is a quota counter's key in its shard.
func memQuotaKey(tag, field string) string { return quotaKey(tag) + "\x00" + field }

// giveback gives back the quotas of mark whose period has not ended (with
// their shards locked).
func (s *MemoryStore) giveback(mark string, nowUS int64) {
	for _, q := range parseMark(mark) {
		sh := s.shard(q.key)
		k := memQuotaKey(q.key, q.field)
		e, ok := sh.counters[k]
		if !ok || e.expires <= nowUS {
			continue
		}
		// Kept at 0 rather than deleted: its expiry heap item stays the
		// one that ends it (a deleted counter taken again would add a
		// second item, one per refund, until the period ends).
		e.value = max(e.value-q.cost, 0)
		sh.counters[k] = e
	}
}

// markItem is one quota a request counted: its key (the Redis hash, or
// the memory store's tag), field and cost.
type markItem struct {
	key, field string
	cost       int64
}

// appendMark appends one quota to a mark, in take.lua's format:
// "<key length>:<key><field length>:<field><cost>;".
func appendMark(b []byte, key, field string, cost int64) []byte {
	b = strconv.AppendInt(b, int64(len(key)), 10)
	b = append(b, ':')
	b = append(b, key...)
	b = strconv.AppendInt(b, int64(len(field)), 10)
	b = append(b, ':')
	b = append(b, field...)
	b = strconv.AppendInt(b, cost, 10)
	return append(b, ';')
}

// parseMark reads a mark (what it cannot read, from there on, is ignored).
func parseMark(m string) []markItem {
	var out []markItem
	str := func() (string, bool) {
		n, rest, ok := strings.Cut(m, ":")
		l, err := strconv.Atoi(n)
		if !ok || err != nil || l < 0 || l > len(rest) {
			return "", false
		}
		m = rest[l:]
		return rest[:l], true
	}
	for m != "" {
		key, ok := str()
		if !ok {
			break
		}
		field, ok := str()
		if !ok {
			break
		}
		c, rest, ok := strings.Cut(m, ";")
		cost, err := strconv.ParseInt(c, 10, 64)
		if !ok || err != nil {
			break
		}
		m = rest
		out = append(out, markItem{key, field, cost})
	}
	return out
}

// refundKey marks a request's refund among the top-up keys: its NUL can
// be in no idempotency key (validateCredit refuses it), so no top-up can
// take a refund's place.
func refundKey(id string) string { return "\x00refund:" + id }

// Credit implements Store.
func (s *MemoryStore) Credit(_ context.Context, account string, amount int64, key string) (*Credit, error) {
	if err := validateCredit(account, amount, key); err != nil {
		return nil, err
	}
	sh := s.shard(account)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	nowUS := s.now().UnixMicro()
	tk := topupKey(account, key)
	if e, ok := sh.topups[tk]; ok && e.expires > nowUS {
		if e.value != amount {
			return nil, ErrIdempotencyConflict
		}
		return &Credit{Balance: sh.balances[account]}, nil
	}
	if sh.balances[account] > MaxCredits-amount {
		return nil, ErrBalanceOverflow
	}
	sh.balances[account] += amount
	sh.topups[tk] = memEntry{value: amount, expires: nowUS + IdempotencyTTL.Microseconds()}
	s.ledger.add(ledger.Entry{Account: account, Kind: ledger.TopUp, Amount: amount, BalanceAfter: sh.balances[account],
		RequestID: key, Reason: "topup", Time: s.now()})
	return &Credit{Balance: sh.balances[account], Applied: true}, nil
}

// Account implements Store.
func (s *MemoryStore) Account(_ context.Context, account string) (*Account, error) {
	sh := s.shard(account)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	nowUS := s.now().UnixMicro()
	a := &Account{Account: account, Balance: sh.balances[account], Quotas: []QuotaUsage{}}
	prefix := quotaKey(account) + "\x00"
	for k, e := range sh.counters {
		if rest, ok := strings.CutPrefix(k, prefix); ok && e.expires > nowUS {
			if q, ok := parseQuotaField(rest, e.value, nowUS); ok {
				a.Quotas = append(a.Quotas, q)
			}
		}
	}
	sortQuotas(a.Quotas)
	return a, nil
}

// parseQuotaField reads "name:key:startµs:endµs" back into a usage, if the
// period is current.
func parseQuotaField(field string, used, nowUS int64) (QuotaUsage, bool) {
	parts := strings.Split(field, ":")
	if len(parts) != 4 {
		return QuotaUsage{}, false
	}
	start, err1 := strconv.ParseInt(parts[2], 10, 64)
	end, err2 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil || nowUS < start || nowUS >= end {
		return QuotaUsage{}, false
	}
	return QuotaUsage{
		Name: unescape(parts[0]), Key: unescape(parts[1]), Used: used,
		Start: time.UnixMicro(start).UTC(), End: time.UnixMicro(end).UTC(),
	}, true
}

func sortQuotas(q []QuotaUsage) {
	slices.SortFunc(q, func(a, b QuotaUsage) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
}

// Sweep removes expired counters and idempotency keys from every shard.
func (s *MemoryStore) Sweep() {
	nowUS := s.now().UnixMicro()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		s.sweep(sh, nowUS)
		sh.mu.Unlock()
	}
}

func (s *MemoryStore) sweep(sh *memShard, nowUS int64) {
	s.expire(sh, nowUS, 0)
	for k, e := range sh.topups {
		if e.expires <= nowUS {
			delete(sh.topups, k)
		}
	}
}

// expire removes the counters of sh whose time has passed, soonest first,
// until sh has room for need more (need 0: all of them), and returns how
// many it removed. A counter whose time has moved on is put back in the
// heap at its new time; the item of a deleted one is dropped.
func (s *MemoryStore) expire(sh *memShard, nowUS int64, need int) int {
	removed := 0
	for len(sh.expiry) > 0 && sh.expiry[0].at <= nowUS && (need == 0 || len(sh.counters)+need > s.max) {
		top := &sh.expiry[0]
		e, ok := sh.counters[top.key]
		switch {
		case !ok:
			sh.expiry.pop()
		case e.expires <= nowUS:
			delete(sh.counters, top.key)
			sh.expiry.pop()
			removed++
		default: // still live: its item catches up
			top.at = e.expires
			sh.expiry.down(0)
		}
	}
	return removed
}

// evict makes room for need new counters in the full shard sh by evicting
// counters that carry no state (expired), and reports whether it did. Live
// counters are never evicted.
func (s *MemoryStore) evict(sh *memShard, nowUS int64, need int) bool {
	if n := s.expire(sh, nowUS, need); n > 0 {
		s.evicted.Add(uint64(n))
	}
	return len(sh.counters)+need <= s.max
}

// logFull says, once per interval, that the store is full.
func (s *MemoryStore) logFull() {
	if !s.lastLog.Allow(s.logInterval) {
		return
	}
	s.log.Warn("memory store is full: expired counters are evicted to make room; new counters that find only live ones are refused and their limits follow their failure mode (key limits by authenticated consumer, raise store.memory.max_keys, or use Redis; logged once per interval)",
		"max_keys", s.maxKeys, "evicted_total", s.evicted.Load(), "refused_total", s.refused.Load(), "interval", s.logInterval)
}

// Evicted returns how many counters were evicted to make room.
func (s *MemoryStore) Evicted() uint64 { return s.evicted.Load() }

// Refused returns how many Takes were refused because the store was full
// of live counters.
func (s *MemoryStore) Refused() uint64 { return s.refused.Load() }

// Collectors returns the store's metrics, for the caller's registry:
// tollgate_memory_store_evicted_total and tollgate_memory_store_refused_total.
func (s *MemoryStore) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tollgate_memory_store_evicted_total",
			Help: "Counters the memory store evicted to make room when full: rate counters whose TAT had passed and quota counters of ended periods (never live ones, never balances).",
		}, func() float64 { return float64(s.evicted.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tollgate_memory_store_refused_total",
			Help: "Requests that needed a new counter when the memory store was full of live ones: a store error, so their limits followed their failure mode.",
		}, func() float64 { return float64(s.refused.Load()) }),
	}
}

// Len returns the number of live and expired-but-unswept counters.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.Lock()
		n += len(s.shards[i].counters)
		s.shards[i].mu.Unlock()
	}
	return n
}

// Run sweeps expired keys every interval until ctx is done.
func (s *MemoryStore) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sweep()
		}
	}
}
