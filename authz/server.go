// Package authz is Tollgate's Envoy external-authorization service
// (envoy.service.auth.v3.Authorization): it turns a CheckRequest into the
// policy input, evaluates the decision, and answers with a CheckResponse.
//
// A denial is an ordinary CheckResponse, never a gRPC error, so Envoy's
// failure_mode_allow applies only to real failures.
package authz

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/directory"
	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/policies/decision"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// Evaluator evaluates the decision for one input; (nil, nil) means the
// decision is undefined. *policies.Query implements it.
type Evaluator interface {
	Eval(ctx context.Context, input ast.Value) (*ast.Term, error)
}

// Preparer is an Evaluator that also gives the policy in force with what it
// can read of the input (*policies.Query implements it): the Server then
// builds only those parts of the input (InputFor), for that same policy. An
// Evaluator that is not a Preparer is given the whole input.
type Preparer interface {
	Evaluator
	Prepared() *policies.Prepared
}

var _ Preparer = (*policies.Query)(nil)

// Options configure a Server.
type Options struct {
	// DenyStatus is the HTTP status when the decision is undefined, invalid
	// or failed (default 403).
	DenyStatus int
	Logger     *slog.Logger
	// Registerer receives the authz metrics; none when nil.
	Registerer prometheus.Registerer
	// Limiter carries out the decisions' limits and charges; without one
	// they are validated but not enforced.
	Limiter Limiter
	// Revision names the policy in force (policies.Engine.Revision); the
	// ledger records it with each charge. Nil: none.
	Revision func() string
	// DecisionLog receives one record per Check; nil: none, and each
	// denial is logged at debug level instead.
	DecisionLog DecisionLogger
	// Credentials says where requests present their credential and
	// whether it is removed before the upstream; nil: DefaultCredentials
	// (x-api-key; hidden).
	Credentials *Credentials
	// Resolver, when set, resolves the presented credential before the
	// policy runs and gives the policy input.tollgate.consumer (undefined
	// for no credential, or an unknown, expired or revoked key). It is
	// asked only when the policy in force can read input.tollgate
	// (policies.InputRefs): a policy that never looks costs no lookup.
	// Nil: no input.tollgate.
	Resolver Resolver
}

// DecisionLogger takes decision records; it must not block.
// *decisionlog.Logger implements it.
type DecisionLogger interface {
	Log(*decisionlog.Record)
}

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	eval      Evaluator
	prep      Preparer // eval, when it is one
	opts      Options
	creds     Credentials
	log       *slog.Logger
	decisions *prometheus.CounterVec
	failures  *prometheus.CounterVec
	duration  prometheus.Histogram
	inFlight  prometheus.Gauge
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// New returns a Server that asks eval for each decision.
func New(eval Evaluator, opts Options) (*Server, error) {
	if opts.DenyStatus == 0 {
		opts.DenyStatus = http.StatusForbidden
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	creds := opts.Credentials
	if creds == nil {
		creds = DefaultCredentials()
	}
	s := &Server{
		eval: eval,
		opts: opts,
		log:  opts.Logger,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_authz_decisions_total",
			Help: "ext_authz decisions by HTTP status (200 = allowed; unavailable: the limit store failed and the limits fail closed; expired: the caller gave up before the limits were applied, nothing charged).",
		}, []string{"status"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_authz_policy_failures_total",
			Help: "Checks denied because the policy failed: reason is policy_error, decision_undefined or invalid_decision.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_authz_check_duration_seconds",
			Help:    "Time to answer one ext_authz Check, policy evaluation included.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_authz_checks_in_flight",
			Help: "ext_authz Checks being answered now (a refund of a refused request is registered before its Check ends).",
		}),
	}
	s.prep, _ = eval.(Preparer)
	s.creds = *creds
	s.creds.Headers = make([]string, len(creds.Headers))
	for i, h := range creds.Headers {
		s.creds.Headers[i] = strings.ToLower(h) // as Envoy sends them
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{s.decisions, s.failures, s.duration, s.inFlight} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Check answers one authorization request. Only a cancelled or expired call
// is a gRPC error; everything else, policy failures included, is a
// CheckResponse.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	s.inFlight.Inc()
	defer s.inFlight.Dec()
	fillHeaderMap(req)
	// The credential is found once (without allocating, but to
	// percent-decode a query parameter): resolved before the policy runs,
	// hidden after it allows.
	var cred Credential
	if s.creds.Hide || s.opts.Resolver != nil {
		h := req.GetAttributes().GetRequest().GetHttp()
		cred = s.creds.Extract(h.GetHeaders(), requestPath(h))
	}
	d := s.decide(ctx, req, cred.Value)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := enforce(ctx, s.opts.Limiter, d, s.revision(), requestID(req)); errors.Is(err, ratelimit.ErrInvalidRequest) {
		// The engine refused the decision's limits or charge (nothing was
		// taken): the policy's fault, denied like any invalid decision.
		s.log.Error("invalid decision document; denying", "error", err, "request_id", requestID(req))
		d = s.failure("invalid_decision", "The authorization policy gave an invalid decision.")
	} else if err != nil && (ctx.Err() != nil || errors.Is(err, ratelimit.ErrDeadline)) {
		// The caller has given up (nothing was charged): no one to answer.
		s.duration.Observe(time.Since(start).Seconds())
		s.decisions.WithLabelValues("expired").Inc()
		s.logDecision(req, d, start, 0, "expired")
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Error(codes.DeadlineExceeded, "tollgate: the request's deadline passed before the limit store applied it")
	} else if err != nil {
		// A fail-closed limit or charge could not be checked: a technical
		// failure, so Envoy's failure_mode_allow / status_on_error decide.
		s.duration.Observe(time.Since(start).Seconds())
		s.decisions.WithLabelValues("unavailable").Inc()
		s.logDecision(req, d, start, 0, "unavailable")
		return nil, status.Error(codes.Unavailable, "tollgate: limit store unavailable")
	}
	dropForgedReservation(d)
	var hide Credential
	if d.Allow && s.creds.Hide {
		hide = cred
	}
	resp := respond(req, d, hide)
	s.observe(d, start)
	switch {
	case s.opts.DecisionLog != nil:
		code := http.StatusOK
		if !d.Allow {
			code = d.Status
		}
		s.logDecision(req, d, start, code, d.Reason)
	case !d.Allow && s.log.Enabled(ctx, slog.LevelDebug):
		s.log.LogAttrs(ctx, slog.LevelDebug, "denied", slog.Int("status", d.Status), slog.String("reason", d.Reason),
			slog.String("consumer", d.Consumer), slog.String("request_id", requestID(req)))
	}
	return resp, nil
}

func (s *Server) revision() string {
	if s.opts.Revision == nil {
		return ""
	}
	return s.opts.Revision()
}

// logDecision hands the decision log a record of d, answered with the
// HTTP status code (0: a gRPC error, which reason names). The record only
// refers to the request's and the decision's values: neither changes once
// Check has answered.
func (s *Server) logDecision(req *authv3.CheckRequest, d *decision.Decision, start time.Time, code int, reason string) {
	if s.opts.DecisionLog == nil {
		return
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	r := &decisionlog.Record{
		Service:   decisionlog.ServiceAuthz,
		RequestID: h.GetHeaders()["x-request-id"],
		Time:      start,
		Latency:   time.Since(start),
		Method:    h.GetMethod(),
		Host:      h.GetHost(),
		Headers:   h.GetHeaders(),
		Consumer:  d.Consumer,
		Plan:      d.Plan,
		Allow:     code == http.StatusOK && d.Allow,
		Status:    code,
		Reason:    reason,
		Limit:     d.Limit,
		Limits:    d.Limits,
		Outcome:   d.Outcome,
		Charge:    d.Charge,
		Balance:   d.Balance,
	}
	r.SetPath(h.GetPath())
	s.opts.DecisionLog.Log(r)
}

// Decide evaluates the policy for req. Failures become denials with the
// configured status and a reason saying what went wrong.
func (s *Server) Decide(ctx context.Context, req *authv3.CheckRequest) *decision.Decision {
	req = withHeaderMap(req) // a copy only in header_map mode; InputWith then finds the headers
	var credential string
	if s.opts.Resolver != nil {
		h := req.GetAttributes().GetRequest().GetHttp()
		credential = s.creds.Extract(h.GetHeaders(), requestPath(h)).Value
	}
	return s.decide(ctx, req, credential)
}

// decide is Decide with the request's credential found already ("" for
// none, or a malformed one).
func (s *Server) decide(ctx context.Context, req *authv3.CheckRequest, credential string) *decision.Decision {
	t, err := s.evaluate(ctx, req, credential)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			s.log.Error("policy evaluation failed; denying", "error", err, "request_id", requestID(req))
		}
		return s.failure("policy_error", "The authorization policy failed.")
	case t == nil:
		s.log.Warn("decision undefined; denying", "request_id", requestID(req))
		return s.failure("decision_undefined", "The authorization policy gave no decision for this request.")
	}
	d, err := decision.Parse(t, s.opts.DenyStatus)
	if err != nil {
		s.log.Error("invalid decision document; denying", "error", err, "request_id", requestID(req))
		return s.failure("invalid_decision", "The authorization policy gave an invalid decision.")
	}
	return d
}

// evaluate builds the input the policy in force can read and evaluates it
// with that policy.
func (s *Server) evaluate(ctx context.Context, req *authv3.CheckRequest, credential string) (*ast.Term, error) {
	if s.prep == nil {
		return s.eval.Eval(ctx, InputWith(req, nil, s.resolve(ctx, nil, credential)))
	}
	p := s.prep.Prepared()
	refs := p.InputRefs()
	return p.Eval(ctx, InputWith(req, refs, s.resolve(ctx, refs, credential)))
}

// resolve returns what credential resolves to when there is a Resolver
// and the policy can read input.tollgate; nil otherwise.
func (s *Server) resolve(ctx context.Context, refs *policies.InputRefs, credential string) *directory.Resolved {
	if s.opts.Resolver == nil || credential == "" || !refs.Needs("tollgate") {
		return nil
	}
	r, ok := s.opts.Resolver.Resolve(ctx, credential)
	if !ok {
		return nil
	}
	return r
}

func (s *Server) failure(reason, detail string) *decision.Decision {
	s.failures.WithLabelValues(reason).Inc()
	return &decision.Decision{Status: s.opts.DenyStatus, Reason: reason, Detail: detail}
}

func (s *Server) observe(d *decision.Decision, start time.Time) {
	s.duration.Observe(time.Since(start).Seconds())
	code := http.StatusOK
	if !d.Allow {
		code = d.Status
	}
	s.decisions.WithLabelValues(statusLabel(code)).Inc()
}

// statusLabel avoids an allocation for the common codes; codes are
// validated HTTP statuses, so the label set is bounded.
func statusLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 401:
		return "401"
	case 402:
		return "402"
	case 403:
		return "403"
	case 429:
		return "429"
	}
	return strconv.Itoa(code)
}

// requestID is Envoy's request id: attributes.request.http.id, or the
// x-request-id header (the same value when Envoy sends both).
func requestID(req *authv3.CheckRequest) string {
	h := req.GetAttributes().GetRequest().GetHttp()
	if id := h.GetId(); id != "" {
		return id
	}
	return h.GetHeaders()["x-request-id"]
}

// requestPath is the request's path with its query string:
// attributes.request.http.path, or the :path header.
func requestPath(h *authv3.AttributeContext_HttpRequest) string {
	if p := h.GetPath(); p != "" {
		return p
	}
	return h.GetHeaders()[":path"]
}

// Respond turns a decision into Envoy's CheckResponse. It removes no
// credential from the request: Check does, as Options.Credentials says.
func Respond(req *authv3.CheckRequest, d *decision.Decision) *authv3.CheckResponse {
	return respond(req, d, Credential{})
}

// respond is Respond, removing the credential hide (if any) from an
// allowed request.
func respond(req *authv3.CheckRequest, d *decision.Decision, hide Credential) *authv3.CheckResponse {
	if d.Allow {
		return allowResponse(req, d, hide)
	}
	return denyResponse(d)
}

func allowResponse(req *authv3.CheckRequest, d *decision.Decision, hide Credential) *authv3.CheckResponse {
	headers := make([]*corev3.HeaderValueOption, 0, len(d.Headers)+2)
	set := make(map[string]bool, len(d.Headers)+2)
	for _, h := range d.Headers {
		headers = append(headers, header(h))
		set[h.Key] = true
	}
	if d.Consumer != "" && !set[wire.HeaderConsumer] {
		headers = append(headers, header(decision.Header{Key: wire.HeaderConsumer, Value: d.Consumer}))
		set[wire.HeaderConsumer] = true
	}
	if d.Plan != "" && !set[wire.HeaderPlan] {
		headers = append(headers, header(decision.Header{Key: wire.HeaderPlan, Value: d.Plan}))
		set[wire.HeaderPlan] = true
	}
	ok := &authv3.OkHttpResponse{Headers: headers}
	// Headers set above overwrite a client's forged value; any other
	// x-tollgate-* header the client sent is removed, whether Envoy named
	// it in headers or in header_map (encode_raw_headers: true).
	forged := func(k string) {
		// Envoy sends lower-case names; other clients might not.
		if wire.HasPrefix(k) {
			if k = strings.ToLower(k); !set[k] {
				ok.HeadersToRemove = append(ok.HeadersToRemove, k)
			}
		}
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	for k := range h.GetHeaders() {
		forged(k)
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		forged(hv.GetKey())
	}
	// The presented credential stays at the edge, unless the decision
	// sets that header itself (Envoy removes headers after setting them).
	switch hide.Source {
	case FromHeader, FromBearer:
		if !set[hide.Name] {
			ok.HeadersToRemove = append(ok.HeadersToRemove, hide.Name)
		}
	case FromQuery:
		ok.QueryParametersToRemove = []string{hide.Name}
	}
	slices.Sort(ok.HeadersToRemove) // map order; keep responses stable
	ok.HeadersToRemove = slices.Compact(ok.HeadersToRemove)
	for _, r := range d.RemoveHeaders {
		if !slices.Contains(ok.HeadersToRemove, r) {
			ok.HeadersToRemove = append(ok.HeadersToRemove, r)
		}
	}
	for _, h := range d.ResponseHeaders {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, header(h))
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: d.DynamicMetadata,
	}
}

func denyResponse(d *decision.Decision) *authv3.CheckResponse {
	headers := make([]*corev3.HeaderValueOption, 0, len(d.ResponseHeaders)+1)
	hasType := false
	for _, h := range d.ResponseHeaders {
		headers = append(headers, header(h))
		hasType = hasType || h.Key == "content-type"
	}
	var body string
	if d.Body != nil {
		body = *d.Body
	} else {
		body = problem(d)
		if !hasType {
			headers = append(headers, header(decision.Header{Key: "content-type", Value: wire.ContentTypeProblem}))
		}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(grpcCode(d.Status)), Message: d.Reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
			Headers: headers,
			Body:    body,
		}},
		DynamicMetadata: d.DynamicMetadata,
	}
}

// grpcCode is informational for Envoy (any non-OK code denies) but useful in
// access logs and to other ext_authz clients.
func grpcCode(status int) codes.Code {
	switch {
	case status == http.StatusUnauthorized:
		return codes.Unauthenticated
	case status == http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case status >= 500:
		return codes.Unavailable
	}
	return codes.PermissionDenied
}

// header builds a HeaderValueOption. The deprecated "append" flag is used
// rather than append_action because every Envoy version honours it in
// ext_authz responses; false means overwrite-or-add.
func header(h decision.Header) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: h.Key, Value: h.Value},
		Append: wrapperspb.Bool(h.Append),
	}
}

// problem is the problem+json body of a denial.
func problem(d *decision.Decision) string {
	p := wire.NewProblem(d.Status, d.Reason, d.Detail)
	p.Consumer, p.Plan, p.Limit, p.Balance = d.Consumer, d.Plan, d.Limit, d.Balance
	if d.Status == http.StatusPaymentRequired {
		p.Payment = d.Payment // payment links belong to 402s only
	}
	return string(p.JSON())
}
