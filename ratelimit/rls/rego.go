package rls

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/policies/decision"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// Evaluator evaluates the decision; *policies.Query implements it.
type Evaluator interface {
	Eval(ctx context.Context, input ast.Value) (*ast.Term, error)
}

// maxCached bounds the cache; when full it starts over.
const maxCached = 100_000

// RegoSource gives the rate limit service plan-aware limits from Rego: a
// decision (such as data.tollgate.ratelimit) is evaluated with
// input.domain and input.descriptors and returns, for each descriptor, a
// list of limits in the ext_authz decision document's vocabulary
// (policies/decision).
//
// Results are cached per distinct domain and descriptor set until the
// policy changes, so a hot descriptor costs no Rego evaluation.
type RegoSource struct {
	eval     Evaluator
	revision func() string // the policy's revision; a change empties the cache

	mu    sync.RWMutex
	rev   string
	cache map[string][][]ratelimit.Limit
}

var _ DescriptorSource = (*RegoSource)(nil)

// NewRegoSource returns a source evaluating eval; revision identifies the
// policy in force (policies.Engine.Revision).
func NewRegoSource(eval Evaluator, revision func() string) *RegoSource {
	return &RegoSource{eval: eval, revision: revision, cache: map[string][][]ratelimit.Limit{}}
}

// Limits implements DescriptorSource. The decision must be an
// array with one element per descriptor, each a list of limits (or null);
// an undefined decision means no limits.
func (s *RegoSource) Limits(ctx context.Context, domain string, descriptors []*ratelimitv3.RateLimitDescriptor) ([][]ratelimit.Limit, error) {
	key := cacheKey(domain, descriptors)
	rev := s.revision()
	s.mu.RLock()
	cached, ok := s.cache[key]
	fresh := s.rev == rev
	s.mu.RUnlock()
	if ok && fresh {
		return cached, nil
	}
	limits, err := s.evaluate(ctx, domain, descriptors)
	if err != nil {
		return nil, err
	}
	if len(key) > maxKeyLen {
		return limits, nil
	}
	s.mu.Lock()
	if s.rev != rev || len(s.cache) >= maxCached {
		s.cache = map[string][][]ratelimit.Limit{}
		s.rev = rev
	}
	s.cache[key] = limits
	s.mu.Unlock()
	return limits, nil
}

func (s *RegoSource) evaluate(ctx context.Context, domain string, descriptors []*ratelimitv3.RateLimitDescriptor) ([][]ratelimit.Limit, error) {
	t, err := s.eval.Eval(ctx, regoInput(domain, descriptors))
	if err != nil || t == nil {
		return nil, err
	}
	arr, ok := t.Value.(*ast.Array)
	if !ok {
		return nil, fmt.Errorf("rate limit decision: want an array with one list of limits per descriptor, got %s", ast.ValueName(t.Value))
	}
	out := make([][]ratelimit.Limit, len(descriptors))
	for i := range min(arr.Len(), len(descriptors)) {
		e := arr.Elem(i)
		if e.Value.Compare(ast.NullValue) == 0 {
			continue
		}
		ls, err := decision.ParseLimits(e)
		if err != nil {
			return nil, fmt.Errorf("rate limit decision: descriptor %d: %w", i, err)
		}
		out[i] = ls
	}
	return out, nil
}

// regoInput is the policy input: {"domain": ..., "descriptors": [{"entries":
// [{"key": ..., "value": ...}], "entries_map": {key: value}}]}. entries_map
// lets a policy write input.descriptors[i].entries_map.plan.
func regoInput(domain string, descriptors []*ratelimitv3.RateLimitDescriptor) ast.Value {
	ds := make([]*ast.Term, len(descriptors))
	for i, d := range descriptors {
		entries := make([]*ast.Term, len(d.GetEntries()))
		m := make([][2]*ast.Term, 0, len(d.GetEntries()))
		for j, e := range d.GetEntries() {
			k, v := ast.StringTerm(e.GetKey()), ast.StringTerm(e.GetValue())
			entries[j] = ast.ObjectTerm(ast.Item(ast.InternedTerm("key"), k), ast.Item(ast.InternedTerm("value"), v))
			m = append(m, [2]*ast.Term{k, v})
		}
		ds[i] = ast.ObjectTerm(
			ast.Item(ast.InternedTerm("entries"), ast.ArrayTerm(entries...)),
			ast.Item(ast.StringTerm("entries_map"), ast.ObjectTerm(m...)),
		)
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("domain"), ast.StringTerm(domain)),
		ast.Item(ast.StringTerm("descriptors"), ast.ArrayTerm(ds...)),
	)
}

// cacheKey length-prefixes every part, so no two descriptor sets share a
// key; sets larger than maxKeyLen are not cached.
func cacheKey(domain string, descriptors []*ratelimitv3.RateLimitDescriptor) string {
	b := make([]byte, 0, 128)
	b = appendPart(b, domain)
	for _, d := range descriptors {
		b = append(b, '|')
		for _, e := range d.GetEntries() {
			b = appendPart(b, e.GetKey())
			b = appendPart(b, e.GetValue())
		}
	}
	return string(b)
}

func appendPart(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

// maxKeyLen bounds what one cached descriptor set may hold.
const maxKeyLen = 4096
