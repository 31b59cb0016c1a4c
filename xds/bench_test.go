package xds

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// routesFile generates a routes file with nRoutes routes, spread over 10
// virtual hosts of 2 listeners, sending to nClusters clusters (half of
// them IP clusters served over EDS, half DNS clusters), each route with
// context extensions and three rate limit descriptors.
func routesFile(nRoutes, nClusters int) []byte {
	var b strings.Builder
	b.WriteString("listeners:\n")
	const listeners, hostsPerListener = 2, 5
	perHost := nRoutes / (listeners * hostsPerListener)
	route := 0
	for l := range listeners {
		fmt.Fprintf(&b, "  - name: l%d\n    address: 0.0.0.0:%d\n    virtual_hosts:\n", l, 8080+l)
		for h := range hostsPerListener {
			fmt.Fprintf(&b, "      - name: h%d\n        domains: [\"h%d.example.com\"]\n        routes:\n", h, h)
			for range perHost {
				fmt.Fprintf(&b, `          - name: r%d
            match: {prefix: /v1/r%d, methods: [GET, POST]}
            cluster: c%d
            timeout: 5s
            retries: {on: "5xx,reset", attempts: 2}
            tollgate:
              context_extensions: {route: r%d, price: "%d"}
              rate_limits:
                - [{request_headers: {header: x-tollgate-consumer, key: consumer}}, {request_headers: {header: x-tollgate-plan, key: plan}}]
                - [{remote_address: {}}]
                - [{generic_key: {value: r%d}}]
`, route, route, route%nClusters, route, route%7, route)
				route++
			}
		}
	}
	b.WriteString("clusters:\n")
	for c := range nClusters {
		if c%2 == 0 {
			fmt.Fprintf(&b, "  - name: c%d\n    endpoints: [\"10.0.%d.%d:8080\", \"10.0.%d.%d:8080\"]\n    health_check: {path: /healthz}\n", c, c/250, c%250+1, c/250+100, c%250+1)
		} else {
			fmt.Fprintf(&b, "  - name: c%d\n    endpoints: [\"c%d.internal:8080\"]\n    protocol: http2\n", c, c)
		}
	}
	return []byte(b.String())
}

func TestRoutesFileForBenchmark(t *testing.T) {
	f, err := Parse("bench.yaml", routesFile(1000, 200))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range f.Listeners {
		for _, h := range l.VirtualHosts {
			n += len(h.Routes)
		}
	}
	if n != 1000 || len(f.Clusters) != 200 {
		t.Fatalf("generated %d routes and %d clusters, want 1000 and 200", n, len(f.Clusters))
	}
}

// BenchmarkBuild1000Routes measures what a reload costs once the file is
// parsed: Build and Snapshot (which hashes every resource for the
// version) of a file with 1,000 routes and 200 clusters.
func BenchmarkBuild1000Routes(b *testing.B) {
	f, err := Parse("bench.yaml", routesFile(1000, 200))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := Build(f, "")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.Snapshot(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse1000Routes measures reading and validating the same file.
func BenchmarkParse1000Routes(b *testing.B) {
	data := routesFile(1000, 200)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("bench.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReload1000Routes measures a whole reload of a 1,000-route file
// on disk: read, parse and validate, build every fleet's resources, check
// the snapshot is consistent and publish it (the file alternates between
// two contents, so every reload publishes).
func BenchmarkReload1000Routes(b *testing.B) {
	path := filepath.Join(b.TempDir(), "routes.yaml")
	v1 := routesFile(1000, 200)
	v2 := bytes.Replace(v1, []byte("timeout: 5s"), []byte("timeout: 6s"), 1)
	if bytes.Equal(v1, v2) {
		b.Fatal("the two versions are the same")
	}
	if err := os.WriteFile(path, v1, 0o644); err != nil {
		b.Fatal(err)
	}
	s, err := New(context.Background(), Options{Files: map[string]string{DefaultFleet: path}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	versions := [][]byte{v2, v1}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := os.WriteFile(path, versions[i%2], 0o644); err != nil {
			b.Fatal(err)
		}
		i++
		if err := s.Reloader().Reload(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	if st := s.Reloader().Status(); st.Reloads != i+1 {
		b.Fatalf("%d reloads published, want %d", st.Reloads, i+1)
	}
}
