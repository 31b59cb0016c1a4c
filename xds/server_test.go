package xds_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcxds "google.golang.org/grpc/xds"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/reload/reloadtest"
	"github.com/tollgate-dev/tollgate/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// routesFile is a two-service API whose orders cluster points at addr.
func routesFile(addr string, withAccounts bool) string {
	s := `listeners:
  - name: public
    address: 0.0.0.0:8080
    virtual_hosts:
      - name: api
        domains: ["*"]
        routes:
          - name: orders
            match: {prefix: /orders}
            cluster: orders
clusters:
  - name: orders
    endpoints: ["` + addr + `"]
`
	if withAccounts {
		s += `  - name: accounts
    endpoints: ["127.0.0.1:9999"]
`
	}
	return s
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startXDS serves the routes file over ADS on a loopback listener, with
// the file watched, and returns its address.
func startXDS(t *testing.T, file string) (*xds.Server, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := xds.New(ctx, xds.Options{Files: map[string]string{xds.DefaultFleet: file}, Watch: true})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Reloader().Run(ctx) }()
	t.Cleanup(func() { cancel(); g.Stop(); <-done })
	return srv, ln.Addr().String()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

var node = &corev3.Node{Id: "envoy-1", Cluster: "edge"}

// TestADSStateOfTheWorld: go-control-plane's ADS client receives all four
// resource types and ACKs; editing the file pushes a new version; a broken
// edit pushes nothing.
func TestADSStateOfTheWorld(t *testing.T) {
	file := filepath.Join(t.TempDir(), "routes.yaml")
	writeFile(t, file, routesFile("10.0.0.1:8080", false))
	srv, addr := startXDS(t, file)
	conn := dial(t, addr)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	clients := map[string]sotw.ADSClient{}
	first := map[string]string{}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		c := sotw.NewADSClient(ctx, node, typ)
		if err := c.InitConnect(conn); err != nil {
			t.Fatal(err)
		}
		resp, err := c.Fetch()
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if len(resp.Resources) == 0 {
			t.Errorf("%s: no resources", typ)
		}
		if err := c.Ack(); err != nil {
			t.Fatal(err)
		}
		clients[typ], first[typ] = c, fmt.Sprint(resp.Resources)
	}

	// A change: the orders endpoint moves; the new version reaches the client.
	writeFile(t, file, routesFile("10.0.0.2:8080", false))
	resp, err := clients[resource.EndpointType].Fetch()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(resp.Resources); got == first[resource.EndpointType] || !strings.Contains(got, "10.0.0.2") || strings.Contains(got, "10.0.0.1") {
		t.Errorf("after the edit the endpoints are %s, want 10.0.0.2 only", got)
	}
	_ = clients[resource.EndpointType].Ack()

	// A broken edit (a route to an unknown cluster) pushes nothing: once it
	// is refused, the snapshot in force is the same and no response came.
	before := srv.Reloader().Status()
	got := make(chan *sotw.Response, 1)
	go func() {
		if r, err := clients[resource.EndpointType].Fetch(); err == nil {
			got <- r
		}
	}()
	writeFile(t, file, strings.Replace(routesFile("10.0.0.3:8080", false), "cluster: orders\n", "cluster: nowhere\n", 1))
	reloadtest.WaitFor(t, "the broken edit to be refused", func() bool { return srv.Reloader().Status().Failures == before.Failures+1 })
	if st := srv.Reloader().Status(); st.Revision != before.Revision || !strings.Contains(st.LastError, "routes.yaml:") {
		t.Errorf("after a broken edit: revision %s (was %s), last_error %q; want the last good snapshot kept, file:line", st.Revision, before.Revision, st.LastError)
	}
	select {
	case r := <-got:
		t.Errorf("a broken file pushed %v", r.Resources)
	default:
	}
}

// TestRoutesIgnoreUnrelatedFiles: a log file written next to the routes
// file causes no reload (it once caused one every 100 ms); the next real
// edit causes exactly one.
func TestRoutesIgnoreUnrelatedFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "routes.yaml")
	writeFile(t, file, routesFile("10.0.0.1:8080", false))
	srv, _ := startXDS(t, file)
	before := srv.Reloader().Status()

	reloadtest.WriteUnrelated(t, 5, filepath.Join(dir, "tollgate.log"))
	writeFile(t, file, routesFile("10.0.0.2:8080", false))
	reloadtest.WaitFor(t, "the edit to be loaded", func() bool { return srv.Reloader().Status().Revision != before.Revision })
	reloadtest.OneReload(t, before, srv.Reloader().Status())
}

// TestADSDelta: a delta subscriber receives the clusters, then sees one
// removed when it is removed from the file.
func TestADSDelta(t *testing.T) {
	file := filepath.Join(t.TempDir(), "routes.yaml")
	writeFile(t, file, routesFile("10.0.0.1:8080", true))
	_, addr := startXDS(t, file)
	conn := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range resp.GetResources() {
		c := &clusterv3.Cluster{}
		if err := r.GetResource().UnmarshalTo(c); err != nil {
			t.Fatal(err)
		}
		names[c.GetName()] = true
	}
	if !names["orders"] || !names["accounts"] {
		t.Fatalf("delta clusters %v, want orders and accounts", names)
	}
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, routesFile("10.0.0.1:8080", false))
	for {
		resp, err = stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetRemovedResources()) > 0 {
			break
		}
		_ = stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce()})
	}
	if fmt.Sprint(resp.GetRemovedResources()) != "[accounts]" {
		t.Errorf("removed %v, want [accounts]", resp.GetRemovedResources())
	}
}

// backend is a gRPC server whose health service reports the service "who"
// as status: a way to tell two backends apart.
func backend(t *testing.T, status healthpb.HealthCheckResponse_ServingStatus) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("who", status)
	healthpb.RegisterHealthServer(g, h)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// TestProxylessGRPC: a grpc-go client dials xds:///payments.example through
// a bootstrap pointing at Tollgate, reaches the backend the routes file
// names, and follows the endpoint when the file moves it.
func TestProxylessGRPC(t *testing.T) {
	a := backend(t, healthpb.HealthCheckResponse_SERVING)
	b := backend(t, healthpb.HealthCheckResponse_NOT_SERVING)
	file := filepath.Join(t.TempDir(), "routes.yaml")
	grpcFile := func(addr string) string {
		return `clusters:
  - name: payments
    endpoints: ["` + addr + `"]
    protocol: http2
grpc_services:
  - name: payments.example
    cluster: payments
`
	}
	writeFile(t, file, grpcFile(a))
	_, addr := startXDS(t, file)

	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "grpc-client-1", "cluster": "payments-clients"}
	}`, addr)
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///payments.example", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	who := func() healthpb.HealthCheckResponse_ServingStatus {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "who"})
		if err != nil {
			t.Fatalf("Check through xds:///payments.example: %v", err)
		}
		return resp.GetStatus()
	}
	if got := who(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("reached %v, want backend A (SERVING)", got)
	}
	writeFile(t, file, grpcFile(b))
	deadline := time.Now().Add(10 * time.Second)
	for who() != healthpb.HealthCheckResponse_NOT_SERVING {
		if time.Now().After(deadline) {
			t.Fatal("traffic did not move to backend B after the routes file moved the endpoint")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNACKCounted: a rejected update is logged and counted.
func TestNACKCounted(t *testing.T) {
	file := filepath.Join(t.TempDir(), "routes.yaml")
	writeFile(t, file, routesFile("10.0.0.1:8080", false))
	reg := prometheus.NewPedanticRegistry()
	srv, err := xds.New(context.Background(), xds.Options{Files: map[string]string{xds.DefaultFleet: file}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := sotw.NewADSClient(ctx, node, resource.ClusterType)
	if err := c.InitConnect(dial(t, ln.Addr().String())); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(); err != nil {
		t.Fatal(err)
	}
	if err := c.Nack("cluster orders: unknown field"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "tollgate_xds_nacks_total" && mf.GetMetric()[0].GetCounter().GetValue() == 1 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("tollgate_xds_nacks_total did not count the NACK")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestREADMEExample: the routes file shown in the README is valid and the
// examples/xds file builds, so the documentation cannot rot.
func TestREADMEExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i := strings.Index(s, "A full routes file")
	if i < 0 {
		t.Fatal("README has no routes file example")
	}
	start := strings.Index(s[i:], "```yaml\n") + i + len("```yaml\n")
	end := strings.Index(s[start:], "```") + start
	f, err := xds.Parse("README.md", []byte(s[start:end]))
	if err != nil {
		t.Fatalf("README example: %v", err)
	}
	if _, err := xds.Build(f, ""); err != nil {
		t.Fatalf("README example: %v", err)
	}
	if _, err := xds.BuildFile("../examples/xds/routes.yaml"); err != nil {
		t.Fatalf("examples/xds/routes.yaml: %v", err)
	}
}

// TestFleets: a node whose cluster has a routes file of its own gets it;
// any other node gets the default file.
func TestFleets(t *testing.T) {
	dir := t.TempDir()
	def, canary := filepath.Join(dir, "default.yaml"), filepath.Join(dir, "canary.yaml")
	writeFile(t, def, routesFile("10.0.0.1:8080", false))
	writeFile(t, canary, routesFile("10.0.0.9:8080", false))
	srv, err := xds.New(context.Background(), xds.Options{Files: map[string]string{xds.DefaultFleet: def, "canary": canary}})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	conn := dial(t, ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for cluster, want := range map[string]string{"canary": "10.0.0.9", "edge": "10.0.0.1", "": "10.0.0.1"} {
		c := sotw.NewADSClient(ctx, &corev3.Node{Id: "n-" + cluster, Cluster: cluster}, resource.EndpointType)
		if err := c.InitConnect(conn); err != nil {
			t.Fatal(err)
		}
		resp, err := c.Fetch()
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(resp.Resources); !strings.Contains(got, want) {
			t.Errorf("node cluster %q got endpoints %s, want %s", cluster, got, want)
		}
	}
	if st := srv.Reloader().Status().Detail.(xds.Detail); len(st.Fleets) != 2 || st.Fleets["canary"].Version == st.Fleets[""].Version {
		t.Errorf("status %+v, want two fleets with different versions", st)
	}
}
