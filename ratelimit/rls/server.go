package rls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/throttle"
	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/rls/rlsconfig"
)

// Server serves Envoy's rate limit service
// (envoy.service.ratelimit.v3.RateLimitService) on the limit engine: a
// drop-in for envoyproxy/ratelimit whose configuration files it reads
// unchanged. All descriptors of a request are applied in one atomic Take
// (one Redis round trip); refused hits are not counted; shadow-mode limits
// are counted and reported but never refuse.
type Server struct {
	rlsv3.UnimplementedRateLimitServiceServer
	engine   *ratelimit.Engine
	log      *slog.Logger
	config   atomic.Pointer[rlsconfig.Config]
	source   DescriptorSource
	failOpen bool
	errLog   throttle.Every
	dlog     DecisionLogger
	bounds   Bounds
}

// Bounds limit the size of one ShouldRateLimit request; a request past
// any is answered InvalidArgument (never a store call, never fail-open).
// Zero fields take the defaults.
type Bounds struct {
	// Descriptors per request (DefaultMaxDescriptors).
	Descriptors int
	// Entries per descriptor (DefaultMaxEntries).
	Entries int
	// EntryBytes: the longest key or value of an entry, in bytes
	// (DefaultMaxEntryBytes).
	EntryBytes int
}

// Defaults of Bounds: far above what Envoy's rate limit actions produce
// (a route's actions make one descriptor each, of a few entries).
const (
	DefaultMaxDescriptors = 64
	DefaultMaxEntries     = 16
	DefaultMaxEntryBytes  = 1024
)

func (b Bounds) withDefaults() Bounds {
	if b.Descriptors <= 0 {
		b.Descriptors = DefaultMaxDescriptors
	}
	if b.Entries <= 0 {
		b.Entries = DefaultMaxEntries
	}
	if b.EntryBytes <= 0 {
		b.EntryBytes = DefaultMaxEntryBytes
	}
	return b
}

// check reports the first bound req breaks, as an InvalidArgument status.
func (b Bounds) check(req *rlsv3.RateLimitRequest) error {
	ds := req.GetDescriptors()
	if len(ds) > b.Descriptors {
		return status.Errorf(codes.InvalidArgument, "%d rate limit descriptors in one request; at most %d are allowed (ratelimit.max_descriptors)", len(ds), b.Descriptors)
	}
	if len(req.GetDomain()) > b.EntryBytes {
		return status.Errorf(codes.InvalidArgument, "rate limit domain is %d bytes long; at most %d are allowed (ratelimit.max_entry_bytes)", len(req.GetDomain()), b.EntryBytes)
	}
	for i, d := range ds {
		es := d.GetEntries()
		if len(es) > b.Entries {
			return status.Errorf(codes.InvalidArgument, "descriptor %d has %d entries; at most %d are allowed (ratelimit.max_entries)", i, len(es), b.Entries)
		}
		for j, e := range es {
			if n := max(len(e.GetKey()), len(e.GetValue())); n > b.EntryBytes {
				return status.Errorf(codes.InvalidArgument, "descriptor %d, entry %d: a key or value of %d bytes; at most %d are allowed (ratelimit.max_entry_bytes)", i, j, n, b.EntryBytes)
			}
		}
	}
	return nil
}

// DecisionLogger takes decision records; it must not block.
// *decisionlog.Logger implements it.
type DecisionLogger interface {
	Log(*decisionlog.Record)
}

// Options configure a Server.
type Options struct {
	// FailClosed chooses what a store failure does to the files' limits:
	// by default they fail open (OK, as envoyproxy/ratelimit users expect
	// with failure_mode_deny off); closed answers gRPC UNAVAILABLE, so
	// Envoy's failure_mode_deny decides.
	FailClosed bool
	// Source adds limits per descriptor (Tollgate's Rego policies); nil:
	// the configuration files' limits only.
	Source DescriptorSource
	// Logger receives store and policy failures; slog.Default() when nil.
	Logger *slog.Logger
	// DecisionLog receives one record per call; nil: none.
	DecisionLog DecisionLogger
	// Bounds limit the size of a request (zero: the defaults).
	Bounds Bounds
}

// logOnce logs at most once per 10 s.
func (s *Server) logOnce(msg string, err error) {
	if !s.errLog.Allow(10 * time.Second) {
		return
	}
	s.log.Error(msg+" (logged once per 10 s)", "error", err)
}

// DescriptorSource gives more limits per descriptor (Tollgate's Rego
// policies): for each descriptor of a request, the limits that apply. Their
// Key may be empty: the descriptor's entries are used. They are applied with
// the configuration files' limits, in the same atomic step.
type DescriptorSource interface {
	Limits(ctx context.Context, domain string, descriptors []*ratelimitv3.RateLimitDescriptor) ([][]ratelimit.Limit, error)
}

var _ rlsv3.RateLimitServiceServer = (*Server)(nil)

// New returns a rate limit service over engine with an empty
// configuration (every descriptor OK) until SetConfig.
func New(engine *ratelimit.Engine, opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{engine: engine, log: log, failOpen: !opts.FailClosed, source: opts.Source, dlog: opts.DecisionLog, bounds: opts.Bounds.withDefaults()}
	s.config.Store(&rlsconfig.Config{})
	return s
}

// SetConfig publishes a new, fully validated configuration atomically.
func (s *Server) SetConfig(c *rlsconfig.Config) { s.config.Store(c) }

// ShouldRateLimit implements RateLimitService. Malformed requests, and
// requests past the Bounds, are InvalidArgument; a store failure under a
// fail-closed limit is Unavailable, so Envoy's failure_mode_deny decides.
func (s *Server) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if err := s.bounds.check(req); err != nil {
		if s.dlog != nil { // recorded without the oversized descriptors
			s.logDecision(ctx, &rlsv3.RateLimitRequest{Domain: req.GetDomain()[:min(len(req.GetDomain()), s.bounds.EntryBytes)]}, time.Now(), &taken{}, nil, err)
		}
		return nil, err
	}
	if s.dlog == nil {
		return s.shouldRateLimit(ctx, req, nil)
	}
	start := time.Now()
	var t taken
	resp, err := s.shouldRateLimit(ctx, req, &t)
	s.logDecision(ctx, req, start, &t, resp, err)
	return resp, err
}

// taken is what the engine was asked and answered, for the decision log.
type taken struct {
	limits []ratelimit.Limit
	out    *ratelimit.Outcome
}

// logDecision hands the decision log a record of one call. The RLS request
// carries no request id: the caller's x-request-id gRPC metadata is used
// when there is one.
func (s *Server) logDecision(ctx context.Context, req *rlsv3.RateLimitRequest, start time.Time, t *taken, resp *rlsv3.RateLimitResponse, err error) {
	r := &decisionlog.Record{
		Service:     decisionlog.ServiceRateLimit,
		Time:        start,
		Latency:     time.Since(start),
		Domain:      req.GetDomain(),
		Descriptors: req.GetDescriptors(),
		Limits:      t.limits,
		Outcome:     t.out,
	}
	if id := metadata.ValueFromIncomingContext(ctx, "x-request-id"); len(id) > 0 {
		r.RequestID = id[0]
	}
	switch {
	case err != nil:
		r.Reason = rlsFailure(status.Code(err))
	case resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT:
		r.Status, r.Reason = http.StatusTooManyRequests, "rate_limited"
		if t.out != nil && t.out.Denied >= 0 && t.out.Denied < len(t.limits) {
			r.Limit = t.limits[t.out.Denied].Name
		} else {
			for _, st := range resp.GetStatuses() { // a limit of zero, refused before the engine
				if st.GetCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
					r.Limit = st.GetCurrentLimit().GetName()
					break
				}
			}
		}
	default:
		r.Allow, r.Status = true, http.StatusOK
	}
	s.dlog.Log(r)
}

// rlsFailure names a gRPC error answer in a decision record.
func rlsFailure(c codes.Code) string {
	switch c {
	case codes.InvalidArgument:
		return "invalid_request"
	case codes.Unavailable:
		return "unavailable"
	case codes.DeadlineExceeded, codes.Canceled:
		return "expired"
	}
	return "error"
}

func (s *Server) shouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest, t *taken) (*rlsv3.RateLimitResponse, error) {
	if req.GetDomain() == "" {
		return nil, status.Error(codes.InvalidArgument, "rate limit domain must not be empty")
	}
	if len(req.GetDescriptors()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "rate limit descriptor list must not be empty")
	}
	cfg := s.config.Load()
	hits := uint64(req.GetHitsAddend())
	if hits == 0 {
		hits = 1 // Envoy's contract: an unset hits_addend adds 1
	}

	n := len(req.Descriptors)
	resp := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_OK,
		Statuses:    make([]*rlsv3.RateLimitResponse_DescriptorStatus, n),
	}
	knownDomain := cfg.HasDomain(req.Domain)
	matched := make([]*rlsconfig.Rule, n)
	for i, d := range req.Descriptors {
		resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		matched[i] = rlsconfig.MatchEntries(cfg, req.Domain, d.GetEntries())
	}
	rlsconfig.ApplyReplaces(matched)

	limits := make([]ratelimit.Limit, 0, n)
	owners := make([][]int, 0, n) // descriptors served by each limit
	units := make([]rlsv3.RateLimitResponse_RateLimit_Unit, 0, n)
	rpus := make([]uint32, 0, n)
	index := map[string]int{}
	add := func(i int, l ratelimit.Limit, unit rlsv3.RateLimitResponse_RateLimit_Unit, rpu uint32) {
		id := l.Name + "\x00" + l.Key
		if j, ok := index[id]; ok { // the same counter twice: one limit, summed cost
			limits[j].Cost += l.Cost
			owners[j] = append(owners[j], i)
			return
		}
		index[id] = len(limits)
		limits = append(limits, l)
		owners = append(owners, []int{i})
		units = append(units, unit)
		rpus = append(rpus, rpu)
	}
	if s.source != nil {
		extra, err := s.source.Limits(ctx, req.Domain, req.Descriptors)
		if err != nil {
			// A broken policy must not stop traffic the files would let
			// through: log it and go on with the files' limits.
			s.logOnce("rate limit policy failed; applying the configuration files' limits only", err)
		}
		extra = extra[:min(len(extra), n)] // one list per descriptor; more are ignored
		if total := policyLimits(extra); total+n > ratelimit.MaxLimits {
			// So is a policy giving more limits than one request may
			// carry (the files give at most one per descriptor).
			s.logOnce("rate limit policy gave too many limits; applying the configuration files' limits only",
				fmt.Errorf("%d limits for %d descriptors; at most %d per request, the files' included", total, n, ratelimit.MaxLimits))
			extra = nil
		}
		for i, ls := range extra {
			for _, l := range ls {
				l.Cost = int64(min(descriptorHits(req.Descriptors[i], hits), uint64(ratelimit.MaxCredits)))
				if l.Key == "" {
					l.Key = entriesKey(req.Domain, req.Descriptors[i].GetEntries())
				}
				unit, rpu := policyUnit(&l)
				add(i, l, unit, rpu)
			}
		}
	}
	for i, d := range req.Descriptors {
		rule, override := matched[i], d.GetLimit()
		if !knownDomain {
			override = nil // as envoyproxy/ratelimit: no limits for an unknown domain
		}
		if override == nil && (rule == nil || rule.Unlimited) {
			continue
		}
		l, unit, rpu, err := limitFor(req.Domain, d.GetEntries(), rule, override, descriptorHits(d, hits))
		if err != nil {
			s.logOnce("descriptor skipped", err)
			continue // a bad override costs this descriptor, not the request
		}
		l.FailOpen = s.failOpen
		if rpu == 0 { // a limit of zero refuses every hit (unless shadow)
			if !l.Shadow {
				resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
				resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OVER_LIMIT,
					CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{Name: l.Name, Unit: unit}}
			}
			continue
		}
		add(i, l, unit, rpu)
	}
	if len(limits) == 0 || resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
		return resp, nil // nothing to count, or refused already: nothing is consumed
	}

	// Each counter is tagged by its own key: counters spread over Redis
	// slots and memory shards instead of piling into one per domain.
	out, err := s.engine.Take(ctx, &ratelimit.Request{Limits: limits})
	if t != nil {
		t.limits, t.out = limits, out
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return nil, status.FromContextError(ctx.Err()).Err() // the caller has gone
		case errors.Is(err, ratelimit.ErrDeadline):
			return nil, status.Error(codes.DeadlineExceeded, "tollgate: the request's deadline passed before the limit store applied it")
		case errors.Is(err, ratelimit.ErrStoreUnavailable):
			return nil, status.Error(codes.Unavailable, "tollgate: limit store unavailable")
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	if out.Degraded {
		return resp, nil // fail open: every descriptor OK, nothing counted
	}
	for j := range limits {
		st := out.Limits[j]
		code := rlsv3.RateLimitResponse_OK
		if st.Exceeded && !limits[j].Shadow {
			code = rlsv3.RateLimitResponse_OVER_LIMIT
		}
		for _, i := range owners[j] {
			// A descriptor with several limits reports the one that
			// refused, else the one with the least room.
			if cur := resp.Statuses[i]; cur.CurrentLimit != nil &&
				(cur.Code > code || cur.Code == code && int64(cur.LimitRemaining) <= st.Remaining) {
				continue
			}
			resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{
				Code:               code,
				CurrentLimit:       &rlsv3.RateLimitResponse_RateLimit{Name: limits[j].Name, RequestsPerUnit: rpus[j], Unit: units[j]},
				LimitRemaining:     uint32(min(max(st.Remaining, 0), int64(^uint32(0)))),
				DurationUntilReset: durationpb.New(st.Reset),
			}
		}
	}
	if p, st := ratelimit.PolicyHeader(limits, out), ratelimit.StateHeader(limits, out); p != "" && st != "" {
		resp.ResponseHeadersToAdd = []*corev3.HeaderValue{{Key: "ratelimit-policy", Value: p}, {Key: "ratelimit", Value: st}}
	}
	if !out.Allowed {
		resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
		resp.ResponseHeadersToAdd = append(resp.ResponseHeadersToAdd,
			&corev3.HeaderValue{Key: "retry-after", Value: strconv.FormatInt(ratelimit.Seconds(out.RetryAfter), 10)},
			&corev3.HeaderValue{Key: "content-type", Value: wire.ContentTypeProblem})
		resp.RawBody = overLimitBody(&limits[out.Denied], out)
	}
	return resp, nil
}

// policyLimits counts the limits a DescriptorSource gave.
func policyLimits(extra [][]ratelimit.Limit) int {
	total := 0
	for _, ls := range extra {
		total += len(ls)
	}
	return total
}

// limitFor turns a matched rule (or a request's per-descriptor override)
// into an engine limit. Seconds, minutes and hours are GCRA rates with the
// whole quota as burst (what a fixed window allows); days, weeks, months and
// years are calendar periods in UTC.
func limitFor(domain string, entries []*ratelimitv3.RateLimitDescriptor_Entry, rule *rlsconfig.Rule, o *ratelimitv3.RateLimitDescriptor_RateLimitOverride, cost uint64) (ratelimit.Limit, rlsv3.RateLimitResponse_RateLimit_Unit, uint32, error) {
	l := ratelimit.Limit{Cost: int64(min(cost, uint64(ratelimit.MaxCredits))), OnExceed: http.StatusTooManyRequests, FailOpen: true}
	var unitName string
	var rpu uint32
	if rule != nil {
		l.Name, l.Shadow, unitName, rpu = rule.Name, rule.ShadowMode, rule.Unit, rule.RequestsPerUnit
		l.Key = string(rlsconfig.AppendCounterKey(nil, rule, entries))
	} else {
		l.Key = entriesKey(domain, entries)
	}
	if o != nil {
		// An override is its own counter and never in shadow mode, as in
		// envoyproxy/ratelimit.
		unitName, rpu = strings.ToLower(o.GetUnit().String()), o.GetRequestsPerUnit()
		l.Shadow = false
		l.Key += ":override=" + strconv.FormatUint(uint64(rpu), 10) + "/" + unitName
		if l.Name == "" {
			l.Name = "override"
		}
	}
	l.Limit = max(int64(rpu), 1)
	switch w := rlsconfig.Window(unitName); {
	case w > 0 && w <= time.Hour:
		l.Window = w
	case unitName == "day" || unitName == "week" || unitName == "month" || unitName == "year":
		l.Period = ratelimit.Period(unitName)
	default:
		return l, 0, 0, errors.New("unit " + strconv.Quote(unitName) + " is not one of second, minute, hour, day, week, month, year")
	}
	unit := rlsv3.RateLimitResponse_RateLimit_Unit(rlsv3.RateLimitResponse_RateLimit_Unit_value[strings.ToUpper(unitName)])
	return l, unit, rpu, nil
}

// descriptorHits is what a descriptor adds: its own hits_addend when set
// (an explicit 0 checks without counting), else the request's.
func descriptorHits(d *ratelimitv3.RateLimitDescriptor, hits uint64) uint64 {
	if d.GetIsNegativeHits() {
		return 0 // a refund of earlier hits: checked, never counted (refunds are not applied)
	}
	if h := d.GetHitsAddend(); h != nil {
		return h.GetValue()
	}
	return hits
}

// entriesKey identifies a descriptor's counter by its domain and entries.
func entriesKey(domain string, entries []*ratelimitv3.RateLimitDescriptor_Entry) string {
	b := []byte(ratelimit.EscapeKey(domain))
	for _, e := range entries {
		b = append(b, ':')
		b = append(b, ratelimit.EscapeKey(e.GetKey())...)
		b = append(b, '=')
		b = append(b, ratelimit.EscapeKey(e.GetValue())...)
	}
	return string(b)
}

// policyUnit reports a policy limit in the response's vocabulary: its
// window or period as a unit when one fits, with its limit.
func policyUnit(l *ratelimit.Limit) (rlsv3.RateLimitResponse_RateLimit_Unit, uint32) {
	unit := rlsv3.RateLimitResponse_RateLimit_UNKNOWN
	switch {
	case l.Window == time.Second:
		unit = rlsv3.RateLimitResponse_RateLimit_SECOND
	case l.Window == time.Minute:
		unit = rlsv3.RateLimitResponse_RateLimit_MINUTE
	case l.Window == time.Hour:
		unit = rlsv3.RateLimitResponse_RateLimit_HOUR
	case l.Period != "":
		unit = rlsv3.RateLimitResponse_RateLimit_Unit(rlsv3.RateLimitResponse_RateLimit_Unit_value[strings.ToUpper(string(l.Period))])
	}
	return unit, uint32(min(l.Limit, int64(^uint32(0))))
}

func overLimitBody(l *ratelimit.Limit, out *ratelimit.Outcome) []byte {
	p := wire.NewProblem(http.StatusTooManyRequests, "rate_limited", "Limit "+strconv.Quote(l.Name)+" allows "+
		strconv.FormatInt(l.Limit, 10)+" requests per "+unitText(l)+". Retry in "+strconv.FormatInt(ratelimit.Seconds(out.RetryAfter), 10)+" s.")
	p.Limit = l.Name
	return p.JSON()
}

func unitText(l *ratelimit.Limit) string {
	if l.IsRate() {
		return l.Window.String()
	}
	return string(l.Period)
}
