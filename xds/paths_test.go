package xds

import (
	"path/filepath"
	"slices"
	"testing"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/tollgate-dev/tollgate/internal/wire"
)

// routesFiles are every routes file the tests build: testdata/valid and
// the example the README runs.
func routesFiles(t *testing.T) []string {
	return append(files(t, "valid/*.yaml"), filepath.Join("..", "examples", "xds", "routes.yaml"))
}

// TestListenersNormalizePaths: every generated Envoy listener routes and
// authorizes the path its upstream reads: normalize_path (dot segments,
// also %2e, and backslashes), merge_slashes, and escaped slashes (%2F,
// %5C) rejected. Proxyless gRPC API listeners are not Envoy's: grpc-go
// ignores these settings, and a gRPC path is a fixed /service/method.
func TestListenersNormalizePaths(t *testing.T) {
	checked := 0
	for _, file := range routesFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			for _, l := range buildFile(t, file).Listeners {
				if l.GetApiListener() != nil {
					continue
				}
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						hcm := unpackHCM(t, f.GetTypedConfig())
						checked++
						if !hcm.GetNormalizePath().GetValue() {
							t.Errorf("listener %s: normalize_path is %v, want true", l.GetName(), hcm.GetNormalizePath())
						}
						if !hcm.GetMergeSlashes() {
							t.Errorf("listener %s: merge_slashes is false, want true", l.GetName())
						}
						if got, want := hcm.GetPathWithEscapedSlashesAction(), hcmv3.HttpConnectionManager_REJECT_REQUEST; got != want {
							t.Errorf("listener %s: path_with_escaped_slashes_action is %v, want %v", l.GetName(), got, want)
						}
					}
				}
			}
		})
	}
	if checked == 0 {
		t.Fatal("no Envoy listener: the test checks nothing")
	}
}

// TestExtAuthzOffStripsForgedHeaders: every generated route with ext_authz
// disabled removes exactly the x-tollgate-* headers Tollgate sets
// (wire.Headers); nothing else removes a client's forged copies there.
func TestExtAuthzOffStripsForgedHeaders(t *testing.T) {
	checked := 0
	for _, file := range routesFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			for _, rc := range buildFile(t, file).Routes {
				for _, vh := range rc.GetVirtualHosts() {
					for _, r := range vh.GetRoutes() {
						cfg, ok := r.GetTypedPerFilterConfig()[FilterExtAuthz]
						per := &extauthzv3.ExtAuthzPerRoute{}
						if !ok || cfg.UnmarshalTo(per) != nil || !per.GetDisabled() {
							continue
						}
						checked++
						if got := r.GetRequestHeadersToRemove(); !slices.Equal(got, wire.Headers()) {
							t.Errorf("route config %s, route %q without ext_authz removes %v, want %v", rc.GetName(), r.GetName(), got, wire.Headers())
						}
					}
				}
			}
		})
	}
	if checked == 0 {
		t.Fatal("no route without ext_authz: the test checks nothing")
	}
}
