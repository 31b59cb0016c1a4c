package envoy_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	// Every typed_config / typed_*_config "@type" in the YAML files must be
	// registered with the protobuf registry to be resolvable. Add an import
	// here when a configuration starts using a new extension.
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/tollgate-dev/tollgate/internal/envoyschema"
	"github.com/tollgate-dev/tollgate/internal/wire"
)

// TestBootstraps checks every top-level *.yaml file in this folder against
// Envoy's schema: exact field names, resolvable @type URLs, protoc-gen-validate
// rules (also inside google.protobuf.Any), and no deprecated fields or enum
// values.
func TestBootstraps(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no *.yaml files found in envoy/")
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			if _, err := loadBootstrap(file); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestInvalidBootstraps proves that the validation catches mistakes: each
// file in testdata/invalid must be rejected with an error that contains the
// substring on its first line, "# want: <substring>".
func TestInvalidBootstraps(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/invalid/*.yaml files found")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			want, err := wantedError(file)
			if err != nil {
				t.Fatal(err)
			}
			_, err = loadBootstrap(file)
			if err == nil {
				t.Fatalf("loadBootstrap(%s) succeeded, want an error containing %q", file, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("loadBootstrap(%s) error:\n%v\nwant it to contain %q", file, err, want)
			}
		})
	}
}

// TestBootstrapValidateAllSkipsAny documents why checkAnys exists:
// Bootstrap.ValidateAll does not look inside google.protobuf.Any, so a
// typed_config that breaks its own message's rules passes it.
func TestBootstrapValidateAllSkipsAny(t *testing.T) {
	const file = "testdata/invalid/hcm-missing-stat-prefix.yaml"
	b, err := parseBootstrap(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("Bootstrap.ValidateAll() = %v; it now descends into Any, so checkAnys may be redundant", err)
	}
	if err := envoyschema.CheckAnys(b.ProtoReflect(), "bootstrap"); err == nil {
		t.Fatal("checkAnys found no error in the typed_config without stat_prefix")
	}
}

// loadBootstrap parses file and runs every check on it.
func loadBootstrap(file string) (*bootstrapv3.Bootstrap, error) {
	b, err := parseBootstrap(file)
	if err != nil {
		return nil, err
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := envoyschema.CheckAnys(b.ProtoReflect(), "bootstrap"); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := envoyschema.CheckDeprecated(b.ProtoReflect(), "bootstrap"); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return b, nil
}

// parseBootstrap converts the YAML file to JSON and decodes it strictly into
// a Bootstrap: unknown fields and unresolvable @type URLs are errors.
func parseBootstrap(file string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	js, err := yamlToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	b := &bootstrapv3.Bootstrap{}
	opts := protojson.UnmarshalOptions{DiscardUnknown: false}
	if err := opts.Unmarshal(js, b); err != nil {
		if strings.Contains(err.Error(), "unable to resolve") {
			// Either a misspelled @type, or an extension whose Go package
			// is not imported by this test yet.
			return nil, fmt.Errorf("%s: %w (if the @type is right, blank-import its package in envoy_test.go)", file, err)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return b, nil
}

// yamlToJSON decodes a single YAML document and re-encodes it as JSON.
func yamlToJSON(data []byte) ([]byte, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("yaml: more than one document; Envoy reads only one")
	}
	v, err := jsonable(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// jsonable turns the maps yaml.v3 produces into map[string]any, which
// encoding/json can marshal.
func jsonable(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("yaml: map key %v (%T) is not a string", k, k)
			}
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	default:
		return v, nil
	}
}

// wantedError reads the "# want: <substring>" comment on the first line of
// file.
func wantedError(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if !s.Scan() {
		return "", fmt.Errorf("%s: empty file; want a first line \"# want: <substring>\"", file)
	}
	want, ok := strings.CutPrefix(s.Text(), "# want:")
	want = strings.TrimSpace(want)
	if !ok || want == "" {
		return "", fmt.Errorf("%s: first line is %q; want \"# want: <substring>\"", file, s.Text())
	}
	return want, nil
}

// TestForgedHeadersStripped: every route that turns ext_authz off removes
// exactly the x-tollgate-* headers Tollgate sets (wire.Headers), since
// nothing else would remove a client's forged copies there and Envoy removes
// headers by exact name.
func TestForgedHeadersStripped(t *testing.T) {
	checked := 0
	eachHCM(t, func(t *testing.T, _ string, hcm *hcmv3.HttpConnectionManager) {
		for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				cfg, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]
				per := &extauthzv3.ExtAuthzPerRoute{}
				if !ok || cfg.UnmarshalTo(per) != nil || !per.GetDisabled() {
					continue
				}
				checked++
				if got := r.GetRequestHeadersToRemove(); !slices.Equal(got, wire.Headers()) {
					t.Errorf("route %v without ext_authz removes %v, want %v", r.GetMatch(), got, wire.Headers())
				}
			}
		}
	})
	if checked == 0 {
		t.Error("no route without ext_authz found: the test checks nothing")
	}
}

// eachHCM calls f, in a subtest per top-level *.yaml bootstrap, with every
// HTTP connection manager of its static listeners.
func eachHCM(t *testing.T, f func(t *testing.T, listener string, hcm *hcmv3.HttpConnectionManager)) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			b, err := loadBootstrap(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range b.GetStaticResources().GetListeners() {
				for _, fc := range l.GetFilterChains() {
					for _, flt := range fc.GetFilters() {
						hcm := &hcmv3.HttpConnectionManager{}
						if flt.GetTypedConfig().UnmarshalTo(hcm) == nil {
							f(t, l.GetName(), hcm)
						}
					}
				}
			}
		})
	}
}

// TestAccessLogSettles: every HTTP connection manager that runs ext_authz
// also sends its access log to Tollgate's access log service, through the
// cluster ext_authz uses, filtered to the requests that carry a
// reservation (settle on delivery).
func TestAccessLogSettles(t *testing.T) {
	checked := 0
	eachHCM(t, func(t *testing.T, listener string, hcm *hcmv3.HttpConnectionManager) {
		authz := &extauthzv3.ExtAuthz{}
		for _, hf := range hcm.GetHttpFilters() {
			if hf.GetName() == wire.MetadataNamespace {
				if err := hf.GetTypedConfig().UnmarshalTo(authz); err != nil {
					t.Fatal(err)
				}
			}
		}
		cluster := authz.GetGrpcService().GetEnvoyGrpc().GetClusterName()
		if cluster == "" {
			return
		}
		checked++
		if err := settlesOnDelivery(hcm.GetAccessLog(), cluster); err != nil {
			t.Errorf("listener %s: %v", listener, err)
		}
	})
	if checked == 0 {
		t.Error("no HTTP connection manager with ext_authz found: the test checks nothing")
	}
}

// settlesOnDelivery reports whether logs has a gRPC HTTP access logger that
// reaches Tollgate through cluster, for the requests with a reservation.
func settlesOnDelivery(logs []*accesslogv3.AccessLog, cluster string) error {
	for _, al := range logs {
		cfg := &grpcalsv3.HttpGrpcAccessLogConfig{}
		if al.GetName() != "envoy.access_loggers.http_grpc" || al.GetTypedConfig().UnmarshalTo(cfg) != nil {
			continue
		}
		c := cfg.GetCommonConfig()
		m := al.GetFilter().GetMetadataFilter().GetMatcher()
		switch {
		case c.GetGrpcService().GetEnvoyGrpc().GetClusterName() != cluster:
			return fmt.Errorf("the access logger's cluster is %q, want ext_authz's %q", c.GetGrpcService().GetEnvoyGrpc().GetClusterName(), cluster)
		case c.GetTransportApiVersion() != corev3.ApiVersion_V3:
			return fmt.Errorf("the access logger speaks %v, want V3", c.GetTransportApiVersion())
		case m.GetFilter() != wire.MetadataNamespace || len(m.GetPath()) != 1 || m.GetPath()[0].GetKey() != wire.MetadataKey || !m.GetValue().GetPresentMatch():
			return fmt.Errorf("the access logger's filter is %v, want the requests with %s.%s metadata", al.GetFilter(), wire.MetadataNamespace, wire.MetadataKey)
		}
		return nil
	}
	return errors.New("no envoy.access_loggers.http_grpc access log: reservations (settle on delivery) are never captured")
}

// TestPathNormalization: every HTTP connection manager routes and
// authorizes the path its upstream reads. normalize_path resolves dot
// segments (also percent-encoded ones) and backslashes, merge_slashes
// merges "//", and escaped slashes (%2F, %5C), which neither touches, are
// rejected, so no "/v1/invoices/../admin" or "/v1/invoices%2F..%2Fadmin"
// reaches a route or Tollgate's policy as a path below /v1/invoices.
func TestPathNormalization(t *testing.T) {
	checked := 0
	eachHCM(t, func(t *testing.T, listener string, hcm *hcmv3.HttpConnectionManager) {
		checked++
		if !hcm.GetNormalizePath().GetValue() {
			t.Errorf("listener %s: normalize_path is %v, want true", listener, hcm.GetNormalizePath())
		}
		if !hcm.GetMergeSlashes() {
			t.Errorf("listener %s: merge_slashes is false, want true", listener)
		}
		if got, want := hcm.GetPathWithEscapedSlashesAction(), hcmv3.HttpConnectionManager_REJECT_REQUEST; got != want {
			t.Errorf("listener %s: path_with_escaped_slashes_action is %v, want %v", listener, got, want)
		}
	})
	if checked == 0 {
		t.Error("no HTTP connection manager found: the test checks nothing")
	}
}
