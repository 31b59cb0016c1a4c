package ratelimit

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed common.lua
	commonSource string
	//go:embed take.lua
	takeSource string
	//go:embed credit.lua
	creditSource string
	//go:embed void.lua
	voidSource string
	//go:embed settle.lua
	settleSource string

	takeScript   = redis.NewScript(commonSource + takeSource)
	creditScript = redis.NewScript(commonSource + creditSource)
	voidScript   = redis.NewScript(commonSource + voidSource)
	settleScript = redis.NewScript(commonSource + settleSource)
)

// RedisStore keeps counters and balances in Redis (single node, Sentinel or
// Cluster), shared by every Tollgate replica. Each Take is one round trip:
// one EVALSHA of a script that reads the server's clock, checks every limit
// and the balance, and writes only if all pass. The script is loaded once
// and reloaded when Redis answers NOSCRIPT (after a restart or a failover).
type RedisStore struct {
	client  redis.UniversalClient
	timeout time.Duration
	skew    time.Duration
	cluster bool
	// ledgerMax caps each ledger stream (XADD MAXLEN ~); 0: unbounded,
	// for a shipper that trims what it has made durable.
	ledgerMax int64
	// voids is the client voids use: its own pool, so that voids get
	// through when request traffic saturates client's (default: client).
	voids redis.UniversalClient
	// settle is how long a reservation waits for its settle (and a settled
	// one is remembered).
	settle time.Duration
	// clock relates Redis's clock to this process's (not in a Cluster,
	// whose nodes have clocks of their own).
	clock atomic.Pointer[redisClock]
	// trimLag keeps shipped ledger entries this long; deferred holds, per
	// stream, where a trim the lag held back is to reach.
	trimLag  time.Duration
	trimMu   sync.Mutex
	deferred map[string]string
	// durable finds a charge in the durable ledger, for a void whose
	// window was trimmed from the stream (nil: none).
	durable DurableLedger
}

// DurableLedger finds a request's charge entry in the ledger made durable
// (PostgreSQL), between two times: a void looks there once the entries of
// its window were shipped and trimmed from Redis.
type DurableLedger func(ctx context.Context, account, requestID string, from, to time.Time) (credits int64, found bool, err error)

// SetDurableLedger gives voids the durable ledger (call before use).
func (s *RedisStore) SetDurableLedger(f DurableLedger) { s.durable = f }

// redisClock is one reading of Redis's clock: its time (µs) in a reply
// that arrived at local, rtt after its call was sent.
type redisClock struct {
	redisUS int64
	local   time.Time
	rtt     time.Duration
}

const (
	// clockFresh: an older reading is not used (Redis's clock may have
	// been stepped, or a failover changed the node).
	clockFresh = 10 * time.Second
	// clockSlack covers clock rate differences (1,000 ppm of the reading's
	// age on top) and clock differences between a failed-over node and
	// the one read.
	clockSlack = 10 * time.Millisecond
)

// observe keeps a reading of Redis's clock: the one with the shortest
// round trip of the last 100 ms (a reply delayed by a pause says little).
func (s *RedisStore) observe(redisUS int64, sent, got time.Time) {
	if s.cluster {
		return
	}
	rtt := got.Sub(sent)
	if c := s.clock.Load(); c != nil && rtt > c.rtt && got.Sub(c.local) < 100*time.Millisecond {
		return
	}
	s.clock.Store(&redisClock{redisUS: redisUS, local: got, rtt: rtt})
}

// window is the Redis time within which a Take sent at sent, with
// deadline, runs if it runs at all: lo is no later than Redis's clock at
// sent, hi (the script refuses after it) no earlier than Redis's clock at
// deadline. From a fresh reading of Redis's clock it is about the store
// timeout wide; otherwise it assumes the clocks agree within the clock
// skew.
func (s *RedisStore) window(sent, deadline time.Time) (lo, hi int64) {
	if c := s.clock.Load(); c != nil {
		if age := sent.Sub(c.local); age >= 0 && age < clockFresh {
			slack := clockSlack + age/1000
			return c.redisUS + (sent.Sub(c.local) - slack).Microseconds(),
				c.redisUS + (deadline.Sub(c.local) + c.rtt + slack).Microseconds()
		}
	}
	return sent.Add(-s.skew).UnixMicro(), deadline.Add(s.skew).UnixMicro()
}

var _ Store = (*RedisStore)(nil)

// DefaultRedisTimeout bounds each store call, well under Envoy's 200 ms
// ext_authz timeout.
const DefaultRedisTimeout = 50 * time.Millisecond

// DefaultClockSkew is how far Tollgate's and Redis's clocks may disagree.
const DefaultClockSkew = 500 * time.Millisecond

// NewRedisStore uses client; timeout bounds each call (DefaultRedisTimeout
// when 0).
func NewRedisStore(client redis.UniversalClient, timeout time.Duration) *RedisStore {
	if timeout == 0 {
		timeout = DefaultRedisTimeout
	}
	_, cluster := client.(*redis.ClusterClient)
	return &RedisStore{client: client, timeout: timeout, skew: DefaultClockSkew, cluster: cluster, ledgerMax: DefaultLedgerMaxLen, settle: DefaultSettleTimeout, trimLag: TrimLag}
}

// DefaultLedgerMaxLen caps each ledger stream when nothing ships it.
const DefaultLedgerMaxLen = 1_000_000

// SetVoidClient gives voids a client of their own (call before use): a
// void must get through when the request path's pool is saturated — that
// is when Takes time out and need voiding.
func (s *RedisStore) SetVoidClient(c redis.UniversalClient) { s.voids = c }

// SetLedgerMaxLen caps each ledger stream at about n entries (the oldest
// go first); 0 leaves them unbounded, for a ledger shipper that trims what
// it has made durable (call before use).
func (s *RedisStore) SetLedgerMaxLen(n int64) { s.ledgerMax = n }

// ledgerStream is the ledger stream for account's balance changes: in a
// Cluster, the stream of the balance's slot; otherwise the one stream.
func (s *RedisStore) ledgerStream(account string) string {
	if s.cluster {
		return ledgerKey(slot(balanceKey(account)))
	}
	return singleLedgerKey
}

// SetSettleTimeout sets how long a reservation waits for its settle
// before ExpireReservations releases it (DefaultSettleTimeout by default;
// call before use).
func (s *RedisStore) SetSettleTimeout(d time.Duration) { s.settle = d }

// reservationIndex is the expiry index of account's reservations: in a
// Cluster, the sorted set of the balance's slot; otherwise the one set.
func (s *RedisStore) reservationIndex(account string) string {
	if s.cluster {
		return indexKey(slotTags()[slot(balanceKey(account))])
	}
	return indexKey("ledger")
}

// indexKey is the reservation expiry index named like a ledger stream.
func indexKey(name string) string { return "tollgate:{" + name + "}:resx" }

// singleLedgerKey is the ledger stream outside a Cluster.
const singleLedgerKey = "tollgate:{ledger}:ledger"

// SetClockSkew sets how far Tollgate's clock and Redis's may disagree
// (DefaultClockSkew by default; call before use). A Take reaching Redis
// later than its deadline (the caller's, or the store timeout after it was
// sent, whichever is sooner) plus this much, by Redis's clock, is refused
// and takes nothing: a Take that waited out a Redis pause after its caller
// gave up costs nothing. Smaller catches more late Takes; it must exceed
// the real clock difference, or Takes are refused.
func (s *RedisStore) SetClockSkew(d time.Duration) { s.skew = d }

// Kind implements Store.
func (s *RedisStore) Kind() string { return "redis" }

// Close closes the client.
func (s *RedisStore) Close() error { return s.client.Close() }

// ErrCrossSlot: in Redis Cluster, the keys of one request hash to
// different slots (limits keyed by something other than the consumer).
var ErrCrossSlot = errors.New("ratelimit: in Redis Cluster, every limit key and the charged account of one request must be the same (one hash slot)")

// Take implements Store.
func (s *RedisStore) Take(ctx context.Context, req *Request) (*Outcome, error) {
	now := time.Now() // only to pick candidate periods; Redis decides
	n := len(req.Limits)
	keys := make([]string, 0, n+2)
	args := make([]any, 0, 5+8*n)
	hasCharge, credits, overdraft, overageOnly := "0", int64(0), int64(0), "0"
	if c := req.Charge; c != nil {
		hasCharge, credits, overdraft = "1", c.Credits, c.Overdraft
		if c.OverageOnly {
			overageOnly = "1"
		}
	}
	args = append(args, n, hasCharge, credits, overdraft, overageOnly)
	// The latest Redis time at which the script may apply the request.
	deadline := now.Add(s.timeout)
	if !req.Deadline.IsZero() && req.Deadline.Before(deadline) {
		deadline = req.Deadline
	}
	for i := range req.Limits {
		l := &req.Limits[i]
		if l.IsRate() {
			interval, tolerance, capacity := gcra(l)
			kind := "r"
			if l.Shadow {
				kind = "R"
			}
			keys = append(keys, limitKey(req, l))
			args = append(args, kind, l.Cost, l.Limit, interval, tolerance, l.Window.Microseconds(), capacity, "")
			continue
		}
		// Four consecutive period starts around this replica's clock; the
		// script picks the period that contains Redis's time, so clock skew
		// smaller than one period changes nothing.
		cur := PeriodStart(l.Period, l.Location, now)
		prev := PreviousPeriod(l.Period, l.Location, cur)
		next := NextPeriod(l.Period, l.Location, cur)
		after := NextPeriod(l.Period, l.Location, next)
		kind := "q"
		switch {
		case l.Shadow:
			kind = "Q"
		case l.Overage:
			kind = "o"
		}
		keys = append(keys, limitKey(req, l))
		args = append(args, kind, l.Cost, l.Limit, prev.UnixMicro(), cur.UnixMicro(), next.UnixMicro(), after.UnixMicro(), quotaField(l))
	}
	if c := req.Charge; c != nil {
		keys = append(keys, balanceKey(c.Account), s.ledgerStream(c.Account),
			reservationsKey(c.Account), s.reservationIndex(c.Account))
	}
	if s.cluster && !sameSlot(keys) {
		return nil, ErrCrossSlot
	}
	sent := time.Now()
	lo, hi := s.window(sent, deadline)
	req.void = voidRecord{Lo: lo, Hi: hi}
	args = append(args, hi)
	if c := req.Charge; c != nil {
		args = append(args, c.Account, req.Consumer, req.Revision, req.ID, s.ledgerMax)
		if c.Reserves() {
			args = append(args, req.Reservation, s.settle.Microseconds(), reservationMember(c.Account, req.Reservation))
		} else {
			args = append(args, "", 0, "")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if s.cluster {
		ctx = context.WithValue(ctx, sendOnceKey{}, new(sendOnce))
	}
	res, err := takeScript.Run(ctx, s.client, keys, args...).Int64Slice()
	if errors.Is(err, redis.ErrPoolTimeout) {
		// Never sent: nothing to void.
		return nil, fmt.Errorf("redis take: %w: %w", errNotSent, err)
	}
	if err != nil {
		return nil, fmt.Errorf("redis take: %w", err)
	}
	if len(res) == 1 && res[0] == -4 {
		return nil, ErrDeadline
	}
	if len(res) == 1 && res[0] == -5 {
		return nil, ErrDuplicateReservation
	}
	if len(res) != 6+4*n {
		return nil, fmt.Errorf("redis take: script returned %d values, want %d", len(res), 6+4*n)
	}
	out := &Outcome{
		Allowed:    res[0] == 1,
		Denied:     int(res[1]),
		Balance:    res[3],
		Charged:    res[4],
		Reserved:   res[4] > 0 && req.Charge != nil && req.Charge.Reserves(),
		RetryAfter: time.Duration(res[5]) * time.Microsecond,
		Limits:     make([]LimitState, n),
	}
	for i := range out.Limits {
		r := res[6+4*i:]
		out.Limits[i] = LimitState{
			Remaining: r[0],
			Reset:     time.Duration(r[1]) * time.Microsecond,
			Window:    time.Duration(r[2]) * time.Microsecond,
			Exceeded:  r[3] == 1,
			Overage:   r[3] == 2,
		}
	}
	s.observe(res[2], sent, time.Now())
	if out.Charged > 0 {
		req.void.known(out.Charged, res[2], out.Limits, false)
	}
	return out, nil
}

// limitKey is the Redis key of a limit's counter: a rate's TAT, or the
// quota hash of its tag.
func limitKey(req *Request, l *Limit) string {
	if l.IsRate() {
		return rateKey(req.tag(l), l)
	}
	return quotaKey(req.tag(l))
}

// sameSlot reports whether every key is in the same hash slot.
func sameSlot(keys []string) bool {
	for _, k := range keys[1:] {
		if slot(k) != slot(keys[0]) {
			return false
		}
	}
	return true
}

// Void implements voider: it gives back what the Take of req took — its
// charge, or its reservation, and the quotas it counted (rate limits stay
// counted) — once. When the Take's outcome is unknown it waits (errVoidEarly)
// until the Take can no longer run, then looks for it in the ledger.
func (s *RedisStore) Void(ctx context.Context, req *Request, reason string) (int64, error) {
	if req.Charge == nil || req.ID == "" {
		return 0, nil
	}
	a := req.Charge.Account
	c := s.client
	if s.voids != nil {
		c = s.voids
	}
	v := &req.void
	if req.Charge.Reserves() && req.Reservation != "" {
		// Released unless settled already (a capture: the request went
		// upstream). Once the Take can no longer run, so that a late one
		// does not reserve after the release.
		var notBefore int64
		if !v.Known {
			notBefore = v.Hi
		}
		code, n, err := s.settle1(ctx, c, a, req.Reservation, "r", reason, notBefore)
		switch {
		case err != nil:
			return 0, err
		case code == 6:
			return 0, voidEarly(n)
		case code == 2:
			return n, nil
		}
		return 0, nil
	}
	if !v.Known && v.Hi == 0 {
		return 0, ErrVoidUnresolved // a void kept by a version that recorded no window
	}
	keys := []string{voidKey(a, req.ID), balanceKey(a), s.ledgerStream(a)}
	args := []any{"u", a, req.ID, reason, s.ledgerMax, voidTTL.Milliseconds(), v.Lo, v.Hi}
	if v.Known {
		args = []any{"k", a, req.ID, reason, s.ledgerMax, voidTTL.Milliseconds(), v.Credits, v.mark(req)}
	}
	res, err := voidScript.Run(ctx, c, keys, args...).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("redis void: %w", err)
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("redis void: script returned %d values, want 2", len(res))
	}
	switch res[0] {
	case 1:
		return res[1], nil
	case 2:
		return 0, voidEarly(res[1])
	case 3:
		return s.voidDurable(ctx, c, req, reason)
	}
	return 0, nil
}

// voidDurable voids a Take whose window was shipped and trimmed from the
// ledger stream: the durable ledger says whether it ran. The refund gives
// back its credits; its quotas stay counted (the durable ledger does not
// keep them).
func (s *RedisStore) voidDurable(ctx context.Context, c redis.UniversalClient, req *Request, reason string) (int64, error) {
	if s.durable == nil {
		return 0, ErrVoidUnresolved
	}
	a := req.Charge.Account
	credits, found, err := s.durable(ctx, a, req.ID, time.UnixMicro(req.void.Lo), time.UnixMicro(req.void.Hi))
	if err != nil {
		return 0, fmt.Errorf("redis void: durable ledger: %w", err)
	}
	if !found {
		return 0, nil
	}
	res, err := voidScript.Run(ctx, c, []string{voidKey(a, req.ID), balanceKey(a), s.ledgerStream(a)},
		"k", a, req.ID, reason, s.ledgerMax, voidTTL.Milliseconds(), credits, "").Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("redis void: %w", err)
	}
	if len(res) == 2 && res[0] == 1 {
		return res[1], nil
	}
	return 0, nil
}

// voidTTL is how long a voided request is remembered, so that a repeated
// void gives back nothing more (only voided requests leave this mark).
const voidTTL = 24 * time.Hour

// Settle implements Store with settle.lua.
func (s *RedisStore) Settle(ctx context.Context, account, id string, capture bool, reason string) (SettleResult, error) {
	op := "r"
	if capture {
		op = "c"
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	code, _, err := s.settle1(ctx, s.client, account, id, op, reason, 0)
	if err != nil {
		return "", err
	}
	switch code {
	case 1:
		return Captured, nil
	case 2:
		return Released, nil
	case 3:
		return AlreadySettled, nil
	}
	return Unknown, nil
}

// settle1 runs settle.lua for one reservation (op: c, r or x; a release
// not before Redis time notBefore µs, when set) and returns its code and
// the reservation's credits (with code 6, not yet: ms to wait).
func (s *RedisStore) settle1(ctx context.Context, c redis.UniversalClient, account, id, op, reason string, notBefore int64) (code, credits int64, err error) {
	res, err := settleScript.Run(ctx, c,
		[]string{reservationsKey(account), s.reservationIndex(account), balanceKey(account), s.ledgerStream(account)},
		id, op, account, reservationMember(account, id), reason, s.ledgerMax, s.settle.Microseconds(), notBefore).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("redis settle: %w", err)
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("redis settle: script returned %d values, want 2", len(res))
	}
	return res[0], res[1], nil
}

// expireBatch bounds the reservations one pass reads from each index.
const expireBatch = 1000

// ExpireReservations implements Store: one pipelined ZRANGEBYSCORE per
// expiry index (in a Cluster, one per slot, each node its own pipeline)
// finds the reservations due, and settle.lua expires each (it checks
// again, by Redis's clock, so replicas sweeping at once agree).
func (s *RedisStore) ExpireReservations(ctx context.Context) (int, error) {
	names := s.Streams()
	cmds := make([]*redis.StringSliceCmd, len(names))
	due := strconv.FormatInt(time.Now().UnixMicro(), 10)
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			cmds[i] = p.ZRangeByScore(ctx, indexKey(name), &redis.ZRangeBy{Min: "-inf", Max: due, Count: expireBatch})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("redis expire reservations: %w", err)
	}
	released := 0
	var errs []error
	for i, cmd := range cmds {
		for _, m := range cmd.Val() {
			account, id, ok := parseReservationMember(m)
			if !ok { // not written by Tollgate: dropped, so it cannot fill the batch
				s.client.ZRem(ctx, indexKey(names[i]), m)
				continue
			}
			code, _, err := s.settle1(ctx, s.client, account, id, "x", reasonExpired, 0)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if code == 2 {
				released++
			}
		}
	}
	return released, errors.Join(errs...)
}

// Credit implements Store.
func (s *RedisStore) Credit(ctx context.Context, account string, amount int64, key string) (*Credit, error) {
	if err := validateCredit(account, amount, key); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := creditScript.Run(ctx, s.client,
		[]string{balanceKey(account), topupKey(account, key), s.ledgerStream(account)},
		amount, int64(MaxCredits), IdempotencyTTL.Milliseconds(), account, key, "topup", "topup", s.ledgerMax).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("redis credit: %w", err)
	}
	switch {
	case res[2] == 1:
		return nil, ErrIdempotencyConflict
	case res[3] == 1:
		return nil, ErrBalanceOverflow
	}
	return &Credit{Balance: res[0], Applied: res[1] == 1}, nil
}

// Account implements Store. It reads the balance and the scope's quota
// hash in one pipelined round trip.
func (s *RedisStore) Account(ctx context.Context, account string) (*Account, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var bal *redis.StringCmd
	var quotas *redis.MapStringStringCmd
	var now *redis.TimeCmd
	_, _ = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		bal = p.Get(ctx, balanceKey(account))
		quotas = p.HGetAll(ctx, quotaKey(account))
		now = p.Time(ctx)
		return nil
	})
	for _, err := range []error{bal.Err(), quotas.Err(), now.Err()} {
		if err != nil && !errors.Is(err, redis.Nil) { // no balance yet is 0
			return nil, fmt.Errorf("redis account: %w", err)
		}
	}
	a := &Account{Account: account, Quotas: []QuotaUsage{}}
	if v, err := bal.Int64(); err == nil {
		a.Balance = v
	}
	nowUS := now.Val().UnixMicro()
	for field, v := range quotas.Val() {
		used, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		if q, ok := parseQuotaField(field, used, nowUS); ok {
			a.Quotas = append(a.Quotas, q)
		}
	}
	sortQuotas(a.Quotas)
	return a, nil
}

// RedisOptions are the connection settings of the Redis store.
type RedisOptions struct {
	// Addrs: one address for a single node; several for a Cluster; with
	// MasterName, the Sentinel addresses.
	Addrs      []string
	MasterName string
	Username   string
	Password   string
	DB         int
	PoolSize   int
	Timeout    time.Duration
	// Dialer opens connections (nil: go-redis's); tests cut them.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// NewRedisClient builds a go-redis universal client (single node, Sentinel
// or Cluster, as go-redis decides from the options).
func NewRedisClient(o RedisOptions, tlsConfig *tls.Config) redis.UniversalClient {
	opts := &redis.UniversalOptions{
		Dialer:       o.Dialer,
		Addrs:        o.Addrs,
		MasterName:   o.MasterName,
		Username:     o.Username,
		Password:     o.Password,
		DB:           o.DB,
		PoolSize:     o.PoolSize,
		DialTimeout:  max(o.Timeout*4, time.Second),
		ReadTimeout:  max(o.Timeout, 10*time.Millisecond),
		WriteTimeout: max(o.Timeout, 10*time.Millisecond),
		// Limits are checked on the request path; never queue behind a
		// slow connection attempt for long.
		PoolTimeout: max(o.Timeout, 10*time.Millisecond),
		// Honour the per-call deadline on the socket too.
		ContextTimeoutEnabled: true,
		// Never resend a script: a resent Take could charge twice. A failed
		// call follows the limits' failure mode instead.
		MaxRetries: -1,
	}
	if tlsConfig != nil {
		opts.TLSConfig = tlsConfig
	}
	c := redis.NewUniversalClient(opts)
	if cc, ok := c.(*redis.ClusterClient); ok {
		cc.OnNewNode(func(node *redis.Client) { node.AddHook(noResend{}) })
	}
	return c
}

// sendOnceKey marks the context of a Take whose script a Cluster client
// must send at most once (see noResend); its value is a *sendOnce.
type sendOnceKey struct{}

// sendOnce records that a send of a Take's script may have reached Redis.
type sendOnce struct {
	maybeRan atomic.Bool
	first    atomic.Pointer[string] // the error of the send that may have run it
}

// errMaybeRan: a Take's script was not sent again because an earlier send
// may have run it.
var errMaybeRan = errors.New("not resent: an earlier send may have run it")

// noResend is a hook on each node of a Cluster client. go-redis's Cluster
// client sends a command again after a failed connection (EOF, a network
// timeout), to the same node and then another, up to MaxRedirects times,
// whatever MaxRetries says; a Take's script resent after its reply was
// lost would charge twice while its caller saw one charge. Once a send
// may have reached Redis, the Take's later sends fail with errMaybeRan
// (its void then finds what it took); redirects (MOVED, ASK) and refusals
// that ran nothing (TRYAGAIN, CLUSTERDOWN, LOADING...) are followed.
type noResend struct{}

func (noResend) DialHook(next redis.DialHook) redis.DialHook { return next }

func (noResend) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (noResend) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		once, _ := ctx.Value(sendOnceKey{}).(*sendOnce)
		if once == nil {
			return next(ctx, cmd)
		}
		if once.maybeRan.Load() {
			first := "unknown"
			if p := once.first.Load(); p != nil {
				first = *p
			}
			err := fmt.Errorf("%w (the earlier send failed with: %s)", errMaybeRan, first)
			cmd.SetErr(err)
			return err
		}
		err := next(ctx, cmd)
		if err != nil && mayHaveRun(err) {
			msg := err.Error()
			once.first.CompareAndSwap(nil, &msg)
			once.maybeRan.Store(true)
		}
		return err
	}
}

// mayHaveRun reports whether a command that failed with err may have run
// in Redis: anything but a reply from Redis (an error reply ran nothing
// that go-redis would resend) or a failure before it was sent.
func mayHaveRun(err error) bool {
	var reply redis.Error
	var op *net.OpError
	switch {
	case errors.As(err, &reply):
		return false
	case errors.As(err, &op) && op.Op == "dial":
		return false
	case errors.Is(err, redis.ErrPoolTimeout):
		return false
	}
	return true
}

// DurabilityWarnings reads Redis's appendonly and maxmemory-policy (CONFIG
// GET) and says, for each, how balances would be lost: without the
// append-only file a restart loses them (and the idempotency keys of
// top-ups, so a retried top-up credits again); with an evicting policy a
// full Redis drops them. A Redis that refuses CONFIG (most managed
// services) is not checked: no warnings.
func (s *RedisStore) DurabilityWarnings(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, max(s.timeout, time.Second))
	defer cancel()
	var warnings []string
	for _, param := range []string{"appendonly", "maxmemory-policy"} {
		v, err := s.client.ConfigGet(ctx, param).Result()
		if err != nil || v[param] == "" {
			continue // refused (renamed, ACL, managed) or unknown: not checked
		}
		switch val := v[param]; {
		case param == "appendonly" && val != "yes":
			warnings = append(warnings, "redis runs with appendonly "+val+": a Redis restart loses the balances, the top-ups' idempotency keys (a retried top-up credits again) and the ledger entries not shipped yet; set appendonly yes")
		case param == "maxmemory-policy" && val != "noeviction":
			warnings = append(warnings, "redis runs with maxmemory-policy "+val+": a full Redis evicts keys, balances and the top-ups' idempotency keys among them; set maxmemory-policy noeviction")
		}
	}
	return warnings
}
