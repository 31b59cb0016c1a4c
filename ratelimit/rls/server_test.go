package rls_test

import (
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/rls"
	"github.com/tollgate-dev/tollgate/ratelimit/rls/rlsconfig"
)

var update = flag.Bool("update", false, "rewrite the expected responses in testdata/rls")

func serveRLS(t testing.TB, srv rlsv3.RateLimitServiceServer) rlsv3.RateLimitServiceClient {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.NumStreamWorkers(uint32(16 * runtime.GOMAXPROCS(0)))) // as internal/app serves
	rlsv3.RegisterRateLimitServiceServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rlsv3.NewRateLimitServiceClient(conn)
}

func loadRLSConfig(t testing.TB, files ...string) *rlsconfig.Config {
	t.Helper()
	m := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m[f] = b
	}
	cfg, err := rlsconfig.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRLSGolden: an envoyproxy/ratelimit config file and a
// RateLimitRequest in, the RateLimitResponse out (after the request is
// sent "repeat" times), on a memory store with a fixed clock.
func TestRLSGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/rls/*.json")
	if len(files) == 0 {
		t.Fatal("no golden cases in testdata/rls")
	}
	cfg := loadRLSConfig(t, "testdata/rls/config.yaml")
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var c struct {
				Request  json.RawMessage `json:"request"`
				Repeat   int             `json:"repeat,omitempty"`
				Response json.RawMessage `json:"response,omitempty"`
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
			eng, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: func() time.Time { return clock }}), ratelimit.Options{})
			if err != nil {
				t.Fatal(err)
			}
			srv := rls.New(eng, rls.Options{})
			srv.SetConfig(cfg)
			client := serveRLS(t, srv)
			req := &rlsv3.RateLimitRequest{}
			if err := protojson.Unmarshal(c.Request, req); err != nil {
				t.Fatal(err)
			}
			var got *rlsv3.RateLimitResponse
			for range max(c.Repeat, 1) {
				if got, err = client.ShouldRateLimit(context.Background(), req); err != nil {
					t.Fatal(err)
				}
			}
			if err := got.ValidateAll(); err != nil {
				t.Errorf("response fails Envoy's validation: %v", err)
			}
			if *update {
				out, _ := json.MarshalIndent(map[string]any{"request": c.Request, "repeat": c.Repeat, "response": json.RawMessage(prettyProto(t, got))}, "", "  ")
				if err := os.WriteFile(file, append(out, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := &rlsv3.RateLimitResponse{}
			if err := protojson.Unmarshal(c.Response, want); err != nil {
				t.Fatalf("response: %v (go test -run TestRLSGolden -update writes it)", err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("RateLimitResponse differs\n got: %s\nwant: %s", prettyProto(t, got), prettyProto(t, want))
			}
		})
	}
}

func prettyProto(t testing.TB, m proto.Message) string {
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	_ = json.Unmarshal(b, &v)
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}

func TestRLSInvalidRequests(t *testing.T) {
	srv := rls.New(nil, rls.Options{})
	for _, req := range []*rlsv3.RateLimitRequest{
		{Descriptors: []*commonv3.RateLimitDescriptor{{}}},
		{Domain: "x"},
	} {
		if _, err := srv.ShouldRateLimit(context.Background(), req); err == nil {
			t.Errorf("%v: accepted", req)
		}
	}
}

// TestMigrationExample: the example envoyproxy/ratelimit file loads as it
// is and limits what its README says.
func TestMigrationExample(t *testing.T) {
	cfg := loadRLSConfig(t, "../../examples/ratelimit-migration/config.yaml")
	if d := cfg.Domains(); len(d) != 1 || d[0] != "tollgate" {
		t.Fatalf("domains %v, want [tollgate]", d)
	}
	if r := cfg.Match("tollgate", []rlsconfig.Entry{{Key: "remote_address", Value: "203.0.113.7"}}); r == nil || r.RequestsPerUnit == 0 {
		t.Errorf("per-IP rule: %+v", r)
	}
}
