package xds

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
)

// FuzzParse feeds arbitrary bytes to Parse. It must never panic, and a file
// that Parse accepts must build into a consistent snapshot: validation is
// complete, so construction cannot fail half-way.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"valid/*.yaml", "invalid/*.yaml"} {
		for _, file := range files(f, pattern) {
			if strings.Contains(file, "bomb") {
				continue // slow by design (TestInvalid covers it); it would starve the fuzzer
			}
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte("listeners: [{name: a, address: '[::1]:1', virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {path: /}, cluster: c}]}]}]\nclusters: [{name: c, endpoints: ['[::1]:2']}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not start with the file name: %v", err)
			}
			var es yamlstrict.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %v is %T, want yamlstrict.Errors", err, err)
			}
			for _, e := range es {
				if e.Line < 1 {
					t.Fatalf("error without a line: %+v", e)
				}
			}
			return
		}
		r, err := Build(file, "")
		if err != nil {
			t.Fatalf("Parse accepted the file but Build failed: %v\nfile:\n%s", err, data)
		}
		if _, err := r.Snapshot(); err != nil {
			t.Fatalf("Parse accepted the file but Snapshot failed: %v\nfile:\n%s", err, data)
		}
		if _, err := Render(r); err != nil {
			t.Fatalf("Render: %v", err)
		}
	})
}
