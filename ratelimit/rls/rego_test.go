package rls_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/rls"
)

// counting wraps the demo policy's ratelimit query and counts evaluations.
type counting struct {
	q *policies.Query
	n atomic.Int64
}

func (c *counting) Eval(ctx context.Context, in ast.Value) (*ast.Term, error) {
	c.n.Add(1)
	return c.q.Eval(ctx, in)
}

func demo(t *testing.T) *counting {
	t.Helper()
	e, err := policies.New(context.Background(), policies.Options{Queries: []string{"tollgate/ratelimit"}})
	if err != nil {
		t.Fatal(err)
	}
	q, err := e.Query("tollgate/ratelimit")
	if err != nil {
		t.Fatal(err)
	}
	return &counting{q: q}
}

func descriptors(pairs ...[]string) []*ratelimitv3.RateLimitDescriptor {
	var out []*ratelimitv3.RateLimitDescriptor
	for _, p := range pairs {
		d := &ratelimitv3.RateLimitDescriptor{}
		for i := 0; i < len(p); i += 2 {
			d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: p[i], Value: p[i+1]})
		}
		out = append(out, d)
	}
	return out
}

func TestPlanLimitsAndCache(t *testing.T) {
	c := demo(t)
	revision := "r1"
	src := rls.NewRegoSource(c, func() string { return revision })
	ds := descriptors([]string{"consumer", "acme", "plan", "free"}, []string{"remote_address", "203.0.113.7"})
	for range 3 {
		ls, err := src.Limits(context.Background(), "tollgate", ds)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) != 2 || len(ls[0]) != 2 || ls[0][0].Name != "per_second" || ls[0][0].Burst != 10 || ls[0][1].Period != ratelimit.Month || ls[1] != nil {
			t.Fatalf("limits %+v, want the free plan's two limits for descriptor 0 and none for 1", ls)
		}
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("%d evaluations for 3 identical requests, want 1 (cached)", n)
	}
	if _, err := src.Limits(context.Background(), "tollgate", descriptors([]string{"consumer", "acme", "plan", "pro"})); err != nil || c.n.Load() != 2 {
		t.Errorf("another descriptor set: %v, evaluations %d, want 2", err, c.n.Load())
	}
	revision = "r2" // the policy changed
	if _, err := src.Limits(context.Background(), "tollgate", ds); err != nil || c.n.Load() != 3 {
		t.Errorf("after a policy change: %v, evaluations %d, want 3", err, c.n.Load())
	}
}

// TestRLSWithPolicy: the rate limit service applies the plan's limits
// from Rego: the free plan's burst of 10, then OVER_LIMIT.
func TestRLSWithPolicy(t *testing.T) {
	clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	eng, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: func() time.Time { return clock }}), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := rls.New(eng, rls.Options{Source: rls.NewRegoSource(demo(t), func() string { return "r" })})
	req := &rlsv3.RateLimitRequest{Domain: "tollgate", Descriptors: descriptors([]string{"consumer", "initech", "plan", "free"})}
	var last *rlsv3.RateLimitResponse
	for i := range 11 {
		if last, err = srv.ShouldRateLimit(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if i < 10 && last.OverallCode != rlsv3.RateLimitResponse_OK {
			t.Fatalf("request %d: %v", i+1, last)
		}
	}
	st := last.Statuses[0]
	if last.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || st.GetCurrentLimit().GetName() != "per_second" ||
		st.GetCurrentLimit().GetUnit() != rlsv3.RateLimitResponse_RateLimit_SECOND || st.GetCurrentLimit().GetRequestsPerUnit() != 5 {
		t.Errorf("11th request: %v, want OVER_LIMIT by per_second (5/s)", last)
	}
}

func TestBadDecision(t *testing.T) {
	src := rls.NewRegoSource(evalFunc(func(context.Context, ast.Value) (*ast.Term, error) {
		return ast.MustParseTerm(`[[{"name": "x", "limit": -1, "window": "1s"}]]`), nil
	}), func() string { return "" })
	if _, err := src.Limits(context.Background(), "d", descriptors([]string{"k", "v"})); err == nil {
		t.Error("an invalid limit was accepted")
	}
}

type evalFunc func(context.Context, ast.Value) (*ast.Term, error)

func (f evalFunc) Eval(ctx context.Context, in ast.Value) (*ast.Term, error) { return f(ctx, in) }
