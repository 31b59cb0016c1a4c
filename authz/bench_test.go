package authz_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/directory"
	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// emptyServer answers OK without looking at the request: the floor that
// gRPC and protobuf alone cost, for comparison with BenchmarkCheck.
type emptyServer struct {
	authv3.UnimplementedAuthorizationServer
}

func (emptyServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}, nil
}

func fixture(b testing.TB, name string) *authv3.CheckRequest {
	b.Helper()
	raw, err := os.ReadFile("testdata/check/" + name + ".json")
	if err != nil {
		b.Fatal(err)
	}
	var c struct {
		Request json.RawMessage `json:"request"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		b.Fatal(err)
	}
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(c.Request, req); err != nil {
		b.Fatal(err)
	}
	return req
}

func benchCheck(b *testing.B, client authv3.AuthorizationClient, req *authv3.CheckRequest) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := client.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// benchCheckParallel keeps both cores busy with concurrent Checks: ns/op is
// then the CPU cost per call under load, client and server together.
func benchCheckParallel(b *testing.B, client authv3.AuthorizationClient, req *authv3.CheckRequest) {
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := client.Check(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// allowingServer serves the demo policy for benchmarks of allowed
// requests: its memory store's clock moves a minute at each reading, so
// the fixture's plan (pro: 50 a second, 100,000 a month) never runs out.
// On the golden tests' fixed clock every Check after the 50th was a 429.
func allowingServer(b *testing.B, aopts authz.Options) authv3.AuthorizationClient {
	return allowingServerWith(b, "demo", aopts)
}

// allowingServerWith is allowingServer with another policy (decision
// tollgate/decision).
func allowingServerWith(b *testing.B, policy string, aopts authz.Options) authv3.AuthorizationClient {
	var minutes atomic.Int64
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	store := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: func() time.Time {
		return start.Add(time.Duration(minutes.Add(1)) * time.Minute)
	}})
	eng, err := ratelimit.NewEngine(store, ratelimit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	aopts.Limiter = eng
	return startServerWith(b, policy, "tollgate/decision", aopts)
}

// stillAllowed fails the benchmark unless one more Check of req is
// allowed: what it measured was the allowed path.
func stillAllowed(b *testing.B, client authv3.AuthorizationClient, req *authv3.CheckRequest) {
	resp, err := client.Check(context.Background(), req)
	if err != nil || resp.GetOkResponse() == nil {
		b.Fatalf("after the loop: %v (%v), want allowed", resp.GetDeniedResponse(), err)
	}
}

// BenchmarkCheckEmptyParallel is BenchmarkCheckEmpty under load.
func BenchmarkCheckEmptyParallel(b *testing.B) {
	benchCheckParallel(b, serve(b, emptyServer{}), fixture(b, "demo_200_api_key"))
}

// BenchmarkCheckParallel is BenchmarkCheck under load.
func BenchmarkCheckParallel(b *testing.B) {
	client, req := allowingServer(b, authz.Options{}), fixture(b, "demo_200_api_key")
	benchCheckParallel(b, client, req)
	stillAllowed(b, client, req)
}

// BenchmarkCheckEmpty is one Check over gRPC (bufconn) to a handler that
// only answers OK.
func BenchmarkCheckEmpty(b *testing.B) {
	benchCheck(b, serve(b, emptyServer{}), fixture(b, "demo_200_api_key"))
}

// BenchmarkCheck is one Check over gRPC (bufconn) through the demo policy:
// input built as AST, API key hashed and looked up, route matched, decision
// parsed, response built.
func BenchmarkCheck(b *testing.B) {
	client, req := allowingServer(b, authz.Options{}), fixture(b, "demo_200_api_key")
	benchCheck(b, client, req)
	stillAllowed(b, client, req)
}

// demoDirectory is a key directory holding the demo's consumer acme and
// its key, resolved (and cached) by a running Resolver.
func demoDirectory(b *testing.B) *directory.Resolver {
	seed := filepath.Join(b.TempDir(), "consumers.json")
	if err := os.WriteFile(seed, []byte(`{"consumers": [{"id": "acme", "plan": "pro", "metadata": {"team": "search"},
		"keys": [{"id": "key_acme", "name": "production", "key": "tg_live_3f9a1c0d5e7b4a2c"}]}]}`), 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := directory.LoadMemory(seed, directory.MemoryOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return runResolver(b, store, nil)
}

// BenchmarkCheckDirectory is BenchmarkCheck with the consumer in the key
// directory (a cache hit) instead of the policy's data: the demo policy
// reading input.tollgate.consumer (testdata/policies/demo_directory).
func BenchmarkCheckDirectory(b *testing.B) {
	client, req := allowingServerWith(b, "demo_directory", authz.Options{Resolver: demoDirectory(b)}), fixture(b, "demo_200_api_key")
	benchCheck(b, client, req)
	stillAllowed(b, client, req)
}

// BenchmarkCheckDirectoryParallel is BenchmarkCheckDirectory under load.
func BenchmarkCheckDirectoryParallel(b *testing.B) {
	client, req := allowingServerWith(b, "demo_directory", authz.Options{Resolver: demoDirectory(b)}), fixture(b, "demo_200_api_key")
	benchCheckParallel(b, client, req)
	stillAllowed(b, client, req)
}

// BenchmarkCheckDenied is a 401 through the demo policy (problem+json body).
func BenchmarkCheckDenied(b *testing.B) {
	benchCheck(b, startServer(b, "demo", "tollgate/decision"), fixture(b, "demo_401_unknown_key"))
}

// BenchmarkDecide is the policy work alone, without gRPC.
func BenchmarkDecide(b *testing.B) {
	engine, err := policies.New(context.Background(), policies.Options{Queries: []string{"tollgate/decision"}})
	if err != nil {
		b.Fatal(err)
	}
	q, _ := engine.Query("tollgate/decision")
	srv, _ := authz.New(q, authz.Options{})
	req := fixture(b, "demo_200_api_key")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := srv.Decide(ctx, req); !d.Allow {
			b.Fatalf("denied: %+v", d)
		}
	}
}

// BenchmarkDecideDirectory is BenchmarkDecide with the consumer in the key
// directory (a cache hit): the credential extracted, hashed and resolved,
// input.tollgate added, the demo policy reading it.
func BenchmarkDecideDirectory(b *testing.B) {
	engine, err := policies.New(context.Background(), policies.Options{
		Paths: []string{"testdata/policies/demo_directory"}, Queries: []string{"tollgate/decision"}})
	if err != nil {
		b.Fatal(err)
	}
	q, _ := engine.Query("tollgate/decision")
	srv, _ := authz.New(q, authz.Options{Resolver: demoDirectory(b)})
	req := fixture(b, "demo_200_api_key")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := srv.Decide(ctx, req); !d.Allow {
			b.Fatalf("denied: %+v", d)
		}
	}
}

// deepBody is req with an 8 KiB JSON body of 4,096 nested arrays: cheap to
// send, and the input's parsed_body is where it would cost.
func deepBody(req *authv3.CheckRequest) *authv3.CheckRequest {
	req = proto.Clone(req).(*authv3.CheckRequest)
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Method = "POST"
	h.Headers["content-type"] = "application/json"
	h.Body = strings.Repeat("[", 4096) + strings.Repeat("]", 4096)
	return req
}

// BenchmarkCheckDeepBody is an unauthenticated request (401) with a deeply
// nested body, through the demo policy, which never reads the body.
func BenchmarkCheckDeepBody(b *testing.B) {
	benchCheck(b, startServer(b, "demo", "tollgate/decision"), deepBody(fixture(b, "demo_401_unknown_key")))
}

// BenchmarkCheckDeepBodyRead is the same request through a policy that
// reads input.parsed_body (and parsed_query).
func BenchmarkCheckDeepBodyRead(b *testing.B) {
	benchCheck(b, startServer(b, "envoy_object", "envoy/authz/allow"), deepBody(fixture(b, "demo_401_unknown_key")))
}
