package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig() *config.Config {
	c := config.Default()
	c.GRPC.Address = "127.0.0.1:0"
	c.Admin.Address = "127.0.0.1:0"
	c.ShutdownTimeout = config.Duration(5 * time.Second)
	none := config.Duration(0)
	c.ShutdownDelay = &none
	return c
}

type running struct {
	app    *app.App
	cancel context.CancelFunc
	done   chan error
	conn   *grpc.ClientConn
	banner string
}

func start(t testing.TB, cfg *config.Config) *running {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := app.New(context.Background(), cfg, log, "test")
	if err != nil {
		t.Fatal(err)
	}
	var banner bytes.Buffer
	a.Banner(&banner)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{app: a, cancel: cancel, done: make(chan error, 1), banner: banner.String()}
	go func() { r.done <- a.Run(ctx) }()
	r.conn, err = grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.conn.Close()
		r.stop(t)
	})
	return r
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if !ok {
			return // the test has stopped it
		}
		if err != nil {
			t.Errorf("Run returned %v, want nil after a shutdown", err)
		}
		close(r.done)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after shutdown")
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDemo runs the embedded default as `tollgate serve` does and sends
// the two CheckRequests its banner tells users to paste into grpcurl.
func TestDemo(t *testing.T) {
	r := start(t, testConfig())
	ctx := context.Background()

	hc := healthpb.NewHealthClient(r.conn)
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v; want SERVING", svc, resp, err)
		}
	}

	for _, tc := range []struct {
		name, request string
		wantHTTP      int
	}{
		{"allowed", app.DemoAllowed, 200},
		{"unauthenticated", app.DemoUnauthenticated, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(r.banner, "-d '"+tc.request+"' "+r.app.GRPCAddr()+" envoy.service.auth.v3.Authorization/Check") {
				t.Errorf("banner does not show the grpcurl command for %s:\n%s", tc.name, r.banner)
			}
			req := &authv3.CheckRequest{}
			if err := protojson.Unmarshal([]byte(tc.request), req); err != nil {
				t.Fatal(err)
			}
			resp, err := authv3.NewAuthorizationClient(r.conn).Check(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			got := 200
			if dr := resp.GetDeniedResponse(); dr != nil {
				got = int(dr.GetStatus().GetCode())
			} else if resp.GetStatus().GetCode() != int32(codes.OK) {
				t.Errorf("allowed response with gRPC status %v", resp.GetStatus())
			}
			if got != tc.wantHTTP {
				t.Errorf("HTTP status %d, want %d (response %v)", got, tc.wantHTTP, resp)
			}
			if got == 200 && !slices.Equal(resp.GetOkResponse().GetHeadersToRemove(), []string{"x-api-key"}) {
				t.Errorf("headers_to_remove %q, want the demo key's x-api-key (authz.credentials.hide is on by default)",
					resp.GetOkResponse().GetHeadersToRemove())
			}
		})
	}

	admin := "http://" + r.app.AdminAddr()
	if code, body := get(t, admin+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, admin+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q", code, body)
	}
	_, metrics := get(t, admin+"/metrics")
	for _, want := range []string{
		`tollgate_authz_decisions_total{status="200"} 1`,
		`tollgate_authz_decisions_total{status="401"} 1`,
		`tollgate_authz_check_duration_seconds_count 2`,
		`tollgate_reloads_total{component="policy",result="success"} 1`,
		`tollgate_reloads_total{component="policy",result="failure"} 0`,
		`tollgate_memory_store_evicted_total 0`, // the demo's store is memory
		`tollgate_memory_store_refused_total 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	code, body := get(t, admin+"/status")
	var st struct {
		Ready  bool `json:"ready"`
		Policy struct {
			Revision string   `json:"revision"`
			Sources  []string `json:"sources"`
		} `json:"policy"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 || !st.Ready || st.Policy.Revision != r.app.Engine().Revision() {
		t.Errorf("/status = %d %s (err %v)", code, body, err)
	}
}

// TestCredentialsConfig: authz.credentials reaches the authz service:
// with hide: false the upstream gets the key; the headers read are the
// configured ones.
func TestCredentialsConfig(t *testing.T) {
	cfg, err := config.Parse("tollgate.yaml", []byte("authz:\n  credentials: {headers: [X-Customer-Key], bearer: false, hide: false}\n"))
	if err != nil {
		t.Fatal(err)
	}
	shown := testConfig()
	shown.Authz = cfg.Authz
	client := authv3.NewAuthorizationClient(start(t, shown).conn)
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal([]byte(app.DemoAllowed), req); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if ok := resp.GetOkResponse(); ok == nil || len(ok.GetHeadersToRemove()) != 0 {
		t.Errorf("hide: false: %v, want allowed with nothing removed", resp)
	}

	hidden := testConfig()
	hidden.Authz.Credentials.Headers = &[]string{"x-customer-key"}
	f := false
	hidden.Authz.Credentials.Bearer = &f
	client = authv3.NewAuthorizationClient(start(t, hidden).conn)
	req.Attributes.Request.Http.Headers["x-customer-key"] = "tg_other" // not the demo's, but the credential here
	resp, err = client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetOkResponse().GetHeadersToRemove(); !slices.Equal(got, []string{"x-customer-key"}) {
		t.Errorf("headers_to_remove %q, want [x-customer-key], the configured header (x-api-key is not read)", got)
	}
}

// TestShutdownDrains: when the context ends (SIGTERM in main), readiness
// flips first, the call in flight completes, and Run returns nil.
// hook is an HTTP endpoint the hook.rego policy calls: arrived receives
// one value per call that reached it, and each call waits until release is
// closed (or the caller gives up).
type hook struct {
	url     string
	arrived chan struct{}
	release chan struct{}
}

func newHook(t *testing.T) *hook {
	t.Helper()
	h := &hook{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.arrived <- struct{}{}
		select {
		case <-h.release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	h.url = srv.URL
	return h
}

// wait returns when a policy evaluation has called the hook.
func (h *hook) wait(t *testing.T) {
	t.Helper()
	select {
	case <-h.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the policy never called the hook")
	}
}

func hookRequest(url string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: map[string]string{"x-hook": url}},
	}}}
}

// TestShutdownDrains: a call being evaluated when shutdown starts is
// answered, /readyz says 503 while it drains, and Run then returns nil.
func TestShutdownDrains(t *testing.T) {
	cfg := testConfig()
	cfg.Policy.Paths = []string{"testdata/hook.rego"}
	r := start(t, cfg)
	h := newHook(t)
	admin := "http://" + r.app.AdminAddr()
	if code, _ := get(t, admin+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d before shutdown, want 200", code)
	}

	client := authv3.NewAuthorizationClient(r.conn)
	inflight := make(chan error, 1)
	go func() {
		resp, err := client.Check(context.Background(), hookRequest(h.url))
		if err == nil && resp.GetOkResponse() == nil {
			err = fmt.Errorf("in-flight call denied: %v", resp.GetDeniedResponse())
		}
		inflight <- err
	}()
	h.wait(t) // the call is being evaluated
	r.cancel()

	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _ := get(t, admin+"/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz never reported 503 during the drain")
		}
		runtime.Gosched()
	}
	select {
	case err := <-r.done:
		t.Fatalf("Run returned (%v) while a call was in flight", err)
	default:
	}
	close(h.release)
	if err := <-inflight; err != nil {
		t.Errorf("in-flight call failed during the drain: %v", err)
	}
}

// TestShutdownOneDeadline: a drain that cannot finish (a gRPC call stuck
// in the policy, an admin request stuck reading its body) ends within one
// shutdown_timeout shared by every listener, not one per listener.
func TestShutdownOneDeadline(t *testing.T) {
	const timeout = time.Second
	cfg := testConfig()
	cfg.Policy.Paths = []string{"testdata/hook.rego"}
	cfg.ShutdownTimeout = config.Duration(timeout)
	cfg.Admin.Token = "t0ken"
	r := start(t, cfg)
	h := newHook(t)
	defer close(h.release)

	client := authv3.NewAuthorizationClient(r.conn)
	stuck := make(chan error, 1)
	go func() {
		_, err := client.Check(context.Background(), hookRequest(h.url))
		stuck <- err
	}()
	h.wait(t)
	// An admin request whose body never comes keeps its connection active.
	conn, err := net.Dial("tcp", r.app.AdminAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprint(conn, "POST /v1/accounts/acme/credits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\n"+
		"Idempotency-Key: k\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}

	begin := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		close(r.done)
	case <-time.After(10 * timeout):
		t.Fatal("Run did not return")
	}
	// Twice the timeout is what a timeout per listener would take.
	if took := time.Since(begin); took < timeout || took > timeout*17/10 {
		t.Errorf("shutdown took %v, want about one shutdown_timeout (%v)", took, timeout)
	}
	if err := <-stuck; status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Errorf("stuck call: %v, want it cut off (UNAVAILABLE or CANCELED)", err)
	}
}

func TestNewFailsCleanly(t *testing.T) {
	cfg := testConfig()
	cfg.Policy.Paths = []string{"testdata/does-not-exist.rego"}
	if _, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test"); err == nil ||
		!strings.Contains(err.Error(), "does-not-exist.rego") {
		t.Errorf("New error = %v, want it to name the missing file", err)
	}
	cfg = testConfig()
	cfg.GRPC.Address = "203.0.113.1:1" // not an address of this machine: bind fails
	if _, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test"); err == nil ||
		!strings.Contains(err.Error(), "grpc.address") {
		t.Errorf("New error = %v, want it to name grpc.address", err)
	}
	cfg = testConfig()
	cfg.DecisionLogs.Enabled, cfg.DecisionLogs.Sink = true, "file"
	cfg.DecisionLogs.Path = filepath.Join(t.TempDir(), "no-such-dir", "decisions.jsonl")
	if _, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test"); err == nil ||
		!strings.Contains(err.Error(), "decision_logs.path") {
		t.Errorf("New error = %v, want it to name decision_logs.path", err)
	}
	cfg = testConfig()
	cfg.GRPC.Address = "203.0.113.1:1"
	// Watched policy files: their watches are released too (goleak, in
	// TestMain, would see the watcher's goroutine).
	cfg.Policy.Paths = []string{"testdata/hook.rego"}
	if _, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test"); err == nil ||
		!strings.Contains(err.Error(), "grpc.address") {
		t.Errorf("New error = %v, want it to name grpc.address", err)
	}

	// The last step fails (admin.address is taken) after everything else
	// was provisioned: the gRPC listeners it bound are released (their
	// ports can be bound again), and goleak finds no goroutine left.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	grpcPort, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr := grpcPort.Addr().String()
	grpcPort.Close()
	cfg = testConfig()
	cfg.GRPC.Address = grpcAddr
	cfg.RateLimit.Address = "127.0.0.1:0"
	cfg.Admin.Address = taken.Addr().String()
	cfg.RateLimit.ConfigPaths = []string{"../../ratelimit/rls/testdata/rls/config.yaml"}
	if _, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test"); err == nil ||
		!strings.Contains(err.Error(), "admin.address") {
		t.Fatalf("New error = %v, want it to name admin.address", err)
	}
	again, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		t.Fatalf("grpc.address %s still bound after New failed: %v", grpcAddr, err)
	}
	again.Close()
}

// TestLimitsAndCreditsEndToEnd: the demo plans' limits are enforced through
// the real server, and the admin API tops up and shows accounts.
func TestLimitsAndCreditsEndToEnd(t *testing.T) {
	cfg := testConfig()
	cfg.Admin.Token = "s3cret"
	r := start(t, cfg)
	ctx := context.Background()
	client := authv3.NewAuthorizationClient(r.conn)

	// Free plan: 5/s with a burst of 10; the 11th request at once is a 429.
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/invoices", Headers: map[string]string{"x-api-key": "tg_demo_free_0001"}},
	}}}
	var last *authv3.CheckResponse
	for i := range 11 {
		resp, err := client.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if i < 10 && resp.GetOkResponse() == nil {
			t.Fatalf("request %d of the burst denied: %v", i+1, resp)
		}
		last = resp
	}
	denied := last.GetDeniedResponse()
	if denied.GetStatus().GetCode() != 429 {
		t.Fatalf("11th request: %v, want 429", last)
	}
	headers := map[string]string{}
	for _, h := range denied.GetHeaders() {
		headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if headers["retry-after"] != "1" || !strings.HasPrefix(headers["ratelimit"], `"per_second";r=0;`) {
		t.Errorf("429 headers %v, want retry-after 1 and the per_second RateLimit", headers)
	}

	admin := "http://" + r.app.AdminAddr()
	post := func(token, key string) (int, string) {
		return adminCall(t, http.MethodPost, admin+"/v1/accounts/acme/credits", token, key, `{"amount": 250}`)
	}
	if code, body := post("wrong", "k1"); code != 401 {
		t.Errorf("wrong token: %d %s", code, body)
	}
	for range 2 {
		if code, body := post("s3cret", "k1"); code != 200 || !strings.Contains(body, `"balance":250`) {
			t.Errorf("top-up: %d %s, want 200 and balance 250 (the replay credits nothing)", code, body)
		}
	}
	code, body := adminCall(t, http.MethodGet, admin+"/v1/accounts/initech", "s3cret", "", "")
	if code != 200 || !strings.Contains(body, `"name":"monthly"`) || !strings.Contains(body, `"used":10`) {
		t.Errorf("GET account: %d %s, want initech's monthly quota with 10 used", code, body)
	}
}

// TestRateLimitService: the RLS is served on the gRPC listener with the
// configured envoyproxy/ratelimit files.
func TestRateLimitService(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimit.ConfigPaths = []string{"../../examples/ratelimit-migration/config.yaml"}
	r := start(t, cfg)
	ctx := context.Background()
	hc := healthpb.NewHealthClient(r.conn)
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.ratelimit.v3.RateLimitService"}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("RLS health: %v %v", resp, err)
	}
	req := &rlsv3.RateLimitRequest{Domain: "tollgate", Descriptors: []*commonv3.RateLimitDescriptor{{
		Entries: []*commonv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "203.0.113.7"}},
	}}}
	client := rlsv3.NewRateLimitServiceClient(r.conn)
	over := 0
	for range 100 {
		resp, err := client.ShouldRateLimit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Statuses[0].GetCurrentLimit().GetName() != "per_ip" {
			t.Fatalf("status %v, want the per_ip limit of the example config", resp.Statuses[0])
		}
		if resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
			over++
		}
	}
	if over == 0 {
		t.Error("100 hits from one address (limit 20/s) were all OK")
	}
	_, body := get(t, "http://"+r.app.AdminAddr()+"/status")
	if !strings.Contains(body, `"domains": [`) || !strings.Contains(body, "tollgate") {
		t.Errorf("/status lacks the rate limit config: %s", body)
	}
}

// TestXDSServed: with xds.routes_file set, the gRPC listener serves ADS
// and /status shows the snapshot version.
func TestXDSServed(t *testing.T) {
	cfg := testConfig()
	cfg.XDS.RoutesFile = "../../examples/xds/routes.yaml"
	r := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := sotw.NewADSClient(ctx, &corev3.Node{Id: "envoy-1", Cluster: "edge"}, resource.ListenerType)
	if err := c.InitConnect(r.conn); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Fetch()
	if err != nil || len(resp.Resources) == 0 {
		t.Fatalf("LDS over ADS: %v %v", resp, err)
	}
	_, body := get(t, "http://"+r.app.AdminAddr()+"/status")
	if !strings.Contains(body, `"xds"`) || !strings.Contains(body, `"version"`) {
		t.Errorf("/status lacks the xDS snapshot: %s", body)
	}
}

// TestSeparateListeners: the RLS and xDS may each get an address of their
// own; ext_authz stays on grpc.address.
func TestSeparateListeners(t *testing.T) {
	cfg := testConfig()
	cfg.RateLimit.Address = "localhost:0" // another string than grpc.address: another listener
	cfg.XDS.Address = "[::1]:0"
	cfg.XDS.RoutesFile = "../../examples/xds/routes.yaml"
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		cfg.XDS.Address = "127.0.0.2:0" // no IPv6 loopback here
	} else {
		ln.Close()
	}
	r := start(t, cfg)
	ls := r.app.Listeners()
	if len(ls) != 3 || ls["ratelimit.address"] == ls["grpc.address"] || ls["xds.address"] == ls["grpc.address"] {
		t.Fatalf("listeners %v, want three distinct", ls)
	}
	ctx := context.Background()
	rlsConn, xdsConn := dialAddr(t, ls["ratelimit.address"]), dialAddr(t, ls["xds.address"])
	if _, err := rlsv3.NewRateLimitServiceClient(rlsConn).ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "d",
		Descriptors: []*commonv3.RateLimitDescriptor{{Entries: []*commonv3.RateLimitDescriptor_Entry{{Key: "k", Value: "v"}}}}}); err != nil {
		t.Errorf("RLS on its own listener: %v", err)
	}
	if _, err := rlsv3.NewRateLimitServiceClient(r.conn).ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "d"}); status.Code(err) != codes.Unimplemented {
		t.Errorf("RLS on grpc.address: %v, want Unimplemented", err)
	}
	c := sotw.NewADSClient(ctx, &corev3.Node{Id: "e"}, resource.ClusterType)
	if err := c.InitConnect(xdsConn); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Fetch(); err != nil || len(resp.Resources) == 0 {
		t.Errorf("CDS on xds.address: %v %v", resp, err)
	}
}

func dialAddr(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestWatchSwitches: policy.watch, ratelimit.watch and xds.watch turn
// watching off, each on its own; /status says which are watched, in the
// one shape every component shares.
func TestWatchSwitches(t *testing.T) {
	off := false
	for _, tt := range []struct {
		name string
		set  func(*config.Config)
		want map[string]bool
	}{
		{"default", func(*config.Config) {}, map[string]bool{"policy": true, "ratelimit": true, "xds": true}},
		{"policy.watch off", func(c *config.Config) { c.Policy.Watch = &off }, map[string]bool{"policy": false, "ratelimit": true, "xds": true}},
		{"ratelimit.watch off", func(c *config.Config) { c.RateLimit.Watch = &off }, map[string]bool{"policy": true, "ratelimit": false, "xds": true}},
		{"xds.watch off", func(c *config.Config) { c.XDS.Watch = &off }, map[string]bool{"policy": true, "ratelimit": true, "xds": false}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Policy.Paths = []string{"../../policies/demo"}
			cfg.RateLimit.ConfigPaths = []string{"../../examples/ratelimit-migration/config.yaml"}
			cfg.XDS.RoutesFile = "../../examples/xds/routes.yaml"
			tt.set(cfg)
			r := start(t, cfg)
			_, body := get(t, "http://"+r.app.AdminAddr()+"/status")
			type status struct {
				Watching bool     `json:"watching"`
				Revision string   `json:"revision"`
				Files    []string `json:"files"`
				Reloads  int      `json:"reloads"`
			}
			var doc struct {
				Policy    status `json:"policy"`
				RateLimit status `json:"ratelimit"`
				XDS       status `json:"xds"`
			}
			if err := json.Unmarshal([]byte(body), &doc); err != nil {
				t.Fatal(err)
			}
			got := map[string]status{"policy": doc.Policy, "ratelimit": doc.RateLimit, "xds": doc.XDS}
			for component, want := range tt.want {
				if st := got[component]; st.Watching != want || st.Revision == "" || len(st.Files) == 0 || st.Reloads != 1 {
					t.Errorf("/status %s = %+v, want watching %v, a revision, files, 1 reload", component, st, want)
				}
			}
		})
	}
}

// TestDecisionLogs: with decision_logs on (a file), every Check and
// ShouldRateLimit has its record, the call still draining when shutdown
// began included, and the records are in the file when Run returns.
func TestDecisionLogs(t *testing.T) {
	cfg := testConfig()
	cfg.Policy.Paths = []string{"testdata/hook.rego"}
	cfg.DecisionLogs.Enabled = true
	cfg.DecisionLogs.Sink = "file"
	cfg.DecisionLogs.Path = filepath.Join(t.TempDir(), "decisions.jsonl")
	cfg.Authz.Credentials.Headers = &[]string{"X-Customer-Key"} // masked in the records like x-api-key
	r := start(t, cfg)
	h := newHook(t)
	ctx := context.Background()
	if _, err := rlsv3.NewRateLimitServiceClient(r.conn).ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "d",
		Descriptors: []*commonv3.RateLimitDescriptor{{Entries: []*commonv3.RateLimitDescriptor_Entry{{Key: "k", Value: "v"}}}}}); err != nil {
		t.Fatal(err)
	}
	_, metrics := get(t, "http://"+r.app.AdminAddr()+"/metrics")
	for _, m := range []string{"tollgate_decision_logs_written_total", `tollgate_decision_logs_dropped_total{reason="buffer_full"} 0`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	client := authv3.NewAuthorizationClient(r.conn)
	inflight := make(chan error, 1)
	go func() {
		req := hookRequest(h.url)
		req.Attributes.Request.Http.Path = "/draining?api_key=secret"
		req.Attributes.Request.Http.Headers["x-request-id"] = "req-draining"
		req.Attributes.Request.Http.Headers["x-customer-key"] = "secret-key"
		_, err := client.Check(ctx, req)
		inflight <- err
	}()
	h.wait(t)
	r.cancel() // shutdown begins while the Check is being evaluated
	for code := 0; code != http.StatusServiceUnavailable; runtime.Gosched() {
		code, _ = get(t, "http://"+r.app.AdminAddr()+"/readyz")
	}
	close(h.release)
	if err := <-inflight; err != nil {
		t.Fatal(err)
	}
	if err := <-r.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	close(r.done)

	b, err := os.ReadFile(cfg.DecisionLogs.Path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("the file holds %d records, want 2 (one ShouldRateLimit, one Check):\n%s", len(lines), b)
	}
	if !strings.Contains(lines[0], `"service":"ratelimit"`) || !strings.Contains(lines[1], `"request_id":"req-draining"`) ||
		!strings.Contains(lines[1], `"path":"/draining"`) || strings.Contains(string(b), "secret") {
		t.Errorf("records:\n%s\nwant the RLS call's, then the draining Check's (path without its query, x-customer-key masked)", b)
	}
}
