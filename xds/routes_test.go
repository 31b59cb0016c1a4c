package xds

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/valid/*.json from the current output")

func files(t testing.TB, pattern string) []string {
	t.Helper()
	fs, err := filepath.Glob(filepath.Join("testdata", pattern))
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) == 0 {
		t.Fatalf("no testdata/%s files", pattern)
	}
	return fs
}

// TestGolden renders every testdata/valid/*.yaml and compares the result
// with the *.json beside it (go test ./xds -run TestGolden -update rewrites
// them).
func TestGolden(t *testing.T) {
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
			got, err := Render(r)
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(file, ".yaml") + ".json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./xds -run TestGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Render(%s) differs from %s (run with -update to accept):\n%s", file, golden, firstDiff(string(got), string(want)))
			}
		})
	}
}

// firstDiff shows the first differing line of got and want.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got: %s\nwant: %s", i+1, gl, wl)
		}
	}
	return "(no line differs)"
}

// TestInvalid checks that each testdata/invalid/*.yaml is refused with an
// error that contains the substring on its first line, "# want: ...".
func TestInvalid(t *testing.T) {
	for _, file := range files(t, "invalid/*.yaml") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			want := wantedError(t, file)
			f, err := Load(file)
			if err == nil {
				// A few mistakes only show when building.
				_, err = Build(f, "")
			}
			if err == nil {
				t.Fatalf("Load(%s) and Build succeeded, want an error containing %q", file, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("Load(%s) error:\n%v\nwant it to contain %q", file, err, want)
			}
		})
	}
}

func wantedError(t *testing.T, file string) string {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	s := bufio.NewScanner(fh)
	if !s.Scan() {
		t.Fatalf("%s is empty; want a first line \"# want: <substring>\"", file)
	}
	want, ok := strings.CutPrefix(s.Text(), "# want:")
	want = strings.TrimSpace(want)
	if !ok || want == "" {
		t.Fatalf("%s: first line is %q; want \"# want: <substring>\"", file, s.Text())
	}
	return want
}

// TestParseErrorsAreCollected checks that one Parse reports every problem,
// each as an *Error with its line, in line order.
func TestParseErrorsAreCollected(t *testing.T) {
	_, err := Parse("r.yaml", []byte(`listeners:
  - name: a
    address: 0.0.0.0:80
    virtual_hosts:
      - name: v
        domains: ["*"]
        routes:
          - match: {prefix: /}
            cluster: nope
            timeout: soon
clusters:
  - name: c
    endpoints: ["10.0.0.1:0"]
`))
	if err == nil {
		t.Fatal("Parse succeeded, want errors")
	}
	var lines []int
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var pe *Error
		if !errors.As(e, &pe) {
			t.Fatalf("error %v is %T, want *Error", e, e)
		}
		lines = append(lines, pe.Line)
	}
	if want := []int{9, 10, 13}; !reflect.DeepEqual(lines, want) {
		t.Errorf("error lines = %v, want %v; errors:\n%v", lines, want, err)
	}
}

func TestParseDefaults(t *testing.T) {
	f, err := Parse("d.yaml", []byte(`listeners:
  - name: l
    address: 0.0.0.0:80
    virtual_hosts:
      - name: v
        domains: ["*"]
        routes:
          - match: {prefix: /}
            cluster: c
            retries: {on: 5xx}
clusters:
  - name: c
    endpoints: ["10.0.0.1:80"]
    health_check: {path: /h}
grpc_services:
  - name: svc
    cluster: c
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"tollgate.address", f.Tollgate.Address, DefaultTollgateAddress},
		{"tollgate.timeout", f.Tollgate.Timeout, DefaultTimeout},
		{"tollgate.ratelimit_domain", f.Tollgate.RateLimitDomain, DefaultRateLimitDomain},
		{"tollgate.ratelimit_timeout", f.Tollgate.RateLimitTimeout, DefaultRateLimitTimeout},
		{"tollgate.failure_mode_allow", f.Tollgate.FailureModeAllow, false},
		{"route timeout", f.Listeners[0].VirtualHosts[0].Routes[0].Timeout, DefaultRouteTimeout},
		{"route ext_authz", f.Listeners[0].VirtualHosts[0].Routes[0].Tollgate.ExtAuthzDisabled, false},
		{"route retries", *f.Listeners[0].VirtualHosts[0].Routes[0].Retries, Retries{On: "5xx", Attempts: 1}},
		{"cluster protocol", f.Clusters[0].Protocol, "http1"},
		{"cluster lb_policy", f.Clusters[0].LBPolicy, "round_robin"},
		{"cluster connect_timeout", f.Clusters[0].ConnectTimeout, DefaultConnectTimeout},
		{"health_check", *f.Clusters[0].HealthCheck, HealthCheck{Path: "/h", Interval: 5 * time.Second, Timeout: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2}},
		{"grpc routes", len(f.GRPCServices[0].Routes), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) error = %v, want os.ErrNotExist", err)
	}
}
