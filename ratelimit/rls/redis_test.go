package rls_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/rls"
)

func rlsRequest(pairs ...string) *rlsv3.RateLimitRequest {
	d := &commonv3.RateLimitDescriptor{}
	for i := 0; i < len(pairs); i += 2 {
		d.Entries = append(d.Entries, &commonv3.RateLimitDescriptor_Entry{Key: pairs[i], Value: pairs[i+1]})
	}
	return &rlsv3.RateLimitRequest{Domain: "golden", Descriptors: []*commonv3.RateLimitDescriptor{d}}
}

func redisRLS(t testing.TB, srv *redistest.Server, timeout time.Duration) rlsv3.RateLimitServiceClient {
	t.Helper()
	eng, err := ratelimit.NewEngine(ratelimit.NewRedisStore(srv.Client(), timeout), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := rls.New(eng, rls.Options{})
	svc.SetConfig(loadRLSConfig(t, "testdata/rls/config.yaml"))
	return serveRLS(t, svc)
}

// TestRLSRedisExact: two Tollgate instances sharing one Redis, 8 callers
// each, admit exactly N for a limit of N; refused hits are not counted.
func TestRLSRedisExact(t *testing.T) {
	srv := redistest.Start(t)
	clients := []rlsv3.RateLimitServiceClient{redisRLS(t, srv, time.Second), redisRLS(t, srv, time.Second)}
	req := rlsRequest("remote_address", "203.0.113.7") // 3 a minute
	var ok, over atomic.Int64
	var wg sync.WaitGroup
	for _, c := range clients {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					resp, err := c.ShouldRateLimit(context.Background(), req)
					if err != nil {
						t.Error(err)
						return
					}
					if resp.OverallCode == rlsv3.RateLimitResponse_OK {
						ok.Add(1)
					} else {
						over.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	if ok.Load() != 3 || over.Load() != 77 {
		t.Errorf("%d OK and %d OVER_LIMIT of 80, want exactly 3 OK", ok.Load(), over.Load())
	}
	// The 77 refused hits were not counted: a check-only request (hits 0)
	// still sees 0 remaining, not a negative debt, and the minute resets it.
	check := rlsRequest("remote_address", "203.0.113.7")
	check.Descriptors[0].HitsAddend = wrapperspb.UInt64(0)
	resp, err := clients[0].ShouldRateLimit(context.Background(), check)
	if err != nil || resp.Statuses[0].LimitRemaining != 0 || resp.Statuses[0].DurationUntilReset.AsDuration() > time.Minute {
		t.Errorf("after the burst: %v %v", resp, err)
	}
}

// TestRLSRedisFailure: with Redis down, descriptors are OK (limits fail
// open, as envoyproxy/ratelimit's users expect with failure_mode_deny
// off); when it is back, limits apply again without a restart.
func TestRLSRedisFailure(t *testing.T) {
	srv := redistest.Start(t)
	c := redisRLS(t, srv, 100*time.Millisecond)
	req := rlsRequest("generic_key", "api") // 2 a second
	srv.Stop()
	for range 5 {
		resp, err := c.ShouldRateLimit(context.Background(), req)
		if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
			t.Fatalf("Redis down: %v %v, want OK", resp, err)
		}
	}
	srv.Restart()
	codes := []rlsv3.RateLimitResponse_Code{}
	for range 3 {
		resp, err := c.ShouldRateLimit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, resp.OverallCode)
	}
	if codes[0] != rlsv3.RateLimitResponse_OK || codes[2] != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("after the restart: %v, want the limit of 2 enforced again", codes)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func emptyRLS() rlsv3.RateLimitServiceServer { return emptyRLSServer{} }

type emptyRLSServer struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

func (emptyRLSServer) ShouldRateLimit(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

func benchRLS(b *testing.B, c rlsv3.RateLimitServiceClient, req *rlsv3.RateLimitRequest) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.ShouldRateLimit(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// fourDescriptors is a typical Envoy request: generic key, remote address,
// consumer+plan, consumer+path.
func fourDescriptors() *rlsv3.RateLimitRequest {
	req := rlsRequest("consumer", "acme", "plan", "pro")
	for _, pairs := range [][]string{{"generic_key", "bench"}, {"remote_address", "203.0.113.7"}, {"consumer", "acme", "path", "/v1/chat/completions"}} {
		req.Descriptors = append(req.Descriptors, rlsRequest(pairs...).Descriptors[0])
	}
	return req
}

// BenchmarkShouldRateLimitEmpty: a handler that only answers OK, over the
// same gRPC connection type.
func BenchmarkShouldRateLimitEmpty(b *testing.B) {
	benchRLS(b, serveRLS(b, emptyRLS()), fourDescriptors())
}

// BenchmarkShouldRateLimit1Redis: one descriptor counted in Redis.
func BenchmarkShouldRateLimit1Redis(b *testing.B) {
	benchRLS(b, redisRLS(b, redistest.Start(b), time.Second), rlsRequest("consumer", "acme", "plan", "pro"))
}

// BenchmarkShouldRateLimit4Redis: four descriptors in one atomic Take (one
// Redis round trip).
func BenchmarkShouldRateLimit4Redis(b *testing.B) {
	benchRLS(b, redisRLS(b, redistest.Start(b), time.Second), fourDescriptors())
}

// TestRLSFailClosed: with ratelimit.failure_mode closed, a store failure is
// UNAVAILABLE, so Envoy's failure_mode_deny decides.
func TestRLSFailClosed(t *testing.T) {
	srv := redistest.Start(t)
	eng, err := ratelimit.NewEngine(ratelimit.NewRedisStore(srv.Client(), 100*time.Millisecond), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := rls.New(eng, rls.Options{FailClosed: true})
	svc.SetConfig(loadRLSConfig(t, "testdata/rls/config.yaml"))
	srv.Stop()
	_, err = svc.ShouldRateLimit(context.Background(), rlsRequest("generic_key", "api"))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("store down, fail closed: %v, want UNAVAILABLE", err)
	}
}
