package rls_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/rls"
)

// addresses is a request of n remote_address descriptors (3 a minute each).
func addresses(n int, prefix string) *rlsv3.RateLimitRequest {
	req := &rlsv3.RateLimitRequest{Domain: "golden"}
	for i := range n {
		req.Descriptors = append(req.Descriptors, &commonv3.RateLimitDescriptor{Entries: []*commonv3.RateLimitDescriptor_Entry{
			{Key: "remote_address", Value: prefix + strconv.Itoa(i)}}})
	}
	return req
}

// TestRLSBoundsRedis: over gRPC and a real Redis, a request past a bound
// is INVALID_ARGUMENT and never reaches the store. It used to be sent to
// Redis whole: 2,000 descriptors made the Take script fail ("too many
// results to unpack") and the request was let through as if Redis were
// down. A request at the bounds is counted exactly.
func TestRLSBoundsRedis(t *testing.T) {
	srv := redistest.Start(t)
	eng, err := ratelimit.NewEngine(ratelimit.NewRedisStore(srv.Client(), 5*time.Second), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := rls.New(eng, rls.Options{})
	svc.SetConfig(loadRLSConfig(t, "testdata/rls/config.yaml"))
	client := serveRLS(t, svc)

	long := addresses(1, "")
	long.Descriptors[0].Entries[0].Value = strings.Repeat("x", rls.DefaultMaxEntryBytes+1)
	wide := addresses(1, "")
	for i := range rls.DefaultMaxEntries {
		wide.Descriptors[0].Entries = append(wide.Descriptors[0].Entries, &commonv3.RateLimitDescriptor_Entry{Key: "k" + strconv.Itoa(i), Value: "v"})
	}
	longDomain := addresses(1, "")
	longDomain.Domain = strings.Repeat("d", rls.DefaultMaxEntryBytes+1)
	for _, tt := range []struct {
		name string
		req  *rlsv3.RateLimitRequest
		want string
	}{
		{"700 descriptors", addresses(700, "a"), "700 rate limit descriptors in one request; at most 64"},
		{"2000 descriptors", addresses(2000, "b"), "2000 rate limit descriptors in one request; at most 64"},
		{"one past max_descriptors", addresses(rls.DefaultMaxDescriptors+1, "c"), "65 rate limit descriptors"},
		{"one past max_entries", wide, "descriptor 0 has 17 entries; at most 16"},
		{"one past max_entry_bytes", long, "descriptor 0, entry 0: a key or value of 1025 bytes; at most 1024"},
		{"long domain", longDomain, "domain is 1025 bytes long"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.ShouldRateLimit(context.Background(), tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Errorf("ShouldRateLimit = %v, want INVALID_ARGUMENT %q", err, tt.want)
			}
		})
	}
	if n, err := srv.Client().DBSize(context.Background()).Result(); err != nil || n != 0 {
		t.Errorf("Redis holds %d keys after refused requests (%v), want none", n, err)
	}

	// At the bounds: 64 descriptors, values of 1,024 bytes, each counted
	// (3 a minute); the first has 16 entries (matching no rule: not limited).
	atMax := addresses(rls.DefaultMaxDescriptors, "ok")
	for _, d := range atMax.Descriptors {
		d.Entries[0].Value += strings.Repeat("v", rls.DefaultMaxEntryBytes-len(d.Entries[0].Value))
	}
	for j := range rls.DefaultMaxEntries - 1 {
		atMax.Descriptors[0].Entries = append(atMax.Descriptors[0].Entries, &commonv3.RateLimitDescriptor_Entry{Key: "pad" + strconv.Itoa(j), Value: "v"})
	}
	for round, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		resp, err := client.ShouldRateLimit(context.Background(), atMax)
		if err != nil {
			t.Fatalf("round %d at the bounds: %v", round+1, err)
		}
		if resp.OverallCode != want || len(resp.Statuses) != rls.DefaultMaxDescriptors {
			t.Fatalf("round %d at the bounds: %v with %d statuses, want %v with %d", round+1, resp.OverallCode, len(resp.Statuses), want, rls.DefaultMaxDescriptors)
		}
		for i, st := range resp.Statuses[1:] {
			if wantLeft := uint32(max(2-round, 0)); st.LimitRemaining != wantLeft || st.CurrentLimit.GetRequestsPerUnit() != 3 {
				t.Fatalf("round %d, descriptor %d: %v, want 3 a minute with %d left", round+1, i, st, wantLeft)
			}
		}
	}
}

// TestRLSBoundsConfigured: the bounds come from Options (the
// configuration's ratelimit.max_*).
func TestRLSBoundsConfigured(t *testing.T) {
	eng, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := rls.New(eng, rls.Options{Bounds: rls.Bounds{Descriptors: 2, Entries: 1, EntryBytes: 6}})
	svc.SetConfig(loadRLSConfig(t, "testdata/rls/config.yaml"))
	client := serveRLS(t, svc)
	two := rlsRequest("tier", "gen")
	two.Descriptors = append(two.Descriptors, rlsRequest("tier", "spec").Descriptors...)
	for _, tt := range []struct {
		name string
		req  *rlsv3.RateLimitRequest
		want codes.Code
	}{
		{"at the bounds", two, codes.OK},
		{"3 descriptors", addresses(3, ""), codes.InvalidArgument},
		{"2 entries", rlsRequest("a", "b", "c", "d"), codes.InvalidArgument},
		{"7 bytes", rlsRequest("tier", "1234567"), codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := client.ShouldRateLimit(context.Background(), tt.req); status.Code(err) != tt.want {
				t.Errorf("ShouldRateLimit = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestRLSPolicyTooManyLimits: a Rego source giving more limits than one
// request may carry (ratelimit.MaxLimits) is a broken policy: its limits
// are left out and the files' apply, as when the policy fails, rather than
// failing the call.
func TestRLSPolicyTooManyLimits(t *testing.T) {
	dir := t.TempDir()
	policy := `package tollgate

# n limits for a descriptor with an entry n, none for the others.
ratelimit := [limits(d) | some d in input.descriptors]

limits(d) := [{"name": sprintf("l%d", [i]), "key": "many", "limit": 5, "window": "1m"} |
	some i in numbers.range(1, to_number(d.entries_map.n))
] if d.entries_map.n
limits(d) := [] if not d.entries_map.n
`
	if err := os.WriteFile(filepath.Join(dir, "many.rego"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := policies.New(context.Background(), policies.Options{Paths: []string{dir}, Queries: []string{"tollgate/ratelimit"}})
	if err != nil {
		t.Fatal(err)
	}
	q, err := e.Query("tollgate/ratelimit")
	if err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t)
	eng, err := ratelimit.NewEngine(ratelimit.NewRedisStore(srv.Client(), 5*time.Second), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := rls.New(eng, rls.Options{Source: rls.NewRegoSource(q, e.Revision), Logger: slog.New(slog.DiscardHandler)})
	svc.SetConfig(loadRLSConfig(t, "testdata/rls/config.yaml"))
	client := serveRLS(t, svc)
	req := func(n int) *rlsv3.RateLimitRequest {
		r := rlsRequest("remote_address", "203.0.113.9") // 3 a minute in the files
		r.Descriptors = append(r.Descriptors, rlsRequest("n", strconv.Itoa(n)).Descriptors...)
		return r
	}

	// Within MaxLimits: the policy's limits apply with the files'.
	resp, err := client.ShouldRateLimit(context.Background(), req(ratelimit.MaxLimits-2))
	if err != nil {
		t.Fatal(err)
	}
	if resp.OverallCode != rlsv3.RateLimitResponse_OK || resp.Statuses[1].GetCurrentLimit().GetRequestsPerUnit() != 5 {
		t.Fatalf("%d policy limits: %v, want OK with the policy's limit of 5 on descriptor 1", ratelimit.MaxLimits-2, resp)
	}
	// One past: the policy's limits are left out; the files' still count.
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		resp, err := client.ShouldRateLimit(context.Background(), req(ratelimit.MaxLimits-1))
		if err != nil {
			t.Fatalf("call %d: %v, want an answer from the files' limits", i+1, err)
		}
		if resp.OverallCode != want || resp.Statuses[1].GetCurrentLimit() != nil {
			t.Errorf("call %d: %v, want %v from remote_address's 3 a minute, no limit on descriptor 1", i+1, resp, want)
		}
	}
}
