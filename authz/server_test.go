package authz_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

var update = flag.Bool("update", false, "rewrite the expected responses in testdata/check")

// checkCase is one golden file: a CheckRequest as Envoy sends it, the
// policy it runs against, and the CheckResponse Envoy must get back.
type checkCase struct {
	Comment  string          `json:"comment,omitempty"`
	Policy   string          `json:"policy"`           // "demo" (embedded) or a dir under testdata/policies
	Decision string          `json:"decision"`         // decision path
	Repeat   int             `json:"repeat,omitempty"` // send the request this many times; the last response is compared
	Request  json.RawMessage `json:"request"`
	Response json.RawMessage `json:"response,omitempty"`
}

// startServer serves an authz.Server for the policy over a real gRPC
// connection (bufconn) and returns a client.
func startServer(t testing.TB, policy, decision string) authv3.AuthorizationClient {
	t.Helper()
	return startServerWith(t, policy, decision, authz.Options{})
}

// demoCredentials are the demo's as `tollgate serve` runs it without a
// config file: its policy takes a key from x-api-key or Authorization:
// Bearer, so both are read and hidden.
func demoCredentials() *authz.Credentials {
	return &authz.Credentials{Headers: []string{"x-api-key"}, Bearer: true, Hide: true}
}

// startServerWith is startServer with more options (the demo gets
// demoCredentials unless others are given); the Limiter, unless
// given, is a memory store on a fixed clock.
func startServerWith(t testing.TB, policy, decision string, aopts authz.Options) authv3.AuthorizationClient {
	t.Helper()
	if policy == "demo" && aopts.Credentials == nil {
		aopts.Credentials = demoCredentials()
	}
	opts := policies.Options{Queries: []string{decision}}
	if policy != "demo" {
		opts.Paths = []string{filepath.Join("testdata", "policies", policy)}
	}
	engine, err := policies.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("load policy %s: %v", policy, err)
	}
	q, err := engine.Query(decision)
	if err != nil {
		t.Fatal(err)
	}
	// Limits are enforced by a memory store on a fixed clock, so golden
	// responses (RateLimit headers included) are exact.
	clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	eng, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: func() time.Time { return clock }}), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if aopts.Limiter == nil {
		aopts.Limiter = eng
	}
	srv, err := authz.New(q, aopts)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, srv)
}

func serve(t testing.TB, srv authv3.AuthorizationServer) authv3.AuthorizationClient {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.NumStreamWorkers(uint32(16 * runtime.GOMAXPROCS(0)))) // as internal/app serves
	authv3.RegisterAuthorizationServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func TestCheckGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "check", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden cases in testdata/check (err %v)", err)
	}
	clients := map[string]authv3.AuthorizationClient{}
	parent := t
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var c checkCase
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			key := c.Policy + "|" + c.Decision
			if clients[key] == nil {
				clients[key] = startServer(parent, c.Policy, c.Decision)
			}
			req := &authv3.CheckRequest{}
			if err := protojson.Unmarshal(c.Request, req); err != nil {
				t.Fatalf("request: %v", err)
			}
			for range c.Repeat - 1 {
				if _, err := clients[key].Check(context.Background(), req); err != nil {
					t.Fatal(err)
				}
			}
			got, err := clients[key].Check(context.Background(), req)
			if err != nil {
				t.Fatalf("Check: gRPC error %v; a decision, even a denial, must be a CheckResponse", err)
			}
			if err := got.ValidateAll(); err != nil {
				t.Errorf("response fails Envoy's own validation: %v", err)
			}
			if *update {
				c.Response = json.RawMessage(pretty(t, got))
				out, _ := json.MarshalIndent(c, "", "  ")
				if err := os.WriteFile(file, append(out, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := &authv3.CheckResponse{}
			if err := protojson.Unmarshal(c.Response, want); err != nil {
				t.Fatalf("response: %v (run go test -run TestCheckGolden -update to write it)", err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("CheckResponse differs\n got: %s\nwant: %s", pretty(t, got), pretty(t, want))
			}
		})
	}
}

func pretty(t testing.TB, m proto.Message) string {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	// protojson output is deliberately unstable; normalise it.
	var v any
	_ = json.Unmarshal(b, &v)
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}

// TestPolicyFailuresCounted: every way a policy can fail is a denial with
// the configured status, and is counted by reason.
func TestPolicyFailuresCounted(t *testing.T) {
	engine, err := policies.New(context.Background(), policies.Options{
		Paths: []string{"testdata/policies/faulty"}, Queries: []string{"tollgate/decision"},
	})
	if err != nil {
		t.Fatal(err)
	}
	q, _ := engine.Query("tollgate/decision")
	reg := prometheus.NewPedanticRegistry()
	srv, err := authz.New(q, authz.Options{DenyStatus: 503, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, srv)
	for path, reason := range map[string]string{
		"/conflict":     "policy_error",
		"/nothing":      "decision_undefined",
		"/invalid-type": "invalid_decision",
		"/number":       "invalid_decision",
	} {
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: path}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetDeniedResponse().GetStatus().GetCode(); int(got) != 503 || resp.GetStatus().GetMessage() != reason {
			t.Errorf("%s: status %v reason %q, want 503 %q", path, got, resp.GetStatus().GetMessage(), reason)
		}
	}
	want := map[string]float64{"policy_error": 1, "decision_undefined": 1, "invalid_decision": 2}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "tollgate_authz_policy_failures_total":
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		case "tollgate_authz_decisions_total":
			if v := mf.GetMetric()[0].GetCounter().GetValue(); len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetLabel()[0].GetValue() != "503" || v != 4 {
				t.Errorf("decisions_total = %v, want only status=503 counted 4 times", mf.GetMetric())
			}
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("tollgate_authz_policy_failures_total{reason=%q} = %v, want %v", k, got[k], v)
		}
	}
}

// failing is a Limiter whose every Take fails with err.
type failing struct{ err error }

func (f failing) Take(context.Context, *ratelimit.Request) (*ratelimit.Outcome, error) {
	return nil, f.err
}

// limitsServer serves testdata/policies/limits with opts over real gRPC.
func limitsServer(t *testing.T, opts authz.Options) authv3.AuthorizationClient {
	t.Helper()
	engine, err := policies.New(context.Background(), policies.Options{
		Paths: []string{"testdata/policies/limits"}, Queries: []string{"tollgate/decision"},
	})
	if err != nil {
		t.Fatal(err)
	}
	q, _ := engine.Query("tollgate/decision")
	srv, err := authz.New(q, opts)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, srv)
}

// rateRequest is a GET /rate: two limits in testdata/policies/limits.
func rateRequest() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/rate"}},
	}}
}

// TestInvalidLimitsDeny: limits the engine refuses as invalid are the
// policy's fault — an invalid_decision denial, not an UNAVAILABLE that
// Envoy's failure_mode_allow would let through.
func TestInvalidLimitsDeny(t *testing.T) {
	// The engine refuses limits that break its invariants so.
	refusing := failing{fmt.Errorf("%w: limits[0]: bad", ratelimit.ErrInvalidRequest)}
	resp, err := limitsServer(t, authz.Options{Limiter: refusing}).Check(context.Background(), rateRequest())
	if err != nil {
		t.Fatalf("Check = %v, want a denial", err)
	}
	if got := resp.GetDeniedResponse().GetStatus().GetCode(); got != 403 || resp.GetStatus().GetMessage() != "invalid_decision" {
		t.Errorf("status %v reason %q, want 403 invalid_decision", got, resp.GetStatus().GetMessage())
	}
}

// TestExpiredIsNotAnOutage: a request whose limits reached the store after
// its deadline (nothing charged) is answered DEADLINE_EXCEEDED and counted
// as expired, not as a store outage.
func TestExpiredIsNotAnOutage(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	late := failing{ratelimit.ErrDeadline} // the store reached the request after its deadline
	if _, err := limitsServer(t, authz.Options{Limiter: late, Registerer: reg}).Check(context.Background(), rateRequest()); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Check = %v, want DEADLINE_EXCEEDED", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tollgate_authz_decisions_total" {
			if m := mf.GetMetric(); len(m) != 1 || m[0].GetLabel()[0].GetValue() != "expired" {
				t.Errorf("decisions_total = %v, want one series, status=expired", m)
			}
		}
	}
}
