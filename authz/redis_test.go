package authz_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// roundTrips counts the commands and pipelines a go-redis client sends.
type roundTrips struct{ n atomic.Int64 }

func (*roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.n.Add(1); return next(ctx, cmd) }
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { r.n.Add(1); return next(ctx, cmds) }
}

// redisServer serves the demo policy with limits in a real Redis.
func redisServer(t testing.TB) (authv3.AuthorizationClient, *redistest.Server, *roundTrips) {
	t.Helper()
	srv := redistest.Start(t)
	rt := &roundTrips{}
	rc := srv.Client()
	rc.AddHook(rt)
	engine, err := policies.New(context.Background(), policies.Options{Queries: []string{"tollgate/decision"}})
	if err != nil {
		t.Fatal(err)
	}
	q, _ := engine.Query("tollgate/decision")
	limits, err := ratelimit.NewEngine(ratelimit.NewRedisStore(rc, time.Second), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := authz.New(q, authz.Options{Limiter: limits})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, s), srv, rt
}

// commandCalls sums Redis's per-command call counters (INFO commandstats),
// leaving out the INFO calls themselves.
func commandCalls(t testing.TB, srv *redistest.Server) map[string]int {
	t.Helper()
	info, err := srv.Client().Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok || name == "cmdstat_info" {
			continue
		}
		n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		calls[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return calls
}

// TestCheckOneRedisRoundTrip: with the Redis store, one Check makes exactly
// one round trip to Redis, one EVALSHA.
func TestCheckOneRedisRoundTrip(t *testing.T) {
	client, srv, rt := redisServer(t)
	req := fixture(t, "demo_200_api_key")
	if _, err := client.Check(context.Background(), req); err != nil { // loads the script
		t.Fatal(err)
	}
	before := commandCalls(t, srv)
	trips := rt.n.Load()
	const n = 50
	for range n {
		resp, err := client.Check(context.Background(), req)
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("Check: %v %v", resp, err)
		}
	}
	if got := rt.n.Load() - trips; got != n {
		t.Errorf("%d round trips to Redis for %d Checks, want exactly one each", got, n)
	}
	// Redis agrees: one script call per Check (the commands the script
	// runs inside Redis are counted there too, but cost no round trip).
	after := commandCalls(t, srv)
	if d := after["evalsha"] - before["evalsha"]; d != n {
		t.Errorf("Redis counted %d EVALSHA for %d Checks", d, n)
	}
	if d := after["eval"] - before["eval"]; d != 0 {
		t.Errorf("the script was sent again %d times (EVAL): it should be loaded once", d)
	}
}

// BenchmarkCheckRedis is one Check through the demo policy with its limits
// and charge counted in a local Redis: BenchmarkCheck plus one round trip.
func BenchmarkCheckRedis(b *testing.B) {
	client, _, _ := redisServer(b)
	benchCheck(b, client, fixture(b, "demo_200_api_key"))
}

// TestCheckMaxLimitsRedis: a decision with ratelimit.MaxLimits limits is
// enforced whole over Redis (the Take script no longer unpacks its reply,
// which failed past about 2,000 limits and let the request through as if
// Redis were down); one more limit is an invalid decision, denied, never
// let through.
func TestCheckMaxLimitsRedis(t *testing.T) {
	srv := redistest.Start(t)
	limits, err := ratelimit.NewEngine(ratelimit.NewRedisStore(srv.Client(), 5*time.Second), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client := limitsServer(t, authz.Options{Limiter: limits})
	many := func(n int) *authv3.CheckRequest {
		req := rateRequest()
		req.Attributes.Request.Http.Path = "/many"
		req.Attributes.Request.Http.Headers = map[string]string{"x-limits": strconv.Itoa(n)}
		return req
	}
	for i, want := range []int32{200, 200, 429} {
		resp, err := client.Check(context.Background(), many(ratelimit.MaxLimits))
		if err != nil {
			t.Fatal(err)
		}
		got := int32(200)
		if d := resp.GetDeniedResponse(); d != nil {
			got = int32(d.GetStatus().GetCode())
		}
		if got != want {
			t.Errorf("check %d with %d limits: status %d (%s), want %d", i+1, ratelimit.MaxLimits, got, resp.GetStatus().GetMessage(), want)
		}
	}
	resp, err := client.Check(context.Background(), many(ratelimit.MaxLimits+1))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetDeniedResponse().GetStatus().GetCode(); got != 403 || resp.GetStatus().GetMessage() != "invalid_decision" {
		t.Errorf("%d limits: status %v reason %q, want 403 invalid_decision", ratelimit.MaxLimits+1, got, resp.GetStatus().GetMessage())
	}
}
