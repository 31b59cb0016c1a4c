package xds

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tollgate-dev/tollgate/internal/envoyschema"
)

func buildFile(t testing.TB, file string) *Resources {
	t.Helper()
	f, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Build(f, "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestResourcesValid checks every resource built from testdata/valid:
// ValidateAll, the same inside every Any, no deprecated field or enum value,
// and a snapshot that go-control-plane finds consistent.
func TestResourcesValid(t *testing.T) {
	for _, file := range files(t, "valid/*.yaml") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			r := buildFile(t, file)
			for _, x := range r.all() {
				what := fmt.Sprintf("%s %q", x.typeURL, x.name)
				if err := x.msg.(validator).ValidateAll(); err != nil {
					t.Errorf("%s: ValidateAll: %v", what, err)
				}
				if err := envoyschema.CheckAnys(x.msg.ProtoReflect(), what); err != nil {
					t.Error(err)
				}
				if err := envoyschema.CheckDeprecated(x.msg.ProtoReflect(), what); err != nil {
					t.Error(err)
				}
			}
			s, err := r.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Consistent(); err != nil {
				t.Errorf("Consistent() = %v", err)
			}
			for typ, n := range map[resource.Type]int{
				resource.ListenerType: len(r.Listeners),
				resource.RouteType:    len(r.Routes),
				resource.ClusterType:  len(r.Clusters),
				resource.EndpointType: len(r.Endpoints),
			} {
				if got := len(s.GetResources(typ)); got != n {
					t.Errorf("snapshot has %d %s, want %d", got, typ, n)
				}
				if got, want := s.GetVersion(typ), mustVersion(t, r); got != want {
					t.Errorf("snapshot version of %s = %q, want %q", typ, got, want)
				}
			}
		})
	}
}

func mustVersion(t testing.TB, r *Resources) string {
	t.Helper()
	v, err := r.Version()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestFilters checks the HTTP filters of every listener: ext_authz,
// ratelimit, router in that order on Envoy listeners (with RDS over ADS),
// only the router on proxyless gRPC API listeners (with an inline route
// configuration).
func TestFilters(t *testing.T) {
	for _, file := range files(t, "valid/*.yaml") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			f, err := Load(file)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Build(f, "")
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(r.Listeners), len(f.Listeners)+len(f.GRPCServices); got != want {
				t.Fatalf("%d listeners, want %d", got, want)
			}
			for _, l := range r.Listeners {
				if l.GetApiListener() != nil {
					hcm := unpackHCM(t, l.GetApiListener().GetApiListener())
					if got, want := filterNames(hcm), []string{FilterRouter}; !slices.Equal(got, want) {
						t.Errorf("API listener %q filters = %v, want %v", l.GetName(), got, want)
					}
					if got, want := hcm.GetRouteConfig().GetName(), GRPCRouteConfigPrefix+l.GetName(); got != want {
						t.Errorf("API listener %q route config = %q, want %q", l.GetName(), got, want)
					}
					if len(l.GetFilterChains()) != 0 || l.GetAddress() != nil {
						t.Errorf("API listener %q has more than a name and api_listener", l.GetName())
					}
					continue
				}
				hcm := unpackHCM(t, l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
				if got, want := filterNames(hcm), []string{FilterExtAuthz, FilterRateLimit, FilterRouter}; !slices.Equal(got, want) {
					t.Errorf("listener %q filters = %v, want %v", l.GetName(), got, want)
				}
				if hcm.GetRds().GetConfigSource().GetAds() == nil || hcm.GetRds().GetRouteConfigName() != l.GetName() {
					t.Errorf("listener %q: rds = %v, want route config %q over ADS", l.GetName(), hcm.GetRds(), l.GetName())
				}
			}
		})
	}
}

func unpackHCM(t *testing.T, a *anypb.Any) *hcmv3.HttpConnectionManager {
	t.Helper()
	hcm := &hcmv3.HttpConnectionManager{}
	if err := a.UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	return hcm
}

func filterNames(hcm *hcmv3.HttpConnectionManager) []string {
	var out []string
	for _, f := range hcm.GetHttpFilters() {
		out = append(out, f.GetName())
	}
	return out
}

// TestVersionStable checks that the version depends only on the file:
// equal across Builds (map order and all), different after any change.
func TestVersionStable(t *testing.T) {
	file := filepath.Join("testdata", "valid", "two-services.yaml")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	version := func(b []byte) string {
		t.Helper()
		f, err := Parse(file, b)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Build(f, "")
		if err != nil {
			t.Fatal(err)
		}
		s, err := r.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		return s.GetVersion(resource.ListenerType)
	}
	first := version(data)
	if len(first) != 16 {
		t.Errorf("version %q has %d characters, want 16", first, len(first))
	}
	for i := range 20 {
		if got := version(data); got != first {
			t.Fatalf("build %d: version %q, want %q as in the first build", i+2, got, first)
		}
	}
	changes := []struct{ name, old, new string }{
		{"route timeout", "timeout: 15s", "timeout: 16s"},
		{"context extension", `price: "2"`, `price: "3"`},
		{"endpoint", "10.0.0.6:8080", "10.0.0.7:8080"},
		{"tollgate timeout", "timeout: 250ms", "timeout: 300ms"},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			changed := strings.Replace(string(data), c.old, c.new, 1)
			if changed == string(data) {
				t.Fatalf("%q is not in %s", c.old, file)
			}
			if got := version([]byte(changed)); got == first {
				t.Errorf("version %q did not change after %s", got, c.name)
			}
		})
	}
}

// TestBuildErrors covers what Build refuses in a File made in Go, and names.
func TestBuildErrors(t *testing.T) {
	good := func() *File {
		return &File{
			Name: "go",
			Listeners: []Listener{{
				Name: "l", Address: "0.0.0.0:80",
				VirtualHosts: []VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []Route{
					{Name: "r", Match: Match{Prefix: "/"}, Cluster: "c"},
				}}},
			}},
			Clusters:     []Cluster{{Name: "c", Endpoints: []Endpoint{{Host: "10.0.0.1", Port: 80}}}},
			GRPCServices: []GRPCService{{Name: "g", Cluster: "c"}},
		}
	}
	if _, err := Build(good(), ""); err != nil {
		t.Fatalf("Build(good) = %v", err)
	}
	tests := []struct {
		name      string
		tollgate  string
		change    func(f *File)
		wantError string
	}{
		{"nil file", "", nil, "no routes file"},
		{"tollgate cluster name taken", "c", func(*File) {}, `cluster "c": the name is taken by the cluster that reaches Tollgate`},
		{"unknown cluster", "", func(f *File) { f.Listeners[0].VirtualHosts[0].Routes[0].Cluster = "x" },
			`listener "l": virtual host "v": route "r": cluster "x" is not defined`},
		{"grpc unknown cluster", "", func(f *File) { f.GRPCServices[0].Cluster = "x" },
			`grpc_services entry "g": route 1: cluster "x" is not defined`},
		{"grpc DNS cluster", "", func(f *File) { f.Clusters[0].Endpoints[0].Host = "a.internal" },
			`grpc_services entry "g": route 1: cluster "c" has DNS endpoints`},
		{"listener and grpc service names", "", func(f *File) { f.GRPCServices[0].Name = "l" },
			`grpc_services entry "l": the name is taken by listener "l"`},
		{"bad listener address", "", func(f *File) { f.Listeners[0].Address = "nowhere" },
			`listener "l": address "nowhere" is not ip:port`},
		{"empty domains", "", func(f *File) { f.Listeners[0].VirtualHosts[0].Domains = nil },
			`listener "l": route configuration: virtual host "v": invalid VirtualHost.Domains`},
		{"route invalid for Envoy", "", func(f *File) {
			f.Listeners[0].VirtualHosts[0].Routes[0].Match.Headers = []HeaderMatch{{Name: "x\x00y", Value: "1"}}
		}, `listener "l": route configuration: virtual host "v": route "r": invalid Route.Match`},
		{"bad lb policy", "", func(f *File) { f.Clusters[0].LBPolicy = "fastest" },
			`cluster "c": lb_policy "fastest" is not one of`},
		{"bad tollgate address", "", func(f *File) { f.Tollgate.Address = "0.0.0.0:9191" },
			`tollgate cluster "tollgate": address "0.0.0.0:9191"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f *File
			if tt.change != nil {
				f = good()
				tt.change(f)
			}
			_, err := Build(f, tt.tollgate)
			if err == nil || !strings.Contains(err.Error(), tt.wantError) {
				t.Fatalf("Build() error = %v, want one containing %q", err, tt.wantError)
			}
		})
	}
}

// TestBuildTollgateClusterName checks that the filters use the cluster
// name given to Build, and that the cluster exists.
func TestBuildTollgateClusterName(t *testing.T) {
	f, err := Load(filepath.Join("testdata", "valid", "minimal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Build(f, "tollgate_authz")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(r.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == "tollgate_authz" }) {
		t.Errorf("no cluster tollgate_authz among %d clusters", len(r.Clusters))
	}
	js, err := Render(r)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(js), `"cluster_name": "tollgate_authz"`); got != 4 {
		t.Errorf("tollgate_authz is named %d times as cluster_name, want 4 (ext_authz, ratelimit, the settle access log, load assignment)", got)
	}
}

// TestSnapshotInconsistent checks that Snapshot refuses resources whose
// references do not match (here: a route configuration nobody uses).
func TestSnapshotInconsistent(t *testing.T) {
	r := buildFile(t, filepath.Join("testdata", "valid", "minimal.yaml"))
	r.Listeners = []*listenerv3.Listener{}
	if _, err := r.Snapshot(); err == nil || !strings.Contains(err.Error(), "inconsistent") {
		t.Fatalf("Snapshot() error = %v, want an inconsistent snapshot", err)
	}
}

// TestProxylessGRPCRequirements checks what grpc-go's xDS client demands of
// the resources behind an API listener (it NACKs or ignores the rest;
// grpc-go's own validation is internal, so it is restated here).
func TestProxylessGRPCRequirements(t *testing.T) {
	r := buildFile(t, filepath.Join("testdata", "valid", "grpc-proxyless.yaml"))
	used := map[string]bool{}
	for _, l := range r.Listeners {
		hcm := unpackHCM(t, l.GetApiListener().GetApiListener())
		if hcm.GetXffNumTrustedHops() != 0 || len(hcm.GetOriginalIpDetectionExtensions()) != 0 {
			t.Errorf("API listener %q sets xff_num_trusted_hops or original_ip_detection_extensions", l.GetName())
		}
		if hcm.GetRouteConfig() == nil {
			t.Fatalf("API listener %q has no inline route configuration", l.GetName())
		}
		for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				used[rt.GetRoute().GetCluster()] = true
			}
		}
	}
	for _, c := range r.Clusters {
		if !used[c.GetName()] {
			continue
		}
		if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			t.Errorf("cluster %q: type %v, want EDS over ADS", c.GetName(), c.GetType())
		}
		switch c.GetLbPolicy() {
		case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_RING_HASH, clusterv3.Cluster_LEAST_REQUEST:
		default:
			t.Errorf("cluster %q: lb_policy %v, which grpc-go refuses", c.GetName(), c.GetLbPolicy())
		}
	}
	for _, cla := range r.Endpoints {
		for _, loc := range cla.GetEndpoints() {
			if loc.GetLocality() == nil {
				t.Errorf("endpoints %q: a locality without ID, which grpc-go NACKs", cla.GetClusterName())
			}
			if loc.GetLoadBalancingWeight().GetValue() == 0 {
				t.Errorf("endpoints %q: a locality without weight, which grpc-go ignores", cla.GetClusterName())
			}
		}
	}
}

// TestListenersLogToTollgate: every generated HTTP listener sends the
// access log entries of requests carrying a reservation to Tollgate, over
// the cluster ext_authz uses; proxyless gRPC listeners (no ext_authz) do
// not.
func TestListenersLogToTollgate(t *testing.T) {
	r := buildFile(t, filepath.Join("testdata", "valid", "everything.yaml"))
	checked := 0
	for _, l := range r.Listeners {
		if l.GetApiListener() != nil {
			if hcm := unpackHCM(t, l.GetApiListener().GetApiListener()); len(hcm.GetAccessLog()) != 0 {
				t.Errorf("proxyless listener %s has an access log", l.GetName())
			}
			continue
		}
		hcm := unpackHCM(t, l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
		logs := hcm.GetAccessLog()
		if len(logs) != 1 || logs[0].GetName() != AccessLogGRPC {
			t.Fatalf("listener %s: access logs %v, want one %s", l.GetName(), logs, AccessLogGRPC)
		}
		cfg := &grpcalsv3.HttpGrpcAccessLogConfig{}
		if err := logs[0].GetTypedConfig().UnmarshalTo(cfg); err != nil {
			t.Fatal(err)
		}
		if c := cfg.GetCommonConfig(); c.GetGrpcService().GetEnvoyGrpc().GetClusterName() != DefaultTollgateCluster || c.GetLogName() != AccessLogName {
			t.Errorf("listener %s: access log %v, want log %q to cluster %q", l.GetName(), c, AccessLogName, DefaultTollgateCluster)
		}
		if m := logs[0].GetFilter().GetMetadataFilter().GetMatcher(); m.GetFilter() != FilterExtAuthz {
			t.Errorf("listener %s: access log filter %v, want ext_authz's metadata", l.GetName(), logs[0].GetFilter())
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no HTTP listener: the test checks nothing")
	}
}
